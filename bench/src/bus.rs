//! Each instance's event-bus counters, read from its `/metrics` before and after a step: across
//! several instances they show how many events each one was sent for every event it handed to a
//! subscriber of its own.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::workloads::Instance;

/// Events an instance received from Redis.
const RECEIVED: &str = "palaver_bus_events_received_total";
/// Events an instance handed to at least one of its subscriptions.
const DELIVERED: &str = "palaver_bus_events_delivered_total";

/// One instance's counters at one moment.
#[derive(Clone, Copy)]
struct Reading {
    received: u64,
    delivered: u64,
}

async fn read(instance: &Instance) -> Result<Reading> {
    let text = instance.api.metrics().await?;
    Ok(Reading {
        received: value(&text, RECEIVED)?,
        delivered: value(&text, DELIVERED)?,
    })
}

/// A counter's value in Prometheus' text format (`name value`, no labels).
fn value(text: &str, name: &str) -> Result<u64> {
    text.lines()
        .find_map(|line| {
            let number = line.strip_prefix(name)?.strip_prefix(' ')?;
            number.trim().parse::<f64>().ok()
        })
        .map(|v| v as u64)
        .with_context(|| format!("{name} is not on /metrics (a server without the bus counters?)"))
}

/// What one instance's counters did during a step.
#[derive(Debug, Serialize)]
pub struct InstanceBus {
    pub url: String,
    pub received: u64,
    pub delivered: u64,
    /// `received / delivered`: 1 when the instance is sent only what its subscribers need
    /// (less when some events it delivered were its own, published without Redis).
    pub received_per_delivered: Option<f64>,
}

/// Every instance's counters at the start of a step; None for a server that does not export
/// them (the tool drives any server of the contract, and then reports no bus figures for it).
pub struct Mark(Vec<Option<Reading>>);

impl Mark {
    /// Reads every instance's counters now.
    pub async fn now(instances: &[Instance]) -> Self {
        let mut readings = Vec::with_capacity(instances.len());
        for instance in instances {
            readings.push(read(instance).await.ok());
        }
        Self(readings)
    }

    /// What each instance's counters did since the mark, for those that export them.
    pub async fn since(&self, instances: &[Instance]) -> Vec<InstanceBus> {
        let mut out = Vec::with_capacity(instances.len());
        for (instance, before) in instances.iter().zip(&self.0) {
            let (Some(before), Ok(after)) = (before, read(instance).await) else {
                continue;
            };
            let received = after.received.saturating_sub(before.received);
            let delivered = after.delivered.saturating_sub(before.delivered);
            out.push(InstanceBus {
                url: instance.target.base.clone(),
                received,
                delivered,
                received_per_delivered: (delivered > 0).then(|| received as f64 / delivered as f64),
            });
        }
        out
    }
}

/// One summary line per instance.
pub fn lines(buses: &[InstanceBus]) -> String {
    buses
        .iter()
        .map(|b| {
            format!(
                "    bus {}: received {}, delivered {}, received per delivered {}\n",
                b.url,
                b.received,
                b.delivered,
                b.received_per_delivered
                    .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_counter_and_not_its_prefix_twin() {
        let text = "# TYPE palaver_bus_events_received_total counter\n\
                    palaver_bus_events_received_total_x 9\n\
                    palaver_bus_events_received_total 42\n";
        assert_eq!(value(text, RECEIVED).unwrap(), 42);
        assert!(value(text, DELIVERED).is_err());
    }
}
