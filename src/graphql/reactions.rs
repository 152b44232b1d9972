//! Reactions and pins: their mutations, merged into the `Mutation` root in `graphql/mod.rs` (the
//! `Reaction` type is in `types`).
use async_graphql::{Context, ID, Object, Result};

use super::{ContextExt, types::Message};
use crate::{
    auth::Viewer,
    chat::{
        pins,
        reactions::{self, Emoji},
    },
    ids::{self, Kind},
    limits::Budget,
};

/// The signed-in viewer, charged one write against the send budget: reactions and pins are
/// writes into a conversation like messages, and share their rate limit.
async fn writer(ctx: &Context<'_>) -> Result<Viewer> {
    let viewer = ctx.viewer()?;
    let state = ctx.state();
    state
        .limits
        .take(
            Budget::Send,
            &viewer.user_id.to_string(),
            state.config.send_rate,
        )
        .await?;
    Ok(viewer)
}

/// The reaction and pin mutations.
#[derive(Default)]
pub struct ReactionMutation;

#[Object]
impl ReactionMutation {
    /// Adds the viewer's reaction to a message. Adding the same emoji again changes nothing. At
    /// most 20 different emoji per message (BAD_USER_INPUT past that); deleted messages take
    /// none. Members see the change as a REACTED message event.
    async fn add_reaction(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A message in one of the viewer's conversations (`msg_…`).")]
        message_id: ID,
        #[graphql(
            desc = "One Unicode emoji (skin tones and sequences included), or a `:shortcode:` of at most 32 characters."
        )]
        emoji: String,
    ) -> Result<Message> {
        let viewer = writer(ctx).await?;
        let message_id = ids::decode(Kind::Message, &message_id)?;
        let emoji = Emoji::parse(&emoji)?;
        Ok(Message(
            reactions::add(&ctx.state().chat, viewer, message_id, emoji).await?,
        ))
    }

    /// Removes the viewer's reaction. Removing one the viewer has not made changes nothing.
    async fn remove_reaction(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A message in one of the viewer's conversations (`msg_…`).")]
        message_id: ID,
        #[graphql(desc = "The emoji to take back, as it was added.")] emoji: String,
    ) -> Result<Message> {
        let viewer = writer(ctx).await?;
        let message_id = ids::decode(Kind::Message, &message_id)?;
        let emoji = Emoji::parse(&emoji)?;
        Ok(Message(
            reactions::remove(&ctx.state().chat, viewer, message_id, emoji).await?,
        ))
    }

    /// Pins a message to its conversation. In a direct conversation either member may; in a
    /// room the owner and admins (FORBIDDEN for members). At most 50 pins per conversation.
    /// Pinning a pinned message changes nothing. Members see a PINNED message event.
    async fn pin_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A message in one of the viewer's conversations (`msg_…`).")]
        message_id: ID,
    ) -> Result<Message> {
        let viewer = writer(ctx).await?;
        let message_id = ids::decode(Kind::Message, &message_id)?;
        Ok(Message(
            pins::set(&ctx.state().chat, viewer, message_id, true).await?,
        ))
    }

    /// Unpins a message; the same people as for `pinMessage` may. Members see an UNPINNED
    /// message event.
    async fn unpin_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A message in one of the viewer's conversations (`msg_…`).")]
        message_id: ID,
    ) -> Result<Message> {
        let viewer = writer(ctx).await?;
        let message_id = ids::decode(Kind::Message, &message_id)?;
        Ok(Message(
            pins::set(&ctx.state().chat, viewer, message_id, false).await?,
        ))
    }
}
