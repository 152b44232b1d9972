//! Threads: replies that hang off a root message, its summary, paging a thread, following one
//! live and resuming it, whom a reply notifies, and who may do any of it.
use serde_json::{Value, json};

use crate::helpers::*;

const REPLY: &str = "mutation($c: ID!, $b: String!, $t: ID) { sendMessage(input: {conversationId: $c, body: $b, threadRootId: $t}) { id createdAt thread { replyCount } threadRoot { id } } }";
const SUMMARY: &str = "query($c: ID!, $all: Boolean) { messages(conversationId: $c, includeThreadReplies: $all) { edges { node { id kind body threadRoot { id } thread { replyCount lastReplyAt unreadCount participants { id } } } } } }";
const THREAD: &str = "query($r: ID!, $first: Int, $after: String, $last: Int, $before: String) { thread(rootId: $r, first: $first, after: $after, last: $last, before: $before) { edges { node { body threadRoot { id } } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";
const FOLLOW: &str = "subscription($c: ID, $t: ID, $s: String) { messageEvents(conversationId: $c, threadRootId: $t, since: $s) { kind cursor message { id body threadRoot { id thread { replyCount } } } } }";
const NOTIFICATIONS: &str =
    "{ notifications { edges { node { kind count sender { id } message { id } } } } }";

fn id_of(sent: &Value) -> String {
    sent["id"].as_str().expect("a message id").to_owned()
}

async fn reply(app: &TestApp, who: &TestUser, conversation: &str, root: &str, body: &str) -> Value {
    app.data(
        &who.token,
        REPLY,
        json!({ "c": conversation, "b": body, "t": root }),
    )
    .await["sendMessage"]
        .clone()
}

