//! The schema as the transports run it. Every request's document is parsed and held to the
//! [`QueryLimits`] before async-graphql sees it, and every response, each item of a
//! subscription included, goes through `error::set_graphql_code`.
//!
//! A lean `messageEvents` subscription, nearly every client's, is served beside the schema
//! rather than through it (see `lean_subscription`).
//!
//! Clients send the same few documents again and again (an Apollo client spells each operation
//! once), so a document that passed the checks is kept, parsed, under its text: the next request
//! with that text takes a copy of it instead of being parsed and checked again (see
//! [`Documents`]).
//!
//! Neither is a schema extension: an extension sits on every field's resolution and every
//! subscription item's execution, for every subscriber, so in a 1,000-member room each message
//! would go through the extension chain a thousand times. Here the check runs once per request,
//! and the codes once per response.
use std::sync::Arc;

use async_graphql::{
    Executor, Positioned, Request, Response, ServerResult,
    futures_util::stream::{self, BoxStream},
    parser::types::{ExecutableDocument, OperationDefinition, OperationType},
};
use futures_util::StreamExt;

use super::{
    AppSchema,
    lean_subscription::{LeanSubscription, LeanSubscriptions},
    persisted::Persisted,
    query_limits::QueryLimits,
};
use crate::error::set_graphql_code;

/// The executable API: the schema, and the checks and error codes around it.
#[derive(Clone)]
pub struct Api {
    schema: AppSchema,
    limits: QueryLimits,
    /// Behind one pointer: every WebSocket connection holds clones of the API in its state, so
    /// the API's size is paid once per idle connection, and a field added here can move that
    /// state into a bigger allocation (BENCHMARKS.md, idle memory). Keep the API one pointer
    /// beside the schema and the limits.
    kept: Arc<Kept>,
}

/// What every clone of the API shares.
struct Kept {
    lean: Arc<LeanSubscriptions>,
    documents: Documents,
    /// Documents named by hash (automatic persisted queries, trusted documents).
    persisted: Persisted,
    /// How long a query or mutation over the WebSocket may run (`PALAVER_REQUEST_TIMEOUT_MS`,
    /// as over HTTP, where the route applies it).
    deadline: std::time::Duration,
}

impl Api {
    pub(super) fn new(
        schema: AppSchema,
        limits: QueryLimits,
        lean: LeanSubscriptions,
        persisted: Persisted,
        deadline: std::time::Duration,
    ) -> Self {
        Self {
            schema,
            limits,
            kept: Arc::new(Kept {
                lean: Arc::new(lean),
                documents: Documents::default(),
                persisted,
                deadline,
            }),
        }
    }

    /// Gives the request its parsed document (kept in the request, so async-graphql does not parse
    /// it again): a copy of the one kept for its text, or else parsed now and checked against the
    /// query limits, then kept. The text is checked before it is parsed (parsing costs time in
    /// proportion to the text; a fragment bomb is refused without it), the document again once parsed,
    /// both before async-graphql's own checks and validation see it (in `execute`, after this):
    /// those walk every fragment spread out, which for a fragment bomb is exponential, where the
    /// limit checks are linear.
    fn admit(&self, request: &mut Request) -> ServerResult<()> {
        self.kept.persisted.resolve(request)?;
        if let Some(document) = self.kept.documents.get(&request.query) {
            request.set_parsed_query(ExecutableDocument::clone(&document));
            return Ok(());
        }
        let keep = request.query.len() <= KEPT_TEXT;
        self.limits.check_text(&request.query)?;
        let document = request.parsed_query()?;
        self.limits.check(document)?;
        if keep {
            let document = document.clone();
            self.kept.documents.keep(&request.query, document);
        }
        Ok(())
    }
}

/// Documents that passed parsing and the limit checks, by their text. The check depends on the
/// document alone, so a kept document needs neither again. Bounded in count and in the length of
/// the texts kept: past [`KEPT_DOCUMENTS`] the cache evicts those used least (moka's TinyLFU), so
/// a client sending ever new texts neither costs memory nor pushes out the documents every other
/// client sends.
struct Documents(moka::sync::Cache<Box<str>, Arc<ExecutableDocument>>);

impl Default for Documents {
    fn default() -> Self {
        Self(moka::sync::Cache::new(KEPT_DOCUMENTS))
    }
}

/// Most documents kept.
const KEPT_DOCUMENTS: u64 = 256;
/// Longest text kept (bytes): clients' operations are far shorter; a longer one is parsed each time.
const KEPT_TEXT: usize = 8 * 1024;

impl Documents {
    fn get(&self, text: &str) -> Option<Arc<ExecutableDocument>> {
        self.0.get(text)
    }

    fn keep(&self, text: &str, document: ExecutableDocument) {
        self.0.insert(text.into(), Arc::new(document));
    }
}

impl Api {
    /// The request as a lean `messageEvents` subscription, if it is one (see
    /// `lean_subscription`).
    fn lean_subscription(&self, request: &mut Request) -> Option<LeanSubscription> {
        let operation = request.operation_name.clone();
        let variables = std::mem::take(&mut request.variables);
        let lean = request.parsed_query().ok().and_then(|document| {
            self.kept
                .lean
                .read(document, operation.as_deref(), &variables)
        });
        request.variables = variables;
        lean
    }
}

/// Most errors one response carries: a document can be written to fail validation in thousands
/// of places, and the first few say what is wrong.
const MAX_ERRORS: usize = 50;

fn with_codes(mut response: Response) -> Response {
    response.errors.truncate(MAX_ERRORS);
    for error in &mut response.errors {
        set_graphql_code(error);
    }
    response
}

