//! The durable change log: one row per change to a conversation, numbered by the conversation's
//! sequence. Subscriptions replay from it when a client resumes with a cursor.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversation_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub conversation_id: i64,
    pub seq: i64,
    /// `CREATED`, `EDITED` or `DELETED`.
    pub kind: String,
    pub message_id: i64,
    pub created_at: DateTimeUtc,
    /// The PostgreSQL transaction that wrote the row (0 on SQLite): with `id`, the row's
    /// position in the log (see migration 000011).
    pub tx: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The message the change is about, read with the change in one statement.
    #[sea_orm(
        belongs_to = "super::message::Entity",
        from = "Column::MessageId",
        to = "super::message::Column::Id"
    )]
    Message,
}

impl Related<super::message::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Message.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
