//! The Redis bridge: events are PUBLISHed as JSON on the channels their audience follows (see
//! `routing`); a background task on every instance SUBSCRIBEs to the channels its subscriptions
//! need, feeds what arrives to the local hub, and reconnects by itself.
//!
//! Publishing never makes the caller wait for Redis: events join a bounded queue that one task
//! per instance sends in order on one connection, and each instance listens on one connection,
//! so what this instance publishes reaches every instance that follows it in the order it was
//! published, across channels too (Redis delivers to a connection in the order it ran the
//! PUBLISHes). Whatever cannot go through Redis is made up for with
//! [`Event::Resync`]: durable streams (messages, notifications, read receipts) then catch up from
//! the database, and ephemeral events (typing, presence) are skipped, as for a subscriber that
//! fell behind.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    Envelope, Event,
    breaker::Breaker,
    hub::Hub,
    routing::{Applied, Channel, Router},
};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
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
    router: Arc<Router>,
    breaker: Breaker,
}

impl Publisher {
    /// Publishes one event, unless the circuit is open.
    async fn publish(&self, envelope: &Envelope) -> anyhow::Result<()> {
        if !self.breaker.allow() {
            anyhow::bail!("redis unavailable (circuit open)");
        }
        let payload = serde_json::to_string(envelope)?;
        // One round trip however many channels: a user-directed event goes to each recipient's.
        let mut pipe = redis::pipe();
        for channel in self.router.channels_of(envelope) {
            pipe.cmd("PUBLISH").arg(channel).arg(&payload).ignore();
        }
        let mut conn = self.conn.clone();
        let sent = tokio::time::timeout(PUBLISH_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
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
            // Redis never brings this join back to the listener: follow it from here. The other
            // instances relist their members' conversations on the resync that follows.
            if let Event::Joined { conversation_id } = envelope.event {
                publisher
                    .router
                    .joined_here(&envelope.recipients, conversation_id);
            }
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

/// Connects to Redis and starts the publisher and listener tasks on `tasks`.
pub async fn start(
    url: &str,
    router: Arc<Router>,
    local: Arc<Hub>,
    breaker: Breaker,
    received: metrics::Counter,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> anyhow::Result<Outbox> {
    let client = redis::Client::open(url)?;
    let conn = ConnectionManager::new(client.clone()).await?;
    // Subscribe before returning, so that nothing published after start-up is missed.
    let connection = connect(&client, &router).await?;
    tasks.spawn(
        Listener {
            client,
            router: router.clone(),
            local: local.clone(),
            received,
            shutdown: shutdown.clone(),
        }
        .run(connection),
    );
    let (queue, queued) = mpsc::channel(OUTBOX_CAPACITY);
    let overflowed = Arc::new(Mutex::new(false));
    tasks.spawn(publish_queued(
        Publisher {
            conn,
            router,
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

/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE.
const CHANNELS_PER_COMMAND: usize = 1000;

/// A new pub/sub connection, subscribed to the broadcast channel and to every channel wanted now
/// (and marked so: see [`Applied`]).
async fn connect(client: &redis::Client, router: &Router) -> redis::RedisResult<Connection> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(router.broadcast()).await?;
    let (channels, ticket) = router.all();
    let subscribed: HashSet<Channel> = channels.into_iter().collect();
    let names: Vec<String> = subscribed.iter().map(|c| router.name(*c)).collect();
    for chunk in names.chunks(CHANNELS_PER_COMMAND) {
        sink.subscribe(chunk).await?;
    }
    router.set_applied(Applied {
        ticket,
        connected: true,
    });
    Ok(Connection {
        sink,
        stream,
        subscribed,
    })
}

/// A working pub/sub connection and the channels (besides the broadcast one) it listens to.
struct Connection {
    sink: PubSubSink,
    stream: PubSubStream,
    subscribed: HashSet<Channel>,
}

impl Connection {
    /// Brings the connection's subscriptions in line with what the router wants; the caller
    /// treats an error as a lost connection.
    async fn apply(&mut self, router: &Router) -> redis::RedisResult<()> {
        let changes = router.changes();
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for (channel, held) in changes.channels {
            match (held, self.subscribed.contains(&channel)) {
                (true, false) => add.push(channel),
                (false, true) => remove.push(channel),
                // Held again, or let go again, before it was ever applied: nothing to do.
                _ => {}
            }
        }
        for chunk in add.chunks(CHANNELS_PER_COMMAND) {
            let names: Vec<String> = chunk.iter().map(|c| router.name(*c)).collect();
            self.sink.subscribe(names).await?;
            self.subscribed.extend(chunk);
        }
        for chunk in remove.chunks(CHANNELS_PER_COMMAND) {
            let names: Vec<String> = chunk.iter().map(|c| router.name(*c)).collect();
            self.sink.unsubscribe(names).await?;
            for channel in chunk {
                self.subscribed.remove(channel);
            }
        }
        router.set_applied(Applied {
            ticket: changes.ticket,
            connected: true,
        });
        Ok(())
    }
}

/// The task that listens: takes events from Redis to the hub, and keeps the connection's
/// subscriptions to what the router wants.
struct Listener {
    client: redis::Client,
    router: Arc<Router>,
    local: Arc<Hub>,
    received: metrics::Counter,
    shutdown: CancellationToken,
}

impl Listener {
    async fn run(self, mut connection: Connection) {
        loop {
            if self.listen(&mut connection).await.is_none() {
                return;
            }
            // Nobody waits for subscriptions on a connection that is gone.
            self.router.set_applied(Applied {
                ticket: 0,
                connected: false,
            });
            // Logged once per outage: the retries below are routine until Redis is back.
            tracing::warn!("redis subscription lost; reconnecting");
            let mut delay = Duration::from_millis(100);
            connection = loop {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.shutdown.cancelled() => return,
                }
                match connect(&self.client, &self.router).await {
                    Ok(c) => break c,
                    Err(err) => {
                        tracing::debug!(error = %err, "redis reconnect failed");
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            };
            tracing::info!("redis subscription restored");
            // A join announced while we were away never reached us: follow what the members
            // belong to now, then let durable streams replay what was published meanwhile.
            if self.router.relist().await && connection.apply(&self.router).await.is_err() {
                continue;
            }
            self.local.publish(Arc::new(resync()));
        }
    }

    /// Serves one connection until it fails (`Some`) or the server stops (`None`).
    async fn listen(&self, connection: &mut Connection) -> Option<()> {
        loop {
            let msg = tokio::select! {
                msg = connection.stream.next() => match msg {
                    Some(msg) => msg,
                    None => return Some(()),
                },
                () = self.router.changed() => {
                    if connection.apply(&self.router).await.is_err() {
                        return Some(());
                    }
                    continue;
                }
                () = self.shutdown.cancelled() => return None,
            };
            self.received.increment(1);
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let envelope = match serde_json::from_str::<Envelope>(&payload) {
                // Another instance's event: rebuilt through `Envelope::new`, so that its
                // recipients are sorted however it was sent.
                Ok(envelope) => Envelope::new(envelope.recipients, envelope.event),
                Err(err) => {
                    tracing::warn!(error = %err, "undecodable event on redis");
                    continue;
                }
            };
            if let Event::Joined { conversation_id } = envelope.event {
                if !self.router.joined(&envelope.recipients, conversation_id) {
                    continue;
                }
                // Followed now; the conversation's changes published before that are read from
                // the log by the delivery, which the hub wakes with this event.
                if connection.apply(&self.router).await.is_err() {
                    return Some(());
                }
                let joined = envelope.recipients.clone();
                self.local.publish(Arc::new(envelope));
                // Read receipts and notifications published between the join and the
                // confirmation above passed this instance by: the joined users' durable streams
                // replay them from the database.
                self.local
                    .publish(Arc::new(Envelope::new(joined, Event::Resync)));
                continue;
            }
            // Another instance lost events, perhaps a join: follow what the members belong to now
            // before durable streams replay.
            if matches!(envelope.event, Event::Resync)
                && self.router.relist().await
                && connection.apply(&self.router).await.is_err()
            {
                return Some(());
            }
            self.local.publish(Arc::new(envelope));
        }
    }
}
