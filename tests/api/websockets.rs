//! The WebSocket's rules: a socket must sign in, and soon; one address may hold only so many
//! sockets that have not; and every way a socket is closed is a graphql-transport-ws close code
//! with a reason that fits in a close frame (RFC 6455: at most 123 bytes).
use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite;

use crate::helpers::*;

const TRANSPORT_WS: &str = "graphql-transport-ws";
const LEGACY_WS: &str = "graphql-ws";

/// Expects an upgrade to have been refused with 429 and a `Retry-After`.
fn expect_too_many(refused: Result<WsClient, Box<tungstenite::Error>>) {
    match refused.map(|_| ()).map_err(|err| *err) {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let retry_after = response.headers()["retry-after"].to_str().unwrap();
            assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(error_code(&body), Some("RATE_LIMITED"), "{body}");
        }
        other => panic!("expected the upgrade to be refused with 429, got {other:?}"),
    }
}

/// Opens sockets until one is accepted again (a closed one frees its place as soon as the server
/// has seen it go).
async fn connect_once_room_is_made(app: &TestApp) -> WsClient {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match app.ws_connect(TRANSPORT_WS, None).await {
            Ok(ws) => return ws,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("no room after closing a socket: {err}"),
        }
    }
}

#[tokio::test]
async fn a_socket_that_never_sends_connection_init_is_closed_with_4408() {
    let mut config = test_config().await;
    config.ws_init_timeout_ms = 300;
    // Pings far more often than the init timeout, answered: being alive is not being signed in.
    config.ws_keepalive_ms = 50;
    let app = spawn_app_with(config).await;
    for protocol in [TRANSPORT_WS, LEGACY_WS] {
        let mut ws = app.ws_raw(protocol).await;
        if protocol == TRANSPORT_WS {
            // graphql-transport-ws pings are answered before init, but do not sign in either.
            ws.send_json(json!({ "type": "ping" })).await;
            assert_eq!(ws.next_json().await.unwrap()["type"], "pong");
        }
        let reason = ws.expect_close(4408).await;
        assert_eq!(reason, "Connection initialisation timeout");
    }
}

#[tokio::test]
async fn a_signed_in_socket_outlives_the_init_timeout() {
    let mut config = test_config().await;
    config.ws_init_timeout_ms = 300;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let mut ws = app.ws(Some(&alice.token)).await;
    assert!(ws.next_frame(Duration::from_millis(900)).await.is_none());
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    assert_eq!(ws.next_data("q").await["me"]["id"], json!(alice.id));
}

#[tokio::test]
async fn connection_init_without_a_token_is_refused_with_4403() {
    let app = spawn_app().await;
    for payload in [None, Some(json!({})), Some(json!({ "token": "" }))] {
        let mut ws = app.ws_raw(TRANSPORT_WS).await;
        let mut init = json!({ "type": "connection_init" });
        if let Some(payload) = payload {
            init["payload"] = payload;
        }
        ws.send_json(init).await;
        ws.expect_refused_init().await;
    }
    // The legacy protocol answers with its own `connection_error`, then closes.
    let mut legacy = app.ws_raw(LEGACY_WS).await;
    legacy
        .send_json(json!({ "type": "connection_init", "payload": {} }))
        .await;
    let error = legacy.next_json().await.expect("a connection_error");
    assert_eq!(error["type"], "connection_error", "{error}");
    let message = error["payload"]["message"].as_str().unwrap();
    assert!(message.starts_with("UNAUTHENTICATED"), "{message}");
    legacy.expect_close(1000).await;
}

#[tokio::test]
async fn an_unknown_or_malformed_message_is_closed_with_4400_and_a_reason_that_fits() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let long_type = "x".repeat(5000);
    // Two bytes a character: a cut in the middle of one would not be UTF-8.
    let wide_type = "é".repeat(200);
    let hostile = [
        json!({ "type": "hello" }).to_string(),
        json!({ "type": long_type }).to_string(),
        json!({ "type": wide_type }).to_string(),
        "not json".to_string(),
        "{\"type\":".to_string(),
        json!({ "id": "1", "type": "subscribe" }).to_string(),
        json!({ "id": "1", "type": "subscribe", "payload": { "query": 7 } }).to_string(),
        json!({ "type": "subscribe", "payload": { "query": "{ me { id } }" } }).to_string(),
        json!([1, 2, 3]).to_string(),
    ];
    for frame in &hostile {
        // Before and after connection_init alike.
        for signed_in in [false, true] {
            let mut ws = if signed_in {
                app.ws(Some(&alice.token)).await
            } else {
                app.ws_raw(TRANSPORT_WS).await
            };
            ws.send_text(frame).await;
            let reason = ws.expect_close(4400).await;
            assert!(reason.starts_with("Invalid message"), "{frame}: {reason}");
        }
    }
}