/// The messages of a conversation as `who` lists them (the timeline, or everything), without
/// the server's own (the room's creation and the like).
async fn listed(app: &TestApp, who: &TestUser, conversation: &str, all: bool) -> Vec<Value> {
    app.data(
        &who.token,
        SUMMARY,
        json!({ "c": conversation, "all": all }),
    )
    .await["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .filter(|n| n["kind"] != "SYSTEM")
        .collect()
}

fn bodies(nodes: &[Value]) -> Vec<&str> {
    nodes.iter().map(|n| n["body"].as_str().unwrap()).collect()
}

async fn notifications(app: &TestApp, who: &TestUser) -> Vec<Value> {
    app.data(&who.token, NOTIFICATIONS, json!({})).await["notifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

#[tokio::test]
async fn replies_go_into_their_roots_thread_and_the_root_sums_them_up() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "Lobby", &[&bob, &carol]).await;
    let root = id_of(&app.send(&alice, &room, "who is in on friday?").await);
    let first = reply(&app, &bob, &room, &root, "me").await;
    assert_eq!(first["threadRoot"]["id"], root);
    assert!(first["thread"].is_null(), "a reply has no thread: {first}");
    reply(&app, &carol, &room, &root, "me too").await;
    app.send(&carol, &room, "unrelated").await;
    // The conversation's newest message is a reply: its timeline's last message stays put.
    let last = reply(&app, &bob, &room, &root, "bringing snacks").await;

    // The timeline leaves the replies out; the root sums them up.
    let timeline = listed(&app, &alice, &room, false).await;
    assert_eq!(bodies(&timeline), ["who is in on friday?", "unrelated"]);
    let summary = &timeline[0]["thread"];
    assert_eq!(summary["replyCount"], 3);
    assert_eq!(summary["lastReplyAt"], last["createdAt"]);
    assert_eq!(summary["unreadCount"], 3);
    assert_eq!(
        summary["participants"],
        json!([{ "id": alice.id }, { "id": bob.id }, { "id": carol.id }])
    );
    assert!(timeline[1]["thread"].is_null());
    // Bob has read his own replies, not Carol's.
    let for_bob = listed(&app, &bob, &room, false).await;
    assert_eq!(for_bob[0]["thread"]["unreadCount"], 1);

    // Asked for, replies come in their place in the conversation's order.
    let everything = listed(&app, &alice, &room, true).await;
    assert_eq!(
        bodies(&everything),
        [
            "who is in on friday?",
            "me",
            "me too",
            "unrelated",
            "bringing snacks"
        ]
    );
    assert_eq!(everything[1]["threadRoot"]["id"], root);

    // The conversation's last message and unread count are its timeline's; reading past the
    // replies reads them.
    let conversation = app
        .data(
            &alice.token,
            "query($c: ID!) { conversation(id: $c) { unreadCount lastMessage { body } } }",
            json!({ "c": room }),
        )
        .await;
    assert_eq!(
        conversation["conversation"],
        json!({ "unreadCount": 1, "lastMessage": { "body": "unrelated" } })
    );
    app.data(
        &alice.token,
        "mutation($c: ID!, $m: ID) { markRead(conversationId: $c, upToMessageId: $m) { id } }",
        json!({ "c": room, "m": last["id"] }),
    )
    .await;
    let timeline = listed(&app, &alice, &room, false).await;
    assert_eq!(timeline[0]["thread"]["unreadCount"], 0);
}

#[tokio::test]
async fn a_thread_pages_forward_and_backward_like_a_conversation() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let root = id_of(&app.send(&alice, &conversation, "root").await);
    for i in 1..=5 {
        reply(&app, &bob, &conversation, &root, &format!("r{i}")).await;
        app.send(&alice, &conversation, &format!("between {i}"))
            .await;
    }
    let page = |vars: Value| {
        let app = &app;
        let token = alice.token.clone();
        async move { app.data(&token, THREAD, vars).await["thread"].clone() }
    };
    let texts = |page: &Value| -> Vec<String> {
        page["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["body"].as_str().unwrap().to_owned())
            .collect()
    };

    let newest = page(json!({ "r": root })).await;
    assert_eq!(texts(&newest), ["r1", "r2", "r3", "r4", "r5"]);
    let first = page(json!({ "r": root, "first": 2 })).await;
    assert_eq!(texts(&first), ["r1", "r2"]);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["edges"][0]["node"]["threadRoot"]["id"], root);
    let next =
        page(json!({ "r": root, "first": 2, "after": first["pageInfo"]["endCursor"] })).await;
    assert_eq!(texts(&next), ["r3", "r4"]);
    let last = page(json!({ "r": root, "last": 2 })).await;
    assert_eq!(texts(&last), ["r4", "r5"]);
    assert_eq!(last["pageInfo"]["hasPreviousPage"], true);
    let before =
        page(json!({ "r": root, "last": 2, "before": last["pageInfo"]["startCursor"] })).await;
    assert_eq!(texts(&before), ["r2", "r3"]);
    let bad = app
        .gql(
            Some(&alice.token),
            THREAD,
            json!({ "r": root, "first": 101 }),
        )
        .await;
    assert_eq!(error_code(&bad), Some("BAD_USER_INPUT"), "{bad}");
}

#[tokio::test]
async fn threads_are_one_level_deep_and_stay_in_their_conversation() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = app.room(&alice, "Lobby", &[&bob]).await;
    let elsewhere = app.direct(&alice, &bob).await;
    let root = id_of(&app.send(&alice, &room, "root").await);
    let a_reply = id_of(&reply(&app, &bob, &room, &root, "reply").await);
    let other = id_of(&app.send(&alice, &elsewhere, "other").await);
    let oldest = app
        .data(
            &alice.token,
            "query($c: ID!) { messages(conversationId: $c, first: 1) { edges { node { id kind } } } }",
            json!({ "c": room }),
        )
        .await;
    let oldest = &oldest["messages"]["edges"][0]["node"];
    assert_eq!(oldest["kind"], "SYSTEM");
    let system = oldest["id"].as_str().unwrap().to_owned();
    let before = listed(&app, &alice, &room, true).await;

    for (target, conversation) in [
        (&a_reply, &room),
        (&other, &room),
        (&root, &elsewhere),
        (&system, &room),
    ] {
        let refused = app
            .gql(
                Some(&bob.token),
                REPLY,
                json!({ "c": conversation, "b": "nested?", "t": target }),
            )
            .await;
        assert_eq!(
            error_code(&refused),
            Some("BAD_USER_INPUT"),
            "{target}: {refused}"
        );
    }
    // Neither a reply nor a system message has a thread to page or follow.
    let refused = app
        .gql(Some(&alice.token), THREAD, json!({ "r": system }))
        .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
    let refused = app
        .gql(Some(&alice.token), THREAD, json!({ "r": a_reply }))
        .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
    let mut ws = app.ws(Some(&alice.token)).await;
    ws.subscribe("t", FOLLOW, json!({ "t": a_reply })).await;
    assert_eq!(ws.next_error_code("t").await, "BAD_USER_INPUT");
    // A root of another conversation than the one named.
    ws.subscribe("u", FOLLOW, json!({ "c": elsewhere, "t": root }))
        .await;
    assert_eq!(ws.next_error_code("u").await, "BAD_USER_INPUT");
    // Nothing was written by the refused sends.
    assert_eq!(listed(&app, &alice, &room, true).await, before);
}

