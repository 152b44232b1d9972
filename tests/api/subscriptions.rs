use serde_json::json;

use crate::helpers::*;

const EVENTS: &str = "subscription($c: ID, $s: String) { messageEvents(conversationId: $c, since: $s) { kind cursor message { id body deletedAt sender { id } } } }";
const TYPING: &str =
    "subscription($c: ID) { typing(conversationId: $c) { conversationId isTyping user { id } } }";
const RECEIPTS: &str = "subscription($c: ID) { readReceipts(conversationId: $c) { conversationId upToMessageId user { id } } }";

#[tokio::test]
async fn a_live_subscriber_receives_created_edited_and_deleted_in_order() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;

    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe("one", EVENTS, json!({ "c": conversation }))
        .await;
    bob_ws.subscribe("all", EVENTS, json!({})).await;
    bob_ws
        .until_live(&["one", "all"], 1, async |_| {
            app.probe_message(&alice, &conversation).await
        })
        .await;

    let message = app.send(&alice, &conversation, "hi").await;
    app.data(
        &alice.token,
        "mutation($id: ID!) { editMessage(id: $id, body: \"hi!\") { id } }",
        json!({ "id": message["id"] }),
    )
    .await;
    app.data(
        &alice.token,
        "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
        json!({ "id": message["id"] }),
    )
    .await;

    for id in ["one", "all"] {
        let created = bob_ws.next_data(id).await;
        let edited = bob_ws.next_data(id).await;
        let deleted = bob_ws.next_data(id).await;
        assert_eq!(created["messageEvents"]["kind"], "CREATED");
        assert_eq!(created["messageEvents"]["message"]["id"], message["id"]);
        assert_eq!(
            created["messageEvents"]["message"]["sender"]["id"],
            alice.id
        );
        assert_eq!(edited["messageEvents"]["kind"], "EDITED");
        assert_eq!(edited["messageEvents"]["message"]["body"], "hi!");
        assert_eq!(deleted["messageEvents"]["kind"], "DELETED");
        assert!(deleted["messageEvents"]["message"]["body"].is_null());
    }
}

#[tokio::test]
async fn an_outsider_receives_nothing_and_cannot_subscribe_to_the_conversation() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let eve = app.user("eve").await;
    let conversation = app.direct(&alice, &bob).await;
    // Eve's own conversation, with which her subscriptions are seen to be live and in which the
    // markers come.
    let carol = app.user("carol").await;
    let hers = app.direct(&carol, &eve).await;

    let mut eve_ws = app.ws(Some(&eve.token)).await;
    eve_ws.subscribe("mine", EVENTS, json!({})).await;
    eve_ws.subscribe("typing", TYPING, json!({})).await;
    eve_ws.subscribe("receipts", RECEIPTS, json!({})).await;
    eve_ws
        .until_live(&["mine", "receipts"], 1, async |_| {
            app.probe_receipt(&eve, &carol, &hers).await
        })
        .await;
    eve_ws
        .until_live(&["typing"], 2, async |n| {
            app.probe_typing(&carol, &hers, n).await
        })
        .await;
    app.send(&alice, &conversation, "secret").await;
    app.data(
        &alice.token,
        "mutation($c: ID!) { setTyping(conversationId: $c, isTyping: true) }",
        json!({ "c": conversation }),
    )
    .await;
    app.data(
        &bob.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    // Markers in Eve's own conversation: whatever leaked would have come before each.
    let marker = app.probe_message(&eve, &hers).await;
    eve_ws.expect_next_event("mine", &marker).await;
    app.data(
        &carol.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": hers }),
    )
    .await;
    eve_ws.expect_next_event("receipts", &marker).await;
    app.probe_typing(&carol, &hers, 0).await;
    eve_ws
        .expect_next_event("typing", "\"isTyping\":true")
        .await;

    for (id, query) in [("a", EVENTS), ("b", TYPING), ("c", RECEIPTS)] {
        eve_ws
            .subscribe(id, query, json!({ "c": conversation }))
            .await;
        assert_eq!(eve_ws.next_error_code(id).await, "NOT_FOUND");
    }
}

