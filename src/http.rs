//! The HTTP surface: `/graphql` (GraphQL over HTTP: POST to execute, JSON or a multipart upload;
//! GET for queries, and GraphiQL for a browser; a subscription either way as a multipart stream
//! when `Accept` asks for one), `/graphiql/{file}` for GraphiQL's files, `/graphql/ws` for
//! subscriptions, `/files/{messageId}` for downloads, `/healthz` and `/metrics`.
pub(crate) mod graphql_over_http;
pub(crate) mod multipart_subscriptions;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use async_graphql::{
    BatchRequest, Executor, ParseRequestError,
    http::{
        ALL_WEBSOCKET_PROTOCOLS, ClientMessage, MultipartOptions, WebSocketProtocols, WsMessage,
        receive_batch_body,
    },
    parser::types::OperationType,
};
use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, DefaultBodyLimit, FromRef, State, WebSocketUpgrade},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::{StreamExt, TryStreamExt};
use sea_orm::ConnectionTrait;
use tower_http::{
    cors::{AllowOrigin, CorsLayer, ExposeHeaders},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

use self::graphql_over_http::{Accept, GetParams, MediaType};
use crate::{
    AppState,
    auth::{self, Auth, Viewer},
    chat::typing::ConnectionId,
    error::AppError,
    events::{Event, Lagged, Receiver, Topic},
    files::{self, RequestOrigin},
    graphql::{Api, build_api},
    limits::{AnonymousSocket, AnonymousSockets, ClientAddr, SubscriptionSlots},
    lock,
};

/// Largest JSON GraphQL request body accepted (and what a multipart request may carry besides
/// its file).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct HttpState {
    app: AppState,
    api: Api,
    /// WebSockets not signed in yet, per client address.
    anonymous: Arc<AnonymousSockets>,
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
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/graphql/ws", get(websocket))
        // `get` also answers HEAD; the handler then skips reading the store.
        .route("/files/{message_id}", get(files::download::download))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    // GraphiQL's files, when GraphiQL is on.
    let router = if state.config.graphiql {
        router.route("/graphiql/{file}", get(crate::graphiql::asset))
    } else {
        router
    };
    let router = router
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http());
    let router = match cors(&state.config.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    let anonymous = AnonymousSockets::new(state.config.max_anon_ws_per_addr);
    security_headers(router).with_state(HttpState {
        app: state,
        api,
        anonymous,
    })
}

/// The policy of every response that sets none of its own: the API serves JSON and text, never
/// a page, so nothing may load from it, and nothing may frame it.
const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

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
            .allow_headers(CORS_REQUEST_HEADERS.map(HeaderName::from_static))
            .expose_headers(ExposeHeaders::list(
                CORS_EXPOSED_HEADERS.map(HeaderName::from_static),
            ))
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Request headers a page on an allowed origin may send: ours (`Authorization`, and
/// `Content-Type` for JSON, which is not CORS-safelisted), and those Apollo Client and
/// apollo-upload-client send: `apollo-require-preflight` (forces a preflight on uploads),
/// client awareness (`apollographql-client-name`, `-version`), and the operation name Apollo's
/// CSRF prevention accepts as proof of a preflight (`x-apollo-operation-name`).
const CORS_REQUEST_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "accept",
    "apollo-require-preflight",
    "apollographql-client-name",
    "apollographql-client-version",
    "x-apollo-operation-name",
];

/// Response headers scripts on an allowed origin may read besides the safelisted ones: what a
/// download answers with (its file name, validator and range) and how long to wait after a
/// refusal.
const CORS_EXPOSED_HEADERS: [&str; 5] = [
    "content-disposition",
    "etag",
    "content-range",
    "accept-ranges",
    "retry-after",
];

