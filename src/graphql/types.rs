//! The GraphQL object types, thin wrappers over entity rows that resolve their links through the
//! DataLoaders.
use async_graphql::{
    ComplexObject, Context, Enum, ID, Object, Result, SimpleObject,
    dataloader::{DataLoader, Loader},
};
use chrono::{DateTime, Utc};
use entity::{conversation, member, message, user};
use tokio::sync::OnceCell;

use super::{
    ContextExt,
    loaders::{LoadError, load_error},
    rooms::SystemEvent,
};
use crate::{
    chat::{
        presence,
        rooms::{Role, SystemKind},
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

#[Object]
impl Session {
    async fn id(&self) -> ID {
        ids::encode(Kind::Session, self.token.id)
    }

    /// When the session signed in (`register` or `login`).
    async fn created_at(&self) -> DateTime<Utc> {
        self.token.created_at
    }

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

#[Object]
impl User {
    async fn id(&self) -> ID {
        ids::encode(Kind::User, self.0.id)
    }

    /// Unique, case-insensitively.
    async fn username(&self, ctx: &Context<'_>) -> Result<&str> {
        Ok(&self.row(ctx).await?.username)
    }

    async fn display_name(&self, ctx: &Context<'_>) -> Result<&str> {
        Ok(&self.row(ctx).await?.display_name)
    }

    async fn created_at(&self, ctx: &Context<'_>) -> Result<DateTime<Utc>> {
        Ok(self.row(ctx).await?.created_at)
    }

    /// Online or offline, and when last seen. Null unless the viewer shares a conversation with
    /// this user (or is this user) and has not blocked them; always OFFLINE, never seen, if this
    /// user has blocked the viewer.
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
    Direct,
    Room,
}

impl ConversationKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Direct => crate::chat::conversations::DIRECT,
            ConversationKind::Room => crate::chat::conversations::ROOM,
        }
    }
}

/// A member's role in a conversation.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MemberRole {
    Owner,
    Admin,
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

#[Object]
impl Conversation {
    async fn id(&self) -> ID {
        ids::encode(Kind::Conversation, self.0.id)
    }

    async fn kind(&self, ctx: &Context<'_>) -> Result<ConversationKind> {
        Ok(
            if self.row(ctx).await?.kind == crate::chat::conversations::ROOM {
                ConversationKind::Room
            } else {
                ConversationKind::Direct
            },
        )
    }

    /// The room's name; null for direct conversations (see `title`).
    async fn name(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        Ok(self.row(ctx).await?.name.as_deref())
    }

    async fn topic(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        Ok(self.row(ctx).await?.topic.as_deref())
    }

    /// What to show as the conversation's heading: the room's name, or for a direct conversation
    /// the other person's display name.
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

    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<Member>> {
        Ok(self
            .members_rows(ctx)
            .await?
            .iter()
            .cloned()
            .map(Member)
            .collect())
    }

    /// The most recent message (possibly deleted: then its body is hidden).
    async fn last_message(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        match self.row(ctx).await?.last_message_id {
            Some(id) => load_message(ctx, id).await,
            None => Ok(None),
        }
    }

    /// Messages from others that the viewer has not read (deleted ones do not count).
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
    async fn muted(&self, ctx: &Context<'_>) -> Result<bool> {
        let viewer = ctx.viewer()?;
        Ok(self
            .members_rows(ctx)
            .await?
            .iter()
            .any(|m| m.user_id == viewer.user_id && m.muted))
    }

    async fn last_activity_at(&self, ctx: &Context<'_>) -> Result<DateTime<Utc>> {
        Ok(self.row(ctx).await?.last_activity_at)
    }

    async fn created_at(&self, ctx: &Context<'_>) -> Result<DateTime<Utc>> {
        Ok(self.row(ctx).await?.created_at)
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

#[Object]
impl Member {
    async fn user(&self) -> User {
        User::by_id(self.0.user_id)
    }

    async fn role(&self) -> MemberRole {
        Role::parse(&self.0.role).into()
    }

    /// When the member last moved their read marker.
    async fn last_read_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_read_at
    }

    async fn joined_at(&self) -> DateTime<Utc> {
        self.0.joined_at
    }
}

/// What a message carries.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MessageKind {
    Text,
    Image,
    Video,
    Audio,
    Document,
    Archive,
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

#[Object]
impl Message {
    async fn id(&self) -> ID {
        ids::encode(Kind::Message, self.0.id)
    }

    async fn conversation(&self) -> Conversation {
        Conversation::by_id(self.0.conversation_id)
    }

