//! Blocking: a user (the blocker) stops another from writing to them directly and from adding them
//! to rooms, stops seeing their typing and presence, and no longer shows them their own presence.
//! Rooms both are already in are unaffected: blocking is between two people.
use std::collections::HashSet;

use sea_orm::ConnectionTrait;

use crate::{
    error::{AppError, AppResult},
    store::{Store, blocks, users},
};

/// Most users one user may block; enough for anyone, and a bound on the sets held per socket.
pub const MAX_BLOCKED: u64 = 1000;

/// Blocks a user; blocking one already blocked is not an error.
pub async fn block(store: &Store, blocker: i64, blocked: i64) -> AppResult<()> {
    if blocker == blocked {
        return Err(AppError::bad_input("one cannot block oneself"));
    }
    store
        .write(move |txn| {
            Box::pin(async move {
                if users::find(txn, blocked).await?.is_none() {
                    return Err(AppError::not_found("user"));
                }
                // Counted in the transaction that adds, so that blocks made at once cannot pass
                // the bound together.
                if blocks::count_by(txn, blocker).await? >= MAX_BLOCKED {
                    return Err(AppError::bad_input(format!(
                        "at most {MAX_BLOCKED} users can be blocked"
                    )));
                }
                blocks::insert(txn, blocker, blocked).await?;
                Ok(((), Vec::new()))
            })
        })
        .await
}

/// Lifts a block; lifting one that is not there is not an error.
pub async fn unblock(store: &Store, blocker: i64, blocked: i64) -> AppResult<()> {
    store
        .write(move |txn| {
            Box::pin(async move {
                blocks::delete(txn, blocker, blocked).await?;
                Ok(((), Vec::new()))
            })
        })
        .await
}

/// Whom a user has blocked, most recent first.
pub async fn blocked_by(store: &Store, blocker: i64) -> AppResult<Vec<i64>> {
    blocks::blocked_by(store.reader(), blocker, MAX_BLOCKED).await
}

/// The same, as a set for filtering live events.
pub async fn blocked_set(store: &Store, blocker: i64) -> AppResult<HashSet<i64>> {
    Ok(blocked_by(store, blocker).await?.into_iter().collect())
}

/// FORBIDDEN when `recipient` has blocked `sender`: the check before anything direct is written,
/// on the reader or in the writing transaction.
pub async fn ensure_not_blocked(
    db: &impl ConnectionTrait,
    recipient: i64,
    sender: i64,
) -> AppResult<()> {
    if blocks::exists(db, recipient, sender).await? {
        return Err(refused_direct());
    }
    Ok(())
}

/// The refusal of a direct message to someone who blocked the sender.
pub fn refused_direct() -> AppError {
    AppError::Forbidden("this user does not accept direct messages from you".into())
}

/// FORBIDDEN when one of `candidates` has blocked `actor` (checked in the transaction that would
/// add them to a room): otherwise a blocked user could reach the blocker by making a room of the
/// two of them. `names` gives the refusal its username.
pub async fn ensure_may_add(
    db: &impl ConnectionTrait,
    actor: i64,
    candidates: &[i64],
    names: &std::collections::HashMap<i64, String>,
) -> AppResult<()> {
    if candidates.is_empty() {
        return Ok(());
    }
    match blocks::first_blocker_of(db, actor, candidates).await? {
        Some(blocker) => Err(refused_room(names.get(&blocker).map_or("", String::as_str))),
        None => Ok(()),
    }
}

/// The refusal to add someone to a room who has blocked the one adding them: FORBIDDEN, as for a
/// direct message.
fn refused_room(username: &str) -> AppError {
    AppError::Forbidden(format!(
        "{username} does not accept being added to rooms by you"
    ))
}
