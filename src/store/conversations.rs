//! Conversations and their members: membership, direct conversations, the per-user list, unread
//! counts and read markers.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{conversation, member, message};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, Value,
    sea_query::{Expr, ExprTrait},
};

use super::{
    Reads, Txn, ids,
    pagination::{Page, beyond_position},
    sql,
};
use crate::error::{AppError, AppResult};

/// The conversation and the user's membership in it, if they are a member.
pub async fn membership(
    db: &impl Reads,
    conversation_id: i64,
    user_id: i64,
) -> AppResult<Option<(conversation::Model, member::Model)>> {
    let db = db.conn();
    let Some(member) = member::Entity::find_by_id((conversation_id, user_id))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let conversation = conversation::Entity::find_by_id(conversation_id)
        .one(db)
        .await?;
    Ok(conversation.map(|c| (c, member)))
}

/// A conversation by id.
pub async fn find(db: &impl Reads, id: i64) -> AppResult<Option<conversation::Model>> {
    Ok(conversation::Entity::find_by_id(id).one(db.conn()).await?)
}

/// The direct conversation with this key, if it exists.
pub async fn direct_by_key(db: &impl Reads, key: &str) -> AppResult<Option<conversation::Model>> {
    Ok(conversation::Entity::find()
        .filter(conversation::Column::DirectKey.eq(key))
        .one(db.conn())
        .await?)
}