#[tokio::test]
async fn subscribe_before_connection_ack_is_closed_with_4401() {
    let app = spawn_app().await;
    let mut ws = app.ws_raw(TRANSPORT_WS).await;
    ws.subscribe("1", "{ me { id } }", json!({})).await;
    assert_eq!(ws.expect_close(4401).await, "Unauthorized");
}

#[tokio::test]
async fn a_second_connection_init_is_closed_with_4429() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = app.ws(Some(&alice.token)).await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "token": alice.token } }))
        .await;
    ws.expect_close(4429).await;
}

#[tokio::test]
async fn a_subscribe_with_the_id_of_a_running_operation_is_closed_with_4409() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut ws = app.ws(Some(&alice.token)).await;
    // An id may be used again once its operation is complete: by the server (a query) ...
    for _ in 0..3 {
        ws.subscribe("q", "{ me { id } }", json!({})).await;
        assert_eq!(ws.next_data("q").await["me"]["id"], json!(alice.id));
        assert_eq!(
            ws.next_json().await.unwrap(),
            json!({ "type": "complete", "id": "q" })
        );
    }
    // ... or by the client.
    ws.subscribe("s", "subscription { notifications { id } }", json!({}))
        .await;
    ws.send_json(json!({ "id": "s", "type": "complete" })).await;
    assert_eq!(
        ws.next_json().await.unwrap(),
        json!({ "type": "complete", "id": "s" })
    );
    ws.subscribe("s", "subscription { notifications { id } }", json!({}))
        .await;
    // Taken: the next frame answers a query sent after it, not a refusal of `s`.
    ws.subscribe("after", "{ me { id } }", json!({})).await;
    ws.expect_next_event("after", &alice.id).await;
    // Not while it runs.
    ws.subscribe("s", "subscription { typing { isTyping } }", json!({}))
        .await;
    let reason = ws.expect_close(4409).await;
    assert_eq!(reason, "Subscriber for s already exists");
    // An id too long for a close frame is cut, on a character boundary.
    let mut ws = app.ws(Some(&alice.token)).await;
    let id = "ü".repeat(300);
    for _ in 0..2 {
        ws.subscribe(&id, "subscription { notifications { id } }", json!({}))
            .await;
    }
    let reason = ws.expect_close(4409).await;
    assert!(reason.starts_with("Subscriber for üü"), "{reason}");
}

#[tokio::test]
async fn the_legacy_protocol_keeps_its_own_answers_with_reasons_that_fit() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    // A malformed message: 1002 (the legacy protocol has no code of its own for it).
    let mut legacy = app.ws_raw(LEGACY_WS).await;
    legacy.send_json(json!({ "type": "x".repeat(5000) })).await;
    legacy.expect_close(1002).await;
    // An operation before connection_init.
    let mut legacy = app.ws_raw(LEGACY_WS).await;
    legacy
        .send_json(json!({ "id": "1", "type": "start", "payload": { "query": "{ me { id } }" } }))
        .await;
    legacy.expect_close(1011).await;
    // A dead token.
    let mut legacy = app.ws_raw(LEGACY_WS).await;
    legacy
        .send_json(json!({ "type": "connection_init", "payload": { "token": "nope" } }))
        .await;
    let error = legacy.next_json().await.unwrap();
    assert_eq!(error["type"], "connection_error", "{error}");
    legacy.expect_close(1000).await;
    // Signed in, an id may be started again while it runs (the first is replaced), as ever.
    let mut legacy = app.ws_raw(LEGACY_WS).await;
    legacy
        .send_json(json!({ "type": "connection_init", "payload": { "token": alice.token } }))
        .await;
    assert_eq!(legacy.next_json().await.unwrap()["type"], "connection_ack");
    for _ in 0..2 {
        legacy
            .send_json(json!({ "id": "1", "type": "start", "payload": { "query": "subscription { notifications { id } }" } }))
            .await;
    }
    legacy
        .send_json(json!({ "id": "2", "type": "start", "payload": { "query": "{ me { id } }" } }))
        .await;
    let data = legacy.next_json().await.unwrap();
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(data["payload"]["data"]["me"]["id"], json!(alice.id));
}

