//! File messages: uploads as typed messages, the object store, and the download route.
use palaver::{config::Secret, files::SigningKey};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

// --- Small but well-formed sample files, built here so the tests carry no binaries. ---

fn png() -> Vec<u8> {
    hex::decode(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000\
         1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f5d0a4\
         0000000049454e44ae426082",
    )
    .unwrap()
}

fn jpeg() -> Vec<u8> {
    let mut bytes = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x00,
    ];
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    bytes
}

fn gif() -> Vec<u8> {
    hex::decode(
        "47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b",
    )
    .unwrap()
}

/// A RIFF container: `RIFF <size> <form> <chunks>`.
fn riff(form: &[u8; 4], chunks: &[u8]) -> Vec<u8> {
    let mut bytes = b"RIFF".to_vec();
    bytes.extend_from_slice(&((4 + chunks.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(form);
    bytes.extend_from_slice(chunks);
    bytes
}

fn wav() -> Vec<u8> {
    let mut chunks = b"fmt ".to_vec();
    chunks.extend_from_slice(&16u32.to_le_bytes());
    chunks.extend_from_slice(&1u16.to_le_bytes()); // PCM
    chunks.extend_from_slice(&1u16.to_le_bytes()); // mono
    chunks.extend_from_slice(&8000u32.to_le_bytes());
    chunks.extend_from_slice(&8000u32.to_le_bytes());
    chunks.extend_from_slice(&1u16.to_le_bytes());
    chunks.extend_from_slice(&8u16.to_le_bytes());
    chunks.extend_from_slice(b"data");
    chunks.extend_from_slice(&4u32.to_le_bytes());
    chunks.extend_from_slice(&[128, 128, 128, 128]);
    riff(b"WAVE", &chunks)
}

fn mp3() -> Vec<u8> {
    let mut bytes = b"ID3\x03\x00\x00\x00\x00\x00\x00".to_vec();
    bytes.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    bytes.extend_from_slice(&[0u8; 413]);
    bytes
}

fn mp4() -> Vec<u8> {
    let mut bytes = vec![0x00, 0x00, 0x00, 0x18];
    bytes.extend_from_slice(b"ftypisom\x00\x00\x02\x00isomiso2");
    bytes.extend_from_slice(&[0x00, 0x00, 0x00, 0x08]);
    bytes.extend_from_slice(b"free");
    bytes.extend_from_slice(&[0x00, 0x00, 0x00, 0x10]);
    bytes.extend_from_slice(b"mdat");
    bytes.extend_from_slice(&[0u8; 8]);
    bytes
}

fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
      2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n\
      trailer << /Root 1 0 R >>\n%%EOF\n"
        .to_vec()
}

/// An empty zip archive: just the end-of-central-directory record.
fn zip() -> Vec<u8> {
    let mut bytes = b"PK\x05\x06".to_vec();
    bytes.extend_from_slice(&[0u8; 18]);
    bytes
}

/// A gzip stream of nothing.
fn gzip() -> Vec<u8> {
    hex::decode("1f8b08000000000000030300000000000000000000").unwrap()
}

/// Bytes no format claims.
fn opaque(len: usize) -> Vec<u8> {
    let mut bytes = b"palaver opaque data ".to_vec();
    bytes.extend((0..len).map(|i| (i * 7 % 251) as u8));
    bytes
}

fn elf() -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01\x00".to_vec();
    bytes.resize(128, 0);
    bytes
}

/// The numeric row id inside a public message id (`msg_12` → 12).
fn row_id(message_id: &Value) -> i64 {
    row_id_of(message_id.as_str().expect("a message id"), "msg_")
}

fn row_id_of(id: &str, prefix: &str) -> i64 {
    id.strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .expect("an id with its prefix")
}

async fn download_bytes(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let response = app.fetch(Method::GET, path, token, &[]).await;
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

fn download_path(message: &Value) -> String {
    format!("/files/{}", message["id"].as_str().unwrap())
}

const MESSAGES: &str = "query($c: ID!) { messages(conversationId: $c) { edges { node { id kind body attachment { filename } } } } }";

async fn message_count(app: &TestApp, user: &TestUser, conversation: &str) -> usize {
    app.data(&user.token, MESSAGES, json!({ "c": conversation }))
        .await["messages"]["edges"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_file_of_each_kind_is_stored_and_downloaded_byte_for_byte() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;

    let samples: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("pixel.png", png(), "IMAGE", "image/png"),
        ("photo.jpg", jpeg(), "IMAGE", "image/jpeg"),
        ("anim.gif", gif(), "IMAGE", "image/gif"),
        ("clip.mp4", mp4(), "VIDEO", "video/mp4"),
        ("beep.wav", wav(), "AUDIO", "audio/x-wav"),
        ("song.mp3", mp3(), "AUDIO", "audio/mpeg"),
        ("paper.pdf", pdf(), "DOCUMENT", "application/pdf"),
        (
            "table.csv",
            b"name,count\nalice,1\n".to_vec(),
            "DOCUMENT",
            "text/csv; charset=utf-8",
        ),
        ("bundle.zip", zip(), "ARCHIVE", "application/zip"),
        ("logs.gz", gzip(), "ARCHIVE", "application/gzip"),
        ("blob.dat", opaque(300), "FILE", "application/octet-stream"),
    ];
    for (filename, bytes, kind, content_type) in &samples {
        let message = app
            .send_file(&alice, &conversation, filename, bytes.clone())
            .await;
        assert_eq!(message["kind"], *kind, "{filename}: {message}");
        assert!(message["body"].is_null());
        let attachment = &message["attachment"];
        assert_eq!(attachment["filename"], *filename);
        assert_eq!(attachment["contentType"], *content_type, "{filename}");
        assert_eq!(attachment["size"], bytes.len());
        assert_eq!(attachment["sha256"], sha256_hex(bytes));

        // The other member downloads exactly what was sent, with the right headers.
        let response = app
            .fetch(Method::GET, &download_path(&message), Some(&bob.token), &[])
            .await;
        assert_eq!(response.status(), 200, "{filename}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], *content_type);
        assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(
            headers["etag"],
            format!("\"{}\"", sha256_hex(bytes)).as_str()
        );
        let disposition = headers["content-disposition"].to_str().unwrap();
        assert!(
            disposition.contains(&format!("filename*=UTF-8''{filename}")),
            "{disposition}"
        );
        let body = response.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), sha256_hex(bytes), "{filename}");
    }
    assert_eq!(count_files(&dir), samples.len());
}

#[tokio::test]
async fn a_file_message_can_carry_a_caption_and_reaches_subscribers_like_any_message() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe(
        "1",
        "subscription { messageEvents { kind message { id kind body attachment { filename sha256 } } } }",
        json!({}),
    )
    .await;
    ws.until_live(&["1"], 1, async |_| {
        app.probe_message(&alice, &conversation).await
    })
    .await;

    let (_, response) = app
        .upload(
            &alice.token,
            json!({ "conversationId": conversation, "body": "look at this" }),
            "pixel.png",
            png(),
        )
        .await;
    let message = &response["data"]["sendMessage"];
    assert_eq!(message["kind"], "IMAGE", "{response}");
    assert_eq!(message["body"], "look at this");

    let event = ws.next_data("1").await;
    assert_eq!(event["messageEvents"]["kind"], "CREATED");
    assert_eq!(event["messageEvents"]["message"]["id"], message["id"]);
    assert_eq!(event["messageEvents"]["message"]["kind"], "IMAGE");
    assert_eq!(
        event["messageEvents"]["message"]["attachment"]["sha256"],
        sha256_hex(&png())
    );

    // Without a file, a body is still required.
    let refused = app
        .gql(
            Some(&alice.token),
            "mutation($c: ID!) { sendMessage(input: {conversationId: $c}) { id } }",
            json!({ "c": conversation }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
}

#[tokio::test]
async fn the_content_decides_the_kind_when_the_extension_lies() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;

    // A PNG named like a PDF is an image, served as one.
    let disguised = app
        .send_file(&alice, &conversation, "report.pdf", png())
        .await;
    assert_eq!(disguised["kind"], "IMAGE");
    assert_eq!(disguised["attachment"]["contentType"], "image/png");
    let response = app
        .fetch(
            Method::GET,
            &download_path(&disguised),
            Some(&bob.token),
            &[],
        )
        .await;
    assert_eq!(response.headers()["content-type"], "image/png");

    // A name claiming an image over bytes that are no image: a plain file, served as opaque bytes.
    let fake = app
        .send_file(
            &alice,
            &conversation,
            "holiday.png",
            b"not an image at all".to_vec(),
        )
        .await;
    assert_eq!(fake["kind"], "FILE");
    assert_eq!(
        fake["attachment"]["contentType"],
        "application/octet-stream"
    );
    assert_eq!(count_files(&dir), 2);

    // An executable dressed as a photo is refused, and leaves nothing behind.
    let before = message_count(&app, &alice, &conversation).await;
    let (_, refused) = app
        .upload(
            &alice.token,
            json!({ "conversationId": conversation }),
            "cat.jpg",
            elf(),
        )
        .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
    let (_, script) = app
        .upload(
            &alice.token,
            json!({ "conversationId": conversation }),
            "notes.txt",
            b"#!/bin/sh\nrm -rf ~\n".to_vec(),
        )
        .await;
    assert_eq!(error_code(&script), Some("BAD_USER_INPUT"), "{script}");
    assert_eq!(message_count(&app, &alice, &conversation).await, before);
    assert_eq!(count_files(&dir), 2);
}

#[tokio::test]
async fn downloads_need_a_members_token_or_a_signed_url() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app
        .send_file(&alice, &conversation, "pixel.png", png())
        .await;
    let path = download_path(&message);

    // No credentials: 401, as JSON with a code.
    let response = app.fetch(Method::GET, &path, None, &[]).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), Some("UNAUTHENTICATED"));
    // A dead token: 401 too.
    let response = app
        .fetch(Method::GET, &path, Some("not-a-token"), &[])
        .await;
    assert_eq!(response.status(), 401);

    // Someone outside the conversation: 404, the same as for a message that does not exist.
    let response = app
        .fetch(Method::GET, &path, Some(&mallory.token), &[])
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), Some("NOT_FOUND"));
    let (missing, _) = download_bytes(&app, "/files/msg_999999", Some(&mallory.token)).await;
    assert_eq!(missing, 404);
    let (malformed, _) = download_bytes(&app, "/files/usr_1", Some(&alice.token)).await;
    assert_eq!(malformed, 404);
    // Nor can the outsider learn of it through GraphQL.
    let hidden = app
        .gql(Some(&mallory.token), MESSAGES, json!({ "c": conversation }))
        .await;
    assert_eq!(error_code(&hidden), Some("NOT_FOUND"));

    // Both members may download; so may anyone given the signed URL, without a token.
    for user in [&alice, &bob] {
        let (status, bytes) = download_bytes(&app, &path, Some(&user.token)).await;
        assert_eq!((status, bytes), (200, png()));
    }
    let signed = message["attachment"]["downloadUrl"].as_str().unwrap();
    // Absolute, on the host the request was sent to, so a page on another origin can use it.
    assert!(signed.starts_with(&app.url(&path)), "{signed}");
    let (status, bytes) = download_bytes(&app, signed, None).await;
    assert_eq!((status, bytes), (200, png()));
}

