//! Routing on this instance: each subscription registers under its user and the kind of event it
//! follows, and an event is handed only to the subscriptions of its recipients. A room of 10,000
//! members then costs each message 10,000 hand-overs, not one per subscription on the instance,
//! and a presence change wakes no one who does not follow presence.
use std::{
    collections::{HashMap, VecDeque},
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock},
    task::{Poll, Waker},
};

use super::{Envelope, Event};

/// The kinds of event a subscription can follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Messages,
    Typing,
    Receipts,
    Notifications,
    Presence,
    Sessions,
}

const TOPICS: [Topic; 6] = [
    Topic::Messages,
    Topic::Typing,
    Topic::Receipts,
    Topic::Notifications,
    Topic::Presence,
    Topic::Sessions,
];

/// Which subscriptions an event is handed to.
enum Audience {
    /// Those following a topic, for the event's recipients.
    Topic(Topic),
    /// Every subscription ([`Event::Resync`]), or only its recipients' when it names some.
    All,
    /// None: the event only steers the bus ([`Event::Joined`]).
    Nobody,
}

impl Event {
    fn audience(&self) -> Audience {
        match self {
            Event::Message { .. } => Audience::Topic(Topic::Messages),
            Event::Typing { .. } => Audience::Topic(Topic::Typing),
            Event::ReadReceipt { .. } => Audience::Topic(Topic::Receipts),
            Event::Notifications { .. } => Audience::Topic(Topic::Notifications),
            Event::Presence { .. } => Audience::Topic(Topic::Presence),
            Event::SessionsEnded { .. } => Audience::Topic(Topic::Sessions),
            Event::Resync => Audience::All,
            Event::Joined { .. } => Audience::Nobody,
        }
    }
}

/// A receiver fell more than its capacity behind: what it had queued was dropped, and a durable
/// stream must catch up from the database.
#[derive(Debug, PartialEq, Eq)]
pub struct Lagged;

/// One subscription's queue.
#[derive(Default)]
struct Inbox(Mutex<Queue>);

#[derive(Default)]
struct Queue {
    events: VecDeque<Arc<Envelope>>,
    lagged: bool,
    /// Taken by the first event that arrives while the receiver waits, so that a burst wakes the
    /// receiver once.
    waker: Option<Waker>,
}

