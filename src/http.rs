//! The HTTP surface: `/graphql` (POST to execute, JSON or a multipart upload; GET for GraphiQL),
//! `/graphql/ws` for subscriptions, `/files/{messageId}` for downloads, `/healthz` and `/metrics`.
use std::net::SocketAddr;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use async_graphql::{
    BatchRequest, Executor, ParseRequestError,
    http::{
        ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource, MultipartOptions, WebSocketProtocols, WsMessage,
        receive_batch_body,
    },
};
use async_graphql_axum::GraphQLResponse;
use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, DefaultBodyLimit, FromRef, State, WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use futures_util::{StreamExt, TryStreamExt};
use sea_orm::ConnectionTrait;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

use crate::{
    AppState,
    auth::{self, Auth, Viewer},
    chat::typing::ConnectionId,
    error::AppError,
    events::{Event, Lagged, Receiver, Topic},
    files,
    graphql::{Api, build_api},
    limits::{ClientAddr, SubscriptionSlots},
    lock,
};

/// Largest JSON GraphQL request body accepted (and what a multipart request may carry besides
/// its file).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct HttpState {
    app: AppState,
    api: Api,
}

impl FromRef<HttpState> for AppState {
    fn from_ref(state: &HttpState) -> Self {
        state.app.clone()
    }
}

/// The whole router, ready to serve.
pub fn router(state: AppState) -> Router {
    let api = build_api(state.clone());
    let body_limit = (state.config.max_upload_bytes as usize).saturating_add(MAX_JSON_BODY);
    let router = Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(websocket))
        // `get` also answers HEAD; the handler then skips reading the store.
        .route("/files/{message_id}", get(files::download::download))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http());
    let router = match cors(&state.config.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    security_headers(router).with_state(HttpState { app: state, api })
}

/// The policy of every response that sets none of its own: the API serves JSON and text, never
/// a page, so nothing may load from it, and nothing may frame it.
const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// GraphiQL's page loads React and GraphiQL from unpkg.com, runs an inline script and talks to
/// this server over HTTP and WebSocket; it may still not be framed.
const GRAPHIQL_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline' https://unpkg.com; \
style-src 'self' 'unsafe-inline' https://unpkg.com; font-src 'self' data: https://unpkg.com; \
img-src 'self' data: https://unpkg.com https://graphql.org; connect-src 'self' ws: wss:; \
worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Headers every response carries, outermost so that errors, CORS preflights and unknown paths
/// get them too. `if_not_present`: a route that sets its own (the file route's `sandbox` policy,
/// GraphiQL's) keeps it.
fn security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CSP),
        ))
}

/// Browsers on the configured origins may call the API; with none configured, no CORS headers
/// are sent and browsers keep to the same-origin rule. Tokens travel in `Authorization`, never in
/// cookies, so credentials are not allowed.
fn cors(origins: &[crate::config::CorsOrigin]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().map(|o| o.0.clone())))
            .allow_methods([Method::GET, Method::POST, Method::HEAD, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn graphiql(State(state): State<HttpState>) -> Response {
    if !state.app.config.graphiql {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(GRAPHIQL_CSP),
        )],
        Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql/ws")
                .title("Palaver")
                .finish(),
        ),
    )
        .into_response()
}

async fn viewer_from_headers(state: &AppState, headers: &HeaderMap) -> Result<Auth, AppError> {
    let token = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => match value.to_str().ok().and_then(auth::bearer) {
            Some(token) => Some(token),
            None => return Ok(Auth::Invalid),
        },
    };
    auth::authenticate(&state.db, &state.tokens, token).await
}

async fn graphql(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = match read_request(&state.app, &headers, body).await {
        Ok(request) => request,
        Err(err) => return rejection_response(err),
    };
    if let Err(response) = check_request_size(&state.app, &request) {
        return *response;
    }
    let run = async {
        let auth = match viewer_from_headers(&state.app, &headers).await {
            Ok(auth) => auth,
            Err(err) => return err.into_response(),
        };
        let request = request.data(auth).data(ClientAddr(peer.ip()));
        GraphQLResponse::from(state.api.execute_batch(request).await).into_response()
    };
    let timeout = std::time::Duration::from_millis(state.app.config.request_timeout_ms.max(1));
    let shutdown = state.app.shutdown.clone();
    // Dropping `run` stops the request at its next await. Work that never awaits cannot be
    // stopped this way: what runs before execution (the document checks) is kept linear in the
    // size of the request instead.
    tokio::select! {
        biased;
        response = run => response,
        () = tokio::time::sleep(timeout) => {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "a GraphQL request timed out");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "TIMEOUT",
                format!(
                    "the request did not complete within {} ms and was stopped; a change it \
                     asked for may or may not have been made",
                    timeout.as_millis()
                ),
            )
        }
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "the server is shutting down and stopped the request; a change it asked for may or \
             may not have been made"
                .into(),
        ),
    }
}

