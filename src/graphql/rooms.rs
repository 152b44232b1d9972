//! Room mutations, kept apart from the core mutations so the room API reads as one piece; merged
//! into the `Mutation` root in `graphql/mod.rs` (system messages' `SystemEvent` is in `types`).
use async_graphql::{Context, ID, InputObject, Object, Result};

use super::{
    ContextExt,
    types::{Conversation, MemberRole},
};
use crate::{
    chat::rooms::{self, NewRoom, RoomName, RoomTopic, RoomUpdate},
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
