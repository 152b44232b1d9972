//! Messages: send (idempotent with a client message id), edit, soft delete, history pages, and the
//! durable change log that subscriptions replay from.
use entity::message;

use super::{Chat, conversations, model::DIRECT, notifications};
pub use crate::store::messages::{
    Listed, LogBatch, by_ids, events_after, latest_event_id, latest_position, log_after, page,
    positions_after, positions_from_elsewhere,
};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult, is_unique_violation},
    events::MessageChange,
    files::{StoredFile, ValidFile},
    ids,
    store::{
        self, Reads, Txn,
        changes::{envelopes, log_change, next_seq, recipients},
        messages::{Draft, DraftFile},
    },
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
    /// The root of the thread to reply in.
    pub thread_root_id: Option<i64>,
    pub client_message_id: Option<ClientMessageId>,
}

/// Sends a message. A retry with the same client message id returns the first message and creates
/// nothing (and stores no file).
///
/// A file is stored only once every check has passed, just before the transaction; if the
/// transaction fails its object is deleted again (see `files` for what a crash in between leaves).
pub async fn send(chat: &Chat, viewer: Viewer, mut new: NewMessage) -> AppResult<message::Model> {
    let db = &chat.store;
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
                && let Some(existing) =
                    store::messages::by_client_id(db, viewer.user_id, &cmid.0).await?
            {
                return Ok(existing);
            }
            if crate::store::users::find(db.reader(), user_id)
                .await?
                .is_none()
            {
                return Err(AppError::not_found("user"));
            }
            super::blocks::ensure_not_blocked(db.reader(), user_id, viewer.user_id).await?;
            let sender = crate::store::users::find(db.reader(), viewer.user_id)
                .await?
                .ok_or_else(|| AppError::not_found("user"))?;
            let direct = conversations::get_or_create_direct(chat, viewer.user_id, user_id).await?;
            (direct.id, sender.display_name)
        }
    };
    let mut reply_to_sender = None;
    if let Some(reply_to) = new.reply_to_id {
        match store::messages::find(db, reply_to).await? {
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

    if let Some(root) = new.thread_root_id {
        check_thread_root(db, root, conversation_id).await?;
    }

    let stored = match new.file.take() {
        Some(file) => Some(chat.files.put(file).await?),
        None => None,
    };
    let result = insert_message(
        chat,
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
            chat.files.remove(&file.key).await;
        }
    }
    result
}

/// The transaction a send's further writes go in: there is one unless the store wrote the send
/// whole in one statement, which it does only when nothing more is left to write (see
/// `store::messages::write_send`).
fn in_transaction(txn: Option<&Txn>) -> AppResult<&Txn> {
    txn.ok_or_else(|| AppError::Internal("a send written whole had more to write".into()))
}

