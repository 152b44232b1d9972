//! Rate limits as token buckets: a bucket holds up to `burst` tokens and refills at `burst` per
//! `period`, so a quiet user may burst and a busy one is held to the average. Every limit (sends,
//! uploads, sign-ins, typing) goes through one [`Limiter`]. Its buckets are GCRA (one timestamp
//! per key, the time the bucket is full again): governor's keyed limiters in this process, or one
//! Redis script (`SharedState::rate_limit`) when Redis is configured, so that every instance draws
//! on the same ones. A refusal is RATE_LIMITED with the seconds until the next token.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::{
        StateStore,
        keyed::{DashMapStateStore, ShrinkableKeyedStateStore},
    },
};

use crate::{
    error::{AppError, AppResult},
    shared_state::SharedState,
};

/// A bucket's size and refill: `30/10s` is a burst of 30, refilled at 30 per 10 seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub period: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("`{s}` is no rate: write e.g. `30/10s`, `5/1m`, `100/1h`");
        let (burst, period) = s.trim().split_once('/').ok_or_else(usage)?;
        let burst: u32 = burst.trim().parse().map_err(|_| usage())?;
        let period = period.trim();
        let split = period
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(usage)?;
        let (number, unit) = period.split_at(split);
        let number: u64 = if number.is_empty() {
            1
        } else {
            number.parse().map_err(|_| usage())?
        };
        let unit = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(usage()),
        };
        let period = Duration::from_millis(number.saturating_mul(unit));
        if burst == 0 || period.is_zero() {
            return Err(usage());
        }
        Ok(Rate { burst, period })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}ms", self.burst, self.period.as_millis())
    }
}

impl Rate {
    /// The time in which one token comes back.
    pub fn interval(&self) -> Duration {
        (self.period / self.burst).max(Duration::from_nanos(1))
    }

    /// The same bucket as governor spells it.
    fn quota(&self) -> Quota {
        let burst = std::num::NonZeroU32::new(self.burst).unwrap_or(std::num::NonZeroU32::MIN);
        Quota::with_period(self.interval())
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst)
    }
}

/// The address a request came from (the TCP peer), for limits per client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// What each limit protects; part of the bucket's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Budget {
    Send,
    Upload,
    LoginUser,
    LoginAddr,
    Typing,
}

impl Budget {
    fn name(self) -> &'static str {
        match self {
            Budget::Send => "send",
            Budget::Upload => "upload",
            Budget::LoginUser => "login-user",
            Budget::LoginAddr => "login-addr",
            Budget::Typing => "typing",
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            Budget::Send => "too many messages sent; slow down",
            Budget::Upload => "too many files uploaded; slow down",
            Budget::LoginUser => "too many failed sign-ins for this username; try again later",
            Budget::LoginAddr => "too many sign-in attempts from this address; try again later",
            Budget::Typing => "too many typing updates; slow down",
        }
    }
}

/// The subscriptions running on one WebSocket, held to `PALAVER_MAX_SUBSCRIPTIONS`.
#[derive(Clone, Debug)]
pub struct SubscriptionSlots {
    running: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

/// One running subscription; its slot is freed when the subscription's stream is dropped
/// (completed by the client, ended by the server, or the socket closed).
#[derive(Debug)]
pub struct SlotGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SubscriptionSlots {
    /// Slots for a new connection.
    pub fn new(max: usize) -> Self {
        Self {
            running: Arc::default(),
            max,
        }
    }