/// Whether a WebSocket upgrade may go ahead given its `Origin`. With no origins configured any
/// page may open one (tokens travel in `connection_init`, never in cookies, so a page cannot
/// borrow a visitor's session); with some, a browser's upgrade must come from one of them or from
/// the server's own host (GraphiQL), as HTTP requests must. Clients that are not browsers send no
/// `Origin` and are not concerned.
fn websocket_origin_allowed(config: &crate::config::Config, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    if config.cors_origins.is_empty() || config.cors_origins.iter().any(|o| o.0 == origin) {
        return true;
    }
    // The server's own host as the browser saw it: behind a trusted proxy, the forwarded one.
    let strip = |o: &str| -> Option<String> {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .map(str::to_owned)
    };
    let host =
        RequestOrigin::from_headers(headers, config.trust_forwarded).and_then(|o| strip(&o.0));
    let origin_host = origin.to_str().ok().and_then(strip);
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(&o))
}

async fn graphiql(State(state): State<HttpState>) -> Response {
    if !state.app.config.graphiql {
        return StatusCode::NOT_FOUND.into_response();
    }
    crate::graphiql::page()
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

/// `POST /graphql`: a JSON body or a multipart upload, answered in the media type `Accept` asks for.
async fn graphql(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = Accept::from_headers(&headers).media;
    if !graphql_over_http::readable_content_type(&headers) {
        // Read (within the bound) so the client is not cut off while still sending.
        drain(&mut body.into_data_stream()).await;
        return graphql_over_http::error_response(
            media,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_USER_INPUT",
            "a GraphQL request is sent as `application/json`, or as `multipart/form-data` \
             with a file"
                .into(),
        );
    }
    let request = match read_request(&state.app, &headers, body).await {
        Ok(request) => request,
        Err(err) => return rejection_response(err, media),
    };
    if let Err(response) = check_request_size(&state.app, &request, media) {
        return *response;
    }
    execute(state, peer, headers, request, media).await
}

/// `GET /graphql`: GraphiQL for a browser asking for a page; otherwise a query from the query
/// string, its text or a persisted query's hash (`extensions`). Never a mutation: a GET must be
/// safe to repeat and cache, and browsers send GETs across origins without asking. A subscription
/// only as a multipart stream, when `Accept` asks for one (Apollo's persisted query link sends
/// every hashed operation but a mutation as a GET); as a single answer it would stay open or end
/// at its first event.
async fn graphql_get(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let accept = Accept::from_headers(&headers);
    let media = accept.media;
    let mut response = if accept.html {
        graphiql(State(state)).await
    } else {
        match GetParams::parse(&uri).and_then(GetParams::into_request) {
            Err(message) => graphql_over_http::error_response(
                media,
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                message,
            ),
            Ok(mut request) => {
                let refused = match state.api.operation_type(&mut request) {
                    Some(OperationType::Mutation) => true,
                    Some(OperationType::Subscription) => {
                        !multipart_subscriptions::accepted(&headers)
                    }
                    _ => false,
                };
                if refused {
                    let mut refused = graphql_over_http::error_response(
                        media,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "BAD_USER_INPUT",
                        "only queries may be sent with GET (and subscriptions as a multipart \
                         stream); send mutations and other subscriptions with POST"
                            .into(),
                    );
                    refused
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("POST"));
                    refused
                } else {
                    execute(state, peer, headers, BatchRequest::Single(request), media).await
                }
            }
        }
    };
    // The same URL is answered as a page or as JSON of either type: caches must key on Accept.
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept"));
    response
}

/// Runs a request that was read whole, as its bearer token's user, within the request timeout; a
/// subscription asked for as a multipart stream is handed to `multipart_subscriptions` instead
/// (it has no timeout).
async fn execute(
    state: HttpState,
    peer: SocketAddr,
    headers: HeaderMap,
    request: BatchRequest,
    media: MediaType,
) -> Response {
    let lacking = match &request {
        BatchRequest::Single(one) => graphql_over_http::lacks_document(one),
        BatchRequest::Batch(many) => many.iter().any(graphql_over_http::lacks_document),
    };
    if lacking {
        return graphql_over_http::error_response(
            media,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            "the request has no `query`: send the GraphQL document as a string in it, or a \
             persisted query's hash in `extensions.persistedQuery`"
                .into(),
        );
    }
    let request = match request {
        BatchRequest::Single(mut one) if multipart_subscriptions::accepted(&headers) => {
            if state.api.operation_type(&mut one) == Some(OperationType::Subscription) {
                return subscribe_multipart(state, peer, &headers, one, media).await;
            }
            BatchRequest::Single(one)
        }
        other => other,
    };
    let origin = RequestOrigin::from_headers(&headers, state.app.config.trust_forwarded);
    let run = async {
        let auth = match viewer_from_headers(&state.app, &headers).await {
            Ok(auth) => auth,
            Err(err) => return err.into_response(),
        };
        let mut request = request.data(auth).data(ClientAddr(peer.ip()));
        if let Some(origin) = origin {
            request = request.data(origin);
        }
        graphql_over_http::graphql_response(state.api.execute_batch(request).await, media)
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
            graphql_over_http::error_response(
                media,
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
        } => graphql_over_http::error_response(
            media,
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "the server is shutting down and stopped the request; a change it asked for may or \
             may not have been made"
                .into(),
        ),
    }
}