/// The transactional half of [`send`]: the row, the conversation's pointer, notifications and the
/// change log, written in one write (on SQLite, in the single writer's next batch: group commit).
/// Events are published after the commit.
async fn insert_message(
    chat: &Chat,
    viewer: Viewer,
    conversation_id: i64,
    new: NewMessage,
    file: Option<&StoredFile>,
    reply_to_sender: Option<i64>,
    sender_name: String,
) -> AppResult<message::Model> {
    let client_id = new.client_message_id;
    let mut draft = Draft {
        conversation_id,
        sender_id: viewer.user_id,
        kind: file.map_or("TEXT", |f| f.kind.as_str()).into(),
        body: new.body.map(|b| b.0),
        reply_to_id: new.reply_to_id,
        thread_root_id: new.thread_root_id,
        client_message_id: client_id.as_ref().map(|c| c.0.clone()),
        attachment: file.map(|f| DraftFile {
            key: f.key.clone(),
            filename: f.filename.clone(),
            content_type: f.content_type.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
        }),
        collapsed: None,
    };
    let idempotent = client_id.is_some();
    // Members beyond this many: their collapsed notifications follow the commit (see
    // `notifications::for_new_message`), so the message reaches them without waiting on it.
    let inline_members = chat.settings.notify_inline_members;
    draft.collapsed =
        notifications::undirected(&draft, &sender_name, reply_to_sender, inline_members);
    let store = chat.store.clone();
    let (conversation, root) = (draft.conversation_id, draft.thread_root_id);
    let written = store::messages::write_send(&chat.store, draft, move |txn, sent| {
        let sender_name = sender_name.clone();
        let store = store.clone();
        Box::pin(async move {
            // A retry queued beside its first attempt (in the same batch, or committing
            // meanwhile) is refused by the unique index on (sender, client message id), and
            // answered below with the message the first attempt made.
            let mut sent = match sent {
                Ok(Some(sent)) => sent,
                // Refused under the conversation's lock, having written nothing: the root went
                // (say how), or the sender left, answered as for a conversation they are not in.
                Ok(None) => {
                    if let Some(root) = root {
                        check_thread_root(&store, root, conversation).await?;
                    }
                    return Err(AppError::not_found("conversation"));
                }
                Err(AppError::Database(err)) if idempotent && is_unique_violation(&err) => {
                    return Err(AppError::Conflict(DUPLICATE_SEND.into()));
                }
                Err(err) => return Err(err),
            };
            // Checked again under the conversation's lock, which a delete takes too: a root
            // deleted since the check before the write refuses the reply (rolling it back).
            if let Some(root) = root
                && !sent.root_checked
            {
                check_thread_root(in_transaction(txn)?, root, conversation).await?;
            }
            let (notes, collapse_now) = match sent.notified.take() {
                // The write made them (a message directed at no one).
                Some(notified) => (notified.rows, notified.inline),
                None => {
                    // A reply in a thread notifies the thread's participants (and whom it
                    // mentions or answers), not every member: it makes no collapsed rows, now
                    // or later.
                    let in_thread = sent.message.thread_root_id.is_some();
                    let collapse_now = in_thread || sent.recipients.len() <= inline_members;
                    let notes = notifications::for_new_message(
                        in_transaction(txn)?,
                        &sent.message,
                        &sender_name,
                        reply_to_sender,
                        collapse_now,
                    )
                    .await?;
                    (notes, collapse_now)
                }
            };
            let message = sent.message;
            let mut events = envelopes(vec![sent.logged], sent.recipients);
            events.extend(notifications::envelope(notes));
            Ok(((message, collapse_now), events))
        })
    })
    .await;
    match written {
        Ok((message, collapse_now)) => {
            if !collapse_now {
                notifications::schedule_backlog(chat, conversation_id);
            }
            Ok(message)
        }
        Err(AppError::Conflict(reason)) if reason == DUPLICATE_SEND => {
            // A concurrent retry won the race; hand back what it made (the caller removes the
            // file this attempt stored).
            let found = match &client_id {
                Some(cmid) => {
                    store::messages::by_client_id(&chat.store, viewer.user_id, &cmid.0).await?
                }
                None => None,
            };
            found.ok_or_else(|| AppError::Internal("idempotent send lost its message".into()))
        }
        Err(err) => Err(err),
    }
}

/// Checks that a reply may go into the thread of `root`: a standing message of the same
/// conversation, written by someone (not the server), and no reply in a thread itself (threads
/// are one level deep). Anything else is BAD_USER_INPUT, as a `replyToId` elsewhere is.
async fn check_thread_root(db: &impl Reads, root: i64, conversation_id: i64) -> AppResult<()> {
    let root = match store::messages::find(db, root).await? {
        Some(root) if root.conversation_id == conversation_id => root,
        _ => {
            return Err(AppError::bad_input(
                "threadRootId must name a message in the same conversation",
            ));
        }
    };
    if root.thread_root_id.is_some() {
        return Err(AppError::bad_input(
            "threadRootId names a reply in a thread; threads are one level deep: reply in its root's thread",
        ));
    }
    if root.sender_id.is_none() {
        return Err(AppError::bad_input(
            "threadRootId names a system message, which has no thread",
        ));
    }
    if root.deleted_at.is_some() {
        return Err(AppError::bad_input(
            "threadRootId names a deleted message; its thread takes no more replies",
        ));
    }
    Ok(())
}

/// What a send into a known conversation learns before it is queued.
struct SendChecks {
    /// The message an earlier attempt with the same client message id made.
    earlier: Option<message::Model>,
    /// The sender's display name, for the notifications' text.
    sender_name: String,
}

/// The checks before a send into a known conversation, read in one statement: the sender is a
/// member (else NOT_FOUND, as for a conversation that does not exist), in a direct conversation
/// the other member has not blocked them (else FORBIDDEN), and whether an earlier attempt with
/// the same client message id already made the message.
async fn check_send(
    db: &impl Reads,
    conversation_id: i64,
    sender_id: i64,
    cmid: Option<&ClientMessageId>,
) -> AppResult<SendChecks> {
    let facts =
        store::messages::send_facts(db, conversation_id, sender_id, cmid.map(|c| c.0.as_str()))
            .await?
            .ok_or_else(|| AppError::not_found("conversation"))?;
    // A retry of a send that went through gets its message back, blocked since or not.
    if facts.earlier.is_none() && facts.kind == DIRECT && facts.blocker.is_some() {
        return Err(super::blocks::refused_direct());
    }
    Ok(SendChecks {
        earlier: facts.earlier,
        sender_name: facts.sender_name,
    })
}

/// Why the writer refused a send whose client message id was taken meanwhile.
const DUPLICATE_SEND: &str = "a message with this clientMessageId was sent meanwhile";

