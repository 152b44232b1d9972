//! The GraphQL object types, thin wrappers over entity rows that resolve their links through the
//! DataLoaders.
use async_graphql::{
    ComplexObject, Context, Enum, ID, Object, Result, SimpleObject,
    dataloader::{DataLoader, Loader},
};
use chrono::{DateTime, Utc};
use std::{collections::HashMap, sync::Arc};

use entity::{conversation, member, message, reaction, user};
use tokio::sync::OnceCell;

use super::{
    ContextExt,
    loaders::{LoadError, load_error},
};
use crate::{
    chat::{
        model::{Role, SystemKind},
        presence, threads,
    },
    error::AppError,
    events::MessageChange,
    ids::{self, CursorKind, Kind},
};

/// One of the viewer's signed-in sessions: a bearer token still in force.
pub struct Session {
    pub token: entity::auth_token::Model,
    /// Whether this is the token the request was made with.
    pub current: bool,
}

/// One of the viewer's signed-in sessions: a bearer token from `register` or `login` that is
/// neither revoked nor expired. Only its owner sees it; the token itself is never shown again.
#[Object]
impl Session {
    /// Opaque (`ses_…`); pass it to `revokeSession` to sign that session out.
    async fn id(&self) -> ID {
        ids::encode(Kind::Session, self.token.id)
    }

    /// When the session signed in (`register` or `login`).
    async fn created_at(&self) -> DateTime<Utc> {
        self.token.created_at
    }

    /// When the token stops working unless revoked sooner (by default 30 days after sign-in).
    async fn expires_at(&self) -> DateTime<Utc> {
        self.token.expires_at
    }

    /// True for the session this request was made with.
    async fn current(&self) -> bool {
        self.current
    }
}

/// A row known at first by its id alone (a message's sender, its conversation, a member's user),
/// read through its loader by the first field that needs more than the id; a row already at hand
/// is kept. So `sender { id }` and `conversation { id }` cost no database read.
struct Linked<M> {
    id: i64,
    row: OnceCell<M>,
}

impl<M: Clone + Send + Sync + 'static> Linked<M> {
    fn loaded(id: i64, row: M) -> Self {
        Self {
            id,
            row: OnceCell::new_with(Some(row)),
        }
    }

    fn by_id(id: i64) -> Self {
        Self {
            id,
            row: OnceCell::new(),
        }
    }

    /// The row, loaded once; NOT_FOUND (naming `what`) if it does not exist.
    async fn get<L>(&self, loader: &DataLoader<L>, what: &'static str) -> Result<&M>
    where
        L: Loader<i64, Value = M, Error = LoadError>,
    {
        self.row
            .get_or_try_init(|| async {
                loader
                    .load_one(self.id)
                    .await
                    .map_err(load_error)?
                    .ok_or_else(|| AppError::not_found(what).into())
            })
            .await
    }
}

/// A person who can chat.
pub struct User(Linked<user::Model>);

impl User {
    /// A user whose row is already at hand.
    pub fn new(row: user::Model) -> Self {
        Self(Linked::loaded(row.id, row))
    }

    /// A user known to exist, by id; the row is loaded when a field needs it.
    pub fn by_id(id: i64) -> Self {
        Self(Linked::by_id(id))
    }

    async fn row(&self, ctx: &Context<'_>) -> Result<&user::Model> {
        self.0.get(&ctx.loaders().users, "user").await
    }
}

/// A person with an account. Every signed-in user may look up any other by id or search; what
/// depends on the relationship (presence) says so.
#[Object]
impl User {
    /// Opaque and stable (`usr_…`).
    #[graphql(tag = "same_for_every_viewer")]
    pub(crate) async fn id(&self) -> ID {
        ids::encode(Kind::User, self.0.id)
    }

    /// The name they sign in with: 3–32 letters, digits, `_`, `.` or `-`, unique regardless of
    /// case, and what `@mentions` name.
    #[graphql(tag = "same_for_every_viewer")]
    async fn username(&self, ctx: &Context<'_>) -> Result<&str> {
        Ok(&self.row(ctx).await?.username)
    }

    /// The name to show: chosen at registration, the username when none was given.
    #[graphql(tag = "same_for_every_viewer")]
    async fn display_name(&self, ctx: &Context<'_>) -> Result<&str> {
        Ok(&self.row(ctx).await?.display_name)
    }

    /// When the account was registered.
    #[graphql(tag = "same_for_every_viewer")]
    async fn created_at(&self, ctx: &Context<'_>) -> Result<DateTime<Utc>> {
        Ok(self.row(ctx).await?.created_at)
    }

