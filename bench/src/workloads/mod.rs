//! The four workloads. Each takes the shared [`Ctx`] and its own clap arguments and returns an
//! [`Outcome`](crate::report::Outcome).

pub mod direct;
pub mod fanout;
pub mod history;
pub mod idle;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{Api, Target};
use crate::ws::Connector;

/// One server instance of the deployment under test.
pub struct Instance {
    pub target: Arc<Target>,
    pub api: Api,
}

/// What every workload needs from the command line and the environment.
pub struct Ctx {
    pub target: Arc<Target>,
    pub api: Api,
    /// Every instance: `--url` first, then each `--also-url`.
    pub instances: Vec<Instance>,
    pub run_id: String,
    pub timeout: Duration,
    /// Nothing may be started after this instant.
    pub hard_stop: Instant,
    pub sources: Vec<IpAddr>,
    pub register_concurrency: usize,
    pub connect_concurrency: usize,
    /// The `messageEvents` document every subscriber sends.
    pub subscription: &'static str,
}

impl Ctx {
    /// A WebSocket connector for this target and these source addresses.
    pub fn connector(&self) -> Arc<Connector> {
        self.connector_to(0)
    }

    /// A WebSocket connector for instance `i` (0 is `--url`) and these source addresses.
    pub fn connector_to(&self, i: usize) -> Arc<Connector> {
        Arc::new(Connector::new(
            self.instances[i].target.clone(),
            self.sources.clone(),
            self.timeout,
        ))
    }

    /// `secs` from now, but never past the run's hard stop.
    pub fn deadline(&self, secs: f64) -> Instant {
        (Instant::now() + Duration::from_secs_f64(secs.max(0.0))).min(self.hard_stop)
    }
}

/// Reduces a connection error to a short label for tallies: its outermost context and its root
/// cause, cut before the first digit so addresses and ports do not split the tally.
pub fn error_label(e: &anyhow::Error) -> String {
    fn head(s: &str) -> String {
        s.split(|c: char| c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .take(60)
            .collect()
    }
    let top = head(&e.to_string());
    let root = head(&e.root_cause().to_string());
    match (top.is_empty(), root == top) {
        (true, _) => "error".into(),
        (false, true) => top,
        (false, false) => format!("{top} ({root})"),
    }
}