/// A subscription over HTTP, for the caller of the `Authorization` header. A refusal before the
/// stream starts is a plain GraphQL answer in the negotiated media type.
async fn subscribe_multipart(
    state: HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    request: async_graphql::Request,
    media: MediaType,
) -> Response {
    let auth = match viewer_from_headers(&state.app, headers).await {
        Ok(auth) => auth,
        Err(err) => return err.into_response(),
    };
    let origin = RequestOrigin::from_headers(headers, state.app.config.trust_forwarded);
    let connection = ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed));
    multipart_subscriptions::respond(
        state.app,
        state.api,
        multipart_subscriptions::Caller {
            auth,
            peer,
            connection,
            origin,
            media,
        },
        request,
    )
    .await
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
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|len| len > limit) {
        drain(&mut stream).await;
        return Err(ParseRequestError::PayloadTooLarge);
    }
    // Counted as it streams too: a chunked body has no Content-Length to check up front.
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    let mut seen = 0u64;
    let reader = (&mut stream)
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
    let read = receive_batch_body(content_type, reader, options).await;
    if read.is_err() {
        drain(&mut stream).await;
    }
    match read {
        Err(_) if exceeded.load(Ordering::Relaxed) => Err(ParseRequestError::PayloadTooLarge),
        other => other,
    }
}

/// Most bytes of a refused request body read (and thrown away) before the answer is sent.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// Longest time spent reading a refused request body before the answer is sent.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads what is left of a refused request body, up to [`DRAIN_BYTES`] and [`DRAIN_TIME`], before
/// the refusal is sent. A client still sending when the connection closes gets a write error
/// (EPIPE, a reset) and never reads the answer; Node's fetch is one. Past the bounds the
/// connection is closed all the same: a client may not keep the server reading forever.
async fn drain(stream: &mut axum::body::BodyDataStream) {
    let mut read = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Refuses a batch of more than `PALAVER_MAX_BATCH` operations (BATCH_TOO_LARGE), and query text
/// longer than [`MAX_JSON_BODY`] that arrived inside a (larger) multipart body, before anything
/// is parsed.
fn check_request_size(
    state: &AppState,
    request: &BatchRequest,
    media: MediaType,
) -> Result<(), Box<Response>> {
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
        return Err(Box::new(graphql_over_http::error_response(
            media,
            StatusCode::BAD_REQUEST,
            "BATCH_TOO_LARGE",
            message,
        )));
    }
    if requests.iter().any(|r| r.query.len() > MAX_JSON_BODY) {
        return Err(Box::new(rejection_response(
            ParseRequestError::PayloadTooLarge,
            media,
        )));
    }
    Ok(())
}

/// A request that could not be read as GraphQL at all gets a GraphQL-shaped error with a code.
fn rejection_response(rejection: ParseRequestError, media: MediaType) -> Response {
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
    graphql_over_http::error_response(media, status, code, message)
}

