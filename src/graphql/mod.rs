//! The GraphQL transport: schema assembly, the Query / Mutation / Subscription roots, object types
//! and DataLoaders. Resolvers parse their arguments and call into `chat`.
mod api;
mod durable;
mod loaders;
mod mutation;
mod persisted;
mod plain;
mod query;
mod rooms;
mod shape;
mod shared;
mod subscription;
mod types;

use async_graphql::{Context, MergedObject, Schema};

pub use api::Api;
pub use loaders::Loaders;
pub use persisted::TrustedDocuments;
use query::QueryRoot;
use subscription::SubscriptionRoot;

use crate::{
    AppState,
    auth::{Auth, Viewer},
    error::AppResult,
};

/// Every mutation: the core ones and the room ones, under the one root type clients know.
#[derive(MergedObject, Default)]
#[graphql(name = "MutationRoot")]
pub struct MutationRoot(mutation::MutationRoot, rooms::RoomMutation);

/// The executable schema.
pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// How deep a query may nest before it is refused.
pub const MAX_DEPTH: usize = 16;
/// How many fields a query may select in all before it is refused.
pub const MAX_COMPLEXITY: usize = 2_000;

/// Builds the API around the server's state.
pub fn build_api(state: AppState) -> Api {
    let loaders = Loaders::new(&state.db);
    let shape = shape::QueryShape {
        max_root_fields: state.config.max_root_fields,
        max_aliases: state.config.max_aliases,
        introspection: state.config.introspection,
        max_tokens: shape::MAX_TOKENS,
        max_fragments: shape::MAX_FRAGMENTS,
        max_selections: shape::MAX_SELECTIONS,
    };
    // No schema extensions: an extension runs on every field and every subscription item (see
    // `api`).
    let mut builder = Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(8);
    if !state.config.introspection {
        // `QueryShape` already refuses with a code; this makes sure nothing slips past it.
        builder = builder.disable_introspection();
    }
    let plain = plain::PlainEvents::new(state.clone());
    let deadline = std::time::Duration::from_millis(state.config.request_timeout_ms.max(1));
    let persisted = persisted::Persisted::new(state.config.trusted_documents.clone());
    Api::new(
        builder.data(loaders).data(state).finish(),
        shape,
        plain,
        persisted,
        deadline,
    )
}

/// The SDL that `palaver schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot)
        .finish()
        .sdl()
}

/// Shorthands for what every resolver needs from its context.
pub(crate) trait ContextExt {
    fn state(&self) -> &AppState;
    fn loaders(&self) -> &Loaders;
    fn viewer(&self) -> AppResult<Viewer>;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> &AppState {
        self.data_unchecked::<AppState>()
    }

    fn loaders(&self) -> &Loaders {
        self.data_unchecked::<Loaders>()
    }

    fn viewer(&self) -> AppResult<Viewer> {
        self.data_opt::<Auth>().unwrap_or(&Auth::Anonymous).viewer()
    }
}
