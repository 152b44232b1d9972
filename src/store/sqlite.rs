//! What the store does differently on SQLite.
//!
//! sqlx's SQLite driver runs each statement on the connection's own thread and hands every row
//! back to the async side with a wake-up. So each statement costs a hand-over and back, and each
//! row another: here statements that belong together go as one script, and long listings come
//! back as one row (JSON, or a comma-separated list of ids). Every write runs in the single
//! writer's batch (see `writer`), which holds the write lock from the batch's first write to its
//! commit: nothing another connection does can come between a write and what it reads back.
use std::sync::LazyLock;

use entity::{message, notification};
use sea_orm::{
    ColumnTrait, ColumnType, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    IdenStatic, Iterable, QueryResult, QueryTrait, Select, Statement, Value,
};
use serde::de::DeserializeOwned;

use super::{
    changes::{Logged, Sent},
    id_list,
    send_row::{send_columns, send_param, send_values},
    sql,
};
use crate::{
    error::{AppError, AppResult},
    events::{MessageChange, Position},
};

/// Every model `select` finds, in no particular order, as one JSON row: read row by row, a
/// listing of 1,000 rows would pay 1,000 hand-overs.
pub async fn all_rows<E>(
    db: &impl ConnectionTrait,
    select: Select<E>,
) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: DeserializeOwned,
{
    let inner = select.build(DbBackend::Sqlite);
    let values = inner.values.map(|v| v.0).unwrap_or_default();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            json_rows_sql::<E>(&inner.sql),
            values,
        ))
        .await?;
    from_json_rows(row)
}

/// A statement returning every row `inner` selects from `E`'s table as one JSON array, in the
/// column `rows` (see [`all_rows`] for why one row).
pub fn json_rows_sql<E: EntityTrait>(inner: &str) -> String {
    // Keyed by column name, which is the model's field name in every entity of ours; SQLite keeps
    // booleans as 0 and 1, so they are turned into JSON booleans, and times are the RFC 3339
    // text sqlx stores.
    let fields = E::Column::iter()
        .map(|column| {
            let name = column.as_str();
            if matches!(column.def().get_column_type(), ColumnType::Boolean) {
                format!("'{name}', json(CASE WHEN \"{name}\" THEN 'true' ELSE 'false' END)")
            } else {
                format!("'{name}', \"{name}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("SELECT json_group_array(json_object({fields})) AS rows FROM ({inner}) AS listed")
}

/// The models in the row a [`json_rows_sql`] statement returned (none for no row).
pub fn from_json_rows<M: DeserializeOwned>(row: Option<QueryResult>) -> Result<Vec<M>, DbErr> {
    let json: String = match row {
        Some(row) => row.try_get("", "rows")?,
        None => return Ok(Vec::new()),
    };
    serde_json::from_str(&json).map_err(|e| DbErr::Json(e.to_string()))
}

/// The integers `select` returns in its one column, `id`, as one text row: listed row by row, a
/// 10,000-member room would pay 10,000 hand-overs, far more than the query itself costs.
pub async fn ids(
    db: &impl ConnectionTrait,
    select: &str,
    values: Vec<Value>,
) -> AppResult<Vec<i64>> {
    let text = format!("SELECT group_concat(id, ',') AS ids FROM ({select}) AS listed");
    let ids: Option<String> = match db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            text,
            values,
        ))
        .await?
    {
        Some(row) => row.try_get("", "ids")?,
        None => None,
    };
    id_list(ids.as_deref())
}

/// The script [`send`] runs, spelled once: the sequence bump (listing the members), the message,
/// its change-log entry.
static SEND: LazyLock<String> = LazyLock::new(|| {
    let (names, params) = send_columns();
    format!(
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = $1 WHERE id = {c} \
         RETURNING (SELECT group_concat(user_id, ',') FROM members WHERE conversation_id = {c}) \
         AS members;\n\
         INSERT INTO messages (seq, created_at, {names}) \
         SELECT last_seq, $1, {params} FROM conversations WHERE id = {c} RETURNING *;\n\
         INSERT INTO conversation_events (conversation_id, seq, kind, message_id, created_at) \
         SELECT conversation_id, seq, '{kind}', id, $1 FROM messages WHERE conversation_id = {c} \
         AND seq = (SELECT last_seq FROM conversations WHERE id = {c}) RETURNING id AS event_id",
        c = send_param(message::Column::ConversationId),
        kind = MessageChange::Created.as_str(),
    )
});

/// The writes of a send, as one hand-over: the sequence bump, the message and its change-log
/// entry (sends are the hot path). The bump also lists the conversation's members, who are told
/// about the message: the single writer holds the write lock until its commit, so the list cannot
/// change before then. Conversations are never deleted, so the bump finds the one checked before;
/// were it gone, nothing is written and NOT_FOUND returned.
pub async fn send(
    txn: &impl ConnectionTrait,
    row: message::ActiveModel,
    at: chrono::DateTime<chrono::Utc>,
) -> AppResult<Sent> {
    let values = send_values(&row, at)?;
    let rows = txn.query_all_raw(sql(txn, &SEND, values)).await?;
    let [bumped, inserted, logged] = rows.as_slice() else {
        return Err(AppError::not_found("conversation"));
    };
    let members: Option<String> = bumped.try_get("", "members")?;
    let message = message::Model::from_query_result(inserted, "")?;
    let logged = Logged {
        // The single writer commits change-log rows in id order (see `Position`).
        position: Position {
            tx: 0,
            id: logged.try_get("", "event_id")?,
        },
        change: MessageChange::Created,
        message: message.clone(),
    };
    Ok(Sent {
        message,
        recipients: id_list(members.as_deref())?,
        logged,
        root_checked: false,
        notified: None,
    })
}

/// Runs a notification bump's UPDATE and INSERT and reads back every notification made for
/// `message_id`, as one hand-over.
pub async fn bump_and_read_back(
    txn: &impl ConnectionTrait,
    update: &str,
    insert: &str,
    values: Vec<Value>,
    message_id_param: &str,
) -> AppResult<Vec<notification::Model>> {
    let read_back = json_rows_sql::<notification::Entity>(&format!(
        "SELECT * FROM notifications WHERE message_id = {message_id_param}"
    ));
    let text = format!("{update};\n{insert};\n{read_back}");
    let rows = txn.query_all_raw(sql(txn, &text, values)).await?;
    Ok(from_json_rows(rows.into_iter().last())?)
}
