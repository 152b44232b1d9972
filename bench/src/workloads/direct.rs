//! `direct`: pairs of users in direct conversations, an open-loop send schedule at one or more
//! total rates, and send→deliver latency measured at each receiver's subscription.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use super::Ctx;
use crate::api::BenchUser;
use crate::bus::{self, InstanceBus};
use crate::load::{self, Clock, Schedule, SendStats};
use crate::report::{self, CpuMark, CpuUse, Errors, Latency, Outcome};
use crate::ws::{self, MessageEvent};

/// Flags of the `direct` workload.
#[derive(Args, Debug, Serialize)]
pub struct DirectArgs {
    /// Sender/receiver pairs; each receiver subscribes to its direct conversation.
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Total sends per second over all pairs. A comma-separated list (100,1000,5000) runs each
    /// rate in turn on the same users and connections.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub rate: Vec<f64>,
    /// Seconds each rate is held.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Sends outstanding at once before the tool itself becomes the bottleneck.
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: usize,
    /// Seconds to wait for stragglers after each rate's last send.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
    /// The p99 (ms) a rate must stay under to count as "held".
    #[arg(long, default_value_t = 50.0)]
    pub p99_target_ms: f64,
    /// Seconds to wait for every receiver's subscription to see a warm-up message.
    #[arg(long, default_value_t = 30.0)]
    pub warmup_secs: f64,
    /// The server's process id, for the CPU it spends per send at each rate.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// What receivers share: per-step histograms and counters, indexed by the sequence number
/// carried in the body.
struct Shared {
    clock: Clock,
    /// Start sequence number of each step; step `i` owns `starts[i]..starts[i + 1]`.
    starts: Vec<u64>,
    latency: Vec<Mutex<Histogram<u64>>>,
    delivered: Vec<AtomicU64>,
    seen: Vec<AtomicBool>,
    duplicates: AtomicU64,
    warm: Vec<AtomicBool>,
}

impl Shared {
    fn on_event(&self, pair: usize, event: MessageEvent) {
        if event.kind != "CREATED" {
            return;
        }
        let Some(body) = event.message.body.as_deref() else {
            return;
        };
        let Some((seq, nanos)) = load::parse_stamp(body) else {
            if body.starts_with("warmup") {
                self.warm[pair].store(true, Ordering::Relaxed);
            }
            return;
        };
        let latency = self.clock.since(nanos);
        let Some(seen) = self.seen.get(seq as usize) else {
            return;
        };
        if seen.swap(true, Ordering::Relaxed) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let step = self.starts.partition_point(|&s| s <= seq).saturating_sub(1);
        self.delivered[step].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut hist) = self.latency[step].lock() {
            report::record(&mut hist, latency);
        }
    }
}

#[derive(Serialize)]
struct Step {
    target_rate: f64,
    sends: SendStats,
    delivered: u64,
    missing: u64,
    delivery_latency: Latency,
    held: bool,
    /// CPU spent from the step's first send until its last delivery (or the drain deadline).
    cpu: CpuUse,
    /// Each instance's bus counters over the step (from the first send to the end of the drain).
    bus: Vec<InstanceBus>,
}

#[derive(Serialize)]
struct DirectResults {
    pairs: usize,
    receivers_connected: usize,
    receivers_warm: usize,
    steps: Vec<Step>,
    duplicates: u64,
    highest_rate_held: Option<f64>,
    p99_target_ms: f64,
    subscription_ends: Errors,
    event_errors: u64,
}

struct Pair {
    sender: BenchUser,
    conversation: String,
}

