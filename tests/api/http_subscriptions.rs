//! Subscriptions over HTTP: Apollo's multipart subscription protocol, for clients that cannot open
//! a WebSocket (Apollo Client's `HttpLink` sends subscriptions this way).
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, WAIT, spawn_app, spawn_app_with, test_config};

const EVENTS: &str = "subscription($c: ID, $s: String) { messageEvents(conversationId: $c, since: $s) { kind cursor message { id body } } }";
/// What Apollo Client 3.8+ sends with a subscription over `HttpLink`.
const APOLLO_ACCEPT: &str =
    r#"multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json"#;

/// One part of a multipart answer.
#[derive(Debug, PartialEq)]
enum Part {
    Json(Value),
    /// The closing delimiter: the server ended the stream.
    End,
}

/// Reads a `multipart/mixed;boundary="graphql"` body part by part, as Apollo Client does: a part
/// is complete once the delimiter after it has arrived.
struct Multipart {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: Vec<u8>,
    started: bool,
}

const DELIMITER: &[u8] = b"\r\n--graphql";

impl Multipart {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            started: false,
        }
    }

    fn find(&self, needle: &[u8]) -> Option<usize> {
        self.buffer.windows(needle.len()).position(|w| w == needle)
    }

    /// The next part, or None when nothing more arrives within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Part> {
        tokio::time::timeout(wait, self.next()).await.ok()
    }

    /// The next part; panics if the body ends without the closing delimiter.
    async fn next(&mut self) -> Part {
        loop {
            if !self.started {
                if let Some(at) = self.find(DELIMITER) {
                    assert_eq!(at, 0, "the body starts with its first delimiter");
                    self.buffer.drain(..DELIMITER.len());
                    self.started = true;
                    continue;
                }
            } else if self.buffer.starts_with(b"--") {
                return Part::End;
            } else if let Some(at) = self.find(DELIMITER) {
                let part: Vec<u8> = self.buffer.drain(..at + DELIMITER.len()).collect();
                let part = &part[..at];
                let text = std::str::from_utf8(part).expect("UTF-8");
                let (headers, body) = text.split_once("\r\n\r\n").expect("headers, then a body");
                assert!(
                    headers
                        .to_ascii_lowercase()
                        .contains("content-type: application/json"),
                    "{headers}"
                );
                return Part::Json(serde_json::from_str(body).expect("a JSON part"));
            }
            match self.body.next().await {
                Some(chunk) => self
                    .buffer
                    .extend_from_slice(&chunk.expect("body readable")),
                None => panic!(
                    "the body ended without its closing delimiter: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                ),
            }
        }
    }

    /// The next part that is not a heartbeat.
    async fn next_event(&mut self) -> Part {
        loop {
            match self.next().await {
                Part::Json(json) if json == json!({}) => continue,
                other => return other,
            }
        }
    }
}