/// A queue drained back to empty keeps at most this much room, so a burst's memory goes back.
const KEPT_CAPACITY: usize = 16;

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        crate::lock(&self.0)
    }

    fn push(&self, envelope: &Arc<Envelope>, capacity: usize) {
        let waker = {
            let mut queue = self.lock();
            if queue.events.len() >= capacity {
                queue.lagged = true;
            } else {
                queue.events.push_back(envelope.clone());
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

type Subscribers = HashMap<i64, Vec<Arc<Inbox>>>;

/// Sees every event before it is routed.
pub type Observer = Box<dyn Fn(&Event) + Send + Sync>;

/// Takes message events (and resyncs) to route them itself, in log order.
pub type Sequencer = Box<dyn Fn(&Arc<Envelope>) + Send + Sync>;

/// The registry of this instance's subscriptions, one map per topic.
pub struct Hub {
    capacity: usize,
    /// Counts events handed to at least one subscription.
    delivered: metrics::Counter,
    topics: [RwLock<Subscribers>; TOPICS.len()],
    observer: OnceLock<Observer>,
    sequencer: OnceLock<Sequencer>,
}

impl Hub {
    /// A hub whose receivers may each fall `capacity` events behind; `delivered` counts the
    /// events that reached at least one of them.
    pub fn new(capacity: usize, delivered: metrics::Counter) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            delivered,
            topics: Default::default(),
            observer: OnceLock::new(),
            sequencer: OnceLock::new(),
        })
    }

    /// Sets the observer (once; later calls are ignored).
    pub fn observe(&self, observer: Observer) {
        if self.observer.set(observer).is_err() {
            tracing::warn!("the event bus already has an observer; the new one is ignored");
        }
    }

    /// Sets the sequencer (once; later calls are ignored).
    pub fn sequence(&self, sequencer: Sequencer) {
        if self.sequencer.set(sequencer).is_err() {
            tracing::warn!("the event bus already has a sequencer; the new one is ignored");
        }
    }

    fn read(&self, topic: Topic) -> std::sync::RwLockReadGuard<'_, Subscribers> {
        crate::read(&self.topics[topic as usize])
    }

    fn write(&self, topic: Topic) -> std::sync::RwLockWriteGuard<'_, Subscribers> {
        crate::write(&self.topics[topic as usize])
    }

    /// Hands an event to every subscription it is for, message events through the sequencer
    /// when there is one. The sequencer also sees [`Event::Resync`] and [`Event::Joined`] (with
    /// Redis, this instance now follows a conversation whose earlier changes may not have reached
    /// it): each is its cue to read the change log.
    pub fn publish(&self, envelope: Arc<Envelope>) {
        if let Some(observe) = self.observer.get() {
            observe(&envelope.event);
        }
        if let Some(sequence) = self.sequencer.get() {
            match envelope.event {
                Event::Message { .. } => return sequence(&envelope),
                Event::Resync | Event::Joined { .. } => sequence(&envelope),
                _ => {}
            }
        }
        self.route(&envelope);
    }

    /// Hands an event to every subscription it is for.
    pub fn route(&self, envelope: &Arc<Envelope>) {
        if self.hand_over(envelope) {
            self.delivered.increment(1);
        }
    }

    /// Hands an event to every subscription it is for; whether there was one.
    fn hand_over(&self, envelope: &Arc<Envelope>) -> bool {
        let mut reached = false;
        let topic = match envelope.event.audience() {
            Audience::Topic(topic) => topic,
            Audience::All => {
                let everyone = envelope.recipients.is_empty();
                for topic in TOPICS {
                    for (user_id, inboxes) in self.read(topic).iter() {
                        if everyone || envelope.is_for(*user_id) {
                            for inbox in inboxes {
                                inbox.push(envelope, self.capacity);
                                reached = true;
                            }
                        }
                    }
                }
                return reached;
            }
            Audience::Nobody => return false,
        };
        let subscribers = self.read(topic);
        // Walk whichever side is smaller: the recipients, or the users subscribed here.
        if subscribers.len() <= envelope.recipients.len() {
            for (user_id, inboxes) in subscribers.iter() {
                if envelope.is_for(*user_id) {
                    for inbox in inboxes {
                        inbox.push(envelope, self.capacity);
                        reached = true;
                    }
                }
            }
        } else {
            for user_id in &envelope.recipients {
                for inbox in subscribers.get(user_id).into_iter().flatten() {
                    inbox.push(envelope, self.capacity);
                    reached = true;
                }
            }
        }
        reached
    }

    /// A receiver of the events on `topic` for `user_id` published from now on (and of every
    /// event meant for all).
    pub fn subscribe(self: &Arc<Self>, topic: Topic, user_id: i64) -> Receiver {
        let inbox = Arc::new(Inbox::default());
        self.write(topic)
            .entry(user_id)
            .or_default()
            .push(inbox.clone());
        Receiver {
            hub: self.clone(),
            topic,
            user_id,
            inbox,
            _following: None,
        }
    }

    /// How many subscriptions follow `topic` on this instance.
    #[cfg(test)]
    fn count(&self, topic: Topic) -> usize {
        self.read(topic).values().map(Vec::len).sum()
    }
}

/// One subscription's end of the hub; dropping it unregisters the subscription.
pub struct Receiver {
    hub: Arc<Hub>,
    topic: Topic,
    user_id: i64,
    inbox: Arc<Inbox>,
    /// What the subscription follows on the bus, let go with the receiver.
    _following: Option<super::Following>,
}

impl Receiver {
    /// Keeps `following` for as long as this receiver lives.
    pub fn holding(mut self, following: super::Following) -> Self {
        self._following = Some(following);
        self
    }