#[tokio::test]
async fn forged_tampered_misdirected_and_expired_signed_urls_are_refused() {
    let key = "k".repeat(40);
    let mut config = test_config().await;
    config.url_signing_key = Some(Secret(key.clone()));
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let first = app.send_file(&alice, &conversation, "a.png", png()).await;
    let second = app.send_file(&alice, &conversation, "b.gif", gif()).await;
    let signed = first["attachment"]["downloadUrl"].as_str().unwrap();
    assert_eq!(download_bytes(&app, signed, None).await.0, 200);

    let (path, query) = signed.split_once('?').unwrap();
    let params: std::collections::HashMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let expires: i64 = params["expires"].parse().unwrap();
    let signature = params["signature"];
    let user = params["user"];
    assert_eq!(user, alice.id, "made for the member who asked");

    let forged = format!(
        "{path}?user={user}&expires={expires}&signature=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
    let tampered = format!(
        "{path}?user={user}&expires={}&signature={signature}",
        expires + 86_400
    );
    let misdirected = format!(
        "{}?user={user}&expires={expires}&signature={signature}",
        download_path(&second)
    );
    // Signed for Alice, presented as Bob's (a member too) or as nobody's.
    let other_user = format!(
        "{path}?user={}&expires={expires}&signature={signature}",
        bob.id
    );
    let no_user = format!("{path}?expires={expires}&signature={signature}");
    let bad_user = format!("{path}?user=cnv_1&expires={expires}&signature={signature}");
    let half = format!("{path}?user={user}&signature={signature}");
    // Correctly signed with the server's key, but in the past.
    let past = chrono::Utc::now().timestamp() - 60;
    let expired = format!(
        "{path}?user={user}&expires={past}&signature={}",
        SigningKey::new(key.as_bytes()).signature(
            row_id(&first["id"]),
            row_id_of(&alice.id, "usr_"),
            past
        )
    );
    for url in [
        &forged,
        &tampered,
        &misdirected,
        &other_user,
        &no_user,
        &bad_user,
        &half,
        &expired,
    ] {
        let response = app.fetch(Method::GET, url, None, &[]).await;
        assert_eq!(response.status(), 403, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), Some("FORBIDDEN"));
    }
    // A wrong signature is not rescued by a token either: the signature is what was presented.
    let response = app.fetch(Method::GET, &forged, Some(&bob.token), &[]).await;
    assert_eq!(response.status(), 403);
    // A signature for a message that does not exist is just as forged: nothing leaks.
    let response = app
        .fetch(
            Method::GET,
            &format!("/files/msg_999999?user={user}&expires={expires}&signature={signature}"),
            None,
            &[],
        )
        .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_signed_url_stops_working_once_the_member_it_was_made_for_is_removed() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "plans", &[&bob, &carol]).await;
    let message = app.send_file(&alice, &room, "pixel.png", png()).await;
    let bobs = download_url_as(&app, &bob, &room, &message["id"]).await;
    let carols = download_url_as(&app, &carol, &room, &message["id"]).await;
    assert!(bobs.contains(&format!("user={}", bob.id)), "{bobs}");
    assert_ne!(bobs, carols, "each member gets a URL of their own");
    assert_eq!(download_bytes(&app, &bobs, None).await, (200, png()));

    app.data(
        &alice.token,
        "mutation($r: ID!, $u: ID!) { removeMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;

    // Bob's URL has not expired, but Bob is no longer a member: the same 404 as for an outsider.
    let response = app.fetch(Method::GET, &bobs, None, &[]).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), Some("NOT_FOUND"));
    // Carol is still a member: hers still works, without a token.
    assert_eq!(download_bytes(&app, &carols, None).await, (200, png()));
    // Bob cannot borrow Carol's membership by putting his id in her URL, nor Carol's in his.
    let swapped = carols.replace(&format!("user={}", carol.id), &format!("user={}", bob.id));
    assert_ne!(swapped, carols);
    assert_eq!(download_bytes(&app, &swapped, None).await.0, 403);
    let borrowed = bobs.replace(&format!("user={}", bob.id), &format!("user={}", carol.id));
    assert_eq!(download_bytes(&app, &borrowed, None).await.0, 403);
}

