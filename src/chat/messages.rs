//! Messages: send (idempotent with a client message id), edit, soft delete, history pages, and the
//! durable change log that subscriptions replay from.
use std::{collections::HashMap, sync::Arc};

use entity::{conversation_event, message};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, EntityTrait, FromQueryResult, IdenStatic, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Set,
    sea_query::{Expr, ExprTrait},
};

use super::{
    conversations,
    model::{DIRECT, SystemKind, now},
    notifications,
    pagination::{Direction, Page, PageRequest},
};
use crate::store::changes::{Logged, envelopes, log_change, next_seq, recipients};
use crate::{
    AppState,
    auth::Viewer,
    db,
    error::{AppError, AppResult, is_unique_violation},
    events::{Envelope, Event, MessageChange, Position},
    files::{StoredFile, ValidFile},
    text,
};

/// Where a message is going: an existing conversation, or a user (the direct conversation with
/// them is made on first use).
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Conversation(i64),
    User(i64),
}

/// A message body: something visible, at most the configured number of characters, and no
/// control character but `\n` and `\t`. Kept verbatim: a body with any other control character
/// (ESC, a carriage return, C1) is refused, never cleaned; bidirectional marks and zero-width
/// joiners are prose and stay (see [`crate::text`]).
#[derive(Debug, Clone)]
pub struct MessageBody(String);

