//! Read operations.
use async_graphql::{Context, ID, Object, Result};

use super::{
    ContextExt,
    connection::Listing,
    node::{self, Node},
    types::{
        AuditEntry, Conversation, ConversationKind, Message, Notification, Session, User, load_user,
    },
};
use crate::{
    chat::{
        audit, blocks, conversations, messages, notifications,
        pagination::{DEFAULT_PAGE, Direction, Page, PageRequest, page_size},
        threads, users,
    },
    error::AppError,
    ids::{self, CursorKind, Kind},
};

/// The query root.
pub struct Query;

fn message_page_request(
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
) -> Result<PageRequest<i64>, AppError> {
    let seq = |c: Option<String>| {
        c.map(|c| ids::decode_cursor(CursorKind::Message, &c, 1).map(|v| v[0]))
            .transpose()
    };
    // With no arguments a history page is the newest messages.
    PageRequest::new(first, seq(after)?, last, seq(before)?, Direction::Backward)
}

/// Which messages a conversation's page lists.
fn listed(include_thread_replies: bool) -> messages::Listed {
    if include_thread_replies {
        messages::Listed::Everything
    } else {
        messages::Listed::Timeline
    }
}

fn message_connection(page: Page<entity::message::Model>) -> Listing<Message> {
    Listing::of(
        page,
        |m| ids::cursor(CursorKind::Message, &[m.seq]),
        Message,
    )
}

