use serde_json::json;

use crate::helpers::*;

const LIST: &str = "{ conversations { edges { cursor node { id unreadCount lastMessage { body } } } pageInfo { hasNextPage endCursor } } unreadCount }";
const MARK_READ: &str = "mutation($c: ID!, $m: ID) { markRead(conversationId: $c, upToMessageId: $m) { id unreadCount } }";

fn unread_of(list: &serde_json::Value, conversation: &str) -> i64 {
    list["conversations"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["id"] == conversation)
        .map(|e| e["node"]["unreadCount"].as_i64().unwrap())
        .expect("conversation listed")
}

#[tokio::test]
async fn conversations_are_listed_latest_activity_first_with_their_last_message() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let with_bob = app.direct(&alice, &bob).await;
    let with_carol = app.direct(&alice, &carol).await;
    app.send(&bob, &with_bob, "newest").await;

    let list = app.data(&alice.token, LIST, json!({})).await;
    let ids: Vec<_> = list["conversations"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![with_bob.clone(), with_carol.clone()]);
    assert_eq!(
        list["conversations"]["edges"][0]["node"]["lastMessage"]["body"],
        "newest"
    );

    // Paging with `first: 1` walks the same order.
    let first = app
        .data(&alice.token, "{ conversations(first: 1) { edges { node { id } } pageInfo { hasNextPage endCursor } } }", json!({}))
        .await;
    assert_eq!(first["conversations"]["edges"][0]["node"]["id"], with_bob);
    assert_eq!(first["conversations"]["pageInfo"]["hasNextPage"], true);
    let next = app
        .data(
            &alice.token,
            "query($a: String) { conversations(first: 1, after: $a) { edges { node { id } } pageInfo { hasNextPage } } }",
            json!({ "a": first["conversations"]["pageInfo"]["endCursor"] }),
        )
        .await;
    assert_eq!(next["conversations"]["edges"][0]["node"]["id"], with_carol);
    assert_eq!(next["conversations"]["pageInfo"]["hasNextPage"], false);
}

#[tokio::test]
async fn unread_counts_follow_read_markers_and_never_count_own_messages() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    // Alice opens both conversations; her own greetings never count as unread for her.
    let with_bob = app.direct(&alice, &bob).await;
    let with_carol = app.direct(&alice, &carol).await;
    let mut from_bob = Vec::new();
    for i in 0..3 {
        from_bob.push(app.send(&bob, &with_bob, &format!("b{i}")).await);
    }
    app.send(&carol, &with_carol, "c0").await;
    app.send(&carol, &with_carol, "c1").await;
    app.send(&alice, &with_bob, "mine").await;

    let list = app.data(&alice.token, LIST, json!({})).await;
    assert_eq!(unread_of(&list, &with_bob), 3);
    assert_eq!(unread_of(&list, &with_carol), 2);
    assert_eq!(list["unreadCount"], 5);
    // Bob has alice's greeting and "mine" unread.
    let bobs = app.data(&bob.token, LIST, json!({})).await;
    assert_eq!(bobs["unreadCount"], 2);

    // Marking read up to the second of bob's messages leaves one.
    let marked = app
        .data(
            &alice.token,
            MARK_READ,
            json!({ "c": with_bob, "m": from_bob[1]["id"] }),
        )
        .await;
    assert_eq!(marked["markRead"]["unreadCount"], 1);
    // Marking an earlier message does not move the marker back.
    let marked = app
        .data(
            &alice.token,
            MARK_READ,
            json!({ "c": with_bob, "m": from_bob[0]["id"] }),
        )
        .await;
    assert_eq!(marked["markRead"]["unreadCount"], 1);
    // Marking the whole conversation clears it; the other is untouched.
    app.data(&alice.token, MARK_READ, json!({ "c": with_bob }))
        .await;
    let list = app.data(&alice.token, LIST, json!({})).await;
    assert_eq!(unread_of(&list, &with_bob), 0);
    assert_eq!(unread_of(&list, &with_carol), 2);
    assert_eq!(list["unreadCount"], 2);

    // A deleted unread message stops counting.
    let c2 = app.send(&carol, &with_carol, "oops").await;
    let list = app.data(&alice.token, LIST, json!({})).await;
    assert_eq!(list["unreadCount"], 3);
    app.data(
        &carol.token,
        "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
        json!({ "id": c2["id"] }),
    )
    .await;
    let list = app.data(&alice.token, LIST, json!({})).await;
    assert_eq!(list["unreadCount"], 2);
}

#[tokio::test]
async fn read_by_and_is_read_reflect_the_other_participants_marker() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app.send(&alice, &conversation, "did you see this?").await;
    let query = "query($c: ID!) { messages(conversationId: $c, last: 1) { edges { node { id isRead readBy { id } } } } }";

    let before = app
        .data(&alice.token, query, json!({ "c": conversation }))
        .await;
    let node = &before["messages"]["edges"][0]["node"];
    assert_eq!(node["id"], message["id"]);
    assert_eq!(node["isRead"], false);
    assert_eq!(node["readBy"], json!([]));
    let bobs_view = app
        .data(&bob.token, query, json!({ "c": conversation }))
        .await;
    assert_eq!(bobs_view["messages"]["edges"][0]["node"]["isRead"], false);

    app.data(&bob.token, MARK_READ, json!({ "c": conversation }))
        .await;
    let after = app
        .data(&alice.token, query, json!({ "c": conversation }))
        .await;
    let node = &after["messages"]["edges"][0]["node"];
    assert_eq!(node["isRead"], true);
    assert_eq!(node["readBy"], json!([{ "id": bob.id }]));
    let bobs_view = app
        .data(&bob.token, query, json!({ "c": conversation }))
        .await;
    assert_eq!(bobs_view["messages"]["edges"][0]["node"]["isRead"], true);
}

#[tokio::test]
async fn users_can_be_searched_by_name() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let _bob = app.user("bob").await;
    let found = app
        .data(
            &alice.token,
            "query($s: String) { users(search: $s) { edges { node { id username } } } }",
            json!({ "s": "BOB" }),
        )
        .await;
    let edges = found["users"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert!(
        edges[0]["node"]["username"]
            .as_str()
            .unwrap()
            .starts_with("bob")
    );
    // LIKE wildcards are taken literally.
    let none = app
        .data(
            &alice.token,
            "{ users(search: \"%\") { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(none["users"]["edges"], json!([]));
}

#[tokio::test]
async fn a_rooms_last_message_follows_sends_and_system_messages_alike() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "plans", &[&bob]).await;
    let last = |token: String| {
        let app = &app;
        let room = room.clone();
        async move {
            let list = app
                .data(
                    &token,
                    "{ conversations(kind: ROOM) { edges { node { id lastMessage { id body systemEvent { kind } } } } } }",
                    json!({}),
                )
                .await;
            list["conversations"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["node"]["id"] == room.as_str())
                .map(|e| e["node"]["lastMessage"].clone())
                .expect("room listed")
        }
    };

    let sent = app.send(&bob, &room, "see you at 3").await;
    let after_send = last(alice.token.clone()).await;
    assert_eq!(after_send["id"], sent["id"]);
    assert_eq!(after_send["body"], "see you at 3");

    app.data(
        &alice.token,
        "mutation($r: ID!, $u: ID!) { addMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": carol.id }),
    )
    .await;
    let after_add = last(bob.token.clone()).await;
    assert_eq!(after_add["systemEvent"]["kind"], "MEMBER_ADDED");
    assert_ne!(after_add["id"], sent["id"]);
    // The newcomer sees the same last message.
    assert_eq!(last(carol.token.clone()).await["id"], after_add["id"]);
}
