//! The test harness: `spawn_app()`, a GraphQL-over-HTTP client and a graphql-transport-ws client.
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use palaver::{Application, Config};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::oneshot};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message as WsMessage, client::IntoClientRequest, http::HeaderValue},
};

/// How long a test waits for something that should arrive.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that should not arrive.
pub const QUIET: Duration = Duration::from_millis(400);

/// A running server and a client for it.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    _stop: Option<oneshot::Sender<()>>,
}

/// A registered user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub username: String,
    pub token: String,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A database of the test's own: a fresh PostgreSQL database when `PALAVER_TEST_DATABASE_URL` is
/// set, otherwise a fresh SQLite file.
pub async fn fresh_database_url() -> String {
    match std::env::var("PALAVER_TEST_DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            use sea_orm::ConnectionTrait;
            let name = unique("palaver_test_");
            let admin = sea_orm::Database::connect(&base)
                .await
                .expect("connect to the test PostgreSQL server");
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create a test database");
            admin.close().await.ok();
            let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
            format!("{prefix}/{name}")
        }
        _ => {
            let path = std::env::temp_dir().join(format!("{}.db", unique("palaver-test-")));
            format!("sqlite://{}?mode=rwc", path.display())
        }
    }
}

/// Configuration for a test server: port 0, its own database, its own event channel.
pub async fn test_config() -> Config {
    let mut config = Config::embedded_defaults();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.database_url = fresh_database_url().await;
    config.redis_url = std::env::var("PALAVER_TEST_REDIS_URL").ok();
    config.redis_channel = unique("palaver-test:");
    config.storage_url = "memory://".into();
    // Tests send in bursts no user would; the rate-limit tests set small limits of their own.
    let unlimited: palaver::limits::Rate = "1000000/1s".parse().unwrap();
    config.send_rate = unlimited;
    config.upload_rate = unlimited;
    config.login_user_rate = unlimited;
    config.login_addr_rate = unlimited;
    config
}

/// Starts the server with the test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config().await).await
}

/// Starts the server with a given configuration.
pub async fn spawn_app_with(config: Config) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        palaver::telemetry::init();
    }
    let app = Application::build(config).await.expect("server builds");
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        http: reqwest::Client::new(),
        _stop: Some(stop),
    }
}

impl TestApp {
    /// A client for a server running elsewhere (another process).
    pub fn at(addr: std::net::SocketAddr) -> Self {
        TestApp {
            addr,
            http: reqwest::Client::new(),
            _stop: None,
        }
    }

