//! Blocking: no direct messages from a blocked user, nor being added by them to a room; their
//! typing and presence hidden from the blocker, the blocker's presence hidden from them; rooms both
//! are in are unaffected.
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
    // Carol's typing, which Alice sees, shows Alice's subscription live and marks the check's end.
    let carol = app.user("carol").await;
    let carols = app.direct(&carol, &alice).await;
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;
    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws.subscribe("t", TYPING, json!({})).await;
    alice_ws
        .until_live(&["t"], 2, async |n| {
            app.probe_typing(&carol, &carols, n).await
        })
        .await;
    // Mallory still sees Alice typing: the block is Alice's.
    let mut mallory_ws = app.ws(Some(&mallory.token)).await;
    mallory_ws
        .subscribe("t", TYPING, json!({ "c": conversation }))
        .await;
    mallory_ws
        .until_live(&["t"], 2, async |n| {
            app.probe_typing(&alice, &conversation, n).await
        })
        .await;

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
    app.probe_typing(&carol, &carols, 0).await;
    let marker = alice_ws.expect_next_event("t", "\"isTyping\":true").await;
    assert_eq!(marker["typing"]["user"]["id"], carol.id);

    // Unblocked, a new subscription shows it again (the first keeps the block it started with).
    app.data(&alice.token, UNBLOCK, json!({ "u": mallory.id }))
        .await;
    alice_ws
        .subscribe("t2", TYPING, json!({ "c": conversation }))
        .await;
    alice_ws
        .until_live(&["t2"], 2, async |n| {
            app.probe_typing(&mallory, &conversation, n).await
        })
        .await;
    app.data(
        &mallory.token,
        SET_TYPING,
        json!({ "c": conversation, "t": true }),
    )
    .await;
    let seen = alice_ws.next_data("t2").await;
    assert_eq!(seen["typing"]["user"]["id"], mallory.id);
    assert_eq!(seen["typing"]["isTyping"], true);
}

#[tokio::test]
async fn the_blocker_does_not_see_the_blocked_users_presence() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    app.direct(&alice, &mallory).await;
    // Someone Alice sees come and go: shows her subscriptions live and marks the check's end.
    let carol = app.user("carol").await;
    app.direct(&carol, &alice).await;
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;

    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws
        .subscribe("named", WATCH, json!({ "u": [mallory.id, carol.id] }))
        .await;
    // The current state of Carol only.
    let snapshot = alice_ws.next_data("named").await;
    assert_eq!(snapshot["presence"]["user"]["id"], carol.id);
    alice_ws.subscribe("all", WATCH, json!({})).await;
    let mut carols = PresenceProbe::new(&carol);
    alice_ws
        .until_live(&["named", "all"], 2, async |n| carols.probe(&app, n).await)
        .await;
    let _mallory_ws = app.ws(Some(&mallory.token)).await;
    // Carol comes online after Mallory: Mallory's coming would come first.
    let mark = carols.probe(&app, 0).await;
    for marker in alice_ws
        .expect_markers(&[("named", &mark), ("all", &mark)])
        .await
    {
        assert_eq!(marker["presence"]["user"]["id"], carol.id);
    }
    let seen = app
        .data(&alice.token, PRESENCE_OF, json!({ "u": mallory.id }))
        .await;
    assert_eq!(seen["user"]["presence"], Value::Null);
    // Nor does Mallory see Alice, who is online: the blocker reads OFFLINE to the blocked user.
    let seen = app
        .data(&mallory.token, PRESENCE_OF, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "OFFLINE");

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

const CREATE_ROOM: &str =
    "mutation($m: [ID!]!) { createRoom(input: {name: \"ours\", memberIds: $m}) { id } }";
const ADD: &str = "mutation($r: ID!, $u: ID!) { addMember(roomId: $r, userId: $u) { id } }";
const ROOMS: &str = "{ conversations(kind: ROOM) { edges { node { id } } } }";
const MEMBERS: &str = "query($c: ID!) { conversation(id: $c) { members { user { id } } } }";

