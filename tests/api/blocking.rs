//! Blocking: no direct messages from a blocked user, their typing and presence hidden; rooms are
//! unaffected.
use serde_json::{Value, json};

use crate::helpers::*;

const BLOCK: &str = "mutation($u: ID!) { blockUser(userId: $u) }";
const UNBLOCK: &str = "mutation($u: ID!) { unblockUser(userId: $u) }";
const BLOCKED: &str = "{ blockedUsers { id } }";
const SEND_TO: &str =
    "mutation($r: ID!, $b: String!) { sendMessage(input: {recipientId: $r, body: $b}) { id } }";
const SEND_IN: &str =
    "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }";
const HISTORY: &str = "query($c: ID!) { messages(conversationId: $c) { edges { node { body } } } }";
const CONVERSATIONS: &str = "{ conversations { edges { node { id } } } }";
const TYPING: &str = "subscription($c: ID) { typing(conversationId: $c) { isTyping user { id } } }";
const SET_TYPING: &str =
    "mutation($c: ID!, $t: Boolean!) { setTyping(conversationId: $c, isTyping: $t) }";
const WATCH: &str = "subscription($u: [ID!]) { presence(userIds: $u) { status user { id } } }";
const PRESENCE_OF: &str = "query($u: ID!) { user(id: $u) { presence { status } } }";

async fn history(app: &TestApp, user: &TestUser, conversation: &str) -> Vec<Value> {
    app.data(&user.token, HISTORY, json!({ "c": conversation }))
        .await["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["body"].clone())
        .collect()
}

#[tokio::test]
async fn a_blocked_user_cannot_write_directly_until_unblocked() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let conversation = app.direct(&mallory, &alice).await;
    let before = history(&app, &alice, &conversation).await;

    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;

    let by_conversation = app
        .gql(
            Some(&mallory.token),
            SEND_IN,
            json!({ "c": conversation, "b": "hey" }),
        )
        .await;
    assert_eq!(
        error_code(&by_conversation),
        Some("FORBIDDEN"),
        "{by_conversation}"
    );
    let by_recipient = app
        .gql(
            Some(&mallory.token),
            SEND_TO,
            json!({ "r": alice.id, "b": "hey" }),
        )
        .await;
    assert_eq!(
        error_code(&by_recipient),
        Some("FORBIDDEN"),
        "{by_recipient}"
    );
    assert_eq!(history(&app, &alice, &conversation).await, before);
    // The blocker may still write.
    app.send(&alice, &conversation, "please stop").await;

    app.data(&alice.token, UNBLOCK, json!({ "u": mallory.id }))
        .await;
    app.send(&mallory, &conversation, "sorry").await;
    assert_eq!(
        history(&app, &alice, &conversation).await.len(),
        before.len() + 2
    );
}

#[tokio::test]
async fn a_blocked_user_cannot_start_a_direct_conversation_and_nothing_is_written() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;

    let response = app
        .gql(
            Some(&mallory.token),
            SEND_TO,
            json!({ "r": alice.id, "b": "hi" }),
        )
        .await;

    assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response}");
    for user in [&alice, &mallory] {
        let listed = app.data(&user.token, CONVERSATIONS, json!({})).await;
        assert_eq!(listed["conversations"]["edges"], json!([]), "{listed}");
    }
}

#[tokio::test]
async fn rooms_are_unaffected_by_a_block() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let room = app
        .data(
            &alice.token,
            "mutation($m: [ID!]!) { createRoom(input: {name: \"general\", memberIds: $m}) { id } }",
            json!({ "m": [mallory.id] }),
        )
        .await["createRoom"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;

    app.send(&mallory, &room, "hello room").await;

    assert_eq!(
        history(&app, &alice, &room).await.last().unwrap(),
        "hello room"
    );
}

