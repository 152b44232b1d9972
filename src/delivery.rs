//! Live delivery of conversation changes in log order, with no gap.
//!
//! Message events reach an instance from writers on it and, through Redis, on the others. Their
//! arrival order is not the log's: two transactions publish after their commits in either order,
//! an instance may die between its commit and its publish, Redis may drop a message, and with
//! Redis an instance hears only of the conversations its subscribers follow, from the moment Redis
//! confirmed it follows them (`events::routing`). So the bus is only a hint here, and the log is
//! read whole, whatever this instance follows. Each instance keeps one position, the last change it handed to its
//! subscriptions, and hands them changes strictly in log order ([`Position`]):
//!
//! - an event that is exactly the next position is handed on at once (SQLite: change-log ids have
//!   no holes, one writer commits them in order, so "the next" is `id + 1`);
//! - anything else (on PostgreSQL, every event: transaction ids have holes) wakes a reader that
//!   reads the settled log after the position from the database (`messages::log_after`: only
//!   rows no running transaction can precede) and hands those on in order;
//! - the reader also looks every [`POLL`], on every resync, and when this instance starts
//!   following a conversation a user of its joined, so a change whose announcement was lost or
//!   never came here still arrives.
//!
//! What is handed on for a change read from the log is its announcement when one arrived (kept
//! until the reader passes it): it carries the message as the change left it and the members at
//! its commit. The log's own row joins the message as it is now, which a later change (a delete
//! after an edit) may already have altered; it stands in only for a change nobody announced.
//!
//! Why this is gapless: the position only moves to a change handed on, in increasing order; a
//! change read from the database is settled, so no change before it can commit later; a change
//! taken as "the next" has no change between it and the position. A subscription registered
//! before it reads the position ([`Delivery::position`]) receives every change after it: the
//! position moves before a change is handed on, under one lock, so a change after the position
//! read is handed on after the subscription was registered. Resuming (`since`) replays the same
//! settled order from the database, and the live part skips what the replay delivered by position.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    chat::messages,
    error::AppResult,
    events::{Envelope, Event, EventBus, Position},
    store::{Backend, Store},
};

/// How often the reader looks at the log when nothing woke it: the longest a change whose
/// announcement was lost (its instance died after the commit, Redis dropped it) waits, when no
/// later change wakes the reader first.
pub const POLL: Duration = Duration::from_secs(1);

/// How soon the reader looks again while a change announced to this instance is not yet settled
/// (doubling each time nothing settled, up to [`POLL`]). With Redis an instance hears only of the conversations
/// its subscribers follow, so the commit of the transaction that holds the change back, in a
/// conversation nobody here follows, wakes nobody here: without this the change would wait for
/// the next [`POLL`].
const SETTLE_RETRY: Duration = Duration::from_millis(2);

/// How many changes one read takes.
const BATCH: u64 = 500;

/// Most announcements kept for the reader; past this the oldest go (their changes are then handed
/// on as the log has them).
const ANNOUNCED: usize = 10_000;

/// This instance's ordered feed of conversation changes to its subscriptions.
pub struct Delivery {
    bus: EventBus,
    /// Reads on a connection of its own (see `db::connect_log_reader`).
    store: Store,
    /// Whether change-log ids have no holes (SQLite), so that the next change is known by its id.
    dense: bool,
    /// The last change handed to the subscriptions.
    position: Mutex<Position>,
    /// Announced changes after the position, waiting for the reader to reach them.
    announced: Mutex<BTreeMap<Position, Arc<Envelope>>>,
    wake: Arc<Notify>,
}

