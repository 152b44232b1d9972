//! `palaver-bench`: a load generator for Palaver (or any server speaking its GraphQL contract).
//!
//! It talks to a running server only through the public protocols: HTTP `POST /graphql` and
//! `graphql-transport-ws` on `/graphql/ws`. Every workload creates its own users and
//! conversations under a run-specific prefix, bounds its loops in count and time, and refuses to
//! connect anywhere but loopback.

mod api;
mod bus;
mod load;
mod report;
mod workloads;
mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rand::Rng;
use serde::Serialize;
use serde_json::json;

use crate::api::{Api, Target};
use crate::workloads::{Ctx, Instance, direct, fanout, history, idle};

#[derive(Parser, Debug)]
#[command(
    name = "palaver-bench",
    version,
    about = "Load generator for the Palaver GraphQL chat server"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    workload: Workload,
}

/// Options every workload takes.
#[derive(Args, Debug, Serialize)]
struct Common {
    /// Base URL of the server; /graphql and ws://…/graphql/ws are derived from it. Loopback only.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Further instances of the same deployment (same database and Redis), comma-separated.
    /// `direct` spreads its receivers and senders over all instances; every step reports each
    /// instance's bus counters from its /metrics. Loopback only.
    #[arg(long, global = true, value_delimiter = ',')]
    also_url: Vec<String>,
    /// Write the JSON report to PATH, or print it as the last line of stdout with `-`.
    #[arg(long, global = true, value_name = "PATH")]
    json: Option<String>,
    /// Prefix for the users this run creates; reuse one to log in as an earlier run's users
    /// instead of registering again. Random by default.
    #[arg(long, global = true)]
    run_id: Option<String>,
    /// Per-request and per-connection-setup timeout, in seconds.
    #[arg(long, global = true, default_value_t = 30)]
    timeout_secs: u64,
    /// Hard cap on the whole run, in seconds; every loop stops by then.
    #[arg(long, global = true, default_value_t = 3600)]
    max_runtime_secs: u64,
    /// Comma-separated 127.x addresses to bind client WebSocket sockets to, round-robin (each
    /// source address gives another ~28k ephemeral ports).
    #[arg(long, global = true, value_delimiter = ',')]
    source_ips: Vec<String>,
    /// Users registered at once (registration hashes a password on the server, so it is slow).
    #[arg(long, global = true, default_value_t = 8)]
    register_concurrency: usize,
    /// WebSocket connections opened at once.
    #[arg(long, global = true, default_value_t = 128)]
    connect_concurrency: usize,
    /// Subscribe with a selection that also asks for fields resolved per viewer (`isRead`,
    /// `conversation { unreadCount }`), which the server cannot share between subscribers.
    #[arg(long, global = true)]
    viewer_fields: bool,
    /// Tokio worker threads for the tool (default: one per core). Pin with `taskset`.
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// N authenticated WebSocket connections, each holding a messageEvents subscription;
    /// reports the server's RSS growth per connection.
    Idle(idle::IdleArgs),
    /// M sender/receiver pairs at a fixed total send rate; send→deliver latency.
    Direct(direct::DirectArgs),
    /// One room of K subscribed members and one sender; deliveries/s and latency to the last member.
    Fanout(fanout::FanoutArgs),
    /// Seeds conversations, then reads 50-message pages concurrently; page latency.
    History(history::HistoryArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.common.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build().context("starting the tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let common = &cli.common;
    let target = Arc::new(Target::resolve(&common.url).await?);
    let timeout = Duration::from_secs(common.timeout_secs.max(1));
    let run_id = common.run_id.clone().unwrap_or_else(random_run_id);
    let max_runtime = Duration::from_secs(common.max_runtime_secs.max(1));
    let mut instances = vec![Instance {
        target: target.clone(),
        api: Api::new(&target, timeout)?,
    }];
    for url in &common.also_url {
        let target = Arc::new(Target::resolve(url).await?);
        instances.push(Instance {
            api: Api::new(&target, timeout)?,
            target,
        });
    }
    let ctx = Ctx {
        api: Api::new(&target, timeout)?,
        instances,
        target: target.clone(),
        run_id: run_id.clone(),
        timeout,
        hard_stop: Instant::now() + max_runtime,
        sources: api::parse_source_ips(&common.source_ips)?,
        register_concurrency: common.register_concurrency.max(1),
        connect_concurrency: common.connect_concurrency.max(1),
        subscription: if common.viewer_fields {
            ws::MESSAGE_EVENTS_PER_VIEWER
        } else {
            ws::MESSAGE_EVENTS
        },
    };
    report::progress(format!(
        "run {run_id} against {} (ws {})",
        target.graphql_url, target.ws_url
    ));
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let work = async {
        let (name, config, outcome) = match &cli.workload {
            Workload::Idle(args) => ("idle", json!(args), idle::run(&ctx, args).await?),
            Workload::Direct(args) => ("direct", json!(args), direct::run(&ctx, args).await?),
            Workload::Fanout(args) => ("fanout", json!(args), fanout::run(&ctx, args).await?),
            Workload::History(args) => ("history", json!(args), history::run(&ctx, args).await?),
        };
        anyhow::Ok((name, config, outcome))
    };
    // The workloads watch `hard_stop` themselves; this is the backstop (plus a grace period
    // for their own draining) in case a server stops answering altogether.
    let (name, config, outcome): (&str, serde_json::Value, report::Outcome) =
        tokio::time::timeout(max_runtime + Duration::from_secs(60), work)
            .await
            .context("the run exceeded --max-runtime-secs")??;

    let envelope = json!({
        "tool": "palaver-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "workload": name,
        "url": common.url,
        "run_id": run_id,
        "started_unix": started_unix,
        "common": common,
        "config": config,
    });
    report::emit(&outcome, envelope, common.json.as_deref())
}

/// Short, lowercase and alphanumeric, so usernames built from it pass any sane validation.
fn random_run_id() -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    format!("b{suffix}")
}
