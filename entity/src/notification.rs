//! Something a user should look at: a message for them, a mention, a reply, a room change.
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: i64,
    /// Who caused it; null for the server.
    pub actor_id: Option<i64>,
    /// `MESSAGE`, `FILE`, `REPLY`, `MENTION`, `ROOM_ADDED` or `ROOM_REMOVED`.
    pub kind: String,
    #[sea_orm(column_type = "Text")]
    pub text: String,
    pub conversation_id: Option<i64>,
    pub message_id: Option<i64>,
    /// How many events this notification stands for: unread MESSAGE and FILE notifications of one
    /// conversation collapse into one row.
    pub count: i64,
    pub is_read: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
