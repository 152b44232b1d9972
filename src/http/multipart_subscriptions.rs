//! Subscriptions over HTTP, for clients that cannot open a WebSocket: Apollo's multipart
//! subscription protocol, which Apollo Client's `HttpLink` speaks with no extra link. A `POST` (or
//! `GET`) of a subscription with `Accept: multipart/mixed;subscriptionSpec="1.0"` is answered
//! with a `multipart/mixed` body that stays open: one JSON part per event, as
//! `{"payload": <the GraphQL response>}`, a `{}` part every `PALAVER_HTTP_SUBSCRIPTION_HEARTBEAT_MS`
//! so that proxies and the client see the stream is alive, and a `{"payload": null, "errors": […]}`
//! part when the server ends it (the session ended, the server is shutting down).
//!
//! It is a WebSocket with one subscription as far as limits and presence go: the caller is the
//! `Authorization` header's user, each stream counts as one of their `PALAVER_MAX_WS_PER_USER`
//! connections and keeps them ONLINE, and `since` resumes as it does over the WebSocket (the
//! subscription resolvers are the same).
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use async_graphql::{Executor, Request};
use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;

use crate::{
    AppState,
    auth::{Auth, Viewer},
    chat::typing::ConnectionId,
    events::Topic,
    files::RequestOrigin,
    graphql::Api,
    http::graphql_over_http::{self, MediaType},
    limits::ClientAddr,
};

/// The media type of the answer; the boundary is always `graphql`.
const CONTENT_TYPE: &str = r#"multipart/mixed;boundary="graphql";subscriptionSpec="1.0""#;
/// Each part begins with the delimiter, CRLF `--graphql`. A part is written together with the
/// delimiter that ends it, because a multipart reader (Apollo Client's among them) hands a part on
/// only once it has seen that delimiter: the first delimiter goes out alone, at the start.
const FIRST_DELIMITER: &[u8] = b"\r\n--graphql";
const PART_HEADERS: &[u8] = b"\r\ncontent-type: application/json; charset=utf-8\r\n\r\n";
const CLOSE: &[u8] = b"--\r\n";

/// Whether the client accepts a multipart subscription answer (Apollo Client sends
/// `multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json`).
pub fn accepted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut params = range.split(';').map(str::trim);
            params
                .next()
                .is_some_and(|media| media.eq_ignore_ascii_case("multipart/mixed"))
                && params.any(|param| {
                    param.split_once('=').is_some_and(|(name, value)| {
                        name.trim().eq_ignore_ascii_case("subscriptionSpec")
                            && value.trim().trim_matches('"') == "1.0"
                    })
                })
        })
}

/// One part, with the delimiter that ends it.
fn part(json: &[u8]) -> Bytes {
    let mut bytes = Vec::with_capacity(PART_HEADERS.len() + json.len() + FIRST_DELIMITER.len());
    bytes.extend_from_slice(PART_HEADERS);
    bytes.extend_from_slice(json);
    bytes.extend_from_slice(FIRST_DELIMITER);
    bytes.into()
}

/// A part saying the server ended the subscription (`payload: null`), with a coded error.
fn ended(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({
        "payload": null,
        "errors": [{ "message": message, "extensions": { "code": code } }],
    });
    part(body.to_string().as_bytes())
}

/// Keeps the user ONLINE, and one of their connections taken, while the stream lives.
struct Held {
    app: AppState,
    user_id: i64,
    connection: ConnectionId,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.app
            .presence
            .disconnected(self.user_id, self.connection);
    }
}

/// Who asks for a stream, and how a refusal of it is answered.
pub(crate) struct Caller {
    /// The `Authorization` header's user (or none).
    pub auth: Auth,
    pub peer: SocketAddr,
    /// The stream's own connection, for presence and the per-user limit.
    pub connection: ConnectionId,
    /// Where the request came in, for absolute links (`downloadUrl`) in events.
    pub origin: Option<RequestOrigin>,
    /// The media type a refusal made before the stream starts is sent in (`Accept`).
    pub media: MediaType,
}

/// Runs a subscription request and answers it as a multipart stream; ends when the subscription
/// does, the client goes away (the body is dropped), the caller's session ends, or the server
/// shuts down.
pub(crate) async fn respond(app: AppState, api: Api, caller: Caller, request: Request) -> Response {
    let Caller {
        auth,
        peer,
        connection,
        origin,
        media,
    } = caller;
    let mut data = async_graphql::Data::default();
    let mut held = None;
    let mut session: Option<(Viewer, crate::events::Receiver)> = None;
    if let Auth::User(viewer) = auth {
        let open = app.presence.open_connections(viewer.user_id).await;
        if open >= app.config.max_ws_per_user {
            return too_many(&app, media);
        }
        session = Some((viewer, app.bus.subscribe(Topic::Sessions, viewer.user_id)));
        app.presence.connected(viewer.user_id, connection).await;
        held = Some(Held {
            app: app.clone(),
            user_id: viewer.user_id,
            connection,
        });
    }
    // Anonymous or with a dead token: the resolver answers UNAUTHENTICATED in the first part, and
    // the stream ends there.
    data.insert(auth);
    data.insert(ClientAddr(peer.ip()));
    if let Some(origin) = origin {
        data.insert(origin);
    }
    let mut responses = api.execute_stream(request, Some(Arc::new(data)));
    let heartbeat =
        std::time::Duration::from_millis(app.config.http_subscription_heartbeat_ms.max(1));
    let shutdown = app.shutdown.clone();
    let body = async_stream::stream! {
        let _held = held;
        yield Ok::<_, Infallible>(Bytes::from_static(FIRST_DELIMITER));
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                response = responses.next() => match response {
                    Some(response) => {
                        let payload = serde_json::json!({ "payload": response });
                        yield Ok(part(payload.to_string().as_bytes()));
                    }
                    None => break,
                },
                _ = tick.tick() => yield Ok(part(b"{}")),
                () = super::session_ended(&mut session) => {
                    yield Ok(ended("UNAUTHENTICATED", "the session ended; sign in again"));
                    break;
                }
                () = shutdown.cancelled() => {
                    yield Ok(ended("SHUTTING_DOWN", "the server is shutting down; subscribe again"));
                    break;
                }
            }
        }
        yield Ok(Bytes::from_static(CLOSE));
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The refusal of a stream past `PALAVER_MAX_WS_PER_USER`, as a WebSocket past it is refused: a
/// request error, in the negotiated media type.
fn too_many(app: &AppState, media: MediaType) -> Response {
    let mut response = graphql_over_http::error_response_with(
        media,
        StatusCode::TOO_MANY_REQUESTS,
        serde_json::json!({
            "message": format!(
                "at most {} open connections per user; close one first",
                app.config.max_ws_per_user
            ),
            "extensions": { "code": "RATE_LIMITED", "retryAfter": 5 },
        }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("a header"),
        );
        accepted(&headers)
    }

    #[test]
    fn apollo_clients_accept_headers_ask_for_multipart_subscriptions() {
        assert!(accept(
            r#"multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json"#
        ));
        assert!(accept(r#"multipart/mixed; subscriptionSpec="1.0""#));
        assert!(!accept("application/json"));
        assert!(!accept(
            "multipart/mixed;deferSpec=20220824,application/json"
        ));
        assert!(!accept(r#"multipart/mixed;subscriptionSpec="2.0""#));
    }
}
