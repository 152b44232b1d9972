//! Pieces every workload shares: creating users, the open-loop send schedule, and the
//! message-body stamp that lets a receiver compute send→deliver latency.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::{Api, BenchUser, GqlError};
use crate::report::{self, Errors, Latency};

/// Raises the open-file limit as far as allowed: to the kernel's `fs.nr_open` when privileged
/// (root may raise the hard limit), else the soft limit to the hard one. Returns the soft limit.
pub fn raise_nofile() -> Result<u64> {
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).context("reading RLIMIT_NOFILE")?;
    if hard < ceiling && rlimit::setrlimit(rlimit::Resource::NOFILE, ceiling, ceiling).is_ok() {
        return Ok(ceiling);
    }
    rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")
}

/// A shared time origin, so a body can carry "scheduled at" as nanoseconds since it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// Starts the clock now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// `at` as nanoseconds since the epoch.
    pub fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// How long ago the instant `nanos` (since the epoch) was.
    pub fn since(&self, nanos: u64) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_nanos(nanos))
    }
}

/// The body of a measured message: its sequence number and scheduled send time.
pub fn stamp(seq: u64, scheduled_nanos: u64) -> String {
    format!("bench:{seq}:{scheduled_nanos}")
}

/// Reads a body made by [`stamp`]; anything else (warm-up messages, other traffic) is `None`.
pub fn parse_stamp(body: &str) -> Option<(u64, u64)> {
    let (seq, nanos) = body.strip_prefix("bench:")?.split_once(':')?;
    Some((seq.parse().ok()?, nanos.parse().ok()?))
}