impl MessageBody {
    /// The body as it is stored (line breaks normalised to LF).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a body; `max_chars` comes from the configuration.
    pub fn parse(raw: &str, max_chars: usize) -> AppResult<Self> {
        // A line break written the Windows way (CR LF) is a line break: it is kept as LF, so that
        // clients on every platform can send multi-line text. A CR anywhere else is refused below.
        let normalized;
        let raw = if raw.contains("\r\n") {
            normalized = raw.replace("\r\n", "\n");
            normalized.as_str()
        } else {
            raw
        };
        if text::is_blank(raw) {
            return Err(AppError::bad_input("message body must not be empty"));
        }
        if raw.chars().count() > max_chars {
            return Err(AppError::bad_input(format!(
                "message body must be at most {max_chars} characters"
            )));
        }
        if let Some(found) = text::first_unwanted(raw, text::unwanted_in_body) {
            return Err(AppError::bad_input(text::describe("message body", found)));
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
    let db = state.chat.store.reader();
    if new.body.is_none() && new.file.is_none() {
        return Err(AppError::bad_input("a message needs a body or a file"));
    }
    let (conversation_id, sender_name) = match new.target {
        Target::Conversation(id) => {
            let checked =
                check_send(db, id, viewer.user_id, new.client_message_id.as_ref()).await?;
            if let Some(existing) = checked.earlier {
                return Ok(existing);
            }
            (id, checked.sender_name)
        }
        Target::User(user_id) => {
            if let Some(cmid) = &new.client_message_id
                && let Some(existing) = find_by_client_id(db, viewer.user_id, cmid).await?
            {
                return Ok(existing);
            }
            if super::users::find(db, user_id).await?.is_none() {
                return Err(AppError::not_found("user"));
            }
            super::blocks::ensure_not_blocked(db, user_id, viewer.user_id).await?;
            let sender = super::users::find(db, viewer.user_id)
                .await?
                .ok_or_else(|| AppError::not_found("user"))?;
            let direct = conversations::get_or_create_direct(db, viewer.user_id, user_id).await?;
            (direct.id, sender.display_name)
        }
    };
    let mut reply_to_sender = None;
    if let Some(reply_to) = new.reply_to_id {
        match message::Entity::find_by_id(reply_to).one(db).await? {
            Some(original) if original.conversation_id == conversation_id => {
                reply_to_sender = original.sender_id;
            }
            _ => {
                return Err(AppError::bad_input(
                    "replyToId must name a message in the same conversation",
                ));
            }
        }
    }

    let stored = match new.file.take() {
        Some(file) => Some(state.files.put(file).await?),
        None => None,
    };
    let result = insert_message(
        state,
        viewer,
        conversation_id,
        new,
        stored.as_ref(),
        reply_to_sender,
        sender_name,
    )
    .await;
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

/// The transactional half of [`send`]: the row, the conversation's pointer, notifications and the
/// change log, written by the single writer in its next batch (group commit). Events are
/// published by the writer after the batch commits.
async fn insert_message(
    state: &AppState,
    viewer: Viewer,
    conversation_id: i64,
    new: NewMessage,
    file: Option<&StoredFile>,
    reply_to_sender: Option<i64>,
    sender_name: String,
) -> AppResult<message::Model> {
    let client_id = new.client_message_id;
    let row = message::ActiveModel {
        conversation_id: Set(conversation_id),
        sender_id: Set(Some(viewer.user_id)),
        kind: Set(file.map_or("TEXT", |f| f.kind.as_str()).into()),
        body: Set(new.body.map(|b| b.0)),
        reply_to_id: Set(new.reply_to_id),
        client_message_id: Set(client_id.as_ref().map(|c| c.0.clone())),
        edited_at: Set(None),
        deleted_at: Set(None),
        attachment_key: Set(file.map(|f| f.key.clone())),
        attachment_filename: Set(file.map(|f| f.filename.clone())),
        attachment_content_type: Set(file.map(|f| f.content_type.clone())),
        attachment_size: Set(file.map(|f| f.size)),
        attachment_sha256: Set(file.map(|f| f.sha256.clone())),
        ..Default::default()
    };
    let idempotent = client_id.is_some();
    // Members beyond this many: their collapsed notifications follow the commit (see
    // `notifications::for_new_message`), so the message reaches them without waiting on it.
    let inline_members = state.config.notify_inline_members;
    let written = state
        .writer
        .write(move |txn| {
            // The writer may run this twice (see `writer`): each attempt takes its own copies.
            let row = row.clone();
            let sender_name = sender_name.clone();
            Box::pin(async move {
                let written = if txn.get_database_backend() == sea_orm::DbBackend::Sqlite {
                    write_on_sqlite(txn, row)
                        .await
                        .map(|(message, members, logged)| (message, Some(members), Some(logged)))
                } else {
                    // PostgreSQL reads the members after the bump (`recipients` below): a
                    // subquery in it would read from a snapshot taken before it waited for the
                    // row lock.
                    let (seq, at) = next_seq(txn, conversation_id).await?;
                    let mut row = row;
                    row.seq = Set(seq);
                    row.created_at = Set(at);
                    row.insert(txn)
                        .await
                        .map(|message| (message, None, None))
                        .map_err(AppError::from)
                };
                // A retry queued beside its first attempt (in the same batch, or committing
                // meanwhile) is refused by the unique index on (sender, client message id), and
                // answered below with the message the first attempt made.
                let (message, members, logged) = match written {
                    Ok(written) => written,
                    Err(AppError::Database(err)) if idempotent && is_unique_violation(&err) => {
                        return Err(AppError::Conflict(DUPLICATE_SEND.into()));
                    }
                    Err(err) => return Err(err),
                };
                // The conversation's `last_message_id` follows by trigger (migration 000009).
                let recipients = match members {
                    Some(members) => members,
                    None => recipients(txn, conversation_id, &[]).await?,
                };
                let collapse_now = recipients.len() <= inline_members;
                let notes = notifications::for_new_message(
                    txn,
                    &message,
                    &sender_name,
                    reply_to_sender,
                    collapse_now,
                )
                .await?;
                let logged = match logged {
                    Some(logged) => logged,
                    None => {
                        let seq = message.seq;
                        log_change(txn, MessageChange::Created, message.clone(), seq).await?
                    }
                };
                let mut events = envelopes(vec![logged], recipients);
                events.extend(notifications::envelope(notes));
                Ok(((message, collapse_now), events))
            })
        })
        .await;
    match written {
        Ok((message, collapse_now)) => {
            if !collapse_now {
                notifications::schedule_backlog(state, conversation_id);
            }
            Ok(message)
        }
        Err(AppError::Conflict(reason)) if reason == DUPLICATE_SEND => {
            // A concurrent retry won the race; hand back what it made (the caller removes the
            // file this attempt stored).
            let found = match &client_id {
                Some(cmid) => find_by_client_id(&state.db, viewer.user_id, cmid).await?,
                None => None,
            };
            found.ok_or_else(|| AppError::Internal("idempotent send lost its message".into()))
        }
        Err(err) => Err(err),
    }
}

/// The message columns a send sets, in the order of [`SEND_ON_SQLITE`]'s parameters after `$1`
/// (the time); the last is the conversation.
const SEND_COLUMNS: [message::Column; 11] = {
    use message::Column as C;
    [
        C::SenderId,
        C::Kind,
        C::Body,
        C::ReplyToId,
        C::ClientMessageId,
        C::AttachmentKey,
        C::AttachmentFilename,
        C::AttachmentContentType,
        C::AttachmentSize,
        C::AttachmentSha256,
        C::ConversationId,
    ]
};

/// The command [`write_on_sqlite`] runs, spelled once.
static SEND_ON_SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let names = SEND_COLUMNS
        .iter()
        .map(|column| format!("\"{}\"", column.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let params = (2..=SEND_COLUMNS.len() + 1)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = $1 WHERE id = {c} \
         RETURNING (SELECT group_concat(user_id, ',') FROM members WHERE conversation_id = {c}) \
         AS members;\n\
         INSERT INTO messages (seq, created_at, {names}) \
         SELECT last_seq, $1, {params} FROM conversations WHERE id = {c} RETURNING *;\n\
         INSERT INTO conversation_events (conversation_id, seq, kind, message_id, created_at) \
         SELECT conversation_id, seq, '{kind}', id, $1 FROM messages WHERE conversation_id = {c} \
         AND seq = (SELECT last_seq FROM conversations WHERE id = {c}) RETURNING id AS event_id",
        c = format_args!("${}", SEND_COLUMNS.len() + 1),
        kind = MessageChange::Created.as_str(),
    )
});

/// The writes of a send on SQLite, as one hand-over to the database thread: the sequence bump, the
/// message and its change-log entry. Each statement on SQLite is a trip to sqlx's database thread
/// and back, and sends are the hot path. The bump also lists the conversation's members, who are
/// told about the message: the single writer holds the write lock from its batch's first write to
/// its commit, so the list cannot change before the commit. Conversations are never deleted, so
/// the bump finds the one checked before; were it gone, nothing is written and NOT_FOUND returned.
async fn write_on_sqlite(
    txn: &DatabaseTransaction,
    row: message::ActiveModel,
) -> AppResult<(message::Model, Vec<i64>, Logged)> {
    let change = MessageChange::Created;
    let mut values: Vec<sea_orm::Value> = vec![now().into()];
    for column in SEND_COLUMNS {
        let value = row
            .get(column)
            .into_value()
            .ok_or_else(|| AppError::Internal(format!("a send left {} unset", column.as_str())))?;
        values.push(value);
    }
    let text = &*SEND_ON_SQLITE;
    let rows = txn
        .query_all_raw(crate::store::sql(txn, text, values))
        .await?;
    let [bumped, inserted, logged] = rows.as_slice() else {
        return Err(AppError::not_found("conversation"));
    };
    let members: Option<String> = bumped.try_get("", "members")?;
    let message = message::Model::from_query_result(inserted, "")?;
    let logged = Logged {
        // SQLite's single writer commits change-log rows in id order (see `Position`).
        position: Position {
            tx: 0,
            id: logged.try_get("", "event_id")?,
        },
        change,
        message: message.clone(),
    };
    Ok((message, crate::db::id_list(members.as_deref())?, logged))
}

/// What a send into a known conversation learns before it is queued.
struct SendChecks {
    /// The message an earlier attempt with the same client message id made.
    earlier: Option<message::Model>,
    /// The sender's display name, for the notifications' text.
    sender_name: String,
}

/// The checks before a send into a known conversation, in one statement: the sender is a member
/// (else NOT_FOUND, as for a conversation that does not exist), in a direct conversation the other
/// member has not blocked them (else FORBIDDEN), and whether an earlier attempt with the same client
/// message id already made the message. Sends are the hot path; each statement on SQLite is a
/// hand-over to its database thread and back.
async fn check_send(
    db: &impl ConnectionTrait,
    conversation_id: i64,
    sender_id: i64,
    cmid: Option<&ClientMessageId>,
) -> AppResult<SendChecks> {
    let row = db
        .query_one_raw(crate::store::sql(
            db,
            "SELECT c.kind AS kind, u.display_name AS sender_name, \
             (SELECT b.blocker_id FROM blocks b JOIN members o \
                ON o.user_id = b.blocker_id AND o.conversation_id = c.id \
              WHERE b.blocked_id = $2 LIMIT 1) AS blocker, \
             (SELECT m.id FROM messages m \
              WHERE m.sender_id = $2 AND m.client_message_id = $3) AS earlier \
             FROM conversations c \
             JOIN members me ON me.conversation_id = c.id AND me.user_id = $2 \
             JOIN users u ON u.id = $2 \
             WHERE c.id = $1",
            vec![
                conversation_id.into(),
                sender_id.into(),
                cmid.map(|c| c.0.clone()).into(),
            ],
        ))
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    let earlier = match row.try_get::<Option<i64>>("", "earlier")? {
        Some(id) => message::Entity::find_by_id(id).one(db).await?,
        None => None,
    };
    let kind: String = row.try_get("", "kind")?;
    let blocker: Option<i64> = row.try_get("", "blocker")?;
    // A retry of a send that went through gets its message back, blocked since or not.
    if earlier.is_none() && kind == DIRECT && blocker.is_some() {
        return Err(super::blocks::refused_direct());
    }
    Ok(SendChecks {
        earlier,
        sender_name: row.try_get("", "sender_name")?,
    })
}

/// Why the writer refused a send whose client message id was taken meanwhile.
const DUPLICATE_SEND: &str = "a message with this clientMessageId was sent meanwhile";

async fn find_by_client_id(
    db: &impl ConnectionTrait,
    sender_id: i64,
    cmid: &ClientMessageId,
) -> AppResult<Option<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::SenderId.eq(sender_id))
        .filter(message::Column::ClientMessageId.eq(cmid.0.as_str()))
        .one(db)
        .await?)
}

