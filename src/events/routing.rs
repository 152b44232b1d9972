//! Which Redis channels this instance listens to: only those its subscriptions need.
//!
//! Events travel on three kinds of channel (named under the configured channel, `<base>`):
//! - `<base>:c:<id>`, one per conversation: its message events, typing and read receipts;
//! - `<base>:u:<id>`, one per user: events addressed to users (notifications, presence, and
//!   [`Event::Joined`], which tells an instance to start following a conversation);
//! - `<base>` itself, which every instance listens to, for what must reach every instance
//!   ([`Event::Resync`], [`Event::SessionsEnded`]: any instance may hold the session's token in
//!   its cache) and for user-directed events with more than [`FANOUT`] recipients, where one
//!   broadcast costs less than a publish per recipient.
//!
//! Each subscription says what it needs ([`Scope`]) and holds it ([`Following`]) for as long as
//! it lives; a channel is subscribed while at least one holder needs it (reference counted) and
//! unsubscribed when the last lets go. A subscription that follows all of its user's
//! conversations makes the instance follow the user's channel first, then every conversation the
//! database lists for the user: a conversation joined after that read is announced on the user's
//! channel, which is already followed, so none falls between the two. A conversation the user
//! leaves stays followed until the user's last such subscription here ends: following too much
//! costs only traffic, following too little would lose events.
//!
//! [`Router::follow`] returns once Redis has confirmed every channel it needed (or, when Redis is
//! unreachable, at once): events published after that reach this instance. What was published
//! before, or while Redis was away, is made up for as before the routing: message events by the
//! delivery's reads of the change log (see `delivery`), durable streams by a resync after an
//! outage; typing and presence are live only. A lost [`Event::Joined`] would leave a joined
//! conversation unfollowed for good, so every reconnection and every resync (what follows any
//! loss) lists the followed members' conversations again ([`Router::relist`]).
//!
//! Plain SUBSCRIBE/PUBLISH, not sharded pub/sub (SSUBSCRIBE/SPUBLISH): this targets one Redis
//! server (or a primary with replicas), where both behave alike, and the redis crate's pub/sub
//! connection (`aio::PubSub`) offers SUBSCRIBE with confirmations but no SSUBSCRIBE. On a Redis
//! Cluster plain PUBLISH is forwarded to every node, so the per-channel routing still spares the
//! instances, not the cluster's bus; sharded channels would need one pub/sub connection per
//! shard, which the channel names here (one key each) would allow.
use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tokio::sync::{Notify, watch};

use super::{Envelope, Event};

/// Most recipients a user-directed event is published to one by one; past this it goes on the
/// broadcast channel (one publish, every instance receives it once).
pub const FANOUT: usize = 32;

/// Longest a new subscription waits for Redis to confirm its channels before it starts anyway
/// (relying on the safety nets above): a Redis that answers nothing must not hold subscribers.
const CONFIRM_WAIT: Duration = Duration::from_secs(2);

/// What a subscription needs to hear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Events addressed to its user (notifications, presence).
    User,
    /// One conversation's events.
    Conversation(i64),
    /// The events of every conversation its user belongs to, including ones joined later.
    Member,
}

/// A Redis channel, by what it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Conversation(i64),
    User(i64),
}

/// Lists the conversations a user belongs to (set up by the application, which owns the store).
pub type Memberships = Box<
    dyn Fn(i64) -> Pin<Box<dyn Future<Output = anyhow::Result<Vec<i64>>> + Send>> + Send + Sync,
>;

/// How far the listener has brought Redis in line with what is wanted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Applied {
    /// The last [`Wanted::ticket`] whose channels Redis confirmed.
    pub ticket: u64,
    /// Whether the listener holds a working connection (when not, nobody waits for it).
    pub connected: bool,
}