/// POSTs a subscription asking for a multipart answer.
async fn subscribe(app: &TestApp, token: Option<&str>, variables: Value) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/graphql"))
        .header("accept", APOLLO_ACCEPT)
        .json(&json!({ "query": EVENTS, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

/// Opens a subscription to the conversation and returns once an event is seen to arrive on it
/// (it is then registered, so nothing sent afterwards can slip past it), with that event.
async fn subscribed(
    app: &TestApp,
    user: &TestUser,
    sender: &TestUser,
    conversation: &str,
) -> (Multipart, Value) {
    let response = subscribe(app, Some(&user.token), json!({ "c": conversation })).await;
    first_event(app, sender, conversation, response).await
}

/// Reads a multipart subscription answer until an event arrives, sending messages to the
/// conversation until one does; returns the stream and that event.
async fn first_event(
    app: &TestApp,
    sender: &TestUser,
    conversation: &str,
    response: reqwest::Response,
) -> (Multipart, Value) {
    assert_eq!(response.status(), 200);
    let mut parts = Multipart::new(response);
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        app.send(sender, conversation, "ready?").await;
        while let Some(part) = parts.next_within(Duration::from_millis(300)).await {
            match part {
                Part::Json(json) if json == json!({}) => continue,
                Part::Json(json) => return (parts, json),
                Part::End => panic!("the stream ended while subscribing"),
            }
        }
    }
    panic!("no event arrived on the HTTP subscription");
}

#[tokio::test]
async fn a_subscription_over_http_streams_each_event_as_a_payload_part() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;

    let response = subscribe(&app, Some(&bob.token), json!({ "c": conversation })).await;
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("multipart/mixed"),
        "{content_type}"
    );
    assert!(
        content_type.contains(r#"boundary="graphql""#),
        "{content_type}"
    );
    assert!(content_type.contains("subscriptionSpec"), "{content_type}");
    drop(response);

    let (mut parts, first) = subscribed(&app, &bob, &alice, &conversation).await;
    assert_eq!(
        first["payload"]["data"]["messageEvents"]["kind"], "CREATED",
        "{first}"
    );
    let sent = app.send(&alice, &conversation, "over http").await;
    loop {
        let Part::Json(part) = parts.next_event().await else {
            panic!("the stream ended");
        };
        assert!(part["payload"].get("errors").is_none(), "{part}");
        let event = &part["payload"]["data"]["messageEvents"];
        if event["message"]["body"] == "over http" {
            assert_eq!(event["message"]["id"], sent["id"]);
            break;
        }
        assert_eq!(event["message"]["body"], "ready?", "{part}");
    }
}

#[tokio::test]
async fn resuming_over_http_with_since_replays_what_was_missed() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;

    let (parts, first) = subscribed(&app, &bob, &alice, &conversation).await;
    let cursor = first["payload"]["data"]["messageEvents"]["cursor"].clone();
    drop(parts);
    app.send(&alice, &conversation, "while away").await;

    let response = subscribe(
        &app,
        Some(&bob.token),
        json!({ "c": conversation, "s": cursor }),
    )
    .await;
    let mut parts = Multipart::new(response);
    let mut bodies = Vec::new();
    while !bodies.contains(&"while away".to_owned()) {
        let Part::Json(part) = parts.next_event().await else {
            panic!("the stream ended");
        };
        let body = part["payload"]["data"]["messageEvents"]["message"]["body"].clone();
        bodies.push(body.as_str().expect("a body").to_owned());
    }
    // Only the "ready?" messages sent after the cursor may come first; the one it names never.
    assert!(
        bodies[..bodies.len() - 1].iter().all(|b| b == "ready?"),
        "{bodies:?}"
    );
    assert_eq!(bodies.iter().filter(|b| *b == "while away").count(), 1);
}

#[tokio::test]
async fn an_idle_subscription_over_http_sends_empty_heartbeat_parts() {
    let mut config = test_config().await;
    config.http_subscription_heartbeat_ms = 50;
    let app = spawn_app_with(config).await;
    let bob = app.user("bob").await;

    let response = subscribe(&app, Some(&bob.token), json!({})).await;
    let mut parts = Multipart::new(response);
    assert_eq!(parts.next().await, Part::Json(json!({})));
    assert_eq!(parts.next().await, Part::Json(json!({})));
}

#[tokio::test]
async fn a_subscription_over_http_without_a_token_is_unauthenticated_and_ends() {
    let app = spawn_app().await;

    let response = subscribe(&app, None, json!({})).await;
    let mut parts = Multipart::new(response);
    let Part::Json(part) = parts.next_event().await else {
        panic!("the stream ended without an answer");
    };
    assert_eq!(
        part["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{part}"
    );
    assert_eq!(parts.next_event().await, Part::End);
}

#[tokio::test]
async fn logging_out_ends_the_subscriptions_over_http_of_that_session() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let (mut parts, _) = subscribed(&app, &bob, &alice, &conversation).await;

    app.data(&bob.token, "mutation { logout }", json!({})).await;

    loop {
        match parts.next_event().await {
            Part::Json(part) if part.get("errors").is_some() => {
                assert_eq!(part["payload"], Value::Null, "{part}");
                assert_eq!(part["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
                break;
            }
            // "ready?" messages still on their way.
            Part::Json(part) => assert!(part["payload"]["data"].is_object(), "{part}"),
            Part::End => panic!("ended without saying why"),
        }
    }
    assert_eq!(parts.next_event().await, Part::End);
}

#[tokio::test]
async fn subscriptions_over_http_count_against_the_per_user_connection_limit() {
    let mut config = test_config().await;
    config.max_ws_per_user = 1;
    let app = spawn_app_with(config).await;
    let bob = app.user("bob").await;

    let first = subscribe(&app, Some(&bob.token), json!({})).await;
    assert_eq!(first.status(), 200);
    let second = subscribe(&app, Some(&bob.token), json!({})).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "5");
    assert!(
        second.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        second.headers()["content-type"]
    );
    let body: Value = second.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert!(body.get("data").is_none(), "{body}");
    // A client preferring the GraphQL media type gets the refusal in it.
    let third = app
        .http
        .post(app.url("/graphql"))
        .header(
            "accept",
            "multipart/mixed;subscriptionSpec=1.0,application/graphql-response+json",
        )
        .bearer_auth(&bob.token)
        .json(&json!({ "query": EVENTS }))
        .send()
        .await
        .expect("sent");
    assert_eq!(third.status(), 429);
    assert!(
        third.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/graphql-response+json"),
        "{:?}",
        third.headers()["content-type"]
    );
    let mut ws = app.ws_raw("graphql-transport-ws").await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", bob.token) } }))
        .await;
    let reason = ws.expect_close(4403).await;
    assert!(reason.starts_with("RATE_LIMITED"), "{reason}");
}

#[tokio::test]
async fn a_query_sent_with_the_multipart_accept_header_is_answered_as_json() {
    let app = spawn_app().await;
    let bob = app.user("bob").await;

    let response = app
        .http
        .post(app.url("/graphql"))
        .header("accept", APOLLO_ACCEPT)
        .bearer_auth(&bob.token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .expect("sent");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.contains("json"), "{content_type}");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["data"]["me"]["id"], bob.id);
}

