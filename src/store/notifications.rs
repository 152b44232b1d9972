//! Notifications: the rows a message makes for members (one each, or a collapsed row counting a
//! conversation's unread messages), the backlog of big rooms' messages whose collapsed rows follow
//! the commit, and the user's reads and marks.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{member, message, notification, user};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, Value, sea_query::Expr,
};

use super::{
    Reads, Txn, all_rows, ids,
    pagination::{Page, beyond_position},
    postgres, sql, sqlite,
};
use crate::error::AppResult;

/// The kinds a collapsed row may have: it counts a member's unread messages of a conversation.
const COLLAPSED: [&str; 2] = ["MESSAGE", "FILE"];
/// The kinds made for one member by one message.
const DIRECTED: [&str; 3] = ["MENTION", "REPLY", "THREAD_REPLY"];

/// Of the users named (case-folded usernames), the members of the conversation.
pub async fn members_named(
    txn: &Txn,
    conversation_id: i64,
    names: Vec<String>,
) -> AppResult<Vec<i64>> {
    Ok(user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(user::Column::UsernameKey.is_in(names))
        .filter(
            user::Column::Id.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(member::Column::UserId)
                    .from(member::Entity)
                    .and_where(member::Column::ConversationId.eq(conversation_id))
                    .to_owned(),
            ),
        )
        .into_tuple()
        .all(txn)
        .await?)
}