/// How long a GraphQL request still running when the server starts shutting down may go on
/// (within its own timeout) before it is stopped, so that a shutdown is never held up by one.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a GraphQL request: JSON, or the GraphQL multipart request spec (operations, map, files).
/// Files are spooled by async-graphql to anonymous temporary files, never held in memory; one
/// larger than `PALAVER_MAX_UPLOAD_BYTES`, or a body larger than that plus [`MAX_JSON_BODY`], is
/// PAYLOAD_TOO_LARGE, found while streaming (before anything reaches the store).
async fn read_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<BatchRequest, ParseRequestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let multipart = content_type.is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/")
    });
    let max_file = usize::try_from(state.config.max_upload_bytes).unwrap_or(usize::MAX);
    let limit = if multipart {
        max_file.saturating_add(MAX_JSON_BODY)
    } else {
        MAX_JSON_BODY
    } as u64;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ParseRequestError::PayloadTooLarge);
    }
    // Counted as it streams too: a chunked body has no Content-Length to check up front.
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    let mut seen = 0u64;
    let reader = body
        .into_data_stream()
        .map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            seen += chunk.len() as u64;
            if seen > limit {
                flag.store(true, Ordering::Relaxed);
                return Err(std::io::Error::other("request body too large"));
            }
            Ok(chunk)
        })
        .into_async_read();
    // The number of files needs no limit of its own: the body limit bounds their total.
    let options = MultipartOptions::default().max_file_size(max_file);
    match receive_batch_body(content_type, reader, options).await {
        Err(_) if exceeded.load(Ordering::Relaxed) => Err(ParseRequestError::PayloadTooLarge),
        other => other,
    }
}

/// Refuses a batch of more than `PALAVER_MAX_BATCH` operations (BATCH_TOO_LARGE), and query text
/// longer than [`MAX_JSON_BODY`] that arrived inside a (larger) multipart body, before anything
/// is parsed.
fn check_request_size(state: &AppState, request: &BatchRequest) -> Result<(), Box<Response>> {
    let requests = match request {
        BatchRequest::Single(one) => std::slice::from_ref(one),
        BatchRequest::Batch(many) => many.as_slice(),
    };
    if requests.len() > state.config.max_batch {
        let message = format!(
            "a batch may hold at most {} operations; this one has {}",
            state.config.max_batch,
            requests.len()
        );
        return Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "BATCH_TOO_LARGE",
            message,
        )));
    }
    if requests.iter().any(|r| r.query.len() > MAX_JSON_BODY) {
        return Err(Box::new(rejection_response(
            ParseRequestError::PayloadTooLarge,
        )));
    }
    Ok(())
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (status, axum::Json(body)).into_response()
}

/// A request that could not be read as GraphQL at all gets a GraphQL-shaped error with a code.
fn rejection_response(rejection: ParseRequestError) -> Response {
    use async_graphql::ParseRequestError as E;
    let (status, code) = match &rejection {
        E::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        _ => (StatusCode::BAD_REQUEST, "BAD_USER_INPUT"),
    };
    let mut message = match &rejection {
        E::Io(_) => "the request body could not be read".to_string(),
        other => other.to_string(),
    };
    // A JSON error may quote the body (a string where an object was expected, say).
    crate::error::shorten_message(&mut message);
    error_response(status, code, message)
}

async fn websocket(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The first GraphQL subprotocol the client offers (graphql-transport-ws or graphql-ws).
    let Some(protocol) = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .and_then(|offered| {
            offered
                .split(',')
                .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
        })
    else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let header_auth = match viewer_from_headers(&state.app, &headers).await {
        Ok(auth) => auth,
        Err(err) => return err.into_response(),
    };
    let max_message = state.app.config.ws_max_message_bytes;
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // tungstenite's defaults (128 KiB each way) would cost every idle connection ~256 KiB;
        // chat frames are small, so start small and grow only while a frame needs it.
        .read_buffer_size(WS_READ_BUFFER)
        // Frames are gathered up to this many bytes and written together (see `serve_socket`).
        .write_buffer_size(WS_WRITE_GATHER)
        // A client that stops reading is closed once this much is queued for it, rather than
        // holding server memory without bound; it resumes with its cursor when it reconnects.
        .max_write_buffer_size(WS_MAX_QUEUED)
        // A larger message closes the socket with 1009 before it is buffered whole.
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            let tracker = state.app.connections.clone();
            tracker.track_future(serve_socket(state, socket, protocol, header_auth, peer))
        })
}

