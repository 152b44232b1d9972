//! Blocking: a user (the blocker) stops another from writing to them directly and from adding them
//! to rooms, stops seeing their typing and presence, and no longer shows them their own presence.
//! Rooms both are already in are unaffected: blocking is between two people.
use std::collections::HashSet;

use chrono::Utc;
use entity::block;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use crate::error::{AppError, AppResult};

/// Most users one user may block; enough for anyone, and a bound on the sets held per socket.
pub const MAX_BLOCKED: u64 = 1000;

/// Blocks a user; blocking one already blocked is not an error.
pub async fn block(db: &DatabaseConnection, blocker: i64, blocked: i64) -> AppResult<()> {
    if blocker == blocked {
        return Err(AppError::bad_input("one cannot block oneself"));
    }
    if super::users::find(db, blocked).await?.is_none() {
        return Err(AppError::not_found("user"));
    }
    let count = block::Entity::find()
        .filter(block::Column::BlockerId.eq(blocker))
        .count(db)
        .await?;
    if count >= MAX_BLOCKED {
        return Err(AppError::bad_input(format!(
            "at most {MAX_BLOCKED} users can be blocked"
        )));
    }
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

/// Lifts a block; lifting one that is not there is not an error.
pub async fn unblock(db: &DatabaseConnection, blocker: i64, blocked: i64) -> AppResult<()> {
    block::Entity::delete_many()
        .filter(block::Column::BlockerId.eq(blocker))
        .filter(block::Column::BlockedId.eq(blocked))
        .exec(db)
        .await?;
    Ok(())
}

/// Whom a user has blocked, most recent first.
pub async fn blocked_by(db: &impl ConnectionTrait, blocker: i64) -> AppResult<Vec<i64>> {
    Ok(block::Entity::find()
        .select_only()
        .column(block::Column::BlockedId)
        .filter(block::Column::BlockerId.eq(blocker))
        .order_by_desc(block::Column::CreatedAt)
        .limit(MAX_BLOCKED)
        .into_tuple::<i64>()
        .all(db)
        .await?)
}

/// The same, as a set for filtering live events.
pub async fn blocked_set(db: &impl ConnectionTrait, blocker: i64) -> AppResult<HashSet<i64>> {
    Ok(blocked_by(db, blocker).await?.into_iter().collect())
}

/// Whether `blocker` has blocked `sender`.
pub async fn is_blocked(db: &impl ConnectionTrait, blocker: i64, sender: i64) -> AppResult<bool> {
    Ok(block::Entity::find_by_id((blocker, sender))
        .one(db)
        .await?
        .is_some())
}

/// FORBIDDEN when `recipient` has blocked `sender`: the check before anything direct is written.
pub async fn ensure_not_blocked(
    db: &impl ConnectionTrait,
    recipient: i64,
    sender: i64,
) -> AppResult<()> {
    if is_blocked(db, recipient, sender).await? {
        return Err(refused_direct());
    }
    Ok(())
}

/// The refusal of a direct message to someone who blocked the sender.
pub fn refused_direct() -> AppError {
    AppError::Forbidden("this user does not accept direct messages from you".into())
}

/// Of `candidates`, one who has blocked `actor`, if any: someone the actor may not add to a room.
/// Otherwise a blocked user could reach the blocker by making a room of the two of them.
pub async fn first_blocker_of(
    db: &impl ConnectionTrait,
    actor: i64,
    candidates: &[i64],
) -> AppResult<Option<i64>> {
    if candidates.is_empty() {
        return Ok(None);
    }
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

/// The refusal to add someone to a room who has blocked the one adding them: FORBIDDEN, as for a
/// direct message.
pub fn refused_room(username: &str) -> AppError {
    AppError::Forbidden(format!(
        "{username} does not accept being added to rooms by you"
    ))
}
