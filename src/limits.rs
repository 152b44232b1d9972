//! Rate limits as token buckets: a bucket holds up to `burst` tokens and refills at `burst` per
//! `period`, so a quiet user may burst and a busy one is held to the average. Buckets live in
//! this process, or in Redis when it is configured so that every instance draws on the same ones.
//! A refusal is RATE_LIMITED with the seconds until the next token.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    error::{AppError, AppResult},
    events::shared_state::SharedState,
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
    /// Tokens added per millisecond.
    fn per_ms(&self) -> f64 {
        f64::from(self.burst) / self.period.as_millis().max(1) as f64
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
}

impl Budget {
    fn name(self) -> &'static str {
        match self {
            Budget::Send => "send",
            Budget::Upload => "upload",
            Budget::LoginUser => "login-user",
            Budget::LoginAddr => "login-addr",
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            Budget::Send => "too many messages sent; slow down",
            Budget::Upload => "too many files uploaded; slow down",
            Budget::LoginUser => "too many failed sign-ins for this username; try again later",
            Budget::LoginAddr => "too many sign-in attempts from this address; try again later",
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

struct Bucket {
    tokens: f64,
    updated: Instant,
    /// When the bucket is full again if nothing more is taken: from then on it equals a missing
    /// one and may be dropped. Each bucket's own, so that pruning never depends on which limit
    /// happens to be checked when the map is pruned.
    full_at: Instant,
}

/// One limit's buckets. Keys are chosen by clients (usernames, addresses), so the map is pruned
/// of full buckets once it passes `prune_above`; that bound then doubles past what remains, so a
/// map of buckets that are all still draining is not walked again on every call.
struct Buckets {
    map: HashMap<String, Bucket>,
    prune_above: usize,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            prune_above: PRUNE_ABOVE,
        }
    }
}

/// Above this many buckets of one limit, full ones (which equal a missing one) are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// The buckets of this instance, or the shared ones in Redis.
#[derive(Clone, Default)]
pub struct Limiter {
    /// One map per budget, so that each is pruned by its own buckets' refill times.
    local: Arc<[Mutex<Buckets>; BUDGETS]>,
    shared: Option<SharedState>,
}

/// How many kinds of [`Budget`] there are.
const BUDGETS: usize = 4;

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
        match self.apply(budget, key, rate, 1.0).await {
            0 => Ok(()),
            wait_ms => Err(AppError::RateLimited {
                message: budget.refusal().into(),
                retry_after_secs: wait_ms.div_ceil(1000).max(1),
            }),
        }
    }

    /// Gives a token back (a sign-in that succeeded does not count against the username).
    pub async fn refund(&self, budget: Budget, key: &str, rate: Rate) {
        self.apply(budget, key, rate, -1.0).await;
    }

    /// Moves `cost` tokens out of the bucket; returns 0 if it could, else the milliseconds until
    /// it could.
    async fn apply(&self, budget: Budget, key: &str, rate: Rate, cost: f64) -> u64 {
        // While Redis is unreachable (the shared state's circuit is open) this answers at once
        // from the local buckets: each instance still limits on its own rather than not at all.
        if let Some(shared) = &self.shared
            && let Ok(wait) = shared.token_bucket(budget.name(), key, rate, cost).await
        {
            return wait;
        }
        self.apply_local(budget, key, rate, cost, Instant::now())
    }

    fn apply_local(&self, budget: Budget, key: &str, rate: Rate, cost: f64, now: Instant) -> u64 {
        let mut buckets = lock(&self.local[budget as usize]);
        if buckets.map.len() > buckets.prune_above {
            buckets.map.retain(|_, bucket| bucket.full_at > now);
            buckets.prune_above = PRUNE_ABOVE.max(buckets.map.len() * 2);
        }
        let burst = f64::from(rate.burst);
        let bucket = buckets.map.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
            full_at: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_millis() as f64;
        bucket.tokens = (bucket.tokens + elapsed * rate.per_ms()).min(burst);
        bucket.updated = now;
        let wait = if bucket.tokens >= cost {
            bucket.tokens = (bucket.tokens - cost).min(burst);
            0
        } else {
            ((cost - bucket.tokens) / rate.per_ms()).ceil() as u64
        };
        let refill_ms = ((burst - bucket.tokens).max(0.0) / rate.per_ms()).ceil() as u64;
        bucket.full_at = now + Duration::from_millis(refill_ms);
        wait
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_busy_limit_never_prunes_another_limits_drained_buckets() {
        let limiter = Limiter::default();
        let send: Rate = "30/10s".parse().unwrap();
        let login: Rate = "5/15m".parse().unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(
                limiter.apply_local(Budget::LoginUser, "alice", login, 1.0, start),
                0
            );
        }
        assert!(limiter.apply_local(Budget::LoginUser, "alice", login, 1.0, start) > 0);
        // Later than the send limit's period, many senders fill the map past its bound.
        let later = start + Duration::from_secs(11);
        for i in 0..=PRUNE_ABOVE + 1 {
            limiter.apply_local(Budget::Send, &format!("user-{i}"), send, 1.0, later);
        }
        assert!(
            limiter.apply_local(Budget::LoginUser, "alice", login, 1.0, later) > 0,
            "alice's drained sign-in bucket must outlive the send limit's pruning"
        );
    }

    #[test]
    fn pruning_drops_only_buckets_that_have_refilled() {
        let limiter = Limiter::default();
        let rate: Rate = "2/10s".parse().unwrap();
        let start = Instant::now();
        // Drained: full again only after the whole period.
        for _ in 0..2 {
            limiter.apply_local(Budget::LoginAddr, "drained", rate, 1.0, start);
        }
        // Half drained: full again after half of it.
        for i in 0..PRUNE_ABOVE {
            limiter.apply_local(Budget::LoginAddr, &format!("a{i}"), rate, 1.0, start);
        }
        let later = start + Duration::from_secs(6);
        limiter.apply_local(Budget::LoginAddr, "trigger", rate, 1.0, later);
        let kept = lock(&limiter.local[Budget::LoginAddr as usize]).map.len();
        assert_eq!(kept, 2, "only `drained` and `trigger` are still refilling");
        // Kept, not replaced by a full one: 1.2 tokens have come back, not 2.
        assert_eq!(
            limiter.apply_local(Budget::LoginAddr, "drained", rate, 1.0, later),
            0
        );
        assert!(limiter.apply_local(Budget::LoginAddr, "drained", rate, 1.0, later) > 0);
    }

    #[test]
    fn a_bucket_allows_a_burst_then_refills_over_time() {
        let limiter = Limiter::default();
        let rate: Rate = "3/3s".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.apply_local(Budget::Send, "u", rate, 1.0, start), 0);
        }
        let wait = limiter.apply_local(Budget::Send, "u", rate, 1.0, start);
        assert_eq!(wait, 1000);
        // Another key has its own bucket.
        assert_eq!(limiter.apply_local(Budget::Send, "v", rate, 1.0, start), 0);
        let later = start + Duration::from_millis(1000);
        assert_eq!(limiter.apply_local(Budget::Send, "u", rate, 1.0, later), 0);
        // A refund never overfills.
        let much_later = start + Duration::from_secs(60);
        limiter.apply_local(Budget::Send, "u", rate, -1.0, much_later);
        for _ in 0..3 {
            assert_eq!(
                limiter.apply_local(Budget::Send, "u", rate, 1.0, much_later),
                0
            );
        }
        assert!(limiter.apply_local(Budget::Send, "u", rate, 1.0, much_later) > 0);
    }
}
