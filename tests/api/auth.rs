use serde_json::json;

use crate::helpers::*;

const ME: &str = "{ me { id username displayName } }";
const REGISTER: &str = "mutation($u: String!, $p: String!) { register(input: {username: $u, password: $p}) { token user { id } } }";
const LOGIN: &str = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token user { id } } }";

#[tokio::test]
async fn a_registered_user_is_known_by_their_token() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let me = app.data(&alice.token, ME, json!({})).await;
    assert_eq!(me["me"]["id"], alice.id);
    assert_eq!(me["me"]["username"], alice.username);
    assert_eq!(me["me"]["displayName"], alice.username);
}

#[tokio::test]
async fn usernames_are_unique_regardless_of_case() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let shouted = alice.username.to_uppercase();
    let response = app
        .gql(None, REGISTER, json!({ "u": shouted, "p": "an0ther-pass" }))
        .await;
    assert_eq!(error_code(&response), Some("CONFLICT"), "{response}");
}

#[tokio::test]
async fn weak_or_empty_passwords_are_refused_and_no_account_is_made() {
    let app = spawn_app().await;
    for weak in ["", "short", "onlyletters", "1234567890"] {
        let response = app
            .gql(None, REGISTER, json!({ "u": "carol", "p": weak }))
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{weak}: {response}"
        );
    }
    // The name is still free: nothing was written.
    let response = app
        .gql(None, REGISTER, json!({ "u": "carol", "p": "g00d-enough" }))
        .await;
    assert!(
        response["data"]["register"]["token"].is_string(),
        "{response}"
    );
}

#[tokio::test]
async fn login_gives_a_new_token_and_refuses_a_wrong_password() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let ok = app
        .gql(
            None,
            LOGIN,
            json!({ "u": alice.username, "p": "s3cret-pass" }),
        )
        .await;
    let token = ok["data"]["login"]["token"].as_str().expect("a token");
    assert_ne!(token, alice.token);
    let me = app.data(token, ME, json!({})).await;
    assert_eq!(me["me"]["id"], alice.id);

    for (user, password) in [
        (alice.username.as_str(), "wrong-pass-1"),
        ("nobody-here", "s3cret-pass"),
    ] {
        let refused = app
            .gql(None, LOGIN, json!({ "u": user, "p": password }))
            .await;
        assert_eq!(error_code(&refused), Some("UNAUTHENTICATED"), "{refused}");
    }
}

#[tokio::test]
async fn every_operation_needs_a_valid_token() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let operations = [
        "{ me { id } }",
        "{ users { edges { node { id } } } }",
        "{ conversations { edges { node { id } } } }",
        "{ unreadCount }",
        "{ messages(conversationId: \"cnv_1\") { edges { node { id } } } }",
        "mutation { sendMessage(input: {recipientId: \"usr_1\", body: \"hi\"}) { id } }",
        "mutation { logout }",
    ];
    for token in [
        None,
        Some("not-a-token"),
        Some("pvt_forged0000000000000000000000000000000000"),
    ] {
        for op in operations {
            let response = app.gql(token, op, json!({})).await;
            assert_eq!(
                error_code(&response),
                Some("UNAUTHENTICATED"),
                "{op}: {response}"
            );
        }
    }
    // A malformed Authorization header is refused as well.
    let response: serde_json::Value = app
        .http
        .post(app.url("/graphql"))
        .header("authorization", format!("Token {}", alice.token))
        .json(&json!({ "query": ME }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
}

#[tokio::test]
async fn a_logged_out_token_is_refused_on_http_and_websocket() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let out = app
        .data(&alice.token, "mutation { logout }", json!({}))
        .await;
    assert_eq!(out["logout"], true);
    let response = app.gql(Some(&alice.token), ME, json!({})).await;
    assert_eq!(error_code(&response), Some("UNAUTHENTICATED"));

    let mut ws = app.ws_raw("graphql-transport-ws").await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", alice.token) } }))
        .await;
    ws.expect_refused_init().await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let mut config = test_config().await;
    config.token_ttl_secs = 1;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    app.data(&alice.token, ME, json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let response = app.gql(Some(&alice.token), ME, json!({})).await;
    assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");

    let mut ws = app.ws_raw("graphql-transport-ws").await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "token": alice.token } }))
        .await;
    ws.expect_refused_init().await;
}

#[tokio::test]
async fn a_websocket_without_a_token_is_refused_at_connection_init() {
    let app = spawn_app().await;
    let mut ws = app.ws_raw("graphql-transport-ws").await;
    ws.send_json(json!({ "type": "connection_init", "payload": {} }))
        .await;
    ws.expect_refused_init().await;
}
