//! Pinned messages: at most [`MAX_PINS`] per conversation. In a direct conversation either member
//! may pin; in a room the owner and admins. Pinning and unpinning are changes to the
//! conversation (PINNED / UNPINNED), logged and delivered in order like edits.
use entity::message;

use super::{
    Chat, conversations,
    model::{ROOM, Role},
    reactions::{change_live_message, logged, message_change},
};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::MessageChange,
    store::{Txn, reactions as rows},
};

/// Most messages pinned in one conversation.
pub const MAX_PINS: u64 = 50;

/// Pins (`pin`) or unpins a message. Pinning a pinned message, or unpinning one that is not,
/// changes nothing.
pub async fn set(
    chat: &Chat,
    viewer: Viewer,
    message_id: i64,
    pin: bool,
) -> AppResult<message::Model> {
    let change = message_change(move |txn: &Txn, message: message::Model, seq: i64| {
        Box::pin(async move {
            let conversation_id = message.conversation_id;
            let (conversation, member) =
                conversations::require_member(txn, conversation_id, viewer.user_id).await?;
            if conversation.kind == ROOM && Role::parse(&member.role) < Role::Admin {
                return Err(AppError::Forbidden(
                    "only the room's owner and admins may pin messages".into(),
                ));
            }
            if message.pinned_at.is_some() == pin {
                return Ok((message, Vec::new()));
            }
            if pin && rows::pin_count(txn, conversation_id).await? >= MAX_PINS {
                return Err(AppError::bad_input(format!(
                    "a conversation has at most {MAX_PINS} pinned messages; unpin one first"
                )));
            }
            let message = rows::set_pin(txn, message, pin.then_some(viewer.user_id)).await?;
            let kind = if pin {
                MessageChange::Pinned
            } else {
                MessageChange::Unpinned
            };
            let events = logged(txn, kind, message.clone(), seq).await?;
            Ok((message, events))
        })
    });
    change_live_message(chat, viewer, message_id, change).await
}

/// The conversation's pinned messages, most recently pinned first.
pub async fn pinned(chat: &Chat, conversation_id: i64) -> AppResult<Vec<message::Model>> {
    rows::pinned(chat.store.reader(), conversation_id, MAX_PINS).await
}