#[tokio::test]
async fn outsiders_cannot_read_reply_in_or_follow_a_thread() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let room = app.room(&alice, "Lobby", &[&bob]).await;
    let root = id_of(&app.send(&alice, &room, "members only").await);
    reply(&app, &bob, &room, &root, "secret").await;

    let read = app
        .gql(Some(&mallory.token), THREAD, json!({ "r": root }))
        .await;
    assert_eq!(error_code(&read), Some("NOT_FOUND"), "{read}");
    let posted = app
        .gql(
            Some(&mallory.token),
            REPLY,
            json!({ "c": room, "b": "let me in", "t": root }),
        )
        .await;
    assert_eq!(error_code(&posted), Some("NOT_FOUND"), "{posted}");
    // Into her own conversation, naming a root she cannot see: refused like any foreign root.
    let own = app.direct(&mallory, &alice).await;
    let smuggled = app
        .gql(
            Some(&mallory.token),
            REPLY,
            json!({ "c": own, "b": "hi", "t": root }),
        )
        .await;
    assert_eq!(error_code(&smuggled), Some("BAD_USER_INPUT"), "{smuggled}");
    let mut ws = app.ws(Some(&mallory.token)).await;
    ws.subscribe("t", FOLLOW, json!({ "t": root })).await;
    assert_eq!(ws.next_error_code("t").await, "NOT_FOUND");
    // Nothing of hers reached the thread.
    let thread = app.data(&alice.token, THREAD, json!({ "r": root })).await;
    assert_eq!(thread["thread"]["edges"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_reply_notifies_the_threads_participants_and_whom_it_mentions_only() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let dave = app.user("dave").await;
    let room = app.room(&alice, "Lobby", &[&bob, &carol, &dave]).await;
    let root = id_of(&app.send(&alice, &room, "plan?").await);
    // What each user was told about one message.
    let about = async |who: &TestUser, message: &str| -> Vec<(String, Value)> {
        notifications(&app, who)
            .await
            .into_iter()
            .filter(|n| n["message"]["id"] == message)
            .map(|n| {
                (
                    n["kind"].as_str().unwrap().to_owned(),
                    n["sender"]["id"].clone(),
                )
            })
            .collect()
    };

    let first = id_of(&reply(&app, &bob, &room, &root, "idea one").await);
    assert_eq!(
        about(&alice, &first).await,
        [("THREAD_REPLY".to_owned(), json!(bob.id))]
    );
    // Carol and Dave take no part: the reply made them nothing (no collapsed row either).
    for who in [&bob, &carol, &dave] {
        assert!(about(who, &first).await.is_empty(), "{}", who.id);
    }

    // Carol joins in and mentions Dave: Alice and Bob hear of it as participants, Dave as the
    // one mentioned (one notification each).
    let second = id_of(
        &reply(
            &app,
            &carol,
            &room,
            &root,
            &format!("and @{}?", dave.username),
        )
        .await,
    );
    let kinds = async |who: &TestUser| -> Vec<String> {
        about(who, &second)
            .await
            .into_iter()
            .map(|(kind, _)| kind)
            .collect()
    };
    assert_eq!(kinds(&alice).await, ["THREAD_REPLY"]);
    assert_eq!(kinds(&bob).await, ["THREAD_REPLY"]);
    assert_eq!(kinds(&dave).await, ["MENTION"]);
    assert!(kinds(&carol).await.is_empty());
    // While unread, a participant's THREAD_REPLY row for the thread is one, moved on to the
    // newest reply and counting them.
    let thread_rows = async |who: &TestUser| -> Vec<Value> {
        notifications(&app, who)
            .await
            .into_iter()
            .filter(|n| n["kind"] == "THREAD_REPLY")
            .collect()
    };
    let rows = thread_rows(&alice).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["message"]["id"], second);
    assert_eq!(rows[0]["count"], 2);
    assert_eq!(rows[0]["sender"]["id"], carol.id);

    // A participant who has blocked the sender is not notified by them; the others still are.
    app.data(
        &alice.token,
        "mutation($u: ID!) { blockUser(userId: $u) }",
        json!({ "u": carol.id }),
    )
    .await;
    let third = id_of(&reply(&app, &carol, &room, &root, "still there?").await);
    assert!(about(&alice, &third).await.is_empty());
    assert_eq!(about(&bob, &third).await.len(), 1);

    // Once read, the next reply starts a new row.
    app.data(
        &bob.token,
        "mutation { markAllNotificationsRead }",
        json!({}),
    )
    .await;
    let fourth = id_of(&reply(&app, &carol, &room, &root, "hello?").await);
    let rows = thread_rows(&bob).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["message"]["id"], fourth);
    assert_eq!(rows[0]["count"], 1);

    // A participant who muted the conversation hears of replies no more; a mention still does.
    app.data(
        &bob.token,
        "mutation($c: ID!) { muteConversation(conversationId: $c) { muted } }",
        json!({ "c": room }),
    )
    .await;
    let fifth = id_of(&reply(&app, &carol, &room, &root, "anyone?").await);
    assert!(about(&bob, &fifth).await.is_empty());
    let sixth = id_of(
        &reply(
            &app,
            &carol,
            &room,
            &root,
            &format!("@{} anyone?", bob.username),
        )
        .await,
    );
    assert_eq!(about(&bob, &sixth).await[0].0, "MENTION");
}

