//! Pinned messages: at most [`MAX_PINS`] per conversation. In a direct conversation either member
//! may pin; in a room the owner and admins. Pinning and unpinning are changes to the
//! conversation (PINNED / UNPINNED), logged and delivered in order like edits.
use entity::message;

use super::{Chat, conversations, messages, model::ROOM, model::Role, reactions::live_message};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::MessageChange,
    store::{changes, reactions as rows},
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
    let store = &chat.store;
    let seen = messages::visible_message(store, viewer.user_id, message_id).await?;
    let conversation_id = seen.conversation_id;
    store
        .write(move |txn| {
            Box::pin(async move {
                let (seq, _) = changes::next_seq(txn, conversation_id).await?;
                let message = live_message(txn, viewer, message_id, conversation_id).await?;
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
                let change = if pin {
                    MessageChange::Pinned
                } else {
                    MessageChange::Unpinned
                };
                let logged = changes::log_change(txn, change, message.clone(), seq).await?;
                let recipients = changes::recipients(txn, conversation_id, &[]).await?;
                Ok((message, changes::envelopes(vec![logged], recipients)))
            })
        })
        .await
}

/// The conversation's pinned messages, most recently pinned first.
pub async fn pinned(chat: &Chat, conversation_id: i64) -> AppResult<Vec<message::Model>> {
    rows::pinned(chat.store.reader(), conversation_id, MAX_PINS).await
}