    /// Online or offline, and when last seen. Null unless the viewer shares a conversation with
    /// this user (or is this user) and has not blocked them; always OFFLINE, never seen, if this
    /// user has blocked the viewer.
    #[graphql(tag = "per_viewer")]
    async fn presence(&self, ctx: &Context<'_>) -> Result<Option<Presence>> {
        let viewer = ctx.viewer()?;
        let sight = ctx
            .loaders()
            .visibility
            .load_one((viewer.user_id, self.0.id))
            .await
            .map_err(load_error)?;
        let Some(sight) = sight else {
            return Ok(None);
        };
        if sight == presence::Sight::Offline {
            return Ok(Some(Presence {
                status: PresenceStatus::Offline,
                last_seen_at: None,
            }));
        }
        Ok(Some(if ctx.state().presence.is_online(self.0.id).await {
            Presence {
                status: PresenceStatus::Online,
                last_seen_at: None,
            }
        } else {
            Presence {
                status: PresenceStatus::Offline,
                last_seen_at: self.row(ctx).await?.last_seen_at,
            }
        }))
    }
}

/// Loads a user by row id; None if there is no such user.
pub async fn load_user(ctx: &Context<'_>, id: i64) -> Result<Option<User>> {
    Ok(ctx
        .loaders()
        .users
        .load_one(id)
        .await
        .map_err(load_error)?
        .map(User::new))
}

/// Whether a conversation is between two people or a room.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ConversationKind {
    /// Between exactly two people, started by the first message from one to the other; it has
    /// no name, roles or membership changes.
    Direct,
    /// A named group with an owner, admins and members; see `createRoom`.
    Room,
}

impl ConversationKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => crate::chat::model::DIRECT,
            ConversationKind::Room => crate::chat::model::ROOM,
        }
    }
}

/// A member's role in a conversation.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MemberRole {
    /// The one member who may do everything: change roles, add admins, transfer ownership.
    Owner,
    /// A moderator: may rename the room, add and remove members, and delete others' messages.
    Admin,
    /// May read and write, and leave.
    Member,
}

impl From<MemberRole> for Role {
    fn from(role: MemberRole) -> Self {
        match role {
            MemberRole::Owner => Role::Owner,
            MemberRole::Admin => Role::Admin,
            MemberRole::Member => Role::Member,
        }
    }
}

impl From<Role> for MemberRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Owner => MemberRole::Owner,
            Role::Admin => MemberRole::Admin,
            Role::Member => MemberRole::Member,
        }
    }
}

/// A direct conversation or a room, as seen by the viewer.
pub struct Conversation(Linked<conversation::Model>);

impl Conversation {
    /// A conversation whose row is already at hand.
    pub fn new(row: conversation::Model) -> Self {
        Self(Linked::loaded(row.id, row))
    }

    /// A conversation known to exist, by id; the row is loaded when a field needs it.
    pub fn by_id(id: i64) -> Self {
        Self(Linked::by_id(id))
    }

    async fn row(&self, ctx: &Context<'_>) -> Result<&conversation::Model> {
        self.0
            .get(&ctx.loaders().conversations, "conversation")
            .await
    }
}

/// A direct conversation or a room, as its member the viewer sees it. Only members see a
/// conversation at all; to anyone else it is NOT_FOUND, as if it did not exist.
#[Object]
impl Conversation {
    /// Opaque and stable (`cnv_…`).
    #[graphql(tag = "same_for_every_viewer")]
    pub(crate) async fn id(&self) -> ID {
        ids::encode(Kind::Conversation, self.0.id)
    }

    /// DIRECT or ROOM.
    #[graphql(tag = "same_for_every_viewer")]
    async fn kind(&self, ctx: &Context<'_>) -> Result<ConversationKind> {
        Ok(if self.row(ctx).await?.kind == crate::chat::model::ROOM {
            ConversationKind::Room
        } else {
            ConversationKind::Direct
        })
    }

    /// The room's name; null for direct conversations (see `title`).
    #[graphql(tag = "same_for_every_viewer")]
    async fn name(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        Ok(self.row(ctx).await?.name.as_deref())
    }

    /// The room's topic (up to 500 characters); null when none is set, and for direct
    /// conversations.
    #[graphql(tag = "same_for_every_viewer")]
    async fn topic(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        Ok(self.row(ctx).await?.topic.as_deref())
    }

    /// What to show as the conversation's heading: the room's name, or for a direct conversation
    /// the other person's display name.
    #[graphql(tag = "per_viewer")]
    async fn title(&self, ctx: &Context<'_>) -> Result<String> {
        if let Some(name) = &self.row(ctx).await?.name {
            return Ok(name.clone());
        }
        let viewer = ctx.viewer()?;
        let members = self.members_rows(ctx).await?;
        let other = members
            .iter()
            .map(|m| m.user_id)
            .find(|id| *id != viewer.user_id);
        Ok(match other {
            Some(id) => ctx
                .loaders()
                .users
                .load_one(id)
                .await
                .map_err(load_error)?
                .map(|u| u.display_name)
                .unwrap_or_default(),
            None => String::new(),
        })
    }

    /// Everyone in it now, with their role and read position: both people of a direct
    /// conversation, every member of a room.
    #[graphql(tag = "per_viewer")]
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<Member>> {
        Ok(self
            .members_rows(ctx)
            .await?
            .iter()
            .cloned()
            .map(Member)
            .collect())
    }

