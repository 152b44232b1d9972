//! A direct conversation between two users, or a room.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `DIRECT` or `ROOM`.
    pub kind: String,
    pub name: Option<String>,
    pub topic: Option<String>,
    /// For direct conversations, "lowId:highId": the unique key that makes each pair's conversation
    /// exist exactly once.
    #[sea_orm(unique)]
    pub direct_key: Option<String>,
    /// The last number handed out in this conversation's change sequence.
    pub last_seq: i64,
    pub last_message_id: Option<i64>,
    pub last_activity_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
