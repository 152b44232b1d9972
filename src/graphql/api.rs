//! The schema as the transports run it. Every request's document is parsed and held to the
//! [`QueryShape`] limits before async-graphql sees it, and every response, each item of a
//! subscription included, goes through `error::set_graphql_code`.
//!
//! A plain `messageEvents` subscription, nearly every client's, is served beside the schema
//! rather than through it (see `plain`).
//!
//! Both used to be schema extensions. An extension sits on every field's resolution and every
//! subscription item's execution, for every subscriber: in a 1,000-member room each message went
//! through the extension chain a thousand times. Here the check runs once per request, and the
//! codes once per response.
use async_graphql::{
    Executor, Request, Response, ServerResult,
    futures_util::stream::{self, BoxStream},
};
use futures_util::StreamExt;

use super::{
    AppSchema,
    plain::{Plain, PlainEvents},
    shape::QueryShape,
};
use crate::error::set_graphql_code;

/// The executable API: the schema, and the checks and error codes around it.
#[derive(Clone)]
pub struct Api {
    schema: AppSchema,
    shape: QueryShape,
    plain: std::sync::Arc<PlainEvents>,
}

impl Api {
    pub(super) fn new(schema: AppSchema, shape: QueryShape, plain: PlainEvents) -> Self {
        Self {
            schema,
            shape,
            plain: std::sync::Arc::new(plain),
        }
    }

    /// Parses the document (kept in the request, so async-graphql does not parse it again) and
    /// checks its shape.
    fn admit(&self, request: &mut Request) -> ServerResult<()> {
        let document = request.parsed_query()?;
        self.shape.check(document)
    }
}

impl Api {
    /// The request as a plain `messageEvents` subscription, if it is one (see `plain`).
    fn plain_subscription(&self, request: &mut Request) -> Option<Plain> {
        let operation = request.operation_name.clone();
        let variables = std::mem::take(&mut request.variables);
        let plain = request
            .parsed_query()
            .ok()
            .and_then(|document| Plain::read(document, operation.as_deref(), &variables));
        request.variables = variables;
        plain
    }
}

fn with_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        set_graphql_code(error);
    }
    response
}

impl Executor for Api {
    async fn execute(&self, mut request: Request) -> Response {
        if let Err(refused) = self.admit(&mut request) {
            return with_codes(Response::from_errors(vec![refused]));
        }
        with_codes(self.schema.execute(request).await)
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<std::sync::Arc<async_graphql::Data>>,
    ) -> BoxStream<'static, Response> {
        if let Err(refused) = self.admit(&mut request) {
            return stream::once(std::future::ready(with_codes(Response::from_errors(vec![
                refused,
            ]))))
            .boxed();
        }
        if let Some(plain) = self.plain_subscription(&mut request) {
            return self
                .plain
                .clone()
                .stream(plain, session_data)
                .map(with_codes)
                .boxed();
        }
        self.schema
            .execute_stream_with_session_data(request, session_data.unwrap_or_default())
            .map(with_codes)
            .boxed()
    }
}
