//! The columns a new message's row is written with, and the notifications a send may make in the
//! same statement, shared by the backends' send statements and the store's `messages` (a leaf:
//! the backends depend on it, so it names neither them nor `messages`).
use chrono::{DateTime, Utc};
use entity::message;
use sea_orm::{ActiveModelTrait, IdenStatic, Value};

use crate::error::{AppError, AppResult};

/// The collapsed notifications of a message directed at no one: each member's (but the
/// sender's and muted members') unread MESSAGE/FILE row of the conversation counts it, or one is
/// started; in a conversation of more than `inline_members` the message goes to the backlog
/// instead.
#[derive(Debug, Clone)]
pub struct Collapsed {
    /// MESSAGE or FILE.
    pub kind: &'static str,
    /// What the rows show.
    pub text: String,
    pub inline_members: usize,
}

/// The message columns a send sets, in the order of its statement's parameters after `$1` (the
/// time); the last is the conversation. SQLite's send statement is spelled from it; PostgreSQL's
/// function `palaver_send` (migration 000014) takes its parameters in this order.
const SEND_COLUMNS: [message::Column; 12] = {
    use message::Column as C;
    [
        C::SenderId,
        C::Kind,
        C::Body,
        C::ReplyToId,
        C::ThreadRootId,
        C::ClientMessageId,
        C::AttachmentKey,
        C::AttachmentFilename,
        C::AttachmentContentType,
        C::AttachmentSize,
        C::AttachmentSha256,
        C::ConversationId,
    ]
};

/// The quoted names of [`SEND_COLUMNS`] and their placeholders (`$2` on), each comma-separated.
pub fn send_columns() -> (String, String) {
    let names = SEND_COLUMNS
        .iter()
        .map(|column| format!("\"{}\"", column.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let params = (2..=SEND_COLUMNS.len() + 1)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    (names, params)
}

/// The names of [`SEND_COLUMNS`], in order.
pub fn send_column_names() -> impl Iterator<Item = &'static str> {
    SEND_COLUMNS.iter().map(|column| column.as_str())
}

/// How many values [`send_values`] gives: the time and the columns.
pub const fn send_value_count() -> usize {
    SEND_COLUMNS.len() + 1
}

/// The placeholder a send statement binds `column` to (one of [`SEND_COLUMNS`]).
pub fn send_param(column: message::Column) -> String {
    let index = SEND_COLUMNS
        .iter()
        .position(|c| c.as_str() == column.as_str())
        .unwrap_or_else(|| unreachable!("{} is not a send column", column.as_str()));
    format!("${}", index + 2)
}

/// A send statement's values: the time, then [`SEND_COLUMNS`] from `row`.
pub fn send_values(row: &message::ActiveModel, at: DateTime<Utc>) -> AppResult<Vec<Value>> {
    let mut values: Vec<Value> = vec![at.into()];
    for column in SEND_COLUMNS {
        let value = row
            .get(column)
            .into_value()
            .ok_or_else(|| AppError::Internal(format!("a send left {} unset", column.as_str())))?;
        values.push(value);
    }
    Ok(values)
}
