//! Security headers on every response, and the CORS allow-list.
use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, test_config};

fn assert_hardened(response: &reqwest::Response, what: &str) {
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers_errors_included() {
    let app = spawn_app().await;

    let ok = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_hardened(&ok, "POST /graphql");
    assert!(
        ok.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );

    let health = app.fetch(Method::GET, "/healthz", None, &[]).await;
    assert_eq!(health.status(), 200);
    assert_hardened(&health, "/healthz");

    let malformed = app
        .fetch(
            Method::POST,
            "/graphql",
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(malformed.status(), 400);
    assert_hardened(&malformed, "a malformed request");

    let missing = app.fetch(Method::GET, "/files/nope", None, &[]).await;
    assert!(missing.status().is_client_error());
    assert_hardened(&missing, "a missing file");

    let unknown = app.fetch(Method::GET, "/no-such-path", None, &[]).await;
    assert_eq!(unknown.status(), 404);
    assert_hardened(&unknown, "an unknown path");
}

#[tokio::test]
async fn graphiql_loads_only_its_own_files_from_this_server_under_a_self_only_policy() {
    let app = spawn_app().await;

    let page = app
        .fetch(Method::GET, "/graphql", None, &[("accept", "text/html")])
        .await;

    assert_eq!(page.status(), 200);
    assert_hardened(&page, "GraphiQL");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let directive = |name: &str| {
        csp.split(';')
            .find_map(|d| {
                d.trim()
                    .strip_prefix(&format!("{name} "))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no {name} in {csp}"))
    };
    assert_eq!(directive("script-src"), "'self'", "{csp}");
    assert_eq!(directive("connect-src"), "'self'", "{csp}");
    assert!(!csp.contains("https:") && !csp.contains("http:"), "{csp}");
    assert!(!html.contains("//"), "a file from another origin: {html}");
    // Every script and stylesheet the page names is served here, under the same policy.
    let mut files = 0;
    for needle in ["src=\"", "href=\""] {
        for rest in html.split(needle).skip(1) {
            let path = rest.split('"').next().unwrap();
            let file = app.fetch(Method::GET, path, None, &[]).await;
            assert_eq!(file.status(), 200, "{path}");
            assert_eq!(
                file.headers()["content-security-policy"],
                csp.as_str(),
                "{path}"
            );
            assert!(!file.bytes().await.unwrap().is_empty(), "{path}");
            files += 1;
        }
    }
    assert!(
        files >= 2,
        "GraphiQL's script and stylesheet are not on the page: {html}"
    );
}

#[tokio::test]
async fn without_configured_origins_no_cors_headers_are_sent() {
    let app = spawn_app().await;

    let preflight = app
        .fetch(
            Method::OPTIONS,
            "/graphql",
            None,
            &[
                ("origin", "https://chat.example.com"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;

    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_succeeds_and_another_origin_gets_no_allow_origin() {
    let mut config = test_config().await;
    config.cors_origins = vec![
        "https://chat.example.com/".parse().unwrap(),
        "http://localhost:3000".parse().unwrap(),
    ];
    let app = spawn_app_with(config).await;

    let allowed = preflight(&app, "https://chat.example.com").await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://chat.example.com"
    );
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_ascii_uppercase();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );
    assert_hardened(&allowed, "a preflight");

    let other = preflight(&app, "https://evil.example.net").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // An actual request from an allowed origin is answered with the origin too.
    let request = app
        .http
        .post(app.url("/graphql"))
        .header("origin", "http://localhost:3000")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        request.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
}

async fn preflight(app: &crate::helpers::TestApp, origin: &str) -> reqwest::Response {
    app.fetch(
        Method::OPTIONS,
        "/graphql",
        None,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ],
    )
    .await
}

#[test]
fn origins_that_could_never_match_are_refused_at_startup() {
    for bad in [
        "chat.example.com",
        "https://",
        "https://chat.example.com/app",
        "*",
        "https://*.example.com",
    ] {
        assert!(
            bad.parse::<palaver::config::CorsOrigin>().is_err(),
            "{bad} was accepted"
        );
    }
}