#[tokio::test]
async fn typing_reaches_the_other_participant_but_not_the_typist() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    let mut alice_ws = app.ws(Some(&alice.token)).await;
    bob_ws
        .subscribe("t", TYPING, json!({ "c": conversation }))
        .await;
    alice_ws.subscribe("t", TYPING, json!({})).await;
    bob_ws
        .until_live(&["t"], 2, async |n| {
            app.probe_typing(&alice, &conversation, n).await
        })
        .await;
    // Alice's subscription is seen live through Bob typing to her.
    alice_ws
        .until_live(&["t"], 2, async |n| {
            app.probe_typing(&bob, &conversation, n).await
        })
        .await;

    for typing in [true, false] {
        let set = app
            .data(
                &alice.token,
                "mutation($c: ID!, $t: Boolean!) { setTyping(conversationId: $c, isTyping: $t) }",
                json!({ "c": conversation, "t": typing }),
            )
            .await;
        assert_eq!(set["setTyping"], true);
        let event = bob_ws.next_data("t").await;
        assert_eq!(event["typing"]["isTyping"], typing);
        assert_eq!(event["typing"]["user"]["id"], alice.id);
        assert_eq!(event["typing"]["conversationId"], conversation);
    }
    // The marker: Bob typing, which Alice sees; her own typing would have come before it.
    app.probe_typing(&bob, &conversation, 0).await;
    let marker = alice_ws.expect_next_event("t", "\"isTyping\":true").await;
    assert_eq!(marker["typing"]["user"]["id"], bob.id);
}

