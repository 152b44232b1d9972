//! DataLoaders: every list resolves its users, conversations, messages, members and unread counts
//! in one batched statement per kind, whatever the page size. None of them caches across requests,
//! so nothing they return is ever stale.
use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::{DataLoader, Loader};
use entity::{conversation, member, message, user};
use sea_orm::DatabaseConnection;

use crate::{
    chat::{conversations, messages, presence, users},
    error::AppError,
};

/// A loader failure, shareable between the waiters of one batch.
pub type LoadError = Arc<AppError>;

/// All loaders, kept in the schema's data.
pub struct Loaders {
    pub users: DataLoader<UserLoader>,
    pub conversations: DataLoader<ConversationLoader>,
    pub messages: DataLoader<MessageLoader>,
    pub members: DataLoader<MembersLoader>,
    pub unread: DataLoader<UnreadLoader>,
    pub visibility: DataLoader<VisibilityLoader>,
}

impl Loaders {
    /// Loaders over one database connection pool.
    pub fn new(db: &DatabaseConnection) -> Self {
        Self {
            users: DataLoader::new(UserLoader(db.clone()), tokio::spawn),
            conversations: DataLoader::new(ConversationLoader(db.clone()), tokio::spawn),
            messages: DataLoader::new(MessageLoader(db.clone()), tokio::spawn),
            members: DataLoader::new(MembersLoader(db.clone()), tokio::spawn),
            unread: DataLoader::new(UnreadLoader(db.clone()), tokio::spawn),
            visibility: DataLoader::new(VisibilityLoader(db.clone()), tokio::spawn),
        }
    }
}

/// Turns a loader failure into a GraphQL error (logged, not shown).
pub fn load_error(err: LoadError) -> async_graphql::Error {
    match Arc::try_unwrap(err) {
        Ok(err) => err.into(),
        Err(shared) => AppError::Internal(shared.to_string()).into(),
    }
}

pub struct UserLoader(DatabaseConnection);

impl Loader<i64> for UserLoader {
    type Value = user::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        users::by_ids(&self.0, keys).await.map_err(Arc::new)
    }
}

pub struct ConversationLoader(DatabaseConnection);

impl Loader<i64> for ConversationLoader {
    type Value = conversation::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        conversations::by_ids(&self.0, keys).await.map_err(Arc::new)
    }
}

pub struct MessageLoader(DatabaseConnection);

impl Loader<i64> for MessageLoader {
    type Value = message::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        messages::by_ids(&self.0, keys).await.map_err(Arc::new)
    }
}

/// A conversation's members, keyed by conversation id.
pub struct MembersLoader(DatabaseConnection);

impl Loader<i64> for MembersLoader {
    type Value = Arc<Vec<member::Model>>;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let found = conversations::members_of(&self.0, keys)
            .await
            .map_err(Arc::new)?;
        Ok(found.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

/// Unread counts keyed by (viewer, conversation).
pub struct UnreadLoader(DatabaseConnection);

impl Loader<(i64, i64)> for UnreadLoader {
    type Value = i64;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[(i64, i64)],
    ) -> Result<HashMap<(i64, i64), Self::Value>, Self::Error> {
        let mut by_viewer: HashMap<i64, Vec<i64>> = HashMap::new();
        for (viewer, conversation) in keys {
            by_viewer.entry(*viewer).or_default().push(*conversation);
        }
        let mut out = HashMap::new();
        for (viewer, conversation_ids) in by_viewer {
            let counts = conversations::unread_counts(&self.0, viewer, &conversation_ids)
                .await
                .map_err(Arc::new)?;
            for id in conversation_ids {
                out.insert((viewer, id), counts.get(&id).copied().unwrap_or(0));
            }
        }
        Ok(out)
    }
}

/// Whether (viewer, user) share a conversation: presence is shown only then.
pub struct VisibilityLoader(DatabaseConnection);

impl Loader<(i64, i64)> for VisibilityLoader {
    type Value = bool;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[(i64, i64)],
    ) -> Result<HashMap<(i64, i64), Self::Value>, Self::Error> {
        let mut by_viewer: HashMap<i64, Vec<i64>> = HashMap::new();
        for (viewer, user) in keys {
            by_viewer.entry(*viewer).or_default().push(*user);
        }
        let mut out = HashMap::new();
        for (viewer, users) in by_viewer {
            let visible = presence::visible_to(&self.0, viewer, &users)
                .await
                .map_err(Arc::new)?;
            for user in users {
                out.insert((viewer, user), visible.contains(&user));
            }
        }
        Ok(out)
    }
}
