//! Several instances behaving as one, resuming without gaps, and surviving Redis and shutdown.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::helpers::*;

const EVENTS: &str = "subscription($c: ID, $s: String) { messageEvents(conversationId: $c, since: $s) { kind cursor message { id body } } }";
const EDIT: &str = "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id } }";
const DELETE: &str = "mutation($id: ID!) { deleteMessage(id: $id) { id } }";

#[tokio::test]
async fn a_resumed_subscriber_receives_exactly_the_200_changes_it_missed_in_order() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let with_bob = app.direct(&alice, &bob).await;
    let with_carol = app.direct(&carol, &bob).await;

    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("s", EVENTS, json!({})).await;
    ws.until_live(&["s"], 1, async |_| {
        app.probe_message(&alice, &with_bob).await
    })
    .await;
    app.send(&alice, &with_bob, "before").await;
    let cursor = ws.next_data("s").await["messageEvents"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(ws);

    // 200 changes across two conversations while bob is away: sends, edits and deletes.
    let mut expected = Vec::new();
    let mut sent: Vec<(String, &TestUser)> = Vec::new();
    for i in 0..200 {
        let (user, conversation) = if i % 3 == 0 {
            (&carol, &with_carol)
        } else {
            (&alice, &with_bob)
        };
        match i % 5 {
            3 if !sent.is_empty() => {
                let (id, owner) = sent[sent.len() / 2].clone();
                app.data(
                    &owner.token,
                    EDIT,
                    json!({ "id": id, "b": format!("edit {i}") }),
                )
                .await;
                expected.push(("EDITED".to_owned(), id));
            }
            4 if !sent.is_empty() => {
                let (id, owner) = sent.remove(0);
                app.data(&owner.token, DELETE, json!({ "id": id })).await;
                expected.push(("DELETED".to_owned(), id));
            }
            _ => {
                let message = app.send(user, conversation, &format!("m{i}")).await;
                let id = message["id"].as_str().unwrap().to_owned();
                sent.push((id.clone(), user));
                expected.push(("CREATED".to_owned(), id));
            }
        }
    }
    assert_eq!(expected.len(), 200);

    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("s", EVENTS, json!({ "s": cursor })).await;
    let mut got = Vec::new();
    for _ in 0..200 {
        let event = ws.next_data("s").await;
        got.push((
            event["messageEvents"]["kind"].as_str().unwrap().to_owned(),
            event["messageEvents"]["message"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    assert_eq!(got, expected);
    ws.expect_silence().await;
    // And it carries on live.
    app.send(&alice, &with_bob, "after").await;
    assert_eq!(
        ws.next_data("s").await["messageEvents"]["message"]["body"],
        "after"
    );
}

#[tokio::test]
async fn a_cursor_from_other_data_is_refused_with_resync_required() {
    let first = spawn_app().await;
    let second = spawn_app().await;
    let mut cursors = Vec::new();
    for app in [&first, &second] {
        let alice = app.user("alice").await;
        let bob = app.user("bob").await;
        let conversation = app.direct(&alice, &bob).await;
        let mut ws = app.ws(Some(&bob.token)).await;
        ws.subscribe("s", EVENTS, json!({ "c": conversation }))
            .await;
        ws.until_live(&["s"], 1, async |_| {
            app.probe_message(&alice, &conversation).await
        })
        .await;
        app.send(&alice, &conversation, "x").await;
        let cursor = ws.next_data("s").await["messageEvents"]["cursor"]
            .as_str()
            .unwrap()
            .to_owned();
        cursors.push((app, bob, cursor));
    }
    // The first server's cursor, presented to the second.
    let (_, _, foreign) = &cursors[0];
    let (app, bob, _) = &cursors[1];
    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("s", EVENTS, json!({ "s": foreign })).await;
    assert_eq!(ws.next_error_code("s").await, "RESYNC_REQUIRED");
    // A forged cursor is bad input.
    ws.subscribe("t", EVENTS, json!({ "s": "not-a-cursor" }))
        .await;
    assert_eq!(ws.next_error_code("t").await, "BAD_USER_INPUT");
}

/// Two instances over one database and one Redis.
async fn two_instances(redis_url: String) -> (TestApp, TestApp) {
    let mut a = test_config().await;
    a.redis_url = Some(redis_url);
    a.presence_grace_ms = 200;
    let mut b = a.clone();
    b.addr = "127.0.0.1:0".parse().unwrap();
    (spawn_app_with(a).await, spawn_app_with(b).await)
}

#[tokio::test]
async fn a_session_ended_on_one_instance_is_refused_on_the_other_within_moments() {
    let (redis_url, _own) = redis_for_test();
    let (a, b) = two_instances(redis_url).await;
    let alice = a.user("alice").await;
    let me = "query { me { id } }";
    let sign_in = |password: &'static str| {
        let a = &a;
        let username = alice.username.clone();
        async move {
            let login = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";
            let data = a
                .gql(None, login, json!({ "u": username, "p": password }))
                .await;
            data["data"]["login"]["token"].as_str().unwrap().to_owned()
        }
    };
    let signed_in_on_b = |token: String| {
        let b = &b;
        async move { b.gql(Some(&token), me, json!({})).await["data"]["me"].is_object() }
    };
    let phone = sign_in("s3cret-pass").await;
    let laptop = sign_in("s3cret-pass").await;
    // Every token is used on b first, so that b holds it resolved in memory.
    for token in [&alice.token, &phone, &laptop] {
        assert!(signed_in_on_b(token.clone()).await);
    }

    // b learns of an end over Redis, a moment after a answers; well within its 10 s cache.
    let refused_on_b_soon = |token: String| async move {
        for _ in 0..40 {
            if !signed_in_on_b(token.clone()).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    a.data(&alice.token, "mutation { logout }", json!({})).await;
    assert!(
        refused_on_b_soon(alice.token.clone()).await,
        "logged out on a"
    );
    assert!(
        signed_in_on_b(phone.clone()).await,
        "the other sessions stay"
    );

    // A socket on b, signed in with the phone's session, is closed by the change on a too.
    let mut phone_socket = b.ws(Some(&phone)).await;
    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
    a.data(
        &laptop,
        change,
        json!({ "c": "s3cret-pass", "n": "n3w-horse-battery" }),
    )
    .await;
    assert!(
        refused_on_b_soon(phone).await,
        "signed out by the change on a"
    );
    match phone_socket.next_frame(WAIT).await {
        Some(Frame::Closed(Some((code, _)))) => assert_eq!(code, 4401),
        other => panic!("expected the phone's socket on b to close, got {other:?}"),
    }
    assert!(
        signed_in_on_b(laptop).await,
        "the session that changed it stays"
    );
}

#[tokio::test]
async fn a_subscriber_on_one_instance_sees_what_happens_on_another() {
    let (redis_url, _own) = redis_for_test();
    let (a, b) = two_instances(redis_url).await;
    let alice = b.user("alice").await;
    let bob = b.user("bob").await;
    let conversation = b.direct(&alice, &bob).await;

    let mut bob_ws = a.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe("m", EVENTS, json!({ "c": conversation }))
        .await;
    bob_ws
        .subscribe("t", "subscription { typing { isTyping } }", json!({}))
        .await;
    bob_ws
        .subscribe(
            "r",
            "subscription { readReceipts { user { id } upToMessageId } }",
            json!({}),
        )
        .await;
    bob_ws
        .subscribe(
            "p",
            "subscription { presence { status user { id } } }",
            json!({}),
        )
        .await;
    bob_ws
        .until_live(&["m", "r"], 1, async |_| {
            b.probe_receipt(&bob, &alice, &conversation).await
        })
        .await;
    bob_ws
        .until_live(&["t"], 2, async |n| {
            b.probe_typing(&alice, &conversation, n).await
        })
        .await;
    let mut alices = PresenceProbe::new(&alice);
    bob_ws
        .until_live(&["p"], 2, async |n| alices.probe(&b, n).await)
        .await;

    let message = b.send(&alice, &conversation, "across").await;
    assert_eq!(
        bob_ws.next_data("m").await["messageEvents"]["message"]["body"],
        "across"
    );
    b.data(
        &alice.token,
        EDIT,
        json!({ "id": message["id"], "b": "across!" }),
    )
    .await;
    assert_eq!(
        bob_ws.next_data("m").await["messageEvents"]["kind"],
        "EDITED"
    );
    b.data(
        &alice.token,
        "mutation($c: ID!) { setTyping(conversationId: $c, isTyping: true) }",
        json!({ "c": conversation }),
    )
    .await;
    assert_eq!(bob_ws.next_data("t").await["typing"]["isTyping"], true);
    b.data(
        &alice.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    assert_eq!(
        bob_ws.next_data("r").await["readReceipts"]["user"]["id"],
        alice.id
    );
    let on_b = b.ws(Some(&alice.token)).await;
    let online = bob_ws.next_data("p").await;
    assert_eq!(online["presence"]["status"], "ONLINE");
    assert_eq!(online["presence"]["user"]["id"], alice.id);

    // Presence is shared: instance A knows Alice is online through B, and a second connection on
    // A keeps her online when the one on B closes.
    let query = "query($u: ID!) { user(id: $u) { presence { status } } }";
    let seen = a.data(&bob.token, query, json!({ "u": alice.id })).await;
    assert_eq!(seen["user"]["presence"]["status"], "ONLINE");
    let on_a = a.ws(Some(&alice.token)).await;
    drop(on_b);
    // The marker: Carol comes and goes on b after Alice's connection there closed. Her OFFLINE
    // follows the same grace period, started later, so an OFFLINE for Alice would come first.
    let carol = b.user("carol").await;
    b.direct(&bob, &carol).await;
    let carol_there = b.ws(Some(&carol.token)).await;
    let online = bob_ws.expect_next_event("p", "ONLINE").await;
    assert_eq!(online["presence"]["user"]["id"], carol.id);
    drop(carol_there);
    let offline = bob_ws.expect_next_event("p", "OFFLINE").await;
    assert_eq!(offline["presence"]["user"]["id"], carol.id);
    drop(on_a);
    let offline = bob_ws.next_data("p").await;
    assert_eq!(offline["presence"]["status"], "OFFLINE");
    bob_ws.expect_silence().await;
    let seen = b.data(&bob.token, query, json!({ "u": alice.id })).await;
    assert_eq!(seen["user"]["presence"]["status"], "OFFLINE");
}

#[tokio::test]
async fn subscribers_miss_nothing_when_redis_stops_and_comes_back() {
    let mut redis = OwnRedis::start_or_fail();
    let (a, b) = two_instances(format!("redis://127.0.0.1:{}", redis.port)).await;
    let alice = b.user("alice").await;
    let bob = b.user("bob").await;
    let conversation = b.direct(&alice, &bob).await;
    let mut bob_ws = a.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe("m", EVENTS, json!({ "c": conversation }))
        .await;
    bob_ws
        .until_live(&["m"], 1, async |_| {
            b.probe_message(&alice, &conversation).await
        })
        .await;
    b.send(&alice, &conversation, "one").await;
    assert_eq!(
        bob_ws.next_data("m").await["messageEvents"]["message"]["body"],
        "one"
    );

    redis.stop();
    // Sends still commit while the bus is down.
    for body in ["two", "three", "four"] {
        b.send(&alice, &conversation, body).await;
    }
    redis.restart();
    b.send(&alice, &conversation, "five").await;

    let mut bodies = Vec::new();
    while bodies.len() < 4 {
        let event = bob_ws.next_data("m").await;
        bodies.push(
            event["messageEvents"]["message"]["body"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(bodies, ["two", "three", "four", "five"]);
    bob_ws.expect_silence().await;
}

#[tokio::test]
async fn sigterm_closes_websockets_with_going_away_and_exits_cleanly() {
    let dir = std::env::temp_dir().join(format!("palaver-sigterm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palaver"))
        .env("PALAVER_ADDR", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/db.sqlite?mode=rwc", dir.display()),
        )
        .env("STORAGE_URL", "memory://")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().unwrap();
    let addr = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = lines.by_ref().map_while(Result::ok).find_map(|line| {
            line.split("listening on http://")
                .nth(1)
                .map(|a| a.trim().to_owned())
        });
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        addr
    })
    .await
    .unwrap()
    .expect("the server logs its address");
    let app = TestApp::at(addr.parse().unwrap());
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut ws = app.ws(Some(&alice.token)).await;
    ws.subscribe("m", EVENTS, json!({})).await;
    // Shut down with a subscription registered and live.
    ws.until_live(&["m"], 1, async |_| {
        app.probe_message(&bob, &conversation).await
    })
    .await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    match ws.next_frame(WAIT).await {
        Some(Frame::Closed(Some((code, _)))) => assert_eq!(code, 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn notifications_and_read_receipts_resume_from_a_cursor_too() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let notes = "subscription($s: String) { notifications(since: $s) { kind count cursor message { id } } }";
    let receipts =
        "subscription($s: String) { readReceipts(since: $s) { cursor user { id } upToMessageId } }";

    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws.subscribe("n", notes, json!({})).await;
    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws.subscribe("r", receipts, json!({})).await;
    until_all_live(
        &mut [(&mut bob_ws, &["n"]), (&mut alice_ws, &["r"])],
        1,
        async |_| app.probe_receipt(&alice, &bob, &conversation).await,
    )
    .await;
    app.send(&alice, &conversation, "first").await;
    let note_cursor = bob_ws.next_data("n").await["notifications"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    app.data(
        &bob.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": conversation }),
    )
    .await;
    let receipt_cursor = alice_ws.next_data("r").await["readReceipts"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(bob_ws);
    drop(alice_ws);

    // While both are away: more messages (collapsing into bob's fresh notification), a mention,
    // and bob reading again.
    app.send(&alice, &conversation, "second").await;
    app.send(&alice, &conversation, "third").await;
    let last = app
        .send(&alice, &conversation, &format!("@{} ping", bob.username))
        .await;
    app.data(
        &bob.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": conversation }),
    )
    .await;

    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe("n", notes, json!({ "s": note_cursor }))
        .await;
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let note = bob_ws.next_data("n").await;
        kinds.push(note["notifications"]["kind"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["MENTION", "MESSAGE"]);
    bob_ws.expect_silence().await;

    let mut alice_ws = app.ws(Some(&alice.token)).await;
    alice_ws
        .subscribe("r", receipts, json!({ "s": receipt_cursor }))
        .await;
    let receipt = alice_ws.next_data("r").await;
    assert_eq!(receipt["readReceipts"]["user"]["id"], bob.id);
    assert_eq!(receipt["readReceipts"]["upToMessageId"], last["id"]);
    alice_ws.expect_silence().await;
}
