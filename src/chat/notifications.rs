//! Notifications: made for every member but the sender, in the same transaction as the message that
//! causes them (in big rooms, the collapsed ones just after it: see [`work_off_backlog`]). To keep
//! the volume bounded, a member's unread MESSAGE/FILE notifications for one conversation collapse
//! into a single row that counts them; mentions and replies stay one row each.
use std::collections::HashMap;

use entity::{member, message, notification, user};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, Value, sea_query::Expr,
};

use super::{
    conversations,
    model::now,
    pagination::{Page, beyond_position},
};
use crate::{
    AppState,
    auth::Viewer,
    db,
    error::{AppError, AppResult},
    events::{Envelope, Event},
    lock,
    store::sql,
};

/// Why a notification was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationKind {
    Message,
    File,
    Reply,
    Mention,
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
    let body = message.body.as_deref().unwrap_or("sent a file");
    let mut text: String = body.chars().take(120).collect();
    if body.chars().count() > 120 {
        text.push('…');
    }
    format!("{sender}: {text}")
}

/// Makes the notifications for a new message inside its transaction and returns them, to be
/// published after commit: its mentions and reply first, then every other member's collapsed
/// MESSAGE/FILE row. With `collapse_now` false (a big room) the collapsed rows are left to
/// [`work_off_backlog`], which runs after the commit: the message is written to the backlog
/// instead, in this transaction, so that nothing is lost if the server stops in between.
pub async fn for_new_message(
    txn: &DatabaseTransaction,
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
    if collapse_now {
        let mut excluded = vec![sender_id];
        excluded.extend(directed);
        return Bump::new(
            message,
            &text,
            1,
            message.created_at,
            Audience::AllBut(&excluded),
        )
        .run_and_read_back(txn)
        .await;
    }
    txn.execute_raw(sql(
        txn,
        "INSERT INTO notification_backlog (conversation_id, seq) VALUES ($1, $2)",
        vec![message.conversation_id.into(), message.seq.into()],
    ))
    .await?;
    if directed.is_empty() {
        return Ok(Vec::new());
    }
    made_for(txn, message.id).await
}

/// Inserts the notifications a message directs at someone: mentions of members, then the author of
/// the message replied to. Returns who got one.
async fn directed(
    txn: &DatabaseTransaction,
    message: &message::Model,
    sender_id: i64,
    text: &str,
    reply_to_sender: Option<i64>,
) -> AppResult<Vec<i64>> {
    let names = mentions(message.body.as_deref().unwrap_or_default());
    let mut directed: Vec<(i64, NotificationKind)> = Vec::new();
    if !names.is_empty() {
        let mentioned: Vec<i64> = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .filter(user::Column::UsernameKey.is_in(names))
            .filter(
                user::Column::Id.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(member::Column::UserId)
                        .from(member::Entity)
                        .and_where(member::Column::ConversationId.eq(message.conversation_id))
                        .to_owned(),
                ),
            )
            .into_tuple()
            .all(txn)
            .await?;
        directed.extend(
            mentioned
                .into_iter()
                .filter(|id| *id != sender_id)
                .map(|id| (id, NotificationKind::Mention)),
        );
    }
    if let Some(author) = reply_to_sender
        && author != sender_id
        && !directed.iter().any(|(id, _)| *id == author)
        && conversations::require_member(txn, message.conversation_id, author)
            .await
            .is_ok()
    {
        directed.push((author, NotificationKind::Reply));
    }
    if !directed.is_empty() {
        let at = message.created_at;
        notification::Entity::insert_many(directed.iter().map(|(user_id, kind)| {
            notification::ActiveModel {
                user_id: Set(*user_id),
                actor_id: Set(Some(sender_id)),
                kind: Set(kind.as_str().into()),
                text: Set(text.to_owned()),
                conversation_id: Set(Some(message.conversation_id)),
                message_id: Set(Some(message.id)),
                count: Set(1),
                is_read: Set(false),
                created_at: Set(at),
                updated_at: Set(at),
                ..Default::default()
            }
        }))
        .exec(txn)
        .await?;
    }
    Ok(directed.into_iter().map(|(id, _)| id).collect())
}

