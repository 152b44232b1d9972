//! `markUnread`: the one way a read marker moves back.
use serde_json::{Value, json};

use crate::helpers::*;

const UNREAD: &str = "mutation($c: ID!, $m: ID!) { markUnread(conversationId: $c, fromMessageId: $m) { id unreadCount } }";
const READ: &str = "mutation($c: ID!) { markRead(conversationId: $c) { id unreadCount } }";
const RECEIPTS: &str = "subscription($c: ID, $s: String) { readReceipts(conversationId: $c, since: $s) { cursor user { id } upToMessageId } }";

fn id_of(sent: &Value) -> String {
    sent["id"].as_str().expect("a message id").to_owned()
}

#[tokio::test]
async fn marking_unread_moves_the_marker_back_and_tells_the_other_devices() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let first = id_of(&app.send(&alice, &conversation, "one").await);
    let second = id_of(&app.send(&alice, &conversation, "two").await);
    app.send(&alice, &conversation, "three").await;
    app.data(&bob.token, READ, json!({ "c": conversation }))
        .await;

    // Bob's phone follows his receipts while his laptop marks unread.
    let mut phone = app.ws(Some(&bob.token)).await;
    phone
        .subscribe("r", RECEIPTS, json!({ "c": conversation }))
        .await;
    phone
        .until_live(&["r"], 1, async |_| {
            app.probe_receipt(&alice, &bob, &conversation).await
        })
        .await;
    let before = app
        .data(&bob.token, "query { unreadCount }", json!({}))
        .await["unreadCount"]
        .clone();
    assert_eq!(before, 0);

    let moved = app
        .data(
            &bob.token,
            UNREAD,
            json!({ "c": conversation, "m": second }),
        )
        .await;
    // "two", "three" and the probe are unread again.
    assert_eq!(moved["markUnread"]["unreadCount"], 3);
    let receipt = phone.expect_next_event("r", &first).await;
    assert_eq!(receipt["readReceipts"]["user"]["id"], bob.id);
    assert_eq!(receipt["readReceipts"]["upToMessageId"], first.as_str());
    let cursor = receipt["readReceipts"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let total = app
        .data(&bob.token, "query { unreadCount }", json!({}))
        .await;
    assert_eq!(total["unreadCount"], 3);
    let is_read = app
        .data(
            &bob.token,
            "query($c: ID!) { messages(conversationId: $c, first: 2) { edges { node { body isRead } } } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(
        is_read["messages"]["edges"],
        json!([
            { "node": { "body": "hello", "isRead": true } },
            { "node": { "body": "one", "isRead": true } },
        ])
    );

    // A message unread already changes nothing: no receipt, the next one is the marker's.
    let again = app
        .data(
            &bob.token,
            UNREAD,
            json!({ "c": conversation, "m": second }),
        )
        .await;
    assert_eq!(again["markUnread"]["unreadCount"], 3);
    let marker = app.probe_receipt(&alice, &bob, &conversation).await;
    phone.expect_next_event("r", &marker).await;

    // Marking read again moves it forward as usual; a resumer replays the newest marker.
    let mut later = app.ws(Some(&alice.token)).await;
    later
        .subscribe("r", RECEIPTS, json!({ "c": conversation, "s": cursor }))
        .await;
    let replayed = later.next_data("r").await;
    assert_eq!(replayed["readReceipts"]["user"]["id"], bob.id);
    assert_eq!(
        replayed["readReceipts"]["upToMessageId"],
        marker.trim_matches('"')
    );
}

#[tokio::test]
async fn outsiders_and_messages_of_other_conversations_get_not_found() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = id_of(&app.send(&alice, &conversation, "private").await);
    let elsewhere = app.direct(&alice, &mallory).await;
    let other = id_of(&app.send(&mallory, &elsewhere, "other").await);

    let response = app
        .gql(
            Some(&mallory.token),
            UNREAD,
            json!({ "c": conversation, "m": message }),
        )
        .await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
    let response = app
        .gql(
            Some(&bob.token),
            UNREAD,
            json!({ "c": conversation, "m": other }),
        )
        .await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
    let response = app
        .gql(
            Some(&bob.token),
            UNREAD,
            json!({ "c": conversation, "m": "cnv_1" }),
        )
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    // Nothing moved for anyone.
    let count = app
        .data(&bob.token, "query { unreadCount }", json!({}))
        .await;
    assert_eq!(count["unreadCount"], 2);
}