async fn room_ids(app: &TestApp, user: &TestUser) -> Vec<Value> {
    app.data(&user.token, ROOMS, json!({})).await["conversations"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].clone())
        .collect()
}

#[tokio::test]
async fn a_blocked_user_cannot_add_the_blocker_to_a_room() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let bob = app.user("bob").await;
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;

    // A room of the two of them would be a direct conversation by another name.
    for members in [json!([alice.id]), json!([bob.id, alice.id])] {
        let refused = app
            .gql(Some(&mallory.token), CREATE_ROOM, json!({ "m": members }))
            .await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
    }
    // Nothing was made: no room for anyone, so nothing Mallory writes can reach Alice.
    for user in [&alice, &mallory, &bob] {
        assert_eq!(room_ids(&app, user).await, Vec::<Value>::new());
    }

    // Nor can Mallory add Alice to a room Mallory runs.
    let room = app.room(&mallory, "plans", &[&bob]).await;
    let refused = app
        .gql(
            Some(&mallory.token),
            ADD,
            json!({ "r": room, "u": alice.id }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
    let members = app
        .data(&mallory.token, MEMBERS, json!({ "c": room }))
        .await;
    let ids: Vec<&Value> = members["conversation"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["user"]["id"])
        .collect();
    assert!(!ids.contains(&&json!(alice.id)), "{members}");
    assert_eq!(room_ids(&app, &alice).await, Vec::<Value>::new());

    // The block is Alice's: she may still put Mallory in a room, and others may add her to one
    // Mallory is in.
    app.room(&alice, "hers", &[&mallory]).await;
    app.data(
        &mallory.token,
        "mutation($r: ID!, $u: ID!) { setMemberRole(roomId: $r, userId: $u, role: ADMIN) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;
    app.data(&bob.token, ADD, json!({ "r": room, "u": alice.id }))
        .await;
    assert_eq!(room_ids(&app, &alice).await.len(), 2);

    // Lifted, the block no longer stands in the way.
    app.data(&alice.token, UNBLOCK, json!({ "u": mallory.id }))
        .await;
    app.data(&mallory.token, CREATE_ROOM, json!({ "m": [alice.id] }))
        .await;
    assert_eq!(room_ids(&app, &alice).await.len(), 3);
}

const WATCH_FULL: &str =
    "subscription($u: [ID!]) { presence(userIds: $u) { status lastSeenAt user { id } } }";
const PRESENCE_FULL: &str = "query($u: ID!) { user(id: $u) { presence { status lastSeenAt } } }";

async fn quick_presence_app() -> TestApp {
    let mut config = test_config().await;
    config.presence_grace_ms = 300;
    spawn_app_with(config).await
}

/// The next presence event of subscription `id`: (user id, status, whether a last-seen time came).
async fn next_presence(ws: &mut WsClient, id: &str) -> (String, String, bool) {
    let data = ws.next_data(id).await;
    let event = &data["presence"];
    (
        event["user"]["id"].as_str().unwrap().to_owned(),
        event["status"].as_str().unwrap().to_owned(),
        event["lastSeenAt"].is_string(),
    )
}

#[tokio::test]
async fn the_blocker_is_offline_to_the_blocked_user_whatever_they_do() {
    let app = quick_presence_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let dave = app.user("dave").await;
    app.direct(&alice, &mallory).await;
    app.direct(&alice, &bob).await;
    app.direct(&carol, &mallory).await;
    app.direct(&dave, &mallory).await;
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;

    // Mallory watches Alice and Carol by name, and everyone she may see.
    let mut mallory_ws = app.ws(Some(&mallory.token)).await;
    mallory_ws
        .subscribe("named", WATCH_FULL, json!({ "u": [alice.id, carol.id] }))
        .await;
    let mut snapshot = vec![
        next_presence(&mut mallory_ws, "named").await,
        next_presence(&mut mallory_ws, "named").await,
    ];
    snapshot.sort();
    let mut expected = vec![
        (alice.id.clone(), "OFFLINE".to_owned(), false),
        (carol.id.clone(), "OFFLINE".to_owned(), false),
    ];
    expected.sort();
    assert_eq!(snapshot, expected);
    mallory_ws.subscribe("all", WATCH_FULL, json!({})).await;
    // Dave coming online shows that "all" is listening (it starts with no snapshot).
    let _dave_ws = app.ws(Some(&dave.token)).await;
    assert_eq!(
        next_presence(&mut mallory_ws, "all").await,
        (dave.id.clone(), "ONLINE".to_owned(), false)
    );
    // Bob, who shares a conversation with Alice and is not blocked, witnesses her transitions.
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe("alice", WATCH_FULL, json!({ "u": [alice.id] }))
        .await;
    assert_eq!(next_presence(&mut bob_ws, "alice").await.1, "OFFLINE");

    // Alice comes online: Bob is told; Mallory is not. Carol coming online after it is the next
    // thing Mallory hears on both subscriptions, so a leak of Alice's would have come first.
    let alice_ws = app.ws(Some(&alice.token)).await;
    assert_eq!(
        next_presence(&mut bob_ws, "alice").await,
        (alice.id.clone(), "ONLINE".to_owned(), false)
    );
    let carol_ws = app.ws(Some(&carol.token)).await;
    for id in ["named", "all"] {
        assert_eq!(
            next_presence(&mut mallory_ws, id).await,
            (carol.id.clone(), "ONLINE".to_owned(), false),
            "{id}"
        );
    }
    let seen = app
        .data(&mallory.token, PRESENCE_FULL, json!({ "u": alice.id }))
        .await;
    assert_eq!(
        seen["user"]["presence"],
        json!({ "status": "OFFLINE", "lastSeenAt": null })
    );
    let seen = app
        .data(&bob.token, PRESENCE_FULL, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "ONLINE");

    // Alice goes offline (Bob sees it, with her last-seen time); Mallory hears only Carol leave.
    drop(alice_ws);
    let (_, status, last_seen) = next_presence(&mut bob_ws, "alice").await;
    assert_eq!((status.as_str(), last_seen), ("OFFLINE", true));
    drop(carol_ws);
    for id in ["named", "all"] {
        assert_eq!(
            next_presence(&mut mallory_ws, id).await,
            (carol.id.clone(), "OFFLINE".to_owned(), true),
            "{id}"
        );
    }
    // Her last-seen time is not shown to Mallory either.
    let seen = app
        .data(&mallory.token, PRESENCE_FULL, json!({ "u": alice.id }))
        .await;
    assert_eq!(
        seen["user"]["presence"],
        json!({ "status": "OFFLINE", "lastSeenAt": null })
    );
}

#[tokio::test]
async fn blocking_takes_an_online_blocker_offline_for_the_blocked_user_and_unblocking_brings_them_back()
 {
    let app = quick_presence_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    app.direct(&alice, &mallory).await;
    let mut mallory_ws = app.ws(Some(&mallory.token)).await;
    mallory_ws
        .subscribe("named", WATCH_FULL, json!({ "u": [alice.id] }))
        .await;
    assert_eq!(next_presence(&mut mallory_ws, "named").await.1, "OFFLINE");
    let _alice_ws = app.ws(Some(&alice.token)).await;
    let online = (alice.id.clone(), "ONLINE".to_owned(), false);
    assert_eq!(next_presence(&mut mallory_ws, "named").await, online);

    // Mallory saw Alice come online; once blocked, she sees her leave, as anyone who leaves.
    app.data(&alice.token, BLOCK, json!({ "u": mallory.id }))
        .await;
    assert_eq!(
        next_presence(&mut mallory_ws, "named").await,
        (alice.id.clone(), "OFFLINE".to_owned(), false)
    );
    let seen = app
        .data(&mallory.token, PRESENCE_FULL, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "OFFLINE");

    app.data(&alice.token, UNBLOCK, json!({ "u": mallory.id }))
        .await;
    assert_eq!(next_presence(&mut mallory_ws, "named").await, online);
    let seen = app
        .data(&mallory.token, PRESENCE_FULL, json!({ "u": alice.id }))
        .await;
    assert_eq!(seen["user"]["presence"]["status"], "ONLINE");
}
