//! Notifications: made for every member but the sender, in the same transaction as the message that
//! causes them (in big rooms, the collapsed ones just after it: see [`work_off_backlog`]). To keep
//! the volume bounded, a member's unread MESSAGE/FILE notifications for one conversation collapse
//! into a single row that counts them; mentions and replies stay one row each.
use std::collections::HashSet;

use entity::{message, notification};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Chat, conversations, model::now};
pub use crate::store::notifications::{
    changed_after, list, newest_position, own_by_ids, unread_count,
};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::{Envelope, Event},
    lock,
    store::{
        self, Txn,
        messages::{Collapsed, Draft},
        notifications::{Audience, Bump},
    },
};

/// Why a notification was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationKind {
    Message,
    File,
    Reply,
    Mention,
    ThreadReply,
    RoomAdded,
    RoomRemoved,
}

impl NotificationKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Message => "MESSAGE",
            NotificationKind::File => "FILE",
            NotificationKind::Reply => "REPLY",
            NotificationKind::Mention => "MENTION",
            NotificationKind::ThreadReply => "THREAD_REPLY",
            NotificationKind::RoomAdded => "ROOM_ADDED",
            NotificationKind::RoomRemoved => "ROOM_REMOVED",
        }
    }
}

/// The usernames (case-folded) that a body mentions as `@name`.
pub fn mentions(body: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find('@') {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + 1..];
        // `a@b` is an address, not a mention.
        if before.is_some_and(|c| c.is_alphanumeric()) {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            .collect();
        let name = name.trim_end_matches(['.', '-']).to_ascii_lowercase();
        if (3..=32).contains(&name.len()) && !found.contains(&name) {
            found.push(name);
        }
    }
    found.truncate(50);
    found
}

fn preview(sender: &str, message: &message::Model) -> String {
    preview_of(sender, message.body.as_deref())
}

fn preview_of(sender: &str, body: Option<&str>) -> String {
    let body = body.unwrap_or("sent a file");
    let mut text: String = body.chars().take(120).collect();
    if body.chars().count() > 120 {
        text.push('…');
    }
    format!("{sender}: {text}")
}

/// The collapsed row's kind for a message: MESSAGE for text, FILE for anything with a file.
fn collapsed_kind(message: &message::Model) -> NotificationKind {
    kind_collapsed_as(&message.kind)
}

fn kind_collapsed_as(message_kind: &str) -> NotificationKind {
    if message_kind == "TEXT" {
        NotificationKind::Message
    } else {
        NotificationKind::File
    }
}

/// The notifications of a new message directed at no one: it mentions no one, answers no one but
/// its sender, and is in no thread. Every other member's collapsed row counts it, or, in a room
/// of more than `inline_members`, the backlog takes it; [`for_new_message`] would make exactly
/// these, and the store may make them in the send's own statement (PostgreSQL does). None for a
/// directed message, whose rules need the written message.
pub fn undirected(
    draft: &Draft,
    sender_name: &str,
    reply_to_sender: Option<i64>,
    inline_members: usize,
) -> Option<Collapsed> {
    let body = draft.body.as_deref();
    let directed = draft.thread_root_id.is_some()
        || reply_to_sender.is_some_and(|author| author != draft.sender_id)
        || !mentions(body.unwrap_or_default()).is_empty();
    (!directed).then(|| Collapsed {
        kind: kind_collapsed_as(&draft.kind).as_str(),
        text: preview_of(sender_name, body),
        inline_members,
    })
}

