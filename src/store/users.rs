//! Accounts as stored: lookups by id and by case-folded name, the search behind `users`, and the
//! few writes to a user's row.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::user;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};

use crate::error::AppResult;

/// One user by id.
pub async fn find(db: &impl ConnectionTrait, id: i64) -> AppResult<Option<user::Model>> {
    Ok(user::Entity::find_by_id(id).one(db).await?)
}

/// The user whose case-folded username is `key`.
pub async fn find_by_key(db: &impl ConnectionTrait, key: &str) -> AppResult<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::UsernameKey.eq(key))
        .one(db)
        .await?)
}

/// Users by id.
pub async fn by_ids(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> AppResult<HashMap<i64, user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect())
}

/// Usernames by id (users that do not exist are left out).
pub async fn usernames(db: &impl ConnectionTrait, ids: &[i64]) -> AppResult<HashMap<i64, String>> {
    Ok(user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .column(user::Column::Username)
        .filter(user::Column::Id.is_in(ids.iter().copied()))
        .into_tuple::<(i64, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect())
}

/// Up to `limit` users in id order after `after_id`, whose username key or lower-cased display
/// name matches the LIKE `pattern` (escaped with `\`), if one is given.
pub async fn search(
    db: &impl ConnectionTrait,
    pattern: Option<String>,
    after_id: Option<i64>,
    limit: u64,
) -> AppResult<Vec<user::Model>> {
    let mut query = user::Entity::find().order_by_asc(user::Column::Id);
    if let Some(after) = after_id {
        query = query.filter(user::Column::Id.gt(after));
    }
    if let Some(pattern) = pattern {
        query = query.filter(
            Expr::col(user::Column::UsernameKey)
                .like(LikeExpr::new(pattern.clone()).escape('\\'))
                .or(
                    Expr::expr(Func::lower(Expr::col(user::Column::DisplayName)))
                        .like(LikeExpr::new(pattern).escape('\\')),
                ),
        );
    }
    Ok(query.limit(limit).all(db).await?)
}

/// A new account's row.
#[derive(Clone)]
pub struct NewUser {
    pub username_key: String,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
}

/// Inserts an account. The raw error is returned, so that the caller can tell a taken name (a
/// unique violation) from a failure.
pub async fn insert(db: &impl ConnectionTrait, new: NewUser) -> Result<user::Model, DbErr> {
    user::ActiveModel {
        username_key: Set(new.username_key),
        username: Set(new.username),
        display_name: Set(new.display_name),
        password_hash: Set(new.password_hash),
        is_admin: Set(false),
        created_at: Set(Utc::now()),
        last_seen_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// Replaces a user's password hash, only if it is still `expected`: false if it was not.
pub async fn replace_password_hash(
    db: &impl ConnectionTrait,
    user_id: i64,
    expected: &str,
    hash: String,
) -> AppResult<bool> {
    let updated = user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(hash))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::PasswordHash.eq(expected))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Makes the user with username key `key` a server administrator, or not: false if there is no
/// such user.
pub async fn set_admin(db: &impl ConnectionTrait, key: &str, admin: bool) -> AppResult<bool> {
    let changed = user::Entity::update_many()
        .col_expr(user::Column::IsAdmin, Expr::value(admin))
        .filter(user::Column::UsernameKey.eq(key))
        .exec(db)
        .await?
        .rows_affected;
    Ok(changed > 0)
}

/// Records when a user was last seen online.
pub async fn set_last_seen(
    db: &impl ConnectionTrait,
    user_id: i64,
    seen: DateTime<Utc>,
) -> AppResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::LastSeenAt, Expr::value(seen))
        .filter(user::Column::Id.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}
