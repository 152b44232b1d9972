//! Bad input gets a clear error with a code, and changes nothing.
use serde_json::json;

use crate::helpers::*;

const COUNT: &str =
    "query($c: ID!) { messages(conversationId: $c, first: 100) { edges { cursor } } }";

#[tokio::test]
async fn malformed_requests_get_bad_user_input() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let cases = [
        "{ me { id ",
        "{ nosuchfield }",
        "mutation { sendMessage(input: {recipientId: 5, body: 7}) { id } }",
        "query { messages(conversationId: \"cnv_1\", first: \"ten\") { edges { cursor } } }",
    ];
    for query in cases {
        let response = app.gql(Some(&alice.token), query, json!({})).await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{query}: {response}"
        );
    }
    for body in ["not json", "{\"query\": 5}", "[1, 2"] {
        let response = app
            .http
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error_code(&json), Some("BAD_USER_INPUT"), "{body}: {json}");
    }
    // The server is still healthy.
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn forged_and_unknown_ids_are_refused() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let send = "mutation($r: ID!) { sendMessage(input: {recipientId: $r, body: \"hi\"}) { id } }";
    for (id, code) in [
        ("usr_999999", "NOT_FOUND"),
        ("cnv_1", "BAD_USER_INPUT"),
        ("usr_abc", "BAD_USER_INPUT"),
        ("'; DROP TABLE users; --", "BAD_USER_INPUT"),
        ("", "BAD_USER_INPUT"),
    ] {
        let response = app.gql(Some(&alice.token), send, json!({ "r": id })).await;
        assert_eq!(error_code(&response), Some(code), "{id}: {response}");
    }
    let response = app
        .gql(
            Some(&alice.token),
            "query($c: ID!) { conversation(id: $c) { id } }",
            json!({ "c": "cnv_424242" }),
        )
        .await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"));
    let response = app
        .gql(
            Some(&alice.token),
            "mutation { editMessage(id: \"msg_99999\", body: \"x\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"));
    let conversations = app
        .data(
            &alice.token,
            "{ conversations { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(conversations["conversations"]["edges"], json!([]));
}

#[tokio::test]
async fn empty_over_long_and_ambiguous_messages_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let too_long = "x".repeat(4001);
    let cases = [
        json!({ "conversationId": conversation, "body": "" }),
        json!({ "conversationId": conversation, "body": "   \n\t" }),
        json!({ "conversationId": conversation }),
        json!({ "conversationId": conversation, "body": too_long }),
        json!({ "conversationId": conversation, "recipientId": bob.id, "body": "both" }),
        json!({ "body": "neither" }),
        json!({ "recipientId": alice.id, "body": "to myself" }),
        json!({ "conversationId": conversation, "body": "x", "clientMessageId": "" }),
    ];
    for input in cases {
        let response = app
            .gql(
                Some(&alice.token),
                "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
                json!({ "i": input }),
            )
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{input}: {response}"
        );
    }
    let edit = app
        .gql(
            Some(&alice.token),
            "mutation { editMessage(id: \"msg_1\", body: \"\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&edit), Some("BAD_USER_INPUT"));

    let page = app
        .data(&alice.token, COUNT, json!({ "c": conversation }))
        .await;
    assert_eq!(
        page["messages"]["edges"].as_array().unwrap().len(),
        1,
        "only the greeting"
    );
    // Exactly 4000 characters is fine.
    app.send(&alice, &conversation, &"y".repeat(4000)).await;
}
