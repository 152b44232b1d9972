//! The server under test as seen over HTTP: where it is, and the contract's queries and mutations.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where the server lives, resolved once; every connection the tool makes goes to `addr`.
#[derive(Debug, Clone)]
pub struct Target {
    /// The base URL as given, without a trailing slash.
    pub base: String,
    /// `…/graphql`, for HTTP POSTs.
    pub graphql_url: String,
    /// `ws://…/graphql/ws`, for subscriptions.
    pub ws_url: String,
    /// `…/metrics`, the server's counters in Prometheus' text format.
    pub metrics_url: String,
    /// The resolved loopback address of the server.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `http://host:port[/prefix]` and refuses anything that does not resolve to loopback:
    /// this tool generates load and must never be aimed at another machine.
    pub async fn resolve(url: &str) -> Result<Self> {
        let base = url.trim_end_matches('/');
        let rest = base.strip_prefix("http://").context(
            "--url must start with http:// (the tool speaks plain HTTP to loopback only)",
        )?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            bail!("--url has no usable host: {url}");
        }
        let with_port = if has_port(authority) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .collect();
        let Some(&addr) = addrs.first() else {
            bail!("{with_port} resolved to no address");
        };
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!(
                "{authority} resolves to {bad}, which is not loopback; refusing to generate load"
            );
        }
        Ok(Self {
            base: base.to_string(),
            graphql_url: format!("http://{authority}{prefix}/graphql"),
            ws_url: format!("ws://{authority}{prefix}/graphql/ws"),
            metrics_url: format!("http://{authority}{prefix}/metrics"),
            addr,
        })
    }
}

fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        // `[::1]` alone has colons but no port.
        Some(i) => !authority[i..].contains(']'),
        None => false,
    }
}

/// Checks that every `--source-ips` entry is a loopback address.
pub fn parse_source_ips(list: &[String]) -> Result<Vec<IpAddr>> {
    list.iter()
        .map(|s| {
            let ip: IpAddr = s
                .trim()
                .parse()
                .with_context(|| format!("bad --source-ips entry {s:?}"))?;
            if !ip.is_loopback() {
                bail!("--source-ips entry {ip} is not a loopback address");
            }
            Ok(ip)
        })
        .collect()
}

/// A GraphQL request that failed, reduced to what the reports count: a code and a message.
///
/// `code` is the error's `extensions.code` when the server gave one, otherwise a tool-made
/// `HTTP_<status>`, `TRANSPORT`, `TIMEOUT`, `BAD_RESPONSE` or `GRAPHQL`.
#[derive(Debug, Clone)]
pub struct GqlError {
    pub code: String,
    pub message: String,
}

impl GqlError {
    fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for GqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for GqlError {}

#[derive(Deserialize)]
struct RawResponse {
    data: Option<Value>,
    #[serde(default)]
    errors: Vec<RawError>,
}

#[derive(Deserialize)]
struct RawError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    extensions: Option<Value>,
}

impl From<RawError> for GqlError {
    fn from(e: RawError) -> Self {
        let code = e
            .extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("GRAPHQL");
        GqlError::new(code, e.message)
    }
}

/// A response whose `data` may be partial: batched mutations report each alias separately.
pub struct Partial {
    pub data: Value,
    pub errors: Vec<GqlError>,
}

/// A user the tool registered (or logged in) and can act as.
#[derive(Debug, Clone)]
pub struct BenchUser {
    pub id: String,
    pub token: String,
}

/// The conversation the server put a first direct message in.
#[derive(Debug, Clone)]
pub struct Sent {
    pub conversation_id: String,
}

/// One page of `messages`.
#[derive(Debug, Clone)]
pub struct Page {
    pub count: usize,
    pub has_next: bool,
    pub end_cursor: Option<String>,
}

const REGISTER: &str = "mutation BenchRegister($input: RegisterInput!) { register(input: $input) { token user { id } } }";
const LOGIN: &str = "mutation BenchLogin($username: String!, $password: String!) { login(username: $username, password: $password) { token user { id } } }";
const CREATE_ROOM: &str =
    "mutation BenchCreateRoom($input: CreateRoomInput!) { createRoom(input: $input) { id } }";
const REACT: &str =
    "mutation BenchReact($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }";
const SEND: &str = "mutation BenchSend($input: SendMessageInput!) { sendMessage(input: $input) { id conversation { id } } }";
const MESSAGES: &str = "query BenchPage($conversationId: ID!, $first: Int, $after: String) { messages(conversationId: $conversationId, first: $first, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";

/// The password every bench user gets: long enough and mixed, as the contract demands.
pub const PASSWORD: &str = "bench-Pass-123";