#[tokio::test]
async fn read_receipts_reach_the_other_participant() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws
        .subscribe("r", RECEIPTS, json!({ "c": conversation }))
        .await;
    alice_ws
        .until_live(&["r"], 1, async |_| {
            app.probe_receipt(&alice, &bob, &conversation).await
        })
        .await;
    let message = app.send(&alice, &conversation, "read me").await;

    app.data(
        &bob.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    let receipt = alice_ws.next_data("r").await;
    assert_eq!(receipt["readReceipts"]["user"]["id"], bob.id);
    assert_eq!(receipt["readReceipts"]["upToMessageId"], message["id"]);
    // Marking read again moves nothing and tells no one: the next receipt is the marker's.
    app.data(
        &bob.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    let marker = app.probe_receipt(&alice, &bob, &conversation).await;
    alice_ws.expect_next_event("r", &marker).await;
}

#[tokio::test]
async fn resuming_with_a_cursor_replays_what_was_missed_then_continues_live() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;

    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("s", EVENTS, json!({ "c": conversation }))
        .await;
    ws.until_live(&["s"], 1, async |_| {
        app.probe_message(&alice, &conversation).await
    })
    .await;
    let first = app.send(&alice, &conversation, "one").await;
    let seen = ws.next_data("s").await;
    let cursor = seen["messageEvents"]["cursor"].as_str().unwrap().to_owned();
    drop(ws);

    // While bob is away: two sends, an edit and a delete.
    let two = app.send(&alice, &conversation, "two").await;
    app.send(&alice, &conversation, "three").await;
    app.data(
        &alice.token,
        "mutation($id: ID!) { editMessage(id: $id, body: \"TWO\") { id } }",
        json!({ "id": two["id"] }),
    )
    .await;
    app.data(
        &alice.token,
        "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
        json!({ "id": first["id"] }),
    )
    .await;

    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("s", EVENTS, json!({ "c": conversation, "s": cursor }))
        .await;
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let event = ws.next_data("s").await;
        kinds.push(event["messageEvents"]["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["CREATED", "CREATED", "EDITED", "DELETED"]);
    // Then live, with nothing repeated.
    app.send(&alice, &conversation, "four").await;
    let live = ws.next_data("s").await;
    assert_eq!(live["messageEvents"]["message"]["body"], "four");
    let marker = app.probe_message(&alice, &conversation).await;
    ws.expect_next_event("s", &marker).await;
}

#[tokio::test]
async fn queries_and_mutations_work_over_the_websocket_and_the_legacy_protocol() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut ws = app.ws(Some(&alice.token)).await;
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    assert_eq!(ws.next_data("q").await["me"]["id"], alice.id);
    ws.subscribe(
        "m",
        "mutation($r: ID!) { sendMessage(input: {recipientId: $r, body: \"over ws\"}) { body } }",
        json!({ "r": bob.id }),
    )
    .await;
    assert_eq!(ws.next_data("m").await["sendMessage"]["body"], "over ws");

    // The legacy subscriptions-transport-ws protocol ("graphql-ws").
    let mut legacy = app.ws_raw("graphql-ws").await;
    legacy
        .send_json(json!({ "type": "connection_init", "payload": { "token": bob.token } }))
        .await;
    assert_eq!(legacy.next_json().await.unwrap()["type"], "connection_ack");
    legacy
        .send_json(json!({ "id": "1", "type": "start", "payload": { "query": "{ me { id } }" } }))
        .await;
    let mut data = None;
    while let Some(frame) = legacy.next_json().await {
        if frame["type"] == "data" {
            data = Some(frame);
            break;
        }
    }
    let data = data.expect("a data frame");
    assert_eq!(data["payload"]["data"]["me"]["id"], bob.id);
}

/// Only fields that read the same to every member: resolved once per event and shared.
const SHAREABLE: &str = "subscription($c: ID) { messageEvents(conversationId: $c) { kind cursor message { id body sender { id username } conversation { id } } } }";
/// Reaches fields that differ per viewer: resolved for each subscriber.
const PER_VIEWER: &str = "subscription($c: ID) { messageEvents(conversationId: $c) { cursor message { id clientMessageId isRead conversation { unreadCount } } } }";

const SHARED_RENDERS: &str = "palaver_subscription_shared_renders_total";

#[tokio::test]
async fn members_asking_the_same_question_of_an_event_share_one_render_and_each_gets_all_of_it() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let members = [
        app.user("bob").await,
        app.user("carol").await,
        app.user("dave").await,
    ];
    let room = app
        .room(&alice, "Lobby", &members.iter().collect::<Vec<_>>())
        .await;
    let mut sockets = Vec::new();
    for member in &members {
        let mut ws = app.ws(Some(&member.token)).await;
        ws.subscribe("e", SHAREABLE, json!({ "c": room })).await;
        sockets.push(ws);
    }
    let mut live: Vec<_> = sockets.iter_mut().map(|ws| (ws, &["e"][..])).collect();
    until_all_live(&mut live, 1, async |_| {
        app.probe_message(&alice, &room).await
    })
    .await;
    let before = app.metric(SHARED_RENDERS).await;

    let sent = app.send(&alice, &room, "one for all").await;

    let mut payloads = Vec::new();
    for ws in &mut sockets {
        payloads.push(ws.next_data("e").await["messageEvents"].clone());
    }
    let event = &payloads[0];
    assert_eq!(event["kind"], "CREATED");
    assert_eq!(event["message"]["id"], sent["id"]);
    assert_eq!(event["message"]["body"], "one for all");
    assert_eq!(event["message"]["sender"]["id"], alice.id);
    assert_eq!(event["message"]["sender"]["username"], alice.username);
    assert_eq!(event["message"]["conversation"]["id"], room);
    assert!(event["cursor"].is_string());
    for other in &payloads[1..] {
        assert_eq!(other, event);
    }
    // One member resolved it; the two others were served that render.
    assert_eq!(app.metric(SHARED_RENDERS).await - before, 2);
}

