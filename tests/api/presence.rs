use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const WATCH: &str =
    "subscription($u: [ID!]) { presence(userIds: $u) { status lastSeenAt user { id } } }";
const PRESENCE_OF: &str = "query($u: ID!) { user(id: $u) { presence { status lastSeenAt } } }";

async fn quick_app() -> TestApp {
    let mut config = test_config().await;
    config.presence_grace_ms = 300;
    spawn_app_with(config).await
}

#[tokio::test]
async fn a_user_is_online_while_any_connection_is_open_and_offline_after_the_last_closes() {
    let app = quick_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.direct(&alice, &bob).await;

    let mut watcher = app.ws(Some(&bob.token)).await;
    watcher
        .subscribe("p", WATCH, json!({ "u": [alice.id] }))
        .await;
    let snapshot = watcher.next_data("p").await;
    assert_eq!(snapshot["presence"]["status"], "OFFLINE");
    assert_eq!(snapshot["presence"]["user"]["id"], alice.id);

    let first = app.ws(Some(&alice.token)).await;
    let online = watcher.next_data("p").await;
    assert_eq!(online["presence"]["status"], "ONLINE");
    let seen = app
        .data(&bob.token, PRESENCE_OF, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "ONLINE");

    // A second connection, then closing the first: still online, nothing announced.
    let second = app.ws(Some(&alice.token)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(800)).await;
    watcher.expect_silence().await;
    let seen = app
        .data(&bob.token, PRESENCE_OF, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "ONLINE");

    // The last one closes: offline, with a last-seen time.
    drop(second);
    let offline = watcher.next_data("p").await;
    assert_eq!(offline["presence"]["status"], "OFFLINE");
    assert!(offline["presence"]["lastSeenAt"].is_string());
    let seen = app
        .data(&bob.token, PRESENCE_OF, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "OFFLINE");
    assert!(seen["user"]["presence"]["lastSeenAt"].is_string());
}

#[tokio::test]
async fn a_quick_reconnect_is_not_announced() {
    let mut config = test_config().await;
    config.presence_grace_ms = 1500;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.direct(&alice, &bob).await;
    let mut watcher = app.ws(Some(&bob.token)).await;
    watcher.subscribe("p", WATCH, json!({})).await;
    tokio::time::sleep(QUIET).await;

    let conn = app.ws(Some(&alice.token)).await;
    assert_eq!(watcher.next_data("p").await["presence"]["status"], "ONLINE");
    drop(conn);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _again = app.ws(Some(&alice.token)).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    watcher.expect_silence().await;
}

#[tokio::test]
async fn someone_sharing_no_conversation_sees_no_presence() {
    let app = quick_app().await;
    let alice = app.user("alice").await;
    let eve = app.user("eve").await;

    let mut eve_ws = app.ws(Some(&eve.token)).await;
    eve_ws
        .subscribe("named", WATCH, json!({ "u": [alice.id] }))
        .await;
    eve_ws.subscribe("all", WATCH, json!({})).await;
    tokio::time::sleep(QUIET).await;
    let alice_ws = app.ws(Some(&alice.token)).await;
    drop(alice_ws);
    tokio::time::sleep(Duration::from_millis(600)).await;
    eve_ws.expect_silence().await;

    let seen = app
        .data(&eve.token, PRESENCE_OF, json!({ "u": alice.id }))
        .await;
    assert!(seen["user"]["presence"].is_null(), "{seen}");
    // Alice sees her own.
    let own = app
        .data(&alice.token, PRESENCE_OF, json!({ "u": alice.id }))
        .await;
    assert!(own["user"]["presence"].is_object());
}