/// Runs the workload.
pub async fn run(ctx: &Ctx, args: &DirectArgs) -> Result<Outcome> {
    if args.pairs == 0
        || !args.rate.iter().all(|&r| load::positive(r))
        || !load::positive(args.duration)
    {
        bail!("--pairs, --rate and --duration must be positive");
    }
    let counts: Vec<u64> = args
        .rate
        .iter()
        .map(|r| (r * args.duration).round().max(1.0) as u64)
        .collect();
    let total: u64 = counts.iter().sum();
    if total > 50_000_000 {
        bail!("{total} sends planned; keep rate × duration under 50M");
    }
    load::raise_nofile()?;

    let senders = load::users(
        &ctx.api,
        &ctx.run_id,
        "s",
        args.pairs,
        ctx.register_concurrency,
    );
    let receivers = load::users(
        &ctx.api,
        &ctx.run_id,
        "r",
        args.pairs,
        ctx.register_concurrency,
    );
    let (senders, receivers) = (senders.await?, receivers.await?);

    // The first message opens the direct conversation; later sends name it.
    let opened: Vec<Result<String, _>> = stream::iter(senders.iter().zip(&receivers))
        .map(|(s, r)| ctx.api.send_direct(&s.token, &r.id, "warmup: open"))
        .buffered(ctx.register_concurrency)
        .map(|r| r.map(|sent| sent.conversation_id))
        .collect()
        .await;
    let pairs: Vec<Pair> = senders
        .into_iter()
        .zip(opened)
        .map(|(sender, conv)| {
            Ok(Pair {
                sender,
                conversation: conv?,
            })
        })
        .collect::<Result<_, crate::api::GqlError>>()
        .context("opening direct conversations")?;

    let mut starts = Vec::with_capacity(counts.len());
    let mut next = 0;
    for c in &counts {
        starts.push(next);
        next += c;
    }
    let shared = Arc::new(Shared {
        clock: Clock::new(),
        starts: starts.clone(),
        latency: counts
            .iter()
            .map(|_| Mutex::new(report::new_hist()))
            .collect(),
        delivered: counts.iter().map(|_| AtomicU64::new(0)).collect(),
        seen: (0..total).map(|_| AtomicBool::new(false)).collect(),
        duplicates: AtomicU64::new(0),
        warm: (0..args.pairs).map(|_| AtomicBool::new(false)).collect(),
    });

    // Receivers: connect, subscribe to their conversation, pump until told to stop. With several
    // instances, pair i's receiver is on instance i and its sender sends through the next one,
    // round-robin: every instance serves subscribers and takes sends, none of its own receivers'.
    let instances = ctx.instances.len();
    let connectors: Vec<_> = (0..instances).map(|i| ctx.connector_to(i)).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let connected: Vec<Result<ws::Ws>> = stream::iter(receivers.iter().zip(&pairs).enumerate())
        .map(|(i, (r, p))| {
            let connector = connectors[i % instances].clone();
            async move {
                let mut socket = connector.connect(&r.token).await?;
                ws::subscribe(
                    &mut socket,
                    ctx.subscription,
                    "events",
                    Some(&p.conversation),
                )
                .await?;
                anyhow::Ok(socket)
            }
        })
        .buffered(ctx.connect_concurrency)
        .collect()
        .await;
    let mut pumps = Vec::with_capacity(args.pairs);
    for (pair, socket) in connected.into_iter().enumerate() {
        let mut socket = socket.with_context(|| format!("connecting receiver {pair}"))?;
        let mut stop = stop_rx.clone();
        let shared = shared.clone();
        pumps.push(tokio::spawn(async move {
            let mut errors = 0;
            let end = ws::pump(&mut socket, &mut stop, &mut errors, |ev| {
                shared.on_event(pair, ev)
            })
            .await;
            (end, errors)
        }));
    }

    let receivers_warm = warm_up(ctx, args, &pairs, &shared).await;
    report::progress(format!("{receivers_warm}/{} receivers warm", args.pairs));

    let pairs = Arc::new(pairs);
    let mut steps = Vec::with_capacity(counts.len());
    for (i, (&rate, &count)) in args.rate.iter().zip(&counts).enumerate() {
        report::progress(format!(
            "rate {rate}/s for {}s ({count} sends)",
            args.duration
        ));
        let schedule = Schedule {
            rate,
            count,
            max_in_flight: args.max_in_flight,
            hard_stop: ctx.hard_stop,
        };
        let cpu = CpuMark::now(args.server_pid)?;
        let bus_mark = bus::Mark::now(&ctx.instances).await;
        let apis: Arc<Vec<_>> = Arc::new(ctx.instances.iter().map(|i| i.api.clone()).collect());
        let run_id = ctx.run_id.clone();
        let pairs_for_send = pairs.clone();
        let sends = load::open_loop(shared.clock, starts[i], &schedule, move |seq, nanos| {
            let apis = apis.clone();
            let pairs = pairs_for_send.clone();
            let client_id = format!("{run_id}-{seq}");
            async move {
                let index = (seq % pairs.len() as u64) as usize;
                let pair = &pairs[index];
                apis[(index + 1) % apis.len()]
                    .send(
                        &pair.sender.token,
                        &pair.conversation,
                        &load::stamp(seq, nanos),
                        &client_id,
                    )
                    .await
                    .map(|_| ())
            }
        })
        .await;
        let drain_until = ctx.deadline(args.drain_secs);
        while shared.delivered[i].load(Ordering::Relaxed) < sends.ok && Instant::now() < drain_until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = cpu.used()?;
        let bus = bus_mark.since(&ctx.instances).await;
        let delivered = shared.delivered[i].load(Ordering::Relaxed);
        let delivery_latency = shared.latency[i]
            .lock()
            .map(|h| Latency::of(&h))
            .unwrap_or_else(|_| Latency::of(&report::new_hist()));
        let missing = sends.ok.saturating_sub(delivered);
        let held = sends.errors.total() == 0
            && missing == 0
            && delivery_latency.count > 0
            && delivery_latency.p99_ms <= args.p99_target_ms;
        steps.push(Step {
            target_rate: rate,
            sends,
            delivered,
            missing,
            delivery_latency,
            held,
            cpu,
            bus,
        });
        if Instant::now() >= ctx.hard_stop {
            break;
        }
    }

    let _ = stop_tx.send(true);
    let mut subscription_ends = Errors::default();
    let mut event_errors = 0;
    for pump in pumps {
        match pump.await {
            Ok((ws::PumpEnd::Stopped, errors)) => event_errors += errors,
            Ok((end, errors)) => {
                subscription_ends.add(&end.label());
                event_errors += errors;
            }
            Err(_) => subscription_ends.add("task_failed"),
        }
    }

    let results = DirectResults {
        pairs: args.pairs,
        receivers_connected: args.pairs,
        receivers_warm,
        highest_rate_held: steps
            .iter()
            .filter(|s| s.held)
            .map(|s| s.target_rate)
            .reduce(f64::max),
        steps,
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        p99_target_ms: args.p99_target_ms,
        subscription_ends,
        event_errors,
    };
    let mut summary = format!(
        "direct: {} pairs, {}/{} receivers warm\n",
        args.pairs, results.receivers_warm, args.pairs
    );
    for s in &results.steps {
        summary.push_str(&format!(
            "  rate {}/s: sent ok {} of {} (achieved {:.0}/s), errors: {}, delivered {}, missing {}\n    delivery {}\n    ack      {}\n    schedule lag p99 {:.2}ms max {:.2}ms{}\n    CPU: {}\n{}",
            s.target_rate,
            s.sends.ok,
            s.sends.issued,
            s.sends.achieved_rate,
            s.sends.errors.line(),
            s.delivered,
            s.missing,
            s.delivery_latency.line(),
            s.sends.ack_latency.line(),
            s.sends.schedule_lag.p99_ms,
            s.sends.schedule_lag.max_ms,
            if s.held { "  [held]" } else { "" },
            CpuMark::line(&s.cpu, s.sends.ok, "send"),
            bus::lines(&s.bus),
        ));
    }
    summary.push_str(&format!(
        "  highest rate held with p99 <= {}ms: {}\n  duplicates {}, event errors {}, subscriptions ended early: {}\n",
        args.p99_target_ms,
        results
            .highest_rate_held
            .map_or_else(|| "none".into(), |r| format!("{r}/s")),
        results.duplicates,
        results.event_errors,
        results.subscription_ends.line(),
    ));
    Ok(Outcome {
        summary,
        results: json!(results),
    })
}