/// Whose collapsed row a bump reaches, among the members who have not muted the conversation.
enum Audience<'a> {
    AllBut(&'a [i64]),
    Only(i64),
}

/// Adds `count` messages, `latest` the last of them, to the unread MESSAGE/FILE row of each member
/// in the audience, or starts one for those who have none, updated `at`: an UPDATE and an INSERT
/// over the same numbered parameters (`$3` is the latest message's id).
struct Bump {
    update: String,
    insert: String,
    values: Vec<Value>,
    latest_id: i64,
}

impl Bump {
    fn new(
        latest: &message::Model,
        text: &str,
        count: i64,
        at: chrono::DateTime<chrono::Utc>,
        audience: Audience<'_>,
    ) -> Self {
        let kind = if latest.kind == "TEXT" {
            NotificationKind::Message
        } else {
            NotificationKind::File
        };
        let mut values: Vec<Value> = vec![
            kind.as_str().into(),
            text.into(),
            latest.id.into(),
            latest.sender_id.into(),
            at.into(),
            latest.conversation_id.into(),
            count.into(),
        ];
        let who = match audience {
            Audience::AllBut([]) => "TRUE".to_owned(),
            Audience::AllBut(excluded) => {
                let list = (0..excluded.len())
                    .map(|i| format!("${}", i + 8))
                    .collect::<Vec<_>>()
                    .join(", ");
                values.extend(excluded.iter().map(|id| Value::from(*id)));
                format!("m.user_id NOT IN ({list})")
            }
            Audience::Only(user_id) => {
                values.push(user_id.into());
                "m.user_id = $8".to_owned()
            }
        };
        let audience = format!(
            "SELECT m.user_id FROM members m WHERE m.conversation_id = $6 AND m.muted = FALSE \
             AND {who}"
        );
        let unread_row =
            "n.conversation_id = $6 AND n.is_read = FALSE AND n.kind IN ('MESSAGE', 'FILE')";
        Self {
            update: format!(
                "UPDATE notifications SET kind = $1, text = $2, message_id = $3, actor_id = $4, \
                 updated_at = $5, count = count + $7 \
                 WHERE id IN (SELECT n.id FROM notifications n WHERE {unread_row} \
                 AND n.user_id IN ({audience}))"
            ),
            insert: format!(
                "INSERT INTO notifications \
                 (user_id, actor_id, kind, text, conversation_id, message_id, count, is_read, created_at, updated_at) \
                 SELECT a.user_id, $4, $1, $2, $6, $3, $7, FALSE, $5, $5 FROM ({audience}) a \
                 WHERE a.user_id NOT IN (SELECT n.user_id FROM notifications n WHERE {unread_row})"
            ),
            values,
            latest_id: latest.id,
        }
    }

    /// Runs the bump, then reads back every notification made for its latest message (its own
    /// rows and the mentions and reply made before it). Sends are the hot path, and on SQLite each
    /// statement is a hand-over to the database thread and back, so there all three go as one.
    async fn run_and_read_back(
        self,
        txn: &DatabaseTransaction,
    ) -> AppResult<Vec<notification::Model>> {
        if txn.get_database_backend() != DbBackend::Sqlite {
            let latest_id = self.latest_id;
            self.run(txn).await?;
            return made_for(txn, latest_id).await;
        }
        let read_back = db::json_rows_sql::<notification::Entity>(
            "SELECT * FROM notifications WHERE message_id = $3",
        );
        let text = format!("{};\n{};\n{read_back}", self.update, self.insert);
        let rows = txn.query_all_raw(sql(txn, &text, self.values)).await?;
        Ok(db::from_json_rows(rows.into_iter().last())?)
    }

