//! The audit log: sign-ins (and failures), sign-outs, revoked sessions, password changes, message
//! edits and deletions, membership and role changes, and downloads through signed URLs. Written
//! beside the change it records (in its transaction where there is one); read only by server
//! administrators (`palaver admin grant USERNAME`).
use entity::{audit_entry, user};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use super::{model::now, pagination::Page};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
};

/// Records one entry.
pub async fn record(
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

/// Records an entry where a failure to record must not undo what already happened: it is logged.
pub async fn record_or_log(
    db: &impl ConnectionTrait,
    actor_id: Option<i64>,
    action: &str,
    target: Option<String>,
) {
    if let Err(err) = record(db, actor_id, action, target, None).await {
        tracing::error!(error = %err, action, "could not write the audit log");
    }
}

/// The newest entries first, for administrators only (FORBIDDEN for anyone else).
pub async fn list(
    db: &DatabaseConnection,
    viewer: Viewer,
    before_id: Option<i64>,
    first: u64,
) -> AppResult<Page<audit_entry::Model>> {
    let is_admin = user::Entity::find_by_id(viewer.user_id)
        .one(db)
        .await?
        .is_some_and(|u| u.is_admin);
    if !is_admin {
        return Err(AppError::Forbidden(
            "the audit log is for server administrators".into(),
        ));
    }
    let mut query = audit_entry::Entity::find().order_by_desc(audit_entry::Column::Id);
    if let Some(id) = before_id {
        query = query.filter(audit_entry::Column::Id.lt(id));
    }
    let rows = query.limit(first + 1).all(db).await?;
    Ok(Page::forward(rows, first, before_id.is_some()))
}

/// Makes a user a server administrator, or not; false if there is no such user.
pub async fn set_admin(db: &DatabaseConnection, username: &str, admin: bool) -> AppResult<bool> {
    let key = username.trim().to_ascii_lowercase();
    let changed = user::Entity::update_many()
        .col_expr(
            user::Column::IsAdmin,
            sea_orm::sea_query::Expr::value(admin),
        )
        .filter(user::Column::UsernameKey.eq(key.clone()))
        .exec(db)
        .await?
        .rows_affected;
    if changed > 0 {
        let action = if admin {
            "admin.granted"
        } else {
            "admin.revoked"
        };
        record_or_log(db, None, action, Some(key)).await;
    }
    Ok(changed > 0)
}
