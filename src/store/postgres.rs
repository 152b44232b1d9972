//! What the store does differently on PostgreSQL.
//!
//! Writes run concurrently, each in its own transaction (see `writer`), so ordering comes from
//! locks and transaction ids rather than from one writer: a conversation's advisory lock orders
//! its changes (see `changes::next_seq`), and the change log's position starts with the writing
//! transaction's id. A statement is a network round trip; there are no per-row hand-overs to
//! save, so rows are read as they come.
use entity::{message, notification};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    Set, Value, sea_query::Expr,
};

use super::{
    changes::{Sent, log_change, next_seq, recipients},
    sql,
};
use crate::{
    error::{AppError, AppResult},
    events::MessageChange,
};

/// The writes of a send: the sequence bump (which takes the conversation's lock), the message,
/// the members, and the change-log entry. The members are read after the bump: read in the same
/// statement, they would come from a snapshot taken before it waited for the lock.
pub async fn send(
    txn: &DatabaseTransaction,
    mut row: message::ActiveModel,
    conversation_id: i64,
) -> AppResult<Sent> {
    let (seq, at) = next_seq(txn, conversation_id).await?;
    row.seq = Set(seq);
    row.created_at = Set(at);
    let message = row.insert(txn).await?;
    let recipients = recipients(txn, conversation_id, &[]).await?;
    let logged = log_change(txn, MessageChange::Created, message.clone(), seq).await?;
    Ok(Sent {
        message,
        recipients,
        logged,
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

/// Runs a notification bump's UPDATE and INSERT, then reads back every notification made for
/// `message_id`.
pub async fn bump_and_read_back(
    txn: &impl ConnectionTrait,
    update: &str,
    insert: &str,
    values: Vec<Value>,
    message_id: i64,
) -> AppResult<Vec<notification::Model>> {
    txn.execute_raw(sql(txn, update, values.clone())).await?;
    txn.execute_raw(sql(txn, insert, values)).await?;
    Ok(notification::Entity::find()
        .filter(notification::Column::MessageId.eq(message_id))
        .all(txn)
        .await?)
}