impl Api {
    /// The type of the operation a request would run (a GET may run queries only); None when the
    /// request would be refused before running anything, as its execution then says.
    pub fn operation_type(&self, request: &mut Request) -> Option<OperationType> {
        self.admit(request).ok()?;
        operation_type(request)
    }
}

/// Whether the operation a request runs is a subscription (unknown: not one).
fn is_subscription(request: &mut Request) -> bool {
    operation_type(request) == Some(OperationType::Subscription)
}

/// The type of the operation a request runs; None when that is unknown (a document that does not
/// parse, or no operation of the requested name).
fn operation_type(request: &mut Request) -> Option<OperationType> {
    let name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    operation(document, name.as_deref()).map(|operation| operation.node.ty)
}

/// The operation of a document a request names (or its only one).
fn operation<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    use async_graphql::parser::types::DocumentOperations;
    match &document.operations {
        DocumentOperations::Single(operation) => Some(operation),
        DocumentOperations::Multiple(operations) => match name {
            Some(name) => operations
                .iter()
                .find(|(each, _)| each.as_str() == name)
                .map(|(_, operation)| operation),
            None if operations.len() == 1 => operations.values().next(),
            None => None,
        },
    }
}

/// Refuses a request that leaves a non-null variable without a value (absent or null, with no
/// default), before anything runs. async-graphql finds this only when a field reads the variable,
/// as an error of that field; coercing variables comes before execution, so it is a request
/// error (GraphQL over HTTP answers it 400, not 200 with `data`).
fn check_required_variables(request: &mut Request) -> ServerResult<()> {
    let variables = std::mem::take(&mut request.variables);
    let name = request.operation_name.clone();
    let missing = request
        .parsed_query()
        .ok()
        .and_then(|document| operation(document, name.as_deref()))
        .and_then(|operation| {
            operation
                .node
                .variable_definitions
                .iter()
                .find(|definition| {
                    let definition = &definition.node;
                    !definition.var_type.node.nullable
                        && definition.default_value.is_none()
                        && variables
                            .get(&definition.name.node)
                            .is_none_or(|value| *value == async_graphql::Value::Null)
                })
        })
        .map(|definition| {
            let mut error = async_graphql::ServerError::new(
                format!(
                    "variable \"${}\" of non-null type \"{}\" must be given a value",
                    definition.node.name.node, definition.node.var_type.node
                ),
                Some(definition.pos),
            );
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", "BAD_USER_INPUT");
            error
        });
    request.variables = variables;
    missing.map_or(Ok(()), Err)
}

/// The answer to a query or mutation that ran past its deadline.
fn timed_out(deadline: std::time::Duration) -> Response {
    let mut error = async_graphql::ServerError::new(
        format!(
            "the request did not complete within {} ms and was stopped; a change it asked for \
             may or may not have been made",
            deadline.as_millis()
        ),
        None,
    );
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", "TIMEOUT");
    Response::from_errors(vec![error])
}

impl Executor for Api {
    async fn execute(&self, mut request: Request) -> Response {
        if let Err(refused) = self
            .admit(&mut request)
            .and_then(|()| check_required_variables(&mut request))
        {
            return with_codes(Response::from_errors(vec![refused]));
        }
        with_codes(self.schema.execute(request).await)
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<std::sync::Arc<async_graphql::Data>>,
    ) -> BoxStream<'static, Response> {
        if let Err(refused) = self
            .admit(&mut request)
            .and_then(|()| check_required_variables(&mut request))
        {
            return stream::once(std::future::ready(with_codes(Response::from_errors(vec![
                refused,
            ]))))
            .boxed();
        }
        if let Some(lean) = self.lean_subscription(&mut request) {
            return self
                .kept
                .lean
                .clone()
                .stream(lean, session_data)
                .map(with_codes)
                .boxed();
        }
        let subscription = is_subscription(&mut request);
        let responses = self
            .schema
            .execute_stream_with_session_data(request, session_data.unwrap_or_default())
            .map(with_codes);
        if subscription {
            return responses.boxed();
        }
        // A query or mutation over the socket: one answer, within the same deadline as over
        // HTTP; dropping the stream stops the work at its next await.
        let deadline = self.kept.deadline;
        stream::once(async move {
            let mut responses = std::pin::pin!(responses);
            match tokio::time::timeout(deadline, responses.next()).await {
                Ok(Some(response)) => response,
                Ok(None) => Response::default(),
                Err(_) => timed_out(deadline),
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn parsed(text: &str) -> ExecutableDocument {
        parse_query(text).expect("a valid document")
    }

    #[test]
    fn a_kept_document_is_found_by_its_exact_text_only() {
        let documents = Documents::default();
        let text = "{ me { id } }";
        documents.keep(text, parsed(text));
        let found = documents.get(text).expect("kept");
        assert_eq!(found.operations.iter().count(), 1);
        assert!(documents.get("{ me { id  } }").is_none());
        assert!(documents.get("{ me { username } }").is_none());
    }

    #[test]
    fn a_flood_of_new_texts_stays_within_the_bound_and_keeps_the_used_documents() {
        let documents = Documents::default();
        let hot = "{ me { id } }";
        documents.keep(hot, parsed(hot));
        // Other clients go on sending the same document while one sends ever new texts.
        for i in 0..4 * KEPT_DOCUMENTS {
            assert!(documents.get(hot).is_some());
            let text = format!("{{ a{i}: me {{ id }} }}");
            documents.keep(&text, parsed(&text));
        }
        documents.0.run_pending_tasks();
        assert!(documents.0.entry_count() <= KEPT_DOCUMENTS);
        assert!(documents.get(hot).is_some(), "the document in use stays");
    }
}