    /// The most recent message of its timeline, replies in threads left out (possibly deleted:
    /// then its body is hidden).
    #[graphql(tag = "per_viewer")]
    async fn last_message(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        match self.row(ctx).await?.last_message_id {
            Some(id) => load_message(ctx, id).await,
            None => Ok(None),
        }
    }

    /// Messages from others that the viewer has not read, in its timeline (deleted ones do not
    /// count; replies in threads count in their thread's `unreadCount`).
    #[graphql(tag = "per_viewer")]
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let viewer = ctx.viewer()?;
        Ok(ctx
            .loaders()
            .unread
            .load_one((viewer.user_id, self.0.id))
            .await
            .map_err(load_error)?
            .unwrap_or(0))
    }

    /// Whether the viewer muted this conversation's MESSAGE and FILE notifications.
    #[graphql(tag = "per_viewer")]
    async fn muted(&self, ctx: &Context<'_>) -> Result<bool> {
        let viewer = ctx.viewer()?;
        Ok(self
            .members_rows(ctx)
            .await?
            .iter()
            .any(|m| m.user_id == viewer.user_id && m.muted))
    }

    /// When anything last happened in it (a message sent, a reply in a thread among them,
    /// edited or deleted, a membership change); the order of `Query.conversations`.
    #[graphql(tag = "same_for_every_viewer")]
    async fn last_activity_at(&self, ctx: &Context<'_>) -> Result<DateTime<Utc>> {
        Ok(self.row(ctx).await?.last_activity_at)
    }

    /// When it was created (a direct conversation: with its first message).
    #[graphql(tag = "same_for_every_viewer")]
    async fn created_at(&self, ctx: &Context<'_>) -> Result<DateTime<Utc>> {
        Ok(self.row(ctx).await?.created_at)
    }

    /// Its pinned messages, most recently pinned first (at most 50).
    #[graphql(tag = "per_viewer")]
    async fn pinned_messages(&self, ctx: &Context<'_>) -> Result<Vec<Message>> {
        Ok(crate::chat::pins::pinned(&ctx.state().chat, self.0.id)
            .await?
            .into_iter()
            .map(Message)
            .collect())
    }
}

impl Conversation {
    async fn members_rows(&self, ctx: &Context<'_>) -> Result<std::sync::Arc<Vec<member::Model>>> {
        Ok(ctx
            .loaders()
            .members
            .load_one(self.0.id)
            .await
            .map_err(load_error)?
            .unwrap_or_default())
    }
}

/// A user's place in a conversation.
pub struct Member(pub member::Model);

/// Someone's membership of a conversation: who, with which role, how far they have read.
#[Object]
impl Member {
    /// The member.
    async fn user(&self) -> User {
        User::by_id(self.0.user_id)
    }

    /// OWNER, ADMIN or MEMBER in a room; both people of a direct conversation are MEMBERs.
    async fn role(&self) -> MemberRole {
        Role::parse(&self.0.role).into()
    }

    /// When the member last moved their read marker.
    async fn last_read_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_read_at
    }

    /// When they became a member.
    async fn joined_at(&self) -> DateTime<Utc> {
        self.0.joined_at
    }
}

/// What a message carries.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MessageKind {
    /// Text only, no attachment.
    Text,
    /// An image attachment (JPEG, PNG, GIF, WebP, ...). Attachment kinds are decided from the
    /// file's content, not its name.
    Image,
    /// A video attachment (MP4, WebM, MOV, ...).
    Video,
    /// An audio attachment (MP3, Ogg, WAV, FLAC, ...).
    Audio,
    /// A document attachment (PDF, office formats, plain text, CSV, ...).
    Document,
    /// An archive attachment (ZIP, 7z, tar, gzip, ...).
    Archive,
    /// An attachment of any other type, or whose content does not match the format its name
    /// claims (served as `application/octet-stream`).
    File,
    /// Written by the server (membership changes and the like); has no sender.
    System,
}

/// A message. Once deleted, its body is null and `deletedAt` is set.
pub struct Message(pub message::Model);

/// Loads a message by row id.
pub async fn load_message(ctx: &Context<'_>, id: i64) -> Result<Option<Message>> {
    Ok(ctx
        .loaders()
        .messages
        .load_one(id)
        .await
        .map_err(load_error)?
        .map(Message))
}

/// A message in a conversation, visible to the conversation's members only. Deleted messages
/// stay in place with `deletedAt` set and their body and attachment hidden.
#[Object]
impl Message {
    /// Opaque and stable (`msg_…`).
    #[graphql(tag = "same_for_every_viewer")]
    pub(crate) async fn id(&self) -> ID {
        ids::encode(Kind::Message, self.0.id)
    }

    /// The conversation it was sent in.
    #[graphql(tag = "same_for_every_viewer")]
    async fn conversation(&self) -> Conversation {
        Conversation::by_id(self.0.conversation_id)
    }

    /// Null for system messages.
    #[graphql(tag = "same_for_every_viewer")]
    async fn sender(&self) -> Option<User> {
        self.0.sender_id.map(User::by_id)
    }

