//! Every rule of who may see or change what, tried as the wrong user.
use serde_json::json;

use crate::helpers::*;

const PAGE: &str = "query($c: ID!) { messages(conversationId: $c) { edges { node { id body editedAt deletedAt } } } }";

async fn history(app: &TestApp, user: &TestUser, conversation: &str) -> serde_json::Value {
    app.data(&user.token, PAGE, json!({ "c": conversation }))
        .await["messages"]
        .clone()
}

#[tokio::test]
async fn only_the_sender_may_edit_or_delete_a_message() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app.send(&alice, &conversation, "mine").await;
    let before = history(&app, &alice, &conversation).await;

    let edit = app
        .gql(
            Some(&bob.token),
            "mutation($id: ID!) { editMessage(id: $id, body: \"yours\") { id } }",
            json!({ "id": message["id"] }),
        )
        .await;
    assert_eq!(error_code(&edit), Some("FORBIDDEN"), "{edit}");
    let delete = app
        .gql(
            Some(&bob.token),
            "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
            json!({ "id": message["id"] }),
        )
        .await;
    assert_eq!(error_code(&delete), Some("FORBIDDEN"), "{delete}");
    assert_eq!(history(&app, &alice, &conversation).await, before);
}

#[tokio::test]
async fn an_outsider_can_neither_read_nor_write_a_conversation() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let eve = app.user("eve").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app.send(&alice, &conversation, "private").await;
    let before = history(&app, &alice, &conversation).await;
    let unread_before = app.data(&bob.token, "{ unreadCount }", json!({})).await;

    let attempts = [
        (PAGE, json!({ "c": conversation })),
        (
            "query($c: ID!) { conversation(id: $c) { id } }",
            json!({ "c": conversation }),
        ),
        (
            "mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: \"intrude\"}) { id } }",
            json!({ "c": conversation }),
        ),
        (
            "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
            json!({ "c": conversation }),
        ),
        (
            "mutation($c: ID!) { setTyping(conversationId: $c, isTyping: true) }",
            json!({ "c": conversation }),
        ),
        (
            "mutation($id: ID!) { editMessage(id: $id, body: \"x\") { id } }",
            json!({ "id": message["id"] }),
        ),
        (
            "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
            json!({ "id": message["id"] }),
        ),
        (
            "mutation($c: ID!, $r: ID!) { sendMessage(input: {conversationId: $c, body: \"x\", replyToId: $r}) { id } }",
            json!({ "c": conversation, "r": message["id"] }),
        ),
    ];
    for (query, vars) in attempts {
        let response = app.gql(Some(&eve.token), query, vars).await;
        let code = error_code(&response);
        assert!(
            matches!(code, Some("NOT_FOUND") | Some("FORBIDDEN")),
            "{query}: {response}"
        );
    }
    assert_eq!(history(&app, &alice, &conversation).await, before);
    assert_eq!(
        app.data(&bob.token, "{ unreadCount }", json!({})).await,
        unread_before
    );
    let eves = app
        .data(
            &eve.token,
            "{ conversations { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(eves["conversations"]["edges"], json!([]));
}
