//! GraphQL over HTTP as its specification words it: media types by `Accept`, request errors as
//! 4xx without `data`, queries over GET, GraphiQL only for a browser; and the `graphql-http`
//! package's audit of the whole.
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
/// What Apollo Client 4 sends.
const APOLLO_ACCEPT: &str = "application/graphql-response+json,application/json;q=0.9";

async fn post(app: &TestApp, accept: Option<&str>, body: &str) -> (u16, String, Value) {
    let mut request = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    read(request.send().await.expect("request sent")).await
}

/// `/graphql` with the given query-string parameters.
fn get_url(app: &TestApp, params: &[(&str, &str)]) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect();
    app.url(&format!("/graphql?{}", query.join("&")))
}

async fn read(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, content_type, json)
}

#[tokio::test]
async fn the_response_comes_in_the_media_type_the_client_asks_for() {
    let app = spawn_app().await;
    let body = json!({ "query": "{ __typename }" }).to_string();
    for (accept, expected) in [
        (Some(APOLLO_ACCEPT), GRAPHQL_RESPONSE_JSON),
        (Some(GRAPHQL_RESPONSE_JSON), GRAPHQL_RESPONSE_JSON),
        (Some("application/json"), "application/json"),
        (Some("*/*"), "application/json"),
        (
            Some("application/json, application/graphql-response+json;q=0.5"),
            "application/json",
        ),
        (None, "application/json"),
    ] {
        let mut request = app
            .http
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let (status, content_type, json) = read(request.send().await.unwrap()).await;
        assert_eq!(status, 200, "{accept:?}: {json}");
        assert!(
            content_type.starts_with(expected),
            "{accept:?}: {content_type}"
        );
        assert_eq!(json["data"]["__typename"], "Query", "{json}");
    }
}

#[tokio::test]
async fn request_errors_are_400_without_data_for_graphql_response_json_and_200_for_json() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let cases = [
        (
            "a document that does not parse",
            json!({ "query": "{ me {" }),
        ),
        (
            "an unknown field",
            json!({ "query": "{ me { favouriteColour } }" }),
        ),
        (
            "a variable of the wrong type",
            json!({
                "query": "query($n: Int) { users(first: $n) { edges { cursor } } }",
                "variables": { "n": "many" },
            }),
        ),
        (
            "a non-null variable left out",
            json!({ "query": "query($id: ID!) { user(id: $id) { id } }" }),
        ),
        (
            "a non-null variable given null",
            json!({
                "query": "query($id: ID!) { user(id: $id) { id } }",
                "variables": { "id": null },
            }),
        ),
    ];
    for (what, body) in &cases {
        for (accept, status, media) in [
            (APOLLO_ACCEPT, 400, GRAPHQL_RESPONSE_JSON),
            ("application/json", 200, "application/json"),
        ] {
            let response = app
                .http
                .post(app.url("/graphql"))
                .bearer_auth(&alice.token)
                .header("accept", accept)
                .json(body)
                .send()
                .await
                .unwrap();
            let (got, content_type, json) = read(response).await;
            assert_eq!(got, status, "{what} ({accept}): {json}");
            assert!(content_type.starts_with(media), "{what}: {content_type}");
            assert!(json.get("data").is_none(), "{what}: {json}");
            assert_eq!(error_code(&json), Some("BAD_USER_INPUT"), "{what}: {json}");
        }
    }

    // An error met while executing is no request error: 200 with `data`, whatever the type.
    let (status, _, json) = post(&app, Some(APOLLO_ACCEPT), r#"{"query": "{ me { id } }"}"#).await;
    assert_eq!(status, 200, "{json}");
    assert!(json.get("data").is_some(), "{json}");
    assert_eq!(error_code(&json), Some("UNAUTHENTICATED"), "{json}");
}

