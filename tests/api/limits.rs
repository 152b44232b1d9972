//! Query-shape limits: each refusal carries a code, and the server stays healthy after it.
use serde_json::{Value, json};

use crate::helpers::*;

async fn assert_healthy(app: &TestApp) {
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

async fn post_raw(app: &TestApp, token: Option<&str>, body: String) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON response"))
}

#[tokio::test]
async fn a_query_nested_a_thousand_deep_is_refused_as_too_complex() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let query = format!("{{ {}id{} }}", "me { ".repeat(1000), " }".repeat(1000));
    let response = app.gql(Some(&alice.token), &query, json!({})).await;
    assert_eq!(
        error_code(&response),
        Some("QUERY_TOO_COMPLEX"),
        "{response}"
    );
    let message = response["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.len() < 200,
        "the query is not echoed back: {message}"
    );
    // Deep nesting in arguments and variables is refused too, without harm.
    let list = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
    let query = format!("{{ users(search: {list}) {{ edges {{ cursor }} }} }}");
    let response = app.gql(Some(&alice.token), &query, json!({})).await;
    assert!(error_code(&response).is_some(), "{response}");
    let variables = format!(
        "{{\"query\": \"query($s: String) {{ users(search: $s) {{ edges {{ cursor }} }} }}\", \"variables\": {{\"s\": {list}}}}}"
    );
    let (status, response) = post_raw(&app, Some(&alice.token), variables).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn ten_megabytes_of_query_text_is_payload_too_large() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let query = format!("{{ me {{ id }} }}{}", " ".repeat(10 * 1024 * 1024));
    let body = json!({ "query": query }).to_string();
    let (status, response) = post_raw(&app, Some(&alice.token), body).await;
    assert_eq!(status, 413);
    assert_eq!(
        error_code(&response),
        Some("PAYLOAD_TOO_LARGE"),
        "{response}"
    );

    // Smuggled in a multipart body (which may be larger, for its file) it is refused all the same.
    let operations =
        json!({ "query": format!("{{ me {{ id }} }}{}", " ".repeat(2 * 1024 * 1024)) });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", "{}");
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&alice.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let response: Value = response.json().await.unwrap();
    assert_eq!(
        error_code(&response),
        Some("PAYLOAD_TOO_LARGE"),
        "{response}"
    );
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_fan_out_of_aliases_is_refused_before_anything_runs() {
    let mut config = test_config().await;
    config.max_root_fields = 5;
    config.max_aliases = 8;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let statements = app.statements().await;

    // Many root fields: a brute force multiplied by aliases never reaches a password check.
    let logins: String = (0..1000)
        .map(|i| {
            format!(
                "a{i}: login(username: \"{}\", password: \"guess{i}\") {{ token }} ",
                alice.username
            )
        })
        .collect();
    let response = app
        .gql(None, &format!("mutation {{ {logins} }}"), json!({}))
        .await;
    assert_eq!(
        error_code(&response),
        Some("QUERY_TOO_COMPLEX"),
        "{response}"
    );
    assert!(
        response["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("root fields")
    );
    assert_eq!(app.statements().await, statements, "nothing was executed");

    // Root fields hidden in fragments count as well.
    let query =
        "query { ...A ...A } fragment A on Query { me { id } unreadCount notificationUnreadCount }";
    let response = app.gql(Some(&alice.token), query, json!({})).await;
    assert_eq!(
        error_code(&response),
        Some("QUERY_TOO_COMPLEX"),
        "{response}"
    );
    // A fragment cycle neither hangs nor crashes the check: it is refused.
    let query = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
    let response = app.gql(Some(&alice.token), query, json!({})).await;
    assert_eq!(
        error_code(&response),
        Some("QUERY_TOO_COMPLEX"),
        "{response}"
    );

    // Aliases deeper down count against their own limit.
    let fields: String = (0..9).map(|i| format!("i{i}: id ")).collect();
    let response = app
        .gql(
            Some(&alice.token),
            &format!("{{ me {{ {fields} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(
        error_code(&response),
        Some("QUERY_TOO_COMPLEX"),
        "{response}"
    );

    // Within the limits all is well.
    let data = app
        .data(
            &alice.token,
            "{ a: me { id } b: me { id } unreadCount }",
            json!({}),
        )
        .await;
    assert_eq!(data["a"]["id"], json!(alice.id));
    assert_healthy(&app).await;
}

#[tokio::test]
async fn an_oversized_batch_is_refused_and_a_small_one_runs() {
    let mut config = test_config().await;
    config.max_batch = 3;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let one = json!({ "query": "{ me { id } }" });
    let batch = Value::Array(vec![one.clone(); 4]);
    let (status, response) = post_raw(&app, Some(&alice.token), batch.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&response), Some("BATCH_TOO_LARGE"), "{response}");

    let huge = Value::Array(vec![one.clone(); 10_000]);
    let (status, response) = post_raw(&app, Some(&alice.token), huge.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&response), Some("BATCH_TOO_LARGE"), "{response}");

    let batch = Value::Array(vec![one; 3]);
    let (status, response) = post_raw(&app, Some(&alice.token), batch.to_string()).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response.as_array().map(Vec::len), Some(3));
    assert_eq!(response[2]["data"]["me"]["id"], json!(alice.id));
    assert_healthy(&app).await;
}

