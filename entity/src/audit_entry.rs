//! One line of the audit log.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// Who acted; null when nobody was signed in (a failed login, a signed-URL download).
    pub actor_id: Option<i64>,
    /// What happened, e.g. `login.failed`, `message.deleted`, `room.member_removed`.
    pub action: String,
    /// What it happened to, e.g. `msg_12`, `usr_3`, or the username tried.
    pub target: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub detail: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
