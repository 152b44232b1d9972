//! Threads: the summaries read for a page of roots, each viewer's unread replies, and who takes
//! part in a thread (whom a reply notifies).
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::message;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect, Value,
    sea_query::{Expr, ExprTrait},
};

use super::{Reads, Txn, ids, sql};
use crate::error::AppResult;

/// What a thread's root shows of its replies: those not deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub replies: i64,
    pub last_reply_at: DateTime<Utc>,
    /// Who replied, in the order of their first reply.
    pub repliers: Vec<i64>,
}

/// The summary of each of `roots` that has a reply standing. One statement, whatever the number
/// of roots: a row per (root, replier).
pub async fn summaries(db: &impl Reads, roots: &[i64]) -> AppResult<HashMap<i64, Summary>> {
    if roots.is_empty() {
        return Ok(HashMap::new());
    }
    use message::Column as C;
    let rows: Vec<ReplierRow> = message::Entity::find()
        .select_only()
        .column_as(C::ThreadRootId, "root")
        .column_as(C::SenderId, "sender")
        .column_as(Expr::col(C::Id).count(), "replies")
        .column_as(Expr::col(C::CreatedAt).max(), "last_at")
        .column_as(Expr::col(C::Seq).min(), "first_seq")
        .filter(C::ThreadRootId.is_in(roots.iter().copied()))
        .filter(C::DeletedAt.is_null())
        .group_by(C::ThreadRootId)
        .group_by(C::SenderId)
        .into_model()
        .all(db.conn())
        .await?;
    let mut by_root: HashMap<i64, Vec<ReplierRow>> = HashMap::new();
    for row in rows {
        by_root.entry(row.root).or_default().push(row);
    }
    Ok(by_root
        .into_iter()
        .map(|(root, mut repliers)| {
            repliers.sort_unstable_by_key(|r| r.first_seq);
            let summary = Summary {
                replies: repliers.iter().map(|r| r.replies).sum(),
                last_reply_at: repliers.iter().map(|r| r.last_at).max().unwrap_or_default(),
                repliers: repliers.iter().filter_map(|r| r.sender).collect(),
            };
            (root, summary)
        })
        .collect())
}

/// One replier's share of a thread.
#[derive(FromQueryResult)]
struct ReplierRow {
    root: i64,
    sender: Option<i64>,
    replies: i64,
    last_at: DateTime<Utc>,
    first_seq: i64,
}

/// For each of `roots`, the replies standing past the user's read marker in its conversation and
/// not the user's own (roots without any are left out). One statement.
pub async fn unread(db: &impl Reads, user_id: i64, roots: &[i64]) -> AppResult<HashMap<i64, i64>> {
    if roots.is_empty() {
        return Ok(HashMap::new());
    }
    let db = db.conn();
    let placeholders = super::placeholders(2, roots.len());
    let mut values: Vec<Value> = vec![user_id.into()];
    values.extend(roots.iter().map(|id| Value::from(*id)));
    // Raw for the join on a column comparison, as `conversations::unread_counts`.
    let rows = db
        .query_all_raw(sql(
            db,
            &format!(
                "SELECT m.thread_root_id AS root, COUNT(m.id) AS unread FROM messages m \
                 JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = $1 \
                 WHERE m.thread_root_id IN ({placeholders}) AND m.seq > mb.last_read_seq \
                 AND m.deleted_at IS NULL AND (m.sender_id IS NULL OR m.sender_id <> $1) \
                 GROUP BY m.thread_root_id"
            ),
            values,
        ))
        .await?;
    let mut out = HashMap::new();
    for row in rows {
        out.insert(
            row.try_get::<i64>("", "root")?,
            row.try_get::<i64>("", "unread")?,
        );
    }
    Ok(out)
}

/// Whom a new reply by `sender_id` in the thread of `root` notifies: the root's sender and
/// everyone with a standing reply in it (the summary's participants) who is a member of the
/// conversation now and has not muted it, but not the sender and not anyone who has blocked the
/// sender.
pub async fn participants_to_notify(txn: &Txn, root: i64, sender_id: i64) -> AppResult<Vec<i64>> {
    ids(
        txn,
        "SELECT DISTINCT m.sender_id AS id FROM messages m \
         JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = m.sender_id \
         AND mb.muted = FALSE \
         WHERE (m.id = $1 OR (m.thread_root_id = $1 AND m.deleted_at IS NULL)) \
         AND m.sender_id <> $2 \
         AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = m.sender_id \
                         AND b.blocked_id = $2)",
        vec![root.into(), sender_id.into()],
    )
    .await
}
