//! Rate limits: each refusal is RATE_LIMITED with `retryAfter`, scoped to whom it concerns, and
//! lifts by itself. Limits are set small through the test configuration.
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";

fn retry_after(response: &Value) -> u64 {
    assert_eq!(error_code(response), Some("RATE_LIMITED"), "{response}");
    let secs = response["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("retryAfter in {response}"));
    assert!(secs >= 1, "{response}");
    secs
}

async fn message_count(app: &TestApp, user: &TestUser, conversation: &str) -> usize {
    app.data(
        &user.token,
        "query($c: ID!) { messages(conversationId: $c, first: 100) { edges { cursor } } }",
        json!({ "c": conversation }),
    )
    .await["messages"]["edges"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn sends_past_the_burst_are_rate_limited_per_user_and_write_nothing() {
    let mut config = test_config().await;
    config.send_rate = "3/1m".parse().unwrap();
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    app.send(&alice, &conversation, "two").await;
    app.send(&alice, &conversation, "three").await;
    let response = app
        .gql(
            Some(&alice.token),
            "mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: \"four\"}) { id } }",
            json!({ "c": conversation }),
        )
        .await;
    assert!(retry_after(&response) <= 20, "{response}");
    assert_eq!(message_count(&app, &bob, &conversation).await, 3);
    // Bob has a bucket of his own.
    app.send(&bob, &conversation, "mine").await;
}

#[tokio::test]
async fn uploads_have_their_own_smaller_budget() {
    let mut config = test_config().await;
    config.upload_rate = "2/1m".parse().unwrap();
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    for i in 0..2 {
        app.send_file(
            &alice,
            &conversation,
            &format!("n{i}.txt"),
            b"notes".to_vec(),
        )
        .await;
    }
    let (status, response) = app
        .upload(
            &alice.token,
            json!({ "conversationId": conversation }),
            "n3.txt",
            b"notes".to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    retry_after(&response);
    // Text still goes through.
    app.send(&alice, &conversation, "text is fine").await;
    assert_eq!(message_count(&app, &alice, &conversation).await, 4);
}

#[tokio::test]
async fn failed_sign_ins_slow_a_username_down_but_never_lock_it_for_good() {
    let mut config = test_config().await;
    // One token per 5 s: slower than the test's password checks, quick enough to wait out.
    config.login_user_rate = "2/10s".parse().unwrap();
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let carol = app.user("carol").await;
    // Signing in successfully costs nothing.
    for _ in 0..4 {
        let ok = app
            .gql(
                None,
                LOGIN,
                json!({ "u": alice.username, "p": "s3cret-pass" }),
            )
            .await;
        assert!(ok["data"]["login"]["token"].is_string(), "{ok}");
    }
    for _ in 0..2 {
        let wrong = app
            .gql(
                None,
                LOGIN,
                json!({ "u": alice.username, "p": "guess-1234" }),
            )
            .await;
        assert_eq!(error_code(&wrong), Some("UNAUTHENTICATED"), "{wrong}");
    }
    // Now even the right password waits: a guesser cannot tell a hit from a miss.
    let refused = app
        .gql(
            None,
            LOGIN,
            json!({ "u": alice.username, "p": "s3cret-pass" }),
        )
        .await;
    let wait = retry_after(&refused);
    assert!(refused["data"].is_null() || refused["data"]["login"].is_null());
    // Other usernames are not held up.
    let other = app
        .gql(
            None,
            LOGIN,
            json!({ "u": carol.username, "p": "s3cret-pass" }),
        )
        .await;
    assert!(other["data"]["login"]["token"].is_string(), "{other}");
    // After the wait, the real user gets in.
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    let ok = app
        .gql(
            None,
            LOGIN,
            json!({ "u": alice.username, "p": "s3cret-pass" }),
        )
        .await;
    assert!(ok["data"]["login"]["token"].is_string(), "{ok}");
}

#[tokio::test]
async fn sign_in_attempts_from_one_address_are_limited_across_usernames() {
    let mut config = test_config().await;
    config.login_addr_rate = "4/1m".parse().unwrap();
    let app = spawn_app_with(config).await;
    for i in 0..4 {
        let response = app
            .gql(
                None,
                LOGIN,
                json!({ "u": format!("nobody{i}"), "p": "guess-1234" }),
            )
            .await;
        assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
    }
    let response = app
        .gql(None, LOGIN, json!({ "u": "nobody9", "p": "guess-1234" }))
        .await;
    retry_after(&response);
}

#[tokio::test]
async fn a_user_may_hold_only_so_many_websockets() {
    let mut config = test_config().await;
    config.max_ws_per_user = 2;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let first = app.ws(Some(&alice.token)).await;
    let _second = app.ws(Some(&alice.token)).await;
    let mut third = app.ws_raw("graphql-transport-ws").await;
    third
        .send_json(json!({ "type": "connection_init", "payload": { "token": alice.token } }))
        .await;
    // A refused connection_init: 4403 (Forbidden), the reason saying why.
    let reason = third.expect_close(4403).await;
    assert!(reason.starts_with("RATE_LIMITED"), "{reason}");
    assert!(reason.contains("retryAfter="), "{reason}");
    // Bob is not affected.
    let _bob = app.ws(Some(&bob.token)).await;
    // Closing one makes room again.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = app.ws_raw("graphql-transport-ws").await;
        again
            .send_json(json!({ "type": "connection_init", "payload": { "token": alice.token } }))
            .await;
        match again.next_json().await {
            Some(ack) if ack["type"] == "connection_ack" => break,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("no room after closing a socket: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_connection_may_run_only_so_many_subscriptions_at_once() {
    let mut config = test_config().await;
    config.max_subscriptions = 2;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let conversation = app.direct(&bob, &alice).await;
    let mut ws = app.ws(Some(&alice.token)).await;
    ws.subscribe(
        "1",
        "subscription { notifications { id message { id } } }",
        json!({}),
    )
    .await;
    ws.subscribe("2", "subscription { typing { isTyping } }", json!({}))
        .await;
    // Operations start in no set order: these two hold their slots once they receive events.
    ws.until_live(&["1"], 1, async |_| {
        app.probe_message(&bob, &conversation).await
    })
    .await;
    ws.until_live(&["2"], 2, async |n| {
        app.probe_typing(&bob, &conversation, n).await
    })
    .await;
    ws.subscribe("3", "subscription { readReceipts { readAt } }", json!({}))
        .await;
    let payload = ws.next_payload("3").await;
    let secs = retry_after(&payload);
    assert!(secs >= 1);
    // Queries still run while the subscriptions are full.
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    assert_eq!(ws.next_data("q").await["me"]["id"], json!(alice.id));
    // Completing one frees its slot, soon: until then a new subscription is refused, and once it
    // is taken, a message from Carol reaches it.
    ws.send_json(json!({ "id": "1", "type": "complete" })).await;
    let fresh = app.direct(&carol, &alice).await;
    let mut attempt = 0;
    let data = 'taken: loop {
        attempt += 1;
        assert!(
            attempt < 100,
            "the completed subscription's slot was never freed"
        );
        let id = format!("4.{attempt}");
        ws.subscribe(&id, "subscription { notifications { text } }", json!({}))
            .await;
        for _ in 0..100 {
            app.send(&carol, &fresh, "hello").await;
            let Some(frame) = ws.next_frame(QUIET).await else {
                continue;
            };
            let Frame::Json(frame) = frame else {
                panic!("the socket closed: {frame:?}");
            };
            if frame["id"] != id.as_str() {
                // What is left of earlier attempts (their completion) or of the done ones.
                continue;
            }
            if frame["payload"]["errors"].is_array() {
                assert_eq!(
                    error_code(&frame["payload"]),
                    Some("RATE_LIMITED"),
                    "{frame}"
                );
                continue 'taken;
            }
            break 'taken frame["payload"]["data"].clone();
        }
        panic!("subscription {id} was neither refused nor reached");
    };
    let text = data["notifications"]["text"].as_str().unwrap();
    assert!(text.ends_with("hello"), "{data}");
}

#[tokio::test]
async fn a_websocket_that_stops_answering_pings_is_closed() {
    let mut config = test_config().await;
    config.ws_keepalive_ms = 200;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    // A live client answers the pings (the test client does so whenever it reads).
    let mut live = app.ws(Some(&alice.token)).await;
    assert!(
        live.next_frame(Duration::from_millis(1500)).await.is_none(),
        "a responsive socket stays open"
    );
    live.subscribe("q", "{ me { id } }", json!({})).await;
    assert_eq!(live.next_data("q").await["me"]["id"], json!(alice.id));
    // A silent one (it never reads, so never answers) is closed after three missed pings.
    let mut silent = app.ws(Some(&alice.token)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    match silent.next_frame(WAIT).await {
        // 4408, unless the client's late pong made reading fail before it saw the close frame.
        Some(Frame::Closed(Some((code, reason)))) => assert_eq!(code, 4408, "{reason}"),
        Some(Frame::Closed(None)) => {}
        other => panic!("expected the idle socket to be closed, got {other:?}"),
    }
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_the_socket_and_nothing_else() {
    let mut config = test_config().await;
    config.ws_max_message_bytes = 4096;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let mut ws = app.ws(Some(&alice.token)).await;
    let padding = " ".repeat(10_000);
    ws.subscribe("1", &format!("{{ me {{ id }} }}{padding}"), json!({}))
        .await;
    // A close frame saying so (not a reset), with a reason that fits in one.
    let reason = ws.expect_close(1009).await;
    assert!(reason.contains("4096"), "{reason}");
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let mut ws = app.ws(Some(&alice.token)).await;
    ws.subscribe("1", "{ me { id } }", json!({})).await;
    assert_eq!(ws.next_data("1").await["me"]["id"], json!(alice.id));
}
