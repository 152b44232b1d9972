//! Write operations.
use async_graphql::{Context, ID, InputObject, Object, Result, Upload};

use super::{
    ContextExt,
    types::{AuthPayload, Conversation, Message},
};
use crate::{
    auth::{self, Ended, tokens},
    chat::{
        audit, blocks, conversations,
        messages::{self, ClientMessageId, MessageBody, NewMessage, Target},
        notifications,
        typing::ConnectionId,
        users,
    },
    error::AppError,
    files::IncomingFile,
    ids::{self, Kind},
    limits::{Budget, ClientAddr},
};

/// The core mutations; merged with the room ones into the `Mutation` root (`graphql/mod.rs`).
#[derive(Default)]
pub struct CoreMutation;

/// A new account.
#[derive(InputObject)]
pub struct RegisterInput {
    /// 3–32 letters, digits, `_`, `.` or `-`; unique regardless of case.
    pub username: String,
    /// At least 8 characters, mixing letters with digits or symbols.
    pub password: String,
    /// Defaults to the username.
    pub display_name: Option<String>,
}

/// A message to send: to a conversation (`conversationId`) or to a user (`recipientId`, which
/// starts the direct conversation on first use). Exactly one of the two. It carries a `body`, a
/// `file`, or both.
#[derive(InputObject)]
pub struct SendMessageInput {
    /// A conversation the viewer belongs to (`cnv_…`; NOT_FOUND otherwise).
    pub conversation_id: Option<ID>,
    /// A user to write to directly (`usr_…`): their direct conversation with the viewer, started
    /// on first use. FORBIDDEN if they have blocked the viewer.
    pub recipient_id: Option<ID>,
    /// The text: up to 4000 characters by default (the server's `PALAVER_MAX_MESSAGE_CHARS`), no
    /// control characters but newlines and tabs. Required unless a file is attached; with a file
    /// it is the caption, and a blank one is no caption.
    pub body: Option<String>,
    /// A message of the same conversation that this one answers (`msg_…`).
    pub reply_to_id: Option<ID>,
    /// Posts the message as a reply in the thread of this message (`msg_…`) of the same
    /// conversation, instead of into the conversation's timeline. Threads are one level deep: a
    /// reply in a thread, a system message or a deleted message is BAD_USER_INPUT. The reply
    /// notifies the thread's participants (`THREAD_REPLY`) and whom it mentions, not every
    /// member.
    pub thread_root_id: Option<ID>,
    /// A file, sent as a GraphQL multipart request. Its content decides the message kind (IMAGE,
    /// VIDEO, AUDIO, DOCUMENT, ARCHIVE or FILE).
    pub file: Option<Upload>,
    /// 1–64 printable characters of the sender's choosing that make the send idempotent: a retry
    /// with the same id returns the first message instead of sending a second.
    pub client_message_id: Option<String>,
}

#[Object]
impl CoreMutation {
    /// Creates an account and signs it in.
    async fn register(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new account's username, password and display name.")]
        input: RegisterInput,
    ) -> Result<AuthPayload> {
        let state = ctx.state();
        let (user, token) = users::register(
            &state.chat.store,
            &input.username,
            &input.password,
            input.display_name.as_deref(),
            state.config.token_ttl_secs,
        )
        .await?;
        Ok(AuthPayload { token, user })
    }