#[tokio::test]
async fn fields_that_differ_per_viewer_are_resolved_for_each_subscriber_even_beside_shared_ones() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "Lobby", &[&bob, &carol]).await;
    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws
        .subscribe("own", PER_VIEWER, json!({ "c": room }))
        .await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe("own", PER_VIEWER, json!({ "c": room }))
        .await;
    bob_ws
        .subscribe("plain", SHAREABLE, json!({ "c": room }))
        .await;
    let mut carol_ws = app.ws(Some(&carol.token)).await;
    carol_ws
        .subscribe("plain", SHAREABLE, json!({ "c": room }))
        .await;
    until_all_live(
        &mut [
            (&mut alice_ws, &["own"][..]),
            (&mut bob_ws, &["own", "plain"][..]),
            (&mut carol_ws, &["plain"][..]),
        ],
        1,
        async |_| app.probe_message(&alice, &room).await,
    )
    .await;
    let before = app.metric(SHARED_RENDERS).await;
    let bob_unread_before = app
        .data(
            &bob.token,
            "query($c: ID!) { conversation(id: $c) { unreadCount } }",
            json!({ "c": room }),
        )
        .await["conversation"]["unreadCount"]
        .as_i64()
        .unwrap();

    app.data(
        &alice.token,
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: \"mine\", clientMessageId: \"device-7\"}) { id } }",
        json!({ "c": room }),
    )
    .await;

    let for_alice = alice_ws.next_data("own").await["messageEvents"].clone();
    let for_bob = bob_ws.next_data("own").await["messageEvents"].clone();
    // The sender sees her own client id; nobody else does.
    assert_eq!(for_alice["message"]["clientMessageId"], "device-7");
    assert!(for_bob["message"]["clientMessageId"].is_null());
    // Unread counts and read state are each viewer's own.
    assert_eq!(for_alice["message"]["conversation"]["unreadCount"], 0);
    assert_eq!(
        for_bob["message"]["conversation"]["unreadCount"],
        bob_unread_before + 1
    );
    assert_eq!(for_alice["message"]["isRead"], false);
    assert_eq!(for_bob["message"]["isRead"], false);
    assert_eq!(for_alice["cursor"], for_bob["cursor"]);

    let bob_plain = bob_ws.next_data("plain").await["messageEvents"].clone();
    let carol_plain = carol_ws.next_data("plain").await["messageEvents"].clone();
    assert_eq!(bob_plain, carol_plain);
    assert_eq!(bob_plain["message"]["body"], "mine");
    // Only the shareable pair shared: the per-viewer pair resolved twice.
    assert_eq!(app.metric(SHARED_RENDERS).await - before, 1);
}

