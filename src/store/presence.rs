//! Who sees whose presence: people who share a conversation, less blocks either way. Written as
//! raw SQL because both are a self-join of `members` with two `NOT EXISTS` over `blocks`, which
//! sea-orm's builder says only at greater length; both backends read the same text.
use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbErr, Value};

use super::sql;
use crate::error::AppResult;

/// Everyone who shares a conversation with `user_id`, except whom the user has blocked and who
/// have blocked the user; with repeats when they share several conversations (the caller drops
/// them: sorting in Rust is cheaper than `DISTINCT` in SQL), and without the user unless they
/// are in a conversation with themself.
pub async fn audience(db: &impl ConnectionTrait, user_id: i64) -> AppResult<Vec<i64>> {
    super::ids(
        db,
        "SELECT b.user_id AS id FROM members a \
         JOIN members b ON b.conversation_id = a.conversation_id WHERE a.user_id = $1 \
         AND NOT EXISTS (SELECT 1 FROM blocks k \
         WHERE k.blocker_id = $1 AND k.blocked_id = b.user_id) \
         AND NOT EXISTS (SELECT 1 FROM blocks k \
         WHERE k.blocker_id = b.user_id AND k.blocked_id = $1)",
        vec![user_id.into()],
    )
    .await
}

/// Of `others`, those who share a conversation with `viewer` and whom the viewer has not
/// blocked, each with whether they have blocked the viewer (true: masked).
pub async fn sharing_with(
    db: &impl ConnectionTrait,
    viewer: i64,
    others: &[i64],
) -> AppResult<HashMap<i64, bool>> {
    if others.is_empty() {
        return Ok(HashMap::new());
    }
    let list = super::placeholders(2, others.len());
    let mut values: Vec<Value> = vec![viewer.into()];
    values.extend(others.iter().map(|id| Value::from(*id)));
    let rows = db
        .query_all_raw(sql(
            db,
            &format!(
                "SELECT DISTINCT b.user_id AS user_id, \
                 CASE WHEN EXISTS (SELECT 1 FROM blocks k \
                 WHERE k.blocker_id = b.user_id AND k.blocked_id = $1) THEN 1 ELSE 0 END AS masked \
                 FROM members a \
                 JOIN members b ON b.conversation_id = a.conversation_id \
                 WHERE a.user_id = $1 AND b.user_id IN ({list}) \
                 AND NOT EXISTS (SELECT 1 FROM blocks k \
                 WHERE k.blocker_id = $1 AND k.blocked_id = b.user_id)"
            ),
            values,
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let masked = row.try_get::<i32>("", "masked")? != 0;
            Ok((row.try_get::<i64>("", "user_id")?, masked))
        })
        .collect::<Result<HashMap<_, _>, DbErr>>()?)
}
