//! Typing indicators that end by themselves: an indicator lapses about 6 s after its last refresh,
//! or at once when the WebSocket it was set over closes; subscribers then get `isTyping: false`.
//! Refreshing within the window is silent, and each user has a budget of broadcasts, so nobody can
//! flood a conversation with typing events. With Redis the indicators and budgets live there, so
//! a refresh arriving at another instance keeps the same indicator alive.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::conversations;
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::{Envelope, Event, EventBus},
    limits::{Budget, Limiter, Rate},
    shared_state::SharedState,
    store::Store,
};

/// How long an indicator lasts without a refresh.
pub const TYPING_TTL: Duration = Duration::from_secs(6);
/// Indicators a user may start: a burst of 20, refilled at 20 per 10 s.
const BUDGET: Rate = Rate {
    burst: 20,
    period: Duration::from_secs(10),
};

/// Identifies one WebSocket connection, so that what it set can be undone when it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

struct Indicator {
    expires: Instant,
    connection: Option<ConnectionId>,
}

#[derive(Default)]
struct State {
    /// Who is typing where: (conversation, user).
    active: HashMap<(i64, i64), Indicator>,
}

/// The typing indicators this instance started (and, with Redis, the shared ones), announced on
/// its event bus to the conversation's members.
#[derive(Clone)]
pub struct Typing {
    store: Store,
    events: EventBus,
    state: Arc<Mutex<State>>,
    shared: Option<SharedState>,
    /// Holds each user to [`BUDGET`] starts.
    limits: Limiter,
}

impl Typing {
    /// Indicators kept in this process, or in Redis when `shared` is given; starts are taken
    /// from `limits`.
    pub fn new(
        store: Store,
        events: EventBus,
        shared: Option<SharedState>,
        limits: Limiter,
    ) -> Self {
        Self {
            store,
            events,
            state: Arc::default(),
            shared,
            limits,
        }
    }