/// Sends a warm-up message in every pair whose receiver has not yet seen one, once a second,
/// until all are warm or `--warmup-secs` passes: a subscription registered after a send would
/// otherwise silently miss messages and count as loss. Returns how many are warm.
async fn warm_up(ctx: &Ctx, args: &DirectArgs, pairs: &[Pair], shared: &Shared) -> usize {
    let until = ctx.deadline(args.warmup_secs);
    let mut round = 0u32;
    loop {
        let cold: Vec<usize> = (0..pairs.len())
            .filter(|&i| !shared.warm[i].load(Ordering::Relaxed))
            .collect();
        if cold.is_empty() || Instant::now() >= until {
            return pairs.len() - cold.len();
        }
        let sends = cold.iter().map(|&i| {
            let p = &pairs[i];
            let client_id = format!("{}-warm-{i}-{round}", ctx.run_id);
            async move {
                ctx.api
                    .send(&p.sender.token, &p.conversation, "warmup", &client_id)
                    .await
            }
        });
        let _ = stream::iter(sends)
            .buffer_unordered(ctx.register_concurrency)
            .collect::<Vec<_>>()
            .await;
        round += 1;
        let wait_until = (Instant::now() + Duration::from_secs(1)).min(until);
        while Instant::now() < wait_until
            && (0..pairs.len()).any(|i| !shared.warm[i].load(Ordering::Relaxed))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
