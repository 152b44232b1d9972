//! Reactions and pins: their mutations and the `Reaction` type; merged into the `Mutation` root in
//! `graphql/mod.rs`.
use std::collections::HashMap;

use async_graphql::{Context, ID, Object, Result};
use entity::reaction;

use super::{ContextExt, loaders::load_error, types::Message, types::User};
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

/// Most users `Reaction.users` returns.
const MAX_REACTION_USERS: i32 = 100;
/// What `Reaction.users` returns without `first`.
const DEFAULT_REACTION_USERS: i32 = 10;

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
