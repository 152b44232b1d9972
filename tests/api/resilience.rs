//! Behaviour when what the server depends on fails or misleads it: Redis down or frozen, cursors
//! from other data, a read-only database, shutdown.
use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::helpers::*;

const SENDS: usize = 20;
/// A generous bound on `SENDS` sends while Redis is unavailable: nothing a send does may wait on
/// Redis then, so they take about as long as without it.
const SENDS_BOUND: Duration = Duration::from_secs(5);

/// An app using `redis` for shared state and events, with two users in a conversation and the
/// second one subscribed to it.
async fn app_on(redis: &OwnRedis) -> (TestApp, TestUser, String, WsClient) {
    let mut config = test_config().await;
    config.redis_url = Some(redis.url());
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe(
            "m",
            "subscription($c: ID) { messageEvents(conversationId: $c) { message { body } } }",
            json!({ "c": conversation }),
        )
        .await;
    // Subscribed once an event goes through: probes until one arrives, then a marker that
    // follows every probe.
    loop {
        app.send(&alice, &conversation, "probe").await;
        if bob_ws.next_frame(QUIET).await.is_some() {
            break;
        }
    }
    app.send(&alice, &conversation, "ready").await;
    while bob_ws.next_data("m").await["messageEvents"]["message"]["body"] != "ready" {}
    (app, alice, conversation, bob_ws)
}

/// Sends `SENDS` messages one after another; returns how long they took, after checking that the
/// subscriber on the same instance received every one, in order.
async fn timed_sends(
    app: &TestApp,
    alice: &TestUser,
    conversation: &str,
    bob_ws: &mut WsClient,
) -> Duration {
    let started = Instant::now();
    for i in 0..SENDS {
        let sent = app.send(alice, conversation, &format!("m{i}")).await;
        assert_eq!(sent["body"], format!("m{i}"));
    }
    let took = started.elapsed();
    for i in 0..SENDS {
        let event = bob_ws.next_data("m").await;
        assert_eq!(event["messageEvents"]["message"]["body"], format!("m{i}"));
    }
    took
}

#[tokio::test]
async fn sends_go_on_at_once_while_redis_is_down() {
    let mut redis = OwnRedis::start_or_fail();
    let (app, alice, conversation, mut bob_ws) = app_on(&redis).await;

    redis.stop();
    let took = timed_sends(&app, &alice, &conversation, &mut bob_ws).await;
    eprintln!("{SENDS} sends with redis down took {took:?}");
    assert!(took < SENDS_BOUND, "{SENDS} sends took {took:?}");
}

#[tokio::test]
async fn sends_go_on_at_once_while_redis_accepts_but_never_answers() {
    let redis = OwnRedis::start_or_fail();
    let (app, alice, conversation, mut bob_ws) = app_on(&redis).await;

    redis.signal("STOP");
    let took = timed_sends(&app, &alice, &conversation, &mut bob_ws).await;
    redis.signal("CONT");
    eprintln!("{SENDS} sends with redis frozen took {took:?}");
    assert!(took < SENDS_BOUND, "{SENDS} sends took {took:?}");
}

#[tokio::test]
async fn a_typing_budget_left_without_expiry_gets_one_on_its_next_use() {
    let (url, _own) = redis_for_test();
    let mut config = test_config().await;
    config.redis_url = Some(url.clone());
    let namespace = config.redis_channel.clone();
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    // A bucket with no expiry, three starts spent (its state: when it is full again, in
    // microseconds of Redis's clock, one start being 0.5 s), as a writer that set it without
    // its expiry would leave it.
    let key = format!("{namespace}:rate:typing:{}", number(&alice.id));
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let full_at = secs * 1_000_000 + micros + 3 * 500_000;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(full_at)
        .query_async(&mut conn)
        .await
        .unwrap();

    app.data(
        &alice.token,
        "mutation($c: ID!) { setTyping(conversationId: $c, isTyping: true) }",
        json!({ "c": conversation }),
    )
    .await;

    let used: i64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        used,
        full_at + 500_000,
        "the call counted against the budget"
    );
    assert!(
        ttl > 0 && ttl <= 10,
        "the budget expires with its window: TTL {ttl}"
    );
}

#[tokio::test]
async fn background_tasks_end_when_the_server_stops() {
    let (url, _own) = redis_for_test();
    for redis_url in [None, Some(url)] {
        let mut config = test_config().await;
        config.redis_url = redis_url.clone();
        let app = palaver::Application::build(config).await.unwrap();
        let tasks = app.background_tasks();
        assert!(!tasks.is_empty(), "the typing sweeper at least runs");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(
            tasks.is_closed() && tasks.is_empty(),
            "{} background tasks still running (redis: {redis_url:?})",
            tasks.len()
        );
    }
}

/// The numbers in a cursor (`a:1:2` → [1, 2]) after its tag.
fn cursor_parts(cursor: &str) -> (String, Vec<i64>) {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).unwrap()).unwrap();
    let mut parts = text.split(':');
    let tag = parts.next().unwrap().to_owned();
    (tag, parts.map(|p| p.parse().unwrap()).collect())
}

fn make_cursor(tag: &str, parts: &[i64]) -> String {
    let text: Vec<String> = parts.iter().map(i64::to_string).collect();
    URL_SAFE_NO_PAD.encode(format!("{tag}:{}", text.join(":")))
}

