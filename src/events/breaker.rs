//! A circuit breaker in front of Redis. While Redis answers, every call goes to it. After a call
//! fails, calls are not made for a cool-off period: callers take their local fallback at once
//! instead of each waiting out a timeout. When the period is over, one call probes; its success
//! closes the circuit, its failure starts another period. An outage is logged once when it starts
//! (a warning) and once when it ends (an info), not once per request.
use std::{
    fmt::Display,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long Redis is passed over after a failed call before one call probes it again.
pub const COOL_OFF: Duration = Duration::from_secs(5);

/// One Redis server's circuit, shared by everything that calls it (limits, presence, typing,
/// the event bus), so that one outage is detected, logged and waited out once.
#[derive(Clone)]
pub struct Breaker {
    /// None while closed; while open, when the next probe may go.
    open_until: Arc<Mutex<Option<Instant>>>,
    cool_off: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new(COOL_OFF)
    }
}

impl Breaker {
    /// A closed circuit that stays open `cool_off` after each failure.
    pub fn new(cool_off: Duration) -> Self {
        Self {
            open_until: Arc::default(),
            cool_off,
        }
    }

    /// Whether a call may go to Redis now: always while closed; while open, only the first call
    /// after the cool-off (the probe), which pushes the next probe a cool-off further, so that a
    /// probe whose caller gave up never leaves the circuit stuck.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut open_until = crate::lock(&self.open_until);
        match *open_until {
            None => true,
            Some(until) if now >= until => {
                *open_until = Some(now + self.cool_off);
                true
            }
            Some(_) => false,
        }
    }

    /// Whether the circuit is open (Redis is being passed over).
    pub fn is_open(&self) -> bool {
        crate::lock(&self.open_until).is_some()
    }

    /// A call reached Redis and was answered.
    pub fn succeeded(&self) {
        if crate::lock(&self.open_until).take().is_some() {
            tracing::info!("redis is reachable again; shared state and events go through it");
        }
    }

    /// A call to Redis failed or timed out.
    pub fn failed(&self, error: &dyn Display) {
        self.failed_at(error, Instant::now());
    }

    fn failed_at(&self, error: &dyn Display, now: Instant) {
        let was_closed = crate::lock(&self.open_until)
            .replace(now + self.cool_off)
            .is_none();
        if was_closed {
            tracing::warn!(
                %error,
                retry_every_secs = self.cool_off.as_secs(),
                "redis unavailable; limits, presence and typing fall back to this instance and \
                 events reach only its subscribers until it answers again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_the_circuit_until_one_probe_after_the_cool_off() {
        let breaker = Breaker::new(Duration::from_secs(5));
        let start = Instant::now();
        assert!(breaker.allow_at(start));
        breaker.failed_at(&"refused", start);
        assert!(breaker.is_open());
        assert!(!breaker.allow_at(start + Duration::from_secs(1)));
        // One probe after the cool-off, and only one.
        let later = start + Duration::from_secs(5);
        assert!(breaker.allow_at(later));
        assert!(!breaker.allow_at(later));
        // A probe that never reports back does not keep the circuit shut for good.
        assert!(breaker.allow_at(later + Duration::from_secs(5)));
        breaker.succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.allow_at(later));
    }
}
