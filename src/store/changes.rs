//! The change log: every change to a conversation takes the conversation's next sequence number
//! and a row in `conversation_events`, in the transaction that makes it. Subscriptions replay it
//! after a cursor, and each instance's delivery reads it in position order.
use std::sync::Arc;

use entity::{conversation_event, message, notification};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseTransaction, Set};

use super::conversations;
use crate::{
    chat::model::now,
    error::{AppError, AppResult},
    events::{Envelope, Event, MessageChange, Position},
};

/// Takes the conversation's next sequence number and stamps its activity time. It must be the
/// first write of its transaction: it serialises concurrent changes to one conversation (room
/// operations rely on this to check permissions against membership no one else is changing), and
/// on PostgreSQL the conversation's lock is taken before the transaction has an id, so that within
/// a conversation, transaction ids (the first part of a change's [`Position`]) follow sequence
/// numbers: a transaction that waited for the lock gets its id after the one that held it
/// committed. (Locking the row by the `UPDATE` alone would not do: PostgreSQL gives the waiting
/// transaction its id before it waits.) Different conversations never wait for each other.
pub async fn next_seq(
    txn: &DatabaseTransaction,
    conversation_id: i64,
) -> AppResult<(i64, chrono::DateTime<chrono::Utc>)> {
    let at = now();
    let text = match txn.get_database_backend() {
        // The lock is an uncorrelated subquery: PostgreSQL takes it once, before the row is read,
        // so before the row's update gives the transaction its id; waiting on it, the statement
        // then updates the row as the holder committed it. The single-key advisory lock space is
        // the conversations' ids.
        sea_orm::DbBackend::Postgres => {
            "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = $1 \
             WHERE id = $2 AND (SELECT true FROM (SELECT pg_advisory_xact_lock($2)) AS locked) \
             RETURNING last_seq"
        }
        _ => {
            "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = $1 \
             WHERE id = $2 RETURNING last_seq"
        }
    };
    let row = txn
        .query_one_raw(super::sql(
            txn,
            text,
            vec![at.into(), conversation_id.into()],
        ))
        .await?
        .ok_or_else(|| AppError::not_found("conversation"))?;
    Ok((row.try_get::<i64>("", "last_seq")?, at))
}

/// A change written to the log inside a transaction, to be published once that transaction commits.
pub struct Logged {
    pub position: Position,
    pub change: MessageChange,
    pub message: message::Model,
}

/// Records a change in the conversation's log under sequence number `seq`: a created message's
/// own, or for an edit or delete the one [`next_seq`] took at the start of the transaction.
pub async fn log_change(
    txn: &DatabaseTransaction,
    change: MessageChange,
    message: message::Model,
    seq: i64,
) -> AppResult<Logged> {
    let event = conversation_event::ActiveModel {
        conversation_id: Set(message.conversation_id),
        seq: Set(seq),
        kind: Set(change.as_str().into()),
        message_id: Set(message.id),
        created_at: Set(now()),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(Logged {
        position: Position {
            tx: event.tx,
            id: event.id,
        },
        change,
        message,
    })
}

/// The conversation's members as they are now (in the transaction: at commit, so a member removed
/// in it is left out unless named in `also`): who is told about its changes.
pub async fn recipients(
    txn: &DatabaseTransaction,
    conversation_id: i64,
    also: &[i64],
) -> AppResult<Vec<i64>> {
    let mut recipients = conversations::member_ids(txn, conversation_id).await?;
    // `Envelope::new` drops the repeats.
    recipients.extend_from_slice(also);
    Ok(recipients)
}

/// The events telling `recipients` about each logged change, in order.
pub fn envelopes(logged: Vec<Logged>, recipients: Vec<i64>) -> Vec<Envelope> {
    logged
        .into_iter()
        .map(
            |Logged {
                 position,
                 change,
                 message,
             }| {
                Envelope::new(
                    recipients.clone(),
                    Event::Message {
                        position,
                        change,
                        message: Arc::new(message),
                    },
                )
            },
        )
        .collect()
}

/// What a send wrote: the message, who is told about it (the members at commit) and its
/// change-log entry.
pub struct Sent {
    pub message: message::Model,
    pub recipients: Vec<i64>,
    pub logged: Logged,
    /// Whether the write itself found the thread root still standing, under the conversation's
    /// lock (PostgreSQL's does, in the insert); if not, the domain checks it in the transaction.
    pub root_checked: bool,
    /// The notifications the write made itself (PostgreSQL's, for a draft with
    /// [`super::send_row::Collapsed`]); None leaves them to the domain.
    pub notified: Option<Notified>,
}

/// The collapsed notifications a send's own write made.
pub struct Notified {
    /// The rows made or updated, to publish after the commit.
    pub rows: Vec<notification::Model>,
    /// False when the conversation was too big: the message went to the backlog.
    pub inline: bool,
}
