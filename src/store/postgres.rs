//! What the store does differently on PostgreSQL.
//!
//! Writes run concurrently, each in its own transaction (see `writer`), so ordering comes from
//! locks and transaction ids rather than from one writer: a conversation's advisory lock orders
//! its changes (see `changes::next_seq`), and the change log's position starts with the writing
//! transaction's id. A statement is a network round trip: a send's writes are one statement, a
//! function call, that is its own transaction when it runs alone (see [`send`]); there are no
//! per-row hand-overs to save, so rows are read as they come.
use std::sync::LazyLock;

use entity::{conversation_event, message, notification};
use sea_orm::{
    ConnectionTrait, FromQueryResult, IdenStatic, Iterable, QueryResult, QueryTrait, Value,
    sea_query::{Alias, Asterisk, Expr, ExprTrait, JoinType, Query},
};

use super::{
    changes::{Logged, Notified, Sent},
    id_list,
    send_row::{Collapsed, send_column_names, send_value_count, send_values},
    sql,
};
use crate::{
    error::{AppError, AppResult},
    events::{MessageChange, Position},
};

/// A send's writes as one statement: the function `palaver_send` of migration 000014 takes the
/// conversation's lock, checks under it that the sender is still a member and the thread root (if
/// any) still a standing root, takes the next sequence number and writes the message, its
/// change-log entry and, for a message directed at no one, its collapsed notifications (see
/// [`super::send_row::Collapsed`]). The function, not one plain statement: a statement reads from
/// the snapshot taken as it starts, before it waited for the lock, while each statement of a
/// function takes a snapshot of its own, after the lock was granted, and so sees what the lock's
/// previous holder committed (a removal, a deleted root, the member list). A refused check writes
/// nothing and returns no row.
///
/// Its parameters: the time, the message columns (see [`super::send_row`]), then the collapsed
/// rows' kind and text (both null for none) and the most members notified inline.
static SEND: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT (s.sent_message).*, s.sent_event_id AS event_id, s.sent_event_tx AS event_tx, \
         s.sent_members AS members, s.sent_inline AS inline, s.sent_notes AS notes \
         FROM palaver_send({}) s",
        super::placeholders(1, send_value_count() + 3),
    )
});

/// The writes of a send in one statement, [`SEND`]. Run on its own, outside a transaction, the
/// statement is its transaction, committed before it answers: one round trip for the whole write.
/// With `collapsed` it also makes the notifications. None if the checks under the lock refused
/// the send (nothing was written).
pub async fn send(
    db: &impl ConnectionTrait,
    row: message::ActiveModel,
    at: chrono::DateTime<chrono::Utc>,
    collapsed: Option<&Collapsed>,
) -> AppResult<Option<Sent>> {
    let mut values = send_values(&row, at)?;
    values.push(collapsed.map(|c| c.kind.to_owned()).into());
    values.push(collapsed.map(|c| c.text.clone()).into());
    values.push(
        i64::try_from(collapsed.map_or(0, |c| c.inline_members))
            .unwrap_or(i64::MAX)
            .into(),
    );
    let Some(row) = db.query_one_raw(sql(db, &SEND, values)).await? else {
        return Ok(None);
    };
    sent_from_row(&row, collapsed.is_some()).map(Some)
}

/// A send queued for [`send_batch`]: what [`send`] takes.
pub struct Queued {
    pub conversation_id: i64,
    pub row: message::ActiveModel,
    pub at: chrono::DateTime<chrono::Utc>,
    pub collapsed: Option<Collapsed>,
}

/// Several sends in one statement, one transaction: the function `palaver_send_batch` of migration
/// 000014 takes every conversation's lock first, in the order of their ids, then runs
/// `palaver_send` for each send in turn. The answers come in the order of `sends`, None for a send
/// the checks refused. Any failure (a duplicate client message id, a deadlock with another
/// transaction) undoes the whole batch; the caller then runs the sends alone.
pub async fn send_batch(
    db: &impl ConnectionTrait,
    sends: &[&Queued],
) -> AppResult<Vec<Option<Sent>>> {
    let mut items = Vec::with_capacity(sends.len());
    for send in sends {
        let mut item = serde_json::Map::new();
        let values = send_values(&send.row, send.at)?;
        for (name, value) in std::iter::once("at").chain(send_column_names()).zip(values) {
            item.insert(name.to_owned(), json_of(value)?);
        }
        let collapsed = send.collapsed.as_ref();
        item.insert("note_kind".into(), collapsed.map(|c| c.kind).into());
        item.insert("note_text".into(), collapsed.map(|c| c.text.clone()).into());
        item.insert(
            "inline_max".into(),
            collapsed.map_or(0, |c| c.inline_members).into(),
        );
        items.push(serde_json::Value::Object(item));
    }
    let rows = db
        .query_all_raw(sql(
            db,
            "SELECT b.item, (b.sent_message).*, b.sent_event_id AS event_id, \
             b.sent_event_tx AS event_tx, b.sent_members AS members, b.sent_inline AS inline, \
             b.sent_notes AS notes FROM palaver_send_batch($1) b",
            vec![serde_json::Value::Array(items).into()],
        ))
        .await?;
    let mut answers: Vec<Option<Sent>> = sends.iter().map(|_| None).collect();
    for row in rows {
        let item: i64 = row.try_get("", "item")?;
        let index = usize::try_from(item - 1)
            .ok()
            .filter(|i| *i < sends.len())
            .ok_or_else(|| AppError::Internal(format!("a batch answered item {item}")))?;
        answers[index] = Some(sent_from_row(&row, sends[index].collapsed.is_some())?);
    }
    Ok(answers)
}