    /// Null for system messages.
    async fn sender(&self) -> Option<User> {
        self.0.sender_id.map(User::by_id)
    }

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
    async fn body(&self) -> Option<&str> {
        if self.0.deleted_at.is_some() {
            None
        } else {
            self.0.body.as_deref()
        }
    }

    /// For system messages, what happened, by whom, to whom (the body says the same in words).
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
    async fn reply_to(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        match self.0.reply_to_id {
            Some(id) => load_message(ctx, id).await,
            None => Ok(None),
        }
    }

    /// The sender's own id for the send, shown to the sender only.
    async fn client_message_id(&self, ctx: &Context<'_>) -> Result<Option<&str>> {
        let viewer = ctx.viewer()?;
        Ok(if self.0.sender_id == Some(viewer.user_id) {
            self.0.client_message_id.as_deref()
        } else {
            None
        })
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn edited_at(&self) -> Option<DateTime<Utc>> {
        self.0.edited_at
    }

    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.0.deleted_at
    }

    /// Members other than the sender whose read marker has reached this message.
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
    pub filename: String,
    /// Decided from the file's content (magic bytes), not from the name or the client's claim.
    pub content_type: String,
    /// In bytes.
    pub size: i64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    /// `GET` it without a token (e.g. `<img src>`) until it expires, and while the viewer it
    /// was made for is still a member; with `Authorization: Bearer`, `/files/{messageId}` works
    /// for members at any time.
    pub download_url: String,
}

/// What happened to a message.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MessageEventKind {
    Created,
    Edited,
    Deleted,
}

impl From<MessageChange> for MessageEventKind {
    fn from(change: MessageChange) -> Self {
        match change {
            MessageChange::Created => MessageEventKind::Created,
            MessageChange::Edited => MessageEventKind::Edited,
            MessageChange::Deleted => MessageEventKind::Deleted,
        }
    }
}

/// A message was created, edited or deleted.
#[derive(Clone)]
pub struct MessageEvent {
    pub event_id: i64,
    pub kind: MessageEventKind,
    pub message: std::sync::Arc<message::Model>,
}

#[Object]
impl MessageEvent {
    async fn kind(&self) -> MessageEventKind {
        self.kind
    }

    /// Pass as `since` when resubscribing to receive everything after this event.
    async fn cursor(&self, ctx: &Context<'_>) -> String {
        ids::cursor(CursorKind::Event, &[ctx.state().epoch, self.event_id])
    }

    async fn message(&self) -> Message {
        Message(self.message.as_ref().clone())
    }
}

/// Someone started or stopped typing.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct TypingEvent {
    pub conversation_id: ID,
    #[graphql(skip)]
    pub user_id: i64,
    pub is_typing: bool,
}

#[ComplexObject]
impl TypingEvent {
    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        load_user(ctx, self.user_id).await
    }
}

/// Someone's read marker moved.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct ReadReceiptEvent {
    pub conversation_id: ID,
    #[graphql(skip)]
    pub conversation: i64,
    #[graphql(skip)]
    pub user_id: i64,
    /// The newest message now read (null if the conversation has no messages).
    pub up_to_message_id: Option<ID>,
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

    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        load_user(ctx, self.user_id).await
    }
}

/// A new session: the bearer token and who it is for.
pub struct AuthPayload {
    pub token: String,
    pub user: user::Model,
}

#[Object]
impl AuthPayload {
    /// Send as `Authorization: Bearer <token>`. Shown once; the server keeps only its hash.
    async fn token(&self) -> &str {
        &self.token
    }

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
    RoomAdded,
    RoomRemoved,
}

/// Something for the viewer to look at.
pub struct Notification(pub entity::notification::Model);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ids::encode(Kind::Notification, self.0.id)
    }

    async fn kind(&self) -> NotificationKind {
        match self.0.kind.as_str() {
            "FILE" => NotificationKind::File,
            "REPLY" => NotificationKind::Reply,
            "MENTION" => NotificationKind::Mention,
            "ROOM_ADDED" => NotificationKind::RoomAdded,
            "ROOM_REMOVED" => NotificationKind::RoomRemoved,
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
    Online,
    Offline,
}

/// A user's presence.
#[derive(SimpleObject)]
pub struct Presence {
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
    pub status: PresenceStatus,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[ComplexObject]
impl PresenceEvent {
    async fn user(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        load_user(ctx, self.user_id).await
    }
}

/// One line of the audit log (visible to server administrators only).
pub struct AuditEntry(pub entity::audit_entry::Model);

#[Object]
impl AuditEntry {
    async fn id(&self) -> ID {
        ID(format!("aud_{}", self.0.id))
    }

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

    async fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }
}