    /// The URL of a path on the server; an absolute URL (a `downloadUrl`) is kept as it is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_owned();
        }
        format!("http://{}{path}", self.addr)
    }

    /// `GET /graphql` with a request in the query string (`extensions` and `variables` as JSON,
    /// percent-encoded), as Apollo's persisted query link sends it.
    pub async fn get_graphql(
        &self,
        token: &str,
        accept: &str,
        params: &[(&str, String)],
    ) -> reqwest::Response {
        let query: Vec<String> = params
            .iter()
            .map(|(name, value)| {
                let value = percent_encoding::utf8_percent_encode(
                    value,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                format!("{name}={value}")
            })
            .collect();
        self.http
            .get(self.url(&format!("/graphql?{}", query.join("&"))))
            .bearer_auth(token)
            .header("accept", accept)
            .send()
            .await
            .expect("sent")
    }

    /// `GET /graphql` as a browser asks for a page (GraphiQL).
    pub async fn graphiql_page(&self) -> reqwest::Response {
        self.http
            .get(self.url("/graphql"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap()
    }

    /// Posts a GraphQL request and returns the whole JSON response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        response.json().await.expect("JSON response")
    }

    /// Posts a GraphQL request that must succeed; returns `data`.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self.gql(Some(token), query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response}"
        );
        response["data"].clone()
    }

    /// Registers a user with a unique name.
    pub async fn user(&self, prefix: &str) -> TestUser {
        let username = unique(prefix);
        let response = self
            .gql(
                None,
                "mutation($u: String!) { register(input: {username: $u, password: \"s3cret-pass\"}) { token user { id } } }",
                json!({ "u": username }),
            )
            .await;
        let payload = &response["data"]["register"];
        assert!(payload.is_object(), "register failed: {response}");
        TestUser {
            id: payload["user"]["id"].as_str().unwrap().into(),
            token: payload["token"].as_str().unwrap().into(),
            username,
        }
    }

    /// Sends a text message to a conversation; returns the message.
    pub async fn send(&self, from: &TestUser, conversation_id: &str, body: &str) -> Value {
        self.data(
            &from.token,
            "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id body conversation { id } } }",
            json!({ "c": conversation_id, "b": body }),
        )
        .await["sendMessage"]
            .clone()
    }

    /// Creates a room owned by `owner` with `members`; returns its id.
    pub async fn room(&self, owner: &TestUser, name: &str, members: &[&TestUser]) -> String {
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        self.data(
            &owner.token,
            "mutation($n: String!, $m: [ID!]!) { createRoom(input: {name: $n, memberIds: $m}) { id } }",
            json!({ "n": name, "m": ids }),
        )
        .await["createRoom"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Starts (or reuses) the direct conversation between two users; returns its id.
    pub async fn direct(&self, a: &TestUser, b: &TestUser) -> String {
        let data = self
            .data(
                &a.token,
                "mutation($r: ID!) { sendMessage(input: {recipientId: $r, body: \"hello\"}) { conversation { id } } }",
                json!({ "r": b.id }),
            )
            .await;
        data["sendMessage"]["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A probe for [`WsClient::until_live`] on `messageEvents`: `from` sends a message into
    /// `conversation`; its id, in quotes, is in the event.
    pub async fn probe_message(&self, from: &TestUser, conversation: &str) -> String {
        let sent = self.send(from, conversation, "probe").await;
        format!("\"{}\"", sent["id"].as_str().expect("a message id"))
    }

    /// A probe for [`WsClient::until_live`] on `messageEvents` selections without the message's
    /// id: `from` sends a message with a body of its own into `conversation`; that body, in
    /// quotes, is in the event.
    pub async fn probe_body(&self, from: &TestUser, conversation: &str) -> String {
        let body = unique("probe ");
        self.send(from, conversation, &body).await;
        format!("\"{body}\"")
    }

    /// A probe for [`WsClient::until_live`] on `typing`, in pairs (`cycle` 2): probe `n` has
    /// `who` start typing in `conversation` when `n` is even and stop when it is odd.
    pub async fn probe_typing(&self, who: &TestUser, conversation: &str, n: usize) -> String {
        let typing = n.is_multiple_of(2);
        self.data(
            &who.token,
            "mutation($c: ID!, $t: Boolean!) { setTyping(conversationId: $c, isTyping: $t) }",
            json!({ "c": conversation, "t": typing }),
        )
        .await;
        format!("\"isTyping\":{typing}")
    }

    /// A probe for [`WsClient::until_live`] on `readReceipts` (and `messageEvents`): `from` sends
    /// a message into `conversation` and `reader` reads up to it; the message's id, in quotes,
    /// is in the receipt (and in the message's event).
    pub async fn probe_receipt(
        &self,
        from: &TestUser,
        reader: &TestUser,
        conversation: &str,
    ) -> String {
        let mark = self.probe_message(from, conversation).await;
        let id = mark.trim_matches('"');
        self.data(
            &reader.token,
            "mutation($c: ID!, $m: ID) { markRead(conversationId: $c, upToMessageId: $m) { id } }",
            json!({ "c": conversation, "m": id }),
        )
        .await;
        mark
    }

    /// The number of SQL statements the server has run so far.
    pub async fn statements(&self) -> u64 {
        self.metric("palaver_db_statements_total").await
    }

    /// A counter from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    }

    /// Opens a graphql-transport-ws connection, authenticated with `token` if given.
    pub async fn ws(&self, token: Option<&str>) -> WsClient {
        let payload = match token {
            Some(t) => json!({ "authorization": format!("Bearer {t}") }),
            None => json!({}),
        };
        let mut ws = self.ws_raw("graphql-transport-ws").await;
        ws.send_json(json!({ "type": "connection_init", "payload": payload }))
            .await;
        let ack = ws.next_json().await.expect("a reply to connection_init");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }

    /// Opens a WebSocket speaking the given subprotocol, without initialising it.
    pub async fn ws_raw(&self, protocol: &str) -> WsClient {
        self.ws_connect(protocol, None)
            .await
            .expect("WebSocket connects")
    }

    /// Tries to open a WebSocket speaking the given subprotocol, with `Authorization: Bearer
    /// <token>` on the upgrade request if given; a refused upgrade is the HTTP response.
    pub async fn ws_connect(
        &self,
        protocol: &str,
        bearer: Option<&str>,
    ) -> Result<WsClient, Box<tokio_tungstenite::tungstenite::Error>> {
        let mut request = format!("ws://{}/graphql/ws", self.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
        if let Some(token) = bearer {
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient {
            stream,
            pending: Default::default(),
        })
    }
}

/// Longest close reason RFC 6455 allows (a control frame's 125 bytes, less the code's two).
pub const MAX_CLOSE_REASON: usize = 123;

/// A WebSocket client that speaks graphql-transport-ws (or legacy graphql-ws) as JSON frames.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames of other operations read while waiting for one operation's frame.
    pending: std::collections::VecDeque<Value>,
}

/// What reading the socket produced.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    /// The close code and reason, if the server sent a close frame.
    Closed(Option<(u16, String)>),
}

impl WsClient {
    pub async fn send_json(&mut self, value: Value) {
        self.stream
            .send(WsMessage::Text(value.to_string().into()))
            .await
            .expect("frame sent");
    }

    /// The next frame, answering pings along the way; None on timeout.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match msg {
                None => return Some(Frame::Closed(None)),
                Some(Err(_)) => return Some(Frame::Closed(None)),
                Some(Ok(WsMessage::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON frame");
                    if value["type"] == "ping" {
                        self.send_json(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Some(Frame::Json(value));
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Some(Frame::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next JSON frame within the wait, or None.
    pub async fn next_json(&mut self) -> Option<Value> {
        match self.next_frame(WAIT).await? {
            Frame::Json(v) => Some(v),
            Frame::Closed(_) => None,
        }
    }

    /// Starts an operation with the given id.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send_json(json!({
            "id": id, "type": "subscribe",
            "payload": { "query": query, "variables": variables }
        }))
        .await;
    }

    /// The payload of the next `next` message for operation `id`; panics on anything else.
    pub async fn next_payload(&mut self, id: &str) -> Value {
        let frame = match self.pending.iter().position(|f| f["id"] == id) {
            Some(i) => self.pending.remove(i).unwrap(),
            None => loop {
                let frame = self.next_json().await.expect("an event in time");
                if frame["id"] == id {
                    break frame;
                }
                self.pending.push_back(frame);
            },
        };
        assert_eq!(frame["type"], "next", "unexpected frame {frame}");
        frame["payload"].clone()
    }

    /// The data of the next event for operation `id`, which must carry no errors.
    pub async fn next_data(&mut self, id: &str) -> Value {
        let payload = self.next_payload(id).await;
        assert!(
            payload.get("errors").is_none(),
            "errors in event: {payload}"
        );
        payload["data"].clone()
    }

    /// The `extensions.code` of the error that ends operation `id`.
    pub async fn next_error_code(&mut self, id: &str) -> String {
        let payload = self.next_payload(id).await;
        payload["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error, got {payload}"))
            .to_owned()
    }

    /// Sends any WebSocket message, control and raw frames included.
    pub async fn send_message(&mut self, message: WsMessage) {
        self.stream.send(message).await.expect("frame sent");
    }

    /// Sends a text frame as it is (not necessarily JSON).
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(WsMessage::Text(text.into()))
            .await
            .expect("frame sent");
    }

    /// Asserts that the server closes the socket next (other operations' frames may come first)
    /// with a close frame of `code` whose reason fits RFC 6455; returns the reason.
    pub async fn expect_close(&mut self, code: u16) -> String {
        loop {
            match self.next_frame(WAIT).await {
                Some(Frame::Closed(Some((got, reason)))) => {
                    assert_eq!(got, code, "closed with {got} {reason:?}, expected {code}");
                    assert!(
                        reason.len() <= MAX_CLOSE_REASON,
                        "a {}-byte close reason: {reason}",
                        reason.len()
                    );
                    return reason;
                }
                Some(Frame::Json(_)) => continue,
                other => panic!("expected a close frame with {code}, got {other:?}"),
            }
        }
    }

    /// Asserts that `connection_init` was refused: the socket closes with 4403 (Forbidden) and a
    /// reason naming the error code.
    pub async fn expect_refused_init(&mut self) {
        let reason = self.expect_close(4403).await;
        assert!(reason.starts_with("UNAUTHENTICATED"), "{reason}");
    }

    /// Acts until each of the operations `ids` has received an event the acts cause: its
    /// subscription is then registered, and everything published from then on reaches it. (The
    /// server registers a subscription some time after `subscribe` has sent it; acting at once
    /// could pass it by.) See [`until_all_live`], which this is for one socket.
    pub async fn until_live(
        &mut self,
        ids: &[&str],
        cycle: usize,
        probe: impl AsyncFnMut(usize) -> String,
    ) -> usize {
        until_all_live(&mut [(self, ids)], cycle, probe).await
    }

    /// Asserts that the next frame on the socket is an event of operation `id` whose compact JSON
    /// contains `mark`, and returns its data. A negative check ends with this: after the action
    /// that must not reach this socket, a marker event that must reach it is caused, and if
    /// anything the action caused arrives, however late, it arrives first.
    pub async fn expect_next_event(&mut self, id: &str, mark: &str) -> Value {
        self.expect_markers(&[(id, mark)]).await.remove(0)
    }

    /// Like [`Self::expect_next_event`] for one marker that reaches several operations: the next
    /// frames are exactly those events, one for each `(id, mark)`, in any order (each
    /// subscription has its own queue). Returns their data in the order given.
    pub async fn expect_markers(&mut self, markers: &[(&str, &str)]) -> Vec<Value> {
        self.drop_completions();
        assert!(self.pending.is_empty(), "unread frames: {:?}", self.pending);
        let mut found: Vec<Option<Value>> = vec![None; markers.len()];
        while found.iter().any(Option::is_none) {
            let frame = self.next_json().await.expect("the marker event in time");
            if frame["type"] == "complete" && !markers.iter().any(|(id, _)| frame["id"] == *id) {
                // The end of an operation done with earlier.
                continue;
            }
            let text = frame["payload"].to_string();
            let slot = markers.iter().enumerate().position(|(i, (id, mark))| {
                found[i].is_none()
                    && frame["type"] == "next"
                    && frame["id"] == *id
                    && text.contains(mark)
            });
            let slot = slot
                .unwrap_or_else(|| panic!("expected only the markers {markers:?}, got {frame}"));
            found[slot] = Some(frame["payload"]["data"].clone());
        }
        found.into_iter().flatten().collect()
    }

    /// Forgets the set-aside `complete` frames of operations done with earlier.
    fn drop_completions(&mut self) {
        self.pending.retain(|frame| frame["type"] != "complete");
    }

    /// Asserts that nothing arrives for a short while.
    pub async fn expect_silence(&mut self) {
        assert!(self.pending.is_empty(), "unread frames: {:?}", self.pending);
        if let Some(frame) = self.next_frame(QUIET).await {
            panic!("expected nothing, got {frame:?}");
        }
    }
}

/// Acts until each socket's operations have received an event the acts cause: their
/// subscriptions are then registered, and everything published from then on reaches them.
///
/// `probe(n)` acts for the n-th time (from 0) and returns a piece of the compact JSON that event
/// carries (a message id in quotes, `"isTyping":false`). Probing stops only after a probe `n`
/// with `(n + 1) % cycle == 0`, so probes that come in pairs (start typing, stop typing) leave
/// things as they found them. Every operation is then read up to the last probe's event: once an
/// operation has received one probe's event it receives every later one, in order, so none is
/// left for the test to read. Each operation that receives the probes' events must be listed.
/// Returns how many probes it took.
pub async fn until_all_live(
    sockets: &mut [(&mut WsClient, &[&str])],
    cycle: usize,
    mut probe: impl AsyncFnMut(usize) -> String,
) -> usize {
    use std::collections::HashMap;
    for (ws, _) in sockets.iter_mut() {
        ws.drop_completions();
        assert!(ws.pending.is_empty(), "unread frames: {:?}", ws.pending);
    }
    let mut marks: Vec<String> = Vec::new();
    // For each socket, the newest probe each of its operations has received.
    let mut latest: Vec<HashMap<String, usize>> = vec![HashMap::new(); sockets.len()];
    let live = |ids: &[&str], latest: &HashMap<String, usize>| {
        ids.iter().all(|id| latest.contains_key(*id))
    };
    loop {
        let all_live = sockets
            .iter()
            .zip(&latest)
            .all(|((_, ids), latest)| live(ids, latest));
        if all_live && marks.len().is_multiple_of(cycle) {
            break;
        }
        marks.push(probe(marks.len()).await);
        for ((ws, ids), latest) in sockets.iter_mut().zip(&mut latest) {
            while !live(ids, latest) {
                let Some(frame) = ws.next_frame(QUIET).await else {
                    break;
                };
                note_probe(frame, ids, &marks, latest);
            }
        }
    }
    let last = marks.len() - 1;
    for ((ws, ids), latest) in sockets.iter_mut().zip(&mut latest) {
        while ids.iter().any(|id| latest[*id] != last) {
            let frame = ws.next_frame(WAIT).await;
            let frame = frame.expect("every probe's event after the first, in time");
            note_probe(frame, ids, &marks, latest);
        }
    }
    marks.len()
}

/// Records which probe `frame` is the event of, in `latest`; panics on any other frame.
fn note_probe(
    frame: Frame,
    ids: &[&str],
    marks: &[String],
    latest: &mut std::collections::HashMap<String, usize>,
) {
    let Frame::Json(frame) = frame else {
        panic!("the socket closed while waiting for subscriptions to be live: {frame:?}");
    };
    let id = frame["id"].as_str().unwrap_or_default().to_owned();
    if frame["type"] == "complete" && !ids.contains(&id.as_str()) {
        // The end of an operation done with earlier.
        return;
    }
    assert!(
        frame["type"] == "next" && ids.contains(&id.as_str()),
        "unexpected frame while waiting for subscriptions to be live: {frame}"
    );
    let text = frame["payload"].to_string();
    // The first event may be any probe's (an earlier probe's event may have been slow); each
    // later one is the next probe whose mark it carries.
    let probe = match latest.get(&id) {
        None => marks.iter().rposition(|mark| text.contains(mark.as_str())),
        Some(&previous) => (previous + 1..marks.len()).find(|&n| text.contains(&marks[n])),
    };
    let probe = probe.unwrap_or_else(|| panic!("not a probe's event: {frame}"));
    latest.insert(id, probe);
}

/// A probe for [`WsClient::until_live`] on `presence`, in pairs (`cycle` 2): probe `n` opens a
/// connection for its user when `n` is even (ONLINE at once) and closes it when `n` is odd
/// (OFFLINE once the server's grace period is over). Nobody else's presence may change while it
/// probes: its marks are the statuses alone.
pub struct PresenceProbe {
    user: TestUser,
    connection: Option<WsClient>,
}

impl PresenceProbe {
    pub fn new(user: &TestUser) -> Self {
        Self {
            user: user.clone(),
            connection: None,
        }
    }

    pub async fn probe(&mut self, app: &TestApp, n: usize) -> String {
        if n.is_multiple_of(2) {
            self.connection = Some(app.ws(Some(&self.user.token)).await);
            "\"status\":\"ONLINE\"".into()
        } else {
            self.connection = None;
            "\"status\":\"OFFLINE\"".into()
        }
    }
}

/// The `extensions.code` of the first error, if any.
pub fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// What `sendMessage` returns in the file tests.
pub const FILE_MESSAGE_FIELDS: &str =
    "id kind body attachment { filename contentType size sha256 downloadUrl }";

/// A fresh directory for a test's file store, and the `STORAGE_URL` naming it.
pub fn temp_storage() -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(unique("palaver-files-"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("file://{}", dir.display());
    (dir, url)
}

/// How many files (not directories) lie under `dir`, at any depth.
pub fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() { count_files(&path) } else { 1 }
        })
        .sum()
}