#[tokio::test]
async fn introspection_and_graphiql_are_on_by_default() {
    let app = spawn_app().await;
    let response = app
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(response["data"]["__schema"]["queryType"]["name"], "Query");
    // GraphiQL is for a browser asking for a page; other GETs are GraphQL requests.
    let page = app.graphiql_page().await;
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn with_introspection_and_graphiql_switched_off_both_are_refused() {
    let mut config = test_config().await;
    config.introspection = false;
    config.graphiql = false;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    for query in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"User\") { fields { name } } }",
        "{ me { id ...F } } fragment F on User { __type(name: \"User\") { name } }",
        "{ me { id } } fragment F on Query { __schema { queryType { name } } }",
    ] {
        let response = app.gql(Some(&alice.token), query, json!({})).await;
        assert_eq!(
            error_code(&response),
            Some("INTROSPECTION_DISABLED"),
            "{query}: {response}"
        );
        assert!(
            response
                .get("data")
                .is_none_or(|d| d.is_null() || d.get("__schema").is_none())
        );
    }
    // `__typename` is no introspection: Apollo clients add it everywhere.
    let data = app
        .data(&alice.token, "{ me { __typename id } }", json!({}))
        .await;
    assert_eq!(data["me"]["__typename"], "User");
    // GraphiQL is for a browser asking for a page; other GETs are GraphQL requests.
    let page = app.graphiql_page().await;
    assert_eq!(page.status(), 404);
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_document_sent_again_is_judged_again_for_its_sender() {
    // Documents are kept parsed by their text (graphql::executor): sending the same text again must
    // meet the same checks and answer for whoever sends it this time.
    let mut config = test_config().await;
    config.max_aliases = 2;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;

    let too_many = "{ me { a: id b: id c: id } }";
    for _ in 0..2 {
        let response = app.gql(Some(&alice.token), too_many, json!({})).await;
        assert_eq!(
            error_code(&response),
            Some("QUERY_TOO_COMPLEX"),
            "{response}"
        );
    }
    let unknown = "{ me { id favouriteColour } }";
    for _ in 0..2 {
        let response = app.gql(Some(&alice.token), unknown, json!({})).await;
        assert!(error_code(&response).is_some(), "{response}");
        assert!(response["data"].is_null(), "{response}");
    }
    let me = "query Me($n: Int) { me { id username } users(first: $n) { edges { cursor } } }";
    for (viewer, n) in [(&alice, 1), (&bob, 2), (&alice, 2)] {
        let data = app.data(&viewer.token, me, json!({ "n": n })).await;
        assert_eq!(data["me"]["id"], viewer.id, "{data}");
        assert_eq!(data["me"]["username"], viewer.username.as_str(), "{data}");
        assert_eq!(
            data["users"]["edges"].as_array().map(Vec::len),
            Some(n),
            "{data}"
        );
    }
    let response = app.gql(None, me, json!({ "n": 1 })).await;
    assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_timeout() {
    let mut config = test_config().await;
    // Hashing a password alone takes longer than this.
    config.request_timeout_ms = 1;
    let app = spawn_app_with(config).await;
    let body = json!({
        "query": "mutation { register(input: {username: \"slowpoke\", password: \"s3cret-pass\"}) { token } }"
    })
    .to_string();
    let (status, response) = post_raw(&app, None, body).await;
    assert_eq!(status, 503, "{response}");
    assert_eq!(error_code(&response), Some("TIMEOUT"), "{response}");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_query_or_mutation_over_the_websocket_has_the_same_deadline() {
    let config = test_config().await;
    let app = spawn_app_with(config.clone()).await;
    let alice = app.user("alice").await;
    // A second instance on the same data, with a deadline shorter than checking a password.
    let mut hasty = config;
    hasty.request_timeout_ms = 1;
    let hasty = spawn_app_with(hasty).await;
    let mut ws = hasty.ws(Some(&alice.token)).await;
    ws.subscribe(
        "1",
        "mutation { changePassword(currentPassword: \"not-the-password-1\", newPassword: \"another-pass-2\") }",
        json!({}),
    )
    .await;
    assert_eq!(ws.next_error_code("1").await, "TIMEOUT");
    // Nothing was changed: the password still signs in.
    assert_healthy(&hasty).await;
    let login = app
        .gql(
            None,
            "mutation($u: String!) { login(username: $u, password: \"s3cret-pass\") { token } }",
            json!({ "u": alice.username }),
        )
        .await;
    assert!(login["data"]["login"]["token"].is_string(), "{login}");
}
