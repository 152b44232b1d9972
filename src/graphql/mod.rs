//! The GraphQL transport: schema assembly, the Query / Mutation / Subscription roots, object types
//! and DataLoaders. Resolvers parse their arguments and call into `chat`.
mod connection;
mod durable;
mod executor;
mod lean_subscription;
mod loaders;
mod mutation;
mod node;
mod persisted;
mod query;
mod query_limits;
mod reactions;
mod reads;
mod render_cache;
mod rooms;
mod selection;
mod subscription;
mod types;

use std::sync::Arc;

use async_graphql::{Context, MergedObject, Schema};

pub use executor::Api;
pub use loaders::Loaders;
pub use persisted::TrustedDocuments;
use query::Query;
use subscription::Subscription;

use crate::{
    AppState,
    auth::{Auth, Viewer},
    error::AppResult,
};

// The core mutations and the room ones, merged under one root. The roots carry the names the
// GraphQL specification and every tool use (`Query`, `Mutation`, `Subscription`). A doc comment
// on a schema type is its description in the SDL, written for the API's clients.
/// Everything that changes something. All but `register` and `login` need a signed-in viewer
/// (`Authorization: Bearer <token>`; UNAUTHENTICATED otherwise). Most answer with the changed
/// object as the viewer now sees it.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct Mutation(
    mutation::CoreMutation,
    rooms::RoomMutation,
    reactions::ReactionMutation,
    reads::ReadMutation,
);

/// The executable schema.
pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// How deep a query may nest before it is refused.
pub const MAX_DEPTH: usize = 16;
/// How many fields a query may select in all before it is refused.
pub const MAX_COMPLEXITY: usize = 2_000;

/// Builds the API around the server's state.
pub fn build_api(state: AppState) -> Api {
    let loaders = Loaders::new(&state.chat.store);
    let limits = query_limits::QueryLimits {
        max_root_fields: state.config.max_root_fields,
        max_aliases: state.config.max_aliases,
        introspection: state.config.introspection,
        max_tokens: query_limits::MAX_TOKENS,
        max_fragments: query_limits::MAX_FRAGMENTS,
        max_selections: query_limits::MAX_SELECTIONS,
    };
    // No schema extensions: an extension runs on every field and every subscription item (see
    // `api`).
    let mut builder = Schema::build(Query, Mutation::default(), Subscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(8);
    if !state.config.introspection {
        // `QueryLimits` already refuses with a code; this makes sure nothing slips past it.
        builder = builder.disable_introspection();
    }
    // One render cache for both ways `messageEvents` is served, so that their subscribers share.
    let renders = Arc::new(render_cache::RenderCache::new(
        state.metrics.shared_renders.clone(),
    ));
    let lean = lean_subscription::LeanSubscriptions::new(state.clone(), renders.clone());
    let deadline = std::time::Duration::from_millis(state.config.request_timeout_ms.max(1));
    let persisted = persisted::Persisted::new(state.config.trusted_documents.clone());
    Api::new(
        builder.data(loaders).data(renders).data(state).finish(),
        limits,
        lean,
        persisted,
        deadline,
    )
}

/// The SDL that `palaver schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    Schema::build(Query, Mutation::default(), Subscription)
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