/// Makes the notifications for a new message inside its transaction and returns them, to be
/// published after commit: its mentions and reply first, then every other member's collapsed
/// MESSAGE/FILE row. With `collapse_now` false (a big room) the collapsed rows are left to
/// [`work_off_backlog`], which runs after the commit: the message is written to the backlog
/// instead, in this transaction, so that nothing is lost if the server stops in between.
pub async fn for_new_message(
    txn: &Txn,
    message: &message::Model,
    sender_name: &str,
    reply_to_sender: Option<i64>,
    collapse_now: bool,
) -> AppResult<Vec<notification::Model>> {
    let Some(sender_id) = message.sender_id else {
        return Ok(Vec::new());
    };
    let text = preview(sender_name, message);
    let directed = directed(txn, message, sender_id, &text, reply_to_sender).await?;
    if message.thread_root_id.is_some() {
        // A reply in a thread makes no collapsed rows: only whom it is directed at hear of it.
        if directed.is_empty() {
            return Ok(Vec::new());
        }
        return store::notifications::made_for(txn, message.id).await;
    }
    if collapse_now {
        let mut excluded = vec![sender_id];
        excluded.extend(directed);
        return Bump::new(
            message,
            collapsed_kind(message).as_str(),
            &text,
            1,
            message.created_at,
            Audience::AllBut(&excluded),
        )
        .run_and_read_back(txn)
        .await;
    }
    store::notifications::insert_backlog(txn, message.conversation_id, message.seq).await?;
    if directed.is_empty() {
        return Ok(Vec::new());
    }
    store::notifications::made_for(txn, message.id).await
}

