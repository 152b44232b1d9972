//! Relay connections with a description. async-graphql's `Connection` type leaves its own
//! description empty and offers no way to set one; [`Listing`] answers exactly as the connection
//! it wraps and fills the description in when the type is registered, so every type in the schema
//! says what it is.
use std::borrow::Cow;

use async_graphql::{
    ContextSelectionSet, OutputType, Positioned, ServerResult, Value,
    connection::{Connection, Edge},
    parser::types::Field,
    registry::{MetaType, Registry},
};

use crate::chat::pagination::Page;

/// A page of `N`s as a Relay connection (`UserConnection`, `MessageConnection`, ...).
pub struct Listing<N: OutputType>(Connection<String, N>);

impl<N: OutputType> Listing<N> {
    /// An empty page with no neighbours.
    pub fn empty() -> Self {
        Self(Connection::new(false, false))
    }

    /// A connection from a page, with a cursor for each row.
    pub fn of<T>(page: Page<T>, cursor: impl Fn(&T) -> String, node: impl Fn(T) -> N) -> Self {
        let mut conn = Connection::new(page.has_previous, page.has_next);
        conn.edges.extend(
            page.items
                .into_iter()
                .map(|row| Edge::new(cursor(&row), node(row))),
        );
        Self(conn)
    }
}

impl<N: OutputType> OutputType for Listing<N> {
    fn type_name() -> Cow<'static, str> {
        Connection::<String, N>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        let registered = Connection::<String, N>::create_type_info(registry);
        let name = Self::type_name();
        if let Some(MetaType::Object { description, .. }) = registry.types.get_mut(name.as_ref()) {
            *description = Some(format!(
                "One page of {node}s, as a Relay cursor connection: each edge holds a `{node}` \
                 and its `cursor`; `nodes` lists the same objects without cursors. To page on, \
                 pass `pageInfo.endCursor` as `after` (or `pageInfo.startCursor` as `before` \
                 where the field takes it) while `hasNextPage` (or `hasPreviousPage`) is true. \
                 Cursors are opaque and belong to the field that handed them out.",
                node = N::type_name()
            ));
        }
        registered
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        self.0.resolve(ctx, field).await
    }
}