/// Keep-alive pings a socket may leave unanswered (sending nothing at all) before it is closed.
const MISSED_PINGS: u32 = 3;

/// Runs one GraphQL WebSocket until the client leaves, goes quiet for [`MISSED_PINGS`] keep-alive
/// intervals, or the server shuts down (then it is closed with 1001, going away), and undoes what
/// the connection held: presence and typing indicators.
async fn serve_socket(
    state: HttpState,
    socket: axum::extract::ws::WebSocket,
    protocol: WebSocketProtocols,
    header_auth: Auth,
    peer: SocketAddr,
) {
    use axum::extract::ws::Message;
    use futures_util::{FutureExt, SinkExt, StreamExt};
    let app = state.app.clone();
    let connection = ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed));
    // Who this socket turned out to be once `connection_init` is accepted (the session it signed
    // in with), and where that session's end would be announced.
    let (session_tx, mut session_rx) = tokio::sync::oneshot::channel::<(Viewer, Receiver)>();
    let session_tx = Arc::new(Mutex::new(Some(session_tx)));
    let on_init = {
        let app = app.clone();
        move |payload: serde_json::Value| async move {
            let auth = match auth::token_from_init_payload(&payload) {
                Some(token) => auth::authenticate(&app.db, &app.tokens, Some(&token)).await?,
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
                // Checked, then counted: two sockets opening at the same instant may both get
                // in, which a limit against floods can afford.
                let open = app.presence.open_connections(viewer.user_id).await;
                if open >= app.config.max_ws_per_user {
                    return Err(async_graphql::Error::new(format!(
                        "RATE_LIMITED: at most {} open connections per user; retryAfter=5",
                        app.config.max_ws_per_user
                    )));
                }
                let ends = app.bus.subscribe(Topic::Sessions, viewer.user_id);
                if let Some(tx) = lock(&session_tx).take() {
                    let _ = tx.send((viewer, ends));
                }
                app.presence
                    .connected(&app, viewer.user_id, connection)
                    .await;
            }
            let mut data = async_graphql::Data::default();
            data.insert(auth);
            data.insert(connection);
            data.insert(ClientAddr(peer.ip()));
            data.insert(SubscriptionSlots::new(app.config.max_subscriptions));
            Ok(data)
        }
    };
    let (mut sink, stream) = socket.split();
    // Anything the client sends (a pong included) shows it is alive. async-graphql's own
    // `keepalive_timeout` only sees GraphQL messages, not the WebSocket pongs that browsers send
    // by themselves, so the pings and the idle check are done here.
    let last_heard = Arc::new(Mutex::new(std::time::Instant::now()));
    let input = {
        let last_heard = last_heard.clone();
        stream
            .inspect(move |_| *lock(&last_heard) = std::time::Instant::now())
            .take_while(|frame| std::future::ready(frame.is_ok()))
            .filter_map(|frame| {
                std::future::ready(match frame {
                    Ok(frame @ (Message::Text(_) | Message::Binary(_))) => Some(frame.into_data()),
                    _ => None,
                })
            })
    };
    let mut session: Option<(Viewer, Receiver)> = None;
    let mut awaiting_session = true;
    // The replies (and the subscriptions they hold) end with this block, before the clean-up.
    {
        let replies = async_graphql::http::WebSocket::new(state.api.clone(), input, protocol)
            .on_connection_init(on_init);
        futures_util::pin_mut!(replies);
        // One loop writes both the GraphQL replies and the pings, so a connection needs no queue and
        // no second task between them.
        let keepalive = std::time::Duration::from_millis(app.config.ws_keepalive_ms.max(1));
        let mut tick = tokio::time::interval(keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        'serve: loop {
            tokio::select! {
                signed = &mut session_rx, if awaiting_session => {
                    awaiting_session = false;
                    session = signed.ok();
                }
                () = session_ended(&mut session) => {
                    let ended = close(4401, "UNAUTHENTICATED: the session ended; sign in again");
                    let _ = sink.send(ended).await;
                    break;
                }
                reply = replies.next() => {
                    // Every reply that is ready now goes out in one write: a subscriber behind
                    // a busy room then costs the server one system call per batch, not one per
                    // event.
                    let mut reply = reply;
                    let mut batched = 0;
                    loop {
                        match reply {
                            Some(WsMessage::Text(text)) => {
                                if sink.feed(Message::Text(text.into())).await.is_err() {
                                    break 'serve;
                                }
                            }
                            Some(WsMessage::Close(code, reason)) => {
                                let _ = sink.send(close(code, &reason)).await;
                                break 'serve;
                            }
                            None => {
                                let _ = sink.flush().await;
                                break 'serve;
                            }
                        }
                        batched += 1;
                        if batched == WS_REPLIES_PER_WRITE {
                            break;
                        }
                        // Polled without a waker: a stream that is not ready now is polled
                        // again (with the loop's waker) by the next turn of `select!`.
                        match replies.next().now_or_never() {
                            Some(next) => reply = next,
                            None => break,
                        }
                    }
                    if sink.flush().await.is_err() {
                        break;
                    }
                }
                _ = tick.tick() => {
                    if lock(&last_heard).elapsed() > keepalive * MISSED_PINGS {
                        let idle = close(4408, "idle: keep-alive pings went unanswered");
                        let _ = sink.send(idle).await;
                        break;
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
                _ = app.shutdown.cancelled() => {
                    let _ = sink.send(close(1001, "server shutting down")).await;
                    break;
                }
            }
        }
    }
    app.typing.connection_closed(&app, connection).await;
    // A socket that signed in just before it closed may not have picked its session up yet.
    if session.is_none() {
        session = session_rx.try_recv().ok();
    }
    if let Some((viewer, _)) = session {
        app.presence.disconnected(&app, viewer.user_id, connection);
    }
}

/// Waits until the session a socket signed in with ends (`logout`, `revokeSession`,
/// `changePassword` from elsewhere, on any instance); forever if it has none. The socket is then
/// closed, so a revoked token stops receiving at once, not only on its next request.
async fn session_ended(session: &mut Option<(Viewer, Receiver)>) {
    let Some((viewer, ends)) = session else {
        return std::future::pending().await;
    };
    loop {
        match ends.recv().await {
            Ok(envelope) => {
                if let Event::SessionsEnded { user_id, ended } = &envelope.event
                    && *user_id == viewer.user_id
                    && ended.covers(viewer)
                {
                    return;
                }
            }
            // Ends are rare and tiny; a queue of thousands cannot overflow with them alone. Should
            // it ever, the socket cannot tell whether its own end was among the dropped, and
            // closes: the client signs in again if it still may.
            Err(Lagged) => return,
        }
    }
}

/// A close frame with its code and reason.
fn close(code: u16, reason: &str) -> axum::extract::ws::Message {
    axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Initial read buffer of a WebSocket connection.
const WS_READ_BUFFER: usize = 1024;
/// Bytes of outgoing frames gathered before they are written, when several are ready at once.
/// The buffer is allocated only once a connection has something to send.
const WS_WRITE_GATHER: usize = 4096;
/// Most replies gathered into one write (then it is flushed, and the loop turns).
const WS_REPLIES_PER_WRITE: usize = 64;
/// Most bytes queued for one WebSocket client before it is deemed gone and closed.
const WS_MAX_QUEUED: usize = 1024 * 1024;

/// Numbers WebSocket connections, so that state tied to one can be undone when it closes.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

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
    let shared = state.app.shared_renders.load(Ordering::Relaxed);
    let plain = state.app.plain_subscriptions.load(Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        format!(
            "# HELP palaver_db_statements_total SQL statements executed since start.\n\
             # TYPE palaver_db_statements_total counter\n\
             palaver_db_statements_total {statements}\n\
             # HELP palaver_subscription_shared_renders_total Subscription events served from \
             the same event resolved for another subscriber in the same shape.\n\
             # TYPE palaver_subscription_shared_renders_total counter\n\
             palaver_subscription_shared_renders_total {shared}\n\
             # HELP palaver_subscriptions_plain_total messageEvents subscriptions served from \
             their selection's shape, without executing the document per event.\n\
             # TYPE palaver_subscriptions_plain_total counter\n\
             palaver_subscriptions_plain_total {plain}\n"
        ),
    )
        .into_response()
}
