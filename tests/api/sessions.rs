//! Sessions: listing and revoking one's own, changing the password, and no secret in the logs.
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::helpers::*;

const SESSIONS: &str = "{ sessions { id createdAt expiresAt current } }";
const REVOKE: &str = "mutation($id: ID!) { revokeSession(id: $id) }";
const CHANGE: &str =
    "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
const LOGIN: &str =
    "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";
const ME: &str = "{ me { id } }";
/// The password `TestApp::user` registers with.
const PASSWORD: &str = "s3cret-pass";

async fn login(app: &TestApp, user: &TestUser, password: &str) -> String {
    let data = app
        .gql(None, LOGIN, json!({ "u": user.username, "p": password }))
        .await;
    data["data"]["login"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login failed: {data}"))
        .to_owned()
}

async fn sessions(app: &TestApp, token: &str) -> Vec<Value> {
    app.data(token, SESSIONS, json!({})).await["sessions"]
        .as_array()
        .unwrap()
        .clone()
}

async fn signed_in(app: &TestApp, token: &str) -> bool {
    app.gql(Some(token), ME, json!({}))
        .await
        .get("errors")
        .is_none()
}

#[tokio::test]
async fn a_user_sees_their_own_sessions_and_which_one_is_current() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let second = login(&app, &alice, PASSWORD).await;
    let bob = app.user("bob").await;

    let listed = sessions(&app, &second).await;

    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|s| s["id"].as_str().unwrap().starts_with("ses_"))
    );
    let current: Vec<_> = listed.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert!(
        listed
            .iter()
            .all(|s| s["expiresAt"].as_str() > s["createdAt"].as_str())
    );
    // Bob sees only his own.
    assert_eq!(sessions(&app, &bob.token).await.len(), 1);
    let anonymous = app.gql(None, SESSIONS, json!({})).await;
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
}

#[tokio::test]
async fn revoking_another_session_signs_it_out_and_keeps_this_one() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let laptop = login(&app, &alice, PASSWORD).await;
    let other = sessions(&app, &laptop)
        .await
        .into_iter()
        .find(|s| s["current"] == false)
        .unwrap();
    // Used first, so that the server has it at hand (it keeps resolved tokens in memory).
    assert!(signed_in(&app, &alice.token).await);

    let revoked = app
        .data(&laptop, REVOKE, json!({ "id": other["id"] }))
        .await;

    assert_eq!(revoked["revokeSession"], true);
    assert!(!signed_in(&app, &alice.token).await);
    assert!(signed_in(&app, &laptop).await);
    assert_eq!(sessions(&app, &laptop).await.len(), 1);
    // Revoked already: there is nothing left to revoke.
    let again = app
        .gql(Some(&laptop), REVOKE, json!({ "id": other["id"] }))
        .await;
    assert_eq!(error_code(&again), Some("NOT_FOUND"), "{again}");
}

#[tokio::test]
async fn revoking_the_current_session_works_like_logout() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mine = sessions(&app, &alice.token).await[0]["id"].clone();

    app.data(&alice.token, REVOKE, json!({ "id": mine })).await;

    let after = app.gql(Some(&alice.token), ME, json!({})).await;
    assert_eq!(error_code(&after), Some("UNAUTHENTICATED"));
}

#[tokio::test]
async fn nobody_can_revoke_another_users_session_and_it_stays_valid() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let alices = sessions(&app, &alice.token).await[0]["id"].clone();

    let response = app
        .gql(Some(&mallory.token), REVOKE, json!({ "id": alices }))
        .await;

    assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
    assert!(signed_in(&app, &alice.token).await);
    assert_eq!(sessions(&app, &alice.token).await.len(), 1);
    for forged in ["ses_0", "ses_x", "usr_1", "ses_99999999"] {
        let response = app
            .gql(Some(&mallory.token), REVOKE, json!({ "id": forged }))
            .await;
        assert!(
            matches!(error_code(&response), Some("BAD_USER_INPUT" | "NOT_FOUND")),
            "{forged}: {response}"
        );
    }
    assert!(signed_in(&app, &mallory.token).await);
    let anonymous = app.gql(None, REVOKE, json!({ "id": alices })).await;
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
    assert!(signed_in(&app, &alice.token).await);
}