/// A probe for [`WsClient::until_live`] on a thread's `messageEvents`: `from` replies in the
/// thread; the reply's id, in quotes, is in the event.
async fn probe_reply(app: &TestApp, from: &TestUser, conversation: &str, root: &str) -> String {
    format!(
        "\"{}\"",
        id_of(&reply(app, from, conversation, root, "probe").await)
    )
}

#[tokio::test]
async fn following_a_thread_delivers_its_root_and_replies_only_and_resumes_in_order() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = app.room(&alice, "Lobby", &[&bob]).await;
    let root = id_of(&app.send(&alice, &room, "root").await);
    let other_root = id_of(&app.send(&alice, &room, "other root").await);
    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("t", FOLLOW, json!({ "t": root })).await;
    ws.subscribe("c", FOLLOW, json!({ "c": room })).await;
    ws.until_live(&["t", "c"], 1, async |_| {
        probe_reply(&app, &alice, &room, &root).await
    })
    .await;

    // A timeline message and a reply in another thread reach the conversation's stream only.
    let plain = id_of(&app.send(&alice, &room, "timeline").await);
    ws.expect_next_event("c", &plain).await;
    let elsewhere = id_of(&reply(&app, &alice, &room, &other_root, "other thread").await);
    let event = ws.expect_next_event("c", &elsewhere).await;
    assert_eq!(
        event["messageEvents"]["message"]["threadRoot"]["id"],
        other_root
    );
    let first = id_of(&reply(&app, &alice, &room, &root, "one").await);
    let events = ws.expect_markers(&[("t", &first), ("c", &first)]).await;
    assert_eq!(events[0]["messageEvents"]["kind"], "CREATED");
    assert_eq!(
        events[0]["messageEvents"]["message"]["threadRoot"]["id"],
        root
    );
    let cursor = events[0]["messageEvents"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // Changes to the root itself belong to the thread too.
    app.data(
        &alice.token,
        "mutation($m: ID!) { editMessage(id: $m, body: \"root, edited\") { id } }",
        json!({ "m": root }),
    )
    .await;
    ws.expect_markers(&[("t", "root, edited"), ("c", "root, edited")])
        .await;
    app.send(&alice, &room, "timeline again").await;
    ws.expect_next_event("c", "timeline again").await;
    let second = id_of(&reply(&app, &alice, &room, &root, "two").await);
    let later = ws.expect_markers(&[("t", &second), ("c", &second)]).await;
    // A reply's event carries its root's summary as it is with the reply in it, so a client's
    // cache keeps the root current without asking again.
    let count = |event: &Value| {
        event["messageEvents"]["message"]["threadRoot"]["thread"]["replyCount"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(count(&later[0]), count(&events[0]) + 1);
    assert_eq!(count(&later[1]), count(&later[0]));

    // Resuming after the first reply replays the thread's later changes, in order, once.
    let mut again = app.ws(Some(&bob.token)).await;
    again
        .subscribe("t", FOLLOW, json!({ "t": root, "s": cursor }))
        .await;
    let edited = again.next_data("t").await;
    assert_eq!(edited["messageEvents"]["kind"], "EDITED");
    assert_eq!(edited["messageEvents"]["message"]["id"], root);
    let replayed = again.next_data("t").await;
    assert_eq!(replayed["messageEvents"]["message"]["id"], second);
    let marker = probe_reply(&app, &alice, &room, &root).await;
    again.expect_next_event("t", &marker).await;
}

#[tokio::test]
async fn a_deleted_root_keeps_its_thread_and_takes_no_more_replies() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let root = id_of(&app.send(&alice, &conversation, "root").await);
    reply(&app, &bob, &conversation, &root, "kept").await;
    let gone = id_of(&reply(&app, &bob, &conversation, &root, "taken back").await);
    for (who, message) in [(&bob, &gone), (&alice, &root)] {
        app.data(
            &who.token,
            "mutation($m: ID!) { deleteMessage(id: $m) { id } }",
            json!({ "m": message }),
        )
        .await;
    }

    let thread = app.data(&alice.token, THREAD, json!({ "r": root })).await;
    let edges = thread["thread"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{thread}");
    assert_eq!(edges[0]["node"]["body"], "kept");
    // A deleted reply is not counted.
    let timeline = listed(&app, &alice, &conversation, false).await;
    let root_node = timeline.iter().find(|n| n["id"] == root).unwrap();
    assert_eq!(root_node["thread"]["replyCount"], 1);
    let refused = app
        .gql(
            Some(&bob.token),
            REPLY,
            json!({ "c": conversation, "b": "late", "t": root }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
}

#[tokio::test]
async fn reading_a_conversation_to_its_end_reads_its_newest_replies_and_their_notifications() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let root = id_of(&app.send(&alice, &conversation, "root").await);
    let answer = id_of(&reply(&app, &bob, &conversation, &root, "answer").await);

    // No message named: to the end, which is a reply newer than the timeline's last message.
    app.data(
        &alice.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    let read = app
        .data(
            &alice.token,
            "{ notifications { edges { node { kind isRead message { id } } } } }",
            json!({}),
        )
        .await;
    let about: Vec<&Value> = read["notifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .filter(|n| n["message"]["id"] == answer)
        .collect();
    assert_eq!(about.len(), 1, "{read}");
    assert_eq!(about[0]["kind"], "THREAD_REPLY");
    assert_eq!(about[0]["isRead"], true);
    let timeline = listed(&app, &alice, &conversation, false).await;
    let root_node = timeline.iter().find(|n| n["id"] == root).unwrap();
    assert_eq!(root_node["thread"]["unreadCount"], 0);
}

#[tokio::test]
async fn a_retried_reply_with_its_client_message_id_is_the_first_one() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let root = id_of(&app.send(&alice, &conversation, "root").await);
    let send = "mutation($c: ID!, $t: ID) { sendMessage(input: {conversationId: $c, body: \"once\", threadRootId: $t, clientMessageId: \"r-1\"}) { id threadRoot { id } } }";
    let vars = json!({ "c": conversation, "t": root });
    let first = app.data(&bob.token, send, vars.clone()).await;
    let again = app.data(&bob.token, send, vars).await;
    assert_eq!(first, again);
    assert_eq!(first["sendMessage"]["threadRoot"]["id"], root);
    let thread = app.data(&alice.token, THREAD, json!({ "r": root })).await;
    assert_eq!(thread["thread"]["edges"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn history_lists_replies_only_when_asked_and_a_summary_follows_deletions() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let root = id_of(&app.send(&alice, &conversation, "root").await);
    let first = reply(&app, &bob, &conversation, &root, "first").await;
    let second = id_of(&reply(&app, &alice, &conversation, &root, "second").await);
    let history = async |all: bool| -> Vec<String> {
        app.data(
            &alice.token,
            "query($u: ID!, $all: Boolean) { history(userId: $u, includeThreadReplies: $all) { edges { node { body } } } }",
            json!({ "u": bob.id, "all": all }),
        )
        .await["history"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["body"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(history(false).await.last().unwrap(), "root");
    assert_eq!(
        history(true).await[history(true).await.len() - 3..],
        ["root", "first", "second"]
    );

    // With its newest reply deleted, the summary falls back to the one before, and Alice, whose
    // only reply that was, is no participant any more.
    app.data(
        &alice.token,
        "mutation($m: ID!) { deleteMessage(id: $m) { id } }",
        json!({ "m": second }),
    )
    .await;
    let timeline = listed(&app, &alice, &conversation, false).await;
    let summary = &timeline.iter().find(|n| n["id"] == root).unwrap()["thread"];
    assert_eq!(summary["replyCount"], 1);
    assert_eq!(summary["lastReplyAt"], first["createdAt"]);
    assert_eq!(
        summary["participants"],
        json!([{ "id": alice.id }, { "id": bob.id }])
    );
}

#[tokio::test]
async fn a_former_member_hears_of_their_removal_on_a_thread_they_follow_and_no_more_replies() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "Lobby", &[&bob, &carol]).await;
    let root = id_of(&app.send(&alice, &room, "root").await);
    reply(&app, &bob, &room, &root, "bob was here").await;
    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("t", FOLLOW, json!({ "t": root })).await;
    ws.until_live(&["t"], 1, async |_| {
        probe_reply(&app, &carol, &room, &root).await
    })
    .await;

    app.data(
        &alice.token,
        "mutation($r: ID!, $u: ID!) { removeMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;
    // The thread's stream tells Bob he was removed, as the conversation's stream would.
    let removed = ws.next_data("t").await;
    assert_eq!(removed["messageEvents"]["kind"], "CREATED");
    assert!(removed["messageEvents"]["message"]["threadRoot"].is_null());
    // A participant no longer in the room is not notified of later replies.
    let later = id_of(&reply(&app, &carol, &room, &root, "after bob").await);
    let told = notifications(&app, &bob).await;
    assert!(told.iter().all(|n| n["message"]["id"] != later), "{told:?}");
    // Nor can he follow the thread again.
    let mut again = app.ws(Some(&bob.token)).await;
    again.subscribe("t", FOLLOW, json!({ "t": root })).await;
    assert_eq!(again.next_error_code("t").await, "NOT_FOUND");
}

#[tokio::test]
async fn in_a_big_room_a_reply_makes_no_collapsed_rows_for_everyone() {
    let mut config = test_config().await;
    // Every room is big: collapsed rows go through the backlog after the commit.
    config.notify_inline_members = 0;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "Lobby", &[&bob, &carol]).await;
    let mut ws = app.ws(Some(&carol.token)).await;
    ws.subscribe(
        "n",
        "subscription { notifications { kind count message { id } } }",
        json!({}),
    )
    .await;
    ws.until_live(&["n"], 1, async |_| app.probe_message(&alice, &room).await)
        .await;

    let root = id_of(&app.send(&alice, &room, "root").await);
    let root_row = ws.expect_next_event("n", &root).await;
    let counted = root_row["notifications"]["count"].as_i64().unwrap();
    let answer = id_of(&reply(&app, &bob, &room, &root, "answer").await);
    // The next timeline message's collapsed row counts it and the root's, not the reply: had
    // the reply made a row or been counted, it would come first or count one more.
    let after = id_of(&app.send(&bob, &room, "timeline").await);
    let row = ws.expect_next_event("n", &after).await;
    assert_eq!(row["notifications"]["count"], counted + 1, "{row}");
    assert!(
        notifications(&app, &carol)
            .await
            .iter()
            .all(|n| n["message"]["id"] != answer)
    );
    let for_alice = notifications(&app, &alice).await;
    assert!(
        for_alice
            .iter()
            .any(|n| n["message"]["id"] == answer && n["kind"] == "THREAD_REPLY"),
        "{for_alice:?}"
    );
}