/// Inserts one notification per `(user, kind)` about a message, all made `at`.
pub async fn insert_directed(
    txn: &Txn,
    message: &message::Model,
    actor_id: i64,
    text: &str,
    to: &[(i64, &'static str)],
    at: DateTime<Utc>,
) -> AppResult<()> {
    notification::Entity::insert_many(to.iter().map(|(user_id, kind)| notification::ActiveModel {
        user_id: Set(*user_id),
        actor_id: Set(Some(actor_id)),
        kind: Set((*kind).into()),
        text: Set(text.to_owned()),
        conversation_id: Set(Some(message.conversation_id)),
        message_id: Set(Some(message.id)),
        count: Set(1),
        is_read: Set(false),
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    }))
    .exec(txn)
    .await?;
    Ok(())
}

/// Moves each of `to`'s unread THREAD_REPLY row for the thread of `reply` (if they have one) on
/// to `reply`, counting it; returns whose rows moved. Raw: the rows are found through their
/// message's thread, and the moved ones are read back with RETURNING (both backends have it).
pub async fn bump_thread_replies(
    txn: &Txn,
    reply: &message::Model,
    actor_id: i64,
    text: &str,
    to: &[i64],
) -> AppResult<Vec<i64>> {
    let mut values: Vec<Value> = vec![
        reply.id.into(),
        actor_id.into(),
        text.into(),
        reply.created_at.into(),
        reply.conversation_id.into(),
        reply.thread_root_id.into(),
    ];
    values.extend(to.iter().map(|id| Value::from(*id)));
    let rows = txn
        .query_all_raw(sql(
            txn,
            &format!(
                "UPDATE notifications SET message_id = $1, actor_id = $2, text = $3, \
                 updated_at = $4, count = count + 1 \
                 WHERE kind = 'THREAD_REPLY' AND is_read = FALSE AND conversation_id = $5 \
                 AND user_id IN ({}) \
                 AND message_id IN (SELECT id FROM messages WHERE thread_root_id = $6) \
                 RETURNING user_id",
                super::placeholders(7, to.len())
            ),
            values,
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get::<i64>("", "user_id"))
        .collect::<Result<_, _>>()?)
}

/// Makes one notification.
#[allow(clippy::too_many_arguments)]
pub async fn insert_one(
    txn: &Txn,
    user_id: i64,
    actor_id: Option<i64>,
    kind: &str,
    text: String,
    conversation_id: Option<i64>,
    message_id: Option<i64>,
    at: DateTime<Utc>,
) -> AppResult<notification::Model> {
    Ok(notification::Entity::insert(notification::ActiveModel {
        user_id: Set(user_id),
        actor_id: Set(actor_id),
        kind: Set(kind.into()),
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

/// Whose collapsed row a bump reaches, among the members who have not muted the conversation.
pub enum Audience<'a> {
    AllBut(&'a [i64]),
    Only(i64),
}

/// Adds `count` messages, `latest` the last of them, to the unread collapsed row of each member
/// in the audience, or starts one for those who have none, updated `at`. Raw: an UPDATE and an
/// INSERT … SELECT over the same numbered parameters (`$3` is the latest message's id), each
/// with subqueries on members and notifications that the builder would spell at twice the length.
pub struct Bump {
    /// The members the bump reaches, as a SELECT of `user_id`.
    audience: String,
    pub(super) values: Vec<Value>,
}

/// A member's unread collapsed row of the conversation (`$6`), as `n`.
const UNREAD_ROW: &str =
    "n.conversation_id = $6 AND n.is_read = FALSE AND n.kind IN ('MESSAGE', 'FILE')";

impl Bump {
    /// The placeholder of the latest message's id.
    pub(super) const LATEST_PARAM: &'static str = "$3";

    /// `kind` is the collapsed row's kind (MESSAGE or FILE), `text` what it shows.
    pub fn new(
        latest: &message::Model,
        kind: &str,
        text: &str,
        count: i64,
        at: DateTime<Utc>,
        audience: Audience<'_>,
    ) -> Self {
        let mut values: Vec<Value> = vec![
            kind.into(),
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
                let list = super::placeholders(8, excluded.len());
                values.extend(excluded.iter().map(|id| Value::from(*id)));
                format!("m.user_id NOT IN ({list})")
            }
            Audience::Only(user_id) => {
                values.push(user_id.into());
                "m.user_id = $8".to_owned()
            }
        };
        Self {
            audience: format!(
                "SELECT m.user_id FROM members m WHERE m.conversation_id = $6 \
                 AND m.muted = FALSE AND {who}"
            ),
            values,
        }
    }

    /// The UPDATE of the audience's unread collapsed rows.
    pub(super) fn update(&self) -> String {
        format!(
            "UPDATE notifications SET kind = $1, text = $2, message_id = $3, actor_id = $4, \
             updated_at = $5, count = count + $7 \
             WHERE id IN (SELECT n.id FROM notifications n WHERE {UNREAD_ROW} \
             AND n.user_id IN ({audience}))",
            audience = self.audience
        )
    }

    /// The INSERT of a new row for each of the audience, as `a`, open to a WHERE that says who
    /// needs one.
    pub(super) fn insert_from_audience(&self) -> String {
        format!(
            "INSERT INTO notifications \
             (user_id, actor_id, kind, text, conversation_id, message_id, count, is_read, created_at, updated_at) \
             SELECT a.user_id, $4, $1, $2, $6, $3, $7, FALSE, $5, $5 FROM ({audience}) a",
            audience = self.audience
        )
    }

    /// The INSERT for those of the audience with no unread collapsed row (after the UPDATE).
    fn insert(&self) -> String {
        format!(
            "{} WHERE a.user_id NOT IN (SELECT n.user_id FROM notifications n WHERE {UNREAD_ROW})",
            self.insert_from_audience()
        )
    }

    /// Runs the bump, then reads back every notification made for its latest message (its own
    /// rows and the mentions and reply made before it). Sends are the hot path: on SQLite all
    /// three go as one hand-over, on PostgreSQL as one statement.
    pub async fn run_and_read_back(self, txn: &Txn) -> AppResult<Vec<notification::Model>> {
        match txn.get_database_backend() {
            DbBackend::Sqlite => {
                let (update, insert) = (self.update(), self.insert());
                sqlite::bump_and_read_back(txn, &update, &insert, self.values, Self::LATEST_PARAM)
                    .await
            }
            _ => {
                let (update, insert) = (self.update(), self.insert_from_audience());
                postgres::bump_and_read_back(txn, &update, &insert, self.values, Self::LATEST_PARAM)
                    .await
            }
        }
    }

    /// Runs the two statements one after the other.
    pub async fn run(self, txn: &Txn) -> AppResult<()> {
        txn.execute_raw(sql(txn, &self.update(), self.values.clone()))
            .await?;
        txn.execute_raw(sql(txn, &self.insert(), self.values))
            .await?;
        Ok(())
    }
}

/// Puts a big room's message in the backlog, whose collapsed rows follow the commit.
pub async fn insert_backlog(txn: &Txn, conversation_id: i64, seq: i64) -> AppResult<()> {
    txn.execute_raw(sql(
        txn,
        "INSERT INTO notification_backlog (conversation_id, seq) VALUES ($1, $2)",
        vec![conversation_id.into(), seq.into()],
    ))
    .await?;
    Ok(())
}

/// Takes a conversation's backlog: the sequence numbers of its messages, claimed by this
/// transaction (several instances may work the same backlog; each message goes to one).
pub async fn claim_backlog(txn: &Txn, conversation_id: i64) -> AppResult<Vec<i64>> {
    // Raw: DELETE … RETURNING.
    Ok(txn
        .query_all_raw(sql(
            txn,
            "DELETE FROM notification_backlog WHERE conversation_id = $1 RETURNING seq",
            vec![conversation_id.into()],
        ))
        .await?
        .iter()
        .map(|row| row.try_get::<i64>("", "seq"))
        .collect::<Result<_, _>>()?)
}

/// The conversations with messages in the backlog.
pub async fn backlog_conversations(db: &impl Reads) -> AppResult<Vec<i64>> {
    ids(
        db.conn(),
        "SELECT DISTINCT conversation_id AS id FROM notification_backlog",
        vec![],
    )
    .await
}

/// The messages users sent among those with these sequence numbers, in order.
pub async fn sent_messages(
    txn: &Txn,
    conversation_id: i64,
    seqs: Vec<i64>,
) -> AppResult<Vec<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Seq.is_in(seqs))
        .filter(message::Column::SenderId.is_not_null())
        .order_by_asc(message::Column::Seq)
        .all(txn)
        .await?)
}

/// Display names by user id.
pub async fn display_names(txn: &Txn, user_ids: Vec<i64>) -> AppResult<HashMap<i64, String>> {
    Ok(user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .column(user::Column::DisplayName)
        .filter(user::Column::Id.is_in(user_ids))
        .into_tuple::<(i64, String)>()
        .all(txn)
        .await?
        .into_iter()
        .collect())
}

/// Who each of the messages was directed at (mentions and replies): (message, user) pairs.
pub async fn directed_at(txn: &Txn, message_ids: Vec<i64>) -> AppResult<Vec<(Option<i64>, i64)>> {
    Ok(notification::Entity::find()
        .select_only()
        .column(notification::Column::MessageId)
        .column(notification::Column::UserId)
        .filter(notification::Column::MessageId.is_in(message_ids))
        .filter(notification::Column::Kind.is_in(DIRECTED))
        .into_tuple()
        .all(txn)
        .await?)
}

/// The collapsed rows of a conversation that show one of the messages.
pub async fn collapsed_showing(
    txn: &Txn,
    conversation_id: i64,
    message_ids: Vec<i64>,
) -> AppResult<Vec<notification::Model>> {
    Ok(all_rows(
        txn,
        notification::Entity::find()
            .filter(notification::Column::ConversationId.eq(conversation_id))
            .filter(notification::Column::MessageId.is_in(message_ids))
            .filter(notification::Column::Kind.is_in(COLLAPSED)),
    )
    .await?)
}

/// The notifications a message made: one row per member it notified, so 1,000 rows for a
/// message in a 1,000-member room, read through [`all_rows`] for that reason.
pub async fn made_for(txn: &Txn, message_id: i64) -> AppResult<Vec<notification::Model>> {
    Ok(all_rows(
        txn,
        notification::Entity::find().filter(notification::Column::MessageId.eq(message_id)),
    )
    .await?)
}

/// Those of `ids` that are the user's own notifications, by id.
pub async fn own_by_ids(
    db: &impl Reads,
    user_id: i64,
    ids: &[i64],
) -> AppResult<HashMap<i64, notification::Model>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(notification::Entity::find()
        .filter(notification::Column::Id.is_in(ids.iter().copied()))
        .filter(notification::Column::UserId.eq(user_id))
        .all(db.conn())
        .await?
        .into_iter()
        .map(|n| (n.id, n))
        .collect())
}

/// How many of `ids` are the user's own.
pub async fn count_owned(txn: &Txn, user_id: i64, ids: &[i64]) -> AppResult<usize> {
    let owned: Vec<i64> = notification::Entity::find()
        .select_only()
        .column(notification::Column::Id)
        .filter(notification::Column::Id.is_in(ids.iter().copied()))
        .filter(notification::Column::UserId.eq(user_id))
        .into_tuple()
        .all(txn)
        .await?;
    Ok(owned.len())
}

/// Marks notifications read by id; returns how many were unread.
pub async fn mark_ids_read(txn: &Txn, ids: Vec<i64>) -> AppResult<u64> {
    Ok(notification::Entity::update_many()
        .col_expr(notification::Column::IsRead, Expr::value(true))
        .filter(notification::Column::Id.is_in(ids))
        .filter(notification::Column::IsRead.eq(false))
        .exec(txn)
        .await?
        .rows_affected)
}

/// Marks all of a user's notifications read; returns how many were unread.
pub async fn mark_all_read(txn: &Txn, user_id: i64) -> AppResult<u64> {
    Ok(notification::Entity::update_many()
        .col_expr(notification::Column::IsRead, Expr::value(true))
        .filter(notification::Column::UserId.eq(user_id))
        .filter(notification::Column::IsRead.eq(false))
        .exec(txn)
        .await?
        .rows_affected)
}

/// Marks read a user's notifications of a conversation up to a message.
pub async fn read_through(
    txn: &Txn,
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
        .exec(txn)
        .await?;
    Ok(())
}

/// A user's notifications, most recently updated first. Positions are (updated µs, id).
pub async fn list(
    db: &impl Reads,
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
    let rows = query.limit(first + 1).all(db.conn()).await?;
    Ok(Page::forward(rows, first, after.is_some()))
}

/// A user's notifications created or updated after a position (updated µs, id), oldest first: what
/// a resuming `notifications` subscriber missed.
pub async fn changed_after(
    db: &impl Reads,
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
        .all(db.conn())
        .await?)
}

/// The position (updated µs, id) of the user's most recently changed notification, if any: no
/// `notifications` cursor this server gave the user lies beyond it (rows are never deleted, and
/// a row's time only moves forward).
pub async fn newest_position(db: &impl Reads, user_id: i64) -> AppResult<Option<(i64, i64)>> {
    let newest: Option<(DateTime<Utc>, i64)> = notification::Entity::find()
        .select_only()
        .column(notification::Column::UpdatedAt)
        .column(notification::Column::Id)
        .filter(notification::Column::UserId.eq(user_id))
        .order_by_desc(notification::Column::UpdatedAt)
        .order_by_desc(notification::Column::Id)
        .into_tuple()
        .one(db.conn())
        .await?;
    Ok(newest.map(|(at, id)| (at.timestamp_micros(), id)))
}

/// How many of a user's notifications are unread.
pub async fn unread_count(db: &impl Reads, user_id: i64) -> AppResult<u64> {
    Ok(notification::Entity::find()
        .filter(notification::Column::UserId.eq(user_id))
        .filter(notification::Column::IsRead.eq(false))
        .count(db.conn())
        .await?)
}
