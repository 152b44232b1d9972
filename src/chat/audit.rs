//! The audit log: sign-ins (and failures), sign-outs, revoked sessions, password changes, message
//! edits and deletions, membership and role changes, and downloads through signed URLs. Written
//! beside the change it records (in its transaction where there is one); read only by server
//! administrators (`palaver admin grant USERNAME`).
use entity::audit_entry;
use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::pagination::Page;
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    store::{Store, audit, users},
};

/// Records one entry, in the transaction of the change it records.
pub async fn record(
    db: &impl ConnectionTrait,
    actor_id: Option<i64>,
    action: &str,
    target: Option<String>,
    detail: Option<String>,
) -> AppResult<()> {
    audit::insert(db, actor_id, action, target, detail).await
}

/// Records an entry after the fact, in a write of its own, where a failure to record must not
/// undo what already happened: it is logged.
pub async fn record_or_log(
    store: &Store,
    actor_id: Option<i64>,
    action: &'static str,
    target: Option<String>,
) {
    let written = store
        .write(move |txn| {
            let target = target.clone();
            Box::pin(async move {
                audit::insert(txn, actor_id, action, target, None).await?;
                Ok(((), Vec::new()))
            })
        })
        .await;
    if let Err(err) = written {
        tracing::error!(error = %err, action, "could not write the audit log");
    }
}

/// The newest entries first, for administrators only (FORBIDDEN for anyone else).
pub async fn list(
    store: &Store,
    viewer: Viewer,
    before_id: Option<i64>,
    first: u64,
) -> AppResult<Page<audit_entry::Model>> {
    let is_admin = users::find(store.reader(), viewer.user_id)
        .await?
        .is_some_and(|u| u.is_admin);
    if !is_admin {
        return Err(AppError::Forbidden(
            "the audit log is for server administrators".into(),
        ));
    }
    let rows = audit::newest(store.reader(), before_id, first + 1).await?;
    Ok(Page::forward(rows, first, before_id.is_some()))
}

/// Makes a user a server administrator, or not; false if there is no such user. The `admin`
/// command runs as a process of its own beside the server, with no writer of its own: each of
/// its statements is a transaction by itself, as SQLite's busy timeout serialises it with the
/// server's writer.
pub async fn set_admin(db: &DatabaseConnection, username: &str, admin: bool) -> AppResult<bool> {
    let key = username.trim().to_ascii_lowercase();
    let changed = users::set_admin(db, &key, admin).await?;
    if changed {
        let action = if admin {
            "admin.granted"
        } else {
            "admin.revoked"
        };
        if let Err(err) = audit::insert(db, None, action, Some(key), None).await {
            tracing::error!(error = %err, action, "could not write the audit log");
        }
    }
    Ok(changed)
}