#[tokio::test]
async fn blocked_users_are_listed_for_the_blocker_alone() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let bob = app.user("bob").await;

    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;
    // Blocking twice is harmless.
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;

    let listed = app.data(&alice.token, BLOCKED, json!({})).await;
    assert_eq!(listed["blockedUsers"], json!([{ "id": mallory.id }]));
    assert_eq!(
        app.data(&bob.token, BLOCKED, json!({})).await["blockedUsers"],
        json!([])
    );
    assert_eq!(
        app.data(&mallory.token, BLOCKED, json!({})).await["blockedUsers"],
        json!([])
    );
    // Nobody else can lift it, since a block is the blocker's own.
    app.data(&mallory.token, UNBLOCK, json!({ "u": mallory.id }))
        .await;
    app.data(&bob.token, UNBLOCK, json!({ "u": mallory.id }))
        .await;
    assert_eq!(app.data(&alice.token, BLOCKED, json!({})).await, listed);

    let me = app
        .gql(Some(&alice.token), BLOCK, json!({ "u": alice.id }))
        .await;
    assert_eq!(error_code(&me), Some("BAD_USER_INPUT"));
    let nobody = app
        .gql(Some(&alice.token), BLOCK, json!({ "u": "usr_999999" }))
        .await;
    assert_eq!(error_code(&nobody), Some("NOT_FOUND"));
    let forged = app
        .gql(Some(&alice.token), BLOCK, json!({ "u": "cnv_1" }))
        .await;
    assert_eq!(error_code(&forged), Some("BAD_USER_INPUT"));
    for query in [BLOCK, UNBLOCK] {
        let anonymous = app.gql(None, query, json!({ "u": mallory.id })).await;
        assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
    }
    let anonymous = app.gql(None, BLOCKED, json!({})).await;
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
}

#[tokio::test]
async fn the_blocker_does_not_see_the_blocked_users_typing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let conversation = app.direct(&alice, &mallory).await;
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;
    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws
        .subscribe("t", TYPING, json!({ "c": conversation }))
        .await;
    // Mallory still sees Alice typing: the block is Alice's.
    let mut mallory_ws = app.ws(Some(&mallory.token)).await;
    mallory_ws
        .subscribe("t", TYPING, json!({ "c": conversation }))
        .await;
    tokio::time::sleep(QUIET).await;

    app.data(
        &mallory.token,
        SET_TYPING,
        json!({ "c": conversation, "t": true }),
    )
    .await;
    app.data(
        &alice.token,
        SET_TYPING,
        json!({ "c": conversation, "t": true }),
    )
    .await;

    let seen = mallory_ws.next_data("t").await;
    assert_eq!(seen["typing"]["user"]["id"], alice.id);
    alice_ws.expect_silence().await;

    // Unblocked, a new subscription shows it again.
    app.data(&alice.token, UNBLOCK, json!({ "u": mallory.id }))
        .await;
    alice_ws
        .subscribe("t2", TYPING, json!({ "c": conversation }))
        .await;
    tokio::time::sleep(QUIET).await;
    app.data(
        &mallory.token,
        SET_TYPING,
        json!({ "c": conversation, "t": false }),
    )
    .await;
    let seen = alice_ws.next_data("t2").await;
    assert_eq!(seen["typing"]["user"]["id"], mallory.id);
}

#[tokio::test]
async fn the_blocker_does_not_see_the_blocked_users_presence() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    app.direct(&alice, &mallory).await;
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;

    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws
        .subscribe("named", WATCH, json!({ "u": [mallory.id] }))
        .await;
    alice_ws.subscribe("all", WATCH, json!({})).await;
    tokio::time::sleep(QUIET).await;
    let _mallory_ws = app.ws(Some(&mallory.token)).await;
    tokio::time::sleep(QUIET).await;

    alice_ws.expect_silence().await;
    let seen = app
        .data(&alice.token, PRESENCE_OF, json!({ "u": mallory.id }))
        .await;
    assert_eq!(seen["user"]["presence"], Value::Null);
    // Mallory, not blocked by anyone, still sees Alice.
    let seen = app
        .data(&mallory.token, PRESENCE_OF, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "ONLINE");

    app.data(&alice.token, UNBLOCK, json!({ "u": mallory.id }))
        .await;
    let seen = app
        .data(&alice.token, PRESENCE_OF, json!({ "u": mallory.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "ONLINE");
    alice_ws
        .subscribe("again", WATCH, json!({ "u": [mallory.id] }))
        .await;
    assert_eq!(
        alice_ws.next_data("again").await["presence"]["status"],
        "ONLINE"
    );
}
