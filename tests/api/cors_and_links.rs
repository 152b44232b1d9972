//! What a web front end on another origin needs: Apollo's request headers allowed by CORS, the
//! download headers exposed, the WebSocket held to the same origins, absolute `downloadUrl`s, and
//! a refusal of an oversized body that every HTTP client gets to read.
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};

use crate::helpers::*;

const FRONT_END: &str = "https://app.example.com";

async fn app_with_origins() -> TestApp {
    let mut config = test_config().await;
    config.cors_origins = vec![FRONT_END.parse().unwrap()];
    spawn_app_with(config).await
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_preflight_allows_the_headers_apollo_client_and_its_upload_link_send() {
    let app = app_with_origins().await;
    let asked = "authorization,content-type,apollo-require-preflight,\
                 apollographql-client-name,apollographql-client-version,x-apollo-operation-name";

    let preflight = app
        .fetch(
            Method::OPTIONS,
            "/graphql",
            None,
            &[
                ("origin", FRONT_END),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", asked),
            ],
        )
        .await;

    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(header(&preflight, "access-control-allow-origin"), FRONT_END);
    let allowed = header(&preflight, "access-control-allow-headers");
    for name in asked.split(',') {
        assert!(allowed.contains(name), "{name} is not in {allowed}");
    }
}

#[tokio::test]
async fn a_download_exposes_its_file_name_validator_and_range_to_scripts() {
    let app = app_with_origins().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app
        .send_file(&alice, &conversation, "notes.txt", b"hello".to_vec())
        .await;
    let url = message["attachment"]["downloadUrl"].as_str().unwrap();

    let download = app
        .fetch(Method::GET, url, None, &[("origin", FRONT_END)])
        .await;

    assert_eq!(download.status(), 200);
    assert_eq!(header(&download, "access-control-allow-origin"), FRONT_END);
    let exposed = header(&download, "access-control-expose-headers");
    for name in ["content-disposition", "etag", "content-range"] {
        assert!(exposed.contains(name), "{name} is not in {exposed:?}");
    }
}

/// Opens a WebSocket with the given `Origin` (none: as a client that is not a browser); the
/// HTTP status of a refused upgrade.
async fn open_socket(app: &TestApp, origin: Option<&str>) -> Result<(), u16> {
    open_socket_with(app, origin, &[]).await
}

/// [`open_socket`] with more request headers (a proxy's, say).
async fn open_socket_with(
    app: &TestApp,
    origin: Option<&str>,
    extra: &[(&'static str, &str)],
) -> Result<(), u16> {
    let mut request = format!("ws://{}/graphql/ws", app.addr)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    if let Some(origin) = origin {
        headers.insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    for (name, value) in extra {
        headers.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("the upgrade failed otherwise: {other}"),
    }
}

#[tokio::test]
async fn with_origins_configured_a_websocket_from_another_origin_is_refused() {
    let app = app_with_origins().await;
    let own = format!("http://{}", app.addr);

    assert_eq!(
        open_socket(&app, Some("https://evil.example.net")).await,
        Err(403)
    );
    assert_eq!(open_socket(&app, Some(FRONT_END)).await, Ok(()));
    // The server's own pages (GraphiQL), and clients that are not browsers.
    assert_eq!(open_socket(&app, Some(&own)).await, Ok(()));
    assert_eq!(open_socket(&app, None).await, Ok(()));

    // With none configured, any page may open one: tokens never travel in cookies.
    let open = spawn_app().await;
    assert_eq!(
        open_socket(&open, Some("https://evil.example.net")).await,
        Ok(())
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_servers_own_public_origin_may_open_a_websocket() {
    let mut config = test_config().await;
    config.cors_origins = vec![FRONT_END.parse().unwrap()];
    config.trust_forwarded = true;
    let app = spawn_app_with(config).await;
    let forwarded = [("Forwarded", "proto=https;host=chat.example.com")];
    // GraphiQL served through the proxy opens its socket from the public origin.
    assert_eq!(
        open_socket_with(&app, Some("https://chat.example.com"), &forwarded).await,
        Ok(())
    );
    // Another site is still refused, whatever the proxy says the host is.
    assert_eq!(
        open_socket_with(&app, Some("https://evil.example.net"), &forwarded).await,
        Err(403)
    );
}

/// The `downloadUrl` of the only message of a conversation, asked for with extra headers.
async fn download_url(
    app: &TestApp,
    user: &TestUser,
    conversation: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut request = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&user.token)
        .json(&json!({
            "query": "query($c: ID!) { messages(conversationId: $c, last: 1) { edges { node { attachment { downloadUrl } } } } }",
            "variables": { "c": conversation },
        }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response: Value = request.send().await.unwrap().json().await.unwrap();
    response["data"]["messages"]["edges"][0]["node"]["attachment"]["downloadUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("no downloadUrl in {response}"))
        .to_owned()
}

/// A server with the given settings, and a conversation whose one message carries a file.
async fn file_conversation(config: palaver::Config) -> (TestApp, TestUser, String) {
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = app.room(&alice, "files", &[&bob]).await;
    app.send_file(&alice, &room, "notes.txt", b"hello".to_vec())
        .await;
    (app, alice, room)
}

#[tokio::test]
async fn download_urls_are_absolute_on_the_host_the_request_was_sent_to() {
    let (app, alice, room) = file_conversation(test_config().await).await;
    let forwarded = [
        ("forwarded", "proto=https;host=evil.example.net"),
        ("x-forwarded-host", "evil.example.net"),
        ("x-forwarded-proto", "https"),
    ];

    let url = download_url(&app, &alice, &room, &[]).await;
    assert!(url.starts_with(&app.url("/files/msg_")), "{url}");
    // Forwarded headers are not trusted unless configured: a client could name any host.
    let url = download_url(&app, &alice, &room, &forwarded).await;
    assert!(url.starts_with(&app.url("/files/msg_")), "{url}");
    // Nor is a host that is not a plain host and port.
    let url = download_url(&app, &alice, &room, &[("host", "evil.example.net/x?")]).await;
    assert!(url.starts_with("/files/msg_"), "{url}");
    // The link works as handed out.
    let file = app.fetch(Method::GET, &url, None, &[]).await;
    assert_eq!(file.status(), 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_download_urls_use_the_forwarded_scheme_and_host() {
    let mut config = test_config().await;
    config.trust_forwarded = true;
    let (app, alice, room) = file_conversation(config).await;

    let url = download_url(
        &app,
        &alice,
        &room,
        &[(
            "forwarded",
            "for=192.0.2.1;proto=https;host=\"chat.example.com\", for=10.0.0.1",
        )],
    )
    .await;
    assert!(
        url.starts_with("https://chat.example.com/files/msg_"),
        "{url}"
    );

    let url = download_url(
        &app,
        &alice,
        &room,
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "chat.example.org"),
        ],
    )
    .await;
    assert!(
        url.starts_with("https://chat.example.org/files/msg_"),
        "{url}"
    );
}

#[tokio::test]
async fn a_configured_public_url_is_used_whatever_host_the_request_names() {
    let mut config = test_config().await;
    config.public_url = Some("https://files.example.com/".into());
    config.trust_forwarded = true;
    let (app, alice, room) = file_conversation(config).await;

    let url = download_url(
        &app,
        &alice,
        &room,
        &[("x-forwarded-host", "other.example")],
    )
    .await;
    assert!(
        url.starts_with("https://files.example.com/files/msg_"),
        "{url}"
    );
}

#[tokio::test]
async fn a_client_still_sending_an_oversized_body_reads_the_413() {
    // As Node's fetch does: the whole body is written before the answer is read. A server that
    // answers and closes before reading it makes the client's write fail (EPIPE or a reset).
    let mut config = test_config().await;
    config.max_upload_bytes = 64 * 1024;
    let app = spawn_app_with(config).await;
    let json_body = vec![b' '; 8 * 1024 * 1024];
    // An upload as apollo-upload-client sends it: the operation, the map, then the file.
    let boundary = "palaver-test-boundary";
    let mut upload_body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"operations\"\r\n\r\n\
         {{\"query\":\"mutation($f: Upload!) {{ sendMessage(input: {{recipientId: \\\"usr_1\\\", file: $f}}) {{ id }} }}\",\"variables\":{{\"f\":null}}}}\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"map\"\r\n\r\n{{\"0\":[\"variables.f\"]}}\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"0\"; filename=\"big.bin\"\r\n\
         content-type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    upload_body.extend(std::iter::repeat_n(b'x', 8 * 1024 * 1024));
    upload_body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let multipart = format!("multipart/form-data; boundary={boundary}");

    for (content_type, declared, body) in [
        ("application/json", true, &json_body),
        ("application/json", false, &json_body),
        (multipart.as_str(), true, &upload_body),
        (multipart.as_str(), false, &upload_body),
    ] {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let framing = if declared {
            format!("content-length: {}\r\n", body.len())
        } else {
            "transfer-encoding: chunked\r\n".to_owned()
        };
        let head = format!(
            "POST /graphql HTTP/1.1\r\nhost: {}\r\ncontent-type: {content_type}\r\n\
             accept: application/graphql-response+json\r\napollo-require-preflight: true\r\n\
             {framing}\r\n",
            app.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let written = if declared {
            stream.write_all(body).await
        } else {
            async {
                for chunk in body.chunks(64 * 1024) {
                    stream
                        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .await?;
                    stream.write_all(chunk).await?;
                    stream.write_all(b"\r\n").await?;
                }
                stream.write_all(b"0\r\n\r\n").await
            }
            .await
        };
        written.unwrap_or_else(|err| panic!("{content_type}: the body could not be sent: {err}"));
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        // Read until the headers and the JSON body are in (the connection may stay open).
        while !String::from_utf8_lossy(&answer).contains("PAYLOAD_TOO_LARGE") {
            let n = tokio::time::timeout(WAIT, stream.read(&mut buffer))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(
                n > 0,
                "closed before the answer: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buffer[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{content_type}: {answer}"
        );
    }
}
