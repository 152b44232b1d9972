//! What the store does differently on PostgreSQL.
//!
//! Writes run concurrently, each in its own transaction (see `writer`), so ordering comes from
//! locks and transaction ids rather than from one writer: a conversation's advisory lock orders
//! its changes (see `changes::next_seq`), and the change log's position starts with the writing
//! transaction's id. A statement is a network round trip: a send's writes are folded into as few
//! statements as its ordering allows (see [`send`]); there are no per-row hand-overs to save, so
//! rows are read as they come.
use std::sync::LazyLock;

use entity::{message, notification};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, FromQueryResult, QueryResult, Value, sea_query::Expr,
};

use super::{
    changes::{Logged, Notified, Sent, next_seq},
    id_list,
    send_row::{Collapsed, send_columns, send_param, send_values},
    sql,
};
use crate::{
    error::{AppError, AppResult},
    events::{MessageChange, Position},
};

/// The statement [`send`] runs once the sequence bump holds the conversation's lock, spelled once:
/// the checks the write repeats under that lock (the sender is still a member; the thread root,
/// if any, is still a standing root of the conversation), then the message, its change-log entry
/// and the members, as one data-modifying statement. Its snapshot is taken after the lock was
/// granted, so it sees every change the lock's earlier holders committed (a removal, a deleted
/// root, the previous member list). A failed check inserts nothing and returns no row.
///
/// `$14` is the sequence number the bump took. With `$15` (the collapsed rows' kind; `$16` their
/// text, `$17` the most members notified inline) the statement also makes the notifications of a
/// message directed at no one (see [`super::send_row::Collapsed`]), as
/// `notifications::Bump` would, and returns them as JSON: the UPDATE of the audience's
/// unread collapsed rows, then an INSERT for those it did not reach (going by what the UPDATE did,
/// as [`bump_and_read_back`] does), or in a bigger conversation the backlog row.
static SEND: LazyLock<String> = LazyLock::new(|| {
    use message::Column as C;
    let (names, params) = send_columns();
    format!(
        "WITH admitted AS (\
           SELECT 1 FROM members WHERE conversation_id = {c} AND user_id = {sender} \
           AND ({root} IS NULL OR EXISTS (SELECT 1 FROM messages r WHERE r.id = {root} \
             AND r.conversation_id = {c} AND r.thread_root_id IS NULL \
             AND r.sender_id IS NOT NULL AND r.deleted_at IS NULL))), \
         sent AS (\
           INSERT INTO messages (seq, created_at, {names}) \
           SELECT $14, $1, {params} FROM admitted RETURNING *), \
         logged AS (\
           INSERT INTO conversation_events (conversation_id, seq, kind, message_id, created_at) \
           SELECT conversation_id, seq, '{kind}', id, $1 FROM sent RETURNING id, tx), \
         present AS (SELECT user_id, muted FROM members WHERE conversation_id = {c}), \
         inline AS (SELECT count(*) <= $17 AS yes FROM present), \
         audience AS (\
           SELECT p.user_id FROM present p CROSS JOIN sent WHERE $15 IS NOT NULL \
           AND (SELECT yes FROM inline) AND p.muted = FALSE AND p.user_id <> {sender}), \
         bumped AS (\
           UPDATE notifications SET kind = $15, text = $16, message_id = (SELECT id FROM sent), \
           actor_id = {sender}, updated_at = $1, count = count + 1 \
           WHERE id IN (SELECT n.id FROM notifications n WHERE n.conversation_id = {c} \
             AND n.is_read = FALSE AND n.kind IN ('MESSAGE', 'FILE') \
             AND n.user_id IN (SELECT user_id FROM audience)) \
           RETURNING *), \
         made AS (\
           INSERT INTO notifications (user_id, actor_id, kind, text, conversation_id, message_id, \
             count, is_read, created_at, updated_at) \
           SELECT a.user_id, {sender}, $15, $16, {c}, (SELECT id FROM sent), 1, FALSE, $1, $1 \
           FROM audience a WHERE a.user_id NOT IN (SELECT user_id FROM bumped) RETURNING *), \
         backlog AS (\
           INSERT INTO notification_backlog (conversation_id, seq) \
           SELECT conversation_id, seq FROM sent \
           WHERE $15 IS NOT NULL AND NOT (SELECT yes FROM inline) RETURNING seq) \
         SELECT sent.*, logged.id AS event_id, logged.tx AS event_tx, \
           (SELECT string_agg(user_id::text, ',') FROM present) AS members, \
           (SELECT yes FROM inline) AS inline, \
           (SELECT json_agg(n)::text FROM (SELECT * FROM bumped UNION ALL SELECT * FROM made) n) \
           AS notes \
         FROM sent CROSS JOIN logged",
        c = send_param(C::ConversationId),
        sender = send_param(C::SenderId),
        root = send_param(C::ThreadRootId),
        kind = MessageChange::Created.as_str(),
    )
});