    /// Starts the task that lapses indicators nobody refreshed, on `tasks` until `shutdown`.
    pub fn spawn_sweeper(
        &self,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let typing = self.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                let lapsed = typing.take(|indicator, now| indicator.expires <= now);
                for (conversation_id, user_id) in lapsed {
                    if let Some(shared) = &typing.shared
                        && shared
                            .is_typing(conversation_id, user_id)
                            .await
                            .unwrap_or(false)
                    {
                        // Refreshed through another instance: still typing, look again later.
                        typing.lock().active.insert(
                            (conversation_id, user_id),
                            Indicator {
                                expires: Instant::now() + TYPING_TTL,
                                connection: None,
                            },
                        );
                        continue;
                    }
                    typing.broadcast(conversation_id, user_id, false).await;
                }
            }
        });
    }

    /// Sets or clears the viewer's indicator in a conversation.
    pub async fn set(
        &self,
        viewer: Viewer,
        conversation_id: i64,
        is_typing: bool,
        connection: Option<ConnectionId>,
    ) -> AppResult<()> {
        conversations::require_member(self.store.reader(), conversation_id, viewer.user_id).await?;
        let changed = match &self.shared {
            None => {
                self.set_local(viewer.user_id, conversation_id, is_typing, connection)
                    .await?
            }
            Some(shared) => {
                let shared_outcome = self
                    .set_shared(
                        shared,
                        viewer.user_id,
                        conversation_id,
                        is_typing,
                        connection,
                    )
                    .await;
                match shared_outcome {
                    // Redis is unavailable (the breaker has logged it): this instance's own
                    // indicators and budget stand in, as without Redis.
                    Err(AppError::Internal(_)) => {
                        self.set_local(viewer.user_id, conversation_id, is_typing, connection)
                            .await?
                    }
                    outcome => outcome?,
                }
            }
        };
        if changed {
            self.broadcast(conversation_id, viewer.user_id, is_typing)
                .await;
        }
        Ok(())
    }

    async fn set_local(
        &self,
        user_id: i64,
        conversation_id: i64,
        is_typing: bool,
        connection: Option<ConnectionId>,
    ) -> AppResult<bool> {
        let key = (conversation_id, user_id);
        {
            let mut state = self.lock();
            let now = Instant::now();
            if !is_typing {
                return Ok(state.active.remove(&key).is_some());
            }
            match state.active.get_mut(&key) {
                Some(indicator) if indicator.expires > now => {
                    indicator.expires = now + TYPING_TTL;
                    indicator.connection = connection.or(indicator.connection);
                    return Ok(false);
                }
                _ => {
                    state.active.insert(
                        key,
                        Indicator {
                            expires: now + TYPING_TTL,
                            connection,
                        },
                    );
                }
            }
        }
        // A start is taken from the budget once it is known to be one; refused, it is undone.
        if let Err(refused) = self.take_start(user_id).await {
            self.lock().active.remove(&key);
            return Err(refused);
        }
        Ok(true)
    }

    async fn take_start(&self, user_id: i64) -> AppResult<()> {
        self.limits
            .take(Budget::Typing, &user_id.to_string(), BUDGET)
            .await
    }

    async fn set_shared(
        &self,
        shared: &SharedState,
        user_id: i64,
        conversation_id: i64,
        is_typing: bool,
        connection: Option<ConnectionId>,
    ) -> AppResult<bool> {
        let unavailable = |err: anyhow::Error| AppError::Internal(format!("redis: {err}"));
        let key = (conversation_id, user_id);
        if !is_typing {
            self.lock().active.remove(&key);
            return shared
                .stop_typing(conversation_id, user_id)
                .await
                .map_err(unavailable);
        }
        let started = shared
            .start_typing(conversation_id, user_id, TYPING_TTL)
            .await
            .map_err(unavailable)?;
        if started && let Err(refused) = self.take_start(user_id).await {
            let _ = shared.stop_typing(conversation_id, user_id).await;
            return Err(refused);
        }
        let mut state = self.lock();
        let now = Instant::now();
        match state.active.get_mut(&key) {
            Some(indicator) => {
                indicator.expires = now + TYPING_TTL;
                indicator.connection = connection.or(indicator.connection);
            }
            None if started => {
                state.active.insert(
                    key,
                    Indicator {
                        expires: now + TYPING_TTL,
                        connection,
                    },
                );
            }
            None => {}
        }
        Ok(started)
    }

    /// Ends every indicator set over a connection that has closed.
    pub async fn connection_closed(&self, connection: ConnectionId) {
        let ended = self.take(|indicator, _| indicator.connection == Some(connection));
        for (conversation_id, user_id) in ended {
            if let Some(shared) = &self.shared
                && !shared
                    .stop_typing(conversation_id, user_id)
                    .await
                    .unwrap_or(true)
            {
                continue;
            }
            self.broadcast(conversation_id, user_id, false).await;
        }
    }

    /// Tells the conversation's members that the user started or stopped typing.
    async fn broadcast(&self, conversation_id: i64, user_id: i64, is_typing: bool) {
        let recipients = match conversations::member_ids(self.store.reader(), conversation_id).await
        {
            Ok(ids) => ids,
            Err(err) => {
                tracing::warn!(error = %err, "typing: could not load members");
                return;
            }
        };
        self.events
            .publish(Envelope::new(
                recipients,
                Event::Typing {
                    conversation_id,
                    user_id,
                    is_typing,
                },
            ))
            .await;
    }

    fn take(&self, matches: impl Fn(&Indicator, Instant) -> bool) -> Vec<(i64, i64)> {
        let mut state = self.lock();
        let now = Instant::now();
        let keys: Vec<(i64, i64)> = state
            .active
            .iter()
            .filter(|(_, indicator)| matches(indicator, now))
            .map(|(key, _)| *key)
            .collect();
        for key in &keys {
            state.active.remove(key);
        }
        keys
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}
