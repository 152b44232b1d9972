//! `fanout`: one room, K subscribed members, one sender on an open-loop schedule; deliveries
//! per second and latency to the last member of each message. With `--slow-reader`, one
//! member stops reading its socket, to show what the server does about it. With `--reactions`,
//! the sender reacts instead of sending: to message i of as many messages posted beforehand, and
//! what is measured is each REACTED event's delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use super::Ctx;
use crate::load::{self, Clock, Schedule, SendStats};
use crate::report::{self, CpuMark, CpuUse, Errors, Latency, Outcome};
use crate::ws::{self, MessageEvent};

/// Flags of the `fanout` workload.
#[derive(Args, Debug, Serialize)]
pub struct FanoutArgs {
    /// Room members, each with its own subscribed connection (the sender is one more user).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Messages the sender sends.
    #[arg(long, default_value_t = 200)]
    pub messages: u64,
    /// Messages per second (open loop).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Member 0 stops reading its socket once warm; reports what happened to it.
    #[arg(long)]
    pub slow_reader: bool,
    /// React (👍) to one message per scheduled send instead of sending messages; the
    /// subscription selects the reactions too.
    #[arg(long)]
    pub reactions: bool,
    /// The server's process id, for RSS before, peak and after.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Sends outstanding at once.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Seconds to wait for stragglers after the last send.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
    /// Seconds to wait for every member's subscription to see a warm-up message.
    #[arg(long, default_value_t = 60.0)]
    pub warmup_secs: f64,
}

struct Shared {
    clock: Clock,
    /// Deliveries per message, to the reading members.
    counts: Vec<AtomicU32>,
    /// Slowest delivery per message so far, µs: at completion, the latency to the last member.
    slowest_us: Vec<AtomicU64>,
    delivered: AtomicU64,
    excess: AtomicU64,
    last_delivery_nanos: AtomicU64,
    readers: u32,
    warm: Vec<AtomicBool>,
    /// With `--reactions`: when reaction i was scheduled (nanos on `clock`; 0 until then).
    reacted_at: Option<Vec<AtomicU64>>,
}