/// Lower-case hex SHA-256, as the server reports it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl TestApp {
    /// Sends `sendMessage` as a GraphQL multipart request (as Apollo's upload link and `curl -F`
    /// do), with `input` plus the file; returns the HTTP status and the JSON response.
    pub async fn upload(
        &self,
        token: &str,
        input: Value,
        filename: &str,
        bytes: Vec<u8>,
    ) -> (u16, Value) {
        let mut input = input;
        input["file"] = Value::Null;
        let operations = json!({
            "query": format!(
                "mutation($input: SendMessageInput!) {{ sendMessage(input: $input) {{ {FILE_MESSAGE_FIELDS} }} }}"
            ),
            "variables": { "input": input },
        });
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", json!({ "0": ["variables.input.file"] }).to_string())
            .part(
                "0",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name(filename.to_owned())
                    .mime_str("application/octet-stream")
                    .unwrap(),
            );
        let response = self
            .http
            .post(self.url("/graphql"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .expect("upload sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON response"))
    }

    /// Uploads a file to a conversation, which must succeed; returns the message.
    pub async fn send_file(
        &self,
        from: &TestUser,
        conversation_id: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> Value {
        let (_, response) = self
            .upload(
                &from.token,
                json!({ "conversationId": conversation_id }),
                filename,
                bytes,
            )
            .await;
        assert!(
            response.get("errors").is_none(),
            "upload of {filename} failed: {response}"
        );
        response["data"]["sendMessage"].clone()
    }

    /// `GET` (or another method) on a path or a relative URL, with an optional bearer token.
    pub async fn fetch(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }
}

/// A Redis server of the test's own, on a free port, that the test can stop, restart, freeze
/// (it still accepts connections but answers nothing) and thaw.
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts one, or None if there is no `redis-server` binary.
    pub fn start(port: u16) -> Option<Self> {
        let child = Self::spawn(port)?;
        Some(Self {
            port,
            child: Some(child),
        })
    }

    /// Starts one; a test that cannot run without Redis fails here, saying why.
    pub fn start_or_fail() -> Self {
        Self::start(free_port()).expect("this test starts its own Redis: install redis-server")
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(port: u16) -> Option<std::process::Child> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        // Ready once it accepts connections.
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(child)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(Self::spawn(self.port).expect("redis restarts"));
    }

    /// Sends the process a signal (`STOP` freezes it, `CONT` thaws it).
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis is running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        // SIGKILL ends a frozen server too.
        self.stop();
    }
}

