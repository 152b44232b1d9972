//! Conversations and membership: direct conversations made on first use, the per-user list ordered
//! by activity, unread counts from read markers, and marking read.
use entity::{conversation, member};

use super::{
    Chat,
    model::{DIRECT, Role, now},
};
pub use crate::store::conversations::{
    Receipt, by_ids, list_for_user, members_of, receipts_after, total_unread, unread_counts,
};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::{Envelope, Event},
    store::{self, Reads},
};

/// The conversation and the user's membership, or NOT_FOUND (outsiders cannot tell a
/// conversation they are not in from one that does not exist). Asked of the store, or inside a
/// write (`txn`) to see the membership as the write will commit it.
pub async fn require_member(
    db: &impl Reads,
    conversation_id: i64,
    user_id: i64,
) -> AppResult<(conversation::Model, member::Model)> {
    store::conversations::membership(db, conversation_id, user_id)
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))
}

/// The ids of a conversation's members: who may receive its events.
pub async fn member_ids(db: &impl Reads, conversation_id: i64) -> AppResult<Vec<i64>> {
    store::conversations::member_ids(db, conversation_id).await
}

/// The ids of the conversations a user belongs to: what a subscription to all of them follows.
pub async fn ids_of_member(db: &impl Reads, user_id: i64) -> AppResult<Vec<i64>> {
    store::conversations::ids_of_member(db, user_id).await
}

fn direct_key(a: i64, b: i64) -> String {
    format!("{}:{}", Ord::min(a, b), Ord::max(a, b))
}

/// The direct conversation between two users, if it exists.
pub async fn direct_between(
    db: &impl Reads,
    a: i64,
    b: i64,
) -> AppResult<Option<conversation::Model>> {
    store::conversations::direct_by_key(db, &direct_key(a, b)).await
}

/// The direct conversation between two users, made on first use. Exactly one is ever made, even
/// when both users send their first message at the same moment: the unique key decides the race.
pub async fn get_or_create_direct(chat: &Chat, a: i64, b: i64) -> AppResult<conversation::Model> {
    if a == b {
        return Err(AppError::bad_input(
            "a direct conversation needs another user",
        ));
    }
    if let Some(existing) = direct_between(&chat.store, a, b).await? {
        return Ok(existing);
    }
    let key = direct_key(a, b);
    chat.store
        .write(move |txn| {
            let key = key.clone();
            Box::pin(async move {
                store::conversations::insert_direct(
                    txn,
                    &key,
                    DIRECT,
                    Role::Member.as_str(),
                    [a, b],
                    now(),
                )
                .await?;
                // The one made here or by the send that won the race.
                let direct = store::conversations::direct_by_key(txn, &key)
                    .await?
                    .ok_or_else(|| AppError::Internal("direct conversation vanished".into()))?;
                // Instances where either follows all their conversations start following this
                // one (told twice after a lost race: following is idempotent).
                let joined = Envelope::new(
                    vec![a, b],
                    Event::Joined {
                        conversation_id: direct.id,
                    },
                );
                Ok((direct, vec![joined]))
            })
        })
        .await
}

/// Moves the viewer's read marker forward to a message (or to the latest), reads the
/// notifications it covers, and tells the members. Markers never move backwards.
pub async fn mark_read(
    chat: &Chat,
    viewer: Viewer,
    conversation_id: i64,
    up_to_message_id: Option<i64>,
) -> AppResult<conversation::Model> {
    let db = &chat.store;
    let (conversation, member) = require_member(db, conversation_id, viewer.user_id).await?;
    // Without a message, to the conversation's end: its newest message is found in the write
    // (the conversation's `last_message_id` is its timeline's, and a reply in a thread may be
    // newer).
    let (up_to_seq, up_to_message_id) = match up_to_message_id {
        None => (conversation.last_seq, None),
        Some(id) => {
            let message = store::messages::find(db, id)
                .await?
                .filter(|m| m.conversation_id == conversation_id)
                .ok_or_else(|| AppError::not_found("message"))?;
            (message.seq, Some(message.id))
        }
    };
    if up_to_seq <= member.last_read_seq {
        return Ok(conversation);
    }
    let user_id = viewer.user_id;
    chat.store
        .write(move |txn| {
            Box::pin(async move {
                let read_at = now();
                let up_to_message_id = match up_to_message_id {
                    Some(id) => Some(id),
                    None => {
                        store::conversations::newest_up_to(txn, conversation_id, up_to_seq).await?
                    }
                };
                let moved = store::conversations::move_read_marker(
                    txn,
                    conversation_id,
                    user_id,
                    up_to_seq,
                    read_at,
                )
                .await?;
                if let Some(message_id) = up_to_message_id {
                    store::notifications::read_through(txn, user_id, conversation_id, message_id)
                        .await?;
                }
                let mut events = Vec::new();
                if moved {
                    let recipients = member_ids(txn, conversation_id).await?;
                    events.push(Envelope::new(
                        recipients,
                        Event::ReadReceipt {
                            conversation_id,
                            user_id,
                            up_to_seq,
                            up_to_message_id,
                            read_at,
                        },
                    ));
                }
                Ok(((), events))
            })
        })
        .await?;
    Ok(conversation)
}