/// Commits, then tells the conversation's members (as they are at commit, so a member removed in
/// this transaction is left out unless named in `also`) about each logged change, in order.
pub(crate) async fn commit_and_publish_all(
    state: &AppState,
    txn: DatabaseTransaction,
    conversation_id: i64,
    logged: Vec<Logged>,
    also: &[i64],
) -> AppResult<()> {
    let recipients = recipients(&txn, conversation_id, also).await?;
    txn.commit().await?;
    for envelope in envelopes(logged, recipients) {
        state.bus.publish(envelope).await;
    }
    Ok(())
}

/// Records the change in the log under `seq`, commits, then tells the conversation's members.
async fn commit_and_publish(
    state: &AppState,
    txn: DatabaseTransaction,
    change: MessageChange,
    message: message::Model,
    seq: i64,
) -> AppResult<message::Model> {
    let conversation_id = message.conversation_id;
    let logged = log_change(&txn, change, message.clone(), seq).await?;
    commit_and_publish_all(state, txn, conversation_id, vec![logged], &[]).await?;
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
    let (seq, _) = next_seq(&txn, message.conversation_id).await?;
    let mut active: message::ActiveModel = message.into();
    active.body = Set(Some(body.0));
    active.edited_at = Set(Some(now()));
    let message = active.update(&txn).await?;
    let target = Some(crate::ids::encode(crate::ids::Kind::Message, message.id).0);
    super::audit::record(&txn, Some(viewer.user_id), "message.edited", target, None).await?;
    commit_and_publish(state, txn, MessageChange::Edited, message, seq).await
}