#[tokio::test]
async fn live_events_carry_each_subscribers_own_download_url() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "plans", &[&bob, &carol]).await;
    // The same selection for both, which would otherwise be rendered once and copied.
    let query = "subscription($c: ID) { messageEvents(conversationId: $c) { message { id attachment { filename downloadUrl } } } }";
    let mut sockets = Vec::new();
    for user in [&bob, &carol] {
        let mut ws = app.ws(Some(&user.token)).await;
        ws.subscribe("m", query, json!({ "c": room })).await;
        sockets.push((user, ws));
    }
    let mut live: Vec<_> = sockets.iter_mut().map(|(_, ws)| (ws, &["m"][..])).collect();
    until_all_live(&mut live, 1, async |_| {
        app.probe_message(&alice, &room).await
    })
    .await;

    let sent = app.send_file(&alice, &room, "pixel.png", png()).await;
    for (user, ws) in &mut sockets {
        let event = ws.next_data("m").await;
        assert_eq!(event["messageEvents"]["message"]["id"], sent["id"]);
        let message = &event["messageEvents"]["message"];
        let url = message["attachment"]["downloadUrl"].as_str().unwrap();
        assert!(url.contains(&format!("user={}", user.id)), "{url}");
        // Absolute, on the host the WebSocket was opened to.
        assert!(url.starts_with(&app.url("/files/")), "{url}");
        assert_eq!(download_bytes(&app, url, None).await, (200, png()));
    }
}

