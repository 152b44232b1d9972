//! Live streams. Each subscriber receives from the event bus what is meant for its user, and
//! checks again that its user may see it; `messageEvents` also replays from the durable change
//! log, so a client that resumes with a cursor (or falls behind the bus) misses nothing and sees
//! nothing twice.
use std::collections::{BTreeSet, HashSet};

use async_graphql::{Context, ID, Result};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};

use super::{
    ContextExt,
    durable::durable,
    render_cache::{RenderCache, Rendered, Shape},
    types::{
        MessageEvent, Notification, PresenceEvent, PresenceStatus, ReadReceiptEvent, TypingEvent,
    },
};
use crate::{
    AppState,
    auth::Viewer,
    chat::{blocks, conversations, messages, notifications, presence, threads, users},
    error::AppError,
    events::{Envelope, Event, Lagged, MessageChange, Position, Receiver, Scope, Topic},
    ids::{self, CursorKind, Kind},
    limits::{SlotGuard, SubscriptionSlots},
};

// The database calls a subscription makes when it starts are boxed (`Box::pin(...).await`):
// async-graphql keeps the resolver's future allocated beside the stream for as long as the
// subscription lives, so anything held inline in it costs every idle subscriber its size.

/// How far ahead of this instance's clock a read receipt cursor may lie (another instance's
/// clock, a little ahead) before it is taken for one from other data.
const RECEIPT_CLOCK_SKEW_MICROS: i64 = 60_000_000;

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

/// The subscription root.
pub struct Subscription;

