//! The Redis bridge: events are PUBLISHed as JSON on one channel; a background task on every
//! instance SUBSCRIBEs to it and feeds the local hub, reconnecting by itself.
//!
//! Publishing never makes the caller wait for Redis: events join a bounded queue that one task
//! per instance sends in order, so what this instance publishes reaches every instance in the
//! order it was published. Whatever cannot go through Redis is made up for with
//! [`Event::Resync`]: durable streams (messages, notifications, read receipts) then catch up from
//! the database, and ephemeral events (typing, presence) are skipped, as for a subscriber that
//! fell behind.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Envelope, Event, breaker::Breaker, hub::Hub};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long a publish may wait for Redis.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
/// How many events may wait for Redis before new ones are dropped (and made up for by a resync).
const OUTBOX_CAPACITY: usize = 4096;

/// The publishing half of the bridge: this instance's queue to Redis.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Envelope>,
    /// Set when an event was dropped because the queue was full. While set, nothing else is
    /// queued until a resync is: an event queued after a dropped one must not reach subscribers
    /// before the resync that replays the dropped one, or their position would pass it by.
    overflowed: Arc<Mutex<bool>>,
    local: Arc<Hub>,
}

fn resync() -> Envelope {
    Envelope::new(Vec::new(), Event::Resync)
}

impl Outbox {
    /// Queues an event for Redis, without waiting.
    pub fn enqueue(&self, envelope: Envelope) {
        let mut overflowed = crate::lock(&self.overflowed);
        if *overflowed {
            match self.queue.try_send(resync()) {
                Ok(()) => *overflowed = false,
                // Still full: this event is dropped too, and the resync will replay it.
                Err(mpsc::error::TrySendError::Full(_)) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        match self.queue.try_send(envelope) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                *overflowed = true;
                tracing::warn!(
                    capacity = OUTBOX_CAPACITY,
                    "events are queued for redis faster than it takes them; dropping them until \
                     there is room, then subscribers catch up from the database"
                );
            }
            // The publisher has stopped (the server is shutting down): this instance's
            // subscribers still get the event.
            Err(mpsc::error::TrySendError::Closed(envelope)) => {
                drop(overflowed);
                self.local.publish(Arc::new(envelope));
            }
        }
    }
}

/// One connection's worth of publishing.
struct Publisher {
    conn: ConnectionManager,
    channel: Arc<str>,
    breaker: Breaker,
}

impl Publisher {
    /// Publishes one event, unless the circuit is open.
    async fn publish(&self, envelope: &Envelope) -> anyhow::Result<()> {
        if !self.breaker.allow() {
            anyhow::bail!("redis unavailable (circuit open)");
        }
        let payload = serde_json::to_string(envelope)?;
        let mut conn = self.conn.clone();
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&*self.channel)
                .arg(payload)
                .query_async::<i64>(&mut conn),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                self.breaker.succeeded();
                Ok(())
            }
            Ok(Err(err)) => {
                self.breaker.failed(&err);
                Err(err.into())
            }
            Err(elapsed) => {
                self.breaker.failed(&elapsed);
                Err(elapsed.into())
            }
        }
    }
}

/// Sends the queue to Redis in order. An event Redis does not take is delivered to this
/// instance's subscribers directly; the other instances missed it, so a resync goes through
/// first thing once Redis answers again (before the next event, or on its own after a
/// cool-off), and they catch up from the database.
async fn publish_queued(
    publisher: Publisher,
    mut queue: mpsc::Receiver<Envelope>,
    overflowed: Arc<Mutex<bool>>,
    local: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let mut others_missed = false;
    loop {
        let envelope = tokio::select! {
            biased;
            envelope = queue.recv() => match envelope {
                Some(envelope) => envelope,
                None => break,
            },
            // The others must hear of what they missed once Redis is back, even if this
            // instance has nothing more to publish.
            () = tokio::time::sleep(super::breaker::COOL_OFF), if others_missed => {
                if publisher.publish(&resync()).await.is_ok() {
                    others_missed = false;
                }
                continue;
            }
            // Once the server stops, what was queued still goes out; then the task ends.
            () = shutdown.cancelled(), if queue.is_empty() => break,
        };
        if others_missed && publisher.publish(&resync()).await.is_ok() {
            others_missed = false;
        }
        if others_missed || publisher.publish(&envelope).await.is_err() {
            others_missed = true;
            local.publish(Arc::new(envelope));
        }
        // Events were dropped and nothing more is queued: nobody else will queue the resync.
        let dropped = {
            let mut overflowed = crate::lock(&overflowed);
            let dropped = *overflowed && queue.is_empty();
            if dropped {
                *overflowed = false;
            }
            dropped
        };
        if dropped && publisher.publish(&resync()).await.is_err() {
            others_missed = true;
            local.publish(Arc::new(resync()));
        }
    }
}

/// Connects to Redis and starts the publisher and subscriber tasks on `tasks`.
pub async fn start(
    url: &str,
    channel: &str,
    local: Arc<Hub>,
    breaker: Breaker,
    received: metrics::Counter,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<Outbox> {
    let client = redis::Client::open(url)?;
    let conn = ConnectionManager::new(client.clone()).await?;
    let channel: Arc<str> = Arc::from(channel);
    // Subscribe before returning, so that nothing published after start-up is missed.
    let pubsub = subscribe(&client, &channel).await?;
    tasks.spawn(forward(
        client,
        channel.clone(),
        pubsub,
        local.clone(),
        received,
        shutdown.clone(),
    ));
    let (queue, queued) = mpsc::channel(OUTBOX_CAPACITY);
    let overflowed = Arc::new(Mutex::new(false));
    tasks.spawn(publish_queued(
        Publisher {
            conn,
            channel,
            breaker,
        },
        queued,
        overflowed.clone(),
        local.clone(),
        shutdown,
    ));
    Ok(Outbox {
        queue,
        overflowed,
        local,
    })
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

async fn forward(
    client: redis::Client,
    channel: Arc<str>,
    mut pubsub: redis::aio::PubSub,
    local: Arc<Hub>,
    received: metrics::Counter,
    shutdown: CancellationToken,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                let msg = tokio::select! {
                    msg = messages.next() => match msg {
                        Some(msg) => msg,
                        None => break,
                    },
                    () = shutdown.cancelled() => return,
                };
                received.increment(1);
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<Envelope>(&payload) {
                    Ok(envelope) => {
                        // Another instance's event: rebuilt through `Envelope::new`, so that
                        // its recipients are sorted however it was sent.
                        let envelope = Envelope::new(envelope.recipients, envelope.event);
                        local.publish(Arc::new(envelope));
                    }
                    Err(err) => tracing::warn!(error = %err, "undecodable event on redis"),
                }
            }
        }
        // Logged once per outage: the retries below are routine until Redis is back.
        tracing::warn!("redis subscription lost; reconnecting");
        let mut delay = Duration::from_millis(100);
        pubsub = loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            match subscribe(&client, &channel).await {
                Ok(p) => break p,
                Err(err) => {
                    tracing::debug!(error = %err, "redis reconnect failed");
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        };
        tracing::info!("redis subscription restored");
        // Whatever was published while we were away never reached us: let durable streams replay.
        local.publish(Arc::new(resync()));
    }
}