#[tokio::test]
async fn refusals_before_execution_come_in_the_graphql_media_type_apollo_reads() {
    let mut config = test_config().await;
    config.max_batch = 2;
    let app = spawn_app_with(config).await;

    let oversize = json!({ "query": format!("{{ __typename }}{}", " ".repeat(2 * 1024 * 1024)) });
    let batch = json!([
        { "query": "{ __typename }" },
        { "query": "{ __typename }" },
        { "query": "{ __typename }" },
    ]);
    let cases = [
        (oversize.to_string(), 413, "PAYLOAD_TOO_LARGE"),
        (batch.to_string(), 400, "BATCH_TOO_LARGE"),
        ("{ \"not JSON".to_owned(), 400, "BAD_USER_INPUT"),
        (
            r#"{"qeury": "{ __typename }"}"#.to_owned(),
            400,
            "BAD_USER_INPUT",
        ),
        (r#"{"query": 5}"#.to_owned(), 400, "BAD_USER_INPUT"),
        (
            r#"{"query": "{ __typename }", "variables": "x"}"#.to_owned(),
            400,
            "BAD_USER_INPUT",
        ),
    ];
    for (body, status, code) in cases {
        let (got, content_type, json) = post(&app, Some(APOLLO_ACCEPT), &body).await;
        assert_eq!(got, status, "{body:.80}: {json}");
        assert!(
            content_type.starts_with(GRAPHQL_RESPONSE_JSON),
            "{body:.80}: {content_type}"
        );
        assert!(json.get("data").is_none(), "{json}");
        assert_eq!(error_code(&json), Some(code), "{body:.80}: {json}");
    }

    // A body that is neither JSON nor a multipart upload is refused unread as GraphQL.
    for content_type in [Some("text/plain;charset=UTF-8"), None] {
        let mut request = app
            .http
            .post(app.url("/graphql"))
            .header("accept", APOLLO_ACCEPT)
            .body(r#"{"query": "{ __typename }"}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, media, json) = read(request.send().await.unwrap()).await;
        assert_eq!(status, 415, "{content_type:?}: {json}");
        assert!(media.starts_with(GRAPHQL_RESPONSE_JSON), "{media}");
        assert_eq!(error_code(&json), Some("BAD_USER_INPUT"), "{json}");
    }
}

#[tokio::test]
async fn queries_run_over_get_and_mutations_over_get_are_refused_with_405() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;

    let response = app
        .http
        .get(get_url(
            &app,
            &[
                (
                    "query",
                    "query Me($n: Int) { me { id } users(first: $n) { edges { cursor } } }",
                ),
                ("operationName", "Me"),
                ("variables", r#"{"n": 1}"#),
            ],
        ))
        .bearer_auth(&alice.token)
        .header("accept", APOLLO_ACCEPT)
        .send()
        .await
        .unwrap();
    let vary = response
        .headers()
        .get("vary")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, content_type, json) = read(response).await;
    assert_eq!(status, 200, "{json}");
    assert!(
        content_type.starts_with(GRAPHQL_RESPONSE_JSON),
        "{content_type}"
    );
    assert_eq!(json["data"]["me"]["id"], alice.id, "{json}");
    assert!(vary.is_some_and(|v| v.to_ascii_lowercase().contains("accept")));

    for document in [
        "mutation { logout }",
        "query Q { __typename } mutation M { logout }",
        "subscription { notifications { id } }",
    ] {
        let mut params = vec![("query", document)];
        if document.contains("mutation M") {
            params.push(("operationName", "M"));
        }
        let response = app
            .http
            .get(get_url(&app, &params))
            .bearer_auth(&alice.token)
            .header("accept", APOLLO_ACCEPT)
            .send()
            .await
            .unwrap();
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, _, json) = read(response).await;
        assert_eq!(status, 405, "{document}: {json}");
        assert_eq!(allow.as_deref(), Some("POST"), "{document}");
        assert_eq!(
            error_code(&json),
            Some("BAD_USER_INPUT"),
            "{document}: {json}"
        );
    }
    // The session the refused `logout` named is still good.
    let data = app.data(&alice.token, "{ me { id } }", json!({})).await;
    assert_eq!(data["me"]["id"], alice.id);

    // A GET that names no query, or variables that are no JSON map, is a bad request.
    for query in [
        vec![],
        vec![("query", "{ __typename }"), ("variables", "[1]")],
    ] {
        let response = app
            .http
            .get(get_url(&app, &query))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        let (status, _, json) = read(response).await;
        assert_eq!(status, 400, "{query:?}: {json}");
        assert_eq!(error_code(&json), Some("BAD_USER_INPUT"), "{json}");
    }
}

#[tokio::test]
async fn graphiql_is_served_only_to_a_browser_asking_for_a_page() {
    let app = spawn_app().await;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    let page = app
        .fetch(Method::GET, "/graphql", None, &[("accept", browser)])
        .await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    let query = "/graphql?query=%7B__typename%7D";
    for accept in ["*/*", "application/json", GRAPHQL_RESPONSE_JSON] {
        let (status, content_type, json) = read(
            app.fetch(Method::GET, query, None, &[("accept", accept)])
                .await,
        )
        .await;
        assert_eq!(status, 200, "{accept}: {json}");
        assert!(!content_type.starts_with("text/html"), "{accept}");
        assert_eq!(json["data"]["__typename"], "Query", "{accept}: {json}");
    }
}

/// The `graphql-http` package's audit (`tests/graphql-http/audit.mjs`) against a running
/// server: every MUST, SHOULD and MAY item it checks passes. Needs Node.js; the folder's packages
/// are installed from its lock file when missing.
#[tokio::test]
async fn the_graphql_over_http_audit_passes_every_item() {
    let app = spawn_app().await;
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graphql-http");
    npm_ci(&folder, "graphql-http").await;
    let output = tokio::process::Command::new("node")
        .arg("audit.mjs")
        .arg(app.url("/graphql"))
        .current_dir(&folder)
        .output()
        .await
        .expect("node runs (Node.js must be installed)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the audit failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains(" passed, 0 failed"), "{report}");
}