/// Live streams, over the WebSocket at `/graphql/ws` (`graphql-transport-ws`, or the legacy
/// `graphql-ws`), signed in with the `connection_init` payload. Each shows only what its viewer
/// may see at the time of the event.
#[async_graphql::Subscription]
impl Subscription {
    /// Messages created, edited and deleted, in one conversation or in all of the viewer's. Pass
    /// the `cursor` of the last event you saw as `since` to first receive everything after it.
    async fn message_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "One conversation the viewer belongs to (`cnv_…`; NOT_FOUND otherwise); left out, every conversation of the viewer, including ones joined later."
        )]
        conversation_id: Option<ID>,
        #[graphql(
            desc = "The `cursor` of the last `MessageEvent` received: the events after it are replayed first, then live ones follow, none missed or repeated. A cursor this server's data did not hand out (another database, or ahead of it) is RESYNC_REQUIRED: reload, then subscribe without `since`."
        )]
        since: Option<String>,
        #[graphql(
            desc = "Follow one thread (`msg_…`, its root): the changes to the root and to the replies in its thread, in the conversation's order. The root must be a message the viewer may see (NOT_FOUND otherwise) and no reply in a thread (BAD_USER_INPUT); with `conversationId`, of that conversation (BAD_USER_INPUT otherwise). Left out, replies in threads come with everything else, each with its `threadRoot`."
        )]
        thread_root_id: Option<ID>,
    ) -> Result<impl Stream<Item = Rendered> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let shape = ctx.data_unchecked::<Arc<RenderCache>>().shape_of_field(ctx);
        Ok(Box::pin(message_events(
            ctx.state().clone(),
            viewer,
            slot,
            conversation_id.as_ref(),
            thread_root_id.as_ref(),
            since,
            shape,
        ))
        .await?)
    }

    /// Typing indicators from the other members of one conversation or of all the viewer's.
    async fn typing(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "One conversation the viewer belongs to (`cnv_…`; NOT_FOUND otherwise); left out, every conversation of the viewer, including ones joined later."
        )]
        conversation_id: Option<ID>,
    ) -> Result<impl Stream<Item = TypingEvent> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let state = ctx.state().clone();
        let conversation = ids::decode_opt(Kind::Conversation, conversation_id.as_ref())?;
        if let Some(id) = conversation {
            Box::pin(conversations::require_member(
                &state.chat.store,
                id,
                viewer.user_id,
            ))
            .await?;
        }
        let user_id = viewer.user_id;
        // Taken when the subscription starts: a block or unblock applies to the next one.
        let blocked = Box::pin(blocks::blocked_set(&state.chat.store, user_id)).await?;
        let following =
            Box::pin(state.bus.follow(user_id, conversations_scope(conversation))).await;
        Ok(hold(
            slot,
            live(
                state
                    .bus
                    .subscribe(Topic::Typing, user_id)
                    .holding(following),
                move |envelope| match envelope.event {
                    Event::Typing {
                        conversation_id,
                        user_id: typist,
                        is_typing,
                    } if envelope.is_for(user_id)
                        && typist != user_id
                        && !blocked.contains(&typist)
                        && conversation.is_none_or(|c| c == conversation_id) =>
                    {
                        Some(TypingEvent {
                            conversation_id: ids::encode(Kind::Conversation, conversation_id),
                            user_id: typist,
                            is_typing,
                        })
                    }
                    _ => None,
                },
            ),
        ))
    }

    /// Read markers moving, in one conversation or in all of the viewer's (the viewer's own too,
    /// so that their other devices can clear unread badges). Pass the `cursor` of the last receipt
    /// seen as `since` to first receive every marker that moved after it (its latest position).
    async fn read_receipts(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "One conversation the viewer belongs to (`cnv_…`; NOT_FOUND otherwise); left out, every conversation of the viewer, including ones joined later."
        )]
        conversation_id: Option<ID>,
        #[graphql(
            desc = "The `cursor` of the last `ReadReceiptEvent` received: every marker that moved after it is sent first, at its latest position."
        )]
        since: Option<String>,
    ) -> Result<impl Stream<Item = ReadReceiptEvent> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let state = ctx.state().clone();
        let conversation = ids::decode_opt(Kind::Conversation, conversation_id.as_ref())?;
        let since = since
            .map(|c| decode_since(&state, CursorKind::Receipt, &c, 3).map(|v| (v[0], v[1], v[2])))
            .transpose()?;
        // Read times come from the clock of the instance that committed the marker, so a cursor
        // made on another instance may lie a little ahead of this one's clock; none this
        // deployment gave out lies further ahead than instances' clocks can drift apart.
        let latest = chrono::Utc::now().timestamp_micros() + RECEIPT_CLOCK_SKEW_MICROS;
        if since.is_some_and(|(micros, _, _)| micros > latest) {
            return Err(from_the_future().into());
        }
        if let Some(id) = conversation {
            Box::pin(conversations::require_member(
                &state.chat.store,
                id,
                viewer.user_id,
            ))
            .await?;
        }
        let following = Box::pin(
            state
                .bus
                .follow(viewer.user_id, conversations_scope(conversation)),
        )
        .await;
        let live = state
            .bus
            .subscribe(Topic::Receipts, viewer.user_id)
            .holding(following);
        let start = (chrono::Utc::now().timestamp_micros(), 0, 0);
        let user_id = viewer.user_id;
        let db = state.chat.store.clone();
        let receipt = |r: conversations::Receipt| {
            (
                (r.read_at.timestamp_micros(), r.conversation_id, r.user_id),
                ReadReceiptEvent {
                    conversation_id: ids::encode(Kind::Conversation, r.conversation_id),
                    conversation: r.conversation_id,
                    user_id: r.user_id,
                    up_to_message_id: r.up_to_message_id.map(|id| ids::encode(Kind::Message, id)),
                    read_at: r.read_at,
                },
            )
        };
        Ok(hold(
            slot,
            durable(
                live,
                since,
                start,
                false,
                Default::default(),
                move |after, limit| {
                    let db = db.clone();
                    async move {
                        let rows =
                            conversations::receipts_after(&db, user_id, conversation, after, limit)
                                .await?;
                        Ok(rows.into_iter().map(receipt).collect())
                    }
                },
                move |envelope| match envelope.event {
                    Event::ReadReceipt {
                        conversation_id,
                        user_id: reader,
                        up_to_message_id,
                        read_at,
                        ..
                    } if envelope.is_for(user_id)
                        && conversation.is_none_or(|c| c == conversation_id) =>
                    {
                        Some(receipt(conversations::Receipt {
                            conversation_id,
                            user_id: reader,
                            up_to_message_id,
                            read_at,
                        }))
                    }
                    _ => None,
                },
            ),
        ))
    }

    /// The viewer's new and updated notifications, as they happen. Pass the `cursor` of the last
    /// one seen as `since` to first receive every notification made or updated after it.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The `cursor` field of the last `Notification` received (not a page's edge cursor): every notification made or updated after it is sent first."
        )]
        since: Option<String>,
    ) -> Result<impl Stream<Item = Notification> + use<>> {
        let viewer = ctx.viewer()?;
        let slot = claim_slot(ctx)?;
        let state = ctx.state().clone();
        let since = since
            .map(|c| decode_since(&state, CursorKind::Activity, &c, 2).map(|v| (v[0], v[1])))
            .transpose()?;
        if let Some(position) = since {
            let newest = Box::pin(notifications::newest_position(
                &state.chat.store,
                viewer.user_id,
            ))
            .await?;
            if newest.is_none_or(|newest| position > newest) {
                return Err(from_the_future().into());
            }
        }
        let following = Box::pin(state.bus.follow(viewer.user_id, Scope::User)).await;
        let live = state
            .bus
            .subscribe(Topic::Notifications, viewer.user_id)
            .holding(following);
        let start = (chrono::Utc::now().timestamp_micros(), 0);
        let user_id = viewer.user_id;
        let db = state.chat.store.clone();
        let position = |n: &entity::notification::Model| (n.updated_at.timestamp_micros(), n.id);
        Ok(hold(
            slot,
            durable(
                live,
                since,
                start,
                false,
                Default::default(),
                move |after, limit| {
                    let db = db.clone();
                    async move {
                        let rows = notifications::changed_after(&db, user_id, after, limit).await?;
                        Ok(rows
                            .into_iter()
                            .map(|n| (position(&n), Notification(n)))
                            .collect())
                    }
                },
                move |envelope| match &envelope.event {
                    Event::Notifications { rows } if envelope.is_for(user_id) => rows
                        .binary_search_by_key(&user_id, |n| n.user_id)
                        .ok()
                        .map(|i| (position(&rows[i]), Notification(rows[i].clone()))),
                    _ => None,
                },
            ),
        ))
    }

    /// Users coming online and going offline: those named in `userIds` (first their current
    /// state), or without it everyone who shares a conversation with the viewer. Users who share
    /// no conversation with the viewer are never shown.
    async fn presence(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Up to 500 users to watch (`usr_…`); their current state comes first. Left out: everyone who shares a conversation with the viewer, changes only."
        )]
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
        let following = Box::pin(state.bus.follow(viewer.user_id, Scope::User)).await;
        let rx = state
            .bus
            .subscribe(Topic::Presence, viewer.user_id)
            .holding(following);
        // Taken when the subscription starts: a block or unblock applies to the next one.
        let blocked = Box::pin(blocks::blocked_set(&state.chat.store, viewer.user_id)).await?;
        let mut snapshot = Vec::new();
        if let Some(wanted) = &wanted {
            let list: Vec<i64> = wanted.iter().copied().collect();
            let visible = Box::pin(presence::visible_to(
                &state.chat.store,
                viewer.user_id,
                &list,
            ))
            .await?;
            let found = Box::pin(users::by_ids(&state.chat.store, &list)).await?;
            for (id, sight) in list
                .into_iter()
                .filter_map(|id| Some((id, *visible.get(&id)?)))
            {
                let online =
                    sight == presence::Sight::Real && Box::pin(state.presence.is_online(id)).await;
                // A user who blocked the viewer reads as never seen (see `presence::Sight`).
                let shown = sight == presence::Sight::Real;
                snapshot.push(PresenceEvent {
                    user_id: id,
                    status: if online {
                        PresenceStatus::Online
                    } else {
                        PresenceStatus::Offline
                    },
                    last_seen_at: if online || !shown {
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
                && !blocked.contains(&user_id)
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

/// What a subscription to one conversation, or (None) to all of the viewer's, follows on the bus.
fn conversations_scope(conversation: Option<i64>) -> Scope {
    conversation.map_or(Scope::Member, Scope::Conversation)
}

/// Decodes a subscription's `since`: this deployment's epoch followed by `parts` numbers, which
/// are returned. A cursor of the right kind from other data (another epoch, or none where one was
/// once left out) is RESYNC_REQUIRED rather than replayed from a position that means something
/// else here; anything else is BAD_USER_INPUT.
fn decode_since(
    state: &AppState,
    kind: CursorKind,
    cursor: &str,
    parts: usize,
) -> Result<Vec<i64>, AppError> {
    match ids::decode_cursor(kind, cursor, parts + 1) {
        Ok(numbers) if numbers[0] == state.epoch => Ok(numbers[1..].to_vec()),
        Ok(_) => Err(from_other_data()),
        // A `notifications` or `readReceipts` cursor without the epoch (a `notifications` query's
        // page cursor has none) cannot be checked against this data: RESYNC_REQUIRED.
        Err(invalid) => match ids::decode_cursor(kind, cursor, parts) {
            Ok(_) if matches!(kind, CursorKind::Activity | CursorKind::Receipt) => {
                Err(from_other_data())
            }
            _ => Err(invalid),
        },
    }
}

/// Most positions a new `messageEvents` subscription skips as older than itself (see
/// `message_events`); beyond them, older changes are delivered rather than risk skipping one.
const BEFORE_LIMIT: u64 = 1000;

/// A `messageEvents` cursor, decoded.
enum Since {
    Position(Position),
    /// A change-log id, from before positions had a transaction part (all those rows have
    /// `tx = 0`).
    Legacy(i64),
}

/// Decodes a `messageEvents` cursor: the epoch and a [`Position`], or the epoch and a legacy id.
fn decode_event_cursor(state: &AppState, cursor: &str) -> Result<Since, AppError> {
    match decode_since(state, CursorKind::Event, cursor, 2) {
        Ok(parts) => Ok(Since::Position(Position {
            tx: parts[0],
            id: parts[1],
        })),
        Err(err) => match decode_since(state, CursorKind::Event, cursor, 1) {
            Ok(parts) => Ok(Since::Legacy(parts[0])),
            // A legacy cursor from other data.
            Err(AppError::ResyncRequired(reason)) => Err(AppError::ResyncRequired(reason)),
            Err(_) => Err(err),
        },
    }
}

fn from_other_data() -> AppError {
    AppError::ResyncRequired(
        "this cursor does not belong to this server's data; reload and subscribe again without `since`"
            .into(),
    )
}

/// A cursor past anything this server's data holds (forged, or the data was restored from an
/// earlier backup): replaying from it would silently skip what comes before it.
fn from_the_future() -> AppError {
    AppError::ResyncRequired(
        "this cursor is ahead of this server's data; reload and subscribe again without `since`"
            .into(),
    )
}

/// A live-only stream of the bus events that `pick` keeps. Ephemeral events (typing, receipts) are
/// not replayed: a subscriber that falls behind skips what it missed.
fn live<T, F>(mut receiver: Receiver, pick: F) -> impl Stream<Item = T> + use<T, F>
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
                Err(Lagged) => continue,
            }
        }
    }
}

/// The events of a `messageEvents` subscription, for the schema's resolver and for lean
/// subscriptions served without it (`lean_subscription`). `shape` is the subscriber's selection,
/// given to live events so that they share their renders when it reads the same to every viewer.
pub(super) async fn message_events(
    state: AppState,
    viewer: Viewer,
    slot: Option<SlotGuard>,
    conversation_id: Option<&ID>,
    thread_root_id: Option<&ID>,
    since: Option<String>,
    shape: Option<Arc<Shape>>,
) -> Result<impl Stream<Item = Rendered> + use<>, AppError> {
    let mut conversation = ids::decode_opt(Kind::Conversation, conversation_id)?;
    let thread = ids::decode_opt(Kind::Message, thread_root_id)?;
    let since = since.map(|c| decode_event_cursor(&state, &c)).transpose()?;
    if let Some(id) = conversation {
        Box::pin(conversations::require_member(
            &state.chat.store,
            id,
            viewer.user_id,
        ))
        .await?;
    }
    if let Some(root) = thread {
        let root = Box::pin(threads::visible_root(
            &state.chat.store,
            viewer.user_id,
            root,
        ))
        .await?;
        if conversation.is_some_and(|id| id != root.conversation_id) {
            return Err(AppError::bad_input(
                "threadRootId must name a message of conversationId",
            ));
        }
        conversation = Some(root.conversation_id);
    }
    // Followed before anything else: from here on, every change of these conversations reaches
    // this instance, and the positions read below are taken after that.
    let following = Box::pin(
        state
            .bus
            .follow(viewer.user_id, conversations_scope(conversation)),
    )
    .await;
    // What this instance has not handed on yet but had committed before the subscription began
    // precedes it: read before registering, and skipped when it comes.
    let handed_on = state.delivery.position();
    let before: BTreeSet<Position> = if since.is_none() {
        Box::pin(messages::positions_after(
            &state.chat.store,
            handed_on,
            BEFORE_LIMIT,
        ))
        .await?
        .into_iter()
        .collect()
    } else {
        BTreeSet::new()
    };
    // Registered before asking for the delivery's position, so nothing falls between the two
    // (see `delivery`).
    let live = state
        .bus
        .subscribe(Topic::Messages, viewer.user_id)
        .holding(following);
    let start = state.delivery.position();
    let since = match since {
        None => None,
        Some(Since::Position(position)) if position.tx > 0 => {
            if position > start
                && position > Box::pin(messages::latest_position(&state.chat.store)).await?
            {
                return Err(from_the_future());
            }
            Some(position)
        }
        // Rows older than positions (`tx = 0`), named by a position or by their id alone.
        Some(Since::Position(Position { id, .. }) | Since::Legacy(id)) => {
            if id > Box::pin(messages::latest_event_id(&state.chat.store)).await? {
                return Err(from_the_future());
            }
            Some(Position { tx: 0, id })
        }
    };
    let user_id = viewer.user_id;
    let db = state.chat.store.clone();
    Ok(hold(
        slot,
        durable(
            live,
            since,
            start,
            true,
            before,
            move |after, limit| {
                let db = db.clone();
                async move {
                    let rows =
                        messages::events_after(&db, user_id, conversation, thread, after, limit)
                            .await?;
                    Ok(rows
                        .into_iter()
                        .filter_map(|(event, message)| {
                            let change = MessageChange::parse(&event.kind)?;
                            let position = Position {
                                tx: event.tx,
                                id: event.id,
                            };
                            Some((
                                position,
                                Rendered {
                                    event: MessageEvent {
                                        position,
                                        kind: change.into(),
                                        message: Arc::new(message),
                                    },
                                    shape: None,
                                },
                            ))
                        })
                        .collect())
                }
            },
            move |envelope| match &envelope.event {
                Event::Message {
                    position,
                    change,
                    message,
                } if envelope.is_for(user_id)
                    && conversation.is_none_or(|c| c == message.conversation_id)
                    && thread.is_none_or(|root| threads::concerns(message, root, user_id)) =>
                {
                    Some((
                        *position,
                        Rendered {
                            event: MessageEvent {
                                position: *position,
                                kind: (*change).into(),
                                message: message.clone(),
                            },
                            shape: shape.clone(),
                        },
                    ))
                }
                _ => None,
            },
        ),
    ))
}
