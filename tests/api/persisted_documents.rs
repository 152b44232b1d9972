//! Persisted documents: Apollo's automatic persisted queries (a document named by its SHA-256,
//! over POST and GET), and trusted documents (only a manifest's documents run).
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, sha256_hex, spawn_app, spawn_app_with, test_config};

const ME: &str = "query Me { me { id username } }";

fn by_hash(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

async fn post(app: &TestApp, token: &str, body: Value) -> Value {
    app.http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON")
}

/// `GET /graphql` with the request in the query string, as Apollo's persisted query link sends it.
async fn get(app: &TestApp, token: &str, params: &[(&str, String)]) -> reqwest::Response {
    app.get_graphql(token, "application/json", params).await
}

#[tokio::test]
async fn an_unknown_hash_is_not_found_until_registered_with_its_text_then_runs_alone() {
    let app = spawn_app().await;
    let bob = app.user("bob").await;
    let hash = sha256_hex(ME.as_bytes());

    let missing = post(&app, &bob.token, json!({ "extensions": by_hash(&hash) })).await;
    assert_eq!(
        error_code(&missing),
        Some("PERSISTED_QUERY_NOT_FOUND"),
        "{missing}"
    );
    // Apollo Client's link also recognises the miss by this message.
    assert_eq!(missing["errors"][0]["message"], "PersistedQueryNotFound");

    let registered = post(
        &app,
        &bob.token,
        json!({ "query": ME, "extensions": by_hash(&hash) }),
    )
    .await;
    assert_eq!(registered["data"]["me"]["id"], bob.id, "{registered}");

    let alone = post(&app, &bob.token, json!({ "extensions": by_hash(&hash) })).await;
    assert_eq!(alone["data"]["me"]["username"], bob.username, "{alone}");
}

#[tokio::test]
async fn a_persisted_query_miss_is_a_request_error_in_the_negotiated_media_type() {
    let app = spawn_app().await;
    let bob = app.user("bob").await;
    let body = json!({ "extensions": by_hash(&sha256_hex(ME.as_bytes())) });

    for (accept, status) in [
        ("application/graphql-response+json", 400),
        ("application/json", 200),
    ] {
        let response = app
            .http
            .post(app.url("/graphql"))
            .bearer_auth(&bob.token)
            .header("accept", accept)
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), status, "{accept}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(accept), "{accept}: {content_type}");
        let json: Value = response.json().await.expect("JSON");
        assert_eq!(
            error_code(&json),
            Some("PERSISTED_QUERY_NOT_FOUND"),
            "{accept}: {json}"
        );
        assert!(json.get("data").is_none(), "{accept}: {json}");
    }
}

#[tokio::test]
async fn a_persisted_query_runs_over_get_and_a_persisted_mutation_does_not() {
    let app = spawn_app().await;
    let bob = app.user("bob").await;
    let hash = sha256_hex(ME.as_bytes());
    let extensions = by_hash(&hash).to_string();

    let missing = get(&app, &bob.token, &[("extensions", extensions.clone())]).await;
    let missing: Value = missing.json().await.expect("JSON");
    assert_eq!(
        error_code(&missing),
        Some("PERSISTED_QUERY_NOT_FOUND"),
        "{missing}"
    );
    let registered = get(
        &app,
        &bob.token,
        &[("query", ME.into()), ("extensions", extensions.clone())],
    )
    .await;
    let registered: Value = registered.json().await.expect("JSON");
    assert_eq!(registered["data"]["me"]["id"], bob.id, "{registered}");
    let alone: Value = get(&app, &bob.token, &[("extensions", extensions)])
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(alone["data"]["me"]["id"], bob.id, "{alone}");

    let logout = "mutation { logout }";
    let mutation_hash = sha256_hex(logout.as_bytes());
    post(
        &app,
        &app.user("carol").await.token,
        json!({ "query": logout, "extensions": by_hash(&mutation_hash) }),
    )
    .await;
    let refused = get(
        &app,
        &bob.token,
        &[("extensions", by_hash(&mutation_hash).to_string())],
    )
    .await;
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["allow"], "POST");
    // Still signed in: the mutation did not run.
    assert_eq!(
        app.data(&bob.token, ME, json!({})).await["me"]["id"],
        bob.id
    );
}

#[tokio::test]
async fn a_text_sent_with_a_hash_that_is_not_its_own_is_refused() {
    let app = spawn_app().await;
    let bob = app.user("bob").await;
    let other = sha256_hex(b"{ me { id } }");

    let response = post(
        &app,
        &bob.token,
        json!({ "query": ME, "extensions": by_hash(&other) }),
    )
    .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    assert!(response["data"].is_null(), "{response}");
    // And the hash was not taken for that text.
    let missing = post(&app, &bob.token, json!({ "extensions": by_hash(&other) })).await;
    assert_eq!(
        error_code(&missing),
        Some("PERSISTED_QUERY_NOT_FOUND"),
        "{missing}"
    );
}

/// The register document `TestApp::user` sends, which a trusted list must hold for it to work.
const REGISTER: &str = "mutation($u: String!) { register(input: {username: $u, password: \"s3cret-pass\"}) { token user { id } } }";

#[tokio::test]
async fn with_trusted_documents_only_the_listed_documents_run() {
    let listed_hash = "me-v1";
    let manifest = json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            { "id": listed_hash, "name": "Me", "type": "query", "body": ME },
            { "id": "register", "name": "Register", "type": "mutation", "body": REGISTER },
        ],
    });
    let path = std::env::temp_dir().join(format!("palaver-trusted-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, manifest.to_string()).expect("manifest written");
    let mut config = test_config().await;
    config.trusted_documents = Some(
        path.to_str()
            .expect("a UTF-8 path")
            .parse()
            .expect("a manifest"),
    );
    let app = spawn_app_with(config).await;
    let bob = app.user("bob").await;

    let by_id = post(
        &app,
        &bob.token,
        json!({ "extensions": by_hash(listed_hash) }),
    )
    .await;
    assert_eq!(by_id["data"]["me"]["id"], bob.id, "{by_id}");
    let by_text = post(&app, &bob.token, json!({ "query": ME })).await;
    assert_eq!(by_text["data"]["me"]["id"], bob.id, "{by_text}");

    let unlisted = post(&app, &bob.token, json!({ "query": "{ me { id } }" })).await;
    assert_eq!(
        error_code(&unlisted),
        Some("QUERY_NOT_IN_SAFELIST"),
        "{unlisted}"
    );
    assert!(unlisted["data"].is_null(), "{unlisted}");
    let unknown_id = post(&app, &bob.token, json!({ "extensions": by_hash("nope") })).await;
    assert_eq!(
        error_code(&unknown_id),
        Some("PERSISTED_QUERY_NOT_IN_LIST"),
        "{unknown_id}"
    );
    // Registering at run time is not possible in trusted mode.
    let text = "{ me { username } }";
    let register = post(
        &app,
        &bob.token,
        json!({ "query": text, "extensions": by_hash(&sha256_hex(text.as_bytes())) }),
    )
    .await;
    assert_eq!(
        error_code(&register),
        Some("PERSISTED_QUERY_NOT_IN_LIST"),
        "{register}"
    );

    // The WebSocket runs the same list.
    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    let refused = ws.next_payload("q").await;
    assert_eq!(
        error_code(&refused),
        Some("QUERY_NOT_IN_SAFELIST"),
        "{refused}"
    );
    let _ = std::fs::remove_file(path);
}
