//! Reactions and pins: the rows behind `chat::reactions` and `chat::pins`.
use std::collections::HashMap;

use entity::{message, notification, reaction};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, sea_query::OnConflict,
};

use crate::{chat::model::now, error::AppResult};

/// The reactions of each of `message_ids`, in the order they were made (so each message's emoji
/// come in the order of their first use). One statement, whatever the number of messages.
pub async fn of_messages(
    db: &impl ConnectionTrait,
    message_ids: &[i64],
) -> AppResult<HashMap<i64, Vec<reaction::Model>>> {
    let mut found: HashMap<i64, Vec<reaction::Model>> = HashMap::new();
    if message_ids.is_empty() {
        return Ok(found);
    }
    let rows = reaction::Entity::find()
        .filter(reaction::Column::MessageId.is_in(message_ids.iter().copied()))
        .order_by_asc(reaction::Column::Id)
        .all(db)
        .await?;
    for row in rows {
        found.entry(row.message_id).or_default().push(row);
    }
    Ok(found)
}

/// Whether the message already has a reaction with `emoji` (by anyone), and how many distinct
/// emoji it has.
pub async fn emoji_use(
    txn: &DatabaseTransaction,
    message_id: i64,
    emoji: &str,
) -> AppResult<(bool, u64)> {
    let used: Vec<String> = reaction::Entity::find()
        .select_only()
        .column(reaction::Column::Emoji)
        .distinct()
        .filter(reaction::Column::MessageId.eq(message_id))
        .into_tuple()
        .all(txn)
        .await?;
    Ok((used.iter().any(|e| e == emoji), used.len() as u64))
}

/// Adds the user's reaction; false when it was there already.
pub async fn insert(
    txn: &DatabaseTransaction,
    message_id: i64,
    user_id: i64,
    emoji: &str,
) -> AppResult<bool> {
    let inserted = reaction::Entity::insert(reaction::ActiveModel {
        message_id: Set(message_id),
        user_id: Set(user_id),
        emoji: Set(emoji.to_owned()),
        created_at: Set(now()),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::columns([
            reaction::Column::MessageId,
            reaction::Column::Emoji,
            reaction::Column::UserId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(inserted > 0)
}

/// Removes the user's reaction; false when there was none.
pub async fn delete(
    txn: &DatabaseTransaction,
    message_id: i64,
    user_id: i64,
    emoji: &str,
) -> AppResult<bool> {
    let deleted = reaction::Entity::delete_many()
        .filter(reaction::Column::MessageId.eq(message_id))
        .filter(reaction::Column::UserId.eq(user_id))
        .filter(reaction::Column::Emoji.eq(emoji))
        .exec(txn)
        .await?;
    Ok(deleted.rows_affected > 0)
}

/// Removes every reaction to a message (it was deleted).
pub async fn clear(txn: &DatabaseTransaction, message_id: i64) -> AppResult<()> {
    reaction::Entity::delete_many()
        .filter(reaction::Column::MessageId.eq(message_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Tells the author of a message about a reaction: their unread REACTION notification for the
/// message counts one more, or a new one is made. One per message while unread.
pub async fn notify_reaction(
    txn: &DatabaseTransaction,
    author_id: i64,
    actor_id: i64,
    message: &message::Model,
    text: String,
) -> AppResult<notification::Model> {
    let at = now();
    let unread = notification::Entity::find()
        .filter(notification::Column::UserId.eq(author_id))
        .filter(notification::Column::Kind.eq("REACTION"))
        .filter(notification::Column::MessageId.eq(message.id))
        .filter(notification::Column::IsRead.eq(false))
        .one(txn)
        .await?;
    if let Some(row) = unread {
        let count = row.count + 1;
        let mut row: notification::ActiveModel = row.into();
        row.count = Set(count);
        row.actor_id = Set(Some(actor_id));
        row.text = Set(text);
        row.updated_at = Set(at);
        return Ok(row.update(txn).await?);
    }
    super::notifications::insert_one(
        txn,
        author_id,
        Some(actor_id),
        "REACTION",
        text,
        Some(message.conversation_id),
        Some(message.id),
        at,
    )
    .await
}

/// How many messages of the conversation are pinned.
pub async fn pin_count(txn: &DatabaseTransaction, conversation_id: i64) -> AppResult<u64> {
    Ok(message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::PinnedAt.is_not_null())
        .count(txn)
        .await?)
}

/// Pins (`by` is Some) or unpins (None) a message.
pub async fn set_pin(
    txn: &DatabaseTransaction,
    message: message::Model,
    by: Option<i64>,
) -> AppResult<message::Model> {
    let mut active: message::ActiveModel = message.into();
    active.pinned_at = Set(by.map(|_| now()));
    active.pinned_by_id = Set(by);
    Ok(active.update(txn).await?)
}

/// The conversation's pinned messages, most recently pinned first (at most `limit`).
pub async fn pinned(
    db: &impl ConnectionTrait,
    conversation_id: i64,
    limit: u64,
) -> AppResult<Vec<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::PinnedAt.is_not_null())
        .order_by_desc(message::Column::PinnedAt)
        .order_by_desc(message::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}