    /// Runs the two statements one after the other.
    async fn run(self, txn: &DatabaseTransaction) -> AppResult<()> {
        txn.execute_raw(sql(txn, &self.update, self.values.clone()))
            .await?;
        txn.execute_raw(sql(txn, &self.insert, self.values)).await?;
        Ok(())
    }
}

/// Makes the collapsed notifications of a conversation's messages in the backlog, all at once, and
/// returns the rows made or updated, to publish after commit. Each member's row counts the
/// messages that neither they sent nor were mentioned or replied to in, and shows the last of
/// them. Several instances may work the same backlog: each message is claimed by one.
pub async fn work_off_backlog(
    txn: &DatabaseTransaction,
    conversation_id: i64,
) -> AppResult<Vec<notification::Model>> {
    let claimed: Vec<i64> = txn
        .query_all_raw(sql(
            txn,
            "DELETE FROM notification_backlog WHERE conversation_id = $1 RETURNING seq",
            vec![conversation_id.into()],
        ))
        .await?
        .iter()
        .map(|row| row.try_get::<i64>("", "seq"))
        .collect::<Result<_, _>>()?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let sent: Vec<message::Model> = message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Seq.is_in(claimed))
        .filter(message::Column::SenderId.is_not_null())
        .order_by_asc(message::Column::Seq)
        .all(txn)
        .await?;
    let ids: Vec<i64> = sent.iter().map(|m| m.id).collect();
    let senders: Vec<i64> = sent.iter().filter_map(|m| m.sender_id).collect();
    let names: HashMap<i64, String> = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .column(user::Column::DisplayName)
        .filter(user::Column::Id.is_in(senders))
        .into_tuple::<(i64, String)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let directed: Vec<(Option<i64>, i64)> = notification::Entity::find()
        .select_only()
        .column(notification::Column::MessageId)
        .column(notification::Column::UserId)
        .filter(notification::Column::MessageId.is_in(ids))
        .filter(notification::Column::Kind.is_in(["MENTION", "REPLY"]))
        .into_tuple()
        .all(txn)
        .await?;
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
    Ok(db::all_rows(
        txn,
        notification::Entity::find()
            .filter(notification::Column::ConversationId.eq(conversation_id))
            .filter(notification::Column::MessageId.is_in(latest))
            .filter(notification::Column::Kind.is_in(["MESSAGE", "FILE"])),
    )
    .await?)
}

/// Works off a conversation's backlog soon, in the writer's next batch, then publishes the rows.
/// Calls while one is already waiting for the writer add nothing: it takes every message in the
/// backlog when it runs, so under load one bump covers many messages.
pub fn schedule_backlog(state: &AppState, conversation_id: i64) {
    if !lock(&state.backlog_waiting).insert(conversation_id) {
        return;
    }
    let state = state.clone();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let waiting = state.backlog_waiting.clone();
        let work = state.chat.store.write(move |txn| {
                let waiting = waiting.clone();
                Box::pin(async move {
                    // From here on, a new message needs a new run: this one may not see it.
                    lock(&waiting).remove(&conversation_id);
                    let rows = work_off_backlog(txn, conversation_id).await?;
                    Ok(((), envelope(rows).into_iter().collect()))
                })
        });
        // At shutdown the backlog stays in the database; the next start takes it.
        let worked = tokio::select! {
            worked = work => worked,
            () = state.shutdown.cancelled() => return,
        };
        if let Err(err) = worked {
            // The backlog stays; the conversation's next message or the next start takes it.
            lock(&state.backlog_waiting).remove(&conversation_id);
            tracing::error!(conversation_id, error = %err, "notifications for big-room messages failed");
        }
    });
}

/// At start: schedules every conversation with messages whose notifications were not made yet
/// (the server stopped in between).
pub async fn resume_backlog(state: &AppState) -> AppResult<()> {
    let waiting = db::ids(
        &state.db,
        "SELECT DISTINCT conversation_id AS id FROM notification_backlog",
        vec![],
    )
    .await?;
    for conversation_id in waiting {
        schedule_backlog(state, conversation_id);
    }
    Ok(())
}