/// The writes of a send, in two statements (a statement is a round trip): the sequence bump,
/// which takes the conversation's lock, and then [`SEND`], which with `collapsed` also makes the
/// notifications. They cannot be one: a statement's snapshot is taken when it starts, so reads in
/// the statement that waited for the lock would miss what the lock's previous holder committed.
/// None if the checks under the lock refused the send (the caller rolls back the bump).
pub async fn send(
    txn: &DatabaseTransaction,
    row: message::ActiveModel,
    conversation_id: i64,
    collapsed: Option<&Collapsed>,
) -> AppResult<Option<Sent>> {
    let (seq, at) = next_seq(txn, conversation_id).await?;
    let mut values = send_values(&row, at)?;
    values.push(seq.into());
    values.push(collapsed.map(|c| c.kind.to_owned()).into());
    values.push(collapsed.map(|c| c.text.clone()).into());
    values.push(
        i64::try_from(collapsed.map_or(0, |c| c.inline_members))
            .unwrap_or(i64::MAX)
            .into(),
    );
    let Some(row) = txn.query_one_raw(sql(txn, &SEND, values)).await? else {
        return Ok(None);
    };
    let message = message::Model::from_query_result(&row, "")?;
    let members: Option<String> = row.try_get("", "members")?;
    let logged = Logged {
        position: Position {
            tx: row.try_get("", "event_tx")?,
            id: row.try_get("", "event_id")?,
        },
        change: MessageChange::Created,
        message: message.clone(),
    };
    let notified = match collapsed {
        Some(_) => {
            let notes: Option<String> = row.try_get("", "notes")?;
            let rows = match notes {
                Some(json) => serde_json::from_str(&json)
                    .map_err(|e| AppError::Internal(format!("notifications as JSON: {e}")))?,
                None => Vec::new(),
            };
            Some(Notified {
                rows,
                inline: row.try_get("", "inline")?,
            })
        }
        None => None,
    };
    Ok(Some(Sent {
        message,
        recipients: id_list(members.as_deref())?,
        logged,
        root_checked: true,
        notified,
    }))
}

/// Change-log rows written by transactions older than the oldest one still running
/// (`pg_snapshot_xmin` of the statement's own snapshot): every transaction that may yet commit
/// has an id at least that old one's, so no row can later join the log before these.
pub fn settled() -> sea_orm::sea_query::SimpleExpr {
    Expr::cust(
        "\"conversation_events\".\"tx\" < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    )
}

/// The largest transaction id in the change log and the next one this cluster gives out, when
/// the first is not below the second: the log was written by another cluster (a dump restored
/// here), and new changes would take positions before old ones.
pub async fn positions_from_elsewhere(db: &impl ConnectionTrait) -> AppResult<Option<(i64, i64)>> {
    // `pg_snapshot_xmax` is the next transaction id to be given out; reading it takes none.
    let row = db
        .query_one_raw(sql(
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

/// Runs a notification bump and reads back every notification made for its latest message, as
/// one statement: the UPDATE of the audience's unread collapsed rows, an INSERT for those of the
/// audience it did not reach, and the message's rows made earlier in the transaction (its
/// mentions and reply). The INSERT goes by what the UPDATE did (its RETURNING), not by a second
/// look at the table: a row marked read by a concurrent transaction after this statement's
/// snapshot is skipped by the UPDATE (which waits for it and checks again), and then gets its new
/// row. The earlier rows are read from the statement's snapshot, which the UPDATE's and INSERT's
/// own rows are not in.
pub async fn bump_and_read_back(
    txn: &impl ConnectionTrait,
    update: &str,
    insert: &str,
    values: Vec<Value>,
    latest: &str,
) -> AppResult<Vec<notification::Model>> {
    let text = format!(
        "WITH bumped AS ({update} RETURNING *), \
         made AS ({insert} WHERE a.user_id NOT IN (SELECT user_id FROM bumped) RETURNING *) \
         SELECT * FROM bumped UNION ALL SELECT * FROM made \
         UNION ALL SELECT * FROM notifications \
         WHERE message_id = {latest} AND id NOT IN (SELECT id FROM bumped)",
    );
    let rows: Vec<QueryResult> = txn.query_all_raw(sql(txn, &text, values)).await?;
    Ok(rows
        .iter()
        .map(|row| notification::Model::from_query_result(row, ""))
        .collect::<Result<_, _>>()?)
}
