//! A person who can sign in and chat.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// As the user typed it.
    pub username: String,
    /// Lower-cased, unique: usernames are unique regardless of case.
    #[sea_orm(unique)]
    pub username_key: String,
    pub display_name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: DateTimeUtc,
    /// When the user's last live connection closed.
    pub last_seen_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