/// `GET /graphql` with the request in the query string (`extensions` and `variables` as JSON).
async fn get(
    app: &TestApp,
    token: &str,
    accept: &str,
    params: &[(&str, String)],
) -> reqwest::Response {
    app.get_graphql(token, accept, params).await
}

#[tokio::test]
async fn a_persisted_subscription_runs_over_get_as_a_multipart_stream_and_only_so() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let hash = crate::helpers::sha256_hex(EVENTS.as_bytes());
    let extensions = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } }).to_string();
    let variables = json!({ "c": conversation }).to_string();
    // Registered with its text, as Apollo's persisted query link does after a miss.
    let registering = app
        .http
        .post(app.url("/graphql"))
        .header("accept", APOLLO_ACCEPT)
        .bearer_auth(&bob.token)
        .json(&json!({ "query": EVENTS, "variables": { "c": conversation }, "extensions": serde_json::from_str::<Value>(&extensions).unwrap() }))
        .send()
        .await
        .expect("sent");
    let (registered, _) = first_event(&app, &alice, &conversation, registering).await;
    drop(registered);

    let streamed = get(
        &app,
        &bob.token,
        APOLLO_ACCEPT,
        &[
            ("extensions", extensions.clone()),
            ("variables", variables.clone()),
        ],
    )
    .await;
    assert!(
        streamed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("multipart/mixed"),
        "{:?}",
        streamed.headers()["content-type"]
    );
    let (_parts, event) = first_event(&app, &alice, &conversation, streamed).await;
    assert_eq!(
        event["payload"]["data"]["messageEvents"]["kind"], "CREATED",
        "{event}"
    );

    // Not asked for as a stream, a subscription over GET is refused as GraphQL over HTTP says.
    for (accept, media) in [
        ("application/json", "application/json"),
        (
            "application/graphql-response+json",
            "application/graphql-response+json",
        ),
    ] {
        let refused = get(
            &app,
            &bob.token,
            accept,
            &[
                ("extensions", extensions.clone()),
                ("variables", variables.clone()),
            ],
        )
        .await;
        assert_eq!(refused.status(), 405, "{accept}");
        assert_eq!(refused.headers()["allow"], "POST", "{accept}");
        assert!(
            refused.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(media),
            "{accept}: {:?}",
            refused.headers()["content-type"]
        );
    }
}

#[tokio::test]
async fn a_file_event_over_http_carries_an_absolute_download_url_on_the_requests_host() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let with_files = "subscription($c: ID) { messageEvents(conversationId: $c) { kind message { body attachment { downloadUrl } } } }";

    let response = app
        .http
        .post(app.url("/graphql"))
        .header("accept", APOLLO_ACCEPT)
        .bearer_auth(&bob.token)
        .json(&json!({ "query": with_files, "variables": { "c": conversation } }))
        .send()
        .await
        .expect("sent");
    let (mut parts, _) = first_event(&app, &alice, &conversation, response).await;
    app.send_file(&alice, &conversation, "notes.txt", b"hello".to_vec())
        .await;

    let url = loop {
        let Part::Json(part) = parts.next_event().await else {
            panic!("the stream ended");
        };
        let attachment = &part["payload"]["data"]["messageEvents"]["message"]["attachment"];
        if let Some(url) = attachment["downloadUrl"].as_str() {
            break url.to_owned();
        }
    };
    assert!(url.starts_with(&app.url("/files/msg_")), "{url}");
}
