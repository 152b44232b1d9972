//! State that every instance must agree on, kept in Redis with expiry so that nothing outlives a
//! crashed instance for long: who is connected (presence), who is typing, and the rate limits' buckets.
use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager};

use crate::events::breaker::Breaker;

/// How long a connection counts as live without a heartbeat from its instance.
pub const CONNECTION_TTL: Duration = Duration::from_secs(30);
/// How often an instance renews its connections.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long one Redis call may take before the caller gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle to the shared state, namespaced so that separate deployments (or tests) can share one
/// Redis server without seeing each other.
#[derive(Clone)]
pub struct SharedState {
    conn: ConnectionManager,
    ns: String,
    /// Shared with the event bus: while it is open, every call fails at once and the caller
    /// takes its local fallback.
    breaker: Breaker,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SharedState {
    /// Connects to Redis; calls go through `breaker`.
    pub async fn connect(url: &str, namespace: &str, breaker: Breaker) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            conn: ConnectionManager::new(client).await?,
            ns: namespace.to_owned(),
            breaker,
        })
    }

    /// Makes one call, bounded by `CALL_TIMEOUT`, unless the circuit is open; reports the outcome
    /// to the breaker.
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> anyhow::Result<T> {
        if !self.breaker.allow() {
            anyhow::bail!("redis unavailable (circuit open)");
        }
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(anyhow::Error::from(err)),
            Err(elapsed) => Err(anyhow::Error::from(elapsed)),
        };
        match &outcome {
            Ok(_) => self.breaker.succeeded(),
            Err(err) => self.breaker.failed(err),
        }
        outcome
    }

    fn key(&self, parts: &str) -> String {
        format!("{}:{parts}", self.ns)
    }

    /// Records a live connection of a user; returns the number of live connections now.
    pub async fn join(&self, user_id: i64, connection: &str) -> anyhow::Result<u64> {
        let key = self.key(&format!("presence:{user_id}"));
        let mut conn = self.conn.clone();
        let expires = now_ms() + CONNECTION_TTL.as_millis() as i64;
        // The key expires with its newest connection, so that nothing outlives a crashed
        // instance; in one transaction, so that no key is left without its expiry.
        let (_, _, _, live): ((), (), (), u64) = self
            .call(
                redis::pipe()
                    .atomic()
                    .zadd(&key, connection, expires)
                    .pexpire(&key, CONNECTION_TTL.as_millis() as i64)
                    .zrembyscore(&key, "-inf", now_ms())
                    .zcard(&key)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(live)
    }

    /// Renews the given connections of this instance.
    pub async fn heartbeat(&self, connections: &[(i64, String)]) -> anyhow::Result<()> {
        if connections.is_empty() {
            return Ok(());
        }
        let expires = now_ms() + CONNECTION_TTL.as_millis() as i64;
        // One transaction: a timeout cannot leave a renewed member in a key without its expiry.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (user_id, connection) in connections {
            let key = self.key(&format!("presence:{user_id}"));
            pipe.zadd(&key, connection, expires).ignore();
            pipe.pexpire(&key, CONNECTION_TTL.as_millis() as i64)
                .ignore();
        }
        let mut conn = self.conn.clone();
        self.call(pipe.query_async::<()>(&mut conn)).await
    }

    /// Forgets a connection.
    pub async fn leave(&self, user_id: i64, connection: &str) -> anyhow::Result<()> {
        let key = self.key(&format!("presence:{user_id}"));
        let mut conn = self.conn.clone();
        self.call(conn.zrem::<_, _, ()>(&key, connection)).await
    }

    /// How many live connections the user holds, on any instance.
    pub async fn live_connections(&self, user_id: i64) -> anyhow::Result<u64> {
        let key = self.key(&format!("presence:{user_id}"));
        let mut conn = self.conn.clone();
        self.call(conn.zcount(&key, now_ms(), "+inf")).await
    }

    /// Claims the right to announce a user's ONLINE (`online`) or OFFLINE (`!online`): exactly one
    /// instance wins each transition.
    pub async fn claim_announcement(&self, user_id: i64, online: bool) -> anyhow::Result<bool> {
        let key = self.key(&format!("presence-announced:{user_id}"));
        let mut conn = self.conn.clone();
        if online {
            let set: Option<String> = self
                .call(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(1)
                        .arg("NX")
                        .query_async(&mut conn),
                )
                .await?;
            Ok(set.is_some())
        } else {
            let deleted: u64 = self.call(conn.del(&key)).await?;
            Ok(deleted > 0)
        }
    }

    /// Starts a typing indicator; false if one was already running (it is then renewed).
    pub async fn start_typing(
        &self,
        conversation_id: i64,
        user_id: i64,
        ttl: Duration,
    ) -> anyhow::Result<bool> {
        let key = self.key(&format!("typing:{conversation_id}:{user_id}"));
        let mut conn = self.conn.clone();
        // One command sets (or renews) the indicator with its expiry and tells whether it was
        // already running: no step can be left half done.
        let previous: Option<String> = self
            .call(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .arg("GET")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(previous.is_none())
    }

    /// Ends a typing indicator; false if there was none.
    pub async fn stop_typing(&self, conversation_id: i64, user_id: i64) -> anyhow::Result<bool> {
        let key = self.key(&format!("typing:{conversation_id}:{user_id}"));
        let mut conn = self.conn.clone();
        let deleted: u64 = self.call(conn.del(&key)).await?;
        Ok(deleted > 0)
    }

    /// Whether a typing indicator is still running.
    pub async fn is_typing(&self, conversation_id: i64, user_id: i64) -> anyhow::Result<bool> {
        let key = self.key(&format!("typing:{conversation_id}:{user_id}"));
        let mut conn = self.conn.clone();
        self.call(conn.exists(&key)).await
    }

    /// Takes a token from a shared bucket (`cost` 1), or gives one back (`cost` -1); returns 0
    /// if it could, else the milliseconds until it could. The bucket is GCRA, as
    /// the limiter keeps its local ones: one timestamp per key, the time at which the
    /// bucket is full again, in microseconds of Redis's clock (so instances' clocks need not
    /// agree). One script, so that concurrent callers on any instance see one bucket; the key
    /// expires when the bucket is full, so an idle key costs nothing.
    pub async fn rate_limit(
        &self,
        budget: &str,
        key: &str,
        interval: std::time::Duration,
        burst: u32,
        cost: i64,
    ) -> anyhow::Result<u64> {
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r"
            local interval = tonumber(ARGV[1])
            local tau = tonumber(ARGV[2])
            local cost = tonumber(ARGV[3])
            local time = redis.call('TIME')
            local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
            local tat = tonumber(redis.call('GET', KEYS[1])) or now
            if cost > 0 then
                if now < tat - tau then
                    return math.ceil((tat - tau - now) / 1000)
                end
                tat = math.max(tat, now) + interval
            else
                tat = tat - interval
            end
            if tat <= now then
                redis.call('DEL', KEYS[1])
            else
                redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
            end
            return 0
        ",
            )
        });
        let interval = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let tau = interval.saturating_mul(u64::from(burst.saturating_sub(1)));
        let redis_key = self.key(&format!("rate:{budget}:{key}"));
        let mut conn = self.conn.clone();
        let wait: i64 = self
            .call(
                SCRIPT
                    .key(redis_key)
                    .arg(interval)
                    .arg(tau)
                    .arg(cost)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(wait.max(0) as u64)
    }
}