/// Makes the notifications a message directs at someone, one each: mentions of members, then
/// the author of the message replied to, then, for a reply in a thread, the thread's participants
/// (see [`store::threads::participants_to_notify`]), whose unread THREAD_REPLY row for the thread
/// collapses it. Returns who got one.
async fn directed(
    txn: &Txn,
    message: &message::Model,
    sender_id: i64,
    text: &str,
    reply_to_sender: Option<i64>,
) -> AppResult<Vec<i64>> {
    let names = mentions(message.body.as_deref().unwrap_or_default());
    let mut directed: Vec<(i64, &'static str)> = Vec::new();
    if !names.is_empty() {
        let mentioned =
            store::notifications::members_named(txn, message.conversation_id, names).await?;
        directed.extend(
            mentioned
                .into_iter()
                .filter(|id| *id != sender_id)
                .map(|id| (id, NotificationKind::Mention.as_str())),
        );
    }
    if let Some(author) = reply_to_sender
        && author != sender_id
        && !directed.iter().any(|(id, _)| *id == author)
        && conversations::require_member(txn, message.conversation_id, author)
            .await
            .is_ok()
    {
        directed.push((author, NotificationKind::Reply.as_str()));
    }
    let mut participants = Vec::new();
    if let Some(root) = message.thread_root_id {
        participants = store::threads::participants_to_notify(txn, root, sender_id).await?;
        participants.retain(|participant| !directed.iter().any(|(id, _)| id == participant));
    }
    if !participants.is_empty() {
        // One unread THREAD_REPLY row per thread and participant: a later reply moves it on and
        // counts, as unread messages collapse per conversation.
        let bumped =
            store::notifications::bump_thread_replies(txn, message, sender_id, text, &participants)
                .await?;
        directed.extend(
            participants
                .iter()
                .filter(|id| !bumped.contains(id))
                .map(|id| (*id, NotificationKind::ThreadReply.as_str())),
        );
    }
    if !directed.is_empty() {
        store::notifications::insert_directed(
            txn,
            message,
            sender_id,
            text,
            &directed,
            message.created_at,
        )
        .await?;
    }
    let mut told: Vec<i64> = directed.into_iter().map(|(id, _)| id).collect();
    told.extend(participants);
    told.sort_unstable();
    told.dedup();
    Ok(told)
}

/// Makes the collapsed notifications of a conversation's messages in the backlog, all at once, and
/// returns the rows made or updated, to publish after commit. Each member's row counts the
/// messages that neither they sent nor were mentioned or replied to in, and shows the last of
/// them. Several instances may work the same backlog: each message is claimed by one.
pub async fn work_off_backlog(
    txn: &Txn,
    conversation_id: i64,
) -> AppResult<Vec<notification::Model>> {
    let claimed = store::notifications::claim_backlog(txn, conversation_id).await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let sent = store::notifications::sent_messages(txn, conversation_id, claimed).await?;
    let ids: Vec<i64> = sent.iter().map(|m| m.id).collect();
    let senders: Vec<i64> = sent.iter().filter_map(|m| m.sender_id).collect();
    let names = store::notifications::display_names(txn, senders).await?;
    let directed = store::notifications::directed_at(txn, ids).await?;
    // Who each message leaves out of its bump: its sender, and those it was directed at.
    let left_out: Vec<Vec<i64>> = sent
        .iter()
        .map(|m| {
            let mut out: Vec<i64> = m.sender_id.into_iter().collect();
            out.extend(
                directed
                    .iter()
                    .filter(|(message_id, _)| *message_id == Some(m.id))
                    .map(|(_, user_id)| *user_id),
            );
            out
        })
        .collect();
    let text = |m: &message::Model| {
        let name = m
            .sender_id
            .and_then(|id| names.get(&id))
            .map_or("", String::as_str);
        preview(name, m)
    };
    let mut everyone_but: Vec<i64> = left_out.iter().flatten().copied().collect();
    everyone_but.sort_unstable();
    everyone_but.dedup();
    // Updated now, not when the messages were sent: a `notifications(since)` resume reads by
    // update time, and rows made with later messages (their mentions) may have committed already.
    let at = now();
    let mut latest = Vec::new();
    if let Some(last) = sent.last() {
        // Everyone left out of none: every message, the last one shown.
        Bump::new(
            last,
            collapsed_kind(last).as_str(),
            &text(last),
            sent.len() as i64,
            at,
            Audience::AllBut(&everyone_but),
        )
        .run(txn)
        .await?;
        latest.push(last.id);
    }
    // Everyone left out of some: the others.
    for &user_id in &everyone_but {
        let theirs: Vec<&message::Model> = sent
            .iter()
            .zip(&left_out)
            .filter(|(_, out)| !out.contains(&user_id))
            .map(|(m, _)| m)
            .collect();
        if let Some(last) = theirs.last() {
            Bump::new(
                last,
                collapsed_kind(last).as_str(),
                &text(last),
                theirs.len() as i64,
                at,
                Audience::Only(user_id),
            )
            .run(txn)
            .await?;
            latest.push(last.id);
        }
    }
    latest.sort_unstable();
    latest.dedup();
    store::notifications::collapsed_showing(txn, conversation_id, latest).await
}

/// Big rooms' notification backlog, worked off after the sends that fill it, in the background.
pub struct Backlog {
    /// Conversations whose backlog is already queued for the writer.
    waiting: std::sync::Mutex<HashSet<i64>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Backlog {
    /// Works off backlogs on `tasks`, abandoning the work at `shutdown` (the backlog stays in the
    /// database; the next start takes it).
    pub fn new(tasks: TaskTracker, shutdown: CancellationToken) -> Self {
        Self {
            waiting: Default::default(),
            tasks,
            shutdown,
        }
    }
}

/// Works off a conversation's backlog soon, in one write (on SQLite, the writer's next batch),
/// then publishes the rows. Calls while one is already waiting for the writer add nothing: it
/// takes every message in the backlog when it runs, so under load one bump covers many messages.
pub fn schedule_backlog(chat: &Chat, conversation_id: i64) {
    if !lock(&chat.backlog.waiting).insert(conversation_id) {
        return;
    }
    let chat = chat.clone();
    let tasks = chat.backlog.tasks.clone();
    tasks.spawn(async move {
        let backlog = chat.backlog.clone();
        let work = chat.store.write(move |txn| {
            let backlog = backlog.clone();
            Box::pin(async move {
                // From here on, a new message needs a new run: this one may not see it.
                lock(&backlog.waiting).remove(&conversation_id);
                let rows = work_off_backlog(txn, conversation_id).await?;
                Ok(((), envelope(rows).into_iter().collect()))
            })
        });
        // At shutdown the backlog stays in the database; the next start takes it.
        let worked = tokio::select! {
            worked = work => worked,
            () = chat.backlog.shutdown.cancelled() => return,
        };
        if let Err(err) = worked {
            // The backlog stays; the conversation's next message or the next start takes it.
            lock(&chat.backlog.waiting).remove(&conversation_id);
            tracing::error!(conversation_id, error = %err, "notifications for big-room messages failed");
        }
    });
}

/// At start: schedules every conversation with messages whose notifications were not made yet
/// (the server stopped in between).
pub async fn resume_backlog(chat: &Chat) -> AppResult<()> {
    for conversation_id in store::notifications::backlog_conversations(&chat.store).await? {
        schedule_backlog(chat, conversation_id);
    }
    Ok(())
}

/// Makes one notification (room changes and the like) inside a transaction.
pub async fn create_one(
    txn: &Txn,
    user_id: i64,
    actor_id: Option<i64>,
    kind: NotificationKind,
    text: String,
    conversation_id: Option<i64>,
    message_id: Option<i64>,
) -> AppResult<notification::Model> {
    store::notifications::insert_one(
        txn,
        user_id,
        actor_id,
        kind.as_str(),
        text,
        conversation_id,
        message_id,
        now(),
    )
    .await
}

/// Publishes notifications (after their transaction committed), each to its own user.
pub async fn publish(chat: &Chat, rows: Vec<notification::Model>) {
    if let Some(envelope) = envelope(rows) {
        chat.events.publish(envelope).await;
    }
}

/// The event telling each user about their new or updated notifications (none for no rows).
pub fn envelope(rows: Vec<notification::Model>) -> Option<Envelope> {
    if rows.is_empty() {
        return None;
    }
    let mut rows = rows;
    // Sorted by user, so that each subscriber finds its own row by binary search.
    rows.sort_unstable_by_key(|n| n.user_id);
    let recipients = rows.iter().map(|n| n.user_id).collect();
    Some(Envelope::new(recipients, Event::Notifications { rows }))
}

/// Marks some of the viewer's notifications read. All or nothing: if any id is not the viewer's,
/// nothing changes and the answer is NOT_FOUND. Returns how many were unread.
pub async fn mark_read(chat: &Chat, viewer: Viewer, ids: &[i64]) -> AppResult<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > 500 {
        return Err(AppError::bad_input("at most 500 ids at a time"));
    }
    let user_id = viewer.user_id;
    chat.store
        .write(move |txn| {
            let ids = ids.clone();
            Box::pin(async move {
                if store::notifications::count_owned(txn, user_id, &ids).await? != ids.len() {
                    return Err(AppError::not_found("notification"));
                }
                let changed = store::notifications::mark_ids_read(txn, ids).await?;
                Ok((changed, Vec::new()))
            })
        })
        .await
}

/// Marks all the viewer's notifications read; returns how many were unread.
pub async fn mark_all_read(chat: &Chat, viewer: Viewer) -> AppResult<u64> {
    let user_id = viewer.user_id;
    chat.store
        .write(move |txn| {
            Box::pin(async move {
                let changed = store::notifications::mark_all_read(txn, user_id).await?;
                Ok((changed, Vec::new()))
            })
        })
        .await
}

/// Turns MESSAGE/FILE notifications for a conversation off or on for the viewer.
pub async fn mute(
    chat: &Chat,
    viewer: Viewer,
    conversation_id: i64,
    muted: bool,
) -> AppResult<entity::conversation::Model> {
    let (conversation, _) =
        conversations::require_member(&chat.store, conversation_id, viewer.user_id).await?;
    let user_id = viewer.user_id;
    chat.store
        .write(move |txn| {
            Box::pin(async move {
                store::conversations::set_muted(txn, conversation_id, user_id, muted).await?;
                Ok(((), Vec::new()))
            })
        })
        .await?;
    Ok(conversation)
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn mentions_are_found_and_addresses_are_not() {
        assert_eq!(mentions("hi @Bob and @carol."), vec!["bob", "carol"]);
        assert_eq!(mentions("mail me at x@example.com"), Vec::<String>::new());
        assert_eq!(mentions("@al @bob @bob"), vec!["bob"]);
        assert_eq!(mentions("(@dave)"), vec!["dave"]);
    }
}