impl Shared {
    /// Returns the delivery latency when `event` is a measured message.
    fn on_event(&self, member: usize, event: MessageEvent) -> Option<Duration> {
        let body = event.message.body.as_deref()?;
        if event.kind == "CREATED" && body.starts_with("warmup") {
            self.warm[member].store(true, Ordering::Relaxed);
            return None;
        }
        let (seq, nanos) = match &self.reacted_at {
            None if event.kind == "CREATED" => load::parse_stamp(body)?,
            Some(reacted_at) if event.kind == "REACTED" => {
                let seq = body.strip_prefix("target ")?.parse::<u64>().ok()?;
                let nanos = reacted_at.get(seq as usize)?.load(Ordering::Relaxed);
                (seq, nanos)
            }
            _ => return None,
        };
        let latency = self.clock.since(nanos);
        let i = seq as usize;
        let count = self.counts.get(i)?;
        if count.fetch_add(1, Ordering::Relaxed) >= self.readers {
            self.excess.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.slowest_us[i].fetch_max(latency.as_micros() as u64, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.last_delivery_nanos
            .fetch_max(self.clock.nanos(Instant::now()), Ordering::Relaxed);
        Some(latency)
    }
}

#[derive(Serialize)]
struct SlowReader {
    events_read_after_resuming: u64,
    server_ended_it: Option<String>,
}

#[derive(Serialize)]
struct FanoutResults {
    members: usize,
    reading_members: u32,
    members_warm: usize,
    sends: SendStats,
    deliveries: u64,
    deliveries_expected: u64,
    deliveries_per_sec: f64,
    excess_deliveries: u64,
    messages_complete: u64,
    last_member_latency: Latency,
    delivery_latency: Latency,
    slow_reader: Option<SlowReader>,
    subscription_ends: Errors,
    event_errors: u64,
    rss_before_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    /// CPU spent from the first send until the last delivery (or the drain deadline).
    cpu_while_sending: CpuUse,
}

/// Runs the workload.
pub async fn run(ctx: &Ctx, args: &FanoutArgs) -> Result<Outcome> {
    if args.members == 0 || args.messages == 0 || !load::positive(args.rate) {
        bail!("--members, --messages and --rate must be positive");
    }
    if args.slow_reader && args.members < 2 {
        bail!("--slow-reader needs at least 2 members");
    }
    if args.messages > 10_000_000 {
        bail!("keep --messages under 10M");
    }
    load::raise_nofile()?;
    let rss = |pid: Option<u32>| pid.map(report::rss_kib).transpose();

    let owner = load::users(&ctx.api, &ctx.run_id, "o", 1, 1).await?;
    let owner = owner.into_iter().next().context("no owner user")?;
    let members = load::users(
        &ctx.api,
        &ctx.run_id,
        "m",
        args.members,
        ctx.register_concurrency,
    )
    .await?;
    let member_ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    // A room starts with at most 1,000 members; the rest are added.
    let (first, rest) = member_ids.split_at(member_ids.len().min(1000));
    let room = ctx
        .api
        .create_room(&owner.token, &format!("{} fanout", ctx.run_id), first)
        .await
        .context("createRoom")?;
    ctx.api
        .add_members(&owner.token, &room, rest)
        .await
        .context("addMember")?;
    report::progress(format!("room {room} with {} members", args.members));

    let slow = args.slow_reader.then_some(0usize);
    let readers = (args.members - usize::from(slow.is_some())) as u32;
    let shared = Arc::new(Shared {
        clock: Clock::new(),
        counts: (0..args.messages).map(|_| AtomicU32::new(0)).collect(),
        slowest_us: (0..args.messages).map(|_| AtomicU64::new(0)).collect(),
        delivered: AtomicU64::new(0),
        excess: AtomicU64::new(0),
        last_delivery_nanos: AtomicU64::new(0),
        readers,
        warm: (0..args.members).map(|_| AtomicBool::new(false)).collect(),
        reacted_at: args
            .reactions
            .then(|| (0..args.messages).map(|_| AtomicU64::new(0)).collect()),
    });

    // Each member starts reading as soon as it is subscribed: a socket left unread while the
    // rest connect would leave the server's keep-alive pings unanswered, and a big room takes
    // longer to connect than the server waits for a pong.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (pause_tx, pause_rx) = watch::channel(false);
    let connector = ctx.connector();
    let connected: Vec<Result<Reader>> = stream::iter(members.iter().enumerate())
        .map(|(member, m)| {
            let connector = connector.clone();
            let room = room.clone();
            let shared = shared.clone();
            let (stop, pause) = (stop_rx.clone(), pause_rx.clone());
            async move {
                let mut socket = connector
                    .connect(&m.token)
                    .await
                    .with_context(|| format!("connecting member {member}"))?;
                let selection = if args.reactions {
                    ws::MESSAGE_EVENTS_WITH_REACTIONS
                } else {
                    ctx.subscription
                };
                ws::subscribe(&mut socket, selection, "events", Some(&room)).await?;
                Ok(if slow == Some(member) {
                    Reader::Slow(tokio::spawn(slow_reader(
                        socket, shared, member, pause, stop,
                    )))
                } else {
                    Reader::Pump(tokio::spawn(pump(socket, shared, member, stop)))
                })
            }
        })
        .buffered(ctx.connect_concurrency)
        .collect()
        .await;
    let mut pumps = Vec::with_capacity(args.members);
    let mut slow_task = None;
    for reader in connected {
        match reader? {
            Reader::Pump(task) => pumps.push(task),
            Reader::Slow(task) => slow_task = Some(task),
        }
    }

    // The messages to react to, posted before warming up so that their events are out of the way.
    let targets: Arc<Vec<String>> = Arc::new(if args.reactions {
        post_targets(ctx, args.messages, &owner.token, &room).await?
    } else {
        Vec::new()
    });
    let members_warm = warm_up(ctx, args, &owner.token, &room, &shared).await;
    report::progress(format!("{members_warm}/{} members warm", args.members));
    let _ = pause_tx.send(true);

    let rss_before = rss(args.server_pid)?;
    let sampler = args.server_pid.map(|pid| {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !*stop.borrow() {
                if let Ok(kib) = report::rss_kib(pid) {
                    peak = peak.max(kib);
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), stop.changed()).await;
            }
            peak
        })
    });

    report::progress(format!(
        "sending {} messages at {}/s",
        args.messages, args.rate
    ));
    let schedule = Schedule {
        rate: args.rate,
        count: args.messages,
        max_in_flight: args.max_in_flight,
        hard_stop: ctx.hard_stop,
    };
    let cpu = CpuMark::now(args.server_pid)?;
    let send_start = shared.clock.nanos(Instant::now());
    let api = ctx.api.clone();
    let token: Arc<str> = owner.token.as_str().into();
    let room_id: Arc<str> = room.as_str().into();
    let run_id = ctx.run_id.clone();
    let marks = shared.clone();
    let sends = load::open_loop(shared.clock, 0, &schedule, move |seq, nanos| {
        let (api, token, room_id) = (api.clone(), token.clone(), room_id.clone());
        let (targets, marks) = (targets.clone(), marks.clone());
        let client_id = format!("{run_id}-{seq}");
        async move {
            match &marks.reacted_at {
                Some(reacted_at) => {
                    reacted_at[seq as usize].store(nanos, Ordering::Relaxed);
                    api.add_reaction(&token, &targets[seq as usize], "👍").await
                }
                None => api
                    .send(&token, &room_id, &load::stamp(seq, nanos), &client_id)
                    .await
                    .map(|_| ()),
            }
        }
    })
    .await;
    let expected = sends.ok * u64::from(readers);
    let drain_until = ctx.deadline(args.drain_secs);
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_while_sending = cpu.used()?;
    let rss_after = rss(args.server_pid)?;

    let _ = stop_tx.send(true);
    let mut delivery = report::new_hist();
    let mut subscription_ends = Errors::default();
    let mut event_errors = 0;
    for pump in pumps {
        match pump.await {
            Ok((end, errors, hist)) => {
                if end != ws::PumpEnd::Stopped {
                    subscription_ends.add(&end.label());
                }
                event_errors += errors;
                let _ = delivery.add(&hist);
            }
            Err(_) => subscription_ends.add("task_failed"),
        }
    }
    let slow_reader = match slow_task {
        Some(task) => Some(task.await.context("slow reader task")?),
        None => None,
    };
    let rss_peak = match sampler {
        Some(task) => task.await.ok(),
        None => None,
    };

    let mut last_member = report::new_hist();
    let mut complete = 0;
    for (count, slowest) in shared.counts.iter().zip(&shared.slowest_us) {
        if count.load(Ordering::Relaxed) >= readers {
            complete += 1;
            last_member.saturating_record(slowest.load(Ordering::Relaxed).max(1));
        }
    }
    let deliveries = shared.delivered.load(Ordering::Relaxed);
    let window = Duration::from_nanos(
        shared
            .last_delivery_nanos
            .load(Ordering::Relaxed)
            .saturating_sub(send_start),
    );
    let results = FanoutResults {
        members: args.members,
        reading_members: readers,
        members_warm,
        sends,
        deliveries,
        deliveries_expected: expected,
        deliveries_per_sec: load::rate(deliveries, window),
        excess_deliveries: shared.excess.load(Ordering::Relaxed),
        messages_complete: complete,
        last_member_latency: Latency::of(&last_member),
        delivery_latency: Latency::of(&delivery),
        slow_reader,
        subscription_ends,
        event_errors,
        rss_before_kib: rss_before,
        rss_peak_kib: rss_peak,
        rss_after_kib: rss_after,
        cpu_while_sending,
    };

    let mut summary = format!(
        "fanout: room of {} ({} reading, {} warm), {} {} at {}/s\n  sends: ok {} of {} (achieved {:.0}/s), errors: {}\n  deliveries {} of {} expected, {:.0}/s, excess {}; {} messages reached every reader\n  last member {}\n  any member  {}\n",
        args.members,
        readers,
        members_warm,
        args.messages,
        if args.reactions {
            "reactions"
        } else {
            "messages"
        },
        args.rate,
        results.sends.ok,
        results.sends.issued,
        results.sends.achieved_rate,
        results.sends.errors.line(),
        deliveries,
        expected,
        results.deliveries_per_sec,
        results.excess_deliveries,
        complete,
        results.last_member_latency.line(),
        results.delivery_latency.line(),
    );
    if let Some(s) = &results.slow_reader {
        summary.push_str(&format!(
            "  slow reader: read {} events after resuming; server ended it: {}\n",
            s.events_read_after_resuming,
            s.server_ended_it.as_deref().unwrap_or("no"),
        ));
    }
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        summary.push_str(&format!(
            "  server RSS {b} KiB -> peak {} KiB -> {a} KiB\n",
            rss_peak.map_or_else(|| "?".into(), |p| p.to_string())
        ));
    }
    summary.push_str(&format!(
        "  CPU while sending: {}\n",
        CpuMark::line(&cpu_while_sending, deliveries, "delivery")
    ));
    summary.push_str(&format!(
        "  subscriptions ended early: {}, event errors {}\n",
        results.subscription_ends.line(),
        event_errors
    ));
    Ok(Outcome {
        summary,
        results: json!(results),
    })
}