/// Makes a direct conversation of `members` under `key`, unless one exists: the unique key
/// decides a race between two first sends.
pub async fn insert_direct(
    txn: &Txn,
    key: &str,
    kind: &str,
    role: &str,
    members: [i64; 2],
    at: DateTime<Utc>,
) -> AppResult<()> {
    let inserted = conversation::Entity::insert(conversation::ActiveModel {
        kind: Set(kind.into()),
        name: Set(None),
        topic: Set(None),
        direct_key: Set(Some(key.into())),
        last_seq: Set(0),
        last_message_id: Set(None),
        last_activity_at: Set(at),
        created_at: Set(at),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([conversation::Column::DirectKey])
    .exec(txn)
    .await?;
    if let sea_orm::TryInsertResult::Inserted(result) = inserted {
        member::Entity::insert_many(members.map(|user_id| member::ActiveModel {
            conversation_id: Set(result.last_insert_id),
            user_id: Set(user_id),
            role: Set(role.into()),
            last_read_seq: Set(0),
            last_read_at: Set(None),
            joined_at: Set(at),
            muted: Set(false),
        }))
        .exec(txn)
        .await?;
    }
    Ok(())
}

/// A user's conversations, latest activity first. Positions are (activity in µs, id).
pub async fn list_for_user(
    db: &impl Reads,
    user_id: i64,
    kind: Option<&str>,
    after: Option<(i64, i64)>,
    first: u64,
) -> AppResult<Page<conversation::Model>> {
    let mut query = conversation::Entity::find()
        .filter(
            conversation::Column::Id.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(member::Column::ConversationId)
                    .from(member::Entity)
                    .and_where(member::Column::UserId.eq(user_id))
                    .to_owned(),
            ),
        )
        .order_by_desc(conversation::Column::LastActivityAt)
        .order_by_desc(conversation::Column::Id);
    if let Some(kind) = kind {
        query = query.filter(conversation::Column::Kind.eq(kind));
    }
    if let Some(position) = after {
        query = query.filter(beyond_position(
            conversation::Column::LastActivityAt,
            conversation::Column::Id,
            position,
            false,
        )?);
    }
    let rows = query.limit(first + 1).all(db.conn()).await?;
    Ok(Page::forward(rows, first, after.is_some()))
}

/// Conversations by id, for batching.
pub async fn by_ids(db: &impl Reads, ids: &[i64]) -> AppResult<HashMap<i64, conversation::Model>> {
    Ok(conversation::Entity::find()
        .filter(conversation::Column::Id.is_in(ids.iter().copied()))
        .all(db.conn())
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect())
}

/// The members of each conversation, for batching.
pub async fn members_of(
    db: &impl Reads,
    conversation_ids: &[i64],
) -> AppResult<HashMap<i64, Vec<member::Model>>> {
    let mut out: HashMap<i64, Vec<member::Model>> = HashMap::new();
    for m in member::Entity::find()
        .filter(member::Column::ConversationId.is_in(conversation_ids.iter().copied()))
        .order_by_asc(member::Column::JoinedAt)
        .order_by_asc(member::Column::UserId)
        .all(db.conn())
        .await?
    {
        out.entry(m.conversation_id).or_default().push(m);
    }
    Ok(out)
}

/// The ids of the conversations a user belongs to.
pub async fn ids_of_member(db: &impl Reads, user_id: i64) -> AppResult<Vec<i64>> {
    ids(
        db.conn(),
        "SELECT conversation_id AS id FROM members WHERE user_id = $1",
        vec![user_id.into()],
    )
    .await
}

/// The ids of a conversation's members: who may receive its events.
pub async fn member_ids(db: &impl Reads, conversation_id: i64) -> AppResult<Vec<i64>> {
    ids(
        db.conn(),
        "SELECT user_id AS id FROM members WHERE conversation_id = $1",
        vec![conversation_id.into()],
    )
    .await
}

/// The messages counted as unread for `$1` (the user): from others, not deleted, of the timeline
/// (a reply in a thread counts in its thread's summary instead), past the user's read marker; a system message about the user's own action (adding someone, renaming)
/// is theirs too. Raw: a join on a column comparison with two nullable exclusions reads plainer
/// than the builder's spelling, and both backends take it as written.
const UNREAD: &str = "FROM members mb JOIN messages m ON m.conversation_id = mb.conversation_id \
     AND m.seq > mb.last_read_seq \
     WHERE mb.user_id = $1 AND m.deleted_at IS NULL AND m.thread_root_id IS NULL \
     AND (m.sender_id IS NULL OR m.sender_id <> $1) \
     AND (m.system_actor_id IS NULL OR m.system_actor_id <> $1)";

/// Unread messages in each of the conversations.
pub async fn unread_counts(
    db: &impl Reads,
    user_id: i64,
    conversation_ids: &[i64],
) -> AppResult<HashMap<i64, i64>> {
    if conversation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let db = db.conn();
    let placeholders = super::placeholders(2, conversation_ids.len());
    let mut values: Vec<Value> = vec![user_id.into()];
    values.extend(conversation_ids.iter().map(|id| Value::from(*id)));
    let rows = db
        .query_all_raw(sql(
            db,
            &format!(
                "SELECT mb.conversation_id AS conversation_id, COUNT(m.id) AS unread {UNREAD} \
                 AND mb.conversation_id IN ({placeholders}) GROUP BY mb.conversation_id"
            ),
            values,
        ))
        .await?;
    let mut out = HashMap::new();
    for row in rows {
        out.insert(
            row.try_get::<i64>("", "conversation_id")?,
            row.try_get::<i64>("", "unread")?,
        );
    }
    Ok(out)
}

/// Unread messages across all of a user's conversations.
pub async fn total_unread(db: &impl Reads, user_id: i64) -> AppResult<i64> {
    let db = db.conn();
    let row = db
        .query_one_raw(sql(
            db,
            &format!("SELECT COUNT(m.id) AS unread {UNREAD}"),
            vec![user_id.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "unread")?,
        None => 0,
    })
}

/// Moves a member's read marker forward to `up_to_seq`, read `at`; never backwards. Whether it
/// moved.
pub async fn move_read_marker(
    txn: &Txn,
    conversation_id: i64,
    user_id: i64,
    up_to_seq: i64,
    at: DateTime<Utc>,
) -> AppResult<bool> {
    let moved = member::Entity::update_many()
        .col_expr(member::Column::LastReadSeq, Expr::value(up_to_seq))
        .col_expr(member::Column::LastReadAt, Expr::value(at))
        .filter(member::Column::ConversationId.eq(conversation_id))
        .filter(member::Column::UserId.eq(user_id))
        .filter(member::Column::LastReadSeq.lt(up_to_seq))
        .exec(txn)
        .await?
        .rows_affected;
    Ok(moved > 0)
}

/// Sets a member's read marker to `seq` (read at `at`), back or forward: `markUnread`'s move.
pub async fn set_read_marker(
    txn: &Txn,
    conversation_id: i64,
    user_id: i64,
    seq: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> AppResult<()> {
    member::Entity::update_many()
        .col_expr(member::Column::LastReadSeq, Expr::value(seq))
        .col_expr(member::Column::LastReadAt, Expr::value(at))
        .filter(member::Column::ConversationId.eq(conversation_id))
        .filter(member::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// The newest message at or below `seq` in the conversation: what a marker at `seq` covers.
pub async fn newest_up_to(txn: &Txn, conversation_id: i64, seq: i64) -> AppResult<Option<i64>> {
    Ok(message::Entity::find()
        .select_only()
        .column(message::Column::Id)
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Seq.lte(seq))
        .order_by_desc(message::Column::Seq)
        .limit(1)
        .into_tuple::<i64>()
        .one(txn)
        .await?)
}

/// A read marker as a receipt: whose, where, up to which message, when.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub conversation_id: i64,
    pub user_id: i64,
    pub up_to_message_id: Option<i64>,
    pub read_at: DateTime<Utc>,
}

/// Read markers moved after a position (read µs, conversation, user), oldest first, in one
/// conversation or all of the user's: what a resuming `readReceipts` subscriber missed.
pub async fn receipts_after(
    db: &impl Reads,
    user_id: i64,
    conversation_id: Option<i64>,
    (micros, after_conversation, after_user): (i64, i64, i64),
    limit: u64,
) -> AppResult<Vec<Receipt>> {
    let at = DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| AppError::bad_input("cursor out of range"))?;
    let mut query = member::Entity::find()
        .filter(member::Column::LastReadAt.is_not_null())
        .filter(
            Expr::col(member::Column::LastReadAt)
                .gt(at)
                .or(Expr::col(member::Column::LastReadAt).eq(at).and(
                    Expr::col(member::Column::ConversationId)
                        .gt(after_conversation)
                        .or(Expr::col(member::Column::ConversationId)
                            .eq(after_conversation)
                            .and(Expr::col(member::Column::UserId).gt(after_user))),
                )),
        )
        .order_by_asc(member::Column::LastReadAt)
        .order_by_asc(member::Column::ConversationId)
        .order_by_asc(member::Column::UserId)
        .limit(limit);
    query = match conversation_id {
        Some(id) => query.filter(member::Column::ConversationId.eq(id)),
        None => query.filter(
            member::Column::ConversationId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(member::Column::ConversationId)
                    .from(member::Entity)
                    .and_where(member::Column::UserId.eq(user_id))
                    .to_owned(),
            ),
        ),
    };
    // The newest message each marker covers, in the same statement: one query per page, not one
    // per receipt.
    // (conversation, reader, read at, newest message read)
    type Row = (i64, i64, Option<DateTime<Utc>>, Option<i64>);
    let rows: Vec<Row> = query
        .select_only()
        .column(member::Column::ConversationId)
        .column(member::Column::UserId)
        .column(member::Column::LastReadAt)
        .expr_as(
            // Raw: a correlated subquery on the outer row's columns.
            Expr::cust(
                "(SELECT m.id FROM messages m WHERE m.conversation_id = members.conversation_id \
                 AND m.seq <= members.last_read_seq ORDER BY m.seq DESC LIMIT 1)",
            ),
            "up_to_message_id",
        )
        .into_tuple()
        .all(db.conn())
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(conversation_id, user_id, read_at, up_to_message_id)| {
            Some(Receipt {
                conversation_id,
                user_id,
                up_to_message_id,
                read_at: read_at?,
            })
        })
        .collect())
}

/// Turns a member's MESSAGE/FILE notifications for a conversation off or on.
pub async fn set_muted(
    txn: &Txn,
    conversation_id: i64,
    user_id: i64,
    muted: bool,
) -> AppResult<()> {
    member::Entity::update_many()
        .col_expr(member::Column::Muted, Expr::value(muted))
        .filter(member::Column::ConversationId.eq(conversation_id))
        .filter(member::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}
