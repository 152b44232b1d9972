//! Tokens this instance resolved recently, so that a request need not read its token's row:
//! otherwise every authenticated request, each send included, would cost one more SQL statement.
//!
//! An entry lives until the token expires or for the cache's ttl, whichever is sooner, and goes
//! at once when its session ends: [`crate::auth::end_sessions`] forgets it here and publishes the
//! end on the bus, so every other instance forgets it too (see `Application::build`). If the bus
//! loses events (Redis unreachable), the instance that missed them clears its whole cache when the
//! bus reconnects; the lifetime bounds what is left, an end whose publish failed outright.
use std::{
    sync::atomic::{AtomicU64, Ordering::SeqCst},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use moka::{policy::EvictionPolicy, sync::Cache};

use super::Viewer;
pub use crate::events::Ended;

/// The SHA-256 of a token: what the cache is keyed by, so it never holds a token itself.
pub type TokenKey = [u8; 32];

/// Resolved tokens, bounded in number (least recently used go first) and in age.
pub struct TokenCache {
    entries: Cache<TokenKey, Entry>,
    /// Moves on every forget and clear. A lookup that started before an end may have read the
    /// token's row while it was still in force; it may store what it read only if nothing ended
    /// meanwhile.
    generation: AtomicU64,
    ttl: Duration,
}

#[derive(Clone, Copy)]
struct Entry {
    viewer: Viewer,
    /// How long the entry lives: until the token expires or for the cache's ttl, whichever is
    /// sooner.
    lifetime: Duration,
}

/// Each entry's own lifetime, from when it was stored.
struct Lifetime;

impl moka::Expiry<TokenKey, Entry> for Lifetime {
    fn expire_after_create(&self, _: &TokenKey, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.lifetime)
    }
}

/// What a lookup that missed needs to store its result afterwards.
#[derive(Clone, Copy, Debug)]
pub struct Miss {
    generation: u64,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens, each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity as u64)
                // The newest sign-in is the likeliest to be used next: it is always admitted.
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(Lifetime)
                .build(),
            generation: AtomicU64::new(0),
            ttl,
        }
    }

    /// The viewer for a token resolved recently and still in force, or what storing a fresh
    /// lookup's result will need.
    pub fn get(&self, key: &TokenKey) -> Result<Viewer, Miss> {
        // Read before the entry: a forget that lands in between makes a later `put` give up.
        let generation = self.generation.load(SeqCst);
        match self.entries.get(key) {
            Some(entry) => Ok(entry.viewer),
            None => Err(Miss { generation }),
        }
    }

    /// Stores what a lookup read from the database, unless a session ended since the lookup
    /// began ([`TokenCache::get`]).
    pub fn put(&self, key: TokenKey, viewer: Viewer, expires_at: DateTime<Utc>, miss: Miss) {
        let lifetime = (expires_at - Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(self.ttl);
        if lifetime.is_zero() || self.generation.load(SeqCst) != miss.generation {
            return;
        }
        self.entries.insert(key, Entry { viewer, lifetime });
        // A forget between the check above and the insert could have missed the entry: it
        // moved the generation first, so looking again tells, and the entry goes.
        if self.generation.load(SeqCst) != miss.generation {
            self.entries.invalidate(&key);
        }
    }

    /// Forgets the sessions of `user_id` that ended.
    pub fn forget(&self, user_id: i64, ended: Ended) {
        self.generation.fetch_add(1, SeqCst);
        for (key, entry) in &self.entries {
            if entry.viewer.user_id == user_id && ended.covers(entry.viewer.token_id) {
                self.entries.invalidate(&*key);
            }
        }
    }

    /// Forgets everything (the bus may have lost an end).
    pub fn clear(&self) {
        self.generation.fetch_add(1, SeqCst);
        self.entries.invalidate_all();
    }

    /// How many tokens are held.
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Whether no token is held.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn viewer(user_id: i64, token_id: i64) -> Viewer {
        Viewer { user_id, token_id }
    }

    fn later() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::hours(1)
    }

    fn stored(cache: &TokenCache, key: u8, who: Viewer) {
        let miss = cache.get(&[key; 32]).unwrap_err();
        cache.put([key; 32], who, later(), miss);
    }

    #[test]
    fn a_stored_token_is_found_until_its_session_ends() {
        let cache = TokenCache::new(16, HOUR);
        stored(&cache, 1, viewer(7, 70));
        stored(&cache, 2, viewer(7, 71));
        stored(&cache, 3, viewer(8, 70));
        assert_eq!(cache.get(&[1; 32]).ok(), Some(viewer(7, 70)));

        cache.forget(7, Ended::One { token_id: 70 });
        assert!(cache.get(&[1; 32]).is_err(), "the ended session is gone");
        assert!(
            cache.get(&[2; 32]).is_ok(),
            "the user's other session stays"
        );
        assert!(cache.get(&[3; 32]).is_ok(), "another user's is untouched");
    }

    #[test]
    fn ending_all_but_one_keeps_only_that_one() {
        let cache = TokenCache::new(16, HOUR);
        stored(&cache, 1, viewer(7, 70));
        stored(&cache, 2, viewer(7, 71));
        stored(&cache, 3, viewer(7, 72));
        cache.forget(7, Ended::AllBut { token_id: 71 });
        assert!(cache.get(&[1; 32]).is_err());
        assert!(cache.get(&[2; 32]).is_ok());
        assert!(cache.get(&[3; 32]).is_err());
    }

    #[test]
    fn a_lookup_that_raced_an_end_does_not_store_what_it_read() {
        let cache = TokenCache::new(16, HOUR);
        let miss = cache.get(&[1; 32]).unwrap_err();
        // The session ends while the lookup reads the (still valid) row.
        cache.forget(7, Ended::One { token_id: 70 });
        cache.put([1; 32], viewer(7, 70), later(), miss);
        assert!(cache.get(&[1; 32]).is_err());
    }

    #[test]
    fn entries_expire_with_the_token_or_the_ttl() {
        let cache = TokenCache::new(16, Duration::ZERO);
        stored(&cache, 1, viewer(7, 70));
        assert!(
            cache.get(&[1; 32]).is_err(),
            "a zero lifetime keeps nothing"
        );

        let cache = TokenCache::new(16, HOUR);
        let miss = cache.get(&[2; 32]).unwrap_err();
        cache.put([2; 32], viewer(7, 71), Utc::now(), miss);
        assert!(cache.get(&[2; 32]).is_err(), "an expired token is not kept");
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = TokenCache::new(4, HOUR);
        for key in 0..10u8 {
            stored(&cache, key, viewer(1, i64::from(key)));
            assert!(cache.len() <= 4);
        }
        assert!(cache.get(&[9; 32]).is_ok(), "the newest entry is kept");
        cache.clear();
        assert!(cache.is_empty());
    }
}
