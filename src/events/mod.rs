//! What subscribers are told, and the bus that carries it: an in-process hub that hands each
//! event to its recipients' subscriptions, fed either directly or, with `REDIS_URL`, through Redis
//! pub/sub, where each instance listens only to the channels its subscriptions need (`routing`).
pub mod breaker;
mod hub;
mod redis_bus;
mod routing;

pub use hub::{Lagged, Receiver, Topic};
pub use routing::Scope;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use entity::{message, notification};
use serde::{Deserialize, Serialize};

/// How many events a slow subscription may fall behind before it must catch up from the database.
pub(crate) const LOCAL_CAPACITY: usize = 4096;

/// A change to a message, as recorded in the conversation's change log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageChange {
    Created,
    Edited,
    Deleted,
    /// A reaction was added or removed.
    Reacted,
    Pinned,
    Unpinned,
}

impl MessageChange {
    /// The name stored in the change log.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageChange::Created => "CREATED",
            MessageChange::Edited => "EDITED",
            MessageChange::Deleted => "DELETED",
            MessageChange::Reacted => "REACTED",
            MessageChange::Pinned => "PINNED",
            MessageChange::Unpinned => "UNPINNED",
        }
    }

    /// Parses a name from the change log.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CREATED" => Some(MessageChange::Created),
            "EDITED" => Some(MessageChange::Edited),
            "DELETED" => Some(MessageChange::Deleted),
            "REACTED" => Some(MessageChange::Reacted),
            "PINNED" => Some(MessageChange::Pinned),
            "UNPINNED" => Some(MessageChange::Unpinned),
            _ => None,
        }
    }
}

/// A change's place in the conversation change log, the order every subscriber receives changes
/// in: by the transaction that wrote it, then by row (see migration 000011 and `delivery`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The writing PostgreSQL transaction's id; 0 on SQLite and for rows older than positions.
    pub tx: i64,
    /// The change-log row.
    pub id: i64,
}

/// Something that happened in a conversation.
// Every event travels inside one `Arc<Envelope>`, allocated once and shared by all subscribers, so
// boxing the message would only add a second allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Event {
    /// A message was created, edited or deleted; `position` is its place in the change log.
    Message {
        position: Position,
        change: MessageChange,
        /// Shared: with its attachment fields the row dwarfs the other variants, and every
        /// subscriber's event points at this one copy. (Serialised the same as a plain row, so
        /// the Redis wire format is unchanged.)
        message: Arc<message::Model>,
    },
    Typing {
        conversation_id: i64,
        user_id: i64,
        is_typing: bool,
    },
    ReadReceipt {
        conversation_id: i64,
        user_id: i64,
        up_to_seq: i64,
        up_to_message_id: Option<i64>,
        read_at: DateTime<Utc>,
    },
    /// New or updated notifications, each for its own user.
    Notifications { rows: Vec<notification::Model> },
    /// The bus may have lost events (Redis was unreachable, or this instance's queue to it was
    /// full): durable streams should catch up from the database. Raised locally, and sent
    /// through Redis when the instances that missed events are the others. Empty recipients
    /// mean every subscription; a local resync may name users (those whose instance has just
    /// begun to follow a conversation they joined), and then reaches only theirs.
    Resync,
    /// A user came online or went offline.
    Presence {
        user_id: i64,
        online: bool,
        last_seen_at: Option<DateTime<Utc>>,
    },
    /// Some of a user's sessions were revoked: their tokens must be refused everywhere.
    SessionsEnded { user_id: i64, ended: Ended },
    /// The recipients became members of a conversation. With Redis, an instance where one of
    /// them follows all of their conversations starts following this one's channel (see
    /// `routing`); never handed to subscriptions, and without Redis not published at all.
    Joined { conversation_id: i64 },
}

/// Which of a user's sessions ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ended {
    /// One session (`logout`, `revokeSession`).
    One { token_id: i64 },
    /// Every session but one (`changePassword` keeps the one that made the change).
    AllBut { token_id: i64 },
}

impl Ended {
    /// Whether the session signed in with token `token_id` is among those that ended (the
    /// user is checked by the caller).
    pub fn covers(self, token_id: i64) -> bool {
        match self {
            Ended::One { token_id: ended } => token_id == ended,
            Ended::AllBut { token_id: kept } => token_id != kept,
        }
    }
}

/// An event with the users allowed to receive it (the conversation's members when it committed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// Sorted and without repeats (see [`Envelope::new`]), so that `is_for` can binary-search.
    recipients: Vec<i64>,
    pub event: Event,
}

impl Envelope {
    pub fn new(mut recipients: Vec<i64>, event: Event) -> Self {
        recipients.sort_unstable();
        recipients.dedup();
        Self { recipients, event }
    }

    /// Whether `user_id` may see this event (a binary search: `recipients` is kept sorted).
    pub fn is_for(&self, user_id: i64) -> bool {
        self.recipients.binary_search(&user_id).is_ok()
    }
}