    /// TEXT, SYSTEM, or the kind of its attachment (decided from the file's content).
    #[graphql(tag = "same_for_every_viewer")]
    async fn kind(&self) -> MessageKind {
        match self.0.kind.as_str() {
            "IMAGE" => MessageKind::Image,
            "VIDEO" => MessageKind::Video,
            "AUDIO" => MessageKind::Audio,
            "DOCUMENT" => MessageKind::Document,
            "ARCHIVE" => MessageKind::Archive,
            "FILE" => MessageKind::File,
            "SYSTEM" => MessageKind::System,
            _ => MessageKind::Text,
        }
    }

    /// Null once the message is deleted.
    #[graphql(tag = "same_for_every_viewer")]
    async fn body(&self) -> Option<&str> {
        if self.0.deleted_at.is_some() {
            None
        } else {
            self.0.body.as_deref()
        }
    }

    /// For system messages, what happened, by whom, to whom (the body says the same in words).
    #[graphql(tag = "same_for_every_viewer")]
    async fn system_event(&self) -> Option<SystemEvent> {
        let kind = SystemKind::parse(self.0.system_kind.as_deref()?)?;
        Some(SystemEvent {
            kind,
            actor_id: self.0.system_actor_id,
            target_id: self.0.system_target_id,
            role: self.0.system_role.as_deref().map(Role::parse),
        })
    }

    /// The attached file; null for text messages and once the message is deleted. Its
    /// `downloadUrl` is made for the viewer (it names them and ends with their membership).
    #[graphql(tag = "same_for_every_viewer")]
    async fn attachment(&self, ctx: &Context<'_>) -> Result<Option<Attachment>> {
        let m = &self.0;
        if m.deleted_at.is_some() || m.attachment_key.is_none() {
            return Ok(None);
        }
        let viewer = ctx.viewer()?;
        Ok(Some(Attachment {
            filename: m.attachment_filename.clone().unwrap_or_default(),
            content_type: m.attachment_content_type.clone().unwrap_or_default(),
            size: m.attachment_size.unwrap_or_default(),
            sha256: m.attachment_sha256.clone().unwrap_or_default(),
            download_url: ctx.state().files.download_url(
                ctx.data_opt::<crate::files::RequestOrigin>(),
                m.id,
                viewer.user_id,
                Utc::now().timestamp(),
            ),
        }))
    }

    /// The message this one answers, if any.
    #[graphql(tag = "same_for_every_viewer")]
    async fn reply_to(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        match self.0.reply_to_id {
            Some(id) => load_message(ctx, id).await,
            None => Ok(None),
        }
    }

    /// The sender's own id for the send, shown to the sender only.
    #[graphql(tag = "per_viewer")]
    async fn client_message_id(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        let viewer = ctx.viewer()?;
        Ok(if self.0.sender_id == Some(viewer.user_id) {
            self.0.client_message_id.as_deref()
        } else {
            None
        })
    }

    /// When it was sent.
    #[graphql(tag = "same_for_every_viewer")]
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When its body was last changed by `editMessage`; null if never edited.
    #[graphql(tag = "same_for_every_viewer")]
    async fn edited_at(&self) -> Option<DateTime<Utc>> {
        self.0.edited_at
    }