#[tokio::test]
async fn a_burst_of_events_reaches_each_subscription_whole_one_frame_per_event() {
    // Events that are ready together are written to the socket together; each must still be its
    // own WebSocket message, none held back waiting for more.
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = app.room(&alice, "burst", &[&bob]).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws.subscribe("room", EVENTS, json!({ "c": room })).await;
    bob_ws.subscribe("all", EVENTS, json!({})).await;
    bob_ws
        .until_live(&["room", "all"], 1, async |_| {
            app.probe_message(&alice, &room).await
        })
        .await;

    const BURST: usize = 40;
    let bodies: Vec<String> = (0..BURST).map(|i| format!("burst {i}")).collect();
    // Sent at once, so that they commit together and reach the socket back to back.
    futures_util::future::join_all(bodies.iter().map(|body| app.send(&alice, &room, body))).await;

    // Every message once on each subscription, in the same order on both. (On PostgreSQL
    // concurrent sends commit in parallel transactions, so live order may differ slightly from
    // sequence order; cursors carry the sequence.)
    let mut orders = Vec::new();
    for id in ["room", "all"] {
        let mut seen = Vec::new();
        for _ in 0..BURST {
            let event = bob_ws.next_data(id).await;
            assert_eq!(event["messageEvents"]["kind"], "CREATED");
            seen.push(
                event["messageEvents"]["message"]["body"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let mut sorted = seen.clone();
        sorted.sort();
        let mut sent = bodies.clone();
        sent.sort();
        assert_eq!(sorted, sent, "every message once on {id}");
        orders.push(seen);
    }
    assert_eq!(orders[0], orders[1], "both subscriptions in the same order");
    // Nothing more: the next event on each is the marker's.
    let marker = app.probe_message(&alice, &room).await;
    bob_ws
        .expect_markers(&[("room", &marker), ("all", &marker)])
        .await;
}

/// A selection every member reads the same, under an alias: served plainly, beside the schema.
const PLAIN: &str = "subscription On($c: ID, $s: String) { live: messageEvents(conversationId: $c, since: $s) { kind cursor message { id body editedAt sender { id username } conversation { id } } } }";
/// The same, through a named fragment: a document the plain path leaves to the schema.
const THROUGH_SCHEMA: &str = "subscription On($c: ID, $s: String) { live: messageEvents(conversationId: $c, since: $s) { ...E } } fragment E on MessageEvent { kind cursor message { id body editedAt sender { id username } conversation { id } } }";
const PLAIN_SUBSCRIPTIONS: &str = "palaver_subscriptions_plain_total";

#[tokio::test]
async fn a_plain_subscription_is_answered_exactly_as_the_schema_answers_it() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let eve = app.user("eve").await;
    let room = app.room(&alice, "Lobby", &[&bob]).await;
    let plain_before = app.metric(PLAIN_SUBSCRIPTIONS).await;
    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("plain", PLAIN, json!({ "c": room })).await;
    ws.subscribe("schema", THROUGH_SCHEMA, json!({ "c": room }))
        .await;
    ws.until_live(&["plain", "schema"], 1, async |_| {
        app.probe_message(&alice, &room).await
    })
    .await;
    // Only the first took the plain path.
    assert_eq!(app.metric(PLAIN_SUBSCRIPTIONS).await - plain_before, 1);

    // Live: created, then edited.
    let sent = app.send(&alice, &room, "hello").await;
    app.data(
        &alice.token,
        "mutation($id: ID!) { editMessage(id: $id, body: \"hello again\") { id } }",
        json!({ "id": sent["id"] }),
    )
    .await;
    let mut cursor = None;
    for kind in ["CREATED", "EDITED"] {
        let plain = ws.next_payload("plain").await;
        let schema = ws.next_payload("schema").await;
        assert_eq!(plain, schema);
        assert_eq!(plain["data"]["live"]["kind"], kind, "{plain}");
        assert_eq!(plain["data"]["live"]["message"]["id"], sent["id"]);
        assert_eq!(plain["data"]["live"]["message"]["sender"]["id"], alice.id);
        cursor.get_or_insert(plain["data"]["live"]["cursor"].clone());
    }
    let marker = app.probe_message(&alice, &room).await;
    let markers = ws
        .expect_markers(&[("plain", &marker), ("schema", &marker)])
        .await;
    assert_eq!(markers[0], markers[1]);

    // Replayed from the change log after a cursor: the edit again, the same on both paths.
    let since = json!({ "c": room, "s": cursor.unwrap() });
    ws.subscribe("plain-again", PLAIN, since.clone()).await;
    ws.subscribe("schema-again", THROUGH_SCHEMA, since).await;
    let plain = ws.next_payload("plain-again").await;
    assert_eq!(plain, ws.next_payload("schema-again").await);
    assert_eq!(plain["data"]["live"]["kind"], "EDITED", "{plain}");
    assert_eq!(plain["data"]["live"]["message"]["body"], "hello again");

    // Refusals: the same error, code, path and place in the document. (A socket without a token
    // never gets as far: its connection_init is refused.)
    for (variables, code) in [
        (json!({ "c": room }), "NOT_FOUND"),
        (json!({ "s": "not-a-cursor" }), "BAD_USER_INPUT"),
    ] {
        let mut socket = app.ws(Some(&eve.token)).await;
        socket.subscribe("plain", PLAIN, variables.clone()).await;
        socket.subscribe("schema", THROUGH_SCHEMA, variables).await;
        let plain = socket.next_payload("plain").await;
        assert_eq!(plain, socket.next_payload("schema").await);
        assert_eq!(plain["errors"][0]["extensions"]["code"], code, "{plain}");
        assert_eq!(plain["errors"][0]["path"], json!(["live"]), "{plain}");
    }
}

#[tokio::test]
async fn message_event_documents_that_are_not_valid_are_refused_as_before_and_the_socket_lives_on()
{
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = app.room(&alice, "Lobby", &[&bob]).await;
    let mut ws = app.ws(Some(&bob.token)).await;
    let plain_before = app.metric(PLAIN_SUBSCRIPTIONS).await;
    let deep = format!(
        "subscription {{ messageEvents {{ message {}{{ id }}{} }} }}",
        "{ replyTo ".repeat(16),
        " }".repeat(16)
    );
    let cases = [
        (
            "unknown-field",
            "subscription { messageEvents { message { bogus } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "leaf-with-selection",
            "subscription { messageEvents { kind { x } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "object-without-selection",
            "subscription { messageEvents { message } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "wrong-literal",
            "subscription { messageEvents(since: 5) { kind } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "unknown-argument",
            "subscription { messageEvents(first: 1) { kind } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "unused-variable",
            "subscription($c: ID) { messageEvents { kind } }",
            json!({ "c": room }),
            "BAD_USER_INPUT",
        ),
        (
            "wrong-variable-type",
            "subscription($c: Int) { messageEvents(conversationId: $c) { kind } }",
            json!({ "c": 1 }),
            "BAD_USER_INPUT",
        ),
        (
            "missing-required",
            "subscription($c: ID!) { messageEvents(conversationId: $c) { kind } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        ("too-deep", deep.as_str(), json!({}), "QUERY_TOO_COMPLEX"),
    ];
    for (id, query, variables, code) in cases {
        ws.subscribe(id, query, variables).await;
        assert_eq!(ws.next_error_code(id).await, code, "{id}");
    }
    // None of them was taken for a plain subscription, and the socket still serves one.
    assert_eq!(app.metric(PLAIN_SUBSCRIPTIONS).await, plain_before);
    ws.subscribe("ok", PLAIN, json!({ "c": room })).await;
    ws.until_live(&["ok"], 1, async |_| app.probe_message(&alice, &room).await)
        .await;
    app.send(&alice, &room, "still here").await;
    let event = ws.next_data("ok").await;
    assert_eq!(event["live"]["message"]["body"], "still here");
}

/// Fields that differ per viewer, plainly and through the schema.
const PER_VIEWER_PLAIN: &str = "subscription($c: ID) { messageEvents(conversationId: $c) { cursor message { id clientMessageId isRead readBy { id } sender { id presence { status } } conversation { title unreadCount muted members { user { id } role } } } } }";
const PER_VIEWER_THROUGH_SCHEMA: &str = "subscription($c: ID) { messageEvents(conversationId: $c) { ...E } } fragment E on MessageEvent { cursor message { id clientMessageId isRead readBy { id } sender { id presence { status } } conversation { title unreadCount muted members { user { id } role } } } }";

#[tokio::test]
async fn a_plain_subscription_with_fields_that_differ_per_viewer_answers_each_viewer_as_the_schema_does()
 {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let plain_before = app.metric(PLAIN_SUBSCRIPTIONS).await;
    let shared_before = app.metric(SHARED_RENDERS).await;
    let mut sockets = Vec::new();
    for user in [&alice, &bob] {
        let mut ws = app.ws(Some(&user.token)).await;
        ws.subscribe("plain", PER_VIEWER_PLAIN, json!({ "c": conversation }))
            .await;
        ws.subscribe(
            "schema",
            PER_VIEWER_THROUGH_SCHEMA,
            json!({ "c": conversation }),
        )
        .await;
        sockets.push(ws);
    }
    let mut live: Vec<_> = sockets
        .iter_mut()
        .map(|ws| (ws, &["plain", "schema"][..]))
        .collect();
    until_all_live(&mut live, 1, async |_| {
        app.probe_message(&alice, &conversation).await
    })
    .await;
    assert_eq!(app.metric(PLAIN_SUBSCRIPTIONS).await - plain_before, 2);

    app.data(
        &alice.token,
        "mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: \"hi\", clientMessageId: \"device-1\"}) { id } }",
        json!({ "c": conversation }),
    )
    .await;

    let mut plains = Vec::new();
    for ws in &mut sockets {
        let plain = ws.next_payload("plain").await;
        assert_eq!(plain, ws.next_payload("schema").await);
        assert!(plain.get("errors").is_none(), "{plain}");
        plains.push(plain["data"]["messageEvents"]["message"].clone());
    }
    let (for_alice, for_bob) = (&plains[0], &plains[1]);
    // Each viewer got their own answer.
    assert_eq!(for_alice["clientMessageId"], "device-1");
    assert!(for_bob["clientMessageId"].is_null());
    assert_eq!(for_alice["conversation"]["unreadCount"], 0);
    let bob_unread = app
        .data(
            &bob.token,
            "query($c: ID!) { conversation(id: $c) { unreadCount } }",
            json!({ "c": conversation }),
        )
        .await["conversation"]["unreadCount"]
        .clone();
    assert!(bob_unread.as_i64().unwrap() > 0);
    assert_eq!(for_bob["conversation"]["unreadCount"], bob_unread);
    assert_eq!(for_alice["conversation"]["title"], bob.username);
    assert_eq!(for_bob["conversation"]["title"], alice.username);
    // Nothing viewer-dependent was shared between them.
    assert_eq!(app.metric(SHARED_RENDERS).await, shared_before);
}
