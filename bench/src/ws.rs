//! graphql-transport-ws client: connect (optionally from a chosen 127.x source address),
//! authenticate with `connection_init`, subscribe to `messageEvents`, and pump frames.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::api::Target;

/// An authenticated graphql-transport-ws connection.
pub type Ws = WebSocketStream<TcpStream>;

const SUBPROTOCOL: &str = "graphql-transport-ws";
pub const MESSAGE_EVENTS: &str = "subscription BenchEvents($conversationId: ID) { messageEvents(conversationId: $conversationId) { kind cursor message { id body createdAt conversation { id } sender { id } } } }";

/// The same, with fields resolved per viewer (`--viewer-fields`).
pub const MESSAGE_EVENTS_PER_VIEWER: &str = "subscription BenchEvents($conversationId: ID) { messageEvents(conversationId: $conversationId) { kind cursor message { id body createdAt isRead conversation { id unreadCount } sender { id } } } }";

/// The plain selection plus each message's reactions (`fanout --reactions`).
pub const MESSAGE_EVENTS_WITH_REACTIONS: &str = "subscription BenchEvents($conversationId: ID) { messageEvents(conversationId: $conversationId) { kind cursor message { id body createdAt conversation { id } sender { id } reactions { emoji count reactedByMe } } } }";

/// Opens WebSocket connections to the target, spreading them over the source addresses.
pub struct Connector {
    target: Arc<Target>,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    timeout: Duration,
}

impl Connector {
    /// `sources` empty means "let the kernel pick", which caps out near 28k connections.
    pub fn new(target: Arc<Target>, sources: Vec<IpAddr>, timeout: Duration) -> Self {
        Self {
            target,
            sources,
            next_source: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Connects, completes the handshake with the graphql-transport-ws subprotocol, and waits
    /// for `connection_ack` to `connection_init {authorization: "Bearer <token>"}`.
    pub async fn connect(&self, token: &str) -> Result<Ws> {
        tokio::time::timeout(self.timeout, self.connect_inner(token))
            .await
            .map_err(|_| anyhow!("timeout: no connection_ack within {:?}", self.timeout))?
    }

    async fn connect_inner(&self, token: &str) -> Result<Ws> {
        let addr = self.target.addr;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .context("socket")?;
        if !self.sources.is_empty() {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len();
            let source = SocketAddr::new(self.sources[i], 0);
            socket
                .bind(source)
                .with_context(|| format!("bind {source}"))?;
        }
        let stream = socket.connect(addr).await.context("connect")?;
        stream.set_nodelay(true).context("nodelay")?;

        let mut request = self
            .target
            .ws_url
            .as_str()
            .into_client_request()
            .context("ws request")?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        // Small buffers: the client holds tens of thousands of these in `idle`.
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0);
        let (mut ws, response) = client_async_with_config(request, stream, Some(config))
            .await
            .context("websocket handshake")?;
        let agreed = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        if agreed != Some(SUBPROTOCOL) {
            bail!("server did not agree to {SUBPROTOCOL} (got {agreed:?})");
        }

        let init = json!({
            "type": "connection_init",
            "payload": { "authorization": format!("Bearer {token}") },
        });
        ws.send(Message::text(init.to_string()))
            .await
            .context("send connection_init")?;
        loop {
            let frame = match ws.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => bail!("closed before ack: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("waiting for connection_ack"),
                None => bail!("connection ended before connection_ack"),
            };
            match serde_json::from_str::<ServerFrame>(&frame) {
                Ok(ServerFrame::ConnectionAck {}) => return Ok(ws),
                Ok(ServerFrame::Ping {}) => send_pong(&mut ws).await?,
                _ => bail!("unexpected frame before connection_ack: {frame}"),
            }
        }
    }
}

/// Starts a `messageEvents` subscription (all of the viewer's conversations when `None`).
pub async fn subscribe(
    ws: &mut Ws,
    query: &str,
    id: &str,
    conversation_id: Option<&str>,
) -> Result<()> {
    let msg = json!({
        "id": id,
        "type": "subscribe",
        "payload": { "query": query, "variables": { "conversationId": conversation_id } },
    });
    ws.send(Message::text(msg.to_string()))
        .await
        .context("send subscribe")
}

async fn send_pong(ws: &mut Ws) -> Result<()> {
    ws.send(Message::text(r#"{"type":"pong"}"#))
        .await
        .context("send pong")
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame {
    ConnectionAck {},
    Ping {},
    Pong {},
    Next { payload: NextPayload },
    Error { payload: Value },
    Complete {},
}

#[derive(Deserialize)]
struct NextPayload {
    data: Option<EventData>,
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize)]
struct EventData {
    #[serde(rename = "messageEvents")]
    message_events: Option<MessageEvent>,
}

/// The part of a `messageEvents` event the workloads look at.
#[derive(Deserialize, Debug)]
pub struct MessageEvent {
    pub kind: String,
    pub message: EventMessage,
}

/// The event's message; `body` carries the bench's sequence number and send time.
#[derive(Deserialize, Debug)]
pub struct EventMessage {
    pub body: Option<String>,
}

/// Why a pump stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PumpEnd {
    /// The workload asked it to stop.
    Stopped,
    /// The server sent `complete` for the subscription.
    Completed,
    /// The server sent `error` for the subscription.
    SubscriptionError(String),
    /// The socket closed (close frame, EOF or I/O error).
    Closed(String),
}

impl PumpEnd {
    /// A short label for error tallies.
    pub fn label(&self) -> String {
        match self {
            PumpEnd::Stopped => "stopped".into(),
            PumpEnd::Completed => "complete".into(),
            PumpEnd::SubscriptionError(_) => "subscription_error".into(),
            PumpEnd::Closed(_) => "closed".into(),
        }
    }
}

/// Reads frames until `stop` flips (or its sender goes away), answering `ping` with `pong`
/// and handing each `messageEvents` event to `on_event`. `next` frames carrying GraphQL errors
/// are counted in `*event_errors`.
pub async fn pump(
    ws: &mut Ws,
    stop: &mut watch::Receiver<bool>,
    event_errors: &mut u64,
    mut on_event: impl FnMut(MessageEvent),
) -> PumpEnd {
    loop {
        if *stop.borrow() {
            return PumpEnd::Stopped;
        }
        let frame = tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() { return PumpEnd::Stopped; }
                continue;
            }
            frame = ws.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return PumpEnd::Closed(frame.map_or_else(
                    || "close".to_string(),
                    |f| format!("close {}: {}", u16::from(f.code), f.reason),
                ));
            }
            // Protocol-level pings are answered by tungstenite itself.
            Some(Ok(_)) => continue,
            Some(Err(e)) => return PumpEnd::Closed(e.to_string()),
            None => return PumpEnd::Closed("eof".into()),
        };
        match serde_json::from_str::<ServerFrame>(&text) {
            Ok(ServerFrame::Next { payload }) => {
                match payload.data.and_then(|d| d.message_events) {
                    Some(event) if payload.errors.is_none() => on_event(event),
                    _ => *event_errors += 1,
                }
            }
            Ok(ServerFrame::Ping {}) => {
                if let Err(e) = send_pong(ws).await {
                    return PumpEnd::Closed(e.to_string());
                }
            }
            Ok(ServerFrame::Pong {} | ServerFrame::ConnectionAck {}) => {}
            Ok(ServerFrame::Error { payload }) => {
                return PumpEnd::SubscriptionError(payload.to_string());
            }
            Ok(ServerFrame::Complete {}) => return PumpEnd::Completed,
            Err(_) => *event_errors += 1,
        }
    }
}