    /// When it was deleted; null while it stands.
    #[graphql(tag = "same_for_every_viewer")]
    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.0.deleted_at
    }

    /// The reactions, one entry per emoji in the order each was first used. Empty once the
    /// message is deleted.
    #[graphql(tag = "per_viewer")]
    async fn reactions(&self, ctx: &Context<'_>) -> Result<Vec<Reaction>> {
        let viewer = ctx.viewer()?;
        let rows = ctx
            .loaders()
            .reactions
            .load_one(self.0.id)
            .await
            .map_err(load_error)?
            .unwrap_or_default();
        Ok(Reaction::group(&rows, viewer.user_id))
    }

    /// For a message of the timeline with replies in its thread (not deleted ones), what the
    /// thread holds; null while it has none, and for a reply in a thread (threads are one level
    /// deep). `Query.thread` pages the replies.
    #[graphql(tag = "same_for_every_viewer")]
    async fn thread(&self, ctx: &Context<'_>) -> Result<Option<ThreadSummary>> {
        if self.0.thread_root_id.is_some() {
            return Ok(None);
        }
        let summary = ctx
            .loaders()
            .threads
            .load_one(self.0.id)
            .await
            .map_err(load_error)?;
        Ok(summary.map(|summary| ThreadSummary {
            root_id: self.0.id,
            root_sender_id: self.0.sender_id,
            summary,
        }))
    }

    /// For a reply in a thread, the thread's root (which may since have been deleted); null for
    /// a message of the timeline.
    #[graphql(tag = "same_for_every_viewer")]
    async fn thread_root(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        match self.0.thread_root_id {
            Some(id) => load_message(ctx, id).await,
            None => Ok(None),
        }
    }

    /// When it was pinned to its conversation; null when it is not pinned.
    #[graphql(tag = "same_for_every_viewer")]
    async fn pinned_at(&self) -> Option<DateTime<Utc>> {
        self.0.pinned_at
    }

    /// Who pinned it; null when it is not pinned.
    #[graphql(tag = "same_for_every_viewer")]
    async fn pinned_by(&self) -> Option<User> {
        self.0.pinned_by_id.map(User::by_id)
    }

    /// Members other than the sender whose read marker has reached this message.
    #[graphql(tag = "per_viewer")]
    async fn read_by(&self, ctx: &Context<'_>) -> Result<Vec<User>> {
        let readers: Vec<i64> = self.readers(ctx).await?;
        let users = ctx
            .loaders()
            .users
            .load_many(readers.iter().copied())
            .await
            .map_err(load_error)?;
        Ok(readers
            .iter()
            .filter_map(|id| users.get(id).cloned().map(User::new))
            .collect())
    }

    /// For the viewer's own message: whether every other member has read it. For anyone else's:
    /// whether the viewer has.
    #[graphql(tag = "per_viewer")]
    async fn is_read(&self, ctx: &Context<'_>) -> Result<bool> {
        let viewer = ctx.viewer()?;
        let members = ctx
            .loaders()
            .members
            .load_one(self.0.conversation_id)
            .await
            .map_err(load_error)?
            .unwrap_or_default();
        let reached = |m: &member::Model| m.last_read_seq >= self.0.seq;
        Ok(if self.0.sender_id == Some(viewer.user_id) {
            members
                .iter()
                .filter(|m| m.user_id != viewer.user_id)
                .all(reached)
        } else {
            members
                .iter()
                .find(|m| m.user_id == viewer.user_id)
                .is_some_and(reached)
        })
    }
}

impl Message {
    async fn readers(&self, ctx: &Context<'_>) -> Result<Vec<i64>> {
        let members = ctx
            .loaders()
            .members
            .load_one(self.0.conversation_id)
            .await
            .map_err(load_error)?
            .unwrap_or_default();
        Ok(members
            .iter()
            .filter(|m| Some(m.user_id) != self.0.sender_id && m.last_read_seq >= self.0.seq)
            .map(|m| m.user_id)
            .collect())
    }
}

/// A file attached to a message.
#[derive(SimpleObject)]
pub struct Attachment {
    /// The sender's file name, reduced to its last path component, without control,
    /// bidirectional or invisible characters.
    #[graphql(tag = "same_for_every_viewer")]
    pub filename: String,
    /// Decided from the file's content (magic bytes), not from the name or the client's claim.
    #[graphql(tag = "same_for_every_viewer")]
    pub content_type: String,
    /// In bytes.
    #[graphql(tag = "same_for_every_viewer")]
    pub size: i64,
    /// Lower-case hex SHA-256 of the bytes.
    #[graphql(tag = "same_for_every_viewer")]
    pub sha256: String,
    /// `GET` it without a token (e.g. `<img src>`) until it expires, and while the viewer it
    /// was made for is still a member; with `Authorization: Bearer`, `/files/{messageId}` works
    /// for members at any time.
    #[graphql(tag = "per_viewer")]
    pub download_url: String,
}

/// What happened to a message.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MessageEventKind {
    /// A new message was sent.
    Created,
    /// A message's body was changed; `message` has the new body.
    Edited,
    /// A message was deleted; `message` has `deletedAt` set and no body.
    Deleted,
    /// Someone added or removed a reaction; `message.reactions` has them.
    Reacted,
    /// The message was pinned (`message.pinnedAt`, `message.pinnedBy`).
    Pinned,
    /// The message was unpinned.
    Unpinned,
}

impl From<MessageChange> for MessageEventKind {
    fn from(change: MessageChange) -> Self {
        match change {
            MessageChange::Created => MessageEventKind::Created,
            MessageChange::Edited => MessageEventKind::Edited,
            MessageChange::Deleted => MessageEventKind::Deleted,
            MessageChange::Reacted => MessageEventKind::Reacted,
            MessageChange::Pinned => MessageEventKind::Pinned,
            MessageChange::Unpinned => MessageEventKind::Unpinned,
        }
    }
}

/// A message was created, edited, deleted, reacted to, pinned or unpinned.
#[derive(Clone)]
pub struct MessageEvent {
    pub position: crate::events::Position,
    pub kind: MessageEventKind,
    pub message: std::sync::Arc<message::Model>,
}

/// A change to a message in one of the viewer's conversations, in the order the conversation
/// saw them.
#[Object]
impl MessageEvent {
    /// What happened to the message: created, edited, deleted, reacted to, pinned or unpinned.
    #[graphql(tag = "same_for_every_viewer")]
    async fn kind(&self) -> MessageEventKind {
        self.kind
    }

    /// Pass as `since` when resubscribing to receive everything after this event.
    #[graphql(tag = "same_for_every_viewer")]
    async fn cursor(&self, ctx: &Context<'_>) -> String {
        ids::cursor(
            CursorKind::Event,
            &[ctx.state().epoch, self.position.tx, self.position.id],
        )
    }