/// The `downloadUrl` of a message's file as `user` reads it in the conversation's history.
async fn download_url_as(
    app: &TestApp,
    user: &TestUser,
    conversation: &str,
    message_id: &Value,
) -> String {
    let page = app
        .data(
            &user.token,
            "query($c: ID!) { messages(conversationId: $c) { edges { node { id attachment { downloadUrl } } } } }",
            json!({ "c": conversation }),
        )
        .await;
    page["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["id"] == *message_id)
        .and_then(|e| e["node"]["attachment"]["downloadUrl"].as_str())
        .expect("the file message in the history")
        .to_owned()
}

#[tokio::test]
async fn bidi_and_invisible_characters_are_dropped_from_uploaded_file_names() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    // Shown as "invoicelmth.pdf" by anything that honours the override.
    let spoofed = "invoice\u{202E}fdp.html";
    let cases = [
        (spoofed, "invoicefdp.html"),
        ("\u{200B}re\u{2066}port\u{FEFF}.pdf\u{E0041}", "report.pdf"),
        ("\u{3164}\u{115F}\u{00AD}", "file"),
    ];
    for (sent, kept) in cases {
        let (status, response) =
            upload_raw_name(&app, &alice.token, &conversation, sent, pdf()).await;
        assert_eq!(status, 200, "{response}");
        let message = &response["data"]["sendMessage"];
        assert_eq!(message["attachment"]["filename"], kept, "{response}");

        // The stored name is the one the download offers, in both of its forms.
        let response = app
            .fetch(Method::GET, &download_path(message), Some(&bob.token), &[])
            .await;
        assert_eq!(response.status(), 200);
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            disposition,
            format!("inline; filename=\"{kept}\"; filename*=UTF-8''{kept}"),
        );
        let page = app
            .data(&bob.token, MESSAGES, json!({ "c": conversation }))
            .await;
        let stored = page["messages"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node"]["id"] == message["id"])
            .map(|e| e["node"]["attachment"]["filename"].clone());
        assert_eq!(stored, Some(json!(kept)));
    }
    // A name that hides a denied extension behind an invisible character is still denied.
    let (_, refused) = upload_raw_name(
        &app,
        &alice.token,
        &conversation,
        "setup.ex\u{200B}e",
        b"just text".to_vec(),
    )
    .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"), "{refused}");
}