async fn websocket(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The first GraphQL subprotocol the client offers (graphql-transport-ws or graphql-ws).
    if !websocket_origin_allowed(&state.app.config, &headers) {
        return (
            StatusCode::FORBIDDEN,
            "this page's origin is not among PALAVER_CORS_ORIGINS",
        )
            .into_response();
    }
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
    // A socket upgraded with a bearer header is its user's from the start; any other counts
    // against its address until its `connection_init` is accepted.
    let anonymous = match header_auth {
        Auth::User(_) => None,
        Auth::Anonymous | Auth::Invalid => match state.anonymous.claim(peer.ip()) {
            Some(place) => Some(place),
            None => return too_many_anonymous_sockets(&state.app.config),
        },
    };
    let max_message = state.app.config.ws_max_message_bytes;
    let origin = RequestOrigin::from_headers(&headers, state.app.config.trust_forwarded);
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
        // A larger message fails the read before it is buffered whole (a larger frame as soon as
        // its header is read); `serve_socket` then closes the socket with 1009.
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            let tracker = state.app.connections.clone();
            tracker.track_future(serve_socket(
                state,
                socket,
                protocol,
                header_auth,
                peer,
                anonymous,
                origin,
            ))
        })
}

/// The refusal of an upgrade from an address that already holds `PALAVER_MAX_ANON_WS_PER_ADDR`
/// sockets not signed in. One frees, at the latest, when its `connection_init` time runs out.
fn too_many_anonymous_sockets(config: &crate::config::Config) -> Response {
    let retry_after = config.ws_init_timeout_ms.div_ceil(1000).max(1);
    let body = serde_json::json!({ "errors": [{
        "message": format!(
            "at most {} WebSockets may wait to be signed in from one address; \
             send connection_init on those first",
            config.max_anon_ws_per_addr
        ),
        "extensions": { "code": "RATE_LIMITED", "retryAfter": retry_after },
    }]});
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, retry_after.to_string())],
        axum::Json(body),
    )
        .into_response()
}

/// Keep-alive pings a socket may leave unanswered (sending nothing at all) before it is closed.
const MISSED_PINGS: u32 = 3;

