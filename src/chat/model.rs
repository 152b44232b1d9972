//! The domain's shared vocabulary: names every capability uses, with nothing below them, so that
//! the capabilities need not import each other for them.
use chrono::{DateTime, SubsecRound, Utc};

/// `DIRECT` or `ROOM`, as stored.
pub const DIRECT: &str = "DIRECT";
/// A named, multi-member conversation.
pub const ROOM: &str = "ROOM";

/// Now, at the microsecond precision both databases keep, so cursors built from it compare equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A member's role. Declared from least to most powerful, so `Ord` is rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "MEMBER",
            Role::Admin => "ADMIN",
            Role::Owner => "OWNER",
        }
    }

    /// Reads a stored role. Anything unrecognised is treated as the least powerful role, so a bad
    /// row can never grant rights.
    pub fn parse(stored: &str) -> Self {
        match stored {
            "OWNER" => Role::Owner,
            "ADMIN" => Role::Admin,
            _ => Role::Member,
        }
    }

    pub(crate) fn noun(self) -> &'static str {
        match self {
            Role::Member => "a member",
            Role::Admin => "an admin",
            Role::Owner => "the owner",
        }
    }
}

/// What a SYSTEM message records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemKind {
    RoomCreated,
    MemberAdded,
    MemberRemoved,
    MemberLeft,
    RoleChanged,
    OwnershipTransferred,
    RoomRenamed,
    TopicChanged,
}

impl SystemKind {
    /// The messages that end someone's membership: the last thing a former member is told.
    pub const DEPARTURES: [SystemKind; 2] = [SystemKind::MemberRemoved, SystemKind::MemberLeft];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SystemKind::RoomCreated => "ROOM_CREATED",
            SystemKind::MemberAdded => "MEMBER_ADDED",
            SystemKind::MemberRemoved => "MEMBER_REMOVED",
            SystemKind::MemberLeft => "MEMBER_LEFT",
            SystemKind::RoleChanged => "ROLE_CHANGED",
            SystemKind::OwnershipTransferred => "OWNERSHIP_TRANSFERRED",
            SystemKind::RoomRenamed => "ROOM_RENAMED",
            SystemKind::TopicChanged => "TOPIC_CHANGED",
        }
    }

    /// Reads a stored name.
    pub fn parse(stored: &str) -> Option<Self> {
        [
            SystemKind::RoomCreated,
            SystemKind::MemberAdded,
            SystemKind::MemberRemoved,
            SystemKind::MemberLeft,
            SystemKind::RoleChanged,
            SystemKind::OwnershipTransferred,
            SystemKind::RoomRenamed,
            SystemKind::TopicChanged,
        ]
        .into_iter()
        .find(|k| k.as_str() == stored)
    }
}
