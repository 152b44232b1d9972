//! Reactions: one per user per emoji on a message, at most [`MAX_EMOJI`] distinct emoji per
//! message. Adding or removing one is a change to the conversation like an edit: it takes the next
//! sequence number, is logged as REACTED and reaches subscribers in order; the message's author
//! is notified of additions (REACTION, one notification per message while unread).
use std::sync::Arc;

use entity::message;
use unicode_segmentation::UnicodeSegmentation;

use super::{Chat, messages, users};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::{Envelope, MessageChange},
    store::{self, Made, Txn, TxnFuture, changes, reactions},
};

/// Most distinct emoji one message may carry.
pub const MAX_EMOJI: u64 = 20;
/// Longest `:shortcode:`, colons included.
pub const MAX_SHORTCODE_CHARS: usize = 32;

/// A reaction's emoji: one Unicode emoji (a single grapheme cluster, skin tones and ZWJ
/// sequences included) or a `:shortcode:` of letters, digits, `_`, `+` and `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emoji(String);

impl Emoji {
    pub fn parse(raw: &str) -> AppResult<Self> {
        if let Some(name) = raw
            .strip_prefix(':')
            .and_then(|rest| rest.strip_suffix(':'))
        {
            let fits = raw.chars().count() <= MAX_SHORTCODE_CHARS;
            let named = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'));
            if fits && named {
                return Ok(Self(raw.to_owned()));
            }
            return Err(AppError::bad_input(format!(
                "a shortcode is :name: with letters, digits, _, + or -, at most \
                 {MAX_SHORTCODE_CHARS} characters"
            )));
        }
        let one_cluster = raw.graphemes(true).count() == 1;
        if one_cluster && emojis::get(raw).is_some() {
            return Ok(Self(raw.to_owned()));
        }
        Err(AppError::bad_input(
            "emoji must be one Unicode emoji or a :shortcode:",
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a change to a live message does, given the message as it is under the conversation's
/// lock and the sequence number the change takes: the message after it and the events to
/// publish (none when nothing changed).
pub(super) type MessageChangeFn = dyn for<'t> Fn(&'t Txn, message::Model, i64) -> TxnFuture<'t, Made<message::Model>>
    + Send
    + Sync;

/// A [`MessageChangeFn`] from a closure (which this names the higher-ranked signature for).
pub(super) fn message_change<F>(change: F) -> Arc<MessageChangeFn>
where
    F: for<'t> Fn(&'t Txn, message::Model, i64) -> TxnFuture<'t, Made<message::Model>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(change)
}

/// Runs `change` on a message the viewer may see, in one write: the conversation's next sequence
/// number is taken first (serialising the change with every other change to the conversation,
/// so what `change` checks holds at commit), then the viewer's membership and the message's
/// standing are checked again under that lock. Outsiders get NOT_FOUND; a deleted message
/// BAD_USER_INPUT.
pub(super) async fn change_live_message(
    chat: &Chat,
    viewer: Viewer,
    message_id: i64,
    change: Arc<MessageChangeFn>,
) -> AppResult<message::Model> {
    let seen = messages::visible_message(&chat.store, viewer.user_id, message_id).await?;
    let conversation_id = seen.conversation_id;
    chat.store
        .write(move |txn| {
            let change = change.clone();
            Box::pin(async move {
                let (seq, _) = changes::next_seq(txn, conversation_id).await?;
                let message = live_message(txn, viewer, message_id, conversation_id).await?;
                change(txn, message, seq).await
            })
        })
        .await
}

/// Adds the viewer's reaction. Adding one that is already there changes nothing and is not an
/// error.
pub async fn add(
    chat: &Chat,
    viewer: Viewer,
    message_id: i64,
    emoji: Emoji,
) -> AppResult<message::Model> {
    let actor = users::find(&chat.store, viewer.user_id)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    let actor_name = actor.display_name;
    let change = message_change(move |txn: &Txn, message: message::Model, seq: i64| {
        let emoji = emoji.clone();
        let actor_name = actor_name.clone();
        Box::pin(async move {
            let (used, distinct) = reactions::emoji_use(txn, message.id, emoji.as_str()).await?;
            if !used && distinct >= MAX_EMOJI {
                return Err(AppError::bad_input(format!(
                    "a message carries at most {MAX_EMOJI} different emoji"
                )));
            }
            if !reactions::insert(txn, message.id, viewer.user_id, emoji.as_str()).await? {
                return Ok((message, Vec::new()));
            }
            let mut events = logged(txn, MessageChange::Reacted, message.clone(), seq).await?;
            if let Some(author) = message.sender_id
                && author != viewer.user_id
                && store::rooms::member(txn, message.conversation_id, author)
                    .await?
                    .is_some()
                && !crate::store::blocks::exists(txn, author, viewer.user_id).await?
            {
                let text = format!("{actor_name} reacted {} to your message", emoji.as_str());
                let row =
                    reactions::notify_reaction(txn, author, viewer.user_id, &message, text).await?;
                events.extend(super::notifications::envelope(vec![row]));
            }
            Ok((message, events))
        })
    });
    change_live_message(chat, viewer, message_id, change).await
}

/// Removes the viewer's reaction. Removing one that is not there changes nothing.
pub async fn remove(
    chat: &Chat,
    viewer: Viewer,
    message_id: i64,
    emoji: Emoji,
) -> AppResult<message::Model> {
    let change = message_change(move |txn: &Txn, message: message::Model, seq: i64| {
        let emoji = emoji.clone();
        Box::pin(async move {
            if !reactions::delete(txn, message.id, viewer.user_id, emoji.as_str()).await? {
                return Ok((message, Vec::new()));
            }
            let events = logged(txn, MessageChange::Reacted, message.clone(), seq).await?;
            Ok((message, events))
        })
    });
    change_live_message(chat, viewer, message_id, change).await
}

/// The message as it is in the transaction, if the viewer is still a member and it is not
/// deleted.
async fn live_message(
    txn: &Txn,
    viewer: Viewer,
    message_id: i64,
    conversation_id: i64,
) -> AppResult<message::Model> {
    if store::rooms::member(txn, conversation_id, viewer.user_id)
        .await?
        .is_none()
    {
        return Err(AppError::not_found("message"));
    }
    let message = store::messages::find(txn, message_id)
        .await?
        .ok_or_else(|| AppError::not_found("message"))?;
    if message.deleted_at.is_some() {
        return Err(AppError::bad_input("the message was deleted"));
    }
    Ok(message)
}

/// Logs the change and returns the events that tell the conversation's members.
pub(super) async fn logged(
    txn: &Txn,
    change: MessageChange,
    message: message::Model,
    seq: i64,
) -> AppResult<Vec<Envelope>> {
    let conversation_id = message.conversation_id;
    let logged = changes::log_change(txn, change, message, seq).await?;
    let recipients = changes::recipients(txn, conversation_id, &[]).await?;
    Ok(changes::envelopes(vec![logged], recipients))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_are_one_emoji_or_a_shortcode() {
        for good in [
            "👍",
            "❤️",
            "👍🏽",
            "👨‍👩‍👧",
            "🇿🇦",
            ":party_parrot:",
            ":+1:",
            ":a-b:",
        ] {
            assert!(Emoji::parse(good).is_ok(), "{good}");
        }
        let long = format!(":{}:", "a".repeat(31));
        for bad in [
            "",
            "a",
            "👍👍",
            "👍 ",
            "::",
            ":a b:",
            ":a",
            "abc",
            long.as_str(),
            "\u{200d}",
        ] {
            assert!(Emoji::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Emoji::parse(&format!(":{}:", "a".repeat(30))).is_ok());
    }
}
