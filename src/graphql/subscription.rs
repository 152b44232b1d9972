//! Live streams. Each subscriber reads the shared event bus and keeps only what its user may see;
//! `messageEvents` also replays from the durable change log, so a client that resumes with a cursor
//! (or falls behind the bus) misses nothing and sees nothing twice.
use std::collections::HashSet;

use async_graphql::{Context, ID, Result, Subscription};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{
    ContextExt,
    types::{
        MessageEvent, Notification, PresenceEvent, PresenceStatus, ReadReceiptEvent, TypingEvent,
    },
};
use crate::{
    chat::{conversations, messages, presence, users},
    error::AppError,
    events::{Envelope, Event, MessageChange},
    ids::{self, CursorKind, Kind},
    limits::{SlotGuard, SubscriptionSlots},
};

/// Claims one of the connection's subscription slots (over HTTP there is no connection, and
/// subscriptions are refused anyway).
fn claim_slot(ctx: &Context<'_>) -> Result<Option<SlotGuard>, AppError> {
    ctx.data_opt::<SubscriptionSlots>()
        .map(SubscriptionSlots::claim)
        .transpose()
}

/// Keeps a subscription's slot taken for as long as its stream lives.
fn hold<S: Stream>(slot: Option<SlotGuard>, stream: S) -> impl Stream<Item = S::Item> {
    stream.map(move |item| {
        let _held = &slot;
        item
    })
}