/// A send's value as JSON for [`send_batch`] (the column types [`send_values`] gives).
fn json_of(value: Value) -> AppResult<serde_json::Value> {
    Ok(match value {
        Value::BigInt(v) => v.into(),
        Value::String(v) => v.into(),
        Value::ChronoDateTimeUtc(v) => v.map(|at| at.to_rfc3339()).into(),
        other => {
            return Err(AppError::Internal(format!(
                "no JSON for a send's value {other:?}"
            )));
        }
    })
}

/// What [`send`] and [`send_batch`] read from a row `palaver_send` returned.
fn sent_from_row(row: &QueryResult, collapsed: bool) -> AppResult<Sent> {
    let message = message::Model::from_query_result(row, "")?;
    let members: Option<String> = row.try_get("", "members")?;
    let logged = Logged {
        position: Position {
            tx: row.try_get("", "event_tx")?,
            id: row.try_get("", "event_id")?,
        },
        change: MessageChange::Created,
        message: message.clone(),
    };
    let notified = if collapsed {
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
    } else {
        None
    };
    Ok(Sent {
        message,
        recipients: id_list(members.as_deref())?,
        logged,
        root_checked: true,
        notified,
    })
}

/// Change-log rows written by transactions older than the oldest one still running
/// (`pg_snapshot_xmin` of the statement's own snapshot): every transaction that may yet commit
/// has an id at least that old one's, so no row can later join the log before these.
pub fn settled() -> sea_orm::sea_query::SimpleExpr {
    Expr::cust(
        "\"conversation_events\".\"tx\" < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    )
}

/// The change-log rows `select` finds, in its order, each with its message (None when it is
/// gone), looked up by key one row at a time. A plain join would not do: the planner cannot tell
/// how many rows [`settled`] leaves (the watermark is known only as the statement runs), guesses a
/// share of the whole log, and then joins by hashing the whole `messages` table, so that every
/// read of a few new changes cost a scan of every message. A lateral subquery with a limit is
/// never merged into a join: it runs once per log row, as a primary-key lookup.
pub async fn with_messages(
    db: &impl ConnectionTrait,
    select: sea_orm::Select<conversation_event::Entity>,
) -> AppResult<Vec<(conversation_event::Model, Option<message::Model>)>> {
    let query = with_messages_query(select);
    let rows = db.query_all(&query).await?;
    rows.iter()
        .map(|row| {
            Ok((
                conversation_event::Model::from_query_result(row, "")?,
                Option::<message::Model>::from_query_result(row, MESSAGE_PREFIX)?,
            ))
        })
        .collect()
}

/// [`with_messages`]'s statement.
pub fn with_messages_query(
    select: sea_orm::Select<conversation_event::Entity>,
) -> sea_orm::sea_query::SelectStatement {
    let mut query = QueryTrait::into_query(select);
    let found = Alias::new("found");
    let lookup = Query::select()
        .column(Asterisk)
        .from(message::Entity)
        .and_where(Expr::col((message::Entity, message::Column::Id)).equals((
            conversation_event::Entity,
            conversation_event::Column::MessageId,
        )))
        .limit(1)
        .to_owned();
    query.join_lateral(
        JoinType::LeftJoin,
        lookup,
        found.clone(),
        Expr::cust("TRUE"),
    );
    for column in message::Column::iter() {
        query.expr_as(
            Expr::col((found.clone(), column)),
            Alias::new(format!("{MESSAGE_PREFIX}{}", column.as_str())),
        );
    }
    query
}

/// The prefix of the message's columns in [`with_messages`]'s rows (no column of the log starts
/// with it).
const MESSAGE_PREFIX: &str = "found_";

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
