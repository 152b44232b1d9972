//! Presence: a user is ONLINE while they hold at least one open, authenticated WebSocket, and goes
//! OFFLINE (with a last-seen time) once the last one has been closed for a grace period, so a quick
//! reconnect is not announced at all. Only users who share a conversation see each other's presence.
//! With Redis, connections are recorded there (renewed by a heartbeat, so a crashed instance's
//! connections lapse within 30 s) and exactly one instance announces each transition.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};

use super::{model::now, typing::ConnectionId};
use crate::{
    error::AppResult,
    events::{Envelope, Event, EventBus},
    shared_state::{HEARTBEAT, SharedState},
    store::{self, Store},
};

#[derive(Default)]
struct State {
    /// Open connections per user.
    connections: HashMap<i64, usize>,
    /// Users whose ONLINE has been announced and not yet taken back (without Redis).
    announced: HashSet<i64>,
    /// This instance's open connections, for the Redis heartbeat.
    live: HashMap<ConnectionId, i64>,
}

/// The presence bookkeeping of this instance, announcing transitions on its event bus.
#[derive(Clone)]
pub struct Presence {
    store: Store,
    events: EventBus,
    state: Arc<Mutex<State>>,
    grace: Duration,
    shared: Option<SharedState>,
    /// Makes this instance's connection names unique in Redis.
    instance: u64,
}

impl Presence {
    /// Presence with the given reconnect grace period, kept in Redis when `shared` is given.
    pub fn new(
        store: Store,
        events: EventBus,
        grace: Duration,
        shared: Option<SharedState>,
    ) -> Self {
        Self {
            store,
            events,
            state: Arc::default(),
            grace,
            shared,
            instance: rand::random(),
        }
    }

    fn name(&self, connection: ConnectionId) -> String {
        format!("{:x}:{}", self.instance, connection.0)
    }

