//! Read operations.
use async_graphql::{Context, ID, Object, Result, connection::Connection};

use super::{
    ContextExt,
    types::{
        AuditEntry, Conversation, ConversationKind, Message, Notification, Session, User, load_user,
    },
};
use crate::{
    chat::{
        audit, blocks, conversations, messages, notifications,
        pagination::{DEFAULT_PAGE, Direction, Page, PageRequest, page_size},
        users,
    },
    error::AppError,
    ids::{self, CursorKind, Kind},
};

pub struct QueryRoot;

/// A Relay connection from a page, with a cursor for each row.
pub fn connection<T, N: async_graphql::OutputType>(
    page: Page<T>,
    cursor: impl Fn(&T) -> String,
    node: impl Fn(T) -> N,
) -> Connection<String, N> {
    let mut conn = Connection::new(page.has_previous, page.has_next);
    conn.edges.extend(
        page.items
            .into_iter()
            .map(|row| async_graphql::connection::Edge::new(cursor(&row), node(row))),
    );
    conn
}

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

fn message_connection(page: Page<entity::message::Model>) -> Connection<String, Message> {
    connection(
        page,
        |m| ids::cursor(CursorKind::Message, &[m.seq]),
        Message,
    )
}

#[Object]
impl QueryRoot {
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
        let db = &ctx.state().db;
        let ids = blocks::blocked_by(db, viewer.user_id).await?;
        let mut found = users::by_ids(db, &ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| found.remove(id))
            .map(User::new)
            .collect())
    }

    /// A user by id (null if there is none).
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        ctx.viewer()?;
        let id = ids::decode(Kind::User, &id)?;
        load_user(ctx, id).await
    }

    /// Users whose username or display name contains `search`, case-insensitively.
    async fn users(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, User>> {
        ctx.viewer()?;
        let first = page_size("first", first)?.unwrap_or(DEFAULT_PAGE);
        let after = after
            .map(|c| ids::decode_cursor(CursorKind::Row, &c, 1).map(|v| v[0]))
            .transpose()?;
        let page = users::search(&ctx.state().db, search.as_deref(), after, first).await?;
        Ok(connection(
            page,
            |u| ids::cursor(CursorKind::Row, &[u.id]),
            User::new,
        ))
    }

    /// The viewer's conversations, latest activity first.
    async fn conversations(
        &self,
        ctx: &Context<'_>,
        kind: Option<ConversationKind>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Conversation>> {
        let viewer = ctx.viewer()?;
        let first = page_size("first", first)?.unwrap_or(DEFAULT_PAGE);
        let after = after
            .map(|c| ids::decode_cursor(CursorKind::Activity, &c, 2).map(|v| (v[0], v[1])))
            .transpose()?;
        let page = conversations::list_for_user(
            &ctx.state().db,
            viewer.user_id,
            kind.map(ConversationKind::as_str),
            after,
            first,
        )
        .await?;
        Ok(connection(
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
    async fn conversation(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Conversation>> {
        let viewer = ctx.viewer()?;
        let id = ids::decode(Kind::Conversation, &id)?;
        let (conversation, _) =
            conversations::require_member(&ctx.state().db, id, viewer.user_id).await?;
        Ok(Some(Conversation::new(conversation)))
    }

    /// The direct conversation with a user, or null if none has started yet.
    async fn direct_conversation(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
    ) -> Result<Option<Conversation>> {
        let viewer = ctx.viewer()?;
        let other = ids::decode(Kind::User, &user_id)?;
        let db = &ctx.state().db;
        if users::find(db, other).await?.is_none() {
            return Err(AppError::not_found("user").into());
        }
        Ok(conversations::direct_between(db, viewer.user_id, other)
            .await?
            .map(Conversation::new))
    }

    /// A page of a conversation's messages, oldest first within the page. With no arguments, the
    /// newest 50; page forward with `first`/`after`, backward with `last`/`before`.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        conversation_id: ID,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Connection<String, Message>> {
        let viewer = ctx.viewer()?;
        let id = ids::decode(Kind::Conversation, &conversation_id)?;
        let request = message_page_request(first, after, last, before)?;
        let db = &ctx.state().db;
        conversations::require_member(db, id, viewer.user_id).await?;
        Ok(message_connection(messages::page(db, id, request).await?))
    }

    /// The messages of the direct conversation with a user (empty if none has started).
    async fn history(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Connection<String, Message>> {
        let viewer = ctx.viewer()?;
        let other = ids::decode(Kind::User, &user_id)?;
        let request = message_page_request(first, after, last, before)?;
        let db = &ctx.state().db;
        if users::find(db, other).await?.is_none() {
            return Err(AppError::not_found("user").into());
        }
        match conversations::direct_between(db, viewer.user_id, other).await? {
            Some(conversation) => Ok(message_connection(
                messages::page(db, conversation.id, request).await?,
            )),
            None => Ok(Connection::new(false, false)),
        }
    }

    /// The viewer's notifications, most recently updated first.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] unread_only: bool,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Notification>> {
        let viewer = ctx.viewer()?;
        let first = page_size("first", first)?.unwrap_or(DEFAULT_PAGE);
        let after = after
            .map(|c| ids::decode_cursor(CursorKind::Activity, &c, 2).map(|v| (v[0], v[1])))
            .transpose()?;
        let page =
            notifications::list(&ctx.state().db, viewer.user_id, unread_only, after, first).await?;
        Ok(connection(
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
        Ok(notifications::unread_count(&ctx.state().db, viewer.user_id).await?)
    }

    /// The audit log, newest first. Server administrators only (FORBIDDEN for anyone else).
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, AuditEntry>> {
        let viewer = ctx.viewer()?;
        let first = page_size("first", first)?.unwrap_or(DEFAULT_PAGE);
        let after = after
            .map(|c| ids::decode_cursor(CursorKind::Row, &c, 1).map(|v| v[0]))
            .transpose()?;
        let page = audit::list(&ctx.state().db, viewer, after, first).await?;
        Ok(connection(
            page,
            |e| ids::cursor(CursorKind::Row, &[e.id]),
            AuditEntry,
        ))
    }

    /// Unread messages across all the viewer's conversations.
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let viewer = ctx.viewer()?;
        Ok(conversations::total_unread(&ctx.state().db, viewer.user_id).await?)
    }
}
