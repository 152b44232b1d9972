//! Marking unread: the one way a read marker may move back.
use entity::conversation;

use super::{Chat, conversations, model::now};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::{Envelope, Event},
    store,
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
    chat.store
        .write(move |txn| {
            Box::pin(async move {
                let (conversation, member) =
                    conversations::require_member(txn, conversation_id, viewer.user_id).await?;
                let message = store::messages::find(txn, from_message_id)
                    .await?
                    .filter(|m| m.conversation_id == conversation_id)
                    .ok_or_else(|| AppError::not_found("message"))?;
                if member.last_read_seq < message.seq {
                    return Ok((conversation, Vec::new()));
                }
                let up_to_seq = message.seq - 1;
                let read_at = now();
                store::conversations::set_read_marker(
                    txn,
                    conversation_id,
                    viewer.user_id,
                    up_to_seq,
                    read_at,
                )
                .await?;
                let up_to_message_id =
                    store::conversations::newest_up_to(txn, conversation_id, up_to_seq).await?;
                let recipients = store::changes::recipients(txn, conversation_id, &[]).await?;
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
