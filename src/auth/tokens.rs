//! Opaque bearer tokens: random, shown to the client once, stored only as a SHA-256 hash, expiring
//! and revocable.
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use entity::auth_token;
use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use sha2::{Digest, Sha256};

use super::{Viewer, cache::TokenKey};
use crate::error::AppResult;

/// The SHA-256 of a token, which is what is stored and what the cache is keyed by.
pub fn key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

fn digest(token: &str) -> String {
    hex::encode(key(token))
}

/// Issues a new token for a user; returns the token text, which is never stored.
pub async fn issue(db: &impl ConnectionTrait, user_id: i64, ttl_secs: u64) -> AppResult<String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("pvt_{}", URL_SAFE_NO_PAD.encode(bytes));
    let now = Utc::now();
    let ttl = Duration::seconds(
        i64::try_from(ttl_secs)
            .unwrap_or(i64::MAX / 1000)
            .min(10 * 365 * 24 * 3600),
    );
    auth_token::ActiveModel {
        user_id: Set(user_id),
        token_hash: Set(digest(&token)),
        created_at: Set(now),
        expires_at: Set(now + ttl),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(token)
}

/// The viewer a token (by its [`key`]) stands for and when the token expires, if it is known,
/// unexpired and not revoked.
pub async fn resolve(
    db: &impl ConnectionTrait,
    key: &TokenKey,
) -> AppResult<Option<(Viewer, DateTime<Utc>)>> {
    let found = auth_token::Entity::find()
        .filter(auth_token::Column::TokenHash.eq(hex::encode(key)))
        .filter(auth_token::Column::RevokedAt.is_null())
        .filter(auth_token::Column::ExpiresAt.gt(Utc::now()))
        .one(db)
        .await?;
    Ok(found.map(|t| {
        let viewer = Viewer {
            user_id: t.user_id,
            token_id: t.id,
        };
        (viewer, t.expires_at)
    }))
}

/// Revokes one token.
pub async fn revoke(db: &impl ConnectionTrait, token_id: i64) -> AppResult<()> {
    auth_token::Entity::update_many()
        .col_expr(
            auth_token::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(Utc::now()),
        )
        .filter(auth_token::Column::Id.eq(token_id))
        .filter(auth_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Most sessions `sessions` lists: the newest ones.
pub const MAX_LISTED: u64 = 100;

/// A user's sessions still in force (neither revoked nor expired), newest first.
pub async fn active(db: &impl ConnectionTrait, user_id: i64) -> AppResult<Vec<auth_token::Model>> {
    Ok(auth_token::Entity::find()
        .filter(auth_token::Column::UserId.eq(user_id))
        .filter(auth_token::Column::RevokedAt.is_null())
        .filter(auth_token::Column::ExpiresAt.gt(Utc::now()))
        .order_by_desc(auth_token::Column::Id)
        .limit(MAX_LISTED)
        .all(db)
        .await?)
}

/// Revokes one of the user's own sessions in force; false if they have no such session (another
/// user's is left alone, and looks the same as a missing one).
pub async fn revoke_own(db: &impl ConnectionTrait, user_id: i64, token_id: i64) -> AppResult<bool> {
    let done = auth_token::Entity::update_many()
        .col_expr(
            auth_token::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(Utc::now()),
        )
        .filter(auth_token::Column::Id.eq(token_id))
        .filter(auth_token::Column::UserId.eq(user_id))
        .filter(auth_token::Column::RevokedAt.is_null())
        .filter(auth_token::Column::ExpiresAt.gt(Utc::now()))
        .exec(db)
        .await?;
    Ok(done.rows_affected > 0)
}

/// Revokes every session of the user except `keep`; returns how many were revoked.
pub async fn revoke_others(db: &impl ConnectionTrait, user_id: i64, keep: i64) -> AppResult<u64> {
    let done = auth_token::Entity::update_many()
        .col_expr(
            auth_token::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(Utc::now()),
        )
        .filter(auth_token::Column::UserId.eq(user_id))
        .filter(auth_token::Column::Id.ne(keep))
        .filter(auth_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(done.rows_affected)
}