/// Everything that can be read. Every field needs a signed-in viewer (`Authorization: Bearer
/// <token>`; UNAUTHENTICATED otherwise) and shows only what that viewer may see.
#[Object]
impl Query {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        let viewer = ctx.viewer()?;
        load_user(ctx, viewer.user_id)
            .await?
            .ok_or_else(|| AppError::Unauthenticated("the account no longer exists").into())
    }

    /// The viewer's sessions still in force (neither revoked nor expired), newest first; at most
    /// the newest 100.
    async fn sessions(&self, ctx: &Context<'_>) -> Result<Vec<Session>> {
        let viewer = ctx.viewer()?;
        let tokens = crate::auth::tokens::active(&ctx.state().db, viewer.user_id).await?;
        Ok(tokens
            .into_iter()
            .map(|token| Session {
                current: token.id == viewer.token_id,
                token,
            })
            .collect())
    }

    /// The users the viewer has blocked, most recently blocked first.
    async fn blocked_users(&self, ctx: &Context<'_>) -> Result<Vec<User>> {
        let viewer = ctx.viewer()?;
        let store = &ctx.state().chat.store;
        let ids = blocks::blocked_by(store, viewer.user_id).await?;
        let mut found = users::by_ids(store, &ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(id))
            .map(User::new)
            .collect())
    }

    /// A user by id (null if there is none).
    async fn user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user's id (`usr_…`).")] id: ID,
    ) -> Result<Option<User>> {
        ctx.viewer()?;
        let id = ids::decode(Kind::User, &id)?;
        load_user(ctx, id).await
    }

    /// Any object by its id (Relay's Global Object Identification): a User, Conversation, Message
    /// or Notification. Checked as that kind's own lookup is: a user that does not exist is null;
    /// a conversation the viewer is not in, a message of one, or someone else's notification is
    /// null with NOT_FOUND, exactly as if it did not exist. A malformed id, or one of a kind that
    /// is no node (a session), is BAD_USER_INPUT.
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "An id as the API hands it out (`usr_…`, `cnv_…`, `msg_…`, `ntf_…`).")]
        id: ID,
    ) -> Result<Option<Node>> {
        ctx.viewer()?;
        let wanted = node::parse_ids(std::slice::from_ref(&id))?;
        match node::lookup(ctx, &wanted).await?.pop().flatten() {
            Some(found) => found.map(Some),
            None => Ok(None),
        }
    }

    /// Several objects by id, in the order asked (an id may repeat). Each entry is what
    /// `node(id:)` answers for its id: null where that is null, and for a NOT_FOUND the error is
    /// reported at the entry's index (`["nodes", i]`) while the others resolve. Users,
    /// conversations, messages and notifications are each read in one batch.
    async fn nodes(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most 100 ids (BAD_USER_INPUT beyond, or if any is malformed or names no node)."
        )]
        ids: Vec<ID>,
    ) -> Result<Vec<node::Lookup>> {
        ctx.viewer()?;
        let wanted = node::parse_ids(&ids)?;
        node::lookup(ctx, &wanted).await
    }

    /// Users whose username or display name contains `search`, case-insensitively.
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Part of a username or display name to look for, case-insensitively; at most 64 characters. Left out or blank, every user is listed."
        )]
        search: Option<String>,
        #[graphql(
            desc = "How many to return: 0 to 100 (BAD_USER_INPUT beyond), 50 when left out."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Start after this `cursor` (an edge's, or `pageInfo.endCursor`) from an earlier page of this same list; a cursor from any other list is BAD_USER_INPUT."
        )]
        after: Option<String>,
    ) -> Result<Listing<User>> {
        ctx.viewer()?;
        let first = page_size("first", first)?.unwrap_or(DEFAULT_PAGE);
        let after = after
            .map(|c| ids::decode_cursor(CursorKind::Row, &c, 1).map(|v| v[0]))
            .transpose()?;
        let page = users::search(&ctx.state().chat.store, search.as_deref(), after, first).await?;
        Ok(Listing::of(
            page,
            |u| ids::cursor(CursorKind::Row, &[u.id]),
            User::new,
        ))
    }

    /// The viewer's conversations, latest activity first.
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Only direct conversations (DIRECT) or only rooms (ROOM); both when left out."
        )]
        kind: Option<ConversationKind>,
        #[graphql(
            desc = "How many to return: 0 to 100 (BAD_USER_INPUT beyond), 50 when left out."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Start after this `cursor` (an edge's, or `pageInfo.endCursor`) from an earlier page of this same list; a cursor from any other list is BAD_USER_INPUT."
        )]
        after: Option<String>,
    ) -> Result<Listing<Conversation>> {
        let viewer = ctx.viewer()?;
        let first = page_size("first", first)?.unwrap_or(DEFAULT_PAGE);
        let after = after
            .map(|c| ids::decode_cursor(CursorKind::Activity, &c, 2).map(|v| (v[0], v[1])))
            .transpose()?;
        let page = conversations::list_for_user(
            &ctx.state().chat.store,
            viewer.user_id,
            kind.map(ConversationKind::as_str),
            after,
            first,
        )
        .await?;
        Ok(Listing::of(
            page,
            |c| {
                ids::cursor(
                    CursorKind::Activity,
                    &[c.last_activity_at.timestamp_micros(), c.id],
                )
            },
            Conversation::new,
        ))
    }

    /// A conversation the viewer belongs to. Others are NOT_FOUND, whether or not they exist.
    async fn conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The conversation's id (`cnv_…`).")] id: ID,
    ) -> Result<Option<Conversation>> {
        let viewer = ctx.viewer()?;
        let id = ids::decode(Kind::Conversation, &id)?;
        let (conversation, _) =
            conversations::require_member(&ctx.state().chat.store, id, viewer.user_id).await?;
        Ok(Some(Conversation::new(conversation)))
    }

    /// The direct conversation with a user, or null if none has started yet.
    async fn direct_conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The other person's id (`usr_…`); NOT_FOUND if there is no such user.")]
        user_id: ID,
    ) -> Result<Option<Conversation>> {
        let viewer = ctx.viewer()?;
        let other = ids::decode(Kind::User, &user_id)?;
        if users::find(&ctx.state().chat.store, other).await?.is_none() {
            return Err(AppError::not_found("user").into());
        }
        Ok(
            conversations::direct_between(&ctx.state().chat.store, viewer.user_id, other)
                .await?
                .map(Conversation::new),
        )
    }

    /// A page of a conversation's messages, oldest first within the page. With no arguments, the
    /// newest 50; page forward with `first`/`after`, backward with `last`/`before`.
    // Each argument is one of the field's GraphQL arguments.
    #[allow(clippy::too_many_arguments)]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "A conversation the viewer belongs to (`cnv_…`); any other is NOT_FOUND."
        )]
        conversation_id: ID,
        #[graphql(
            desc = "Page forward: how many messages to return after `after` (or from the oldest): 0 to 100. Give `first` or `last`, not both; with neither, the newest 50."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Page forward from this `cursor` (an edge's, or `pageInfo.endCursor`) of this same conversation's messages: the page starts with the next newer message."
        )]
        after: Option<String>,
        #[graphql(
            desc = "Page backward: how many messages to return before `before` (or the newest): 0 to 100."
        )]
        last: Option<i32>,
        #[graphql(
            desc = "Page backward from this `cursor` (an edge's, or `pageInfo.startCursor`) of this same conversation's messages: the page ends with the next older message."
        )]
        before: Option<String>,
        #[graphql(
            desc = "Whether replies in threads are listed too, in their place in the conversation's order (each has `threadRoot`); by default only the timeline: roots and plain messages.",
            default = false
        )]
        include_thread_replies: bool,
    ) -> Result<Listing<Message>> {
        let viewer = ctx.viewer()?;
        let id = ids::decode(Kind::Conversation, &conversation_id)?;
        let request = message_page_request(first, after, last, before)?;
        let store = &ctx.state().chat.store;
        conversations::require_member(store, id, viewer.user_id).await?;
        Ok(message_connection(
            messages::page(store, id, listed(include_thread_replies), request).await?,
        ))
    }

    /// A page of the replies in a thread, oldest first within the page (the root itself is not
    /// among them). With no arguments, the newest 50; page as `messages`.
    async fn thread(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The thread's root (`msg_…`), a message of a conversation the viewer belongs to (NOT_FOUND otherwise). A reply in a thread is BAD_USER_INPUT: threads are one level deep. A deleted root keeps its thread."
        )]
        root_id: ID,
        #[graphql(
            desc = "Page forward: how many replies to return after `after` (or from the oldest): 0 to 100. Give `first` or `last`, not both; with neither, the newest 50."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Page forward from this `cursor` (an edge's, or `pageInfo.endCursor`) of the thread: the page starts with the next newer reply."
        )]
        after: Option<String>,
        #[graphql(
            desc = "Page backward: how many replies to return before `before` (or the newest): 0 to 100."
        )]
        last: Option<i32>,
        #[graphql(
            desc = "Page backward from this `cursor` (an edge's, or `pageInfo.startCursor`) of the thread: the page ends with the next older reply."
        )]
        before: Option<String>,
    ) -> Result<Listing<Message>> {
        let viewer = ctx.viewer()?;
        let root = ids::decode(Kind::Message, &root_id)?;
        let request = message_page_request(first, after, last, before)?;
        Ok(message_connection(
            threads::page(&ctx.state().chat.store, viewer.user_id, root, request).await?,
        ))
    }

    /// The messages of the direct conversation with a user (empty if none has started).
    // Each argument is one of the field's GraphQL arguments.
    #[allow(clippy::too_many_arguments)]
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The other person's id (`usr_…`); NOT_FOUND if there is no such user.")]
        user_id: ID,
        #[graphql(
            desc = "Page forward: how many messages to return after `after` (or from the oldest): 0 to 100. Give `first` or `last`, not both; with neither, the newest 50."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Page forward from this `cursor` (an edge's, or `pageInfo.endCursor`) of this same conversation's messages: the page starts with the next newer message."
        )]
        after: Option<String>,
        #[graphql(
            desc = "Page backward: how many messages to return before `before` (or the newest): 0 to 100."
        )]
        last: Option<i32>,
        #[graphql(
            desc = "Page backward from this `cursor` (an edge's, or `pageInfo.startCursor`) of this same conversation's messages: the page ends with the next older message."
        )]
        before: Option<String>,
        #[graphql(
            desc = "Whether replies in threads are listed too, in their place in the conversation's order (each has `threadRoot`); by default only the timeline: roots and plain messages.",
            default = false
        )]
        include_thread_replies: bool,
    ) -> Result<Listing<Message>> {
        let viewer = ctx.viewer()?;
        let other = ids::decode(Kind::User, &user_id)?;
        let request = message_page_request(first, after, last, before)?;
        if users::find(&ctx.state().chat.store, other).await?.is_none() {
            return Err(AppError::not_found("user").into());
        }
        match conversations::direct_between(&ctx.state().chat.store, viewer.user_id, other).await? {
            Some(conversation) => Ok(message_connection(
                messages::page(
                    &ctx.state().chat.store,
                    conversation.id,
                    listed(include_thread_replies),
                    request,
                )
                .await?,
            )),
            None => Ok(Listing::empty()),
        }
    }

    /// The viewer's notifications, most recently updated first.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false, desc = "Only notifications not yet marked read.")]
        unread_only: bool,
        #[graphql(
            desc = "How many to return: 0 to 100 (BAD_USER_INPUT beyond), 50 when left out."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Start after this `cursor` (an edge's, or `pageInfo.endCursor`) from an earlier page of this same list; a cursor from any other list is BAD_USER_INPUT."
        )]
        after: Option<String>,
    ) -> Result<Listing<Notification>> {
        let viewer = ctx.viewer()?;
        let first = page_size("first", first)?.unwrap_or(DEFAULT_PAGE);
        let after = after
            .map(|c| ids::decode_cursor(CursorKind::Activity, &c, 2).map(|v| (v[0], v[1])))
            .transpose()?;
        let page = notifications::list(
            &ctx.state().chat.store,
            viewer.user_id,
            unread_only,
            after,
            first,
        )
        .await?;
        Ok(Listing::of(
            page,
            |n| {
                ids::cursor(
                    CursorKind::Activity,
                    &[n.updated_at.timestamp_micros(), n.id],
                )
            },
            Notification,
        ))
    }

    /// How many of the viewer's notifications are unread.
    async fn notification_unread_count(&self, ctx: &Context<'_>) -> Result<u64> {
        let viewer = ctx.viewer()?;
        Ok(notifications::unread_count(&ctx.state().chat.store, viewer.user_id).await?)
    }

    /// The audit log, newest first. Server administrators only (FORBIDDEN for anyone else).
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "How many to return: 0 to 100 (BAD_USER_INPUT beyond), 50 when left out."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Start after this `cursor` (an edge's, or `pageInfo.endCursor`) from an earlier page of this same list; a cursor from any other list is BAD_USER_INPUT."
        )]
        after: Option<String>,
    ) -> Result<Listing<AuditEntry>> {
        let viewer = ctx.viewer()?;
        let first = page_size("first", first)?.unwrap_or(DEFAULT_PAGE);
        let after = after
            .map(|c| ids::decode_cursor(CursorKind::Row, &c, 1).map(|v| v[0]))
            .transpose()?;
        let page = audit::list(&ctx.state().chat.store, viewer, after, first).await?;
        Ok(Listing::of(
            page,
            |e| ids::cursor(CursorKind::Row, &[e.id]),
            AuditEntry,
        ))
    }

    /// Unread messages across all the viewer's conversations (their timelines, as
    /// `Conversation.unreadCount`).
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let viewer = ctx.viewer()?;
        Ok(conversations::total_unread(&ctx.state().chat.store, viewer.user_id).await?)
    }
}