/// What the bus counts, for `/metrics`: together they say how much of what an instance is sent
/// it had any use for.
#[derive(Clone)]
pub struct Counters {
    /// Events taken from Redis (none without it).
    pub received: metrics::Counter,
    /// Events handed to at least one local subscription, each counted once.
    pub delivered: metrics::Counter,
}

impl Default for Counters {
    /// Counters that count nowhere, for a bus no `/metrics` reads.
    fn default() -> Self {
        Self {
            received: metrics::Counter::noop(),
            delivered: metrics::Counter::noop(),
        }
    }
}

/// Publishes events (after their transaction commits) and hands out receivers.
#[derive(Clone)]
pub struct EventBus {
    local: Arc<hub::Hub>,
    redis: Option<Redis>,
}

/// The Redis side of the bus: the queue to it, and the channels this instance listens to.
#[derive(Clone)]
struct Redis {
    outbox: redis_bus::Outbox,
    router: Arc<routing::Router>,
}

/// What a subscription holds on the bus so that its events reach this instance: Redis channels
/// (see `routing`), or nothing without Redis. Dropping it lets go.
pub struct Following {
    _held: Option<routing::Following>,
}

impl EventBus {
    /// Starts the bus: in-process only, or bridged through Redis when a URL is given.
    pub async fn start(redis_url: Option<&str>, channel: &str) -> anyhow::Result<Self> {
        Self::start_with(
            redis_url,
            channel,
            breaker::Breaker::default(),
            Counters::default(),
            &tokio_util::task::TaskTracker::new(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
    }

    /// Starts the bus with the Redis circuit breaker shared with the rest of the instance and
    /// the instance's counters; its Redis tasks run on `tasks` and stop on `shutdown` (the
    /// publisher once it has sent what was queued before).
    pub async fn start_with(
        redis_url: Option<&str>,
        channel: &str,
        breaker: breaker::Breaker,
        counters: Counters,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        let local = hub::Hub::new(LOCAL_CAPACITY, counters.delivered);
        let redis = match redis_url {
            Some(url) => {
                let router = routing::Router::new(Arc::from(channel));
                let outbox = redis_bus::start(
                    url,
                    router.clone(),
                    local.clone(),
                    breaker,
                    counters.received,
                    tasks,
                    shutdown,
                )
                .await?;
                Some(Redis { outbox, router })
            }
            None => None,
        };
        Ok(Self { local, redis })
    }

    /// Sends an event to every subscriber, on this instance and (with Redis) on the others.
    /// Never waits for Redis: with it, the event joins this instance's queue to Redis, sent in
    /// order by one task (see `redis_bus::Outbox`).
    pub async fn publish(&self, envelope: Envelope) {
        match &self.redis {
            Some(redis) => redis.outbox.enqueue(envelope),
            // Every subscription here hears every event already.
            None if matches!(envelope.event, Event::Joined { .. }) => {}
            None => {
                self.local.publish(Arc::new(envelope));
            }
        }
    }

    /// Has this instance hear what `scope` needs for `user_id` until the returned value is
    /// dropped. Returns once Redis confirmed its channels, so that every event published after
    /// that reaches this instance (at once without Redis; see `routing` for when Redis is away).
    pub async fn follow(&self, user_id: i64, scope: Scope) -> Following {
        match &self.redis {
            Some(redis) => Following {
                _held: Some(redis.router.follow(user_id, scope).await),
            },
            None => Following { _held: None },
        }
    }

    /// Sets how a user's conversations are listed, for subscriptions that follow all of them
    /// ([`Scope::Member`]). One per bus; unused without Redis.
    pub fn list_memberships<F, Fut>(&self, list: F)
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<Vec<i64>>> + Send + 'static,
    {
        if let Some(redis) = &self.redis {
            redis
                .router
                .set_memberships(Box::new(move |user_id| Box::pin(list(user_id))));
        }
    }

    /// Has `observe` see every event this instance receives, before any subscription does
    /// (instance-wide state that must follow events, such as the token cache). One observer per
    /// bus; a second call is ignored.
    pub fn observe(&self, observer: impl Fn(&Event) + Send + Sync + 'static) {
        self.local.observe(Box::new(observer));
    }

    /// Has `sequence` take every message event this instance receives instead of the
    /// subscriptions, which then get them only through [`EventBus::route`], in the order it
    /// calls that (see `delivery`). Also handed every [`Event::Resync`]. One per bus.
    pub fn sequence_messages(&self, sequence: impl Fn(&Arc<Envelope>) + Send + Sync + 'static) {
        self.local.sequence(Box::new(sequence));
    }

    /// Hands an event to this instance's subscriptions it is for, and nothing else.
    pub fn route(&self, envelope: Arc<Envelope>) {
        self.local.route(&envelope);
    }

    /// A receiver of the events on `topic` meant for `user_id` that reach this instance, from now
    /// on: with Redis, only those on the channels someone here follows (see [`EventBus::follow`],
    /// and [`Receiver::holding`] to tie what is followed to the receiver), and those on the
    /// broadcast channel ([`Event::SessionsEnded`], [`Event::Resync`]).
    pub fn subscribe(&self, topic: Topic, user_id: i64) -> Receiver {
        self.local.subscribe(topic, user_id)
    }
}
