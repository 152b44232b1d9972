//! `idle`: many authenticated, subscribed, silent WebSocket connections; what each costs the
//! server in resident memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use super::{Ctx, error_label};
use crate::load;
use crate::report::{self, Errors, Outcome};
use crate::ws;

/// Flags of the `idle` workload.
#[derive(Args, Debug, Serialize)]
pub struct IdleArgs {
    /// WebSocket connections to open, each with one messageEvents subscription.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// The server's process id; its VmRSS is read from /proc before and after.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Distinct users the connections authenticate as (round-robin).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Seconds to wait after the last connection before reading RSS.
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,
    /// Seconds to hold the connections after measuring, to see whether they stay up.
    #[arg(long, default_value_t = 5.0)]
    pub hold_secs: f64,
}

#[derive(Serialize)]
struct IdleResults {
    connections_requested: usize,
    connections_open: u64,
    connect_failures: Errors,
    connect_secs: f64,
    connects_per_sec: f64,
    open_after_hold: u64,
    ended_early: Errors,
    nofile_limit: u64,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    rss_after_close_kib: Option<u64>,
    kib_per_connection: Option<f64>,
}

/// Runs the workload.
pub async fn run(ctx: &Ctx, args: &IdleArgs) -> Result<Outcome> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let nofile = load::raise_nofile()?;
    if nofile < args.connections as u64 + 256 {
        report::progress(format!(
            "warning: open-file limit is {nofile}, below --connections {}",
            args.connections
        ));
    }
    if args.connections > 25_000 && ctx.sources.len() < 2 {
        report::progress(
            "warning: one source address gives about 28k ephemeral ports; pass --source-ips 127.0.0.1,127.0.0.2,…",
        );
    }
    let rss = |pid: Option<u32>| pid.map(report::rss_kib).transpose();
    let users = load::users(
        &ctx.api,
        &ctx.run_id,
        "i",
        args.users.clamp(1, args.connections),
        ctx.register_concurrency,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss(args.server_pid)?;

    let connector = ctx.connector();
    let (stop_tx, stop_rx) = watch::channel(false);
    let open = Arc::new(AtomicU64::new(0));
    let mut failures = Errors::default();
    let mut holders = Vec::with_capacity(args.connections);
    let started = Instant::now();
    let hard_stop = tokio::time::Instant::from_std(ctx.hard_stop);
    let mut attempts = stream::iter(0..args.connections)
        .map(|i| {
            let connector = connector.clone();
            let token = users[i % users.len()].token.clone();
            async move {
                let mut socket = connector.connect(&token).await?;
                ws::subscribe(&mut socket, ctx.subscription, "events", None).await?;
                anyhow::Ok(socket)
            }
        })
        .buffer_unordered(ctx.connect_concurrency);
    let mut done = 0usize;
    while let Ok(Some(attempt)) = tokio::time::timeout_at(hard_stop, attempts.next()).await {
        done += 1;
        match attempt {
            Ok(mut socket) => {
                let mut stop = stop_rx.clone();
                let open = open.clone();
                open.fetch_add(1, Ordering::Relaxed);
                holders.push(tokio::spawn(async move {
                    let mut errors = 0;
                    let end = ws::pump(&mut socket, &mut stop, &mut errors, |_| {}).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                    end
                }));
            }
            Err(e) => {
                if failures.total() < 3 {
                    report::progress(format!("connection failed: {e:#}"));
                }
                failures.add(&error_label(&e));
            }
        }
        if done.is_multiple_of(5000) {
            report::progress(format!(
                "{done}/{} attempted, {} open",
                args.connections,
                open.load(Ordering::Relaxed)
            ));
        }
    }
    drop(attempts);
    let connect_secs = started.elapsed().as_secs_f64();
    let opened = open.load(Ordering::Relaxed);
    report::progress(format!("{opened} connections open in {connect_secs:.1}s"));

    tokio::time::sleep_until(tokio::time::Instant::from_std(
        ctx.deadline(args.settle_secs),
    ))
    .await;
    let rss_after = rss(args.server_pid)?;
    tokio::time::sleep_until(tokio::time::Instant::from_std(ctx.deadline(args.hold_secs))).await;
    let open_after_hold = open.load(Ordering::Relaxed);

    let _ = stop_tx.send(true);
    let mut ended_early = Errors::default();
    for holder in holders {
        match holder.await {
            Ok(ws::PumpEnd::Stopped) => {}
            Ok(end) => ended_early.add(&end.label()),
            Err(_) => ended_early.add("task_failed"),
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs.max(1.0))).await;
    let rss_after_close = rss(args.server_pid)?;

    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    let results = IdleResults {
        connections_requested: args.connections,
        connections_open: opened,
        connect_failures: failures,
        connect_secs,
        connects_per_sec: load::rate(opened, Duration::from_secs_f64(connect_secs)),
        open_after_hold,
        ended_early,
        nofile_limit: nofile,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_after_close_kib: rss_after_close,
        kib_per_connection: per_conn,
    };
    let mut summary = format!(
        "idle: {opened}/{} connections open ({:.0}/s), {} still open after {:.0}s hold\n  connect failures: {}\n  ended early: {}\n",
        args.connections,
        results.connects_per_sec,
        open_after_hold,
        args.hold_secs,
        results.connect_failures.line(),
        results.ended_early.line(),
    );
    match (rss_before, rss_after, per_conn) {
        (Some(b), Some(a), Some(k)) => summary.push_str(&format!(
            "  server RSS {b} KiB -> {a} KiB (after close {} KiB): {k:.2} KiB per connection\n",
            rss_after_close.map_or_else(|| "?".into(), |v| v.to_string())
        )),
        _ => summary.push_str("  server RSS not measured (pass --server-pid)\n"),
    }
    Ok(Outcome {
        summary,
        results: json!(results),
    })
}
