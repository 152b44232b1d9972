//! Logging setup (`RUST_LOG` filters, `info` by default) and the instance's counters, exported
//! on `/metrics` in Prometheus' text format.
//!
//! Each [`Metrics`] has a recorder of its own and counts through its handles, never through the
//! `metrics` crate's global recorder: several servers may run in one process (the tests start
//! many), and each must report only what it did itself.
use metrics::{Counter, Key, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber (once; later calls are no-ops).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .try_init();
}

/// One instance's counters and the means to render them.
#[derive(Clone)]
pub struct Metrics {
    /// SQL statements executed since start (the statement-count tests read it).
    pub statements: Counter,
    /// Subscription deliveries served from a render another subscriber made.
    pub shared_renders: Counter,
    /// `messageEvents` subscriptions served plainly, beside the schema (see `graphql::plain`).
    pub plain_subscriptions: Counter,
    /// Events this instance took from Redis, on every channel it listens to.
    pub bus_received: Counter,
    /// Events handed to at least one of this instance's subscriptions (each event once).
    pub bus_delivered: Counter,
    handle: PrometheusHandle,
}

impl Metrics {
    /// Counters at zero, each registered (so `/metrics` lists it before its first count).
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let counter = |name: &'static str, help: &'static str| {
            recorder.describe_counter(name.into(), None, help.into());
            recorder.register_counter(
                &Key::from_static_name(name),
                &Metadata::new(module_path!(), metrics::Level::INFO, None),
            )
        };
        Self {
            statements: counter(
                "palaver_db_statements_total",
                "SQL statements executed since start.",
            ),
            shared_renders: counter(
                "palaver_subscription_shared_renders_total",
                "Subscription events served from the same event resolved for another subscriber \
                 in the same shape.",
            ),
            plain_subscriptions: counter(
                "palaver_subscriptions_plain_total",
                "messageEvents subscriptions served from their selection's shape, without \
                 executing the document per event.",
            ),
            bus_received: counter(
                "palaver_bus_events_received_total",
                "Events this instance received from Redis pub/sub, whether or not any of its \
                 subscriptions wanted them.",
            ),
            bus_delivered: counter(
                "palaver_bus_events_delivered_total",
                "Events handed to at least one subscription on this instance (each event counted \
                 once, however many subscriptions it reached).",
            ),
            handle: recorder.handle(),
        }
    }

    /// Every counter in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_counts_its_own() {
        let one = Metrics::new();
        let other = Metrics::new();
        one.statements.increment(3);
        other.statements.increment(1);
        let text = one.render();
        assert!(
            text.lines().any(|l| l == "palaver_db_statements_total 3"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "palaver_subscriptions_plain_total 0"),
            "{text}"
        );
        assert!(text.contains("# TYPE palaver_subscription_shared_renders_total counter"));
        for bus in [
            "palaver_bus_events_received_total 0",
            "palaver_bus_events_delivered_total 0",
        ] {
            assert!(text.lines().any(|l| l == bus), "{text}");
        }
        assert!(other.render().contains("palaver_db_statements_total 1\n"));
    }
}