#[tokio::test]
async fn changing_the_password_signs_out_the_other_sessions_only() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let phone = login(&app, &alice, PASSWORD).await;
    let bob = app.user("bob").await;
    assert!(signed_in(&app, &phone).await, "used before the change");

    let changed = app
        .data(
            &alice.token,
            CHANGE,
            json!({ "c": PASSWORD, "n": "n3w-horse-battery" }),
        )
        .await;

    assert_eq!(changed["changePassword"], true);
    assert!(signed_in(&app, &alice.token).await);
    assert!(!signed_in(&app, &phone).await);
    assert!(
        signed_in(&app, &bob.token).await,
        "other users are untouched"
    );
    let old = app
        .gql(None, LOGIN, json!({ "u": alice.username, "p": PASSWORD }))
        .await;
    assert_eq!(error_code(&old), Some("UNAUTHENTICATED"));
    login(&app, &alice, "n3w-horse-battery").await;
}

#[tokio::test]
async fn a_wrong_current_password_or_a_weak_new_one_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let phone = login(&app, &alice, PASSWORD).await;

    let wrong = app
        .gql(
            Some(&alice.token),
            CHANGE,
            json!({ "c": "not-it-123", "n": "n3w-horse-battery" }),
        )
        .await;
    assert!(
        matches!(
            error_code(&wrong),
            Some("BAD_USER_INPUT" | "UNAUTHENTICATED")
        ),
        "{wrong}"
    );
    for weak in ["short1", "onlyletters", &format!("{}-9", alice.username)] {
        let response = app
            .gql(
                Some(&alice.token),
                CHANGE,
                json!({ "c": PASSWORD, "n": weak }),
            )
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{weak}: {response}"
        );
    }
    let anonymous = app
        .gql(
            None,
            CHANGE,
            json!({ "c": PASSWORD, "n": "n3w-horse-battery" }),
        )
        .await;
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));

    assert!(signed_in(&app, &phone).await);
    login(&app, &alice, PASSWORD).await;
}

