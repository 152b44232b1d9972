use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const TYPING: &str = "subscription($c: ID) { typing(conversationId: $c) { isTyping user { id } } }";
const SET: &str = "mutation($c: ID!, $t: Boolean!) { setTyping(conversationId: $c, isTyping: $t) }";

async fn pair(app: &TestApp) -> (TestUser, TestUser, String, WsClient) {
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe("t", TYPING, json!({ "c": conversation }))
        .await;
    bob_ws
        .until_live(&["t"], 2, async |n| {
            app.probe_typing(&alice, &conversation, n).await
        })
        .await;
    (alice, bob, conversation, bob_ws)
}

#[tokio::test]
async fn an_indicator_from_a_silent_client_lapses_by_itself() {
    let app = spawn_app().await;
    let (alice, _bob, conversation, mut bob_ws) = pair(&app).await;
    app.data(&alice.token, SET, json!({ "c": conversation, "t": true }))
        .await;
    let started = std::time::Instant::now();
    assert_eq!(bob_ws.next_data("t").await["typing"]["isTyping"], true);
    // Refreshing inside the window is not re-broadcast.
    app.data(&alice.token, SET, json!({ "c": conversation, "t": true }))
        .await;
    let stopped = bob_ws.next_data("t").await;
    assert_eq!(stopped["typing"]["isTyping"], false);
    assert_eq!(stopped["typing"]["user"]["id"], alice.id);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "lapsed too early"
    );
}

#[tokio::test]
async fn an_indicator_ends_when_the_typists_connection_drops() {
    let app = spawn_app().await;
    let (alice, _bob, conversation, mut bob_ws) = pair(&app).await;
    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws
        .subscribe("set", SET, json!({ "c": conversation, "t": true }))
        .await;
    assert_eq!(alice_ws.next_data("set").await["setTyping"], true);
    assert_eq!(bob_ws.next_data("t").await["typing"]["isTyping"], true);
    let dropped = std::time::Instant::now();
    drop(alice_ws);
    assert_eq!(bob_ws.next_data("t").await["typing"]["isTyping"], false);
    assert!(
        dropped.elapsed() < Duration::from_secs(5),
        "ended by the drop, not by expiry"
    );
}

#[tokio::test]
async fn typing_updates_cannot_flood_a_conversation() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let conversation = app.direct(&alice, &bob).await;
    // Carol's typing, in a conversation of her own with Bob, is the marker that ends the count.
    let carols = app.direct(&carol, &bob).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws.subscribe("t", TYPING, json!({})).await;
    bob_ws
        .until_live(&["t"], 2, async |n| {
            app.probe_typing(&alice, &conversation, n).await
        })
        .await;
    let mut limited = None;
    for i in 0..60 {
        let response = app
            .gql(
                Some(&alice.token),
                SET,
                json!({ "c": conversation, "t": i % 2 == 0 }),
            )
            .await;
        if response.get("errors").is_some() {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the flood was cut off");
    assert_eq!(error_code(&limited), Some("RATE_LIMITED"));
    assert!(
        limited["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .unwrap()
            >= 1
    );
    app.probe_typing(&carol, &carols, 0).await;
    let mut received = 0;
    loop {
        let event = bob_ws.next_data("t").await;
        if event["typing"]["user"]["id"] == carol.id.as_str() {
            break;
        }
        received += 1;
    }
    // Each user may start typing 20 times per 10 s; each start may be followed by its stop.
    assert!(received <= 40, "{received} typing events got through");
}
