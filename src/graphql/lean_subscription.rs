//! Lean `messageEvents` subscriptions, served without async-graphql's per-subscription
//! execution.
//!
//! Nearly every client subscribes the same way: one `messageEvents` field, perhaps a
//! conversation or a cursor, and a selection of fields that read the same to every member
//! (`message { id body sender { id displayName } }`). Through the schema, each such subscription
//! keeps its parsed document and an executor for as long as it lives, and runs that executor
//! once per event it receives. Here the document is read once, when the subscription starts, and
//! dropped: what is kept is the response key, the shape of the selection, and the stream of
//! events. Each event is resolved by a renderer whose one field is the event, with the
//! subscriber's selection; when that selection reads the same to every viewer, once per shape for
//! everyone (see `render_cache`), and every subscriber copies the result under its response key.
//!
//! A selection that reaches fields whose value depends on the viewer (`isRead`,
//! `conversation { unreadCount }`, ...) is served here too, rendered for each subscriber alone.
//! `/metrics` counts the subscriptions served here (`palaver_subscriptions_plain_total`).
//!
//! A document this module cannot vouch for is left to the schema, which answers it as it always
//! did: anything but a single subscription operation holding one `messageEvents` field, named
//! fragments, directives, variables other than the field's two arguments, and any selection
//! `selection` refuses (unknown fields, fields with arguments, repeated response keys, selections
//! beyond its size bounds). What is served here is therefore a valid document, answered exactly
//! as the schema would answer it.
use std::sync::Arc;

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, ID, Name, Object, PathSegment, Pos, Positioned,
    Request, Response, Schema, ServerError, ValidationMode, Value, Variables,
    parser::parse_query,
    parser::types::{
        BaseType, DocumentOperations, ExecutableDocument, OperationType, Selection as Item, Type,
        VariableDefinition,
    },
};
use async_graphql_value::Value as Input;
use futures_util::{Stream, StreamExt};

use super::{
    Loaders,
    render_cache::{RenderCache, Rendered, Shape},
    selection::Selection,
    subscription,
    types::MessageEvent,
};
use crate::{
    AppState,
    auth::{Auth, Viewer},
    error::AppError,
    files::RequestOrigin,
    limits::SubscriptionSlots,
};

/// A `messageEvents` subscription read from its document.
#[derive(Debug, PartialEq)]
pub struct LeanSubscription {
    /// Where the subscriber wants the events: the field's alias, or `messageEvents`.
    key: Name,
    /// The field's place in the document, for errors.
    pos: Pos,
    conversation_id: Option<ID>,
    since: Option<String>,
    selection: Selection,
}

/// The two arguments of `messageEvents`, and the type a variable given for each must have.
const ARGUMENTS: [(&str, &str); 2] = [("conversationId", "ID"), ("since", "String")];

impl LeanSubscription {
    /// Reads a subscription that can be served leanly, or None to leave the document to the
    /// schema.
    pub fn read(
        cache: &RenderCache,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Option<Self> {
        if !document.fragments.is_empty() {
            return None;
        }
        let operation = match (&document.operations, operation_name) {
            (DocumentOperations::Single(operation), None) => operation,
            (DocumentOperations::Multiple(operations), wanted) if operations.len() == 1 => {
                let (name, operation) = operations.iter().next()?;
                if wanted.is_some_and(|wanted| wanted != name.as_str()) {
                    return None;
                }
                operation
            }
            _ => return None,
        };
        let operation = &operation.node;
        if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
            return None;
        }
        let [selection] = operation.selection_set.node.items.as_slice() else {
            return None;
        };
        let Item::Field(field) = &selection.node else {
            return None;
        };
        let pos = field.pos;
        let field = &field.node;
        if field.name.node != "messageEvents" || !field.directives.is_empty() {
            return None;
        }
        // Every declared variable must be one of the field's arguments, used once.
        let definitions = &operation.variable_definitions;
        if definitions.len() > field.arguments.len()
            || (definitions.len() == 2
                && definitions[0].node.name.node == definitions[1].node.name.node)
        {
            return None;
        }
        let mut values: [Option<Value>; 2] = [None, None];
        for (name, value) in &field.arguments {
            let at = ARGUMENTS
                .iter()
                .position(|(argument, _)| name.node == *argument)?;
            if values[at].is_some() {
                return None;
            }
            let value = match &value.node {
                Input::Variable(variable) => {
                    let definition = definitions.iter().find(|d| d.node.name.node == *variable)?;
                    let definition = &definition.node;
                    let Type {
                        base: BaseType::Named(type_name),
                        nullable,
                    } = &definition.var_type.node
                    else {
                        return None;
                    };
                    if type_name != ARGUMENTS[at].1
                        || !definition.directives.is_empty()
                        || definition.default_value.is_some()
                    {
                        return None;
                    }
                    match variables.get(variable) {
                        // A required variable left out or null is the schema's error to report.
                        None | Some(Value::Null) if !nullable => return None,
                        Some(value) => value.clone(),
                        None => Value::Null,
                    }
                }
                literal => literal.clone().into_const()?,
            };
            values[at] = Some(value);
        }
        let used = |d: &&Positioned<VariableDefinition>| {
            field.arguments.iter().any(
                |(_, value)| matches!(&value.node, Input::Variable(v) if *v == d.node.name.node),
            )
        };
        if definitions.iter().filter(used).count() != definitions.len() {
            return None;
        }
        let [conversation_id, since] = values;
        let conversation_id = match conversation_id {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(ID(id)),
            Some(Value::Number(n)) if n.is_i64() => Some(ID(n.to_string())),
            Some(_) => return None,
        };
        let since = match since {
            None | Some(Value::Null) => None,
            Some(Value::String(cursor)) => Some(cursor),
            Some(_) => return None,
        };
        let selection = cache.read(&document.fragments, &field.selection_set.node)?;
        Some(Self {
            key: field.response_key().node.clone(),
            pos,
            conversation_id,
            since,
            selection,
        })
    }
}

