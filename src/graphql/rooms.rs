//! Room mutations and the structured side of system messages. Kept apart from the core mutations so
//! the room API reads as one piece; merged into the `Mutation` root in `graphql/mod.rs`.
use async_graphql::{Context, Enum, ID, InputObject, Object, Result};

use super::{
    ContextExt,
    types::{Conversation, MemberRole, User, load_user},
};
use crate::{
    chat::{
        model::{Role, SystemKind},
        rooms::{self, NewRoom, RoomName, RoomTopic, RoomUpdate},
    },
    ids::{self, Kind},
};

/// A room to create. The creator becomes its owner.
#[derive(InputObject)]
pub struct CreateRoomInput {
    /// 1–100 characters (surrounding spaces are trimmed), no control characters.
    pub name: String,
    /// Up to 500 characters.
    pub topic: Option<String>,
    /// The other people to add as members (not the creator; each once; at most 1000).
    pub member_ids: Vec<ID>,
}

/// Changes to a room's settings; leave a field out (or null) to keep it. An empty topic clears it.
#[derive(InputObject)]
pub struct UpdateRoomInput {
    /// The new name: 1–100 characters (surrounding spaces are trimmed), no control characters.
    pub name: Option<String>,
    /// The new topic: up to 500 characters; an empty or blank one removes the topic.
    pub topic: Option<String>,
}

/// The room mutations.
#[derive(Default)]
pub struct RoomMutation;

#[Object]
impl RoomMutation {
    /// Creates a room owned by the viewer, with the given members.
    async fn create_room(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The room's name, topic and first members.")] input: CreateRoomInput,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let new = NewRoom {
            name: RoomName::parse(&input.name)?,
            topic: match input.topic.as_deref() {
                Some(topic) => RoomTopic::parse(topic)?,
                None => RoomTopic::none(),
            },
            member_ids: input
                .member_ids
                .iter()
                .map(|id| ids::decode(Kind::User, id))
                .collect::<Result<_, _>>()?,
        };
        Ok(Conversation::new(
            rooms::create(&ctx.state().chat, viewer, new).await?,
        ))
    }

    /// Renames a room or changes its topic (owner and admins).
    async fn update_room(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "A room the viewer belongs to (`cnv_…`); NOT_FOUND for a conversation the viewer is not in, BAD_USER_INPUT for a direct one."
        )]
        room_id: ID,
        #[graphql(desc = "What to change; fields left out stay as they are.")]
        input: UpdateRoomInput,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let room_id = ids::decode(Kind::Conversation, &room_id)?;
        let update = RoomUpdate {
            name: input.name.as_deref().map(RoomName::parse).transpose()?,
            topic: input.topic.as_deref().map(RoomTopic::parse).transpose()?,
        };
        Ok(Conversation::new(
            rooms::update(&ctx.state().chat, viewer, room_id, update).await?,
        ))
    }

    /// Adds a user to a room, as a MEMBER unless `role` says ADMIN (see the README for who may).
    async fn add_member(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "A room the viewer belongs to (`cnv_…`); NOT_FOUND for a conversation the viewer is not in, BAD_USER_INPUT for a direct one."
        )]
        room_id: ID,
        #[graphql(
            desc = "The user to add (`usr_…`); FORBIDDEN if they have blocked the viewer, CONFLICT if already a member."
        )]
        user_id: ID,
        #[graphql(
            desc = "MEMBER (the default; owner and admins may add) or ADMIN (the owner only). OWNER is BAD_USER_INPUT: a room changes owner only by `transferOwnership`."
        )]
        role: Option<MemberRole>,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let room_id = ids::decode(Kind::Conversation, &room_id)?;
        let user_id = ids::decode(Kind::User, &user_id)?;
        let role = role.unwrap_or(MemberRole::Member).into();
        Ok(Conversation::new(
            rooms::add_member(&ctx.state().chat, viewer, room_id, user_id, role).await?,
        ))
    }

    /// Removes someone from a room; they lose access to it at once.
    async fn remove_member(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "A room the viewer belongs to (`cnv_…`); NOT_FOUND for a conversation the viewer is not in, BAD_USER_INPUT for a direct one."
        )]
        room_id: ID,
        #[graphql(
            desc = "A member ranked below the viewer (`usr_…`): admins remove members, the owner removes anyone but themself."
        )]
        user_id: ID,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let room_id = ids::decode(Kind::Conversation, &room_id)?;
        let user_id = ids::decode(Kind::User, &user_id)?;
        Ok(Conversation::new(
            rooms::remove_member(&ctx.state().chat, viewer, room_id, user_id).await?,
        ))
    }

    /// Leaves a room. The owner must transfer ownership first.
    async fn leave_room(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "A room the viewer belongs to (`cnv_…`); NOT_FOUND for a conversation the viewer is not in, BAD_USER_INPUT for a direct one."
        )]
        room_id: ID,
    ) -> Result<bool> {
        let viewer = ctx.viewer()?;
        let room_id = ids::decode(Kind::Conversation, &room_id)?;
        rooms::leave(&ctx.state().chat, viewer, room_id).await?;
        Ok(true)
    }

    /// Makes a member an ADMIN or an admin a MEMBER (owner only).
    async fn set_member_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "A room the viewer belongs to (`cnv_…`); NOT_FOUND for a conversation the viewer is not in, BAD_USER_INPUT for a direct one."
        )]
        room_id: ID,
        #[graphql(desc = "A member other than the owner (`usr_…`).")] user_id: ID,
        #[graphql(desc = "ADMIN or MEMBER; OWNER is BAD_USER_INPUT (see `transferOwnership`).")]
        role: MemberRole,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let room_id = ids::decode(Kind::Conversation, &room_id)?;
        let user_id = ids::decode(Kind::User, &user_id)?;
        Ok(Conversation::new(
            rooms::set_role(&ctx.state().chat, viewer, room_id, user_id, role.into()).await?,
        ))
    }

    /// Hands the room to another member (owner only); the previous owner becomes an ADMIN.
    async fn transfer_ownership(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "A room the viewer belongs to (`cnv_…`); NOT_FOUND for a conversation the viewer is not in, BAD_USER_INPUT for a direct one."
        )]
        room_id: ID,
        #[graphql(desc = "The member who becomes the owner (`usr_…`).")] user_id: ID,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let room_id = ids::decode(Kind::Conversation, &room_id)?;
        let user_id = ids::decode(Kind::User, &user_id)?;
        Ok(Conversation::new(
            rooms::transfer_ownership(&ctx.state().chat, viewer, room_id, user_id).await?,
        ))
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