    /// The next event, or [`Lagged`] once if events were dropped since the last call.
    pub async fn recv(&mut self) -> Result<Arc<Envelope>, Lagged> {
        poll_fn(|cx| {
            let mut queue = self.inbox.lock();
            if queue.lagged {
                queue.lagged = false;
                queue.events = VecDeque::new();
                return Poll::Ready(Err(Lagged));
            }
            match queue.events.pop_front() {
                Some(envelope) => {
                    if queue.events.is_empty() && queue.events.capacity() > KEPT_CAPACITY {
                        queue.events.shrink_to(KEPT_CAPACITY);
                    }
                    Poll::Ready(Ok(envelope))
                }
                None => {
                    match &mut queue.waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut subscribers = self.hub.write(self.topic);
        if let Some(inboxes) = subscribers.get_mut(&self.user_id) {
            inboxes.retain(|inbox| !Arc::ptr_eq(inbox, &self.inbox));
            if inboxes.is_empty() {
                subscribers.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typing(recipients: Vec<i64>) -> Arc<Envelope> {
        Arc::new(Envelope::new(
            recipients,
            Event::Typing {
                conversation_id: 1,
                user_id: 1,
                is_typing: true,
            },
        ))
    }

    fn presence(recipients: Vec<i64>) -> Arc<Envelope> {
        Arc::new(Envelope::new(
            recipients,
            Event::Presence {
                user_id: 1,
                online: true,
                last_seen_at: None,
            },
        ))
    }

    /// The next event if one is queued, without waiting.
    fn try_recv(rx: &mut Receiver) -> Option<Result<Arc<Envelope>, Lagged>> {
        futures_util::FutureExt::now_or_never(rx.recv())
    }

    #[test]
    fn events_reach_only_their_recipients_on_their_topic() {
        let hub = Hub::new(8, metrics::Counter::noop());
        let mut alice = hub.subscribe(Topic::Typing, 1);
        let mut bob = hub.subscribe(Topic::Typing, 2);
        let mut bob_presence = hub.subscribe(Topic::Presence, 2);
        // Many recipients, few subscribers, and the other way round: both walks must agree.
        hub.publish(typing((2..100).collect()));
        hub.publish(typing(vec![2]));
        assert!(try_recv(&mut alice).is_none());
        assert!(try_recv(&mut bob).unwrap().is_ok());
        assert!(try_recv(&mut bob).unwrap().is_ok());
        assert!(try_recv(&mut bob).is_none());
        assert!(try_recv(&mut bob_presence).is_none());
        hub.publish(presence(vec![1, 2]));
        assert!(try_recv(&mut bob_presence).unwrap().is_ok());
        assert!(try_recv(&mut bob).is_none());
    }

    #[test]
    fn resync_reaches_every_subscription() {
        let hub = Hub::new(8, metrics::Counter::noop());
        let mut receivers: Vec<_> = TOPICS
            .iter()
            .enumerate()
            .map(|(i, topic)| hub.subscribe(*topic, i as i64))
            .collect();
        hub.publish(Arc::new(Envelope::new(Vec::new(), Event::Resync)));
        for rx in &mut receivers {
            let envelope = try_recv(rx).unwrap().unwrap();
            assert!(matches!(envelope.event, Event::Resync));
        }
    }

    #[test]
    fn a_resync_naming_users_reaches_only_theirs() {
        let hub = Hub::new(8, metrics::Counter::noop());
        let mut named = hub.subscribe(Topic::Receipts, 1);
        let mut other = hub.subscribe(Topic::Receipts, 2);
        hub.publish(Arc::new(Envelope::new(vec![1], Event::Resync)));
        assert!(matches!(
            try_recv(&mut named).unwrap().unwrap().event,
            Event::Resync
        ));
        assert!(try_recv(&mut other).is_none());
    }

    #[test]
    fn a_full_queue_reports_lagged_once_then_resumes() {
        let hub = Hub::new(2, metrics::Counter::noop());
        let mut rx = hub.subscribe(Topic::Typing, 7);
        for _ in 0..5 {
            hub.publish(typing(vec![7]));
        }
        assert_eq!(try_recv(&mut rx).unwrap().unwrap_err(), Lagged);
        assert!(try_recv(&mut rx).is_none(), "the dropped backlog is gone");
        hub.publish(typing(vec![7]));
        assert!(try_recv(&mut rx).unwrap().is_ok());
    }

    #[test]
    fn dropping_a_receiver_unregisters_it() {
        let hub = Hub::new(2, metrics::Counter::noop());
        let first = hub.subscribe(Topic::Messages, 3);
        let second = hub.subscribe(Topic::Messages, 3);
        assert_eq!(hub.count(Topic::Messages), 2);
        drop(first);
        assert_eq!(hub.count(Topic::Messages), 1);
        drop(second);
        assert_eq!(hub.count(Topic::Messages), 0);
        assert!(hub.read(Topic::Messages).is_empty());
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let hub = Hub::new(4, metrics::Counter::noop());
        let mut rx = hub.subscribe(Topic::Typing, 9);
        let waiting = tokio::spawn(async move { rx.recv().await.is_ok() });
        tokio::task::yield_now().await;
        hub.publish(typing(vec![9]));
        assert!(waiting.await.unwrap());
    }
}