/// Registers (or, for a reused `--run-id`, logs in) `count` users named `<prefix>_<tag><i>`,
/// `concurrency` at a time, retrying rate limits and transport hiccups a few times.
pub async fn users(
    api: &Api,
    prefix: &str,
    tag: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<BenchUser>> {
    let started = Instant::now();
    let results: Vec<Result<BenchUser, GqlError>> = stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}_{tag}{i}");
            async move {
                let mut attempt = 0u32;
                loop {
                    match api.register_or_login(&name).await {
                        Err(e)
                            if attempt < 5
                                && matches!(
                                    e.code.as_str(),
                                    "RATE_LIMITED" | "TRANSPORT" | "TIMEOUT"
                                ) =>
                        {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        }
                        other => {
                            if i > 0 && i.is_multiple_of(1000) {
                                report::progress(format!("registered {i}/{count} {tag} users"));
                            }
                            return other;
                        }
                    }
                }
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let users = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("registering {tag} users"))?;
    report::progress(format!(
        "{count} {tag} users ready in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(users)
}

/// One open-loop run: `count` sends at `rate` per second, each started at its scheduled time
/// whatever earlier sends are doing (up to `max_in_flight` outstanding), never past `hard_stop`.
pub struct Schedule {
    pub rate: f64,
    pub count: u64,
    pub max_in_flight: usize,
    pub hard_stop: Instant,
}

/// What the sending side saw.
#[derive(Debug, Clone, Serialize)]
pub struct SendStats {
    /// Sends started.
    pub issued: u64,
    /// Sends the server accepted.
    pub ok: u64,
    /// Sends that failed, by code.
    pub errors: Errors,
    /// Rate the server accepted sends at: `ok` over the time from the first scheduled send
    /// to the last response.
    pub achieved_rate: f64,
    /// Seconds from the first scheduled send to the last response.
    pub window_secs: f64,
    /// Scheduled time → HTTP response, for accepted sends.
    pub ack_latency: Latency,
    /// How late the tool itself started sends (client saturation shows here, and in the
    /// delivery latency, which is measured from the scheduled time).
    pub schedule_lag: Latency,
}

/// Runs `schedule`, calling `send(seq, scheduled_nanos)` for each slot. Latency downstream is
/// measured from the scheduled time, so a stalled server cannot hide queueing (no coordinated
/// omission). Returns when every started send has finished or `hard_stop` passes.
pub async fn open_loop<F, Fut>(
    clock: Clock,
    first_seq: u64,
    schedule: &Schedule,
    mut send: F,
) -> SendStats
where
    F: FnMut(u64, u64) -> Fut,
    Fut: Future<Output = Result<(), GqlError>> + Send + 'static,
{
    let start = Instant::now();
    let semaphore = Arc::new(Semaphore::new(schedule.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    let mut tally = Tally::default();
    let mut lag = report::new_hist();
    let mut issued = 0;
    for i in 0..schedule.count {
        let at = start + Duration::from_secs_f64(i as f64 / schedule.rate);
        if at > schedule.hard_stop {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        report::record(&mut lag, Instant::now().saturating_duration_since(at));
        let fut = send(first_seq + i, clock.nanos(at));
        tasks.spawn(async move {
            let result = fut.await;
            drop(permit);
            (result, at, Instant::now())
        });
        issued += 1;
        while let Some(done) = tasks.try_join_next() {
            tally.add(done);
        }
    }
    let hard_stop = tokio::time::Instant::from_std(schedule.hard_stop.max(Instant::now()));
    while let Ok(Some(done)) = tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
        tally.add(done);
    }
    let abandoned = tasks.len() as u64;
    tasks.abort_all();
    for _ in 0..abandoned {
        tally.errors.add("ABANDONED_AT_DEADLINE");
    }
    let window = tally
        .last_done
        .unwrap_or(start)
        .saturating_duration_since(start);
    SendStats {
        issued,
        ok: tally.ok,
        errors: tally.errors,
        achieved_rate: rate(tally.ok, window),
        window_secs: window.as_secs_f64(),
        ack_latency: Latency::of(&tally.ack),
        schedule_lag: Latency::of(&lag),
    }
}

/// A usable rate or duration: finite and above zero.
pub fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// `count / window`, or 0 for an empty window.
pub fn rate(count: u64, window: Duration) -> f64 {
    if window.is_zero() {
        0.0
    } else {
        count as f64 / window.as_secs_f64()
    }
}

struct Tally {
    ok: u64,
    errors: Errors,
    ack: Histogram<u64>,
    last_done: Option<Instant>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            ok: 0,
            errors: Errors::default(),
            ack: report::new_hist(),
            last_done: None,
        }
    }
}

impl Tally {
    fn add(
        &mut self,
        joined: Result<(Result<(), GqlError>, Instant, Instant), tokio::task::JoinError>,
    ) {
        match joined {
            Ok((result, at, done)) => {
                self.last_done = Some(self.last_done.map_or(done, |d| d.max(done)));
                match result {
                    Ok(()) => {
                        self.ok += 1;
                        report::record(&mut self.ack, done.saturating_duration_since(at));
                    }
                    Err(e) => self.errors.add(&e.code),
                }
            }
            Err(_) => self.errors.add("TASK_FAILED"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_foreign_bodies_are_ignored() {
        assert_eq!(parse_stamp(&stamp(42, 123_456)), Some((42, 123_456)));
        assert_eq!(parse_stamp("warmup"), None);
        assert_eq!(parse_stamp("bench:x:1"), None);
    }

    #[tokio::test]
    async fn open_loop_sends_everything_on_schedule() {
        let schedule = Schedule {
            rate: 1000.0,
            count: 50,
            max_in_flight: 8,
            hard_stop: Instant::now() + Duration::from_secs(5),
        };
        let stats = open_loop(Clock::new(), 0, &schedule, |seq, _| async move {
            if seq == 7 {
                Err(GqlError {
                    code: "RATE_LIMITED".into(),
                    message: String::new(),
                })
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(stats.issued, 50);
        assert_eq!(stats.ok, 49);
        assert_eq!(stats.errors.0.get("RATE_LIMITED"), Some(&1));
    }
}