impl Delivery {
    /// Starts at the last settled change: takes the bus's message events, and reads the log on
    /// `tasks` until `shutdown`.
    pub async fn start(
        store: Store,
        bus: EventBus,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        if let Some((logged, next)) = messages::positions_from_elsewhere(&store).await? {
            anyhow::bail!(
                "the change log holds transaction ids up to {logged}, ahead of this PostgreSQL \
                 cluster's next one ({next}): the database was restored into another cluster. \
                 Run `UPDATE conversation_events SET tx = 0` on it once, then start again"
            );
        }
        let position = messages::latest_position(&store).await?;
        let dense = store.backend() == Backend::Sqlite;
        let delivery = Arc::new(Self {
            bus: bus.clone(),
            store,
            dense,
            position: Mutex::new(position),
            announced: Mutex::default(),
            wake: Arc::new(Notify::new()),
        });
        let weak = Arc::downgrade(&delivery);
        bus.sequence_messages(move |envelope| {
            if let Some(delivery) = weak.upgrade() {
                delivery.offer(envelope);
            }
        });
        tasks.spawn(read(
            Arc::downgrade(&delivery),
            delivery.wake.clone(),
            shutdown,
        ));
        Ok(delivery)
    }

    /// The last change handed to the subscriptions: a subscription registered on the bus before
    /// asking receives every change after it.
    pub fn position(&self) -> Position {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Position> {
        crate::lock(&self.position)
    }

    /// An event from the bus: handed on if it is the next change, else a reason to read the log.
    fn offer(&self, envelope: &Arc<Envelope>) {
        if let Event::Message { position, .. } = envelope.event {
            let mut last = self.lock();
            if position <= *last {
                return;
            }
            if self.dense && position.tx == last.tx && Some(position.id) == last.id.checked_add(1) {
                // Moved before handing on, under the lock: see the module's note.
                *last = position;
                self.bus.route(envelope.clone());
                return;
            }
            drop(last);
            let mut announced = crate::lock(&self.announced);
            announced.insert(position, envelope.clone());
            if announced.len() > ANNOUNCED {
                announced.pop_first();
            }
        }
        self.wake.notify_one();
    }

    /// Whether changes were announced that the reader has not handed on yet (not settled when it
    /// last read).
    fn waiting(&self) -> bool {
        !crate::lock(&self.announced).is_empty()
    }

    /// Hands on every settled change after the position, in order.
    async fn catch_up(&self) -> AppResult<()> {
        loop {
            let after = self.position();
            let batch = messages::log_after(&self.store, after, BATCH).await?;
            let full = batch.read == BATCH;
            {
                let mut last = self.lock();
                let mut announced = crate::lock(&self.announced);
                for envelope in batch.events {
                    let Event::Message { position, .. } = envelope.event else {
                        continue;
                    };
                    // Changes handed on meanwhile as "the next" are not handed on again.
                    if position > *last {
                        *last = position;
                        let envelope = announced
                            .remove(&position)
                            .unwrap_or_else(|| Arc::new(envelope));
                        self.bus.route(envelope);
                    }
                }
                // Past rows that gave no event too, so that they are not read again.
                if let Some(read_to) = batch.last {
                    *last = (*last).max(read_to);
                }
                // Announcements the position has passed are no longer needed.
                *announced = announced.split_off(&Position {
                    tx: last.tx,
                    id: last.id.saturating_add(1),
                });
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// The reader: reads the log when woken, every [`POLL`] otherwise (sooner while an announced
/// change waits to settle: see [`SETTLE_RETRY`]), until `shutdown` or until the instance is gone.
async fn read(delivery: Weak<Delivery>, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut retry = SETTLE_RETRY;
    loop {
        let waiting = {
            let Some(delivery) = delivery.upgrade() else {
                return;
            };
            let from = delivery.position();
            if let Err(err) = delivery.catch_up().await {
                tracing::warn!(error = %err, "reading the change log failed; retrying");
            }
            // The back-off grows only while nothing settles: a read that moved on starts it
            // again, so that a steady stream of announced changes is read as soon as it settles.
            if delivery.position() != from {
                retry = SETTLE_RETRY;
            }
            delivery.waiting()
        };
        let pause = if waiting {
            let pause = retry;
            retry = (retry * 2).min(POLL);
            pause
        } else {
            retry = SETTLE_RETRY;
            POLL
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
