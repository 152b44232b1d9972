//! Threads: replies that hang off one message of a conversation (their root) instead of joining
//! its timeline. One level deep: a reply in a thread is never a root. A reply takes the
//! conversation's next sequence number like any message, so it is replayed and delivered in the
//! conversation's order; `messages` leaves replies out unless asked, and each root shows a
//! summary of its thread. Sending a reply is `messages::send` with a root.
use entity::message;

use super::{messages::visible_message, model::SystemKind};
pub use crate::store::threads::{Summary, summaries, unread};
use crate::{
    error::{AppError, AppResult},
    store::{
        Reads,
        messages::{Listed, page as messages_page},
        pagination::{Page, PageRequest},
    },
};

/// A root the user may see, or NOT_FOUND; a reply in a thread or a system message is
/// BAD_USER_INPUT (neither has a thread).
pub async fn visible_root(db: &impl Reads, user_id: i64, root: i64) -> AppResult<message::Model> {
    let root = visible_message(db, user_id, root).await?;
    if root.thread_root_id.is_some() {
        return Err(AppError::bad_input(
            "rootId names a reply in a thread, not a thread's root",
        ));
    }
    if root.sender_id.is_none() {
        return Err(AppError::bad_input(
            "rootId names a system message, which has no thread",
        ));
    }
    Ok(root)
}

/// A page of the replies in the thread of `root`, in sequence order. A deleted root keeps its
/// thread readable.
pub async fn page(
    db: &impl Reads,
    user_id: i64,
    root: i64,
    request: PageRequest<i64>,
) -> AppResult<Page<message::Model>> {
    let root = visible_root(db, user_id, root).await?;
    messages_page(db, root.conversation_id, Listed::Thread(root.id), request).await
}

/// Whether a change to `message` reaches `viewer` following the thread of `root`: the root's own
/// changes, its replies', and the message about the viewer's own removal from or departure out
/// of the conversation (the last thing a former member is told, as on the conversation's
/// stream). [`crate::store::messages::events_after`] replays the same.
pub fn concerns(message: &message::Model, root: i64, viewer: i64) -> bool {
    message.id == root
        || message.thread_root_id == Some(root)
        || (message.system_target_id == Some(viewer)
            && SystemKind::DEPARTURES
                .iter()
                .any(|kind| message.system_kind.as_deref() == Some(kind.as_str())))
}
