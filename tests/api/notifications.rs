use serde_json::{Value, json};

use crate::helpers::*;

const LIST: &str = "{ notifications { edges { node { id kind text count isRead sender { id } message { id } conversation { id } } } } notificationUnreadCount }";

async fn notifications(app: &TestApp, user: &TestUser) -> (Vec<Value>, i64) {
    let data = app.data(&user.token, LIST, json!({})).await;
    let nodes = data["notifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    (nodes, data["notificationUnreadCount"].as_i64().unwrap())
}

/// A probe for [`WsClient::until_live`] on `notifications`: `from` writes to `to` directly,
/// starting their conversation with it, so that every notification it makes there is a probe's;
/// the message's id, in quotes, is in the notification.
async fn probe_direct(app: &TestApp, from: &TestUser, to: &TestUser) -> String {
    let sent = app
        .data(
            &from.token,
            "mutation($r: ID!) { sendMessage(input: {recipientId: $r, body: \"probe\"}) { id } }",
            json!({ "r": to.id }),
        )
        .await;
    format!("\"{}\"", sent["sendMessage"]["id"].as_str().unwrap())
}

fn kinds(nodes: &[Value]) -> Vec<&str> {
    let mut kinds: Vec<&str> = nodes.iter().map(|n| n["kind"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    kinds
}

#[tokio::test]
async fn messages_replies_and_mentions_notify_the_right_users_and_never_the_actor() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;

    let (for_bob, unread) = notifications(&app, &bob).await;
    assert_eq!(kinds(&for_bob), ["MESSAGE"]);
    assert_eq!(unread, 1);
    assert_eq!(for_bob[0]["sender"]["id"], alice.id);
    assert_eq!(for_bob[0]["conversation"]["id"], conversation);
    assert_eq!(
        notifications(&app, &alice).await.1,
        0,
        "the sender is not notified"
    );

    // Bob answers one of Alice's messages: a REPLY for Alice.
    let question = app.send(&alice, &conversation, "lunch?").await;
    app.data(
        &bob.token,
        "mutation($c: ID!, $r: ID!) { sendMessage(input: {conversationId: $c, body: \"sure\", replyToId: $r}) { id } }",
        json!({ "c": conversation, "r": question["id"] }),
    )
    .await;
    let (for_alice, _) = notifications(&app, &alice).await;
    assert_eq!(kinds(&for_alice), ["REPLY"]);
    assert!(for_alice[0]["text"].as_str().unwrap().contains("sure"));

    // Alice mentions Bob: a MENTION, apart from his collapsed MESSAGE notification.
    let mention = app
        .send(
            &alice,
            &conversation,
            &format!("see @{} tomorrow", bob.username),
        )
        .await;
    let (for_bob, _) = notifications(&app, &bob).await;
    assert_eq!(kinds(&for_bob), ["MENTION", "MESSAGE"]);
    let mention_node = for_bob.iter().find(|n| n["kind"] == "MENTION").unwrap();
    assert_eq!(mention_node["message"]["id"], mention["id"]);
    assert_eq!(
        notifications(&app, &alice).await.0.len(),
        1,
        "still only the reply"
    );
}

#[tokio::test]
async fn unread_message_notifications_collapse_into_one_per_conversation() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    for i in 0..9 {
        app.send(&alice, &conversation, &format!("m{i}")).await;
    }
    let (for_bob, unread) = notifications(&app, &bob).await;
    assert_eq!(for_bob.len(), 1);
    assert_eq!(for_bob[0]["count"], 10);
    assert_eq!(
        for_bob[0]["text"].as_str().unwrap(),
        format!("{}: m8", alice.username)
    );
    assert_eq!(unread, 1);

    // Once read, the next message starts a fresh one.
    app.data(
        &bob.token,
        "mutation { markAllNotificationsRead }",
        json!({}),
    )
    .await;
    app.send(&alice, &conversation, "again").await;
    let (for_bob, unread) = notifications(&app, &bob).await;
    assert_eq!(for_bob.len(), 2);
    assert_eq!(unread, 1);
    // Reading the conversation reads its notifications too.
    app.data(
        &bob.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    assert_eq!(notifications(&app, &bob).await.1, 0);
}

#[tokio::test]
async fn a_muted_conversation_still_notifies_mentions() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    app.data(
        &bob.token,
        "mutation { markAllNotificationsRead }",
        json!({}),
    )
    .await;
    let muted = app
        .data(
            &bob.token,
            "mutation($c: ID!) { muteConversation(conversationId: $c) { muted } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(muted["muteConversation"]["muted"], true);

    app.send(&alice, &conversation, "quiet please").await;
    assert_eq!(notifications(&app, &bob).await.1, 0);
    app.send(&alice, &conversation, &format!("@{} wake up", bob.username))
        .await;
    let (for_bob, unread) = notifications(&app, &bob).await;
    assert_eq!(unread, 1);
    assert!(
        for_bob
            .iter()
            .any(|n| n["kind"] == "MENTION" && n["isRead"] == false)
    );

    // An outsider cannot mute someone else's conversation.
    let eve = app.user("eve").await;
    let refused = app
        .gql(
            Some(&eve.token),
            "mutation($c: ID!) { muteConversation(conversationId: $c) { muted } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("NOT_FOUND"));
}

#[tokio::test]
async fn only_ones_own_notifications_can_be_marked_read() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    app.direct(&alice, &bob).await;
    app.direct(&alice, &carol).await;
    let (for_bob, _) = notifications(&app, &bob).await;
    let (for_carol, _) = notifications(&app, &carol).await;
    let mark = "mutation($ids: [ID!]!) { markNotificationsRead(ids: $ids) }";

    // Carol names Bob's notification (alone, and beside her own): refused, nothing changes.
    for ids in [
        json!([for_bob[0]["id"]]),
        json!([for_bob[0]["id"], for_carol[0]["id"]]),
    ] {
        let refused = app
            .gql(Some(&carol.token), mark, json!({ "ids": ids }))
            .await;
        assert_eq!(error_code(&refused), Some("NOT_FOUND"), "{refused}");
    }
    assert_eq!(notifications(&app, &bob).await.1, 1);
    assert_eq!(notifications(&app, &carol).await.1, 1);

    let marked = app
        .data(&bob.token, mark, json!({ "ids": [for_bob[0]["id"]] }))
        .await;
    assert_eq!(marked["markNotificationsRead"], 1);
    assert_eq!(notifications(&app, &bob).await.1, 0);
    let unread_only = app
        .data(
            &bob.token,
            "{ notifications(unreadOnly: true) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(unread_only["notifications"]["edges"], json!([]));
    let forged = app
        .gql(Some(&bob.token), mark, json!({ "ids": ["ntf_x"] }))
        .await;
    assert_eq!(error_code(&forged), Some("BAD_USER_INPUT"));
}

#[tokio::test]
async fn new_notifications_arrive_live() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    // Carol's messages make notifications of their own (rows apart from this conversation's):
    // they show the subscriptions live and mark the end of the check.
    let carol = app.user("carol").await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    let mut alice_ws = app.ws(Some(&alice.token)).await;
    const FIELDS: &str = "id kind count text isRead createdAt updatedAt cursor sender { id } \
                          conversation { id } message { id }";
    let query = format!("subscription {{ notifications {{ {FIELDS} }} }}");
    bob_ws.subscribe("n", &query, json!({})).await;
    alice_ws.subscribe("n", &query, json!({})).await;
    bob_ws
        .until_live(&["n"], 1, async |_| probe_direct(&app, &carol, &bob).await)
        .await;
    alice_ws
        .until_live(&["n"], 1, async |_| {
            probe_direct(&app, &carol, &alice).await
        })
        .await;

    app.send(&alice, &conversation, "ping").await;
    let first = bob_ws.next_data("n").await;
    assert_eq!(first["notifications"]["kind"], "MESSAGE");
    assert_eq!(first["notifications"]["count"], 2);
    assert_eq!(first["notifications"]["sender"]["id"], alice.id);
    // What arrives live is the stored row, field for field.
    let stored = app
        .data(
            &bob.token,
            &format!("{{ notifications(first: 1) {{ edges {{ node {{ {FIELDS} }} }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(
        first["notifications"],
        stored["notifications"]["edges"][0]["node"]
    );
    app.send(&alice, &conversation, &format!("@{}", bob.username))
        .await;
    let second = bob_ws.next_data("n").await;
    assert_eq!(second["notifications"]["kind"], "MENTION");
    // Nothing of her own sends reached Alice: the next is the marker's.
    let marker = probe_direct(&app, &carol, &alice).await;
    alice_ws.expect_next_event("n", &marker).await;
}

#[tokio::test]
async fn being_added_to_or_removed_from_a_room_notifies_that_member_only() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app
        .data(
            &owner.token,
            "mutation($m: [ID!]!) { createRoom(input: {name: \"Front desk\", memberIds: $m}) { id } }",
            json!({ "m": [bob.id] }),
        )
        .await["createRoom"]["id"]
        .clone();
    let (for_bob, _) = notifications(&app, &bob).await;
    assert_eq!(kinds(&for_bob), ["ROOM_ADDED"]);
    assert!(for_bob[0]["text"].as_str().unwrap().contains("Front desk"));
    assert_eq!(for_bob[0]["conversation"]["id"], room);
    assert_eq!(
        notifications(&app, &owner).await.1,
        0,
        "the actor is not notified"
    );

    app.data(
        &owner.token,
        "mutation($r: ID!, $u: ID!) { addMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": carol.id }),
    )
    .await;
    assert_eq!(kinds(&notifications(&app, &carol).await.0), ["ROOM_ADDED"]);
    assert_eq!(
        kinds(&notifications(&app, &bob).await.0),
        ["ROOM_ADDED"],
        "others are not told"
    );

    app.data(
        &owner.token,
        "mutation($r: ID!, $u: ID!) { removeMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;
    let (for_bob, _) = notifications(&app, &bob).await;
    assert_eq!(kinds(&for_bob), ["ROOM_ADDED", "ROOM_REMOVED"]);
    // Once out, the notification no longer links to the room.
    assert!(for_bob.iter().all(|n| n["conversation"].is_null()));
}

#[tokio::test]
async fn a_file_makes_a_file_notification() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    app.data(
        &bob.token,
        "mutation { markAllNotificationsRead }",
        json!({}),
    )
    .await;
    // A minimal PNG signature and header: enough for the content to say "image".
    let mut png = vec![
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R',
    ];
    png.extend_from_slice(&[
        0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
    ]);
    app.send_file(&alice, &conversation, "dot.png", png).await;
    let (for_bob, unread) = notifications(&app, &bob).await;
    assert_eq!(unread, 1);
    let fresh: Vec<_> = for_bob.iter().filter(|n| n["isRead"] == false).collect();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["kind"], "FILE");
    assert_eq!(notifications(&app, &alice).await.1, 0);
}