/// The channels wanted, with their holders.
#[derive(Default)]
struct Wanted {
    /// Holders per channel; a channel is here only while held.
    counts: HashMap<Channel, usize>,
    /// Users some subscription here follows as members, with the conversations followed for
    /// them (each holding its channel once).
    members: HashMap<i64, Member>,
    /// Channels whose holders went from none to some or back since the listener last looked.
    dirty: HashSet<Channel>,
    /// Bumped whenever `dirty` gains a channel: a holder waits until the listener has applied
    /// its ticket.
    ticket: u64,
}

#[derive(Default)]
struct Member {
    follows: usize,
    conversations: HashSet<i64>,
}

impl Wanted {
    fn hold(&mut self, channel: Channel) {
        let count = self.counts.entry(channel).or_default();
        *count += 1;
        if *count == 1 {
            self.dirty.insert(channel);
            self.ticket += 1;
        }
    }

    fn release(&mut self, channel: Channel) {
        if let Entry::Occupied(mut count) = self.counts.entry(channel) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
                self.dirty.insert(channel);
                self.ticket += 1;
            }
        }
    }

    /// Follows `conversations` for `user_id`, if some subscription follows the user as a member.
    fn add_conversations(&mut self, user_id: i64, conversations: &[i64]) {
        let Some(member) = self.members.get_mut(&user_id) else {
            return;
        };
        let new: Vec<i64> = conversations
            .iter()
            .copied()
            .filter(|c| member.conversations.insert(*c))
            .collect();
        for conversation in new {
            self.hold(Channel::Conversation(conversation));
        }
    }
}

/// The changes the listener must make to its Redis subscriptions.
pub struct Changes {
    /// Each channel that crossed between held and not, and whether it is held now.
    pub channels: Vec<(Channel, bool)>,
    /// Applied once these are made.
    pub ticket: u64,
}

/// This instance's wanted channels, shared by the subscriptions and the listener task.
pub struct Router {
    base: Arc<str>,
    wanted: Mutex<Wanted>,
    /// Wakes the listener when `wanted.dirty` gained something.
    changed: Notify,
    applied: watch::Sender<Applied>,
    memberships: OnceLock<Memberships>,
}