/// Runs one GraphQL WebSocket until the client leaves, breaks the protocol, is not signed in within
/// `PALAVER_WS_INIT_TIMEOUT_MS`, goes quiet for [`MISSED_PINGS`] keep-alive intervals, or the
/// server shuts down (then it is closed with 1001, going away), and undoes what the connection
/// held: presence and typing indicators. The close codes are graphql-transport-ws's (README,
/// "WebSocket close codes").
async fn serve_socket(
    state: HttpState,
    socket: axum::extract::ws::WebSocket,
    protocol: WebSocketProtocols,
    header_auth: Auth,
    peer: SocketAddr,
    mut anonymous: Option<AnonymousSocket>,
    origin: Option<RequestOrigin>,
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
            // A refusal closes the socket (4403, with this reason): a client holding a dead token
            // must sign in again rather than retry.
            let viewer = match auth {
                Auth::User(viewer) => viewer,
                Auth::Invalid => {
                    return Err(async_graphql::Error::new(
                        "UNAUTHENTICATED: the token is invalid, expired or revoked",
                    ));
                }
                // Every operation but `register` and `login` needs a session, and those two are
                // of no use to a socket that stays anonymous: a socket must sign in.
                Auth::Anonymous => {
                    return Err(async_graphql::Error::new(
                        "UNAUTHENTICATED: connection_init must carry a token \
                         ({\"authorization\": \"Bearer <token>\"})",
                    ));
                }
            };
            // Checked, then counted: two sockets opening at the same instant may both get in,
            // which a limit against floods can afford.
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
            app.presence.connected(viewer.user_id, connection).await;
            let mut data = async_graphql::Data::default();
            data.insert(Auth::User(viewer));
            data.insert(connection);
            data.insert(ClientAddr(peer.ip()));
            data.insert(SubscriptionSlots::new(app.config.max_subscriptions));
            if let Some(origin) = origin {
                data.insert(origin);
            }
            Ok(data)
        }
    };
    let (mut sink, mut stream) = socket.split();
    // Anything the client sends (a pong included) shows it is alive. async-graphql's own
    // `keepalive_timeout` only sees GraphQL messages, not the WebSocket pongs that browsers send
    // by themselves, so the pings and the idle check are done here.
    let last_heard = Arc::new(Mutex::new(std::time::Instant::now()));
    let gate = Arc::new(Mutex::new(GateState::default()));
    let mut session: Option<(Viewer, Receiver)> = None;
    let mut awaiting_session = true;
    // The replies (and the subscriptions they hold) end with this block, before the clean-up; it
    // gives the close frame to end the socket with, or None when the client is gone.
    let ending: Option<(u16, String)> = {
        let checks = Gate {
            protocol,
            max_message: app.config.ws_max_message_bytes,
            initialised: false,
            state: gate.clone(),
        };
        let heard = last_heard.clone();
        let input = (&mut stream)
            .inspect(move |_| *lock(&heard) = std::time::Instant::now())
            .scan(checks, |checks, read| {
                std::future::ready(checks.admit(read))
            })
            .filter_map(std::future::ready);
        let replies =
            async_graphql::http::WebSocket::from_message_stream(state.api.clone(), input, protocol)
                .on_connection_init(on_init);
        futures_util::pin_mut!(replies);
        // One loop writes both the GraphQL replies and the pings, so a connection needs no queue and
        // no second task between them.
        let keepalive = std::time::Duration::from_millis(app.config.ws_keepalive_ms.max(1));
        let mut tick = tokio::time::interval(keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let init_timeout = tokio::time::sleep(std::time::Duration::from_millis(
            app.config.ws_init_timeout_ms,
        ));
        futures_util::pin_mut!(init_timeout);
        'serve: loop {
            tokio::select! {
                signed = &mut session_rx, if awaiting_session => {
                    awaiting_session = false;
                    session = signed.ok();
                    if session.is_some() {
                        // Signed in: no longer one of its address's anonymous sockets.
                        anonymous = None;
                    }
                }
                () = &mut init_timeout, if session.is_none() => {
                    break Some((4408, "Connection initialisation timeout".into()));
                }
                () = session_ended(&mut session) => {
                    break Some((4401, "UNAUTHENTICATED: the session ended; sign in again".into()));
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
                                if protocol == WebSocketProtocols::GraphQLWS {
                                    forget_if_complete(&gate, &text);
                                }
                                if sink.feed(Message::Text(text.into())).await.is_err() {
                                    break 'serve None;
                                }
                            }
                            Some(WsMessage::Close(code, reason)) => {
                                break 'serve Some((graphql_ws_code(protocol, code), reason));
                            }
                            // The input ended: the client left (the close is then only echoed),
                            // broke the protocol (the gate says how to close), or async-graphql
                            // finished the connection (legacy `connection_error`, or
                            // `connection_terminate`).
                            None => {
                                let verdict = lock(&gate).verdict.take();
                                break 'serve Some(verdict.unwrap_or((1000, String::new())));
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
                        break None;
                    }
                }
                _ = tick.tick() => {
                    if lock(&last_heard).elapsed() > keepalive * MISSED_PINGS {
                        break Some((4408, "idle: keep-alive pings went unanswered".into()));
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break None;
                    }
                }
                _ = app.shutdown.cancelled() => {
                    break Some((1001, "server shutting down".into()));
                }
            }
        }
    };
    if let Some((code, reason)) = &ending {
        // Frames fed before it go out first.
        let _ = sink.send(close(*code, reason)).await;
    }
    app.typing.connection_closed(connection).await;
    // A socket that signed in just before it closed may not have picked its session up yet.
    if session.is_none() {
        session = session_rx.try_recv().ok();
    }
    if let Some((viewer, _)) = session {
        app.presence.disconnected(viewer.user_id, connection);
    }
    if ending.is_some() {
        // The TCP connection is dropped only once the client has answered the close frame (or
        // after a while): dropped with bytes of the client's still unread, it would be reset, and
        // a reset may make the client lose the close frame before reading it.
        let unreadable = lock(&gate).unreadable;
        let _ = tokio::time::timeout(WS_CLOSE_WAIT, async {
            while let Some(Ok(_)) = stream.next().await {}
            if unreadable {
                // Nothing can be read after a failed read (an oversized message): the client's
                // answer cannot be seen, so it is given the whole wait to read the close frame.
                std::future::pending::<()>().await;
            }
        })
        .await;
    }
    drop(anonymous);
}