/// A server that makes every conversation's collapsed notifications after the message's commit,
/// as it does for rooms bigger than `PALAVER_NOTIFY_INLINE_MEMBERS`.
async fn deferring_config() -> palaver::Config {
    let mut config = test_config().await;
    config.notify_inline_members = 0;
    config
}

/// Waits until each user's MESSAGE row shows `expected` (its count and the message it shows, or
/// None for no row), and fails if it does not within the usual wait.
async fn assert_collapsed(app: &TestApp, users: &[&TestUser], expected: &[Option<(i64, String)>]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut rows = Vec::new();
        for user in users {
            let (nodes, _) = notifications(app, user).await;
            rows.push(count_and_message(
                &nodes.into_iter().find(|n| n["kind"] == "MESSAGE"),
            ));
        }
        if rows == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rows:?} != {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn count_and_message(row: &Option<Value>) -> Option<(i64, String)> {
    row.as_ref().map(|n| {
        (
            n["count"].as_i64().unwrap(),
            n["message"]["id"].as_str().unwrap().to_owned(),
        )
    })
}

#[tokio::test]
async fn in_a_big_room_notifications_follow_the_message_and_arrive_live() {
    let app = spawn_app_with(deferring_config().await).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let outsider = app.user("dave").await;
    let room = app.room(&alice, "big", &[&bob]).await;
    // Carol's messages make notifications of their own: they show the subscriptions live and
    // mark the end of the check.
    let carol = app.user("carol").await;
    let mut outsider_ws = app.ws(Some(&outsider.token)).await;
    outsider_ws
        .subscribe(
            "n",
            "subscription { notifications { kind message { id } } }",
            json!({}),
        )
        .await;
    outsider_ws
        .until_live(&["n"], 1, async |_| {
            probe_direct(&app, &carol, &outsider).await
        })
        .await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe(
            "n",
            "subscription { notifications { kind count message { id } } }",
            json!({}),
        )
        .await;
    bob_ws
        .until_live(&["n"], 1, async |_| probe_direct(&app, &carol, &bob).await)
        .await;

    let first = app.send(&alice, &room, "one").await;
    let live = bob_ws.next_data("n").await;
    assert_eq!(live["notifications"]["kind"], "MESSAGE");
    assert_eq!(live["notifications"]["count"], 1);
    assert_eq!(live["notifications"]["message"]["id"], first["id"]);

    // A mention is made with the message; the collapsed row leaves that message out.
    app.send(&alice, &room, &format!("hi @{}", bob.username))
        .await;
    assert_eq!(
        bob_ws.next_data("n").await["notifications"]["kind"],
        "MENTION"
    );
    let second = app.send(&alice, &room, "two").await;
    let live = bob_ws.next_data("n").await;
    assert_eq!(live["notifications"]["kind"], "MESSAGE");
    assert_eq!(live["notifications"]["count"], 2);
    assert_eq!(live["notifications"]["message"]["id"], second["id"]);
    let (for_outsider, _) = notifications(&app, &outsider).await;
    assert!(
        for_outsider
            .iter()
            .all(|n| n["conversation"]["id"] != room.as_str()),
        "a non-member is never notified: {for_outsider:?}"
    );
    let marker = probe_direct(&app, &carol, &outsider).await;
    outsider_ws.expect_next_event("n", &marker).await;
    let (for_alice, _) = notifications(&app, &alice).await;
    assert!(
        for_alice.is_empty(),
        "the sender is never notified: {for_alice:?}"
    );
}

/// Messages whose notifications were not made when the server stopped are made at the next start,
/// all at once: each member's row counts what they neither sent nor were mentioned in, and shows
/// the last such message, the same as one message at a time would have.
#[tokio::test]
async fn a_notification_backlog_left_at_a_stop_is_worked_off_at_start() {
    let config = deferring_config().await;
    let app = spawn_app_with(config.clone()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "big", &[&bob, &carol]).await;
    let mut sent = Vec::new();
    for (from, body) in [
        (&alice, "a1".to_owned()),
        (&carol, "c1".to_owned()),
        (&alice, format!("@{} look", bob.username)),
        (&alice, "a2".to_owned()),
        (&carol, "c2".to_owned()),
        (&alice, "a3".to_owned()),
        (&carol, format!("@{} again", bob.username)),
    ] {
        sent.push(
            app.send(from, &room, &body).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let expected = vec![
        // alice: carol's three.
        Some((3, sent[6].clone())),
        // bob: all but the mentions.
        Some((5, sent[5].clone())),
        // carol: alice's four.
        Some((4, sent[5].clone())),
    ];
    let users = [&alice, &bob, &carol];
    assert_collapsed(&app, &users, &expected).await;
    // Where a client that saw everything so far would resume: its newest notification. That is the
    // last mention, or bob's MESSAGE row when the bump for `a3` ran after that mention was made
    // (it is stamped when it is made). Either way, the row re-made at start is newer.
    let newest = app
        .data(
            &bob.token,
            "{ notifications(first: 1) { edges { node { kind cursor } } } }",
            json!({}),
        )
        .await["notifications"]["edges"][0]["node"]
        .clone();
    assert!(
        newest["kind"] == "MENTION" || newest["kind"] == "MESSAGE",
        "{newest}"
    );
    drop(app);

    // As if the server had stopped after committing the messages and before their notifications.
    let db = sea_orm::Database::connect(config.database_url.as_str())
        .await
        .unwrap();
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(
        "DELETE FROM notifications WHERE kind IN ('MESSAGE', 'FILE'); \
         INSERT INTO notification_backlog (conversation_id, seq) \
         SELECT conversation_id, seq FROM messages WHERE sender_id IS NOT NULL",
    )
    .await
    .unwrap();
    db.close().await.unwrap();

    let app = spawn_app_with(config).await;
    assert_collapsed(&app, &users, &expected).await;
    let (for_bob, _) = notifications(&app, &bob).await;
    assert_eq!(
        kinds(&for_bob),
        ["MENTION", "MENTION", "MESSAGE", "ROOM_ADDED"]
    );
    // Made after the mention was: resuming from the mention brings it.
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe(
            "n",
            "subscription($s: String) { notifications(since: $s) { kind count } }",
            json!({ "s": newest["cursor"] }),
        )
        .await;
    let resumed = bob_ws.next_data("n").await;
    assert_eq!(resumed["notifications"]["kind"], "MESSAGE");
    assert_eq!(resumed["notifications"]["count"], 5);
}