/// A day, in microseconds.
const DAY_MICROS: i64 = 86_400_000_000;

/// Subscribes with `since` and returns the error code it is refused with.
async fn refused(ws: &mut WsClient, query: &str, since: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    ws.subscribe(&id, query, json!({ "s": since })).await;
    ws.next_error_code(&id).await
}

const NOTIFICATIONS: &str = "subscription($s: String) { notifications(since: $s) { kind } }";
const RECEIPTS: &str = "subscription($s: String) { readReceipts(since: $s) { cursor } }";
const EVENTS: &str = "subscription($s: String) { messageEvents(since: $s) { kind } }";

/// Bob's newest notification's cursor, after alice wrote to him.
async fn notification_cursor(app: &TestApp, bob: &TestUser) -> String {
    let data = app
        .data(
            &bob.token,
            "{ notifications(first: 1) { edges { cursor node { cursor } } } }",
            json!({}),
        )
        .await;
    data["notifications"]["edges"][0]["node"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_resumable_subscription_refuses_cursors_from_the_future_or_other_data_alike() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.direct(&alice, &bob).await;
    let genuine = notification_cursor(&app, &bob).await;
    let (tag, parts) = cursor_parts(&genuine);
    assert_eq!((tag.as_str(), parts.len()), ("a", 3), "{genuine}");
    let (epoch, micros, id) = (parts[0], parts[1], parts[2]);
    let other_epoch = epoch + 1;
    let mut ws = app.ws(Some(&bob.token)).await;

    // notifications(since)
    for since in [
        make_cursor("a", &[epoch, micros + DAY_MICROS, id]),
        make_cursor("a", &[epoch, micros, id + 1_000]),
        make_cursor("a", &[other_epoch, micros, id]),
        make_cursor("a", &[micros, id]),
    ] {
        assert_eq!(
            refused(&mut ws, NOTIFICATIONS, &since).await,
            "RESYNC_REQUIRED",
            "{:?}",
            cursor_parts(&since)
        );
    }
    // readReceipts(since)
    for since in [
        make_cursor("c", &[epoch, micros + DAY_MICROS, 1, 1]),
        make_cursor("c", &[other_epoch, micros, 1, 1]),
        make_cursor("c", &[micros, 1, 1]),
    ] {
        assert_eq!(
            refused(&mut ws, RECEIPTS, &since).await,
            "RESYNC_REQUIRED",
            "{:?}",
            cursor_parts(&since)
        );
    }
    // messageEvents(since): positions (transaction, row) past the log, and the older cursors
    // that named a row alone.
    for since in [
        make_cursor("e", &[epoch, 1 << 60, 1]),
        make_cursor("e", &[epoch, 0, 1_000_000]),
        make_cursor("e", &[other_epoch, 0, 1]),
        make_cursor("e", &[epoch, 1_000_000]),
        make_cursor("e", &[other_epoch, 1]),
    ] {
        assert_eq!(
            refused(&mut ws, EVENTS, &since).await,
            "RESYNC_REQUIRED",
            "{:?}",
            cursor_parts(&since)
        );
    }
    // Garbage stays bad input.
    for query in [NOTIFICATIONS, RECEIPTS, EVENTS] {
        assert_eq!(refused(&mut ws, query, "nonsense").await, "BAD_USER_INPUT");
    }

    // Genuine cursors still resume: the next notification comes after bob's newest.
    ws.subscribe("n", NOTIFICATIONS, json!({ "s": genuine }))
        .await;
    let now = chrono::Utc::now().timestamp_micros();
    ws.subscribe(
        "r",
        RECEIPTS,
        json!({ "s": make_cursor("c", &[epoch, now, 0, 0]) }),
    )
    .await;
    let carol = app.user("carol").await;
    let with_carol = app.direct(&carol, &bob).await;
    assert_eq!(ws.next_data("n").await["notifications"]["kind"], "MESSAGE");
    app.data(
        &bob.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": with_carol }),
    )
    .await;
    let receipt: Value = ws.next_data("r").await;
    assert_eq!(
        cursor_parts(receipt["readReceipts"]["cursor"].as_str().unwrap()).1[0],
        epoch
    );
}

#[tokio::test]
async fn a_server_on_a_read_only_database_says_what_is_wrong_in_one_line() {
    // A database the server has set up, then opened read-only. (`mode=ro` rather than file
    // permissions: tests may run as root, whom permissions do not stop.)
    let path = std::env::temp_dir().join(format!("palaver-ro-{}.db", uuid::Uuid::new_v4()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_palaver"))
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", path.display()),
        )
        .env("RUST_LOG", "off")
        .status()
        .unwrap();
    assert!(status.success());

    let output = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_palaver"))
                .env("PALAVER_ADDR", "127.0.0.1:0")
                .env(
                    "DATABASE_URL",
                    format!("sqlite://{}?mode=ro", path.display()),
                )
                .env("STORAGE_URL", "memory://")
                .env_remove("REDIS_URL")
                .env("RUST_BACKTRACE", "1")
                .env("RUST_LOG", "off")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let _ = std::fs::remove_file(&path);

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, no backtrace: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains("read-only") || lines[0].contains("readonly"),
        "{stderr}"
    );
}
