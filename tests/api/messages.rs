use serde_json::json;

use crate::helpers::*;

const SEND_TO_USER: &str = "mutation($r: ID!, $b: String!) { sendMessage(input: {recipientId: $r, body: $b}) { id conversation { id kind } } }";
const EDIT: &str =
    "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id body editedAt } }";
const DELETE: &str = "mutation($id: ID!) { deleteMessage(id: $id) { id body deletedAt } }";
const PAGE: &str = "query($c: ID!) { messages(conversationId: $c) { edges { node { id body editedAt deletedAt replyTo { id body } sender { id } } } } }";

#[tokio::test]
async fn the_first_messages_of_two_users_share_one_direct_conversation_even_when_simultaneous() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (a, b) = tokio::join!(
        app.data(
            &alice.token,
            SEND_TO_USER,
            json!({ "r": bob.id, "b": "hi bob" })
        ),
        app.data(
            &bob.token,
            SEND_TO_USER,
            json!({ "r": alice.id, "b": "hi alice" })
        ),
    );
    let conversation = a["sendMessage"]["conversation"]["id"].clone();
    assert_eq!(conversation, b["sendMessage"]["conversation"]["id"]);
    assert_eq!(a["sendMessage"]["conversation"]["kind"], "DIRECT");

    for user in [&alice, &bob] {
        let list = app
            .data(
                &user.token,
                "{ conversations { edges { node { id } } } }",
                json!({}),
            )
            .await;
        let edges = list["conversations"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0]["node"]["id"], conversation);
    }
    let direct = app
        .data(
            &alice.token,
            "query($u: ID!) { directConversation(userId: $u) { id title } }",
            json!({ "u": bob.id }),
        )
        .await;
    assert_eq!(direct["directConversation"]["id"], conversation);
    assert_eq!(direct["directConversation"]["title"], bob.username);
}