/// HTTP GraphQL client for the contract's operations. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    endpoint: String,
    metrics_url: String,
}

impl Api {
    /// Builds a client that never goes through a proxy (the target is loopback).
    pub fn new(target: &Target, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(4096)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            endpoint: target.graphql_url.clone(),
            metrics_url: target.metrics_url.clone(),
        })
    }

    /// The server's `/metrics` page.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self
            .http
            .get(&self.metrics_url)
            .send()
            .await
            .with_context(|| format!("GET {}", self.metrics_url))?;
        if !resp.status().is_success() {
            bail!("GET {}: HTTP {}", self.metrics_url, resp.status());
        }
        Ok(resp.text().await?)
    }

    /// Runs one operation; GraphQL errors come back in `Partial::errors` beside any data.
    pub async fn execute_partial(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<Partial, GqlError> {
        let mut req = self
            .http
            .post(&self.endpoint)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| {
            let code = if e.is_timeout() {
                "TIMEOUT"
            } else {
                "TRANSPORT"
            };
            GqlError::new(code, with_sources(&e))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| GqlError::new("TRANSPORT", e.to_string()))?;
        let parsed: RawResponse = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(_) if !status.is_success() => {
                return Err(GqlError::new(
                    format!("HTTP_{}", status.as_u16()),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                ));
            }
            Err(e) => return Err(GqlError::new("BAD_RESPONSE", e.to_string())),
        };
        Ok(Partial {
            data: parsed.data.unwrap_or(Value::Null),
            errors: parsed.errors.into_iter().map(GqlError::from).collect(),
        })
    }

    /// Runs one operation and fails on the first GraphQL error.
    pub async fn execute(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<Value, GqlError> {
        let mut partial = self.execute_partial(token, query, variables).await?;
        if !partial.errors.is_empty() {
            return Err(partial.errors.swap_remove(0));
        }
        Ok(partial.data)
    }

    /// Registers `username`; if it already exists (a rerun with the same `--run-id`), logs in.
    pub async fn register_or_login(&self, username: &str) -> Result<BenchUser, GqlError> {
        let vars = json!({ "input": {
            "username": username, "password": PASSWORD, "displayName": format!("Bench {username}")
        }});
        let data = match self.execute(None, REGISTER, vars).await {
            Ok(data) => data,
            Err(e) if e.code == "CONFLICT" => {
                let vars = json!({ "username": username, "password": PASSWORD });
                self.execute(None, LOGIN, vars).await?
            }
            Err(e) => return Err(e),
        };
        let auth = data
            .get("register")
            .or_else(|| data.get("login"))
            .ok_or_else(|| GqlError::new("BAD_RESPONSE", "no register/login field"))?;
        Ok(BenchUser {
            id: str_at(auth, &["user", "id"])?,
            token: str_at(auth, &["token"])?,
        })
    }

    /// `createRoom` with the given members; returns the room's conversation id.
    pub async fn create_room(
        &self,
        token: &str,
        name: &str,
        member_ids: &[String],
    ) -> Result<String, GqlError> {
        let vars = json!({ "input": { "name": name, "memberIds": member_ids } });
        let data = self.execute(Some(token), CREATE_ROOM, vars).await?;
        str_at(&data, &["createRoom", "id"])
    }

    /// `addMember` for each user, 20 to a request (the default root-field limit). A room starts
    /// with at most 1,000 members; bigger ones are grown this way.
    pub async fn add_members(
        &self,
        token: &str,
        room: &str,
        user_ids: &[String],
    ) -> Result<(), GqlError> {
        for chunk in user_ids.chunks(20) {
            let mut defs = String::from("$r: ID!");
            let mut fields = String::new();
            let mut vars = serde_json::Map::new();
            vars.insert("r".into(), json!(room));
            for (i, id) in chunk.iter().enumerate() {
                defs.push_str(&format!(", $u{i}: ID!"));
                fields.push_str(&format!(
                    "a{i}: addMember(roomId: $r, userId: $u{i}) {{ id }} "
                ));
                vars.insert(format!("u{i}"), json!(id));
            }
            let query = format!("mutation BenchAddMembers({defs}) {{ {fields}}}");
            self.execute(Some(token), &query, Value::Object(vars))
                .await?;
        }
        Ok(())
    }

    /// First message to a user: opens (or finds) the direct conversation.
    pub async fn send_direct(
        &self,
        token: &str,
        recipient_id: &str,
        body: &str,
    ) -> Result<Sent, GqlError> {
        let vars = json!({ "input": { "recipientId": recipient_id, "body": body } });
        let data = self.execute(Some(token), SEND, vars).await?;
        Ok(Sent {
            conversation_id: str_at(&data, &["sendMessage", "conversation", "id"])?,
        })
    }

    /// A message into a known conversation, idempotent on `client_message_id`.
    pub async fn send(
        &self,
        token: &str,
        conversation_id: &str,
        body: &str,
        client_message_id: &str,
    ) -> Result<String, GqlError> {
        let vars = json!({ "input": {
            "conversationId": conversation_id, "body": body, "clientMessageId": client_message_id
        }});
        let data = self.execute(Some(token), SEND, vars).await?;
        str_at(&data, &["sendMessage", "id"])
    }

    /// Adds the user's reaction to a message.
    pub async fn add_reaction(
        &self,
        token: &str,
        message_id: &str,
        emoji: &str,
    ) -> Result<(), GqlError> {
        let vars = json!({ "m": message_id, "e": emoji });
        self.execute(Some(token), REACT, vars).await.map(|_| ())
    }

    /// Several `sendMessage`s in one request (aliases), for seeding. Returns how many
    /// succeeded and the errors of those that did not.
    pub async fn send_batch(
        &self,
        token: &str,
        conversation_id: &str,
        messages: &[(String, String)],
    ) -> Result<(usize, Vec<GqlError>), GqlError> {
        let mut decl = String::from("$c: ID!");
        let mut body = String::new();
        let mut vars = serde_json::Map::new();
        vars.insert("c".into(), Value::from(conversation_id));
        for (i, (text, client_id)) in messages.iter().enumerate() {
            decl.push_str(&format!(", $b{i}: String!, $k{i}: String!"));
            body.push_str(&format!(
                " m{i}: sendMessage(input: {{conversationId: $c, body: $b{i}, clientMessageId: $k{i}}}) {{ id }}"
            ));
            vars.insert(format!("b{i}"), Value::from(text.as_str()));
            vars.insert(format!("k{i}"), Value::from(client_id.as_str()));
        }
        let query = format!("mutation BenchSeed({decl}) {{{body} }}");
        let partial = self
            .execute_partial(Some(token), &query, Value::Object(vars))
            .await?;
        let ok = (0..messages.len())
            .filter(|i| {
                partial
                    .data
                    .get(format!("m{i}"))
                    .is_some_and(|v| !v.is_null())
            })
            .count();
        Ok((ok, partial.errors))
    }

    /// One page of a conversation's history, oldest first, after `after`.
    pub async fn messages_page(
        &self,
        token: &str,
        conversation_id: &str,
        first: u32,
        after: Option<&str>,
    ) -> Result<Page, GqlError> {
        let vars = json!({ "conversationId": conversation_id, "first": first, "after": after });
        let data = self.execute(Some(token), MESSAGES, vars).await?;
        let conn = data
            .get("messages")
            .ok_or_else(|| GqlError::new("BAD_RESPONSE", "no messages field"))?;
        let count = conn
            .get("edges")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let info = conn.get("pageInfo");
        Ok(Page {
            count,
            has_next: info
                .and_then(|i| i.get("hasNextPage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            end_cursor: info
                .and_then(|i| i.get("endCursor"))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// An error's message followed by its causes: reqwest's own message omits the I/O error.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    msg
}

fn str_at(value: &Value, path: &[&str]) -> Result<String, GqlError> {
    let mut v = value;
    for key in path {
        v = v
            .get(key)
            .ok_or_else(|| GqlError::new("BAD_RESPONSE", format!("missing {}", path.join("."))))?;
    }
    v.as_str().map(str::to_string).ok_or_else(|| {
        GqlError::new(
            "BAD_RESPONSE",
            format!("{} is not a string", path.join(".")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_urls_resolve_and_derive_the_websocket_url() {
        let t = Target::resolve("http://127.0.0.1:8000/").await.unwrap();
        assert_eq!(t.graphql_url, "http://127.0.0.1:8000/graphql");
        assert_eq!(t.ws_url, "ws://127.0.0.1:8000/graphql/ws");
        assert!(t.addr.ip().is_loopback());
    }

    #[tokio::test]
    async fn non_loopback_and_tls_urls_are_refused() {
        assert!(Target::resolve("http://10.0.0.1:8000").await.is_err());
        assert!(Target::resolve("https://127.0.0.1:8000").await.is_err());
    }

    #[test]
    fn source_ips_must_be_loopback() {
        assert!(parse_source_ips(&["127.0.0.2".into()]).is_ok());
        assert!(parse_source_ips(&["192.168.1.1".into()]).is_err());
    }
}
