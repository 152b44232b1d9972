//! Read markers moved back (`markUnread`); moving them forward is in `chat::conversations`.
use entity::{member, message};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use crate::error::AppResult;

/// The viewer's membership as it is in the transaction.
pub async fn membership(
    txn: &DatabaseTransaction,
    conversation_id: i64,
    user_id: i64,
) -> AppResult<Option<member::Model>> {
    Ok(member::Entity::find_by_id((conversation_id, user_id))
        .one(txn)
        .await?)
}

/// Sets the member's marker to `seq` (read at `at`).
pub async fn set_marker(
    txn: &DatabaseTransaction,
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
pub async fn newest_up_to(
    txn: &DatabaseTransaction,
    conversation_id: i64,
    seq: i64,
) -> AppResult<Option<i64>> {
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