impl Router {
    pub fn new(base: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            base,
            wanted: Mutex::default(),
            changed: Notify::new(),
            applied: watch::Sender::new(Applied::default()),
            memberships: OnceLock::new(),
        })
    }

    /// The broadcast channel's name.
    pub fn broadcast(&self) -> &str {
        &self.base
    }

    /// A channel's name.
    pub fn name(&self, channel: Channel) -> String {
        match channel {
            Channel::Conversation(id) => format!("{}:c:{id}", self.base),
            Channel::User(id) => format!("{}:u:{id}", self.base),
        }
    }

    /// The channels an event is published on.
    pub fn channels_of(&self, envelope: &Envelope) -> Vec<String> {
        let conversation = match &envelope.event {
            Event::Message { message, .. } => Some(message.conversation_id),
            Event::Typing {
                conversation_id, ..
            }
            | Event::ReadReceipt {
                conversation_id, ..
            } => Some(*conversation_id),
            Event::Notifications { .. } | Event::Presence { .. } | Event::Joined { .. } => None,
            Event::Resync | Event::SessionsEnded { .. } => {
                return vec![self.base.to_string()];
            }
        };
        match conversation {
            Some(id) => vec![self.name(Channel::Conversation(id))],
            None if envelope.recipients.len() > FANOUT => vec![self.base.to_string()],
            None => envelope
                .recipients
                .iter()
                .map(|user| self.name(Channel::User(*user)))
                .collect(),
        }
    }

    /// Sets how a user's conversations are listed (once; later calls are ignored).
    pub fn set_memberships(&self, memberships: Memberships) {
        if self.memberships.set(memberships).is_err() {
            tracing::warn!("the router already lists memberships; the new source is ignored");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Wanted> {
        crate::lock(&self.wanted)
    }

    /// Holds what `scope` needs for `user_id` until the returned guard is dropped; returns once
    /// Redis confirmed it (see the module's note).
    pub async fn follow(self: &Arc<Self>, user_id: i64, scope: Scope) -> Following {
        let ticket = {
            let mut wanted = self.lock();
            match scope {
                Scope::User => wanted.hold(Channel::User(user_id)),
                Scope::Conversation(id) => wanted.hold(Channel::Conversation(id)),
                Scope::Member => {
                    wanted.hold(Channel::User(user_id));
                    wanted.members.entry(user_id).or_default().follows += 1;
                }
            }
            wanted.ticket
        };
        // The guard exists from here on, so that a failure below still lets go of what is held.
        let following = Following {
            router: self.clone(),
            user_id,
            scope,
        };
        self.changed.notify_one();
        self.confirmed(ticket).await;
        if scope == Scope::Member {
            // Read after the user's channel is followed: see the module's note.
            let listed = match self.memberships.get() {
                Some(list) => list(user_id).await,
                None => Ok(Vec::new()),
            };
            match listed {
                Ok(conversations) => {
                    let ticket = {
                        let mut wanted = self.lock();
                        wanted.add_conversations(user_id, &conversations);
                        wanted.ticket
                    };
                    self.changed.notify_one();
                    self.confirmed(ticket).await;
                }
                // Its messages still arrive through the delivery's reads of the log.
                Err(err) => {
                    tracing::warn!(error = %err, user_id, "listing a user's conversations failed")
                }
            }
        }
        following
    }

    /// Follows `conversation_id` for every one of `users` followed here as a member; true if a
    /// channel was added (the listener must then apply [`Router::changes`]).
    pub fn joined(&self, users: &[i64], conversation_id: i64) -> bool {
        let mut wanted = self.lock();
        let before = wanted.ticket;
        for user in users {
            wanted.add_conversations(*user, &[conversation_id]);
        }
        wanted.ticket != before
    }

    /// Follows `conversation_id` for `users` as [`Router::joined`] does and wakes the listener to
    /// apply it: for a join this instance could not send through Redis, which therefore never
    /// comes back to it.
    pub fn joined_here(&self, users: &[i64], conversation_id: i64) {
        if self.joined(users, conversation_id) {
            self.changed.notify_one();
        }
    }

    /// Lists again the conversations of every user followed here as a member and follows those
    /// not followed yet; true if a channel was added. The repair for an [`Event::Joined`] that
    /// never arrived (Redis was away, a queue overflowed, its instance died after the commit):
    /// the listener calls it after every reconnection and every resync, which is what follows
    /// such a loss, before durable streams replay.
    pub async fn relist(&self) -> bool {
        let Some(list) = self.memberships.get() else {
            return false;
        };
        let users: Vec<i64> = self.lock().members.keys().copied().collect();
        let mut added = false;
        for user_id in users {
            match list(user_id).await {
                Ok(conversations) => {
                    let mut wanted = self.lock();
                    let before = wanted.ticket;
                    wanted.add_conversations(user_id, &conversations);
                    added |= wanted.ticket != before;
                }
                Err(err) => {
                    tracing::warn!(error = %err, user_id, "listing a user's conversations failed")
                }
            }
        }
        added
    }

    /// Waits until Redis confirmed the channels of `ticket`, the listener lost its connection,
    /// or [`CONFIRM_WAIT`] passed.
    async fn confirmed(&self, ticket: u64) {
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(
            CONFIRM_WAIT,
            applied.wait_for(|a| !a.connected || a.ticket >= ticket),
        )
        .await;
    }

    /// Resolves when some channel was added or dropped since the last [`Router::changes`].
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Takes the channels that crossed between held and not since the last call.
    pub fn changes(&self) -> Changes {
        let mut wanted = self.lock();
        let dirty = std::mem::take(&mut wanted.dirty);
        Changes {
            channels: dirty
                .into_iter()
                .map(|c| (c, wanted.counts.contains_key(&c)))
                .collect(),
            ticket: wanted.ticket,
        }
    }

    /// Every channel held now (for a new connection), as of the returned ticket; clears the
    /// pending changes, which this covers.
    pub fn all(&self) -> (Vec<Channel>, u64) {
        let mut wanted = self.lock();
        wanted.dirty.clear();
        (wanted.counts.keys().copied().collect(), wanted.ticket)
    }

    /// Records how far the listener has come.
    pub fn set_applied(&self, applied: Applied) {
        self.applied.send_replace(applied);
    }

    /// How many channels are held (for tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.lock().counts.len()
    }
}