/// After a reader has ignored its socket, reads whatever is there for up to `window`:
/// counts the events that were still delivered and says whether the server closed it.
pub async fn drain(ws: &mut Ws, window: Duration) -> (u64, Option<String>) {
    let mut events = 0;
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return (events, None),
            Ok(frame) => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Next { .. }) => events += 1,
                Ok(ServerFrame::Ping {}) => {
                    let _ = send_pong(ws).await;
                }
                Ok(ServerFrame::Error { payload }) => {
                    return (events, Some(format!("subscription error: {payload}")));
                }
                Ok(ServerFrame::Complete {}) => return (events, Some("complete".into())),
                _ => {}
            },
            Some(Ok(Message::Close(frame))) => {
                return (events, Some(format!("close frame {frame:?}")));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return (events, Some(e.to_string())),
            None => return (events, Some("eof".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_frames_parse_into_events() {
        let raw = r#"{"id":"1","type":"next","payload":{"data":{"messageEvents":{"kind":"CREATED","cursor":"c","message":{"id":"m1","body":"bench:1:2","createdAt":"x","conversation":{"id":"c1"},"sender":{"id":"u"}}}}}}"#;
        let ServerFrame::Next { payload } = serde_json::from_str(raw).unwrap() else {
            panic!("not next");
        };
        let ev = payload.data.unwrap().message_events.unwrap();
        assert_eq!(ev.message.body.as_deref(), Some("bench:1:2"));
    }

    #[test]
    fn ping_with_payload_and_ack_parse() {
        assert!(matches!(
            serde_json::from_str(r#"{"type":"ping","payload":{"a":1}}"#),
            Ok(ServerFrame::Ping {})
        ));
        assert!(matches!(
            serde_json::from_str(r#"{"type":"connection_ack"}"#),
            Ok(ServerFrame::ConnectionAck {})
        ));
    }
}