/// Soft-deletes a message: the row stays, its content is hidden. The sender may; in a room, so may
/// a moderator (see `rooms::authorize_moderation`). Deleting again changes nothing.
pub async fn delete(
    state: &AppState,
    viewer: Viewer,
    message_id: i64,
) -> AppResult<message::Model> {
    let db = &state.db;
    let message = message::Entity::find_by_id(message_id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::not_found("message"))?;
    let (conversation, member) =
        conversations::require_member(db, message.conversation_id, viewer.user_id)
            .await
            .map_err(|_| AppError::not_found("message"))?;
    if message.sender_id != Some(viewer.user_id) {
        super::rooms::authorize_moderation(&conversation, &member, &message)?;
    }
    if message.deleted_at.is_some() {
        return Ok(message);
    }
    let txn = db::begin_write(db).await?;
    let (seq, _) = next_seq(&txn, message.conversation_id).await?;
    let mut active: message::ActiveModel = message.into();
    active.deleted_at = Set(Some(now()));
    // A deleted message keeps no reactions and no pin.
    active.pinned_at = Set(None);
    active.pinned_by_id = Set(None);
    let message = active.update(&txn).await?;
    crate::store::reactions::clear(&txn, message.id).await?;
    let target = Some(crate::ids::encode(crate::ids::Kind::Message, message.id).0);
    let detail = (message.sender_id != Some(viewer.user_id)).then(|| "by a moderator".to_owned());
    super::audit::record(
        &txn,
        Some(viewer.user_id),
        "message.deleted",
        target,
        detail,
    )
    .await?;
    let message = commit_and_publish(state, txn, MessageChange::Deleted, message, seq).await?;
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
    let mut rows = db::all_rows(db, query).await?;
    // `all_rows` does not keep the order.
    match request.direction {
        Direction::Forward => rows.sort_unstable_by_key(|m| m.seq),
        Direction::Backward => rows.sort_unstable_by_key(|m| std::cmp::Reverse(m.seq)),
    }
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

/// The largest change-log id, for cursors from before positions had a transaction part.
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

/// Change-log rows after `after` in log order: `(tx, id) > (after.tx, after.id)`.
fn after_position(after: Position) -> Condition {
    use conversation_event::Column as C;
    Condition::any().add(C::Tx.gt(after.tx)).add(
        Condition::all()
            .add(C::Tx.eq(after.tx))
            .add(C::Id.gt(after.id)),
    )
}

/// The positions of up to `limit` committed changes after `after`, settled or not, in log order.
pub async fn positions_after(
    db: &DatabaseConnection,
    after: Position,
    limit: u64,
) -> AppResult<Vec<Position>> {
    use conversation_event::Column as C;
    Ok(conversation_event::Entity::find()
        .select_only()
        .column(C::Tx)
        .column(C::Id)
        .filter(after_position(after))
        .order_by_asc(C::Tx)
        .order_by_asc(C::Id)
        .limit(limit)
        .into_tuple::<(i64, i64)>()
        .all(db)
        .await?
        .into_iter()
        .map(|(tx, id)| Position { tx, id })
        .collect())
}

/// The rows of the change log after `after`, in log order, that no transaction still running can
/// precede: on PostgreSQL, those written by transactions older than the oldest one still running
/// (`pg_snapshot_xmin` of the statement's own snapshot). Every transaction that may yet commit has
/// an id at least that old one's, so a row below it can never be joined later by one before it:
/// a reader that hands out positions only from here never skips a change that commits later. On
/// SQLite one writer at a time commits, in id order, and every committed row may be read.
fn settled_after(
    db: &impl ConnectionTrait,
    after: Position,
) -> sea_orm::Select<conversation_event::Entity> {
    use conversation_event::Column as C;
    let query = conversation_event::Entity::find()
        .filter(after_position(after))
        .order_by_asc(C::Tx)
        .order_by_asc(C::Id);
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => query.filter(Expr::cust(
            "\"conversation_events\".\"tx\" < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
        )),
        _ => query,
    }
}

