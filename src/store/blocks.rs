//! Blocks as stored: one row per (blocker, blocked).
use chrono::Utc;
use entity::block;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::error::AppResult;

/// How many users `blocker` has blocked.
pub async fn count_by(db: &impl ConnectionTrait, blocker: i64) -> AppResult<u64> {
    Ok(block::Entity::find()
        .filter(block::Column::BlockerId.eq(blocker))
        .count(db)
        .await?)
}

/// Records a block; one already there is left as it is.
pub async fn insert(db: &impl ConnectionTrait, blocker: i64, blocked: i64) -> AppResult<()> {
    block::Entity::insert(block::ActiveModel {
        blocker_id: Set(blocker),
        blocked_id: Set(blocked),
        created_at: Set(Utc::now()),
    })
    .on_conflict_do_nothing_on([block::Column::BlockerId, block::Column::BlockedId])
    .exec(db)
    .await?;
    Ok(())
}

/// Removes a block, if there is one.
pub async fn delete(db: &impl ConnectionTrait, blocker: i64, blocked: i64) -> AppResult<()> {
    block::Entity::delete_many()
        .filter(block::Column::BlockerId.eq(blocker))
        .filter(block::Column::BlockedId.eq(blocked))
        .exec(db)
        .await?;
    Ok(())
}

/// Up to `limit` of whom `blocker` has blocked, most recent first.
pub async fn blocked_by(
    db: &impl ConnectionTrait,
    blocker: i64,
    limit: u64,
) -> AppResult<Vec<i64>> {
    Ok(block::Entity::find()
        .select_only()
        .column(block::Column::BlockedId)
        .filter(block::Column::BlockerId.eq(blocker))
        .order_by_desc(block::Column::CreatedAt)
        .limit(limit)
        .into_tuple::<i64>()
        .all(db)
        .await?)
}

/// Whether `blocker` has blocked `blocked`.
pub async fn exists(db: &impl ConnectionTrait, blocker: i64, blocked: i64) -> AppResult<bool> {
    Ok(block::Entity::find_by_id((blocker, blocked))
        .one(db)
        .await?
        .is_some())
}

/// Of `candidates`, the lowest id of one who has blocked `actor`, if any.
pub async fn first_blocker_of(
    db: &impl ConnectionTrait,
    actor: i64,
    candidates: &[i64],
) -> AppResult<Option<i64>> {
    Ok(block::Entity::find()
        .select_only()
        .column(block::Column::BlockerId)
        .filter(block::Column::BlockedId.eq(actor))
        .filter(block::Column::BlockerId.is_in(candidates.iter().copied()))
        .order_by_asc(block::Column::BlockerId)
        .into_tuple::<i64>()
        .one(db)
        .await?)
}
