//! Lists cost a constant number of SQL statements, whatever their length (DataLoaders at work).
use serde_json::json;

use crate::helpers::*;

const MESSAGES: &str = "query($c: ID!, $n: Int) { messages(conversationId: $c, last: $n) { edges { node { id body isRead readBy { id } sender { id username } replyTo { id sender { id } } conversation { id unreadCount } } } } }";
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
    }
    let small = statements_for(
        &app,
        &alice.token,
        MESSAGES,
        json!({ "c": conversation, "n": 5 }),
    )
    .await;
    let large = statements_for(
        &app,
        &alice.token,
        MESSAGES,
        json!({ "c": conversation, "n": 50 }),
    )
    .await;
    // DataLoader batches form in a short window, so a page may split one batch in two; what must
    // not happen is a statement per row (that would be 50+ here).
    assert!(
        small <= MAX_STATEMENTS && large <= MAX_STATEMENTS,
        "statements: 5 messages {small}, 50 messages {large}"
    );
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