#[tokio::test]
async fn no_token_or_password_appears_in_the_logs_even_at_trace_level() {
    let dir = std::env::temp_dir().join(format!("palaver-logs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palaver"))
        .env("PALAVER_ADDR", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/db.sqlite?mode=rwc", dir.display()),
        )
        .env("STORAGE_URL", "memory://")
        .env_remove("REDIS_URL")
        .env(
            "RUST_LOG",
            "debug,tower_http=trace,sea_orm=debug,sqlx=debug,palaver::sql=trace",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let out = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.split("listening on http://").nth(1) {
                let _ = addr_tx.send(addr.trim().to_owned());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let err = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut all);
        all
    });
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(WAIT))
        .await
        .unwrap()
        .expect("the server logs its address");
    let app = TestApp::at(addr.parse().unwrap());

    // Passwords as variables and inline in the query text, as clients send them both ways.
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let inline_password = "inl1ne-Secret-pw";
    let inline = app
        .gql(
            None,
            &format!(
                "mutation {{ login(username: \"{}\", password: \"{PASSWORD}\") {{ token }} }}",
                alice.username
            ),
            json!({}),
        )
        .await;
    let inline_token = inline["data"]["login"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let conversation = app.direct(&alice, &bob).await;
    app.send(&bob, &conversation, "hello back").await;
    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("m", "subscription { messageEvents { kind } }", json!({}))
        .await;
    app.data(
        &alice.token,
        CHANGE,
        json!({ "c": PASSWORD, "n": "n3w-horse-battery" }),
    )
    .await;
    let wrong = app
        .gql(
            None,
            LOGIN,
            json!({ "u": alice.username, "p": inline_password }),
        )
        .await;
    assert_eq!(error_code(&wrong), Some("UNAUTHENTICATED"));
    app.data(&bob.token, "mutation { logout }", json!({})).await;
    // No wait before stopping: shutdown waits for every connection, so whatever the server logs
    // about this socket is logged before it exits.
    drop(ws);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let logs = out.join().unwrap() + &err.join().unwrap();

    assert!(logs.contains("listening on"), "the logs were captured");
    assert!(logs.lines().count() > 20, "debug logging was on:\n{logs}");
    for secret in [
        alice.token.as_str(),
        bob.token.as_str(),
        inline_token.as_str(),
        PASSWORD,
        "n3w-horse-battery",
        inline_password,
    ] {
        if let Some(line) = logs.lines().find(|l| l.contains(secret)) {
            panic!("{secret:?} appears in a log line: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Expects the socket to be closed because its session ended.
async fn expect_closed_for_ended_session(ws: &mut WsClient) {
    loop {
        match ws.next_frame(WAIT).await {
            Some(Frame::Closed(Some((code, reason)))) => {
                assert_eq!(code, 4401, "{reason}");
                assert!(reason.starts_with("UNAUTHENTICATED"), "{reason}");
                return;
            }
            // Events already on their way may arrive first.
            Some(Frame::Json(_)) => continue,
            other => panic!("expected the socket to close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn ending_a_session_closes_its_open_websockets_and_only_those() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&bob, &alice).await;
    let phone = login(&app, &alice, PASSWORD).await;
    let laptop = login(&app, &alice, PASSWORD).await;
    let events = "subscription { messageEvents { message { body } } }";
    let mut on_phone = app.ws(Some(&phone)).await;
    let mut on_laptop = app.ws(Some(&laptop)).await;
    let mut bobs = app.ws(Some(&bob.token)).await;
    for ws in [&mut on_phone, &mut on_laptop, &mut bobs] {
        ws.subscribe("m", events, json!({})).await;
    }
    until_all_live(
        &mut [
            (&mut on_phone, &["m"][..]),
            (&mut on_laptop, &["m"][..]),
            (&mut bobs, &["m"][..]),
        ],
        1,
        async |_| app.probe_body(&bob, &conversation).await,
    )
    .await;

    // Revoked from another session: the phone's socket closes; the laptop's and bob's stay.
    let phone_id = sessions_id_of(&app, &phone).await;
    app.data(&laptop, REVOKE, json!({ "id": phone_id })).await;
    expect_closed_for_ended_session(&mut on_phone).await;
    app.send(&bob, &conversation, "still here?").await;
    assert_eq!(
        on_laptop.next_data("m").await["messageEvents"]["message"]["body"],
        "still here?"
    );
    assert_eq!(
        bobs.next_data("m").await["messageEvents"]["message"]["body"],
        "still here?"
    );

    // Changing the password ends every other session: a socket on the session that made the
    // change stays open.
    let mut on_first = app.ws(Some(&alice.token)).await;
    on_first.subscribe("m", events, json!({})).await;
    until_all_live(
        &mut [
            (&mut on_first, &["m"][..]),
            (&mut on_laptop, &["m"][..]),
            (&mut bobs, &["m"][..]),
        ],
        1,
        async |_| app.probe_body(&bob, &conversation).await,
    )
    .await;
    app.data(
        &laptop,
        CHANGE,
        json!({ "c": PASSWORD, "n": "n3w-horse-battery" }),
    )
    .await;
    expect_closed_for_ended_session(&mut on_first).await;
    app.send(&bob, &conversation, "new password?").await;
    assert_eq!(
        on_laptop.next_data("m").await["messageEvents"]["message"]["body"],
        "new password?"
    );

    // Logging out closes the sockets of that session too.
    app.data(&laptop, "mutation { logout }", json!({})).await;
    expect_closed_for_ended_session(&mut on_laptop).await;
    bobs.next_data("m").await;
    let marker = app.probe_body(&bob, &conversation).await;
    bobs.expect_next_event("m", &marker).await;
}

/// The id of the session a token stands for.
async fn sessions_id_of(app: &TestApp, token: &str) -> Value {
    sessions(app, token)
        .await
        .into_iter()
        .find(|s| s["current"] == true)
        .map(|s| s["id"].clone())
        .unwrap()
}