    /// Starts the task that renews this instance's connections in Redis (nothing without Redis),
    /// on `tasks` until `shutdown`.
    pub fn spawn_heartbeat(
        &self,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let presence = self.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                let live: Vec<(i64, String)> = presence
                    .lock()
                    .live
                    .iter()
                    .map(|(connection, user)| (*user, presence.name(*connection)))
                    .collect();
                // An outage is logged once, by the breaker.
                if let Err(err) = shared.heartbeat(&live).await {
                    tracing::debug!(error = %err, "presence heartbeat failed");
                }
            }
        });
    }

    /// Whether the user holds a live connection (on any instance, with Redis).
    pub async fn is_online(&self, user_id: i64) -> bool {
        let here = self.lock().connections.get(&user_id).copied().unwrap_or(0) > 0;
        match &self.shared {
            Some(shared) if !here => shared.live_connections(user_id).await.unwrap_or(0) > 0,
            _ => here,
        }
    }

    /// How many connections the user holds open: on any instance with Redis (falling back to
    /// this instance's count if Redis cannot be asked), else on this one.
    pub async fn open_connections(&self, user_id: i64) -> u64 {
        let here = self.lock().connections.get(&user_id).copied().unwrap_or(0) as u64;
        match &self.shared {
            Some(shared) => shared
                .live_connections(user_id)
                .await
                .unwrap_or(here)
                .max(here),
            None => here,
        }
    }

    /// A connection of the user was authenticated.
    pub async fn connected(&self, user_id: i64, connection: ConnectionId) {
        let announce_here = {
            let mut state = self.lock();
            *state.connections.entry(user_id).or_insert(0) += 1;
            state.live.insert(connection, user_id);
            state.announced.insert(user_id)
        };
        let announce = match &self.shared {
            None => announce_here,
            Some(shared) => {
                let joined = shared.join(user_id, &self.name(connection)).await;
                match joined {
                    Ok(_) => shared
                        .claim_announcement(user_id, true)
                        .await
                        .unwrap_or(false),
                    Err(err) => {
                        tracing::debug!(error = %err, "presence: redis unavailable");
                        false
                    }
                }
            }
        };
        if announce {
            self.publish(user_id, true, None).await;
        }
    }

    /// A connection of the user closed. After the grace period, if none is open, they go offline.
    pub fn disconnected(&self, user_id: i64, connection: ConnectionId) {
        {
            let mut state = self.lock();
            state.live.remove(&connection);
            if let Some(count) = state.connections.get_mut(&user_id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.connections.remove(&user_id);
                }
            }
        }
        let presence = self.clone();
        let name = self.name(connection);
        tokio::spawn(async move {
            if let Some(shared) = &presence.shared
                && let Err(err) = shared.leave(user_id, &name).await
            {
                tracing::debug!(error = %err, "presence: redis unavailable");
            }
            tokio::time::sleep(presence.grace).await;
            let went_offline = match &presence.shared {
                None => {
                    let mut state = presence.lock();
                    !state.connections.contains_key(&user_id) && state.announced.remove(&user_id)
                }
                Some(shared) => {
                    shared.live_connections(user_id).await.ok() == Some(0)
                        && shared
                            .claim_announcement(user_id, false)
                            .await
                            .unwrap_or(false)
                }
            };
            if went_offline {
                let seen = now();
                let stored = presence
                    .store
                    .write(move |txn| {
                        Box::pin(async move {
                            store::users::set_last_seen(txn, user_id, seen).await?;
                            Ok(((), Vec::new()))
                        })
                    })
                    .await;
                if let Err(err) = stored {
                    tracing::warn!(error = %err, "presence: could not store last-seen time");
                }
                presence.publish(user_id, false, Some(seen)).await;
            }
        });
    }

    /// After `blocker` blocked or unblocked `other`: tells `other`'s `presence` subscriptions
    /// how the blocker appears to them now, if the blocker is online (an offline blocker reads
    /// OFFLINE either way). A block makes an online blocker go OFFLINE for them, as if they had
    /// left, so that a subscription that saw them come online does not show them online for
    /// ever; an unblock brings them back.
    pub async fn block_changed(&self, blocker: i64, other: i64) {
        if !self.is_online(blocker).await {
            return;
        }
        let sight = match visible_to(&self.store, other, &[blocker]).await {
            Ok(visible) => visible.get(&blocker).copied(),
            Err(err) => {
                tracing::warn!(error = %err, "presence: could not read what a block changed");
                return;
            }
        };
        let Some(sight) = sight else {
            // They share no conversation (or `other` has blocked the blocker): nothing was shown.
            return;
        };
        self.events
            .publish(Envelope::new(
                vec![other],
                Event::Presence {
                    user_id: blocker,
                    online: sight == Sight::Real,
                    last_seen_at: None,
                },
            ))
            .await;
    }

    async fn publish(&self, user_id: i64, online: bool, last_seen_at: Option<DateTime<Utc>>) {
        match audience(&self.store, user_id).await {
            Ok(recipients) => {
                self.events
                    .publish(Envelope::new(
                        recipients,
                        Event::Presence {
                            user_id,
                            online,
                            last_seen_at,
                        },
                    ))
                    .await
            }
            Err(err) => tracing::warn!(error = %err, "presence: could not load audience"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}

/// Everyone whom the user's transitions are announced to: the user, and those who share a
/// conversation with them, except whom the user has blocked (they are not told when the blocker
/// comes and goes) and who have blocked the user (they asked not to see it). With repeats when
/// they share several conversations (`Envelope::new` drops them).
async fn audience(store: &Store, user_id: i64) -> AppResult<Vec<i64>> {
    let mut ids = store::presence::audience(store.reader(), user_id).await?;
    ids.push(user_id);
    Ok(ids)
}

/// What a viewer is shown of someone's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// The real state.
    Real,
    /// OFFLINE, never seen: the user has blocked the viewer. It reads like someone who has not
    /// been online, so the viewer is not told of the block.
    Offline,
}

/// How each of `others` who shares a conversation with `viewer` (the viewer counts as sharing
/// with self) and is not blocked by the viewer appears to the viewer. Users left out are shown
/// nothing.
pub async fn visible_to(
    store: &Store,
    viewer: i64,
    others: &[i64],
) -> AppResult<HashMap<i64, Sight>> {
    let mut visible: HashMap<i64, Sight> =
        store::presence::sharing_with(store.reader(), viewer, others)
            .await?
            .into_iter()
            .map(|(id, masked)| (id, if masked { Sight::Offline } else { Sight::Real }))
            .collect();
    if others.contains(&viewer) {
        visible.insert(viewer, Sight::Real);
    }
    Ok(visible)
}
