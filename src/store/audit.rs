//! The audit log as stored.
use entity::audit_entry;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::{chat::model::now, error::AppResult};

/// Appends one entry, stamped now.
pub async fn insert(
    db: &impl ConnectionTrait,
    actor_id: Option<i64>,
    action: &str,
    target: Option<String>,
    detail: Option<String>,
) -> AppResult<()> {
    audit_entry::ActiveModel {
        at: Set(now()),
        actor_id: Set(actor_id),
        action: Set(action.to_owned()),
        target: Set(target),
        detail: Set(detail),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Up to `limit` entries before `before_id` (if given), newest first.
pub async fn newest(
    db: &impl ConnectionTrait,
    before_id: Option<i64>,
    limit: u64,
) -> AppResult<Vec<audit_entry::Model>> {
    let mut query = audit_entry::Entity::find().order_by_desc(audit_entry::Column::Id);
    if let Some(id) = before_id {
        query = query.filter(audit_entry::Column::Id.lt(id));
    }
    Ok(query.limit(limit).all(db).await?)
}
