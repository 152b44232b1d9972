//! Marking unread: the one way a read marker may move back.
use entity::conversation;

use super::{Chat, conversations, model::now};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::{Envelope, Event},
    store::reads,
};

/// Moves the viewer's read marker back to just before `from_message_id`, so that message and
/// everything after it count as unread again, and tells the conversation's members (the viewer's
/// other devices among them) through a read receipt. A message that is unread already changes
/// nothing.
pub async fn mark_unread(
    chat: &Chat,
    viewer: Viewer,
    conversation_id: i64,
    from_message_id: i64,
) -> AppResult<conversation::Model> {
    let (conversation, _) =
        conversations::require_member(&chat.store, conversation_id, viewer.user_id).await?;
    chat.store
        .write(move |txn| {
            let conversation = conversation.clone();
            Box::pin(async move {
                let message = crate::store::reactions::message_in(txn, from_message_id)
                    .await?
                    .filter(|m| m.conversation_id == conversation_id)
                    .ok_or_else(|| AppError::not_found("message"))?;
                let Some(member) = reads::membership(txn, conversation_id, viewer.user_id).await?
                else {
                    return Err(AppError::not_found("conversation"));
                };
                if member.last_read_seq < message.seq {
                    return Ok((conversation, Vec::new()));
                }
                let up_to_seq = message.seq - 1;
                let read_at = now();
                reads::set_marker(txn, conversation_id, viewer.user_id, up_to_seq, read_at).await?;
                let up_to_message_id = reads::newest_up_to(txn, conversation_id, up_to_seq).await?;
                let recipients =
                    crate::store::changes::recipients(txn, conversation_id, &[]).await?;
                let receipt = Envelope::new(
                    recipients,
                    Event::ReadReceipt {
                        conversation_id,
                        user_id: viewer.user_id,
                        up_to_seq,
                        up_to_message_id,
                        read_at,
                    },
                );
                Ok((conversation, vec![receipt]))
            })
        })
        .await
}
