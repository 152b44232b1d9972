//! DataLoaders: every list resolves its users, conversations, messages, members and unread counts
//! in one batched statement per kind, whatever the page size. None of them caches across requests,
//! so nothing they return is ever stale.
use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::{DataLoader, Loader};
use entity::{conversation, member, message, reaction, user};

use crate::{
    chat::{conversations, messages, presence, threads, users},
    error::AppError,
    store::Store,
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
    pub reactions: DataLoader<ReactionsLoader>,
    pub threads: DataLoader<ThreadLoader>,
    pub thread_unread: DataLoader<ThreadUnreadLoader>,
}

impl Loaders {
    /// Loaders over the store.
    pub fn new(store: &Store) -> Self {
        Self {
            users: DataLoader::new(UserLoader(store.clone()), tokio::spawn),
            conversations: DataLoader::new(ConversationLoader(store.clone()), tokio::spawn),
            messages: DataLoader::new(MessageLoader(store.clone()), tokio::spawn),
            members: DataLoader::new(MembersLoader(store.clone()), tokio::spawn),
            unread: DataLoader::new(UnreadLoader(store.clone()), tokio::spawn),
            visibility: DataLoader::new(VisibilityLoader(store.clone()), tokio::spawn),
            reactions: DataLoader::new(ReactionsLoader(store.clone()), tokio::spawn),
            threads: DataLoader::new(ThreadLoader(store.clone()), tokio::spawn),
            thread_unread: DataLoader::new(ThreadUnreadLoader(store.clone()), tokio::spawn),
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

pub struct UserLoader(Store);

impl Loader<i64> for UserLoader {
    type Value = user::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        users::by_ids(&self.0, keys).await.map_err(Arc::new)
    }
}

pub struct ConversationLoader(Store);

impl Loader<i64> for ConversationLoader {
    type Value = conversation::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        conversations::by_ids(&self.0, keys).await.map_err(Arc::new)
    }
}

pub struct MessageLoader(Store);

impl Loader<i64> for MessageLoader {
    type Value = message::Model;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        messages::by_ids(&self.0, keys).await.map_err(Arc::new)
    }
}

/// A message's reactions in the order they were made, keyed by message id.
pub struct ReactionsLoader(Store);

impl Loader<i64> for ReactionsLoader {
    type Value = Arc<Vec<reaction::Model>>;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let found = crate::store::reactions::of_messages(self.0.reader(), keys)
            .await
            .map_err(Arc::new)?;
        Ok(found.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

/// Thread summaries, keyed by root; a root without standing replies has none.
pub struct ThreadLoader(Store);

impl Loader<i64> for ThreadLoader {
    type Value = Arc<threads::Summary>;
    type Error = LoadError;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        let found = threads::summaries(&self.0, keys).await.map_err(Arc::new)?;
        Ok(found.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

/// A thread's replies unread by a viewer, keyed by (viewer, root).
pub struct ThreadUnreadLoader(Store);

impl Loader<(i64, i64)> for ThreadUnreadLoader {
    type Value = i64;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[(i64, i64)],
    ) -> Result<HashMap<(i64, i64), Self::Value>, Self::Error> {
        per_viewer(keys, |viewer, roots| async move {
            let counts = threads::unread(&self.0, viewer, &roots).await?;
            Ok(or_zero(roots, &counts))
        })
        .await
    }
}

/// A conversation's members, keyed by conversation id.
pub struct MembersLoader(Store);

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
pub struct UnreadLoader(Store);

impl Loader<(i64, i64)> for UnreadLoader {
    type Value = i64;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[(i64, i64)],
    ) -> Result<HashMap<(i64, i64), Self::Value>, Self::Error> {
        per_viewer(keys, |viewer, conversation_ids| async move {
            let counts = conversations::unread_counts(&self.0, viewer, &conversation_ids).await?;
            Ok(or_zero(conversation_ids, &counts))
        })
        .await
    }
}

/// How (viewer, user)'s presence shows, if at all: only when they share a conversation, and
/// subject to blocks (see [`presence::visible_to`]). A key with no value shows nothing.
pub struct VisibilityLoader(Store);

impl Loader<(i64, i64)> for VisibilityLoader {
    type Value = presence::Sight;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[(i64, i64)],
    ) -> Result<HashMap<(i64, i64), Self::Value>, Self::Error> {
        per_viewer(keys, |viewer, users| async move {
            Ok(presence::visible_to(&self.0, viewer, &users)
                .await?
                .into_iter()
                .collect())
        })
        .await
    }
}

/// Each id's count, 0 for those a count query left out (it lists only ids with something).
fn or_zero(ids: Vec<i64>, counts: &HashMap<i64, i64>) -> Vec<(i64, i64)> {
    ids.into_iter()
        .map(|id| (id, counts.get(&id).copied().unwrap_or(0)))
        .collect()
}

/// Loads (viewer, id) keys with one query per viewer in the batch (in practice one: a request has
/// one viewer), so that per-viewer values batch like the others.
async fn per_viewer<V, F, Fut>(
    keys: &[(i64, i64)],
    load: F,
) -> Result<HashMap<(i64, i64), V>, LoadError>
where
    F: Fn(i64, Vec<i64>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<(i64, V)>, AppError>>,
{
    let mut by_viewer: HashMap<i64, Vec<i64>> = HashMap::new();
    for (viewer, id) in keys {
        by_viewer.entry(*viewer).or_default().push(*id);
    }
    let mut out = HashMap::new();
    for (viewer, ids) in by_viewer {
        for (id, value) in load(viewer, ids).await.map_err(Arc::new)? {
            out.insert((viewer, id), value);
        }
    }
    Ok(out)
}