/// What [`Gate`] shares with the socket's loop.
#[derive(Default)]
struct GateState {
    /// Operations running on a graphql-transport-ws socket (their ids): a `subscribe` reusing one
    /// is refused with 4409. Forgotten when the client completes one, or the server does.
    running: HashSet<String>,
    /// The close frame the client's last message called for, once the gate has ended the input.
    verdict: Option<(u16, String)>,
    /// Whether a read failed on a connection still up (an oversized message): nothing more can be
    /// read from it, the client's answer to the close frame included.
    unreadable: bool,
}

/// Checks what the client sends before async-graphql reads it, for what graphql-transport-ws
/// requires of a client and async-graphql does not check, or answers with other codes: a message
/// that is no protocol message (4400), `subscribe` before `connection_ack` (4401), a `subscribe`
/// with the id of a running operation (4409); and a read that failed (an oversized message, 1009).
/// The legacy graphql-ws protocol keeps async-graphql's own answers.
struct Gate {
    protocol: WebSocketProtocols,
    max_message: usize,
    /// Whether `connection_init` went through. async-graphql reads nothing more until it has
    /// answered it (a refusal closes the socket), so what follows was sent after the ack.
    initialised: bool,
    state: Arc<Mutex<GateState>>,
}

impl Gate {
    /// Takes one read from the socket. Gives `Some(Some(message))` for async-graphql, `Some(None)`
    /// for what it need not see (pings, pongs, close frames), and None to end the input, with the
    /// close frame to send in `verdict` if the client broke the rules.
    fn admit(
        &mut self,
        read: Result<axum::extract::ws::Message, axum::Error>,
    ) -> Option<Option<serde_json::Result<ClientMessage>>> {
        use axum::extract::ws::Message;
        let bytes = match read {
            Ok(Message::Text(text)) => axum::body::Bytes::from(text),
            Ok(Message::Binary(bytes)) => bytes,
            Ok(_) => return Some(None),
            Err(err) => {
                let verdict = self.read_failure(err);
                let mut state = lock(&self.state);
                state.unreadable = verdict.is_some();
                state.verdict = verdict;
                return None;
            }
        };
        let message = match ClientMessage::from_bytes(&bytes) {
            Ok(message) => message,
            // Legacy graphql-ws: async-graphql closes with 1002 and the parser's error.
            Err(err) if self.protocol != WebSocketProtocols::GraphQLWS => {
                return Some(Some(Err(err)));
            }
            Err(err) => return self.end(4400, format!("Invalid message received: {err}")),
        };
        if self.protocol == WebSocketProtocols::GraphQLWS {
            match &message {
                ClientMessage::ConnectionInit { .. } => self.initialised = true,
                ClientMessage::Start { .. } if !self.initialised => {
                    return self.end(4401, "Unauthorized".into());
                }
                // Checking the id takes it (the guard's lock is released before the arm runs).
                ClientMessage::Start { id, .. }
                    if !lock(&self.state).running.insert(id.clone()) =>
                {
                    return self.end(4409, format!("Subscriber for {id} already exists"));
                }
                ClientMessage::Stop { id } => {
                    lock(&self.state).running.remove(id);
                }
                _ => {}
            }
        }
        Some(Some(Ok(message)))
    }

    /// Ends the input; the socket is then closed with `code` and `reason`.
    fn end<T>(&self, code: u16, reason: String) -> Option<T> {
        lock(&self.state).verdict = Some((code, reason));
        None
    }

    /// The close frame owed to a client whose message could not be read; None when the connection
    /// itself is gone (nothing could be sent anyway).
    fn read_failure(&self, err: axum::Error) -> Option<(u16, String)> {
        use tungstenite::error::{Error as WsError, ProtocolError};
        let err = err.into_inner().downcast::<WsError>().ok()?;
        match *err {
            WsError::Capacity(_) => Some((
                1009,
                format!("message too big: at most {} bytes", self.max_message),
            )),
            WsError::Utf8(_) => Some((1007, "a text message was not UTF-8".into())),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
            WsError::Protocol(err) => Some((1002, err.to_string())),
            _ => None,
        }
    }
}