    /// Claims a slot, or refuses with RATE_LIMITED. The wait is a hint: a slot frees when the
    /// client completes one of its subscriptions, not after a time.
    pub fn claim(&self) -> AppResult<SlotGuard> {
        use std::sync::atomic::Ordering::SeqCst;
        self.running
            .fetch_update(SeqCst, SeqCst, |n| (n < self.max).then_some(n + 1))
            .map(|_| SlotGuard(self.running.clone()))
            .map_err(|_| AppError::RateLimited {
                message: format!(
                    "at most {} subscriptions may run on one connection; complete one first",
                    self.max
                ),
                retry_after_secs: 1,
            })
    }
}

/// WebSockets not signed in yet, counted per client address and held to
/// `PALAVER_MAX_ANON_WS_PER_ADDR`: until its `connection_init` is accepted a socket belongs to no
/// user, so no per-user limit holds it, and without this one address could open sockets without end.
#[derive(Debug)]
pub struct AnonymousSockets {
    open: Mutex<HashMap<std::net::IpAddr, usize>>,
    max: usize,
}

/// One anonymous socket's place in [`AnonymousSockets`]; given back when dropped (the socket signed
/// in, or closed).
#[derive(Debug)]
pub struct AnonymousSocket {
    sockets: Arc<AnonymousSockets>,
    key: std::net::IpAddr,
}

impl AnonymousSockets {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::default(),
            max,
        })
    }

    /// Takes a place for one more anonymous socket from `addr`, or None when it holds all it may.
    pub fn claim(self: &Arc<Self>, addr: std::net::IpAddr) -> Option<AnonymousSocket> {
        let key = address_group(addr);
        let mut open = crate::lock(&self.open);
        let count = open.entry(key).or_default();
        if *count >= self.max {
            if *count == 0 {
                open.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(AnonymousSocket {
            sockets: self.clone(),
            key,
        })
    }
}

impl Drop for AnonymousSocket {
    fn drop(&mut self) {
        let mut open = crate::lock(&self.sockets.open);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The addresses one client controls, as one key: an IPv4 address (an IPv4-mapped IPv6 one too),
/// or an IPv6 /64, the smallest block a provider hands out (so it cannot be walked through).
pub fn address_group(addr: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod anonymous_tests {
    use super::*;

    #[test]
    fn anonymous_sockets_are_counted_per_address_group_and_given_back() {
        let sockets = AnonymousSockets::new(2);
        let a: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: std::net::IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let other_64: std::net::IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let first = sockets.claim(a).unwrap();
        let _second = sockets.claim(same_64).unwrap();
        assert!(sockets.claim(a).is_none());
        assert!(sockets.claim(other_64).is_some());
        drop(first);
        assert!(sockets.claim(same_64).is_some());
        assert!(sockets.claim("10.0.0.1".parse().unwrap()).is_some());
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        assert_eq!(
            address_group("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(
            address_group("2001:db8::1:2:3:4".parse().unwrap()),
            "2001:db8::".parse::<std::net::IpAddr>().unwrap()
        );
    }
}

/// The limiter of one budget in this process: governor's keyed GCRA (a token bucket kept as one
/// timestamp per key), over a store this module can reach too, for refunds.
struct Local<C: Clock = DefaultClock> {
    rate: Rate,
    store: Buckets,
    limiter: RateLimiter<String, Buckets, C, NoOpMiddleware<C::Instant>>,
    /// Takes since the store's size was last looked at (see [`Local::prune`]).
    takes: AtomicUsize,
    /// Above this many keys the store drops those that have refilled; it then doubles past what
    /// remains, so a store of keys that are all still draining is not walked again on every take.
    prune_above: AtomicUsize,
}

/// The keys' states, shared between the limiter and [`Local::refund`].
#[derive(Clone, Default)]
struct Buckets(Arc<DashMapStateStore<String>>);

impl StateStore for Buckets {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for Buckets {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&*self.0)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&*self.0)
    }
}

/// Above this many keys of one budget, keys that have refilled (which equal a missing one) are
/// dropped.
const PRUNE_ABOVE: usize = 10_000;
/// How many takes pass between two looks at a store's size.
const PRUNE_EVERY: usize = 256;

impl<C: Clock> Local<C> {
    fn new(rate: Rate, clock: C) -> Self {
        let store = Buckets::default();
        Self {
            rate,
            limiter: RateLimiter::new(rate.quota(), store.clone(), clock),
            store,
            takes: AtomicUsize::new(0),
            prune_above: AtomicUsize::new(PRUNE_ABOVE),
        }
    }

    /// Takes a token; 0 if it could, else the milliseconds until it could.
    fn take(&self, key: &str) -> u64 {
        let outcome = self.limiter.check_key(&key.to_owned());
        if self.takes.fetch_add(1, Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        match outcome {
            Ok(()) => 0,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                u64::try_from(wait.as_micros().div_ceil(1000))
                    .unwrap_or(u64::MAX)
                    .max(1)
            }
        }
    }

    /// Gives a token back: the key's state moves back by one token's time. A state in the past
    /// already reads as a full bucket, so a refund never overfills it.
    fn refund(&self, key: &str) {
        let interval = Nanos::from(self.rate.interval());
        let _ = self.store.measure_and_replace(&key.to_owned(), |tat| {
            Ok::<_, ()>(((), tat.unwrap_or_default().saturating_sub(interval)))
        });
    }

    /// Drops the keys that have refilled, once the store has outgrown its bound. Each budget
    /// has its own store, so a busy budget never drops another's draining keys.
    fn prune(&self) {
        if self.limiter.len() > self.prune_above.load(Relaxed) {
            self.limiter.retain_recent();
            self.prune_above
                .store(PRUNE_ABOVE.max(self.limiter.len() * 2), Relaxed);
        }
    }
}

/// The buckets of this instance, or the shared ones in Redis. Every limit goes through it.
#[derive(Clone, Default)]
pub struct Limiter {
    /// One limiter per budget, made at its first use with the rate it was used with (a budget's
    /// rate is its configuration, the same on every call).
    local: Arc<[OnceLock<Local>; BUDGETS]>,
    shared: Option<SharedState>,
}

/// How many kinds of [`Budget`] there are.
const BUDGETS: usize = 5;

impl Limiter {
    /// Buckets in this process, or in Redis when `shared` is given.
    pub fn new(shared: Option<SharedState>) -> Self {
        Self {
            local: Arc::default(),
            shared,
        }
    }

    /// Takes a token, or refuses with RATE_LIMITED and the wait until the next one.
    pub async fn take(&self, budget: Budget, key: &str, rate: Rate) -> AppResult<()> {
        // While Redis is unreachable (the shared state's circuit is open) this answers at once
        // from the local buckets: each instance still limits on its own rather than not at all.
        let wait = match &self.shared {
            Some(shared) => match shared
                .rate_limit(budget.name(), key, rate.interval(), rate.burst, 1)
                .await
            {
                Ok(wait) => wait,
                Err(_) => self.local(budget, rate).take(key),
            },
            None => self.local(budget, rate).take(key),
        };
        match wait {
            0 => Ok(()),
            wait_ms => Err(AppError::RateLimited {
                message: budget.refusal().into(),
                retry_after_secs: wait_ms.div_ceil(1000).max(1),
            }),
        }
    }

    /// Gives a token back (a sign-in that succeeded does not count against the username).
    pub async fn refund(&self, budget: Budget, key: &str, rate: Rate) {
        if let Some(shared) = &self.shared
            && shared
                .rate_limit(budget.name(), key, rate.interval(), rate.burst, -1)
                .await
                .is_ok()
        {
            return;
        }
        self.local(budget, rate).refund(key);
    }

    fn local(&self, budget: Budget, rate: Rate) -> &Local {
        let local =
            self.local[budget as usize].get_or_init(|| Local::new(rate, DefaultClock::default()));
        debug_assert_eq!(local.rate, rate, "one rate per budget");
        local
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn rates_parse_and_refuse_nonsense() {
        let rate: Rate = "30/10s".parse().unwrap();
        assert_eq!(rate.burst, 30);
        assert_eq!(rate.period, Duration::from_secs(10));
        assert_eq!(
            "5/m".parse::<Rate>().unwrap().period,
            Duration::from_secs(60)
        );
        assert_eq!(
            "1/250ms".parse::<Rate>().unwrap().period,
            Duration::from_millis(250)
        );
        for bad in ["", "30", "0/1s", "3/0s", "x/1s", "3/1d", "3/s1", "-1/1s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    fn limited(local: &Local<FakeRelativeClock>, key: &str) -> bool {
        local.take(key) > 0
    }

    #[tokio::test]
    async fn a_busy_limit_never_prunes_another_limits_drained_buckets() {
        let limiter = Limiter::default();
        let send: Rate = "30/10s".parse().unwrap();
        let login: Rate = "5/15m".parse().unwrap();
        for _ in 0..5 {
            limiter
                .take(Budget::LoginUser, "alice", login)
                .await
                .unwrap();
        }
        assert!(
            limiter
                .take(Budget::LoginUser, "alice", login)
                .await
                .is_err()
        );
        // Many senders fill the send limit's store past its bound, and it is pruned.
        for i in 0..=PRUNE_ABOVE + PRUNE_EVERY {
            let _ = limiter.take(Budget::Send, &format!("user-{i}"), send).await;
        }
        assert!(
            limiter
                .take(Budget::LoginUser, "alice", login)
                .await
                .is_err(),
            "alice's drained sign-in bucket must outlive the send limit's pruning"
        );
    }

    #[test]
    fn pruning_drops_only_buckets_that_have_refilled() {
        let clock = FakeRelativeClock::default();
        let local = Local::new("4/4s".parse().unwrap(), clock.clone());
        // Drained: full again only after the whole period.
        for _ in 0..4 {
            assert!(!limited(&local, "drained"));
        }
        // One token each: full again after a second.
        for i in 0..PRUNE_ABOVE {
            local.take(&format!("a{i}"));
        }
        clock.advance(Duration::from_millis(2500));
        local.take("trigger");
        local.prune();
        assert_eq!(
            local.limiter.len(),
            2,
            "only `drained` and `trigger` are still refilling"
        );
        // Kept, not replaced by a full one: 2.5 tokens have come back, not 4.
        assert!(!limited(&local, "drained"));
        assert!(!limited(&local, "drained"));
        assert!(limited(&local, "drained"));
    }

    #[test]
    fn a_bucket_allows_a_burst_then_refills_over_time() {
        let clock = FakeRelativeClock::default();
        let local = Local::new("3/3s".parse().unwrap(), clock.clone());
        for _ in 0..3 {
            assert_eq!(local.take("u"), 0);
        }
        assert_eq!(local.take("u"), 1000);
        // Another key has its own bucket.
        assert_eq!(local.take("v"), 0);
        clock.advance(Duration::from_millis(1000));
        assert_eq!(local.take("u"), 0);
        // A refund gives one token back, and never overfills.
        assert!(local.take("u") > 0);
        local.refund("u");
        assert_eq!(local.take("u"), 0);
        clock.advance(Duration::from_secs(60));
        local.refund("u");
        for _ in 0..3 {
            assert_eq!(local.take("u"), 0);
        }
        assert!(local.take("u") > 0);
    }
}