/// Serves lean subscriptions: starts their streams and resolves their events.
pub struct LeanSubscriptions {
    state: AppState,
    renders: Arc<RenderCache>,
    renderer: Schema<RenderRoot, EmptyMutation, EmptySubscription>,
    /// The renderer's query for each shape seen lately, parsed: the query is the same for every
    /// event of a shape, and in direct conversations each event is rendered for its one
    /// subscriber, so parsing it per render would parse it once per send.
    queries: moka::sync::Cache<Arc<str>, ExecutableDocument>,
}

/// Most shapes whose render queries are kept parsed.
const KEPT_QUERIES: u64 = 64;

impl LeanSubscriptions {
    pub fn new(state: AppState, renders: Arc<RenderCache>) -> Self {
        let renderer = Schema::build(RenderRoot, EmptyMutation, EmptySubscription)
            .data(Loaders::new(&state.chat.store))
            .data(state.clone())
            // The queries are spelled from shapes, which only valid selections have.
            .validation_mode(ValidationMode::Fast)
            .finish();
        Self {
            state,
            renders,
            renderer,
            queries: moka::sync::Cache::new(KEPT_QUERIES),
        }
    }

    /// Reads a subscription that can be served here (see [`LeanSubscription::read`]).
    pub fn read(
        &self,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Option<LeanSubscription> {
        LeanSubscription::read(&self.renders, document, operation_name, variables)
    }

    /// The subscription's responses, as async-graphql would give them: the events, or one
    /// response with the error that refused the subscription.
    pub fn stream(
        self: Arc<Self>,
        subscription: LeanSubscription,
        session: Option<Arc<async_graphql::Data>>,
    ) -> impl Stream<Item = Response> + Send + 'static {
        self.state.metrics.plain_subscriptions.increment(1);
        let LeanSubscription {
            key,
            pos,
            conversation_id,
            since,
            selection,
        } = subscription;
        let shape = self.renders.shape(selection);
        async_stream::stream! {
            // Boxed, so that what starting the subscription takes is not kept, inline, in the
            // state of every idle subscription.
            let events = Box::pin(self.open(&shape, conversation_id, since, session.as_deref())).await;
            let (viewer, events) = match events {
                Ok(opened) => opened,
                Err(err) => {
                    yield Response::from_errors(vec![field_error(&key, pos, err)]);
                    return;
                }
            };
            futures_util::pin_mut!(events);
            // The origin the socket was opened on, for the links in an event (`downloadUrl`).
            let origin = session_item::<RequestOrigin>(session.as_deref());
            while let Some(event) = events.next().await {
                yield Box::pin(self.respond(&key, &shape, viewer, origin, event)).await;
            }
        }
    }

    async fn open(
        &self,
        shape: &Arc<Shape>,
        conversation_id: Option<ID>,
        since: Option<String>,
        session: Option<&async_graphql::Data>,
    ) -> Result<(Viewer, impl Stream<Item = Rendered> + use<>), AppError> {
        let viewer = session_item::<Auth>(session)
            .unwrap_or(&Auth::Anonymous)
            .viewer()?;
        let slot = session_item::<SubscriptionSlots>(session)
            .map(SubscriptionSlots::claim)
            .transpose()?;
        let events = subscription::message_events(
            self.state.clone(),
            viewer,
            slot,
            conversation_id.as_ref(),
            None,
            since,
            Some(shape.clone()),
        )
        .await?;
        Ok((viewer, events))
    }