/// An upload whose part carries `filename` as raw UTF-8 in its `Content-Disposition`, as browsers
/// send it (reqwest would percent-encode it).
async fn upload_raw_name(
    app: &TestApp,
    token: &str,
    conversation: &str,
    filename: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let operations = json!({
        "query": format!(
            "mutation($input: SendMessageInput!) {{ sendMessage(input: $input) {{ {FILE_MESSAGE_FIELDS} }} }}"
        ),
        "variables": { "input": { "conversationId": conversation, "file": null } },
    });
    let boundary = "palaver-test-boundary";
    let mut body = Vec::new();
    let text_part = |body: &mut Vec<u8>, name: &str, value: &str| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    };
    text_part(&mut body, "operations", &operations.to_string());
    text_part(&mut body, "map", r#"{"0": ["variables.input.file"]}"#);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn oversize_and_denied_files_are_refused_and_leave_nothing_behind() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    config.max_upload_bytes = 4096;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let before = message_count(&app, &bob, &conversation).await;
    let input = json!({ "conversationId": conversation, "body": "take this" });

    let (status, response) = app
        .upload(&alice.token, input.clone(), "big.dat", opaque(5000))
        .await;
    assert_eq!(
        error_code(&response),
        Some("PAYLOAD_TOO_LARGE"),
        "{response}"
    );
    assert_eq!(status, 413);
    // Exactly at the limit is fine.
    let at_limit = opaque(4096 - 20);
    assert_eq!(at_limit.len(), 4096);
    let ok = app
        .send_file(&alice, &conversation, "edge.dat", at_limit)
        .await;
    assert_eq!(ok["attachment"]["size"], 4096);
    assert_eq!(count_files(&dir), 1);

    for name in [
        "setup.exe",
        "SETUP.EXE",
        "run.sh",
        "tool.bat",
        "../evil.ps1",
        "app.tar.js",
    ] {
        let (_, response) = app
            .upload(&alice.token, input.clone(), name, opaque(100))
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{name}: {response}"
        );
    }
    let (_, empty) = app
        .upload(&alice.token, input.clone(), "empty.txt", vec![])
        .await;
    assert_eq!(error_code(&empty), Some("BAD_USER_INPUT"), "{empty}");

    // A file sent to a conversation one is not in is refused before anything is stored.
    let mallory = app.user("mallory").await;
    let (_, outsider) = app
        .upload(&mallory.token, input.clone(), "pixel.png", png())
        .await;
    assert_eq!(error_code(&outsider), Some("NOT_FOUND"), "{outsider}");

    assert_eq!(count_files(&dir), 1);
    assert_eq!(message_count(&app, &bob, &conversation).await, before + 1);
    let unread = app.data(&bob.token, "{ unreadCount }", json!({})).await;
    assert_eq!(
        unread["unreadCount"], 2,
        "the greeting and the one accepted file"
    );
}