#[tokio::test]
async fn a_reply_names_the_message_it_answers() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let question = app.send(&alice, &conversation, "lunch?").await;
    let reply = app
        .data(
            &bob.token,
            "mutation($c: ID!, $r: ID!) { sendMessage(input: {conversationId: $c, body: \"yes\", replyToId: $r}) { replyTo { id body } } }",
            json!({ "c": conversation, "r": question["id"] }),
        )
        .await;
    assert_eq!(reply["sendMessage"]["replyTo"]["id"], question["id"]);
    assert_eq!(reply["sendMessage"]["replyTo"]["body"], "lunch?");

    // A reply to a message of another conversation is refused.
    let carol = app.user("carol").await;
    let elsewhere = app.direct(&alice, &carol).await;
    let foreign = app.send(&alice, &elsewhere, "psst").await;
    let refused = app
        .gql(
            Some(&bob.token),
            "mutation($c: ID!, $r: ID!) { sendMessage(input: {conversationId: $c, body: \"?\", replyToId: $r}) { id } }",
            json!({ "c": conversation, "r": foreign["id"] }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
}

#[tokio::test]
async fn the_sender_can_edit_and_soft_delete_a_message() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app.send(&alice, &conversation, "helo").await;

    let edited = app
        .data(
            &alice.token,
            EDIT,
            json!({ "id": message["id"], "b": "hello" }),
        )
        .await;
    assert_eq!(edited["editMessage"]["body"], "hello");
    assert!(edited["editMessage"]["editedAt"].is_string());

    let deleted = app
        .data(&alice.token, DELETE, json!({ "id": message["id"] }))
        .await;
    assert!(deleted["deleteMessage"]["body"].is_null());
    assert!(deleted["deleteMessage"]["deletedAt"].is_string());

    // The row stays in history as a tombstone, for both participants.
    for user in [&alice, &bob] {
        let page = app
            .data(&user.token, PAGE, json!({ "c": conversation }))
            .await;
        let edges = page["messages"]["edges"].as_array().unwrap();
        let node = edges
            .iter()
            .map(|e| &e["node"])
            .find(|n| n["id"] == message["id"])
            .expect("deleted message still listed");
        assert!(node["body"].is_null());
        assert!(node["deletedAt"].is_string());
    }

    // A deleted message cannot be edited back to life; deleting again changes nothing.
    let refused = app
        .gql(
            Some(&alice.token),
            EDIT,
            json!({ "id": message["id"], "b": "back" }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"));
    let again = app
        .data(&alice.token, DELETE, json!({ "id": message["id"] }))
        .await;
    assert_eq!(
        again["deleteMessage"]["deletedAt"],
        deleted["deleteMessage"]["deletedAt"]
    );
}

/// On PostgreSQL, sends arriving together are committed together (see `store::send_queue`), and a
/// group with one retry too many fails as a whole: the other sends beside it must still each be
/// written once and answered, and the retries must get the one message.
#[tokio::test]
async fn retries_sent_beside_other_sends_leave_every_send_written_once() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let send = "mutation($c: ID!, $b: String!, $k: String!) { sendMessage(input: {conversationId: $c, body: $b, clientMessageId: $k}) { id body } }";
    let mut vars: Vec<_> = (0..8)
        .map(|i| json!({ "c": conversation, "b": format!("other {i}"), "k": format!("other-{i}") }))
        .collect();
    for _ in 0..3 {
        vars.insert(
            2,
            json!({ "c": conversation, "b": "retried", "k": "retry-2" }),
        );
    }
    let answers =
        futures_util::future::join_all(vars.into_iter().map(|v| app.data(&alice.token, send, v)))
            .await;
    let retried: Vec<_> = answers
        .iter()
        .filter(|a| a["sendMessage"]["body"] == "retried")
        .map(|a| a["sendMessage"]["id"].clone())
        .collect();
    assert_eq!(retried.len(), 3, "{answers:?}");
    assert!(retried.iter().all(|id| *id == retried[0]), "{retried:?}");
    let mut ids: Vec<_> = answers
        .iter()
        .map(|a| a["sendMessage"]["id"].as_str().expect("an id").to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        9,
        "eight sends and one retried message: {answers:?}"
    );

    let page = app
        .data(&bob.token, PAGE, json!({ "c": conversation }))
        .await;
    let mut bodies: Vec<_> = page["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..8).map(|i| format!("other {i}")).collect();
    expected.push("retried".into());
    // The greeting `direct` sends.
    expected.push("hello".into());
    expected.sort();
    assert_eq!(
        bodies, expected,
        "the greeting, eight sends and one retried message"
    );
}

#[tokio::test]
async fn a_retried_send_with_the_same_client_message_id_returns_the_first_message() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let send = "mutation($c: ID!, $k: String!) { sendMessage(input: {conversationId: $c, body: \"once\", clientMessageId: $k}) { id clientMessageId } }";
    let vars = json!({ "c": conversation, "k": "retry-1" });
    let (first, second, third) = tokio::join!(
        app.data(&alice.token, send, vars.clone()),
        app.data(&alice.token, send, vars.clone()),
        app.data(&alice.token, send, vars.clone()),
    );
    let id = &first["sendMessage"]["id"];
    assert_eq!(&second["sendMessage"]["id"], id);
    assert_eq!(&third["sendMessage"]["id"], id);
    assert_eq!(first["sendMessage"]["clientMessageId"], "retry-1");

    let page = app
        .data(&bob.token, PAGE, json!({ "c": conversation }))
        .await;
    let onces = page["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["id"] == *id)
        .count();
    assert_eq!(onces, 1);
    // Two messages in all: the greeting and one "once".
    assert_eq!(page["messages"]["edges"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_burst_of_sends_with_racing_retries_stores_each_message_once_and_counts_unread_exactly() {
    // Sends are committed in batches by one writer; a retry that loses its race inside a batch
    // must undo only itself (its sequence number included), never its neighbours.
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let send = "mutation($c: ID!, $b: String!, $k: String!) { sendMessage(input: {conversationId: $c, body: $b, clientMessageId: $k}) { id } }";
    let mut sends = Vec::new();
    for i in 0..30 {
        sends.push(
            json!({ "c": conversation, "b": format!("burst {i}"), "k": format!("burst-{i}") }),
        );
    }
    for _ in 0..4 {
        sends.push(json!({ "c": conversation, "b": "retried", "k": "retried-1" }));
    }
    let results =
        futures_util::future::join_all(sends.into_iter().map(|v| app.data(&alice.token, send, v)))
            .await;
    let retried: std::collections::HashSet<_> = results[30..]
        .iter()
        .map(|r| r["sendMessage"]["id"].clone())
        .collect();
    assert_eq!(retried.len(), 1, "every retry got the first message");

    let page = app
        .data(
            &bob.token,
            "query($c: ID!) { messages(conversationId: $c, first: 100) { edges { node { id body } } } conversation(id: $c) { unreadCount } }",
            json!({ "c": conversation }),
        )
        .await;
    let edges = page["messages"]["edges"].as_array().unwrap();
    // The greeting, 30 distinct sends and one "retried".
    assert_eq!(edges.len(), 32);
    let ids: std::collections::HashSet<_> = edges.iter().map(|e| e["node"]["id"].clone()).collect();
    assert_eq!(ids.len(), 32);
    assert_eq!(
        edges
            .iter()
            .filter(|e| e["node"]["body"] == "retried")
            .count(),
        1
    );
    assert_eq!(page["conversation"]["unreadCount"], 32);
}