/// The position of the last settled change (see [`settled_after`]), from which a live
/// subscription starts.
pub async fn latest_position(db: &DatabaseConnection) -> AppResult<Position> {
    use conversation_event::Column as C;
    let query = settled_after(db, Position::default())
        .select_only()
        .column(C::Tx)
        .column(C::Id);
    // `settled_after` orders ascending; the last one is wanted.
    let mut query = QueryTrait::into_query(query);
    query
        .clear_order_by()
        .order_by(C::Tx, sea_orm::Order::Desc)
        .order_by(C::Id, sea_orm::Order::Desc)
        .limit(1);
    let row = db.query_one(&query).await?;
    Ok(match row {
        Some(row) => Position {
            tx: row.try_get("", C::Tx.as_str())?,
            id: row.try_get("", C::Id.as_str())?,
        },
        None => Position::default(),
    })
}

/// On PostgreSQL, the largest transaction id in the change log and the next one this cluster
/// gives out, when the first is not below the second: the log was written by another cluster (a
/// dump restored here), and new changes would take positions before old ones.
pub async fn positions_from_elsewhere(db: &DatabaseConnection) -> AppResult<Option<(i64, i64)>> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(None);
    }
    // `pg_snapshot_xmax` is the next transaction id to be given out; reading it takes none.
    let row = db
        .query_one_raw(crate::store::sql(
            db,
            "SELECT (SELECT max(tx) FROM conversation_events) AS logged, \
             pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next",
            vec![],
        ))
        .await?
        .ok_or_else(|| AppError::Internal("no answer reading transaction ids".into()))?;
    let logged: Option<i64> = row.try_get("", "logged")?;
    let next: i64 = row.try_get("", "next")?;
    Ok(logged
        .filter(|logged| *logged >= next)
        .map(|logged| (logged, next)))
}