#[tokio::test]
async fn the_deny_list_is_configurable() {
    let mut config = test_config().await;
    config.denied_extensions = vec!["pdf".into()];
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let input = json!({ "conversationId": conversation });
    let (_, refused) = app
        .upload(&alice.token, input.clone(), "paper.pdf", pdf())
        .await;
    assert_eq!(error_code(&refused), Some("BAD_USER_INPUT"));
    // Refused by content too, whatever the name.
    let (_, renamed) = app
        .upload(&alice.token, input.clone(), "paper.txt", pdf())
        .await;
    assert_eq!(error_code(&renamed), Some("BAD_USER_INPUT"));
    // Shell scripts are now allowed here.
    app.send_file(&alice, &conversation, "run.sh", b"echo hi\n".to_vec())
        .await;
}

#[tokio::test]
async fn deleting_a_file_message_hides_the_attachment_and_removes_the_bytes() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app
        .send_file(&alice, &conversation, "pixel.png", png())
        .await;
    let signed = message["attachment"]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(count_files(&dir), 1);

    // Only the sender may delete it; a failed attempt leaves the file in place.
    let refused = app
        .gql(
            Some(&bob.token),
            "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
            json!({ "id": message["id"] }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"));
    assert_eq!(count_files(&dir), 1);

    let deleted = app
        .data(
            &alice.token,
            "mutation($id: ID!) { deleteMessage(id: $id) { id kind body attachment { filename } deletedAt } }",
            json!({ "id": message["id"] }),
        )
        .await;
    assert!(deleted["deleteMessage"]["attachment"].is_null());
    assert!(deleted["deleteMessage"]["deletedAt"].is_string());
    assert_eq!(count_files(&dir), 0);

    let page = app
        .data(&bob.token, MESSAGES, json!({ "c": conversation }))
        .await;
    let node = page["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .find(|n| n["id"] == message["id"])
        .cloned()
        .unwrap();
    assert!(node["attachment"].is_null(), "{node}");

    for user in [&alice, &bob] {
        let (status, _) = download_bytes(&app, &download_path(&message), Some(&user.token)).await;
        assert_eq!(status, 404);
    }
    assert_eq!(download_bytes(&app, &signed, None).await.0, 404);
}

#[tokio::test]
async fn range_conditional_and_head_requests_are_answered() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let bytes = opaque(1000);
    let size = bytes.len();
    let message = app
        .send_file(&alice, &conversation, "blob.dat", bytes.clone())
        .await;
    let path = download_path(&message);
    let token = Some(bob.token.as_str());

    let response = app
        .fetch(Method::GET, &path, token, &[("range", "bytes=10-19")])
        .await;
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 10-19/{size}").as_str()
    );
    assert_eq!(response.headers()["content-length"], "10");
    assert_eq!(response.bytes().await.unwrap(), bytes[10..20]);

    let response = app
        .fetch(Method::GET, &path, token, &[("range", "bytes=-5")])
        .await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), bytes[size - 5..]);

    let response = app
        .fetch(Method::GET, &path, token, &[("range", "bytes=1000-")])
        .await;
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap(), bytes[1000..]);

    for bad in [
        format!("bytes={size}-"),
        "bytes=50-10".into(),
        "bytes=abc".into(),
    ] {
        let response = app
            .fetch(Method::GET, &path, token, &[("range", &bad)])
            .await;
        assert_eq!(response.status(), 416, "{bad}");
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes */{size}").as_str()
        );
    }

    // A range against another version of the file (If-Range) gets the whole file.
    let response = app
        .fetch(
            Method::GET,
            &path,
            token,
            &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), size);

    // The ETag revalidates.
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    let response = app
        .fetch(Method::GET, &path, token, &[("if-none-match", &etag)])
        .await;
    assert_eq!(response.status(), 304);

    // HEAD: the headers of a GET, no body.
    let response = app.fetch(Method::HEAD, &path, token, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        size.to_string().as_str()
    );
    assert_eq!(response.headers()["etag"], etag.as_str());
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert!(response.bytes().await.unwrap().is_empty());
    // HEAD follows the same access rules.
    let mallory = app.user("mallory").await;
    let response = app
        .fetch(Method::HEAD, &path, Some(&mallory.token), &[])
        .await;
    assert_eq!(response.status(), 404);
    let response = app.fetch(Method::HEAD, &path, None, &[]).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_path_traversal_filename_is_stored_harmlessly_as_its_basename() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let bytes = b"root:x:0:0:root:/root:/bin/bash\n".to_vec();

    let message = app
        .send_file(&alice, &conversation, "../../etc/passwd", bytes.clone())
        .await;
    assert_eq!(message["attachment"]["filename"], "passwd");
    let windows = app
        .send_file(&alice, &conversation, "..\\..\\boot.ini", bytes.clone())
        .await;
    assert_eq!(windows["attachment"]["filename"], "boot.ini");
    // Both live inside the store, under names the server chose.
    assert_eq!(count_files(&dir), 2);
    assert_eq!(count_files(&dir.join("attachments")), 2);
    assert!(!dir.join("passwd").exists() && !dir.join("boot.ini").exists());

    let response = app
        .fetch(Method::GET, &download_path(&message), Some(&bob.token), &[])
        .await;
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"
    );
    assert_eq!(response.bytes().await.unwrap(), bytes);

    // A name outside ASCII keeps its exact form in `filename*`.
    let accented = app
        .send_file(&alice, &conversation, "résumé.pdf", pdf())
        .await;
    let response = app
        .fetch(
            Method::GET,
            &download_path(&accented),
            Some(&bob.token),
            &[],
        )
        .await;
    assert_eq!(
        response.headers()["content-disposition"],
        "inline; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    );
}