/// The notifications a message made, to publish: one row per member it notified, so 1,000 rows
/// for a message in a 1,000-member room, read through `db::all_rows` for that reason.
async fn made_for(
    txn: &DatabaseTransaction,
    message_id: i64,
) -> AppResult<Vec<notification::Model>> {
    Ok(db::all_rows(
        txn,
        notification::Entity::find().filter(notification::Column::MessageId.eq(message_id)),
    )
    .await?)
}

/// Makes one notification (room changes and the like) inside a transaction.
pub async fn create_one(
    txn: &DatabaseTransaction,
    user_id: i64,
    actor_id: Option<i64>,
    kind: NotificationKind,
    text: String,
    conversation_id: Option<i64>,
    message_id: Option<i64>,
) -> AppResult<notification::Model> {
    let at = now();
    Ok(notification::Entity::insert(notification::ActiveModel {
        user_id: Set(user_id),
        actor_id: Set(actor_id),
        kind: Set(kind.as_str().into()),
        text: Set(text),
        conversation_id: Set(conversation_id),
        message_id: Set(message_id),
        count: Set(1),
        is_read: Set(false),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    })
    .exec_with_returning(txn)
    .await?)
}

/// Publishes notifications (after their transaction committed), each to its own user.
pub async fn publish(state: &AppState, rows: Vec<notification::Model>) {
    if let Some(envelope) = envelope(rows) {
        state.bus.publish(envelope).await;
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

/// Those of `ids` that are the user's own notifications, by id: anyone else's are left out, so
/// a caller cannot tell them from notifications that do not exist.
pub async fn own_by_ids(
    db: &DatabaseConnection,
    user_id: i64,
    ids: &[i64],
) -> AppResult<HashMap<i64, notification::Model>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(notification::Entity::find()
        .filter(notification::Column::Id.is_in(ids.iter().copied()))
        .filter(notification::Column::UserId.eq(user_id))
        .all(db)
        .await?
        .into_iter()
        .map(|n| (n.id, n))
        .collect())
}

/// A user's notifications, most recently updated first. Positions are (updated µs, id).
pub async fn list(
    db: &DatabaseConnection,
    user_id: i64,
    unread_only: bool,
    after: Option<(i64, i64)>,
    first: u64,
) -> AppResult<Page<notification::Model>> {
    let mut query = notification::Entity::find()
        .filter(notification::Column::UserId.eq(user_id))
        .order_by_desc(notification::Column::UpdatedAt)
        .order_by_desc(notification::Column::Id);
    if unread_only {
        query = query.filter(notification::Column::IsRead.eq(false));
    }
    if let Some(position) = after {
        query = query.filter(beyond_position(
            notification::Column::UpdatedAt,
            notification::Column::Id,
            position,
            false,
        )?);
    }
    let rows = query.limit(first + 1).all(db).await?;
    Ok(Page::forward(rows, first, after.is_some()))
}

/// A user's notifications created or updated after a position (updated µs, id), oldest first: what
/// a resuming `notifications` subscriber missed.
pub async fn changed_after(
    db: &DatabaseConnection,
    user_id: i64,
    position: (i64, i64),
    limit: u64,
) -> AppResult<Vec<notification::Model>> {
    Ok(notification::Entity::find()
        .filter(notification::Column::UserId.eq(user_id))
        .filter(beyond_position(
            notification::Column::UpdatedAt,
            notification::Column::Id,
            position,
            true,
        )?)
        .order_by_asc(notification::Column::UpdatedAt)
        .order_by_asc(notification::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// The position (updated µs, id) of the user's most recently changed notification, if any: no
/// `notifications` cursor this server gave the user lies beyond it (rows are never deleted, and
/// a row's time only moves forward).
pub async fn newest_position(
    db: &DatabaseConnection,
    user_id: i64,
) -> AppResult<Option<(i64, i64)>> {
    let newest: Option<(chrono::DateTime<chrono::Utc>, i64)> = notification::Entity::find()
        .select_only()
        .column(notification::Column::UpdatedAt)
        .column(notification::Column::Id)
        .filter(notification::Column::UserId.eq(user_id))
        .order_by_desc(notification::Column::UpdatedAt)
        .order_by_desc(notification::Column::Id)
        .into_tuple()
        .one(db)
        .await?;
    Ok(newest.map(|(at, id)| (at.timestamp_micros(), id)))
}

/// How many of a user's notifications are unread.
pub async fn unread_count(db: &DatabaseConnection, user_id: i64) -> AppResult<u64> {
    use sea_orm::PaginatorTrait;
    Ok(notification::Entity::find()
        .filter(notification::Column::UserId.eq(user_id))
        .filter(notification::Column::IsRead.eq(false))
        .count(db)
        .await?)
}

/// Marks some of the viewer's notifications read. All or nothing: if any id is not the viewer's,
/// nothing changes and the answer is NOT_FOUND. Returns how many were unread.
pub async fn mark_read(db: &DatabaseConnection, viewer: Viewer, ids: &[i64]) -> AppResult<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > 500 {
        return Err(AppError::bad_input("at most 500 ids at a time"));
    }
    let txn = crate::db::begin_write(db).await?;
    let owned: Vec<i64> = notification::Entity::find()
        .select_only()
        .column(notification::Column::Id)
        .filter(notification::Column::Id.is_in(ids.iter().copied()))
        .filter(notification::Column::UserId.eq(viewer.user_id))
        .into_tuple()
        .all(&txn)
        .await?;
    if owned.len() != ids.len() {
        return Err(AppError::not_found("notification"));
    }
    let changed = notification::Entity::update_many()
        .col_expr(notification::Column::IsRead, Expr::value(true))
        .filter(notification::Column::Id.is_in(ids))
        .filter(notification::Column::IsRead.eq(false))
        .exec(&txn)
        .await?
        .rows_affected;
    txn.commit().await?;
    Ok(changed)
}

/// Marks all the viewer's notifications read; returns how many were unread.
pub async fn mark_all_read(db: &DatabaseConnection, viewer: Viewer) -> AppResult<u64> {
    Ok(notification::Entity::update_many()
        .col_expr(notification::Column::IsRead, Expr::value(true))
        .filter(notification::Column::UserId.eq(viewer.user_id))
        .filter(notification::Column::IsRead.eq(false))
        .exec(db)
        .await?
        .rows_affected)
}

/// Reading a conversation up to a message also reads the notifications it caused.
pub async fn read_through(
    db: &impl ConnectionTrait,
    user_id: i64,
    conversation_id: i64,
    up_to_message_id: i64,
) -> AppResult<()> {
    notification::Entity::update_many()
        .col_expr(notification::Column::IsRead, Expr::value(true))
        .filter(notification::Column::UserId.eq(user_id))
        .filter(notification::Column::ConversationId.eq(conversation_id))
        .filter(notification::Column::MessageId.lte(up_to_message_id))
        .filter(notification::Column::IsRead.eq(false))
        .exec(db)
        .await?;
    Ok(())
}

/// Turns MESSAGE/FILE notifications for a conversation off or on for the viewer.
pub async fn mute(
    db: &DatabaseConnection,
    viewer: Viewer,
    conversation_id: i64,
    muted: bool,
) -> AppResult<entity::conversation::Model> {
    let (conversation, _) =
        conversations::require_member(db, conversation_id, viewer.user_id).await?;
    member::Entity::update_many()
        .col_expr(member::Column::Muted, Expr::value(muted))
        .filter(member::Column::ConversationId.eq(conversation_id))
        .filter(member::Column::UserId.eq(viewer.user_id))
        .exec(db)
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
