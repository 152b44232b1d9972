//! Lists cost a constant number of SQL statements, whatever their length (DataLoaders at work).
use serde_json::json;

use crate::helpers::*;

const MESSAGES: &str = "query($c: ID!, $n: Int, $all: Boolean) { messages(conversationId: $c, last: $n, includeThreadReplies: $all) { edges { node { id body isRead readBy { id } sender { id username } replyTo { id sender { id } } conversation { id unreadCount } reactions { emoji count reactedByMe users { id username } } pinnedBy { id } thread { replyCount lastReplyAt unreadCount participants { id username } } threadRoot { id sender { id } } } } } }";
const CONVERSATIONS: &str = "query($n: Int) { conversations(first: $n) { edges { node { id title unreadCount members { role user { id } } lastMessage { id body sender { id } } } } } }";

/// The most statements a page may cost: auth, the membership check, the page query, and one or two
/// batches per kind of linked row (a batch can split when its rows arrive in separate waves).
const MAX_STATEMENTS: u64 = 16;

async fn statements_for(app: &TestApp, token: &str, query: &str, vars: serde_json::Value) -> u64 {
    let before = app.statements().await;
    app.data(token, query, vars).await;
    app.statements().await - before
}

#[tokio::test]
async fn a_page_of_50_messages_with_their_links_costs_a_constant_number_of_statements() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut previous: Option<String> = None;
    for i in 0..60 {
        let from = if i % 2 == 0 { &alice } else { &bob };
        let sent = app
            .data(
                &from.token,
                "mutation($c: ID!, $b: String!, $r: ID) { sendMessage(input: {conversationId: $c, body: $b, replyToId: $r}) { id } }",
                json!({ "c": conversation, "b": format!("m{i}"), "r": previous }),
            )
            .await;
        previous = sent["sendMessage"]["id"].as_str().map(str::to_owned);
        // Every other message carries reactions from both, and some are pinned.
        if i % 2 == 0 {
            for (who, emoji) in [(&alice, "👍"), (&bob, "👍"), (&bob, ":eyes:")] {
                app.data(
                    &who.token,
                    "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }",
                    json!({ "m": previous, "e": emoji }),
                )
                .await;
            }
        }
        if i % 10 == 0 {
            app.data(
                &alice.token,
                "mutation($m: ID!) { pinMessage(messageId: $m) { id } }",
                json!({ "m": previous }),
            )
            .await;
        }
        // Every third message has a thread with replies from both.
        if i % 3 == 0 {
            for who in [&alice, &bob] {
                app.data(
                    &who.token,
                    "mutation($c: ID!, $t: ID) { sendMessage(input: {conversationId: $c, body: \"in thread\", threadRootId: $t}) { id } }",
                    json!({ "c": conversation, "t": previous }),
                )
                .await;
            }
        }
    }
    // The timeline (roots with their thread summaries), and everything (replies with their
    // roots).
    for all in [false, true] {
        let small = statements_for(
            &app,
            &alice.token,
            MESSAGES,
            json!({ "c": conversation, "n": 5, "all": all }),
        )
        .await;
        let large = statements_for(
            &app,
            &alice.token,
            MESSAGES,
            json!({ "c": conversation, "n": 50, "all": all }),
        )
        .await;
        // DataLoader batches form in a short window, so a page may split one batch in two; what
        // must not happen is a statement per row (that would be 50+ here).
        assert!(
            small <= MAX_STATEMENTS && large <= MAX_STATEMENTS,
            "statements (replies listed: {all}): 5 messages {small}, 50 messages {large}"
        );
    }
}

#[tokio::test]
async fn a_page_of_50_conversations_with_their_links_costs_a_constant_number_of_statements() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    for _ in 0..55 {
        let other = app.user("peer").await;
        let conversation = app.direct(&other, &alice).await;
        app.send(&other, &conversation, "ping").await;
    }
    let small = statements_for(&app, &alice.token, CONVERSATIONS, json!({ "n": 5 })).await;
    let large = statements_for(&app, &alice.token, CONVERSATIONS, json!({ "n": 50 })).await;
    assert!(
        small <= MAX_STATEMENTS && large <= MAX_STATEMENTS,
        "statements: 5 conversations {small}, 50 conversations {large}"
    );
}

#[tokio::test]
async fn linking_a_message_to_its_sender_and_conversation_by_id_costs_no_statement() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    app.send(&bob, &conversation, "hi alice").await;
    let page = |links: &str| {
        format!(
            "query($c: ID!) {{ messages(conversationId: $c, last: 5) {{ edges {{ node {{ id body {links} }} }} }} }}"
        )
    };
    let vars = json!({ "c": conversation });
    let bare = statements_for(&app, &alice.token, &page(""), vars.clone()).await;
    let ids_only = statements_for(
        &app,
        &alice.token,
        &page("sender { id } conversation { id }"),
        vars.clone(),
    )
    .await;
    let with_rows = statements_for(
        &app,
        &alice.token,
        &page("sender { id username } conversation { id title }"),
        vars.clone(),
    )
    .await;
    assert_eq!(
        ids_only, bare,
        "ids of linked rows are known without a read"
    );
    assert!(
        with_rows > bare,
        "fields beyond the id read the rows: {with_rows} statements against {bare}"
    );
    // And the links still point at the right rows.
    let data = app
        .data(
            &alice.token,
            &page("sender { id username } conversation { id kind }"),
            vars,
        )
        .await;
    let edges = data["messages"]["edges"].as_array().unwrap();
    let node = &edges
        .iter()
        .find(|e| e["node"]["body"] == "hi alice")
        .unwrap()["node"];
    assert_eq!(node["sender"]["id"], json!(bob.id));
    assert_eq!(node["sender"]["username"], json!(bob.username));
    assert_eq!(node["conversation"]["id"], json!(conversation));
    assert_eq!(node["conversation"]["kind"], json!("DIRECT"));
}

