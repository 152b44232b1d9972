//! A message in a conversation. Deleting one is soft: the row stays, its content is hidden.
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub conversation_id: i64,
    /// The conversation's sequence number at which this message was created.
    pub seq: i64,
    pub sender_id: Option<i64>,
    /// `TEXT`, `IMAGE`, `VIDEO`, `AUDIO`, `DOCUMENT`, `ARCHIVE`, `FILE` or `SYSTEM`.
    pub kind: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub body: Option<String>,
    pub reply_to_id: Option<i64>,
    pub client_message_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub edited_at: Option<DateTimeUtc>,
    pub deleted_at: Option<DateTimeUtc>,
    /// For `SYSTEM` messages, what happened: `ROOM_CREATED`, `MEMBER_ADDED`, `MEMBER_REMOVED`,
    /// `MEMBER_LEFT`, `ROLE_CHANGED`, `OWNERSHIP_TRANSFERRED`, `ROOM_RENAMED` or `TOPIC_CHANGED`.
    pub system_kind: Option<String>,
    /// For `SYSTEM` messages, the user who made the change.
    pub system_actor_id: Option<i64>,
    /// For `SYSTEM` messages about a member, the member.
    pub system_target_id: Option<i64>,
    /// For `SYSTEM` messages that give a role, the role.
    pub system_role: Option<String>,
    /// Where the attached file's bytes live in the object store (a fresh uuid per upload). Kept
    /// after deletion so a late cleanup can still find the object.
    // `serde(default)`: events cross instances through Redis, and an instance running the previous
    // version sends messages without these fields.
    #[serde(default)]
    pub attachment_key: Option<String>,
    /// The sender's file name, reduced to a harmless base name.
    #[serde(default)]
    pub attachment_filename: Option<String>,
    /// Decided from the file's content, not from what the client claimed.
    #[serde(default)]
    pub attachment_content_type: Option<String>,
    #[serde(default)]
    pub attachment_size: Option<i64>,
    /// Lower-case hex SHA-256 of the bytes; also the download's ETag.
    #[serde(default)]
    pub attachment_sha256: Option<String>,
    /// When the message was pinned to its conversation; null when it is not pinned.
    #[serde(default)]
    pub pinned_at: Option<DateTimeUtc>,
    /// Who pinned it.
    #[serde(default)]
    pub pinned_by_id: Option<i64>,
    /// For a reply in a thread, the thread's root (a message of the same conversation that is
    /// itself no reply in a thread: threads are one level deep).
    #[serde(default)]
    pub thread_root_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