#[tokio::test]
async fn an_oversized_message_gets_a_1009_close_frame_not_a_reset() {
    let mut config = test_config().await;
    config.ws_max_message_bytes = 4096;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    // Just over and far over, before and after connection_init.
    for size in [4097, 10_000, 100_000] {
        for signed_in in [false, true] {
            let mut ws = if signed_in {
                app.ws(Some(&alice.token)).await
            } else {
                app.ws_raw(TRANSPORT_WS).await
            };
            let padding = " ".repeat(size);
            ws.send_text(&format!("{{\"type\":\"ping\"}}{padding}"))
                .await;
            let reason = ws.expect_close(1009).await;
            assert!(reason.contains("4096"), "{reason}");
        }
    }
    // The legacy protocol too.
    let mut legacy = app.ws_raw(LEGACY_WS).await;
    legacy.send_text(&" ".repeat(5000)).await;
    legacy.expect_close(1009).await;
}

#[tokio::test]
async fn anonymous_sockets_beyond_the_per_address_bound_are_refused() {
    let mut config = test_config().await;
    config.max_anon_ws_per_addr = 2;
    let app = spawn_app_with(config).await;
    let first = app.ws_raw(TRANSPORT_WS).await;
    let _second = app.ws_raw(LEGACY_WS).await;
    expect_too_many(app.ws_connect(TRANSPORT_WS, None).await);
    expect_too_many(app.ws_connect(LEGACY_WS, None).await);
    // A socket that leaves makes room.
    drop(first);
    let mut third = connect_once_room_is_made(&app).await;
    expect_too_many(app.ws_connect(TRANSPORT_WS, None).await);
    // So does one refused at connection_init, once closed.
    third
        .send_json(json!({ "type": "connection_init", "payload": {} }))
        .await;
    third.expect_refused_init().await;
    drop(third);
    connect_once_room_is_made(&app).await;
}

#[tokio::test]
async fn a_socket_closed_for_its_init_timeout_frees_its_place() {
    let mut config = test_config().await;
    config.max_anon_ws_per_addr = 1;
    config.ws_init_timeout_ms = 300;
    let app = spawn_app_with(config).await;
    let mut silent = app.ws_raw(TRANSPORT_WS).await;
    expect_too_many(app.ws_connect(TRANSPORT_WS, None).await);
    silent.expect_close(4408).await;
    connect_once_room_is_made(&app).await;
}

#[tokio::test]
async fn signed_in_sockets_are_unaffected_by_the_anonymous_bound() {
    let mut config = test_config().await;
    config.max_anon_ws_per_addr = 2;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    // Each socket is anonymous only until its connection_init is accepted.
    let mut signed_in = Vec::new();
    for user in [&alice, &bob, &alice, &bob, &alice] {
        signed_in.push(app.ws(Some(&user.token)).await);
    }
    // The address still has its two anonymous places.
    let _one = app.ws_raw(TRANSPORT_WS).await;
    let _two = app.ws_raw(TRANSPORT_WS).await;
    expect_too_many(app.ws_connect(TRANSPORT_WS, None).await);
    // A socket signed in on the upgrade request itself does not need one.
    let mut by_header = app
        .ws_connect(TRANSPORT_WS, Some(&alice.token))
        .await
        .expect("a signed-in upgrade is accepted");
    by_header
        .send_json(json!({ "type": "connection_init" }))
        .await;
    assert_eq!(
        by_header.next_json().await.unwrap()["type"],
        "connection_ack"
    );
    // And every signed-in socket still works.
    signed_in.push(by_header);
    for ws in &mut signed_in {
        ws.subscribe("q", "{ me { id } }", json!({})).await;
        ws.next_data("q").await;
    }
}