/// Posts the `count` messages `--reactions` reacts to, bodies `target <i>`; returns their ids.
async fn post_targets(ctx: &Ctx, count: u64, token: &str, room: &str) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(count as usize);
    for i in 0..count {
        let client_id = format!("{}-target-{i}", ctx.run_id);
        let id = ctx
            .api
            .send(token, room, &format!("target {i}"), &client_id)
            .await
            .context("posting a message to react to")?;
        ids.push(id);
    }
    report::progress(format!("{count} messages to react to"));
    Ok(ids)
}

/// The owner posts a warm-up message once a second until every member has seen one (or
/// `--warmup-secs` passes); returns how many have.
async fn warm_up(ctx: &Ctx, args: &FanoutArgs, token: &str, room: &str, shared: &Shared) -> usize {
    let until = ctx.deadline(args.warmup_secs);
    let warm = || {
        shared
            .warm
            .iter()
            .filter(|w| w.load(Ordering::Relaxed))
            .count()
    };
    for round in 0u32.. {
        if warm() == args.members || Instant::now() >= until {
            break;
        }
        let client_id = format!("{}-warm-{round}", ctx.run_id);
        if let Err(e) = ctx.api.send(token, room, "warmup", &client_id).await {
            report::progress(format!("warm-up send failed: {e}"));
        }
        let wait_until = (Instant::now() + Duration::from_secs(1)).min(until);
        while Instant::now() < wait_until && warm() < args.members {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    warm()
}

/// A member's reading task.
enum Reader {
    Pump(tokio::task::JoinHandle<(ws::PumpEnd, u64, hdrhistogram::Histogram<u64>)>),
    Slow(tokio::task::JoinHandle<SlowReader>),
}

/// Reads one member's events until told to stop, recording delivery latencies.
async fn pump(
    mut socket: ws::Ws,
    shared: Arc<Shared>,
    member: usize,
    mut stop: watch::Receiver<bool>,
) -> (ws::PumpEnd, u64, hdrhistogram::Histogram<u64>) {
    let mut errors = 0;
    let mut hist = report::new_hist();
    let end = ws::pump(&mut socket, &mut stop, &mut errors, |ev| {
        if let Some(latency) = shared.on_event(member, ev) {
            report::record(&mut hist, latency);
        }
    })
    .await;
    (end, errors, hist)
}

/// Reads until told to pause, then holds the socket unread until the run ends, then drains it.
async fn slow_reader(
    mut socket: ws::Ws,
    shared: Arc<Shared>,
    member: usize,
    mut pause: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> SlowReader {
    let mut errors = 0;
    let end = ws::pump(&mut socket, &mut pause, &mut errors, |ev| {
        shared.on_event(member, ev);
    })
    .await;
    if end != ws::PumpEnd::Stopped {
        return SlowReader {
            events_read_after_resuming: 0,
            server_ended_it: Some(format!("before pausing: {end:?}")),
        };
    }
    let _ = stop.wait_for(|s| *s).await;
    let (events, ended) = ws::drain(&mut socket, Duration::from_secs(2)).await;
    SlowReader {
        events_read_after_resuming: events,
        server_ended_it: ended,
    }
}