    /// The message as it is after the change.
    #[graphql(tag = "same_for_every_viewer")]
    async fn message(&self) -> Message {
        Message(self.message.as_ref().clone())
    }
}

/// Someone started or stopped typing.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct TypingEvent {
    /// The conversation being typed in (`cnv_…`).
    pub conversation_id: ID,
    #[graphql(skip)]
    pub user_id: i64,
    /// True when they started (or are still) typing; false when they stopped, sent, or their
    /// indicator lapsed (about 6 seconds after their last `setTyping`).
    pub is_typing: bool,
}

#[ComplexObject]
impl TypingEvent {
    /// Who is typing (null if their account is gone).
    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        load_user(ctx, self.user_id).await
    }
}

/// Someone's read marker moved.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct ReadReceiptEvent {
    /// The conversation read (`cnv_…`).
    pub conversation_id: ID,
    #[graphql(skip)]
    pub conversation: i64,
    #[graphql(skip)]
    pub user_id: i64,
    /// The newest message now read (null if the conversation has no messages).
    pub up_to_message_id: Option<ID>,
    /// When the marker moved.
    pub read_at: DateTime<Utc>,
}

#[ComplexObject]
impl ReadReceiptEvent {
    /// Pass as `since` to `readReceipts` to first receive every marker moved after this one.
    async fn cursor(&self, ctx: &Context<'_>) -> String {
        ids::cursor(
            CursorKind::Receipt,
            &[
                ctx.state().epoch,
                self.read_at.timestamp_micros(),
                self.conversation,
                self.user_id,
            ],
        )
    }

    /// Whose marker moved (the viewer's own too, from another device).
    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        load_user(ctx, self.user_id).await
    }
}

/// A new session: the bearer token and who it is for.
pub struct AuthPayload {
    pub token: String,
    pub user: user::Model,
}

/// A new session from `register` or `login`: the bearer token and the account it signs in.
#[Object]
impl AuthPayload {
    /// Send as `Authorization: Bearer <token>`. Shown once; the server keeps only its hash.
    async fn token(&self) -> &str {
        &self.token
    }

    /// The signed-in account.
    async fn user(&self) -> User {
        User::new(self.user.clone())
    }
}

/// Why a notification was made.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum NotificationKind {
    /// New messages in a conversation (unread ones collapse into one notification; see `count`).
    Message,
    /// New files in a conversation (collapse like messages).
    File,
    /// Someone answered one of the viewer's messages.
    Reply,
    /// Someone wrote `@username` naming the viewer.
    Mention,
    /// Someone replied in a thread the viewer takes part in (they started it, or replied in it).
    ThreadReply,
    /// Someone added the viewer to a room (`conversation` is the room).
    RoomAdded,
    /// Someone removed the viewer from a room (the room itself is no longer visible).
    RoomRemoved,
    /// Someone reacted to one of the viewer's messages (unread ones for one message collapse
    /// into one notification; see `count`).
    Reaction,
}

/// Something for the viewer to look at.
pub struct Notification(pub entity::notification::Model);

/// Something for the viewer to look at: a message, file, reply, mention or room change. Only its
/// recipient ever sees it.
#[Object]
impl Notification {
    /// Opaque and stable (`ntf_…`); pass it to `markNotificationsRead`.
    pub(crate) async fn id(&self) -> ID {
        ids::encode(Kind::Notification, self.0.id)
    }

    /// Why it was made.
    async fn kind(&self) -> NotificationKind {
        match self.0.kind.as_str() {
            "FILE" => NotificationKind::File,
            "REPLY" => NotificationKind::Reply,
            "MENTION" => NotificationKind::Mention,
            "THREAD_REPLY" => NotificationKind::ThreadReply,
            "ROOM_ADDED" => NotificationKind::RoomAdded,
            "ROOM_REMOVED" => NotificationKind::RoomRemoved,
            "REACTION" => NotificationKind::Reaction,
            _ => NotificationKind::Message,
        }
    }

    /// A one-line summary, e.g. "Alice: see you at 3".
    async fn text(&self) -> &str {
        &self.0.text
    }

    /// How many events this stands for (more than one when unread messages collapsed into it).
    async fn count(&self) -> i64 {
        self.0.count
    }

    /// Whether the viewer marked it read (`markNotificationsRead`, `markAllNotificationsRead`),
    /// or read the conversation past the message it is about.
    async fn is_read(&self) -> bool {
        self.0.is_read
    }

    /// Who caused it.
    async fn sender(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match self.0.actor_id {
            Some(id) => load_user(ctx, id).await,
            None => Ok(None),
        }
    }

    /// The conversation it is about, while the viewer is still a member.
    async fn conversation(&self, ctx: &Context<'_>) -> Result<Option<Conversation>> {
        let Some(id) = self.0.conversation_id else {
            return Ok(None);
        };
        if !viewer_is_member(ctx, id).await? {
            return Ok(None);
        }
        Ok(ctx
            .loaders()
            .conversations
            .load_one(id)
            .await
            .map_err(load_error)?
            .map(Conversation::new))
    }