    /// Signs in with a username and password.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account's username, in any letter case.")] username: String,
        #[graphql(
            desc = "The account's password. A wrong one (or an unknown username) is UNAUTHENTICATED; repeated failures are RATE_LIMITED."
        )]
        password: String,
    ) -> Result<AuthPayload> {
        let state = ctx.state();
        let config = &state.config;
        let addr = ctx
            .data_opt::<ClientAddr>()
            .map_or_else(|| "unknown".to_owned(), |a| a.0.to_string());
        state
            .limits
            .take(Budget::LoginAddr, &addr, config.login_addr_rate)
            .await?;
        // Names that cannot exist share one bucket: they never sign anyone in anyway.
        let user_key = users::Username::parse(&username)
            .map(|name| name.key())
            .unwrap_or_default();
        state
            .limits
            .take(Budget::LoginUser, &user_key, config.login_user_rate)
            .await?;
        let (user, token) = users::login(
            &state.chat.store,
            &username,
            &password,
            config.token_ttl_secs,
        )
        .await?;
        // Only failures count against the username, so its owner signing in costs nothing.
        state
            .limits
            .refund(Budget::LoginUser, &user_key, config.login_user_rate)
            .await;
        Ok(AuthPayload { token, user })
    }

    /// Revokes the token this request was made with.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let db = &state.db;
        tokens::revoke(db, viewer.token_id).await?;
        let ended = Ended::One {
            token_id: viewer.token_id,
        };
        auth::end_sessions(state, viewer.user_id, ended).await;
        let session = Some(ids::encode(Kind::Session, viewer.token_id).0);
        audit::record_or_log(
            &state.chat.store,
            Some(viewer.user_id),
            "session.logout",
            session,
        )
        .await;
        Ok(true)
    }

    /// Signs out one of the viewer's own sessions (NOT_FOUND for any other id). Revoking the
    /// current session is the same as `logout`.
    async fn revoke_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "One of the viewer's sessions (`ses_…`), as `sessions` lists them.")]
        id: ID,
    ) -> Result<bool> {
        let viewer = ctx.viewer()?;
        let token_id = ids::decode(Kind::Session, &id)?;
        let state = ctx.state();
        let db = &state.db;
        if !tokens::revoke_own(db, viewer.user_id, token_id).await? {
            return Err(AppError::not_found("session").into());
        }
        auth::end_sessions(state, viewer.user_id, Ended::One { token_id }).await;
        let session = Some(ids::encode(Kind::Session, token_id).0);
        audit::record_or_log(
            &state.chat.store,
            Some(viewer.user_id),
            "session.revoked",
            session,
        )
        .await;
        Ok(true)
    }

    /// Changes the viewer's password (`currentPassword` must be right: BAD_USER_INPUT otherwise)
    /// and signs out every other session; this one stays signed in. Wrong guesses count against
    /// the same limit as failed sign-ins.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The password in force now.")] current_password: String,
        #[graphql(desc = "At least 8 characters, mixing letters with digits or symbols.")]
        new_password: String,
    ) -> Result<bool> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let rate = state.config.login_user_rate;
        // Keyed by user id, apart from the sign-in buckets keyed by name: a stolen token must not
        // lock its owner out of signing in.
        let key = format!("change-password:{}", viewer.user_id);
        state.limits.take(Budget::LoginUser, &key, rate).await?;
        users::change_password(
            &state.chat.store,
            viewer.user_id,
            viewer.token_id,
            &current_password,
            &new_password,
        )
        .await?;
        let ended = Ended::AllBut {
            token_id: viewer.token_id,
        };
        auth::end_sessions(state, viewer.user_id, ended).await;
        state.limits.refund(Budget::LoginUser, &key, rate).await;
        audit::record_or_log(
            &state.chat.store,
            Some(viewer.user_id),
            "password.changed",
            None,
        )
        .await;
        Ok(true)
    }

    /// Blocks a user: they can no longer write to the viewer directly (nor start a direct
    /// conversation), nor add the viewer to a room (FORBIDDEN); their typing and presence are
    /// hidden from the viewer, and the viewer's presence reads OFFLINE to them. Rooms both are
    /// in are unaffected. Blocking someone already blocked is not an error.
    async fn block_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to block (`usr_…`; not the viewer).")] user_id: ID,
    ) -> Result<bool> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let blocked = ids::decode(Kind::User, &user_id)?;
        blocks::block(&state.chat.store, viewer.user_id, blocked).await?;
        state.presence.block_changed(viewer.user_id, blocked).await;
        Ok(true)
    }

    /// Lifts a block (not an error if there was none).
    async fn unblock_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A user the viewer blocked (`usr_…`).")] user_id: ID,
    ) -> Result<bool> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let blocked = ids::decode(Kind::User, &user_id)?;
        blocks::unblock(&state.chat.store, viewer.user_id, blocked).await?;
        state.presence.block_changed(viewer.user_id, blocked).await;
        Ok(true)
    }

    /// Sends a message.
    async fn send_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Where the message goes and what it carries.")] input: SendMessageInput,
    ) -> Result<Message> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let user_key = viewer.user_id.to_string();
        state
            .limits
            .take(Budget::Send, &user_key, state.config.send_rate)
            .await?;
        if input.file.is_some() {
            state
                .limits
                .take(Budget::Upload, &user_key, state.config.upload_rate)
                .await?;
        }
        let target = match (&input.conversation_id, &input.recipient_id) {
            (Some(id), None) => Target::Conversation(ids::decode(Kind::Conversation, id)?),
            (None, Some(id)) => Target::User(ids::decode(Kind::User, id)?),
            _ => {
                return Err(AppError::bad_input(
                    "give exactly one of `conversationId` and `recipientId`",
                )
                .into());
            }
        };
        let file = match &input.file {
            Some(upload) => {
                let value = upload
                    .value(ctx)
                    .map_err(|err| AppError::Internal(format!("reading an upload: {err}")))?;
                let incoming = IncomingFile {
                    filename: value.filename,
                    content: value.content,
                };
                Some(state.files.validate(incoming).await?)
            }
            None => None,
        };
        let max_chars = state.config.max_message_chars;
        let body = match input.body.as_deref() {
            // With a file, a blank caption is no caption.
            Some(raw) if file.is_some() && raw.trim().is_empty() => None,
            None if file.is_some() => None,
            raw => Some(MessageBody::parse(raw.unwrap_or_default(), max_chars)?),
        };
        let new = NewMessage {
            target,
            body,
            file,
            reply_to_id: ids::decode_opt(Kind::Message, input.reply_to_id.as_ref())?,
            thread_root_id: ids::decode_opt(Kind::Message, input.thread_root_id.as_ref())?,
            client_message_id: input
                .client_message_id
                .as_deref()
                .map(ClientMessageId::parse)
                .transpose()?,
        };
        Ok(Message(messages::send(&state.chat, viewer, new).await?))
    }

    /// Replaces the body of one's own message.
    async fn edit_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "One of the viewer's own messages (`msg_…`), not deleted. Anyone else's is FORBIDDEN; one the viewer cannot see is NOT_FOUND."
        )]
        id: ID,
        #[graphql(desc = "The new text, under the same rules as `SendMessageInput.body`.")]
        body: String,
    ) -> Result<Message> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let id = ids::decode(Kind::Message, &id)?;
        let body = MessageBody::parse(&body, state.config.max_message_chars)?;
        Ok(Message(
            messages::edit(&state.chat, viewer, id, body).await?,
        ))
    }

    /// Deletes one's own message (soft: it stays in history with its content hidden).
    async fn delete_message(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "One of the viewer's own messages (`msg_…`). Anyone else's is FORBIDDEN; one the viewer cannot see is NOT_FOUND."
        )]
        id: ID,
    ) -> Result<Message> {
        let viewer = ctx.viewer()?;
        let id = ids::decode(Kind::Message, &id)?;
        Ok(Message(
            messages::delete(&ctx.state().chat, viewer, id).await?,
        ))
    }

    /// Marks the conversation read up to a message, or entirely. Never moves the marker back.
    /// The marker is a place in the conversation's order: replies in threads before it are read
    /// too, as are the notifications about them.
    async fn mark_read(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A conversation the viewer belongs to (`cnv_…`).")] conversation_id: ID,
        #[graphql(
            desc = "The newest message read (`msg_…`, of this conversation); left out, the whole conversation is read."
        )]
        up_to_message_id: Option<ID>,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let id = ids::decode(Kind::Conversation, &conversation_id)?;
        let up_to = ids::decode_opt(Kind::Message, up_to_message_id.as_ref())?;
        Ok(Conversation::new(
            conversations::mark_read(&ctx.state().chat, viewer, id, up_to).await?,
        ))
    }

    /// Tells the other members that the viewer is (or stopped) typing.
    async fn set_typing(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A conversation the viewer belongs to (`cnv_…`).")] conversation_id: ID,
        #[graphql(
            desc = "True while typing (repeat every few seconds: an indicator lapses by itself about 6 seconds after the last call), false to clear it at once."
        )]
        is_typing: bool,
    ) -> Result<bool> {
        let viewer = ctx.viewer()?;
        let id = ids::decode(Kind::Conversation, &conversation_id)?;
        let state = ctx.state();
        let connection = ctx.data_opt::<ConnectionId>().copied();
        state.typing.set(viewer, id, is_typing, connection).await?;
        Ok(true)
    }

    /// Stops (or, with `muted: false`, restarts) MESSAGE, FILE and THREAD_REPLY notifications
    /// from a conversation. Mentions and replies still notify.
    async fn mute_conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A conversation the viewer belongs to (`cnv_…`).")] conversation_id: ID,
        #[graphql(default = true, desc = "True to mute, false to unmute.")] muted: bool,
    ) -> Result<Conversation> {
        let viewer = ctx.viewer()?;
        let id = ids::decode(Kind::Conversation, &conversation_id)?;
        Ok(Conversation::new(
            notifications::mute(&ctx.state().chat, viewer, id, muted).await?,
        ))
    }

    /// Marks some of one's own notifications read; returns how many were unread. Naming anyone
    /// else's is NOT_FOUND and changes nothing.
    async fn mark_notifications_read(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The viewer's own notifications (`ntf_…`), at most 500.")] ids: Vec<ID>,
    ) -> Result<u64> {
        let viewer = ctx.viewer()?;
        let ids = ids
            .iter()
            .map(|id| ids::decode(Kind::Notification, id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(notifications::mark_read(&ctx.state().chat, viewer, &ids).await?)
    }

    /// Marks all one's notifications read; returns how many were unread.
    async fn mark_all_notifications_read(&self, ctx: &Context<'_>) -> Result<u64> {
        let viewer = ctx.viewer()?;
        Ok(notifications::mark_all_read(&ctx.state().chat, viewer).await?)
    }
}
