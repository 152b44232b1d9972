//! Rooms as stored: the conversation row, its members with their roles, and the SYSTEM messages
//! that record each change.
use chrono::{DateTime, Utc};
use entity::{conversation, member, message};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr,
};

use crate::{
    chat::model::{ROOM, Role, SystemKind},
    error::AppResult,
};

/// One conversation by id.
pub async fn find(db: &impl ConnectionTrait, id: i64) -> AppResult<Option<conversation::Model>> {
    Ok(conversation::Entity::find_by_id(id).one(db).await?)
}

/// Inserts a room, created at `at`, with no messages yet.
pub async fn insert(
    db: &impl ConnectionTrait,
    name: String,
    topic: Option<String>,
    at: DateTime<Utc>,
) -> AppResult<conversation::Model> {
    Ok(conversation::ActiveModel {
        kind: Set(ROOM.into()),
        name: Set(Some(name)),
        topic: Set(topic),
        direct_key: Set(None),
        last_seq: Set(0),
        last_message_id: Set(None),
        last_activity_at: Set(at),
        created_at: Set(at),
        ..Default::default()
    }
    .insert(db)
    .await?)
}

/// Writes a room's name and topic where given (`Some`); the other columns are left as they are.
pub async fn update_settings(
    db: &impl ConnectionTrait,
    room: conversation::Model,
    name: Option<String>,
    topic: Option<Option<String>>,
) -> AppResult<()> {
    let mut active: conversation::ActiveModel = room.into();
    if let Some(name) = name {
        active.name = Set(Some(name));
    }
    if let Some(topic) = topic {
        active.topic = Set(topic);
    }
    active.update(db).await?;
    Ok(())
}

/// A membership as first written: `role`, the read marker at `read_up_to`, joined at `at`.
pub struct NewMember {
    pub user_id: i64,
    pub role: Role,
    pub read_up_to: i64,
}

/// Inserts memberships of the room, joined at `at`, in one statement.
pub async fn insert_members(
    db: &impl ConnectionTrait,
    room_id: i64,
    at: DateTime<Utc>,
    members: impl IntoIterator<Item = NewMember>,
) -> AppResult<()> {
    member::Entity::insert_many(members.into_iter().map(|m| member::ActiveModel {
        conversation_id: Set(room_id),
        user_id: Set(m.user_id),
        role: Set(m.role.as_str().into()),
        last_read_seq: Set(m.read_up_to),
        last_read_at: Set(None),
        joined_at: Set(at),
        muted: Set(false),
    }))
    .exec(db)
    .await?;
    Ok(())
}

/// The membership of `user_id` in the room, if any.
pub async fn member(
    db: &impl ConnectionTrait,
    room_id: i64,
    user_id: i64,
) -> AppResult<Option<member::Model>> {
    Ok(member::Entity::find_by_id((room_id, user_id))
        .one(db)
        .await?)
}

/// Ends a membership.
pub async fn delete_member(db: &impl ConnectionTrait, room_id: i64, user_id: i64) -> AppResult<()> {
    member::Entity::delete_by_id((room_id, user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Gives a member a role.
pub async fn set_role(
    db: &impl ConnectionTrait,
    room_id: i64,
    user_id: i64,
    role: Role,
) -> AppResult<()> {
    member::Entity::update_many()
        .col_expr(member::Column::Role, Expr::value(role.as_str()))
        .filter(member::Column::ConversationId.eq(room_id))
        .filter(member::Column::UserId.eq(user_id))
        .exec(db)
        .await?;
    Ok(())
}

/// What a SYSTEM message records.
pub struct SystemMessage {
    pub kind: SystemKind,
    pub actor_id: i64,
    pub target_id: Option<i64>,
    pub role: Option<Role>,
    pub body: String,
}

/// Inserts a SYSTEM message under sequence number `seq`. The conversation's `last_message_id`
/// follows by trigger (migration 000009).
pub async fn insert_system_message(
    db: &impl ConnectionTrait,
    room_id: i64,
    seq: i64,
    at: DateTime<Utc>,
    system: SystemMessage,
) -> AppResult<message::Model> {
    Ok(message::ActiveModel {
        conversation_id: Set(room_id),
        seq: Set(seq),
        sender_id: Set(None),
        kind: Set("SYSTEM".into()),
        body: Set(Some(system.body)),
        created_at: Set(at),
        system_kind: Set(Some(system.kind.as_str().into())),
        system_actor_id: Set(Some(system.actor_id)),
        system_target_id: Set(system.target_id),
        system_role: Set(system.role.map(|r| r.as_str().into())),
        ..Default::default()
    }
    .insert(db)
    .await?)
}