/// Up to `limit` logged changes after `after`, in log order, in the given conversation or in
/// any, each with the message as it is now. Only changes the user may see are returned: those of
/// conversations the user belongs to now, and the message about the user's own removal or
/// departure (the last thing a former member is told).
pub async fn events_after(
    db: &DatabaseConnection,
    user_id: i64,
    conversation_id: Option<i64>,
    after: Position,
    limit: u64,
) -> AppResult<Vec<(conversation_event::Model, message::Model)>> {
    let mut query = settled_after(db, after)
        .filter(
            Condition::any()
                .add(
                    conversation_event::Column::ConversationId.in_subquery(
                        sea_orm::sea_query::Query::select()
                            .column(entity::member::Column::ConversationId)
                            .from(entity::member::Entity)
                            .and_where(entity::member::Column::UserId.eq(user_id))
                            .to_owned(),
                    ),
                )
                .add(
                    conversation_event::Column::MessageId.in_subquery(
                        sea_orm::sea_query::Query::select()
                            .column(message::Column::Id)
                            .from(message::Entity)
                            .and_where(message::Column::SystemTargetId.eq(user_id))
                            .and_where(
                                message::Column::SystemKind
                                    .is_in(SystemKind::DEPARTURES.map(|k| k.as_str())),
                            )
                            .to_owned(),
                    ),
                ),
        )
        .limit(limit);
    if let Some(id) = conversation_id {
        query = query.filter(conversation_event::Column::ConversationId.eq(id));
    }
    with_messages(db, query).await
}

/// Each change-log row a query selects with its message as it is now, in one statement (rows
/// whose message is gone are left out).
async fn with_messages(
    db: &DatabaseConnection,
    query: sea_orm::Select<conversation_event::Entity>,
) -> AppResult<Vec<(conversation_event::Model, message::Model)>> {
    Ok(query
        .find_also_related(message::Entity)
        .all(db)
        .await?
        .into_iter()
        .filter_map(|(event, message)| Some((event, message?)))
        .collect())
}

/// What one read of the settled log gave: the events, and how far it read (rows whose message
/// is gone or whose kind is unknown give no event, but are read past all the same).
pub struct LogBatch {
    pub events: Vec<Envelope>,
    /// How many rows were read (a full batch means there may be more).
    pub read: u64,
    /// The position of the last row read.
    pub last: Option<Position>,
}

/// Up to `limit` settled changes after `after`, in log order, each as the event its recipients
/// receive: the conversation's members now, and for a removal or departure the user it concerns
/// (as [`events_after`] would replay them to each); a user whose removal or departure comes later
/// in the same batch still receives the conversation's changes before it, as they would have had
/// the batch been read sooner. Two statements for the whole batch.
pub async fn log_after(
    db: &DatabaseConnection,
    after: Position,
    limit: u64,
) -> AppResult<LogBatch> {
    let rows = settled_after(db, after)
        .limit(limit)
        .find_also_related(message::Entity)
        .all(db)
        .await?;
    let read = rows.len() as u64;
    let last = rows.last().map(|(event, _)| Position {
        tx: event.tx,
        id: event.id,
    });
    let rows: Vec<(conversation_event::Model, message::Model)> = rows
        .into_iter()
        .filter_map(|(event, message)| Some((event, message?)))
        .collect();
    if rows.is_empty() {
        return Ok(LogBatch {
            events: Vec::new(),
            read,
            last,
        });
    }
    let mut conversation_ids: Vec<i64> = rows.iter().map(|(e, _)| e.conversation_id).collect();
    conversation_ids.sort_unstable();
    conversation_ids.dedup();
    let mut members: HashMap<i64, Vec<i64>> = HashMap::new();
    for (conversation_id, user_id) in entity::member::Entity::find()
        .select_only()
        .column(entity::member::Column::ConversationId)
        .column(entity::member::Column::UserId)
        .filter(entity::member::Column::ConversationId.is_in(conversation_ids))
        .into_tuple::<(i64, i64)>()
        .all(db)
        .await?
    {
        members.entry(conversation_id).or_default().push(user_id);
    }
    let departures = SystemKind::DEPARTURES.map(|k| k.as_str());
    // Newest first, so that each change knows who leaves its conversation after it.
    let mut leaving_later: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut events: Vec<Envelope> = rows
        .into_iter()
        .rev()
        .filter_map(|(event, message)| {
            let change = MessageChange::parse(&event.kind)?;
            let mut recipients = members
                .get(&event.conversation_id)
                .cloned()
                .unwrap_or_default();
            let later = leaving_later.entry(event.conversation_id).or_default();
            recipients.extend_from_slice(later);
            if let (Some(target), Some(kind)) = (message.system_target_id, &message.system_kind)
                && departures.contains(&kind.as_str())
            {
                recipients.push(target);
                later.push(target);
            }
            Some(Envelope::new(
                recipients,
                Event::Message {
                    position: Position {
                        tx: event.tx,
                        id: event.id,
                    },
                    change,
                    message: Arc::new(message),
                },
            ))
        })
        .collect();
    events.reverse();
    Ok(LogBatch { events, read, last })
}
