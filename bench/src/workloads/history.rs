//! `history`: seed conversations through the API (batched, in parallel), then read them in
//! 50-message pages with P requests in flight; page latency.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use futures_util::{StreamExt, stream};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Ctx;
use crate::load;
use crate::report::{self, Errors, Latency, Outcome};

/// What kind of conversation to seed.
#[derive(ValueEnum, Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Kind {
    /// Direct conversations between the reader and one peer each (one user per conversation).
    Direct,
    /// Rooms created by the reader, each with one other member.
    Room,
}

/// Flags of the `history` workload.
#[derive(Args, Debug, Serialize)]
pub struct HistoryArgs {
    /// Conversations to seed.
    #[arg(long, default_value_t = 10)]
    pub conversations: usize,
    /// Messages in total over all conversations.
    #[arg(long, default_value_t = 2000)]
    pub messages: u64,
    /// Messages in the first ("hot") conversation; the rest are spread evenly. 0: all even.
    #[arg(long, default_value_t = 0)]
    pub hot_messages: u64,
    /// Page requests in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Page requests in total.
    #[arg(long, default_value_t = 2000)]
    pub requests: u64,
    /// Messages per page (`first`).
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
    /// Seeding requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub seed_concurrency: usize,
    /// sendMessage mutations per seeding request (aliases in one document). Palaver refuses more
    /// than 20 root fields per operation by default (`PALAVER_MAX_ROOT_FIELDS`).
    #[arg(long, default_value_t = 20)]
    pub seed_batch: usize,
    /// Conversation kind to seed.
    #[arg(long, value_enum, default_value_t = Kind::Direct)]
    pub kind: Kind,
    /// Seed state file: when it exists (and names the same URL) seeding is skipped and its
    /// conversations are read; otherwise it is written after seeding. Lets a 1M-message seed
    /// be reused across runs.
    #[arg(long)]
    pub state: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct State {
    url: String,
    token: String,
    conversations: Vec<Seeded>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Seeded {
    id: String,
    messages: u64,
}

#[derive(Serialize)]
struct SeedStats {
    reused_state: bool,
    messages_seeded: u64,
    errors: Errors,
    seconds: f64,
    messages_per_sec: f64,
}

#[derive(Serialize)]
struct HistoryResults {
    conversations: usize,
    messages_planned: u64,
    seed: SeedStats,
    requests_ok: u64,
    request_errors: Errors,
    requests_per_sec: f64,
    messages_returned: u64,
    empty_pages: u64,
    page_latency: Latency,
}

/// Runs the workload.
pub async fn run(ctx: &Ctx, args: &HistoryArgs) -> Result<Outcome> {
    if args.conversations == 0 || args.concurrency == 0 || args.page_size == 0 {
        bail!("--conversations, --concurrency and --page-size must be positive");
    }
    if args.hot_messages > args.messages {
        bail!("--hot-messages cannot exceed --messages");
    }
    let loaded = match &args.state {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let state: State = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            if state.url != ctx.target.base {
                bail!(
                    "{} was seeded against {}, not {}",
                    path.display(),
                    state.url,
                    ctx.target.base
                );
            }
            report::progress(format!("reusing seed state from {}", path.display()));
            Some(state)
        }
        _ => None,
    };
    let reused_state = loaded.is_some();
    let (state, seed) = match loaded {
        Some(state) => (
            state,
            SeedStats {
                reused_state: true,
                messages_seeded: 0,
                errors: Errors::default(),
                seconds: 0.0,
                messages_per_sec: 0.0,
            },
        ),
        None => seed(ctx, args).await?,
    };
    if let (Some(path), false) = (&args.state, reused_state) {
        std::fs::write(path, serde_json::to_string(&state)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    report::progress(format!(
        "reading {} pages of {} with {} in flight",
        args.requests, args.page_size, args.concurrency
    ));
    let state = Arc::new(state);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers = (0..args.concurrency).map(|w| {
        let (api, state, issued) = (ctx.api.clone(), state.clone(), issued.clone());
        let (requests, page_size, hard_stop) = (args.requests, args.page_size, ctx.hard_stop);
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            let mut hist = report::new_hist();
            let mut errors = Errors::default();
            let (mut ok, mut returned, mut empty) = (0u64, 0u64, 0u64);
            let pick = |rng: &mut StdRng| rng.random_range(0..state.conversations.len());
            let mut conv = pick(&mut rng);
            let mut after: Option<String> = None;
            while issued.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < hard_stop {
                let t0 = Instant::now();
                let page = api
                    .messages_page(
                        &state.token,
                        &state.conversations[conv].id,
                        page_size,
                        after.as_deref(),
                    )
                    .await;
                let elapsed = t0.elapsed();
                match page {
                    Ok(page) => {
                        ok += 1;
                        report::record(&mut hist, elapsed);
                        returned += page.count as u64;
                        empty += u64::from(page.count == 0);
                        // Walk each conversation to its end, then jump to another at random.
                        if page.has_next && page.end_cursor.is_some() {
                            after = page.end_cursor;
                        } else {
                            conv = pick(&mut rng);
                            after = None;
                        }
                    }
                    Err(e) => {
                        errors.add(&e.code);
                        conv = pick(&mut rng);
                        after = None;
                    }
                }
            }
            (hist, errors, ok, returned, empty)
        })
    });
    let workers: Vec<_> = workers.collect();
    let mut hist = report::new_hist();
    let mut request_errors = Errors::default();
    let (mut ok, mut returned, mut empty) = (0, 0, 0);
    for worker in workers {
        let (h, e, o, r, m) = worker.await.context("history reader task")?;
        let _ = hist.add(&h);
        request_errors.merge(&e);
        ok += o;
        returned += r;
        empty += m;
    }
    let elapsed = started.elapsed();

    let results = HistoryResults {
        conversations: state.conversations.len(),
        messages_planned: state.conversations.iter().map(|c| c.messages).sum(),
        seed,
        requests_ok: ok,
        request_errors,
        requests_per_sec: load::rate(ok, elapsed),
        messages_returned: returned,
        empty_pages: empty,
        page_latency: Latency::of(&hist),
    };
    let summary = format!(
        "history: {} conversations, {} messages{}\n  seed: {} messages in {:.1}s ({:.0}/s), errors: {}\n  pages: {} ok ({:.0}/s), errors: {}, {} messages returned, {} empty pages\n  page {}\n",
        results.conversations,
        results.messages_planned,
        if results.seed.reused_state {
            " (seed state reused)"
        } else {
            ""
        },
        results.seed.messages_seeded,
        results.seed.seconds,
        results.seed.messages_per_sec,
        results.seed.errors.line(),
        results.requests_ok,
        results.requests_per_sec,
        results.request_errors.line(),
        results.messages_returned,
        results.empty_pages,
        results.page_latency.line(),
    );
    Ok(Outcome {
        summary,
        results: json!(results),
    })
}

/// How many messages each conversation gets.
fn plan(conversations: usize, messages: u64, hot: u64) -> Vec<u64> {
    let (first, rest_total, rest_count) = if hot > 0 && conversations > 1 {
        (Some(hot), messages - hot, conversations - 1)
    } else {
        (None, messages, conversations)
    };
    let per = rest_total / rest_count as u64;
    let extra = (rest_total % rest_count as u64) as usize;
    let rest = (0..rest_count).map(|i| per + u64::from(i < extra));
    first.into_iter().chain(rest).collect()
}

async fn seed(ctx: &Ctx, args: &HistoryArgs) -> Result<(State, SeedStats)> {
    let targets = plan(args.conversations, args.messages, args.hot_messages);
    let reader = load::users(&ctx.api, &ctx.run_id, "h", 1, 1).await?;
    let reader = reader.into_iter().next().context("no reader user")?;
    let peer_count = match args.kind {
        Kind::Direct => args.conversations,
        Kind::Room => 1,
    };
    let peers = load::users(
        &ctx.api,
        &ctx.run_id,
        "p",
        peer_count,
        ctx.register_concurrency,
    )
    .await?;

    let opened: Vec<Result<(String, u64), crate::api::GqlError>> =
        stream::iter(0..args.conversations)
            .map(|i| {
                let (api, token) = (ctx.api.clone(), reader.token.clone());
                let peer = peers[i % peers.len()].id.clone();
                let name = format!("{} history {i}", ctx.run_id);
                let kind = args.kind;
                async move {
                    match kind {
                        Kind::Direct => api
                            .send_direct(&token, &peer, &format!("seed {i} open"))
                            .await
                            .map(|sent| (sent.conversation_id, 1)),
                        Kind::Room => api
                            .create_room(&token, &name, &[peer])
                            .await
                            .map(|id| (id, 0)),
                    }
                }
            })
            .buffered(ctx.register_concurrency)
            .collect()
            .await;
    let mut conversations = Vec::with_capacity(args.conversations);
    let mut batches = Vec::new();
    let mut opening_messages = 0;
    for (i, (opened, &target)) in opened.into_iter().zip(&targets).enumerate() {
        let (id, already) = opened.context("opening conversations to seed")?;
        opening_messages += already;
        let mut next = already;
        while next < target {
            let len = (target - next).min(args.seed_batch.max(1) as u64);
            batches.push((i, next, len));
            next += len;
        }
        conversations.push(Seeded {
            id,
            messages: target.max(already),
        });
    }
    batches.shuffle(&mut StdRng::seed_from_u64(1));

    report::progress(format!(
        "seeding {} messages in {} batches",
        args.messages,
        batches.len()
    ));
    let started = Instant::now();
    let seeded = AtomicU64::new(opening_messages);
    let hard_stop = tokio::time::Instant::from_std(ctx.hard_stop);
    let mut errors = Errors::default();
    let mut last_progress = Instant::now();
    let mut results = stream::iter(batches)
        .map(|(conv, start, len)| {
            let (api, token) = (ctx.api.clone(), reader.token.clone());
            let id = conversations[conv].id.clone();
            let run_id = ctx.run_id.clone();
            async move {
                let messages: Vec<(String, String)> = (start..start + len)
                    .map(|n| {
                        (
                            format!("history seed message {n} in conversation {conv}, with some text to make it look real"),
                            format!("{run_id}-h{conv}-{n}"),
                        )
                    })
                    .collect();
                api.send_batch(&token, &id, &messages).await
            }
        })
        .buffer_unordered(args.seed_concurrency.max(1));
    while let Ok(Some(result)) = tokio::time::timeout_at(hard_stop, results.next()).await {
        match result {
            Ok((ok, errs)) => {
                seeded.fetch_add(ok as u64, Ordering::Relaxed);
                errs.iter().for_each(|e| errors.add(&e.code));
            }
            Err(e) => errors.add(&e.code),
        }
        if last_progress.elapsed() > Duration::from_secs(10) {
            last_progress = Instant::now();
            let n = seeded.load(Ordering::Relaxed);
            report::progress(format!(
                "seeded {n}/{} ({:.0}/s)",
                args.messages,
                load::rate(n, started.elapsed())
            ));
        }
    }
    drop(results);
    let seconds = started.elapsed().as_secs_f64();
    let messages_seeded = seeded.load(Ordering::Relaxed);
    Ok((
        State {
            url: ctx.target.base.clone(),
            token: reader.token,
            conversations,
        },
        SeedStats {
            reused_state: false,
            messages_seeded,
            errors,
            seconds,
            messages_per_sec: load::rate(messages_seeded, Duration::from_secs_f64(seconds)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn plan_puts_the_hot_share_first_and_spreads_the_rest() {
        assert_eq!(plan(3, 10, 0), vec![4, 3, 3]);
        assert_eq!(plan(3, 100, 80), vec![80, 10, 10]);
        assert_eq!(plan(1, 7, 7), vec![7]);
        assert_eq!(plan(4, 100, 70).iter().sum::<u64>(), 100);
    }
}