/// What a subscription holds; dropping it lets go.
pub struct Following {
    router: Arc<Router>,
    user_id: i64,
    scope: Scope,
}

impl Drop for Following {
    fn drop(&mut self) {
        {
            let mut wanted = self.router.lock();
            match self.scope {
                Scope::User => wanted.release(Channel::User(self.user_id)),
                Scope::Conversation(id) => wanted.release(Channel::Conversation(id)),
                Scope::Member => {
                    wanted.release(Channel::User(self.user_id));
                    let gone = match wanted.members.get_mut(&self.user_id) {
                        Some(member) => {
                            member.follows -= 1;
                            member.follows == 0
                        }
                        None => false,
                    };
                    if gone && let Some(member) = wanted.members.remove(&self.user_id) {
                        for conversation in member.conversations {
                            wanted.release(Channel::Conversation(conversation));
                        }
                    }
                }
            }
        }
        self.router.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router whose "Redis" confirms everything at once and whose users belong to
    /// conversations 1 and 2.
    fn router() -> Arc<Router> {
        let router = Router::new(Arc::from("base"));
        router.set_applied(Applied {
            ticket: u64::MAX,
            connected: true,
        });
        router.set_memberships(Box::new(|_| Box::pin(async { Ok(vec![1, 2]) })));
        router
    }

    #[tokio::test]
    async fn channels_are_held_while_any_subscription_needs_them() {
        let router = router();
        let one = router.follow(7, Scope::Conversation(1)).await;
        let member = router.follow(7, Scope::Member).await;
        // Conversations 1 and 2, and user 7's channel.
        assert_eq!(router.held(), 3);
        let changes = router.changes();
        assert_eq!(changes.channels.len(), 3);
        assert!(changes.channels.iter().all(|(_, held)| *held));
        drop(member);
        // Conversation 1 is still wanted by `one`.
        assert_eq!(router.held(), 1);
        let mut dropped: Vec<_> = router.changes().channels;
        dropped.sort_by_key(|(c, _)| format!("{c:?}"));
        assert_eq!(
            dropped,
            [(Channel::Conversation(2), false), (Channel::User(7), false)]
        );
        drop(one);
        assert_eq!(router.held(), 0);
        assert!(router.changes().channels == [(Channel::Conversation(1), false)]);
    }

    #[tokio::test]
    async fn a_join_is_followed_only_for_users_followed_as_members() {
        let router = router();
        let _notes = router.follow(8, Scope::User).await;
        assert!(
            !router.joined(&[8], 5),
            "user 8 follows no conversations here"
        );
        let member = router.follow(9, Scope::Member).await;
        router.changes();
        assert!(router.joined(&[8, 9], 5));
        assert!(!router.joined(&[9], 5), "already followed");
        assert_eq!(
            router.changes().channels,
            [(Channel::Conversation(5), true)]
        );
        drop(member);
        // Only user 8's channel is left.
        assert_eq!(router.held(), 1);
    }

    #[test]
    fn events_go_to_their_conversation_their_users_or_everyone() {
        let router = router();
        let typing = Envelope::new(
            vec![1, 2],
            Event::Typing {
                conversation_id: 4,
                user_id: 1,
                is_typing: true,
            },
        );
        assert_eq!(router.channels_of(&typing), ["base:c:4"]);
        let joined = Envelope::new(vec![2, 1], Event::Joined { conversation_id: 4 });
        assert_eq!(router.channels_of(&joined), ["base:u:1", "base:u:2"]);
        let wide = Envelope::new(
            (0..=FANOUT as i64).collect(),
            Event::Joined { conversation_id: 4 },
        );
        assert_eq!(router.channels_of(&wide), ["base"]);
        let resync = Envelope::new(Vec::new(), Event::Resync);
        assert_eq!(router.channels_of(&resync), ["base"]);
    }
}