    /// The (latest) message it is about, while the viewer is still a member of its conversation.
    async fn message(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        let (Some(id), Some(conversation)) = (self.0.message_id, self.0.conversation_id) else {
            return Ok(None);
        };
        if !viewer_is_member(ctx, conversation).await? {
            return Ok(None);
        }
        load_message(ctx, id).await
    }

    /// When it was first made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it last changed (a collapsed notification changes with each new message).
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// Pass as `since` to the `notifications` subscription to first receive every notification
    /// made or updated after this one.
    async fn cursor(&self, ctx: &Context<'_>) -> String {
        ids::cursor(
            CursorKind::Activity,
            &[
                ctx.state().epoch,
                self.0.updated_at.timestamp_micros(),
                self.0.id,
            ],
        )
    }
}

async fn viewer_is_member(ctx: &Context<'_>, conversation_id: i64) -> Result<bool> {
    let viewer = ctx.viewer()?;
    let members = ctx
        .loaders()
        .members
        .load_one(conversation_id)
        .await
        .map_err(load_error)?
        .unwrap_or_default();
    Ok(members.iter().any(|m| m.user_id == viewer.user_id))
}

/// Whether a user is connected.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PresenceStatus {
    /// Holds at least one live WebSocket connection, on any server instance.
    Online,
    /// No live connection (a few seconds after the last one closed).
    Offline,
}

/// A user's presence.
#[derive(SimpleObject)]
pub struct Presence {
    /// ONLINE or OFFLINE now.
    pub status: PresenceStatus,
    /// When their last connection closed (null while online, or if never seen).
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A user came online or went offline.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct PresenceEvent {
    #[graphql(skip)]
    pub user_id: i64,
    /// Their status from now on.
    pub status: PresenceStatus,
    /// When their last connection closed (null while online, if never seen, or if they have
    /// blocked the viewer).
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[ComplexObject]
impl PresenceEvent {
    /// Whose status changed.
    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        load_user(ctx, self.user_id).await
    }
}

/// One line of the audit log (visible to server administrators only).
pub struct AuditEntry(pub entity::audit_entry::Model);

/// One line of the audit log: a security-relevant action (sign-ins, sign-outs, password changes,
/// edits and deletions, room changes, signed-URL downloads, admin grants). Server administrators
/// only.
#[Object]
impl AuditEntry {
    /// Opaque (`aud_…`).
    async fn id(&self) -> ID {
        ID(format!("aud_{}", self.0.id))
    }

    /// When it happened.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }

    /// Who acted; null for a failed sign-in or a signed-URL download.
    async fn actor(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match self.0.actor_id {
            Some(id) => load_user(ctx, id).await,
            None => Ok(None),
        }
    }

    /// What happened, e.g. `login.failed`, `message.deleted`, `room.member_removed`.
    async fn action(&self) -> &str {
        &self.0.action
    }

    /// What it happened to: an id such as `msg_12`, or the username a sign-in tried.
    async fn target(&self) -> Option<&str> {
        self.0.target.as_deref()
    }

    /// More about it, as free text: for room changes the system message's words, "by a
    /// moderator" for a message someone else deleted; null if nothing more was recorded.
    async fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }
}

/// What a system message records.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SystemEventKind {
    /// The room was created (`actor`: its creator and first owner).
    RoomCreated,
    /// `actor` added `target` to the room with `role`.
    MemberAdded,
    /// `actor` removed `target` from the room.
    MemberRemoved,
    /// `actor` left the room of their own accord.
    MemberLeft,
    /// `actor` (the owner) changed `target`'s role to `role`.
    RoleChanged,
    /// `actor` handed the room to `target`, who is now its OWNER; `actor` became an ADMIN.
    OwnershipTransferred,
    /// `actor` renamed the room (the message's body has the new name).
    RoomRenamed,
    /// `actor` changed or removed the room's topic.
    TopicChanged,
}

impl From<SystemKind> for SystemEventKind {
    fn from(kind: SystemKind) -> Self {
        match kind {
            SystemKind::RoomCreated => SystemEventKind::RoomCreated,
            SystemKind::MemberAdded => SystemEventKind::MemberAdded,
            SystemKind::MemberRemoved => SystemEventKind::MemberRemoved,
            SystemKind::MemberLeft => SystemEventKind::MemberLeft,
            SystemKind::RoleChanged => SystemEventKind::RoleChanged,
            SystemKind::OwnershipTransferred => SystemEventKind::OwnershipTransferred,
            SystemKind::RoomRenamed => SystemEventKind::RoomRenamed,
            SystemKind::TopicChanged => SystemEventKind::TopicChanged,
        }
    }
}

/// The structured record of a system message, for clients that render their own text.
pub struct SystemEvent {
    pub kind: SystemKind,
    pub actor_id: Option<i64>,
    pub target_id: Option<i64>,
    pub role: Option<Role>,
}