/// Loads a message the user may see, or NOT_FOUND.
pub async fn visible_message(
    db: &impl Reads,
    user_id: i64,
    message_id: i64,
) -> AppResult<message::Model> {
    let message = store::messages::find(db, message_id)
        .await?
        .ok_or_else(|| AppError::not_found("message"))?;
    conversations::require_member(db, message.conversation_id, user_id)
        .await
        .map_err(|_| AppError::not_found("message"))?;
    Ok(message)
}

/// What an edit or a delete changes in a message, inside its write.
#[derive(Clone)]
enum Change {
    Edit(String),
    Delete,
}

/// Changes a message in one write: takes the conversation's next sequence number (serialising
/// the change with every other change to the conversation), applies the change to the message as
/// it is under that lock, records it in the audit log and the change log, and tells the members
/// after the commit. `check` runs on the message as locked; it may refuse the change, or answer
/// `false` for nothing to do (the message is returned as it is, and nothing is written).
async fn change_message(
    chat: &Chat,
    actor_id: i64,
    conversation_id: i64,
    message_id: i64,
    change: Change,
    check: fn(&message::Model) -> AppResult<bool>,
) -> AppResult<message::Model> {
    chat.store
        .write(move |txn| {
            let change = change.clone();
            Box::pin(async move {
                let (seq, at) = next_seq(txn, conversation_id).await?;
                // Read again under the conversation's lock: a change that committed meanwhile
                // is seen.
                let message = store::messages::find(txn, message_id)
                    .await?
                    .ok_or_else(|| AppError::not_found("message"))?;
                if !check(&message)? {
                    // Refusing rolls back the sequence number taken above.
                    return Err(AppError::Conflict(UNCHANGED.into()));
                }
                let target = Some(ids::public_id(ids::Kind::Message, message.id));
                let (kind, message, action, detail) = match change {
                    Change::Edit(body) => (
                        MessageChange::Edited,
                        store::messages::set_body(txn, message, body, at).await?,
                        "message.edited",
                        None,
                    ),
                    Change::Delete => {
                        let by_moderator = message.sender_id != Some(actor_id);
                        (
                            MessageChange::Deleted,
                            store::messages::set_deleted(txn, message, at).await?,
                            "message.deleted",
                            by_moderator.then(|| "by a moderator".to_owned()),
                        )
                    }
                };
                super::audit::record(txn, Some(actor_id), action, target, detail).await?;
                let logged = log_change(txn, kind, message.clone(), seq).await?;
                let recipients = recipients(txn, conversation_id, &[]).await?;
                Ok((message, envelopes(vec![logged], recipients)))
            })
        })
        .await
}

/// Why [`change_message`]'s check found nothing to change.
const UNCHANGED: &str = "the message is already as asked";

/// Replaces a message's body. Sender only; a deleted message cannot be edited.
pub async fn edit(
    chat: &Chat,
    viewer: Viewer,
    message_id: i64,
    body: MessageBody,
) -> AppResult<message::Model> {
    let message = visible_message(&chat.store, viewer.user_id, message_id).await?;
    if message.sender_id != Some(viewer.user_id) {
        return Err(AppError::Forbidden(
            "only the sender may edit a message".into(),
        ));
    }
    if message.deleted_at.is_some() {
        return Err(AppError::bad_input("a deleted message cannot be edited"));
    }
    change_message(
        chat,
        viewer.user_id,
        message.conversation_id,
        message_id,
        Change::Edit(body.0),
        |locked| {
            if locked.deleted_at.is_some() {
                return Err(AppError::bad_input("a deleted message cannot be edited"));
            }
            Ok(true)
        },
    )
    .await
}

/// Soft-deletes a message: the row stays, its content is hidden. The sender may; in a room, so may
/// a moderator (see `rooms::authorize_moderation`). Deleting again changes nothing.
pub async fn delete(chat: &Chat, viewer: Viewer, message_id: i64) -> AppResult<message::Model> {
    let db = &chat.store;
    let message = store::messages::find(db, message_id)
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
    let deleted = change_message(
        chat,
        viewer.user_id,
        message.conversation_id,
        message_id,
        Change::Delete,
        |locked| Ok(locked.deleted_at.is_none()),
    )
    .await;
    let message = match deleted {
        Ok(message) => message,
        // Deleted meanwhile: as deleting again, nothing changes (and the file is gone already).
        Err(AppError::Conflict(reason)) if reason == UNCHANGED => {
            return store::messages::find(db, message_id)
                .await?
                .ok_or_else(|| AppError::not_found("message"));
        }
        Err(err) => return Err(err),
    };
    // Only after the commit: were the delete rolled back, the file would still be needed. If this
    // fails, the orphan sweep removes it (it spares only objects of live messages).
    if let Some(key) = &message.attachment_key {
        chat.files.remove(key).await;
    }
    Ok(message)
}
