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
    let carol = app.user("carol").await;
    app.direct(&alice, &bob).await;
    app.direct(&carol, &bob).await;

    let mut watcher = app.ws(Some(&bob.token)).await;
    watcher
        .subscribe("p", WATCH, json!({ "u": [alice.id, carol.id] }))
        .await;
    // First the current state of each (in no set order).
    let mut snapshot = vec![watcher.next_data("p").await, watcher.next_data("p").await];
    snapshot.retain(|event| event["presence"]["user"]["id"] == alice.id.as_str());
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    assert_eq!(snapshot[0]["presence"]["status"], "OFFLINE");

    let first = app.ws(Some(&alice.token)).await;
    let online = watcher.next_data("p").await;
    assert_eq!(online["presence"]["status"], "ONLINE");
    let seen = app
        .data(&bob.token, PRESENCE_OF, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "ONLINE");

    // A second connection, then closing the first: still online, nothing announced. Carol comes
    // and goes after that: were the close announced, it would come before she is shown offline
    // (the same grace period, started earlier).
    let second = app.ws(Some(&alice.token)).await;
    drop(first);
    let mut carols = PresenceProbe::new(&carol);
    for n in 0..2 {
        let mark = carols.probe(&app, n).await;
        let marker = watcher.expect_next_event("p", &mark).await;
        assert_eq!(marker["presence"]["user"]["id"], carol.id);
    }
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
    let carol = app.user("carol").await;
    app.direct(&alice, &bob).await;
    app.direct(&carol, &bob).await;
    let mut watcher = app.ws(Some(&bob.token)).await;
    watcher.subscribe("p", WATCH, json!({})).await;
    let mut carols = PresenceProbe::new(&carol);
    watcher
        .until_live(&["p"], 2, async |n| carols.probe(&app, n).await)
        .await;

    let conn = app.ws(Some(&alice.token)).await;
    assert_eq!(watcher.next_data("p").await["presence"]["status"], "ONLINE");
    drop(conn);
    // Back within the grace period.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _again = app.ws(Some(&alice.token)).await;
    // Carol comes and goes after that: an announced drop or return would come first.
    for n in 0..2 {
        let mark = carols.probe(&app, n).await;
        let marker = watcher.expect_next_event("p", &mark).await;
        assert_eq!(marker["presence"]["user"]["id"], carol.id);
    }
}

#[tokio::test]
async fn someone_sharing_no_conversation_sees_no_presence() {
    let app = quick_app().await;
    let alice = app.user("alice").await;
    let eve = app.user("eve").await;
    // Someone Eve does share a conversation with, whose coming and going shows her
    // subscriptions live and marks the end of the check.
    let carol = app.user("carol").await;
    app.direct(&carol, &eve).await;

    let mut eve_ws = app.ws(Some(&eve.token)).await;
    eve_ws
        .subscribe("named", WATCH, json!({ "u": [alice.id, carol.id] }))
        .await;
    // The current state of Carol only.
    let snapshot = eve_ws.next_data("named").await;
    assert_eq!(snapshot["presence"]["user"]["id"], carol.id);
    eve_ws.subscribe("all", WATCH, json!({})).await;
    let mut carols = PresenceProbe::new(&carol);
    eve_ws
        .until_live(&["named", "all"], 2, async |n| carols.probe(&app, n).await)
        .await;
    let alice_ws = app.ws(Some(&alice.token)).await;
    drop(alice_ws);
    // Carol comes and goes after that: Alice's coming and going would come first.
    for n in 0..2 {
        let mark = carols.probe(&app, n).await;
        let markers = eve_ws
            .expect_markers(&[("named", &mark), ("all", &mark)])
            .await;
        for marker in markers {
            assert_eq!(marker["presence"]["user"]["id"], carol.id);
        }
    }

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