/// How many logged changes one replay query reads.
const REPLAY_BATCH: u64 = 500;

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Messages created, edited and deleted, in one conversation or in all of the viewer's. Pass
    /// the `cursor` of the last event you saw as `since` to first receive everything after it.
    async fn message_events(
        &self,
        ctx: &Context<'_>,
        conversation_id: Option<ID>,
        since: Option<String>,
    ) -> Result<impl Stream<Item = MessageEvent> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let state = ctx.state().clone();
        let conversation = ids::decode_opt(Kind::Conversation, conversation_id.as_ref())?;
        let since = since
            .map(|c| ids::decode_cursor(CursorKind::Event, &c, 2))
            .transpose()?;
        if let Some(id) = conversation {
            conversations::require_member(&state.db, id, viewer.user_id).await?;
        }
        // Listen before reading the log, so nothing falls between replay and live.
        let mut live = state.bus.subscribe();
        let latest = messages::latest_event_id(&state.db).await?;
        let since = match since.as_deref() {
            None => None,
            Some(&[epoch, id]) if epoch == state.epoch && id <= latest => Some(id),
            Some(_) => {
                return Err(AppError::ResyncRequired(
                    "this cursor does not belong to this server's data; reload and subscribe again without `since`"
                        .into(),
                )
                .into());
            }
        };
        let start = since.unwrap_or(latest);
        let user_id = viewer.user_id;
        Ok(hold(
            slot,
            async_stream::stream! {
                // Events already delivered by a replay, which the live feed may carry again.
                let mut replayed: HashSet<i64> = HashSet::new();
                let mut last = start;
                let mut replay_from = since;
                loop {
                    if let Some(after) = replay_from.take() {
                        let mut after = after;
                        loop {
                            let batch = match messages::events_after(
                                &state.db, user_id, conversation, after, REPLAY_BATCH,
                            )
                            .await
                            {
                                Ok(batch) => batch,
                                Err(err) => {
                                    tracing::error!(error = %err, "replay failed; ending subscription");
                                    return;
                                }
                            };
                            let full = batch.len() as u64 == REPLAY_BATCH;
                            for (event, message) in batch {
                                after = event.id;
                                last = last.max(event.id);
                                let Some(change) = MessageChange::parse(&event.kind) else { continue };
                                if replayed.insert(event.id) {
                                    yield MessageEvent { event_id: event.id, kind: change.into(), message };
                                }
                            }
                            if !full {
                                break;
                            }
                        }
                    }
                    match live.recv().await {
                        Ok(envelope) => {
                            if let Event::Resync = envelope.event {
                                replay_from = Some(last);
                                continue;
                            }
                            if !envelope.is_for(user_id) {
                                continue;
                            }
                            let Event::Message { event_id, change, message } = &envelope.event else {
                                continue;
                            };
                            if conversation.is_some_and(|c| c != message.conversation_id)
                                || replayed.contains(event_id)
                            {
                                continue;
                            }
                            last = last.max(*event_id);
                            yield MessageEvent {
                                event_id: *event_id,
                                kind: (*change).into(),
                                message: message.as_ref().clone(),
                            };
                        }
                        // Fell behind the bus: catch up from the log, then carry on live.
                        Err(RecvError::Lagged(_)) => replay_from = Some(last),
                        Err(RecvError::Closed) => return,
                    }
                }
            },
        ))
    }

    /// Typing indicators from the other members of one conversation or of all the viewer's.
    async fn typing(
        &self,
        ctx: &Context<'_>,
        conversation_id: Option<ID>,
    ) -> Result<impl Stream<Item = TypingEvent> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let state = ctx.state().clone();
        let conversation = ids::decode_opt(Kind::Conversation, conversation_id.as_ref())?;
        if let Some(id) = conversation {
            conversations::require_member(&state.db, id, viewer.user_id).await?;
        }
        let user_id = viewer.user_id;
        Ok(hold(
            slot,
            live(state.bus.subscribe(), move |envelope| {
                match envelope.event {
                    Event::Typing {
                        conversation_id,
                        user_id: typist,
                        is_typing,
                    } if envelope.is_for(user_id)
                        && typist != user_id
                        && conversation.is_none_or(|c| c == conversation_id) =>
                    {
                        Some(TypingEvent {
                            conversation_id: ids::encode(Kind::Conversation, conversation_id),
                            user_id: typist,
                            is_typing,
                        })
                    }
                    _ => None,
                }
            }),
        ))
    }

    /// Read markers moving, in one conversation or in all of the viewer's (the viewer's own too,
    /// so that their other devices can clear unread badges).
    async fn read_receipts(
        &self,
        ctx: &Context<'_>,
        conversation_id: Option<ID>,
    ) -> Result<impl Stream<Item = ReadReceiptEvent> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let state = ctx.state().clone();
        let conversation = ids::decode_opt(Kind::Conversation, conversation_id.as_ref())?;
        if let Some(id) = conversation {
            conversations::require_member(&state.db, id, viewer.user_id).await?;
        }
        let user_id = viewer.user_id;
        Ok(hold(
            slot,
            live(state.bus.subscribe(), move |envelope| {
                match envelope.event {
                    Event::ReadReceipt {
                        conversation_id,
                        user_id: reader,
                        up_to_message_id,
                        read_at,
                        ..
                    } if envelope.is_for(user_id)
                        && conversation.is_none_or(|c| c == conversation_id) =>
                    {
                        Some(ReadReceiptEvent {
                            conversation_id: ids::encode(Kind::Conversation, conversation_id),
                            user_id: reader,
                            up_to_message_id: up_to_message_id
                                .map(|id| ids::encode(Kind::Message, id)),
                            read_at,
                        })
                    }
                    _ => None,
                }
            }),
        ))
    }

    /// The viewer's new and updated notifications, as they happen.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Notification> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let rx = ctx.state().bus.subscribe();
        Ok(hold(
            slot,
            live(rx, move |envelope| match &envelope.event {
                Event::Notifications { rows } if envelope.is_for(viewer.user_id) => rows
                    .iter()
                    .find(|n| n.user_id == viewer.user_id)
                    .cloned()
                    .map(Notification),
                _ => None,
            }),
        ))
    }

    /// Users coming online and going offline: those named in `userIds` (first their current
    /// state), or without it everyone who shares a conversation with the viewer. Users who share
    /// no conversation with the viewer are never shown.
    async fn presence(
        &self,
        ctx: &Context<'_>,
        user_ids: Option<Vec<ID>>,
    ) -> Result<impl Stream<Item = PresenceEvent> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let state = ctx.state().clone();
        let wanted = match user_ids {
            Some(list) if list.len() > 500 => {
                return Err(AppError::bad_input("at most 500 userIds").into());
            }
            Some(list) => Some(
                list.iter()
                    .map(|id| ids::decode(Kind::User, id))
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
            None => None,
        };
        let rx = state.bus.subscribe();
        let mut snapshot = Vec::new();
        if let Some(wanted) = &wanted {
            let list: Vec<i64> = wanted.iter().copied().collect();
            let visible = presence::visible_to(&state.db, viewer.user_id, &list).await?;
            let found = users::by_ids(&state.db, &list).await?;
            for id in list.into_iter().filter(|id| visible.contains(id)) {
                let online = state.presence.is_online(id).await;
                snapshot.push(PresenceEvent {
                    user_id: id,
                    status: if online {
                        PresenceStatus::Online
                    } else {
                        PresenceStatus::Offline
                    },
                    last_seen_at: if online {
                        None
                    } else {
                        found.get(&id).and_then(|u| u.last_seen_at)
                    },
                });
            }
        }
        let updates = live(rx, move |envelope| match envelope.event {
            Event::Presence {
                user_id,
                online,
                last_seen_at,
            } if envelope.is_for(viewer.user_id)
                && wanted
                    .as_ref()
                    .map_or(user_id != viewer.user_id, |w| w.contains(&user_id)) =>
            {
                Some(PresenceEvent {
                    user_id,
                    status: if online {
                        PresenceStatus::Online
                    } else {
                        PresenceStatus::Offline
                    },
                    last_seen_at,
                })
            }
            _ => None,
        });
        Ok(hold(
            slot,
            futures_util::stream::iter(snapshot).chain(updates),
        ))
    }
}

/// A live-only stream of the bus events that `pick` keeps. Ephemeral events (typing, receipts) are
/// not replayed: a subscriber that falls behind skips what it missed.
fn live<T, F>(
    mut receiver: broadcast::Receiver<Arc<Envelope>>,
    pick: F,
) -> impl Stream<Item = T> + use<T, F>
where
    F: Fn(&Envelope) -> Option<T> + Send + 'static,
{
    async_stream::stream! {
        loop {
            match receiver.recv().await {
                Ok(envelope) => {
                    if let Some(item) = pick(&envelope) {
                        yield item;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    }
}
