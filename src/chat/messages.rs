//! Messages: send (idempotent with a client message id), edit, soft delete, history pages, and the
//! durable change log that subscriptions replay from.
use std::collections::HashMap;

use entity::{conversation, conversation_event, message};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait},
};

use super::{
    conversations::{self, now},
    pagination::{Direction, Page, PageRequest},
};
use crate::{
    AppState,
    auth::Viewer,
    db,
    error::{AppError, AppResult, is_unique_violation},
    events::{Envelope, Event, MessageChange},
    files::{StoredFile, ValidFile},
};

/// Where a message is going: an existing conversation, or a user (the direct conversation with
/// them is made on first use).
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Conversation(i64),
    User(i64),
}

/// A message body: not blank, at most the configured number of characters.
#[derive(Debug, Clone)]
pub struct MessageBody(String);

impl MessageBody {
    /// Parses a body; `max_chars` comes from the configuration.
    pub fn parse(raw: &str, max_chars: usize) -> AppResult<Self> {
        if raw.trim().is_empty() {
            return Err(AppError::bad_input("message body must not be empty"));
        }
        if raw.chars().count() > max_chars {
            return Err(AppError::bad_input(format!(
                "message body must be at most {max_chars} characters"
            )));
        }
        if raw.contains('\0') {
            return Err(AppError::bad_input("message body must not contain NUL"));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A client's id for a send, making retries idempotent: 1–64 printable characters.
#[derive(Debug, Clone)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// Parses a client message id.
    pub fn parse(raw: &str) -> AppResult<Self> {
        let len = raw.chars().count();
        if !(1..=64).contains(&len) || raw.chars().any(char::is_control) {
            return Err(AppError::bad_input(
                "clientMessageId must be 1 to 64 printable characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

/// A send, parsed: a body, a validated file, or both.
#[derive(Debug)]
pub struct NewMessage {
    pub target: Target,
    pub body: Option<MessageBody>,
    pub file: Option<ValidFile>,
    pub reply_to_id: Option<i64>,
    pub client_message_id: Option<ClientMessageId>,
}

/// Sends a message. A retry with the same client message id returns the first message and creates
/// nothing (and stores no file).
///
/// A file is stored only once every check has passed, just before the transaction; if the
/// transaction fails its object is deleted again (see `files` for what a crash in between leaves).
pub async fn send(
    state: &AppState,
    viewer: Viewer,
    mut new: NewMessage,
) -> AppResult<message::Model> {
    let db = &state.db;
    if new.body.is_none() && new.file.is_none() {
        return Err(AppError::bad_input("a message needs a body or a file"));
    }
    if let Some(cmid) = &new.client_message_id
        && let Some(existing) = find_by_client_id(db, viewer.user_id, cmid).await?
    {
        return Ok(existing);
    }
    let conversation_id = match new.target {
        Target::Conversation(id) => {
            conversations::require_member(db, id, viewer.user_id).await?;
            id
        }
        Target::User(user_id) => {
            if super::users::find(db, user_id).await?.is_none() {
                return Err(AppError::not_found("user"));
            }
            conversations::get_or_create_direct(db, viewer.user_id, user_id)
                .await?
                .id
        }
    };
    if let Some(reply_to) = new.reply_to_id {
        let original = message::Entity::find_by_id(reply_to).one(db).await?;
        if original.is_none_or(|m| m.conversation_id != conversation_id) {
            return Err(AppError::bad_input(
                "replyToId must name a message in the same conversation",
            ));
        }
    }

    let stored = match new.file.take() {
        Some(file) => Some(state.files.put(file).await?),
        None => None,
    };
    let result = insert_message(state, viewer, conversation_id, new, stored.as_ref()).await;
    if let Some(file) = &stored {
        let named =
            matches!(&result, Ok(m) if m.attachment_key.as_deref() == Some(file.key.as_str()));
        if !named {
            // The transaction failed, or a concurrent retry's message won: nothing names the
            // object, so remove it now rather than leave it to the sweep.
            state.files.remove(&file.key).await;
        }
    }
    result
}

/// The transactional half of [`send`]: the row, the conversation's pointer, the change log.
async fn insert_message(
    state: &AppState,
    viewer: Viewer,
    conversation_id: i64,
    new: NewMessage,
    file: Option<&StoredFile>,
) -> AppResult<message::Model> {
    let db = &state.db;
    let txn = db::begin_write(db).await?;
    let (seq, at) = next_seq(&txn, conversation_id).await?;
    let kind = file.map_or("TEXT", |f| f.kind.as_str());
    let inserted = message::ActiveModel {
        conversation_id: Set(conversation_id),
        seq: Set(seq),
        sender_id: Set(Some(viewer.user_id)),
        kind: Set(kind.into()),
        body: Set(new.body.map(|b| b.0)),
        reply_to_id: Set(new.reply_to_id),
        client_message_id: Set(new.client_message_id.as_ref().map(|c| c.0.clone())),
        created_at: Set(at),
        edited_at: Set(None),
        deleted_at: Set(None),
        attachment_key: Set(file.map(|f| f.key.clone())),
        attachment_filename: Set(file.map(|f| f.filename.clone())),
        attachment_content_type: Set(file.map(|f| f.content_type.clone())),
        attachment_size: Set(file.map(|f| f.size)),
        attachment_sha256: Set(file.map(|f| f.sha256.clone())),
        ..Default::default()
    }
    .insert(&txn)
    .await;
    let message = match inserted {
        Ok(message) => message,
        Err(err) if is_unique_violation(&err) && new.client_message_id.is_some() => {
            // A concurrent retry won the race; hand back what it made (the caller removes the
            // file this attempt stored).
            txn.rollback().await?;
            let cmid = new.client_message_id.as_ref().map(|c| c.0.clone());
            return message::Entity::find()
                .filter(message::Column::SenderId.eq(viewer.user_id))
                .filter(message::Column::ClientMessageId.eq(cmid))
                .one(db)
                .await?
                .ok_or_else(|| AppError::Internal("idempotent send lost its message".into()));
        }
        Err(err) => return Err(err.into()),
    };
    conversation::Entity::update_many()
        .col_expr(conversation::Column::LastMessageId, Expr::value(message.id))
        .filter(conversation::Column::Id.eq(conversation_id))
        .exec(&txn)
        .await?;
    commit_and_publish(state, txn, MessageChange::Created, message).await
}

async fn find_by_client_id(
    db: &DatabaseConnection,
    sender_id: i64,
    cmid: &ClientMessageId,
) -> AppResult<Option<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::SenderId.eq(sender_id))
        .filter(message::Column::ClientMessageId.eq(cmid.0.as_str()))
        .one(db)
        .await?)
}

/// Takes the conversation's next sequence number and stamps its activity time. Being the first
/// write of the transaction, it also serialises concurrent changes to one conversation.
async fn next_seq(
    txn: &DatabaseTransaction,
    conversation_id: i64,
) -> AppResult<(i64, chrono::DateTime<chrono::Utc>)> {
    let at = now();
    let row = txn
        .query_one_raw(conversations::sql(
            txn,
            "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = $1 \
             WHERE id = $2 RETURNING last_seq",
            vec![at.into(), conversation_id.into()],
        ))
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    Ok((row.try_get::<i64>("", "last_seq")?, at))
}

/// Records the change in the log, commits, then tells the conversation's members.
async fn commit_and_publish(
    state: &AppState,
    txn: DatabaseTransaction,
    change: MessageChange,
    message: message::Model,
) -> AppResult<message::Model> {
    let seq = match change {
        MessageChange::Created => message.seq,
        _ => next_seq(&txn, message.conversation_id).await?.0,
    };
    let event = conversation_event::ActiveModel {
        conversation_id: Set(message.conversation_id),
        seq: Set(seq),
        kind: Set(change.as_str().into()),
        message_id: Set(message.id),
        created_at: Set(now()),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let recipients = conversations::member_ids(&txn, message.conversation_id).await?;
    txn.commit().await?;
    state
        .bus
        .publish(Envelope {
            recipients,
            event: Event::Message {
                event_id: event.id,
                change,
                message: Box::new(message.clone()),
            },
        })
        .await;
    Ok(message)
}

/// Loads a message the viewer may see, or NOT_FOUND.
pub async fn visible_message(
    db: &DatabaseConnection,
    viewer: Viewer,
    message_id: i64,
) -> AppResult<message::Model> {
    let message = message::Entity::find_by_id(message_id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::not_found("message"))?;
    conversations::require_member(db, message.conversation_id, viewer.user_id)
        .await
        .map_err(|_| AppError::not_found("message"))?;
    Ok(message)
}

async fn own_live_message(
    db: &DatabaseConnection,
    viewer: Viewer,
    message_id: i64,
    verb: &str,
) -> AppResult<message::Model> {
    let message = visible_message(db, viewer, message_id).await?;
    if message.sender_id != Some(viewer.user_id) {
        return Err(AppError::Forbidden(format!(
            "only the sender may {verb} a message"
        )));
    }
    Ok(message)
}

/// Replaces a message's body. Sender only; a deleted message cannot be edited.
pub async fn edit(
    state: &AppState,
    viewer: Viewer,
    message_id: i64,
    body: MessageBody,
) -> AppResult<message::Model> {
    let message = own_live_message(&state.db, viewer, message_id, "edit").await?;
    if message.deleted_at.is_some() {
        return Err(AppError::bad_input("a deleted message cannot be edited"));
    }
    let txn = db::begin_write(&state.db).await?;
    let mut active: message::ActiveModel = message.into();
    active.body = Set(Some(body.0));
    active.edited_at = Set(Some(now()));
    let message = active.update(&txn).await?;
    commit_and_publish(state, txn, MessageChange::Edited, message).await
}

/// Soft-deletes a message: the row stays, its content is hidden. Sender only; deleting again
/// changes nothing.
pub async fn delete(
    state: &AppState,
    viewer: Viewer,
    message_id: i64,
) -> AppResult<message::Model> {
    let message = own_live_message(&state.db, viewer, message_id, "delete").await?;
    if message.deleted_at.is_some() {
        return Ok(message);
    }
    let txn = db::begin_write(&state.db).await?;
    let mut active: message::ActiveModel = message.into();
    active.deleted_at = Set(Some(now()));
    let message = active.update(&txn).await?;
    let message = commit_and_publish(state, txn, MessageChange::Deleted, message).await?;
    // Only after the commit: were the delete rolled back, the file would still be needed. If this
    // fails, the orphan sweep removes it (it spares only objects of live messages).
    if let Some(key) = &message.attachment_key {
        state.files.remove(key).await;
    }
    Ok(message)
}

/// A page of a conversation's messages in sequence order; positions are sequence numbers.
pub async fn page(
    db: &DatabaseConnection,
    conversation_id: i64,
    request: PageRequest<i64>,
) -> AppResult<Page<message::Model>> {
    let mut query = message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .limit(request.limit + 1);
    query = match (request.direction, request.anchor) {
        (Direction::Forward, anchor) => {
            let q = query.order_by_asc(message::Column::Seq);
            match anchor {
                Some(seq) => q.filter(message::Column::Seq.gt(seq)),
                None => q,
            }
        }
        (Direction::Backward, anchor) => {
            let q = query.order_by_desc(message::Column::Seq);
            match anchor {
                Some(seq) => q.filter(message::Column::Seq.lt(seq)),
                None => q,
            }
        }
    };
    let mut rows = query.all(db).await?;
    let more = rows.len() as u64 > request.limit;
    rows.truncate(request.limit as usize);
    Ok(match request.direction {
        Direction::Forward => Page {
            items: rows,
            has_previous: request.anchor.is_some(),
            has_next: more,
        },
        Direction::Backward => {
            rows.reverse();
            Page {
                items: rows,
                has_previous: more,
                has_next: request.anchor.is_some(),
            }
        }
    })
}

/// Messages by id, for batching.
pub async fn by_ids(
    db: &DatabaseConnection,
    ids: &[i64],
) -> AppResult<HashMap<i64, message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect())
}

/// The most recent change-log id, so a live subscription can hand out cursors from the start.
pub async fn latest_event_id(db: &DatabaseConnection) -> AppResult<i64> {
    Ok(conversation_event::Entity::find()
        .select_only()
        .column_as(Expr::col(conversation_event::Column::Id).max(), "max_id")
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten()
        .unwrap_or(0))
}

/// Up to `limit` logged changes after `after_id`, oldest first, in the given conversation or in
/// any conversation the user belongs to now, each with the message as it is now.
pub async fn events_after(
    db: &DatabaseConnection,
    user_id: i64,
    conversation_id: Option<i64>,
    after_id: i64,
    limit: u64,
) -> AppResult<Vec<(conversation_event::Model, message::Model)>> {
    let mut query = conversation_event::Entity::find()
        .filter(conversation_event::Column::Id.gt(after_id))
        .order_by_asc(conversation_event::Column::Id)
        .limit(limit);
    query = match conversation_id {
        Some(id) => query.filter(conversation_event::Column::ConversationId.eq(id)),
        None => query.filter(
            conversation_event::Column::ConversationId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(entity::member::Column::ConversationId)
                    .from(entity::member::Entity)
                    .and_where(entity::member::Column::UserId.eq(user_id))
                    .to_owned(),
            ),
        ),
    };
    let events = query.all(db).await?;
    let ids: Vec<i64> = events.iter().map(|e| e.message_id).collect();
    let messages = by_ids(db, &ids).await?;
    Ok(events
        .into_iter()
        .filter_map(|e| {
            let message = messages.get(&e.message_id)?.clone();
            Some((e, message))
        })
        .collect())
}
