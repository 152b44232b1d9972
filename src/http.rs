//! The HTTP surface: `/graphql` (POST to execute, GET for GraphiQL), `/graphql/ws` for
//! subscriptions, `/healthz` and `/metrics`.
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::{
    GraphQLBatchRequest, GraphQLProtocol, GraphQLResponse, GraphQLWebSocket,
    rejection::GraphQLRejection,
};
use axum::{
    Router,
    extract::{DefaultBodyLimit, State, WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use sea_orm::ConnectionTrait;
use tower_http::trace::TraceLayer;

use crate::{
    AppState,
    auth::{self, Auth},
    chat::typing::ConnectionId,
    error::AppError,
    graphql::{AppSchema, build_schema},
};

/// Largest JSON GraphQL request body accepted.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct HttpState {
    app: AppState,
    schema: AppSchema,
}

/// The whole router, ready to serve.
pub fn router(state: AppState) -> Router {
    let schema = build_schema(state.clone());
    let body_limit = (state.config.max_upload_bytes as usize).saturating_add(MAX_JSON_BODY);
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(HttpState { app: state, schema })
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("Palaver")
            .finish(),
    )
}

async fn viewer_from_headers(state: &AppState, headers: &HeaderMap) -> Result<Auth, AppError> {
    let token = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => match value.to_str().ok().and_then(auth::bearer) {
            Some(token) => Some(token),
            None => return Ok(Auth::Invalid),
        },
    };
    auth::authenticate(&state.db, token).await
}

async fn graphql(
    State(state): State<HttpState>,
    headers: HeaderMap,
    request: Result<GraphQLBatchRequest, GraphQLRejection>,
) -> Response {
    let request = match request {
        Ok(request) => request.into_inner(),
        Err(rejection) => return rejection_response(rejection),
    };
    let auth = match viewer_from_headers(&state.app, &headers).await {
        Ok(auth) => auth,
        Err(err) => return err.into_response(),
    };
    GraphQLResponse::from(state.schema.execute_batch(request.data(auth)).await).into_response()
}

/// A request that could not be read as GraphQL at all gets a GraphQL-shaped error with a code.
fn rejection_response(rejection: GraphQLRejection) -> Response {
    use async_graphql::ParseRequestError as E;
    let (status, code) = match &rejection.0 {
        E::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        _ => (StatusCode::BAD_REQUEST, "BAD_USER_INPUT"),
    };
    let message = match &rejection.0 {
        E::Io(_) => "the request body could not be read".to_string(),
        other => other.to_string(),
    };
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (status, axum::Json(body)).into_response()
}

async fn websocket(
    State(state): State<HttpState>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_auth = match viewer_from_headers(&state.app, &headers).await {
        Ok(auth) => auth,
        Err(err) => return err.into_response(),
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let tracker = state.app.connections.clone();
            tracker.track_future(serve_socket(state, socket, protocol, header_auth))
        })
}

/// Runs one GraphQL WebSocket until the client leaves or the server shuts down (then it is closed
/// with 1001, going away), and undoes what the connection held: presence and typing indicators.
async fn serve_socket(
    state: HttpState,
    socket: axum::extract::ws::WebSocket,
    protocol: GraphQLProtocol,
    header_auth: Auth,
) {
    use axum::extract::ws::{CloseFrame, Message};
    use futures_util::{SinkExt, StreamExt};
    {
        let app = state.app.clone();
        let connection = ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed));
        // Who this socket turned out to be, once `connection_init` is accepted.
        let signed_in: Arc<Mutex<Option<i64>>> = Arc::default();
        let on_init = {
            let app = app.clone();
            let signed_in = signed_in.clone();
            move |payload: serde_json::Value| async move {
                let auth = match auth::token_from_init_payload(&payload) {
                    Some(token) => auth::authenticate(&app.db, Some(&token)).await?,
                    None => header_auth,
                };
                if let Auth::Invalid = auth {
                    // The socket is closed (1002, with this reason): a client holding a dead
                    // token must sign in again rather than retry.
                    return Err(async_graphql::Error::new(
                        "UNAUTHENTICATED: the token is invalid, expired or revoked",
                    ));
                }
                if let Auth::User(viewer) = auth {
                    *lock(&signed_in) = Some(viewer.user_id);
                    app.presence
                        .connected(&app, viewer.user_id, connection)
                        .await;
                }
                let mut data = async_graphql::Data::default();
                data.insert(auth);
                data.insert(connection);
                Ok(data)
            }
        };
        let (mut sink, stream) = socket.split();
        let stream = stream.take_until(app.shutdown.clone().cancelled_owned());
        GraphQLWebSocket::new_with_pair(&mut sink, stream, state.schema.clone(), protocol)
            .on_connection_init(on_init)
            .serve()
            .await;
        if app.shutdown.is_cancelled() {
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1001,
                    reason: "server shutting down".into(),
                })))
                .await;
        }
        app.typing.connection_closed(&app, connection).await;
        let user = *lock(&signed_in);
        if let Some(user_id) = user {
            app.presence.disconnected(&app, user_id, connection);
        }
    }
}

/// Numbers WebSocket connections, so that state tied to one can be undone when it closes.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn healthz(State(state): State<HttpState>) -> Response {
    match state.app.db.execute_unprepared("SELECT 1").await {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(err) => {
            tracing::error!(error = %err, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let statements = state.app.statements.load(Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        format!(
            "# HELP palaver_db_statements_total SQL statements executed since start.\n\
             # TYPE palaver_db_statements_total counter\n\
             palaver_db_statements_total {statements}\n"
        ),
    )
        .into_response()
}
