//! Conversations and membership: direct conversations made on first use, the per-user list ordered
//! by activity, unread counts from read markers, marking read and typing.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{conversation, member, message};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Value,
    sea_query::{Expr, ExprTrait},
};

use super::pagination::{Page, beyond_position};
use crate::{
    AppState,
    auth::Viewer,
    chat::model::DIRECT,
    chat::model::now,
    db,
    error::{AppError, AppResult},
    events::{Envelope, Event},
    store::sql,
};

/// The conversation and the viewer's membership, or NOT_FOUND (outsiders cannot tell a
/// conversation they are not in from one that does not exist).
pub async fn require_member(
    db: &impl ConnectionTrait,
    conversation_id: i64,
    user_id: i64,
) -> AppResult<(conversation::Model, member::Model)> {
    let not_found = || AppError::not_found("conversation");
    let member = member::Entity::find_by_id((conversation_id, user_id))
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let conversation = conversation::Entity::find_by_id(conversation_id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    Ok((conversation, member))
}

fn direct_key(a: i64, b: i64) -> String {
    format!("{}:{}", Ord::min(a, b), Ord::max(a, b))
}

/// The direct conversation between two users, if it exists.
pub async fn direct_between(
    db: &DatabaseConnection,
    a: i64,
    b: i64,
) -> AppResult<Option<conversation::Model>> {
    Ok(conversation::Entity::find()
        .filter(conversation::Column::DirectKey.eq(direct_key(a, b)))
        .one(db)
        .await?)
}

/// The direct conversation between two users, made on first use. Exactly one is ever made, even
/// when both users send their first message at the same moment: the unique key decides the race.
pub async fn get_or_create_direct(
    db: &DatabaseConnection,
    a: i64,
    b: i64,
) -> AppResult<conversation::Model> {
    if a == b {
        return Err(AppError::bad_input(
            "a direct conversation needs another user",
        ));
    }
    if let Some(existing) = direct_between(db, a, b).await? {
        return Ok(existing);
    }
    let txn = db::begin_write(db).await?;
    let now = now();
    let inserted = conversation::Entity::insert(conversation::ActiveModel {
        kind: Set(DIRECT.into()),
        name: Set(None),
        topic: Set(None),
        direct_key: Set(Some(direct_key(a, b))),
        last_seq: Set(0),
        last_message_id: Set(None),
        last_activity_at: Set(now),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([conversation::Column::DirectKey])
    .exec(&txn)
    .await?;
    if let sea_orm::TryInsertResult::Inserted(result) = inserted {
        member::Entity::insert_many([a, b].map(|user_id| member::ActiveModel {
            conversation_id: Set(result.last_insert_id),
            user_id: Set(user_id),
            role: Set(super::model::Role::Member.as_str().into()),
            last_read_seq: Set(0),
            last_read_at: Set(None),
            joined_at: Set(now),
            muted: Set(false),
        }))
        .exec(&txn)
        .await?;
    }
    txn.commit().await?;
    direct_between(db, a, b)
        .await?
        .ok_or_else(|| AppError::Internal("direct conversation vanished".into()))
}

/// A user's conversations, latest activity first. Positions are (activity in µs, id).
pub async fn list_for_user(
    db: &DatabaseConnection,
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
    let rows = query.limit(first + 1).all(db).await?;
    Ok(Page::forward(rows, first, after.is_some()))
}

/// Conversations by id, for batching.
pub async fn by_ids(
    db: &DatabaseConnection,
    ids: &[i64],
) -> AppResult<HashMap<i64, conversation::Model>> {
    Ok(conversation::Entity::find()
        .filter(conversation::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect())
}

/// The members of each conversation, for batching.
pub async fn members_of(
    db: &DatabaseConnection,
    conversation_ids: &[i64],
) -> AppResult<HashMap<i64, Vec<member::Model>>> {
    let mut out: HashMap<i64, Vec<member::Model>> = HashMap::new();
    for m in member::Entity::find()
        .filter(member::Column::ConversationId.is_in(conversation_ids.iter().copied()))
        .order_by_asc(member::Column::JoinedAt)
        .order_by_asc(member::Column::UserId)
        .all(db)
        .await?
    {
        out.entry(m.conversation_id).or_default().push(m);
    }
    Ok(out)
}

/// The ids of a conversation's members: who may receive its events.
pub async fn member_ids(db: &impl ConnectionTrait, conversation_id: i64) -> AppResult<Vec<i64>> {
    db::ids(
        db,
        "SELECT user_id AS id FROM members WHERE conversation_id = $1",
        vec![conversation_id.into()],
    )
    .await
}

/// Messages from others, not deleted, past the user's read marker, in each of the conversations.
/// A system message about the user's own action (adding someone, renaming) is theirs too.
pub async fn unread_counts(
    db: &DatabaseConnection,
    user_id: i64,
    conversation_ids: &[i64],
) -> AppResult<HashMap<i64, i64>> {
    if conversation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let placeholders = (0..conversation_ids.len())
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let mut values: Vec<Value> = vec![user_id.into()];
    values.extend(conversation_ids.iter().map(|id| Value::from(*id)));
    let rows = db
        .query_all_raw(sql(
            db,
            &format!(
                "SELECT mb.conversation_id AS conversation_id, COUNT(m.id) AS unread \
                 FROM members mb JOIN messages m ON m.conversation_id = mb.conversation_id \
                 AND m.seq > mb.last_read_seq \
                 WHERE mb.user_id = $1 AND mb.conversation_id IN ({placeholders}) \
                 AND m.deleted_at IS NULL AND (m.sender_id IS NULL OR m.sender_id <> $1) \
                 AND (m.system_actor_id IS NULL OR m.system_actor_id <> $1) \
                 GROUP BY mb.conversation_id"
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
pub async fn total_unread(db: &DatabaseConnection, user_id: i64) -> AppResult<i64> {
    let row = db
        .query_one_raw(sql(
            db,
            "SELECT COUNT(m.id) AS unread \
             FROM members mb JOIN messages m ON m.conversation_id = mb.conversation_id \
             AND m.seq > mb.last_read_seq \
             WHERE mb.user_id = $1 AND m.deleted_at IS NULL \
             AND (m.sender_id IS NULL OR m.sender_id <> $1) \
             AND (m.system_actor_id IS NULL OR m.system_actor_id <> $1)",
            vec![user_id.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "unread")?,
        None => 0,
    })
}

/// Moves the viewer's read marker forward to a message (or to the latest), and tells the other
/// members. Markers never move backwards.
pub async fn mark_read(
    state: &AppState,
    viewer: Viewer,
    conversation_id: i64,
    up_to_message_id: Option<i64>,
) -> AppResult<conversation::Model> {
    let db = &state.db;
    let (conversation, member) = require_member(db, conversation_id, viewer.user_id).await?;
    let (up_to_seq, up_to_message_id) = match up_to_message_id {
        None => (conversation.last_seq, conversation.last_message_id),
        Some(id) => {
            let message = message::Entity::find_by_id(id)
                .one(db)
                .await?
                .filter(|m| m.conversation_id == conversation_id)
                .ok_or_else(|| AppError::not_found("message"))?;
            (message.seq, Some(message.id))
        }
    };
    if up_to_seq <= member.last_read_seq {
        return Ok(conversation);
    }
    let read_at = now();
    let moved = member::Entity::update_many()
        .col_expr(member::Column::LastReadSeq, Expr::value(up_to_seq))
        .col_expr(member::Column::LastReadAt, Expr::value(read_at))
        .filter(member::Column::ConversationId.eq(conversation_id))
        .filter(member::Column::UserId.eq(viewer.user_id))
        .filter(member::Column::LastReadSeq.lt(up_to_seq))
        .exec(db)
        .await?
        .rows_affected;
    if let Some(message_id) = up_to_message_id {
        super::notifications::read_through(db, viewer.user_id, conversation_id, message_id).await?;
    }
    if moved > 0 {
        let recipients = member_ids(db, conversation_id).await?;
        state
            .bus
            .publish(Envelope::new(
                recipients,
                Event::ReadReceipt {
                    conversation_id,
                    user_id: viewer.user_id,
                    up_to_seq,
                    up_to_message_id,
                    read_at,
                },
            ))
            .await;
    }
    Ok(conversation)
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
    db: &DatabaseConnection,
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
            Expr::cust(
                "(SELECT m.id FROM messages m WHERE m.conversation_id = members.conversation_id \
                 AND m.seq <= members.last_read_seq ORDER BY m.seq DESC LIMIT 1)",
            ),
            "up_to_message_id",
        )
        .into_tuple()
        .all(db)
        .await?;
    let receipts = rows
        .into_iter()
        .filter_map(|(conversation_id, user_id, read_at, up_to_message_id)| {
            Some(Receipt {
                conversation_id,
                user_id,
                up_to_message_id,
                read_at: read_at?,
            })
        })
        .collect();
    Ok(receipts)
}