#[tokio::test]
async fn a_send_into_a_known_conversation_costs_a_fixed_handful_of_statements() {
    const EVENTS: &str = "subscription($c: ID, $s: String) { messageEvents(conversationId: $c, since: $s) { kind cursor message { id body } } }";
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    // The first send made bob's collapsed notification; the measured one updates it, as most do.
    let mut live = app.ws(Some(&bob.token)).await;
    live.subscribe("1", EVENTS, json!({ "c": conversation }))
        .await;
    let probes = live
        .until_live(&["1"], 1, async |_| {
            app.probe_message(&alice, &conversation).await
        })
        .await;
    app.send(&alice, &conversation, "first").await;
    let first = live.next_data("1").await;
    let cursor = first["messageEvents"]["cursor"].clone();

    let before = app.statements().await;
    let sent = app.send(&alice, &conversation, "second").await;
    let spent = app.statements().await - before;

    // SQLite: the checks, then the sequence bump, message and change log as one hand-over, then
    // the notification bump and its read-back as another. PostgreSQL: the checks, then one call
    // of `palaver_send` (migration 000014) that takes the conversation's lock and writes the
    // message, its change log and, for a message directed at no one like this one, the
    // notification bump with its read-back, autocommitted (no BEGIN or COMMIT: those are not
    // counted here, but they are round trips, and they are gone).
    let on_postgres =
        std::env::var("PALAVER_TEST_DATABASE_URL").is_ok_and(|url| url.starts_with("postgres"));
    let expected = if on_postgres { 2 } else { 3 };
    assert_eq!(
        spent, expected,
        "a send cost {spent} statements; {expected} expected"
    );
    // And everything those statements wrote is there: the message, delivered live; bob's one
    // notification counting every message; the change log a resuming subscriber reads.
    assert_eq!(sent["body"], json!("second"));
    let second = live.next_data("1").await;
    assert_eq!(second["messageEvents"]["message"]["id"], sent["id"]);
    let notes = app
        .data(
            &bob.token,
            "{ notifications(first: 10) { edges { node { kind count message { id } } } } }",
            json!({}),
        )
        .await;
    let edges = notes["notifications"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "one collapsed row: {notes}");
    assert_eq!(edges[0]["node"]["kind"], json!("MESSAGE"));
    // "hello" (which opened the conversation), the probes, "first" and "second".
    assert_eq!(edges[0]["node"]["count"], json!(3 + probes));
    assert_eq!(edges[0]["node"]["message"]["id"], sent["id"]);
    let mut resumed = app.ws(Some(&bob.token)).await;
    resumed
        .subscribe("2", EVENTS, json!({ "c": conversation, "s": cursor }))
        .await;
    let replayed = resumed.next_data("2").await;
    assert_eq!(replayed["messageEvents"]["kind"], json!("CREATED"));
    assert_eq!(replayed["messageEvents"]["message"]["id"], sent["id"]);
    assert_ne!(replayed["messageEvents"]["cursor"], cursor);
}

#[tokio::test]
async fn replaying_read_receipts_costs_a_constant_number_of_statements() {
    const READERS: usize = 5;
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let reader = app.user("reader").await;
        let conversation = app.direct(&alice, &reader).await;
        readers.push((reader, conversation));
    }
    let epoch = {
        let (first, _) = &readers[0];
        let data = app
            .data(
                &first.token,
                "{ notifications(first: 1) { edges { node { cursor } } } }",
                json!({}),
            )
            .await;
        let cursor = data["notifications"]["edges"][0]["node"]["cursor"]
            .as_str()
            .unwrap()
            .to_owned();
        let text = String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, cursor)
                .unwrap(),
        )
        .unwrap();
        text.split(':').nth(1).unwrap().parse::<i64>().unwrap()
    };
    // Resume from just before every reader marks their conversation read.
    let since = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!("c:{epoch}:{}:0:0", chrono::Utc::now().timestamp_micros()),
    );
    for (reader, conversation) in &readers {
        app.data(
            &reader.token,
            "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
            json!({ "c": conversation }),
        )
        .await;
    }
    let mut ws = app.ws(Some(&alice.token)).await;

    let before = app.statements().await;
    ws.subscribe(
        "r",
        "subscription($s: String) { readReceipts(since: $s) { upToMessageId } }",
        json!({ "s": since }),
    )
    .await;
    for _ in 0..READERS {
        let receipt = ws.next_data("r").await;
        assert!(
            receipt["readReceipts"]["upToMessageId"].is_string(),
            "{receipt}"
        );
    }
    let statements = app.statements().await - before;
    // The replay's page: not one statement per receipt.
    assert!(
        statements <= 2,
        "{statements} statements to replay {READERS} receipts"
    );
}