/// Forgets the id of an operation the server completed (graphql-transport-ws), so that the client
/// may use it again.
fn forget_if_complete(gate: &Mutex<GateState>, reply: &str) {
    #[derive(serde::Deserialize)]
    struct Complete {
        id: String,
    }
    if reply.starts_with(r#"{"type":"complete""#)
        && let Ok(complete) = serde_json::from_str::<Complete>(reply)
    {
        lock(gate).running.remove(&complete.id);
    }
}

/// The code graphql-transport-ws gives to what async-graphql closes a socket for with another:
/// a refused `connection_init` (1002 there) is 4403 Forbidden, `subscribe` before the ack (1011
/// there; the gate stops it first) is 4401 Unauthorized. Legacy graphql-ws keeps async-graphql's.
fn graphql_ws_code(protocol: WebSocketProtocols, code: u16) -> u16 {
    match (protocol, code) {
        (WebSocketProtocols::GraphQLWS, 1002) => 4403,
        (WebSocketProtocols::GraphQLWS, 1011) => 4401,
        _ => code,
    }
}

/// Waits until the session a socket signed in with ends (`logout`, `revokeSession`,
/// `changePassword` from elsewhere, on any instance); forever if it has none. The socket is then
/// closed, so a revoked token stops receiving at once, not only on its next request.
pub(crate) async fn session_ended(session: &mut Option<(Viewer, Receiver)>) {
    let Some((viewer, ends)) = session else {
        return std::future::pending().await;
    };
    loop {
        match ends.recv().await {
            Ok(envelope) => {
                if let Event::SessionsEnded { user_id, ended } = &envelope.event
                    && *user_id == viewer.user_id
                    && ended.covers(viewer.token_id)
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

/// Longest reason a close frame may carry: RFC 6455 holds a control frame's payload to 125 bytes,
/// two of which are the code.
const MAX_CLOSE_REASON: usize = 123;

/// A close frame with its code and reason; the reason cut to [`MAX_CLOSE_REASON`] bytes, on a
/// character boundary (a longer one would make the frame invalid, and clients see 1006 instead).
fn close(code: u16, reason: &str) -> axum::extract::ws::Message {
    axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
        code,
        reason: close_reason(reason).into(),
    }))
}

/// `reason`, cut to at most [`MAX_CLOSE_REASON`] bytes of whole characters.
fn close_reason(reason: &str) -> &str {
    &reason[..reason.floor_char_boundary(MAX_CLOSE_REASON)]
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
/// How long a closed socket waits for the client to answer its close frame before the TCP
/// connection is dropped.
const WS_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.app.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_reason_is_cut_to_123_bytes_of_whole_characters() {
        assert_eq!(close_reason("short"), "short");
        let ascii = "x".repeat(500);
        assert_eq!(close_reason(&ascii).len(), MAX_CLOSE_REASON);
        // Two bytes each: 61 whole characters fit, the 62nd would straddle the limit.
        let wide = "é".repeat(100);
        assert_eq!(close_reason(&wide), "é".repeat(61));
        let mixed = format!("a{}", "€".repeat(100));
        let cut = close_reason(&mixed);
        assert!(
            cut.len() <= MAX_CLOSE_REASON && mixed.starts_with(cut),
            "{cut}"
        );
        assert_eq!(cut.len(), 1 + 3 * 40);
    }

    #[test]
    fn graphql_transport_ws_names_async_graphqls_close_codes_its_own_way() {
        let modern = WebSocketProtocols::GraphQLWS;
        let legacy = WebSocketProtocols::SubscriptionsTransportWS;
        assert_eq!(graphql_ws_code(modern, 1002), 4403);
        assert_eq!(graphql_ws_code(modern, 1011), 4401);
        assert_eq!(graphql_ws_code(modern, 4429), 4429);
        assert_eq!(graphql_ws_code(legacy, 1002), 1002);
        assert_eq!(graphql_ws_code(legacy, 1011), 1011);
    }
}
