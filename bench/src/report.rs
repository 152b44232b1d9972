//! Measurements and their presentation: HDR latency summaries, error tallies, server RSS,
//! and writing the human summary and the JSON document.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in microseconds, 1 µs to 1 h, 3 significant figures.
pub fn new_hist() -> Histogram<u64> {
    // The bounds are constants that `new_with_bounds` accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// Records a duration into a microsecond histogram, clamping into its range.
pub fn record(hist: &mut Histogram<u64>, d: Duration) {
    hist.saturating_record((d.as_micros() as u64).max(1));
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarises a microsecond histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                count: 0,
                min_ms: 0.0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Self {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// One line for the human summary.
    pub fn line(&self) -> String {
        format!(
            "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms mean={:.2}ms",
            self.count,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            self.mean_ms
        )
    }
}

/// Failures counted by code (`extensions.code` or a tool-made label).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    /// Adds one failure under `code`.
    pub fn add(&mut self, code: &str) {
        *self.0.entry(code.to_string()).or_default() += 1;
    }

    /// Folds another tally into this one.
    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    /// Total failures.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `CODE=n, …` or `none`.
    pub fn line(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The server's resident set size in KiB, from `/proc/<pid>/status` (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// CPU time (user and system, all threads) a process has used so far, from `/proc/<pid>/stat`;
/// `None` reads this process. Linux reports it in ticks of 1/100 s (`USER_HZ`) to user space.
pub fn cpu_time(pid: Option<u32>) -> Result<Duration> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses; the fields that follow start after its
    // last `)`, at field 3 (state), so utime (field 14) and stime (15) are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no CPU time in {path}"))
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// CPU used by the server and by this load generator over one phase of a run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CpuUse {
    pub server_ms: Option<u64>,
    pub bench_ms: u64,
}

/// Reads CPU time at the start of a phase; [`CpuMark::used`] gives what was spent since.
pub struct CpuMark {
    server: Option<(u32, Duration)>,
    bench: Duration,
}

impl CpuMark {
    pub fn now(server_pid: Option<u32>) -> Result<Self> {
        Ok(Self {
            server: server_pid
                .map(|p| cpu_time(Some(p)).map(|t| (p, t)))
                .transpose()?,
            bench: cpu_time(None)?,
        })
    }

    pub fn used(&self) -> Result<CpuUse> {
        let server_ms = match self.server {
            Some((pid, start)) => {
                Some(cpu_time(Some(pid))?.saturating_sub(start).as_millis() as u64)
            }
            None => None,
        };
        Ok(CpuUse {
            server_ms,
            bench_ms: cpu_time(None)?.saturating_sub(self.bench).as_millis() as u64,
        })
    }

    /// `server X ms (Y µs per unit), bench Z ms (W µs per unit)`.
    pub fn line(used: &CpuUse, units: u64, unit: &str) -> String {
        let per = |ms: u64| ms as f64 * 1000.0 / units.max(1) as f64;
        let server = used.server_ms.map_or_else(
            || "server ? (no --server-pid)".to_string(),
            |ms| format!("server {ms} ms ({:.1} µs per {unit})", per(ms)),
        );
        format!(
            "{server}, load generator {} ms ({:.1} µs per {unit})",
            used.bench_ms,
            per(used.bench_ms)
        )
    }
}

/// What a workload produced: a text summary for people and a JSON value for machines.
pub struct Outcome {
    pub summary: String,
    pub results: serde_json::Value,
}

/// Prints the summary to stdout and writes the JSON document to `json` (`-` = stdout, last line).
pub fn emit(outcome: &Outcome, envelope: serde_json::Value, json: Option<&str>) -> Result<()> {
    let mut doc = envelope;
    if let Some(map) = doc.as_object_mut() {
        map.insert("results".into(), outcome.results.clone());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", outcome.summary.trim_end())?;
    match json {
        None => {}
        Some("-") => writeln!(out, "{}", serde_json::to_string(&doc)?)?,
        Some(path) => {
            std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
                .with_context(|| format!("writing {path}"))?;
            writeln!(out, "JSON written to {path}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Progress for a person watching: stderr, so stdout stays summary + JSON.
pub fn progress(msg: impl AsRef<str>) {
    eprintln!("[palaver-bench] {}", msg.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_reports_milliseconds() {
        let mut h = new_hist();
        for ms in 1..=100u64 {
            record(&mut h, Duration::from_millis(ms));
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 100);
        assert!((l.p50_ms - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms - 100.0).abs() < 0.1, "{l:?}");
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