    /// One event's response: the render its shape already has, or a render made now (and kept
    /// for the others when it resolved without errors). A selection that differs per viewer, or
    /// an event replayed from the change log, is rendered for this subscriber alone.
    async fn respond(
        &self,
        key: &Name,
        shape: &Shape,
        viewer: Viewer,
        origin: Option<&RequestOrigin>,
        rendered: Rendered,
    ) -> Response {
        let event = &rendered.event;
        if rendered.shape.is_none() {
            return self.render(key, shape, viewer, origin, event).await;
        }
        let shared = shape
            .shared(event, || async {
                let mut response = self.render(key, shape, viewer, origin, event).await;
                let value = match &mut response.data {
                    Value::Object(data) if response.errors.is_empty() => data.swap_remove(key),
                    _ => None,
                };
                value.ok_or(response)
            })
            .await;
        match shared {
            None => self.render(key, shape, viewer, origin, event).await,
            Some(Ok(value)) => {
                Response::new(Value::Object([(key.clone(), value)].into_iter().collect()))
            }
            Some(Err(response)) => response,
        }
    }

    /// The renderer's query for a shape, parsed (None only if it does not parse, which a shape
    /// always does; the request then reports the error).
    fn query(&self, shape: &Arc<str>) -> Option<ExecutableDocument> {
        if let Some(document) = self.queries.get(shape) {
            return Some(document);
        }
        let document = parse_query(format!("{{event{{{shape}}}}}")).ok()?;
        self.queries.insert(shape.clone(), document.clone());
        Some(document)
    }

    /// Resolves one event in the subscriber's selection, as the schema would for this viewer.
    async fn render(
        &self,
        key: &Name,
        shape: &Shape,
        viewer: Viewer,
        origin: Option<&RequestOrigin>,
        event: &MessageEvent,
    ) -> Response {
        let mut request = Request::new("")
            .data(event.clone())
            .data(Auth::User(viewer));
        if let Some(origin) = origin {
            request = request.data(origin.clone());
        }
        let shape = &shape.selection.shape;
        match self.query(shape) {
            Some(document) => request.set_parsed_query(document),
            None => request.query = format!("{{event{{{shape}}}}}"),
        }
        let mut response = self.renderer.execute(request).await;
        // The renderer's field is `event`; the subscriber's is its response key.
        if let Value::Object(data) = &mut response.data
            && let Some(value) = data.swap_remove("event")
        {
            data.insert(key.clone(), value);
        }
        for error in &mut response.errors {
            if let Some(PathSegment::Field(first)) = error.path.first_mut() {
                *first = key.to_string();
            }
            // Positions in the renderer's query mean nothing to the client.
            error.locations.clear();
        }
        response
    }
}

/// What the connection put in its session data (see `http::serve_socket`).
fn session_item<T: std::any::Any>(session: Option<&async_graphql::Data>) -> Option<&T> {
    session?
        .get(&std::any::TypeId::of::<T>())?
        .downcast_ref::<T>()
}

/// An error that refused a subscription, placed on its field as async-graphql places it.
fn field_error(key: &Name, pos: Pos, err: AppError) -> ServerError {
    async_graphql::Error::from(err)
        .into_server_error(pos)
        .with_path(vec![PathSegment::Field(key.to_string())])
}

/// The renderer's one field: the event in the request's data.
pub struct RenderRoot;