#[tokio::test]
async fn a_large_file_streams_to_storage_in_parts_and_back() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    // Over the 5 MiB part size, so the multipart path runs.
    let bytes = opaque(12 * 1024 * 1024 + 123);
    let message = app
        .send_file(&alice, &conversation, "large.dat", bytes.clone())
        .await;
    assert_eq!(message["attachment"]["sha256"], sha256_hex(&bytes));
    let (status, body) = download_bytes(&app, &download_path(&message), Some(&bob.token)).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes));
    assert_eq!(count_files(&dir), 1, "no staging files left over");
}

#[tokio::test]
async fn concurrent_retries_of_a_file_send_keep_one_message_and_one_object() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let input = json!({ "conversationId": conversation, "clientMessageId": "upload-1" });
    let (a, b, c) = tokio::join!(
        app.upload(&alice.token, input.clone(), "pixel.png", png()),
        app.upload(&alice.token, input.clone(), "pixel.png", png()),
        app.upload(&alice.token, input.clone(), "pixel.png", png()),
    );
    let id = &a.1["data"]["sendMessage"]["id"];
    assert!(id.is_string(), "{}", a.1);
    assert_eq!(&b.1["data"]["sendMessage"]["id"], id);
    assert_eq!(&c.1["data"]["sendMessage"]["id"], id);
    // Losers of the race removed the objects they had stored.
    assert_eq!(count_files(&dir), 1);
    assert_eq!(message_count(&app, &bob, &conversation).await, 2);
}

