//! `markUnread`; merged into the `Mutation` root in `graphql/mod.rs` (`markRead` is a core
//! mutation).
use async_graphql::{Context, ID, Object, Result};

use super::{ContextExt, types::Conversation};
use crate::{
    chat::reads,
    ids::{self, Kind},
};

/// The mutation that moves a read marker back.
#[derive(Default)]
pub struct ReadMutation;

#[Object]
impl ReadMutation {
    /// Marks a message and everything after it unread again: the viewer's read marker moves back
    /// to just before it (the one way a marker moves back), unread counts grow accordingly, and
    /// the members' `readReceipts` (the viewer's other devices among them) get the new marker. A
    /// message already unread changes nothing.
    async fn mark_unread(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A conversation the viewer belongs to (`cnv_…`).")] conversation_id: ID,
        #[graphql(
            desc = "The first message to count as unread again (`msg_…`, of this conversation)."
        )]
        from_message_id: ID,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let conversation_id = ids::decode(Kind::Conversation, &conversation_id)?;
        let from = ids::decode(Kind::Message, &from_message_id)?;
        Ok(Conversation::new(
            reads::mark_unread(&ctx.state().chat, viewer, conversation_id, from).await?,
        ))
    }
}
