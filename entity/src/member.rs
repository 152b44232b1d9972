//! A user's membership of a conversation, with their role and read marker.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: i64,
    /// `OWNER`, `ADMIN` or `MEMBER`.
    pub role: String,
    /// Every message with a sequence number at or below this has been read by this member.
    pub last_read_seq: i64,
    pub last_read_at: Option<DateTimeUtc>,
    pub joined_at: DateTimeUtc,
    /// Muted members get no MESSAGE or FILE notifications from this conversation (mentions and
    /// replies still reach them).
    pub muted: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