#[tokio::test]
async fn a_failing_store_creates_no_message() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    // The store's directory becomes a plain file: every write fails, even for root.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"in the way").unwrap();

    let (status, response) = app
        .upload(
            &alice.token,
            json!({ "conversationId": conversation, "body": "caption" }),
            "pixel.png",
            png(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        error_code(&response),
        Some("INTERNAL_SERVER_ERROR"),
        "{response}"
    );
    assert!(
        !response.to_string().contains(&dir.display().to_string()),
        "no internals leak: {response}"
    );
    assert_eq!(message_count(&app, &bob, &conversation).await, 1);
    std::fs::remove_file(&dir).ok();
}

#[tokio::test]
async fn orphaned_objects_are_swept_at_start_but_recent_ones_are_spared() {
    let (dir, storage_url) = temp_storage();
    let mut config = test_config().await;
    config.storage_url = storage_url;
    let attachments = dir.join("attachments");
    std::fs::create_dir_all(&attachments).unwrap();
    let old = attachments.join("0123456789abcdef0123456789abcdef");
    let recent = attachments.join("fedcba9876543210fedcba9876543210");
    std::fs::write(&old, b"left by a crash").unwrap();
    std::fs::write(&recent, b"an upload still committing").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    app.send_file(&alice, &conversation, "pixel.png", png())
        .await;

    let deadline = tokio::time::Instant::now() + WAIT;
    while old.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!old.exists(), "the old orphan was swept");
    assert!(recent.exists(), "a recent object is spared");
    assert_eq!(count_files(&dir), 2);
}

/// Runs against a real S3-compatible server named by `PALAVER_TEST_S3_URL` (`s3://bucket`), with
/// the usual `AWS_*` variables; `.ci/run` starts moto, sets them all and runs this test by name.
#[tokio::test]
#[ignore = "needs an S3-compatible server: set PALAVER_TEST_S3_URL and AWS_*, then run with --ignored"]
async fn files_round_trip_through_an_s3_compatible_store() {
    let base = std::env::var("PALAVER_TEST_S3_URL")
        .expect("PALAVER_TEST_S3_URL names the bucket (s3://bucket) this test writes to");
    let prefix = format!("run-{}", uuid::Uuid::new_v4().simple());
    let mut config = test_config().await;
    config.storage_url = format!("{}/{prefix}", base.trim_end_matches('/'));
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;

    let small = app
        .send_file(&alice, &conversation, "pixel.png", png())
        .await;
    let large_bytes = opaque(6 * 1024 * 1024);
    let large = app
        .send_file(&alice, &conversation, "large.dat", large_bytes.clone())
        .await;
    let (status, body) = download_bytes(&app, &download_path(&small), Some(&bob.token)).await;
    assert_eq!((status, body), (200, png()));
    let signed = large["attachment"]["downloadUrl"].as_str().unwrap();
    let (status, body) = download_bytes(&app, signed, None).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&body), sha256_hex(&large_bytes));
    let response = app
        .fetch(
            Method::GET,
            &download_path(&large),
            Some(&bob.token),
            &[("range", "bytes=5242870-5242889")],
        )
        .await;
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.bytes().await.unwrap(),
        large_bytes[5242870..5242890]
    );

    // Deleting removes the object from the bucket.
    use futures_util::TryStreamExt;
    use object_store::ObjectStore;
    let bucket = base
        .trim_start_matches("s3://")
        .trim_end_matches('/')
        .to_owned();
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .unwrap();
    let listed = |s3: object_store::aws::AmazonS3, prefix: String| async move {
        s3.list(Some(&object_store::path::Path::from(prefix)))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    };
    assert_eq!(listed(s3.clone(), prefix.clone()).await, 2);
    app.data(
        &alice.token,
        "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
        json!({ "id": small["id"] }),
    )
    .await;
    assert_eq!(listed(s3, prefix).await, 1);
    assert_eq!(
        download_bytes(&app, &download_path(&small), Some(&bob.token))
            .await
            .0,
        404
    );
}
