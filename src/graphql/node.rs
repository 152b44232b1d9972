//! Relay's Global Object Identification: the `Node` interface and the lookups behind
//! `Query.node` / `Query.nodes`. An id names its kind (`usr_`, `cnv_`, `msg_`, `ntf_`), so a
//! client can refetch any object it holds from its id alone. Each kind is access-checked exactly
//! as its own lookup is, and a whole `nodes` list costs one batched read per kind.
use std::collections::{HashMap, HashSet};

use async_graphql::{ID, Interface};

use super::{
    ContextExt,
    loaders::load_error,
    types::{Conversation, Message, Notification, User},
};
use crate::{
    chat::notifications,
    error::AppError,
    ids::{self, Kind},
};

/// Most ids one `nodes` call may name.
pub const MAX_NODE_IDS: usize = 100;

/// An object that can be fetched again by its id alone, with `node(id:)` or `nodes(ids:)`
/// (Relay's Global Object Identification).
#[derive(Interface)]
#[graphql(field(
    name = "id",
    ty = "ID",
    desc = "Opaque and stable; its prefix tells the kind of object (`usr_`, `cnv_`, `msg_`, \
            `ntf_`). Pass it to `node(id:)` to fetch the object again."
))]
pub enum Node {
    User(User),
    Conversation(Conversation),
    Message(Message),
    Notification(Notification),
}

/// What one id resolves to: `None` where its own lookup answers null without an error (a user
/// that does not exist), `Some(Err)` where it answers with an error (NOT_FOUND for anything the
/// viewer may not see), `Some(Ok)` otherwise.
pub type Lookup = Option<Result<Node, async_graphql::Error>>;

/// Parses ids into (kind, row id), refusing the whole list if any is malformed or names something
/// that is not a node (BAD_USER_INPUT).
pub fn parse_ids(ids: &[ID]) -> Result<Vec<(Kind, i64)>, AppError> {
    if ids.len() > MAX_NODE_IDS {
        return Err(AppError::bad_input(format!(
            "`ids` may name at most {MAX_NODE_IDS} objects"
        )));
    }
    ids.iter()
        .map(|id| match ids::decode_any(id)? {
            (Kind::Session, _) => Err(AppError::bad_input(
                "a session id names no node: list sessions with `sessions`",
            )),
            parsed => Ok(parsed),
        })
        .collect()
}

/// Looks up parsed ids for the viewer, in order (repeats allowed).
pub async fn lookup(
    ctx: &async_graphql::Context<'_>,
    wanted: &[(Kind, i64)],
) -> async_graphql::Result<Vec<Lookup>> {
    let viewer = ctx.viewer()?;
    let loaders = ctx.loaders();
    let of = |kind: Kind| -> Vec<i64> {
        let unique: HashSet<i64> = wanted
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, id)| *id)
            .collect();
        unique.into_iter().collect()
    };
    let (user_ids, conversation_ids, message_ids, notification_ids) = (
        of(Kind::User),
        of(Kind::Conversation),
        of(Kind::Message),
        of(Kind::Notification),
    );

    let users = loaders
        .users
        .load_many(user_ids)
        .await
        .map_err(load_error)?;
    let conversations = loaders
        .conversations
        .load_many(conversation_ids)
        .await
        .map_err(load_error)?;
    let messages = loaders
        .messages
        .load_many(message_ids)
        .await
        .map_err(load_error)?;
    // Membership decides both conversations and messages: one read for the conversations of
    // either.
    let mut visible_from: HashSet<i64> = conversations.keys().copied().collect();
    visible_from.extend(messages.values().map(|m| m.conversation_id));
    let members = loaders
        .members
        .load_many(visible_from)
        .await
        .map_err(load_error)?;
    let is_member = |conversation: i64| {
        members
            .get(&conversation)
            .is_some_and(|list| list.iter().any(|m| m.user_id == viewer.user_id))
    };
    let notifications: HashMap<i64, _> = if notification_ids.is_empty() {
        HashMap::new()
    } else {
        notifications::own_by_ids(&ctx.state().chat.store, viewer.user_id, &notification_ids)
            .await?
    };

    let not_found = |what: &str| Some(Err(AppError::not_found(what).into()));
    Ok(wanted
        .iter()
        .map(|&(kind, id)| match kind {
            // As `user(id:)`: any signed-in viewer may see any user; none is null.
            Kind::User => users
                .get(&id)
                .map(|row| Ok(Node::User(User::new(row.clone())))),
            // As `conversation(id:)`: members only; NOT_FOUND for everyone else, so that an
            // outsider cannot tell a conversation they are not in from one that does not exist.
            Kind::Conversation => match conversations.get(&id) {
                Some(row) if is_member(id) => {
                    Some(Ok(Node::Conversation(Conversation::new(row.clone()))))
                }
                _ => not_found("conversation"),
            },
            // As every lookup of a message (`replyToId`, `editMessage`, `/files/{id}`): members
            // of its conversation only.
            Kind::Message => match messages.get(&id) {
                Some(row) if is_member(row.conversation_id) => {
                    Some(Ok(Node::Message(Message(row.clone()))))
                }
                _ => not_found("message"),
            },
            // As `markNotificationsRead`: one's own only.
            Kind::Notification => match notifications.get(&id) {
                Some(row) => Some(Ok(Node::Notification(Notification(row.clone())))),
                None => not_found("notification"),
            },
            // Refused by `parse_ids` before any lookup.
            Kind::Session => Some(Err(AppError::bad_input(
                "a session id names no node: list sessions with `sessions`",
            )
            .into())),
        })
        .collect())
}