/// A TCP port nothing listens on (at the moment of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Installs a test folder's Node packages from its lock file when `package` is missing, so that
/// `cargo test` works on a fresh machine (Node.js and npm's registry are there; nothing else is).
pub async fn npm_ci(dir: &std::path::Path, package: &str) {
    if dir.join("node_modules").join(package).exists() {
        return;
    }
    let status = tokio::process::Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .await
        .expect("npm runs (install Node.js and npm)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// Makes sure Debian's Chromium is at `/usr/bin/chromium` for the browser tests, installing it
/// with apt-get when it is missing (browser downloads by npm packages do not work here).
pub async fn debian_chromium() {
    const CHROMIUM: &str = "/usr/bin/chromium";
    if std::path::Path::new(CHROMIUM).exists() {
        return;
    }
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "chromium"][..],
    ] {
        let status = tokio::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .await
            .expect("apt-get runs (install Debian's chromium package)");
        assert!(status.success(), "apt-get {args:?} failed");
    }
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "no {CHROMIUM} after installing it"
    );
}

/// The shared Redis of the test run, or one of the test's own (kept running while the returned
/// handle lives).
pub fn redis_for_test() -> (String, Option<OwnRedis>) {
    match std::env::var("PALAVER_TEST_REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let own = OwnRedis::start_or_fail();
            (own.url(), Some(own))
        }
    }
}

/// The number in a public id (`usr_12` → 12), for tests that reach the database directly.
pub fn number(id: &str) -> i64 {
    id.rsplit('_').next().unwrap().parse().unwrap()
}
