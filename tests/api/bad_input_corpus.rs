//! A corpus of hostile or broken requests sent to the running server: each gets a clear error with
//! `extensions.code` (or is stored as the literal text it is), and afterwards the server is healthy
//! and nothing it held has changed.
use serde_json::{Value, json};

use crate::helpers::*;

const NASTY: &[&str] = &[
    "'; DROP TABLE messages; --",
    "\" OR 1=1 --",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "%00%27%22",
    "\\x00\\u0000",
    "${jndi:ldap://x}",
    "../../etc/passwd",
    "🙂 ∑ é 中文",
];

async fn snapshot(app: &TestApp, user: &TestUser, conversation: &str) -> Value {
    app.data(
        &user.token,
        "query($c: ID!) { conversations { edges { node { id unreadCount } } } messages(conversationId: $c, first: 100) { edges { node { id body } } } unreadCount }",
        json!({ "c": conversation }),
    )
    .await
}

async fn post_raw(app: &TestApp, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn broken_bodies_get_coded_errors_and_change_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let before = snapshot(&app, &alice, &conversation).await;

    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "application/json",
            b"{\"query\": \"{ me { id } }\"".to_vec(),
        ),
        ("application/json", vec![0xff, 0xfe, 0x7b, 0x22, 0x80, 0x81]),
        ("application/json", b"{\"query\": \"\xc3\x28\"}".to_vec()),
        ("application/json", b"".to_vec()),
        ("application/json", b"null".to_vec()),
        (
            "application/json",
            b"{\"query\": [\"not\", \"a\", \"string\"]}".to_vec(),
        ),
        ("application/xml", b"<query>{ me { id } }</query>".to_vec()),
        ("text/plain", b"{ me { id } }".to_vec()),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nnonsense".to_vec(),
        ),
    ];
    for (content_type, body) in bodies {
        let (status, json) = post_raw(&app, content_type, body.clone()).await;
        assert!(
            (400..500).contains(&status) || error_code(&json).is_some(),
            "{content_type} {body:?}: {status} {json}"
        );
        assert!(
            error_code(&json).is_some(),
            "{content_type} {body:?}: {json}"
        );
        assert_ne!(error_code(&json), Some("INTERNAL_SERVER_ERROR"));
    }
    assert_eq!(snapshot(&app, &alice, &conversation).await, before);
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn multipart_requests_with_a_wrong_map_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let before = snapshot(&app, &alice, &conversation).await;
    let operations = json!({
        "query": "mutation($input: SendMessageInput!) { sendMessage(input: $input) { id } }",
        "variables": { "input": { "conversationId": conversation, "file": null } },
    })
    .to_string();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // The map names a part that is not there.
        (r#"{"0": ["variables.input.file"]}"#, vec![]),
        // A part is sent that the map does not name (and the variable stays null).
        (r#"{}"#, vec!["0"]),
        // The map points at a variable that does not exist.
        (r#"{"0": ["variables.nothing.here"]}"#, vec!["0"]),
        // The map is not JSON.
        (r#"{"0": "#, vec!["0"]),
    ];
    for (map, parts) in cases {
        let mut form = reqwest::multipart::Form::new()
            .text("operations", operations.clone())
            .text("map", map.to_owned());
        for part in parts {
            form = form.part(
                part.to_owned(),
                reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("a.txt"),
            );
        }
        let response = app
            .http
            .post(app.url("/graphql"))
            .bearer_auth(&alice.token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let json: Value = response.json().await.unwrap_or(Value::Null);
        let code = error_code(&json);
        assert!(matches!(code, Some("BAD_USER_INPUT")), "map {map}: {json}");
    }
    assert_eq!(snapshot(&app, &alice, &conversation).await, before);
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sql_and_html_metacharacters_in_every_string_input_are_data_or_refused() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    for (i, nasty) in NASTY.iter().enumerate() {
        // Message bodies are stored and returned exactly as sent.
        let sent = app.send(&alice, &conversation, nasty).await;
        assert_eq!(sent["body"], *nasty);
        // Every other string input: accepted as literal data, or refused with a code.
        let attempts = [
            (
                "mutation($v: String!) { register(input: {username: $v, password: \"s3cret-pass\"}) { token } }",
                json!({ "v": nasty }),
            ),
            (
                "mutation($v: String!) { register(input: {username: \"name\", password: $v}) { token } }",
                json!({ "v": nasty }),
            ),
            (
                "mutation($v: String!, $u: String!) { register(input: {username: $u, password: \"s3cret-pass\", displayName: $v}) { user { displayName } } }",
                json!({ "v": nasty, "u": format!("disp{i}x{}", &alice.username[5..]) }),
            ),
            (
                "mutation($v: String!) { login(username: $v, password: $v) { token } }",
                json!({ "v": nasty }),
            ),
            (
                "query($v: String) { users(search: $v) { edges { node { id } } } }",
                json!({ "v": nasty }),
            ),
            (
                "mutation($v: String!) { createRoom(input: {name: $v, topic: $v, memberIds: []}) { name topic } }",
                json!({ "v": nasty }),
            ),
            (
                "mutation($c: ID!, $v: String!) { sendMessage(input: {conversationId: $c, body: \"x\", clientMessageId: $v}) { clientMessageId } }",
                json!({ "c": conversation, "v": nasty }),
            ),
            (
                "query($v: ID!) { messages(conversationId: $v) { edges { cursor } } }",
                json!({ "v": nasty }),
            ),
            (
                "query($c: ID!, $v: String) { messages(conversationId: $c, after: $v) { edges { cursor } } }",
                json!({ "c": conversation, "v": nasty }),
            ),
        ];
        for (query, vars) in attempts {
            let response = app.gql(Some(&alice.token), query, vars.clone()).await;
            match error_code(&response) {
                None => {
                    // Accepted: whatever string came back is the very text sent.
                    let text = response["data"].to_string();
                    assert!(!text.contains("INTERNAL"), "{query} {vars}: {response}");
                }
                Some(code) => assert!(
                    matches!(
                        code,
                        "BAD_USER_INPUT" | "UNAUTHENTICATED" | "CONFLICT" | "NOT_FOUND"
                    ),
                    "{query} {vars}: {response}"
                ),
            }
        }
    }
    // Everything sent is there, verbatim, and nothing else was touched.
    let page = app
        .data(&bob.token, "query($c: ID!) { messages(conversationId: $c, first: 100) { edges { node { body } } } }", json!({ "c": conversation }))
        .await;
    let bodies: Vec<&str> = page["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["node"]["body"].as_str())
        .collect();
    for nasty in NASTY {
        assert!(bodies.contains(nasty), "{nasty} missing from {bodies:?}");
    }
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Text that reads as something else, or as nothing: bidirectional overrides and isolates,
/// zero-width and invisible characters, terminal escapes and C1 controls.
const SPOOFS: &[(&str, &str)] = &[
    ("invoice\u{202E}fdp.html", "U+202E"),
    ("team\u{2067}nimda\u{2069}", "U+2067"),
    ("ad\u{200B}min", "U+200B"),
    ("\u{3164}", "U+3164"),
    ("\u{115F}\u{1160}", "U+115F"),
    ("a\u{FEFF}", "U+FEFF"),
    ("soft\u{00AD}hyphen", "U+00AD"),
    ("tagged\u{E0041}", "U+E0041"),
    ("mark\u{200F}", "U+200F"),
    ("red \u{1B}[31mtext", "U+001B"),
    ("c1 \u{9B}31m", "U+009B"),
];

#[tokio::test]
async fn bidi_invisible_and_control_characters_in_names_and_topics_are_refused() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = app.room(&alice, "Team", &[]).await;
    let rooms_before = app
        .data(
            &alice.token,
            "{ conversations { edges { node { id name topic } } } }",
            json!({}),
        )
        .await;
    let register = "mutation($u: String!, $d: String) { register(input: {username: $u, password: \"s3cret-pass\", displayName: $d}) { token } }";
    let create = "mutation($n: String!, $t: String) { createRoom(input: {name: $n, topic: $t, memberIds: []}) { id } }";
    let update = "mutation($r: ID!, $n: String, $t: String) { updateRoom(roomId: $r, input: {name: $n, topic: $t}) { id } }";
    for (i, (spoof, named)) in SPOOFS.iter().enumerate() {
        let fresh = format!("spoof{i}x{}", &alice.username[5..]);
        let attempts = [
            (
                "username",
                register,
                json!({ "u": format!("{fresh}{spoof}") }),
            ),
            ("displayName", register, json!({ "u": fresh, "d": spoof })),
            ("room name", create, json!({ "n": spoof })),
            (
                "room name",
                create,
                json!({ "n": format!("Plans {spoof}") }),
            ),
            ("topic", create, json!({ "n": "Plans", "t": spoof })),
            ("room name", update, json!({ "r": room, "n": spoof })),
            (
                "topic",
                update,
                json!({ "r": room, "t": format!("line\n{spoof}") }),
            ),
        ];
        for (field, query, vars) in attempts {
            let response = app.gql(Some(&alice.token), query, vars.clone()).await;
            assert_eq!(
                error_code(&response),
                Some("BAD_USER_INPUT"),
                "{field} {vars}: {response}"
            );
            // The answer names the character, except for usernames, which take ASCII only.
            let message = response["errors"][0]["message"].as_str().unwrap();
            if field != "username" {
                assert!(message.contains(named), "{field}: {message}");
            }
        }
    }
    // Nothing was made or changed, and no account exists under the refused names.
    let rooms_after = app
        .data(
            &alice.token,
            "{ conversations { edges { node { id name topic } } } }",
            json!({}),
        )
        .await;
    assert_eq!(rooms_after, rooms_before);
    let found = app
        .data(
            &alice.token,
            "{ users(search: \"spoof\") { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(found["users"]["edges"], json!([]), "{found}");

    // What the rules allow still goes through: accents, scripts, emoji, and line breaks in a topic.
    let ok = app
        .data(
            &alice.token,
            update,
            json!({ "r": room, "n": "Équipe 中文 עברית 😀", "t": "line one\nline\ttwo" }),
        )
        .await;
    assert_eq!(ok["updateRoom"]["id"], room);
    let ok = app
        .gql(
            None,
            register,
            json!({ "u": format!("fine{}", &alice.username[5..]), "d": "Zoë 😀" }),
        )
        .await;
    assert!(ok["data"]["register"]["token"].is_string(), "{ok}");
}

#[tokio::test]
async fn message_bodies_are_kept_verbatim_but_refused_with_control_characters() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let kept = app.send(&alice, &conversation, "to be edited").await;
    let before = snapshot(&app, &alice, &conversation).await;
    let send = "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }";
    let edit = "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id } }";
    let refused = [
        ("red \u{1B}[31mtext", "U+001B"),
        ("c1 \u{9B}31m csi", "U+009B"),
        ("next line\u{85}", "U+0085"),
        ("bell\u{7}", "U+0007"),
        ("carriage\rreturn", "U+000D"),
        ("carriage return\r", "U+000D"),
        ("nul\u{0}", "U+0000"),
        ("del\u{7F}", "U+007F"),
    ];
    for (body, named) in refused {
        for (query, vars) in [
            (send, json!({ "c": conversation, "b": body })),
            (edit, json!({ "id": kept["id"], "b": body })),
        ] {
            let response = app.gql(Some(&alice.token), query, vars.clone()).await;
            assert_eq!(
                error_code(&response),
                Some("BAD_USER_INPUT"),
                "{vars}: {response}"
            );
            let message = response["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains(named), "{message}");
        }
    }
    // Nothing visible is as empty as nothing at all.
    let blank = app
        .gql(
            Some(&alice.token),
            send,
            json!({ "c": conversation, "b": "\u{200B}\u{3164} \u{FEFF}" }),
        )
        .await;
    assert_eq!(error_code(&blank), Some("BAD_USER_INPUT"), "{blank}");
    assert_eq!(snapshot(&app, &alice, &conversation).await, before);

    // Prose keeps what it needs, exactly as sent: line breaks, tabs, right-to-left marks, and
    // zero-width joiners inside emoji sequences.
    for body in [
        "line one\nline\ttwo",
        "שלום\u{200F} (hello)",
        "family: 👩\u{200D}👩\u{200D}👧",
        "quote \u{2067}عربي\u{2069} end",
    ] {
        let sent = app.send(&alice, &conversation, body).await;
        assert_eq!(sent["body"], body);
        let edited = app
            .data(
                &alice.token,
                "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { body } }",
                json!({ "id": kept["id"], "b": body }),
            )
            .await;
        assert_eq!(edited["editMessage"]["body"], body);
    }
    // A Windows line break is a line break.
    let sent = app.send(&alice, &conversation, "one\r\ntwo").await;
    assert_eq!(sent["body"], "one\ntwo");
}

/// Hostile frames on `/graphql/ws`, before connection_init and after: each gets a close frame with
/// its graphql-transport-ws (or RFC 6455) code and a reason that fits in it, never a reset, and the
/// server is healthy afterwards with nothing changed.
#[tokio::test]
async fn hostile_websocket_frames_get_a_close_code_and_change_nothing() {
    use tokio_tungstenite::tungstenite::{
        Message,
        protocol::frame::{
            Frame as RawFrame,
            coding::{Data, OpCode},
        },
    };
    let mut config = test_config().await;
    config.ws_max_message_bytes = 64 * 1024;
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let before = snapshot(&app, &alice, &conversation).await;

    let text = |value: Value| Message::Text(value.to_string().into());
    let send = json!({ "id": "1", "type": "subscribe", "payload": {
        "query": "mutation($c: ID!) { sendMessage(input: {conversationId: $c, body: \"sneaked\"}) { id } }",
        "variables": { "c": conversation },
    }});
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let invalid_utf8 = Message::Frame(RawFrame::message(
        vec![b'{', 0xc3, 0x28, b'}'],
        OpCode::Data(Data::Text),
        true,
    ));
    // (signed in first, the frames, the close code)
    let cases: Vec<(bool, Vec<Message>, u16)> = vec![
        (false, vec![text(json!({ "type": "x".repeat(5000) }))], 4400),
        (true, vec![text(json!({ "type": "ü".repeat(5000) }))], 4400),
        (false, vec![Message::Text("\u{0}\u{0}".into())], 4400),
        (
            true,
            vec![Message::Binary(vec![0xff, 0xfe, 0x00].into())],
            4400,
        ),
        (
            true,
            vec![Message::Text(
                format!("{{\"type\":\"subscribe\",\"id\":\"1\",\"payload\":{deep}}}").into(),
            )],
            4400,
        ),
        (
            false,
            vec![text(
                json!({ "type": "connection_init", "payload": { "token": NASTY[0] } }),
            )],
            4403,
        ),
        (
            false,
            vec![text(
                json!({ "type": "connection_init", "payload": { "token": "x".repeat(10_000) } }),
            )],
            4403,
        ),
        (false, vec![text(send.clone())], 4401),
        (true, vec![text(json!({ "type": "connection_init" }))], 4429),
        (
            true,
            vec![
                text(
                    json!({ "id": "n", "type": "subscribe", "payload": { "query": "subscription { notifications { id } }" } })
                );
                2
            ],
            4409,
        ),
        (false, vec![Message::Text(" ".repeat(70_000).into())], 1009),
        (true, vec![Message::Binary(vec![b' '; 70_000].into())], 1009),
        (true, vec![invalid_utf8], 1007),
    ];
    for (signed_in, frames, code) in cases {
        let mut ws = if signed_in {
            app.ws(Some(&alice.token)).await
        } else {
            app.ws_raw("graphql-transport-ws").await
        };
        // Shown if the case fails.
        let shown: String = format!("{frames:?}").chars().take(160).collect();
        eprintln!("hostile frames: {shown}");
        for frame in frames {
            ws.send_message(frame).await;
        }
        let reason = ws.expect_close(code).await;
        assert!(!reason.is_empty(), "{shown}: no reason given");
    }

    assert_eq!(snapshot(&app, &alice, &conversation).await, before);
    let mut ws = app.ws(Some(&alice.token)).await;
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    assert_eq!(ws.next_data("q").await["me"]["id"], json!(alice.id));
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The issue's reproducer: `levels` named fragments, each spreading the next one `width` times,
/// under a field anyone may ask for.
fn fragment_bomb(root: &str, on: &str, levels: usize, width: usize, leaf: &str) -> String {
    let mut query = format!("{root} ");
    for level in 0..levels {
        let spreads = vec![format!("...L{}", level + 1); width].join(" ");
        query.push_str(&format!("fragment L{level} on {on}{{{spreads}}} "));
    }
    query.push_str(&format!("fragment L{levels} on {on}{{{leaf}}}"));
    query
}

async fn assert_healthy(app: &TestApp) {
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_at_once_without_a_token() {
    let app = spawn_app().await;
    let statements = app.statements().await;
    for levels in [7, 10, 30] {
        let query = fragment_bomb("query{me{...L0}}", "User", levels, 10, "id");
        let started = std::time::Instant::now();
        let response = app.gql(None, &query, json!({})).await;
        let took = started.elapsed();
        eprintln!(
            "fragment bomb of {levels} levels ({} bytes): refused in {took:?}",
            query.len()
        );
        assert_eq!(
            error_code(&response),
            Some("QUERY_TOO_COMPLEX"),
            "{levels}: {response}"
        );
        assert!(
            took < std::time::Duration::from_secs(1),
            "{levels} levels took {took:?}"
        );
        assert!(response.to_string().len() < 1000, "{response}");
    }
    // At the root, where root fields are counted through the fragments; and fragment cycles.
    for query in [
        fragment_bomb("query{...L0}", "Query", 30, 10, "unreadCount"),
        "query{me{...A}} fragment A on User{id ...B} fragment B on User{...A}".to_owned(),
        "query{me{id}} fragment A on User{...A}".to_owned(),
    ] {
        let started = std::time::Instant::now();
        let response = app.gql(None, &query, json!({})).await;
        assert_eq!(
            error_code(&response),
            Some("QUERY_TOO_COMPLEX"),
            "{query}: {response}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    assert_eq!(app.statements().await, statements, "nothing was executed");

    // Over a WebSocket, the same.
    let alice = app.user("alice").await;
    let mut ws = app.ws(Some(&alice.token)).await;
    let bomb = fragment_bomb(
        "subscription{messageEvents{...L0}}",
        "MessageEvent",
        30,
        10,
        "kind",
    );
    ws.subscribe("bomb", &bomb, json!({})).await;
    assert_eq!(ws.next_error_code("bomb").await, "QUERY_TOO_COMPLEX");

    // A document with a few fragments, some spread twice, still runs.
    let data = app
        .data(
            &alice.token,
            "query { me { ...Who ...Name } again: me { ...Who } } \
             fragment Who on User { id ...Name } fragment Name on User { username displayName }",
            json!({}),
        )
        .await;
    assert_eq!(data["me"]["id"], json!(alice.id));
    assert_eq!(data["again"]["username"], json!(alice.username));
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_huge_invalid_id_or_cursor_is_not_echoed_back() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let huge = format!("cnv_{}", "é".repeat(400_000));
    let fields = |field: &str| -> String { (0..20).map(|i| format!("a{i}: {field} ")).collect() };
    let cases = [
        (
            format!(
                "query($i: ID!) {{ {} }}",
                fields("conversation(id: $i) { id }")
            ),
            json!({ "i": huge }),
        ),
        (
            format!(
                "query($c: ID!, $i: String) {{ {} }}",
                fields("messages(conversationId: $c, after: $i) { edges { cursor } }")
            ),
            json!({ "c": conversation, "i": huge }),
        ),
        // async-graphql's own messages quote values too: a value of the wrong type.
        (
            format!(
                "query($i: ConversationKind) {{ {} }}",
                fields("conversations(kind: $i) { edges { cursor } }")
            ),
            json!({ "i": huge }),
        ),
    ];
    for (query, variables) in cases {
        let body = json!({ "query": query, "variables": variables }).to_string();
        assert!(body.len() > 500_000);
        let response = app
            .http
            .post(app.url("/graphql"))
            .bearer_auth(&alice.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            error_code(&json),
            Some("BAD_USER_INPUT"),
            "{query}: {text:.2000}"
        );
        assert!(
            text.len() < 10_000,
            "{query}: a {} byte answer: {:.2000}",
            text.len(),
            text
        );
    }
    assert_healthy(&app).await;
}

#[tokio::test]
async fn ids_are_read_only_as_the_server_spells_them() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let number = conversation.strip_prefix("cnv_").unwrap();
    let query = "query($i: ID!) { conversation(id: $i) { id } }";
    let data = app
        .data(&alice.token, query, json!({ "i": conversation }))
        .await;
    assert_eq!(data["conversation"]["id"], json!(conversation));
    for spelled in [
        format!("cnv_0{number}"),
        format!("cnv_00{number}"),
        format!("cnv_+{number}"),
        format!("cnv_ {number}"),
        format!("cnv_{number} "),
        format!(" cnv_{number}"),
        format!("cnv_{number}\n"),
        format!("CNV_{number}"),
    ] {
        let response = app
            .gql(Some(&alice.token), query, json!({ "i": spelled }))
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{spelled:?}: {response}"
        );
    }
    let user_number = bob.id.strip_prefix("usr_").unwrap();
    let response = app
        .gql(
            Some(&alice.token),
            "query($i: ID!) { user(id: $i) { id } }",
            json!({ "i": format!("usr_0{user_number}") }),
        )
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn arguments_spread_out_with_their_fragments_count_toward_the_bound() {
    let app = spawn_app().await;
    let statements = app.statements().await;
    // Two fields of 1,500 arguments each, in a fragment spread 700 times: few enough tokens and
    // selections as written, but validation would compare every argument of every pair of
    // those fields wherever they meet, once per spread.
    let arguments = (0..1500)
        .map(|i| format!("a{i}: 0"))
        .collect::<Vec<_>>()
        .join(" ");
    let spreads = "... on User { ...F } ".repeat(700);
    let query = format!(
        "query {{ me {{ {spreads} }} }} fragment F on User {{ id({arguments}) id({arguments}) }}"
    );
    let response = app.gql(None, &query, json!({})).await;
    assert_eq!(
        error_code(&response),
        Some("QUERY_TOO_COMPLEX"),
        "{response}"
    );
    assert!(response.to_string().len() < 1000, "{response}");
    assert_eq!(app.statements().await, statements, "nothing was executed");
    // Arguments as clients write them pass.
    let alice = app.user("alice").await;
    let ordinary = app
        .gql(
            Some(&alice.token),
            "query($n: Int) { conversations(first: $n) { edges { node { id } } } users(search: \"a\", first: 5) { edges { node { id } } } }",
            json!({ "n": 10 }),
        )
        .await;
    assert!(ordinary.get("errors").is_none(), "{ordinary}");
}