/// What a system message records: what happened, who did it, to whom, with which role.
#[Object]
impl SystemEvent {
    /// What happened.
    #[graphql(tag = "same_for_every_viewer")]
    async fn kind(&self) -> SystemEventKind {
        self.kind.into()
    }

    /// Who made the change.
    #[graphql(tag = "same_for_every_viewer")]
    async fn actor(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match self.actor_id {
            Some(id) => load_user(ctx, id).await,
            None => Ok(None),
        }
    }

    /// Whom it was about (for membership and role changes).
    #[graphql(tag = "same_for_every_viewer")]
    async fn target(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match self.target_id {
            Some(id) => load_user(ctx, id).await,
            None => Ok(None),
        }
    }

    /// The role given (MEMBER_ADDED, ROLE_CHANGED, OWNERSHIP_TRANSFERRED).
    #[graphql(tag = "same_for_every_viewer")]
    async fn role(&self) -> Option<MemberRole> {
        self.role.map(Into::into)
    }
}

/// Most users `Reaction.users` returns.
const MAX_REACTION_USERS: i32 = 100;
/// What `Reaction.users` returns without `first`.
const DEFAULT_REACTION_USERS: i32 = 10;

/// What a thread holds, shown on its root.
pub struct ThreadSummary {
    root_id: i64,
    root_sender_id: Option<i64>,
    summary: Arc<threads::Summary>,
}

/// The replies in a message's thread, counting only those not deleted.
#[Object]
impl ThreadSummary {
    /// How many replies the thread holds.
    #[graphql(tag = "same_for_every_viewer")]
    async fn reply_count(&self) -> i64 {
        self.summary.replies
    }

    /// When the newest reply was sent.
    #[graphql(tag = "same_for_every_viewer")]
    async fn last_reply_at(&self) -> DateTime<Utc> {
        self.summary.last_reply_at
    }

    /// Who takes part: the root's sender, then everyone who replied, in the order of their first
    /// reply. A new reply notifies those of them still members (`THREAD_REPLY`).
    #[graphql(tag = "same_for_every_viewer")]
    async fn participants(&self) -> Vec<User> {
        let mut ids: Vec<i64> = self.root_sender_id.into_iter().collect();
        for id in &self.summary.repliers {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        ids.into_iter().map(User::by_id).collect()
    }

    /// The replies past the viewer's read marker in the conversation, from others. Marking the
    /// conversation read (`markRead`) up to a message reads the replies before it too.
    #[graphql(tag = "per_viewer")]
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let viewer = ctx.viewer()?;
        Ok(ctx
            .loaders()
            .thread_unread
            .load_one((viewer.user_id, self.root_id))
            .await
            .map_err(load_error)?
            .unwrap_or(0))
    }
}

/// One emoji on a message, with who reacted with it.
pub struct Reaction {
    emoji: String,
    /// In the order they reacted.
    user_ids: Vec<i64>,
    by_viewer: bool,
}

impl Reaction {
    /// A message's reactions grouped by emoji, in the order each emoji was first used (`rows`
    /// come in the order they were made).
    pub fn group(rows: &[reaction::Model], viewer: i64) -> Vec<Reaction> {
        let mut order: Vec<Reaction> = Vec::new();
        let mut at: HashMap<&str, usize> = HashMap::new();
        for row in rows {
            let i = *at.entry(row.emoji.as_str()).or_insert_with(|| {
                order.push(Reaction {
                    emoji: row.emoji.clone(),
                    user_ids: Vec::new(),
                    by_viewer: false,
                });
                order.len() - 1
            });
            order[i].user_ids.push(row.user_id);
            order[i].by_viewer |= row.user_id == viewer;
        }
        order
    }
}

/// One emoji's reactions to a message.
#[Object]
impl Reaction {
    /// The emoji, or `:shortcode:`, as it was added.
    async fn emoji(&self) -> &str {
        &self.emoji
    }

    /// How many people reacted with it.
    async fn count(&self) -> i32 {
        i32::try_from(self.user_ids.len()).unwrap_or(i32::MAX)
    }

    /// Whether the viewer is one of them.
    async fn reacted_by_me(&self) -> bool {
        self.by_viewer
    }

    /// Who reacted, earliest first.
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many (default 10, at most 100).")] first: Option<i32>,
    ) -> Result<Vec<User>> {
        let first = first.unwrap_or(DEFAULT_REACTION_USERS);
        if !(0..=MAX_REACTION_USERS).contains(&first) {
            return Err(crate::error::AppError::bad_input(format!(
                "first must be between 0 and {MAX_REACTION_USERS}"
            ))
            .into());
        }
        let wanted: Vec<i64> = self.user_ids.iter().take(first as usize).copied().collect();
        let users = ctx
            .loaders()
            .users
            .load_many(wanted.iter().copied())
            .await
            .map_err(load_error)?;
        Ok(wanted
            .iter()
            .filter_map(|id| users.get(id).cloned().map(User::new))
            .collect())
    }
}
