//! Presence: a user is ONLINE while they hold at least one open, authenticated WebSocket, and goes
//! OFFLINE (with a last-seen time) once the last one has been closed for a grace period, so a quick
//! reconnect is not announced at all. Only users who share a conversation see each other's presence.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use entity::user;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, Value,
    sea_query::Expr,
};

use super::conversations::{now, sql};
use crate::{
    AppState,
    error::AppResult,
    events::{Envelope, Event},
};

#[derive(Default)]
struct State {
    /// Open connections per user.
    connections: HashMap<i64, usize>,
    /// Users whose ONLINE has been announced and not yet taken back.
    announced: HashSet<i64>,
}

/// The presence bookkeeping of this instance.
#[derive(Clone)]
pub struct Presence {
    state: Arc<Mutex<State>>,
    grace: Duration,
}

impl Presence {
    /// Presence with the given reconnect grace period.
    pub fn new(grace: Duration) -> Self {
        Self {
            state: Arc::default(),
            grace,
        }
    }

    /// Whether the user holds a live connection here.
    pub fn is_online(&self, user_id: i64) -> bool {
        self.lock().connections.get(&user_id).copied().unwrap_or(0) > 0
    }

    /// A connection of the user was authenticated.
    pub async fn connected(&self, app: &AppState, user_id: i64) {
        let announce = {
            let mut state = self.lock();
            *state.connections.entry(user_id).or_insert(0) += 1;
            state.announced.insert(user_id)
        };
        if announce {
            publish(app, user_id, true, None).await;
        }
    }

    /// A connection of the user closed. After the grace period, if none is open, they go offline.
    pub fn disconnected(&self, app: &AppState, user_id: i64) {
        {
            let mut state = self.lock();
            if let Some(count) = state.connections.get_mut(&user_id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.connections.remove(&user_id);
                }
            }
        }
        let presence = self.clone();
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(presence.grace).await;
            let went_offline = {
                let mut state = presence.lock();
                !state.connections.contains_key(&user_id) && state.announced.remove(&user_id)
            };
            if went_offline {
                let seen = now();
                let stored = user::Entity::update_many()
                    .col_expr(user::Column::LastSeenAt, Expr::value(seen))
                    .filter(user::Column::Id.eq(user_id))
                    .exec(&app.db)
                    .await;
                if let Err(err) = stored {
                    tracing::warn!(error = %err, "presence: could not store last-seen time");
                }
                publish(&app, user_id, false, Some(seen)).await;
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Everyone who shares a conversation with the user, and the user.
pub async fn audience(db: &impl ConnectionTrait, user_id: i64) -> AppResult<Vec<i64>> {
    let rows = db
        .query_all_raw(sql(
            db,
            "SELECT DISTINCT b.user_id AS user_id FROM members a \
             JOIN members b ON b.conversation_id = a.conversation_id WHERE a.user_id = $1",
            vec![user_id.into()],
        ))
        .await?;
    let mut ids = rows
        .iter()
        .map(|row| row.try_get::<i64>("", "user_id"))
        .collect::<Result<Vec<_>, _>>()?;
    if !ids.contains(&user_id) {
        ids.push(user_id);
    }
    Ok(ids)
}

/// Which of `others` share a conversation with `viewer` (the viewer counts as sharing with self).
pub async fn visible_to(
    db: &DatabaseConnection,
    viewer: i64,
    others: &[i64],
) -> AppResult<HashSet<i64>> {
    if others.is_empty() {
        return Ok(HashSet::new());
    }
    let list = (0..others.len())
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let mut values: Vec<Value> = vec![viewer.into()];
    values.extend(others.iter().map(|id| Value::from(*id)));
    let rows = db
        .query_all_raw(sql(
            db,
            &format!(
                "SELECT DISTINCT b.user_id AS user_id FROM members a \
                 JOIN members b ON b.conversation_id = a.conversation_id \
                 WHERE a.user_id = $1 AND b.user_id IN ({list})"
            ),
            values,
        ))
        .await?;
    let mut visible = rows
        .iter()
        .map(|row| row.try_get::<i64>("", "user_id"))
        .collect::<Result<HashSet<_>, _>>()?;
    if others.contains(&viewer) {
        visible.insert(viewer);
    }
    Ok(visible)
}

async fn publish(app: &AppState, user_id: i64, online: bool, last_seen_at: Option<DateTime<Utc>>) {
    match audience(&app.db, user_id).await {
        Ok(recipients) => {
            app.bus
                .publish(Envelope {
                    recipients,
                    event: Event::Presence {
                        user_id,
                        online,
                        last_seen_at,
                    },
                })
                .await
        }
        Err(err) => tracing::warn!(error = %err, "presence: could not load audience"),
    }
}