#[Object]
impl RenderRoot {
    async fn event(&self, ctx: &Context<'_>) -> MessageEvent {
        ctx.data_unchecked::<MessageEvent>().clone()
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{ID, Variables, parser::parse_query};
    use serde_json::json;

    use super::{LeanSubscription, RenderCache};

    fn read(
        query: &str,
        operation: Option<&str>,
        variables: serde_json::Value,
    ) -> Option<LeanSubscription> {
        let document = parse_query(query).expect("the test's query parses");
        let cache = RenderCache::new(metrics::Counter::noop());
        LeanSubscription::read(
            &cache,
            &document,
            operation,
            &Variables::from_json(variables),
        )
    }

    #[test]
    fn lean_subscriptions_are_read_with_their_arguments() {
        let lean = read(
            "subscription On($c: ID, $s: String) { live: messageEvents(conversationId: $c, since: $s) { kind cursor message { id body sender { id } } } }",
            Some("On"),
            json!({ "c": "cnv_1", "s": "cursor" }),
        )
        .expect("served leanly");
        assert_eq!(lean.key.as_str(), "live");
        assert_eq!(lean.conversation_id, Some(ID::from("cnv_1")));
        assert_eq!(lean.since.as_deref(), Some("cursor"));
        assert_eq!(
            &*lean.selection.shape,
            "kind cursor message{id body sender{id } } "
        );

        let lean = read(
            "subscription { messageEvents(conversationId: 7) { __typename message { id } } }",
            None,
            json!({}),
        )
        .expect("served leanly");
        assert_eq!(lean.key.as_str(), "messageEvents");
        assert_eq!(lean.conversation_id, Some(ID::from("7")));
        assert_eq!(lean.since, None);

        // A nullable variable left out is null.
        let lean = read(
            "subscription($c: ID) { messageEvents(conversationId: $c) { kind } }",
            None,
            json!({}),
        )
        .expect("served leanly");
        assert_eq!(lean.conversation_id, None);
        assert!(lean.selection.same_for_every_viewer);

        // Fields that differ per viewer are served leanly too, each subscriber rendered alone.
        let lean = read(
            "subscription { messageEvents { message { id isRead conversation { unreadCount } } } }",
            None,
            json!({}),
        )
        .expect("served leanly");
        assert!(!lean.selection.same_for_every_viewer);
    }

    #[test]
    fn anything_else_is_left_to_the_schema() {
        for (query, operation, variables) in [
            // Not a subscription, or not messageEvents alone.
            ("{ me { id } }", None, json!({})),
            ("subscription { typing { isTyping } }", None, json!({})),
            (
                "subscription { messageEvents { kind } other: messageEvents { kind } }",
                None,
                json!({}),
            ),
            // Fields that do not exist or take arguments, or a leaf with a selection.
            (
                "subscription { messageEvents { message { conversation { messages { edges { cursor } } } } } }",
                None,
                json!({}),
            ),
            (
                "subscription { messageEvents { message { bogus } } }",
                None,
                json!({}),
            ),
            (
                "subscription { messageEvents { message } }",
                None,
                json!({}),
            ),
            (
                "subscription { messageEvents { kind { x } } }",
                None,
                json!({}),
            ),
            // Repeated response keys, directives, named fragments.
            (
                "subscription { messageEvents { kind kind } }",
                None,
                json!({}),
            ),
            (
                "subscription { messageEvents { kind @include(if: true) } }",
                None,
                json!({}),
            ),
            (
                "subscription { messageEvents { ...F } } fragment F on MessageEvent { kind }",
                None,
                json!({}),
            ),
            // Arguments the field does not have, twice, or of the wrong type.
            (
                "subscription { messageEvents(first: 1) { kind } }",
                None,
                json!({}),
            ),
            (
                "subscription { messageEvents(since: \"a\", since: \"b\") { kind } }",
                None,
                json!({}),
            ),
            (
                "subscription { messageEvents(since: 5) { kind } }",
                None,
                json!({}),
            ),
            (
                "subscription { messageEvents(conversationId: 1.5) { kind } }",
                None,
                json!({}),
            ),
            // Variables: unused, of the wrong type, a required one missing, a wrong value.
            (
                "subscription($c: ID) { messageEvents { kind } }",
                None,
                json!({}),
            ),
            (
                "subscription($c: Int) { messageEvents(conversationId: $c) { kind } }",
                None,
                json!({}),
            ),
            (
                "subscription($c: ID!) { messageEvents(conversationId: $c) { kind } }",
                None,
                json!({}),
            ),
            (
                "subscription($c: ID) { messageEvents(conversationId: $c) { kind } }",
                None,
                json!({ "c": true }),
            ),
            // An operation name that names no operation here, or one of several.
            (
                "subscription A { messageEvents { kind } }",
                Some("B"),
                json!({}),
            ),
            (
                "subscription { messageEvents { kind } }",
                Some("A"),
                json!({}),
            ),
            (
                "subscription A { messageEvents { kind } } subscription B { messageEvents { kind } }",
                Some("A"),
                json!({}),
            ),
            // Deeper than the selection's bounds.
            (
                "subscription { messageEvents { message { replyTo { replyTo { replyTo { replyTo { replyTo { id } } } } } } } }",
                None,
                json!({}),
            ),
        ] {
            assert_eq!(read(query, operation, variables), None, "{query}");
        }
    }
}
