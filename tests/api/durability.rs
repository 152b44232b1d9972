//! "Sent" means kept: a send is acknowledged, and announced to subscribers, only once it is
//! committed, whatever fails underneath (a commit refused, a full disk), and the server carries on
//! by itself once the cause is gone.
use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::json;

use crate::helpers::*;

const EVENTS: &str = "subscription($c: ID) { messageEvents(conversationId: $c) { kind cursor message { id body } } }";
const SEND: &str = "mutation($c: ID!, $b: String!, $k: String!) { sendMessage(input: {conversationId: $c, body: $b, clientMessageId: $k}) { id body } }";

/// Sends `body`; the message's id, or the error's code.
async fn try_send(
    app: &TestApp,
    from: &TestUser,
    conversation: &str,
    body: &str,
) -> Result<String, String> {
    let key = uuid::Uuid::new_v4().to_string();
    let response = app
        .gql(
            Some(&from.token),
            SEND,
            json!({ "c": conversation, "b": body, "k": key }),
        )
        .await;
    match response["data"]["sendMessage"]["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => Err(error_code(&response)
            .unwrap_or_else(|| panic!("neither a message nor a coded error: {response}"))
            .to_owned()),
    }
}

/// Subscribes `ws` to the conversation's events and returns once one is seen to arrive: the
/// subscription is then registered, so nothing sent afterwards can slip past it.
async fn subscribed(app: &TestApp, ws: &mut WsClient, sender: &TestUser, conversation: &str) {
    ws.subscribe("events", EVENTS, json!({ "c": conversation }))
        .await;
    loop {
        app.send(sender, conversation, "ready?").await;
        if let Some(frame) = ws.next_frame(QUIET).await {
            match frame {
                Frame::Json(frame) if frame["id"] == "events" => return,
                other => panic!("unexpected frame while subscribing: {other:?}"),
            }
        }
    }
}

/// The bodies of the CREATED events that arrive up to and including the one with `marker`.
async fn bodies_until(ws: &mut WsClient, marker: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let event = ws.next_data("events").await["messageEvents"].clone();
        let id = event["message"]["id"].as_str().unwrap().to_owned();
        let body = event["message"]["body"].as_str().unwrap().to_owned();
        if body == marker {
            return seen;
        }
        if body != "ready?" {
            seen.push((id, body));
        }
    }
}

/// Reads the events up to `marker` and checks that they announce exactly the sends in `kept`,
/// each once, and that history holds every one of them; returns what history holds.
async fn assert_announced_and_stored(
    app: &TestApp,
    ws: &mut WsClient,
    reader: &TestUser,
    conversation: &str,
    kept: &HashMap<String, String>,
) -> HashMap<String, String> {
    let announced = bodies_until(ws, "marker").await;
    let announced_ids: HashSet<&String> = announced.iter().map(|(id, _)| id).collect();
    assert_eq!(
        announced.len(),
        announced_ids.len(),
        "duplicates: {announced:?}"
    );
    assert_eq!(
        &announced.into_iter().collect::<HashMap<_, _>>(),
        kept,
        "announced exactly what was acknowledged"
    );
    // Read back through the server's readers, not the connection that wrote them.
    let stored = history(app, reader, conversation).await;
    for (id, body) in kept {
        assert_eq!(stored.get(id), Some(body), "{id} was acknowledged");
    }
    stored
}

/// Every message of the conversation, id to body, read back through the API.
async fn history(app: &TestApp, user: &TestUser, conversation: &str) -> HashMap<String, String> {
    let mut found = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let data = app
            .data(
                &user.token,
                "query($c: ID!, $a: String) { messages(conversationId: $c, first: 100, after: $a) { edges { node { id body } } pageInfo { hasNextPage endCursor } } }",
                json!({ "c": conversation, "a": after }),
            )
            .await;
        let page = &data["messages"];
        for edge in page["edges"].as_array().unwrap() {
            found.insert(
                edge["node"]["id"].as_str().unwrap().to_owned(),
                edge["node"]["body"].as_str().unwrap_or_default().to_owned(),
            );
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return found;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

async fn connect(url: &str) -> DatabaseConnection {
    Database::connect(url)
        .await
        .expect("the test connects to the server's database")
}

/// Makes the database fail two ways under sends, as a failing disk would: a transaction that
/// inserted a message whose body contains "poison" is refused at COMMIT (PostgreSQL: a deferred
/// constraint trigger; SQLite: a deferred foreign key, whose failed COMMIT leaves SQLite's
/// transaction open), and inserting one whose body contains "vanish" fails the statement (SQLite:
/// `RAISE(ROLLBACK)`, which rolls the whole transaction back under the server, as SQLite does on
/// its own for SQLITE_FULL and SQLITE_IOERR; PostgreSQL: an error, which aborts the transaction).
async fn failing_database(url: &str) {
    let db = connect(url).await;
    let statements: &[&str] = if url.starts_with("postgres") {
        &[
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.body LIKE '%poison%' THEN RAISE EXCEPTION 'poison refused at commit'; END IF; RETURN NULL; END $$",
            "CREATE CONSTRAINT TRIGGER refuse_poison AFTER INSERT ON messages DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            "CREATE FUNCTION refuse_vanish() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.body LIKE '%vanish%' THEN RAISE EXCEPTION 'vanish refused'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_vanish BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_vanish()",
        ]
    } else {
        &[
            "CREATE TABLE poison_parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE poison_child (parent_id INTEGER REFERENCES poison_parent (id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TRIGGER refuse_poison AFTER INSERT ON messages WHEN NEW.body LIKE '%poison%' BEGIN INSERT INTO poison_child VALUES (1); END",
            "CREATE TRIGGER refuse_vanish BEFORE INSERT ON messages WHEN NEW.body LIKE '%vanish%' BEGIN SELECT RAISE(ROLLBACK, 'vanish refused'); END",
        ]
    };
    for sql in statements {
        db.execute_unprepared(sql).await.expect(sql);
    }
    db.close().await.ok();
}

#[tokio::test]
async fn sends_the_database_fails_are_refused_never_announced_and_the_rest_are_kept() {
    let config = test_config().await;
    let url = config.database_url.clone();
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    subscribed(&app, &mut bob_ws, &alice, &conversation).await;
    failing_database(&url).await;

    // Queued together, so that on SQLite they share the writer's batches.
    let bodies: Vec<String> = (0..24)
        .map(|i| match i % 4 {
            1 => format!("poison {i}"),
            3 => format!("vanish {i}"),
            _ => format!("fine {i}"),
        })
        .collect();
    let results = join_all(
        bodies
            .iter()
            .map(|body| try_send(&app, &alice, &conversation, body)),
    )
    .await;
    let mut kept = HashMap::new();
    for (body, result) in bodies.iter().zip(&results) {
        if !body.starts_with("fine") {
            assert_eq!(
                result.as_ref().map_err(String::as_str),
                Err("INTERNAL_SERVER_ERROR"),
                "{body} was refused by the database"
            );
        } else {
            let id = result
                .clone()
                .unwrap_or_else(|code| panic!("{body}: {code}"));
            kept.insert(id, body.clone());
        }
    }
    // Nothing a failure left behind on a connection reaches the sends that follow.
    let after: Vec<String> = (0..24).map(|i| format!("fine later {i}")).collect();
    let results = join_all(
        after
            .iter()
            .map(|body| try_send(&app, &alice, &conversation, body)),
    )
    .await;
    for (body, result) in after.into_iter().zip(results) {
        let id = result.unwrap_or_else(|code| panic!("{body}: {code}"));
        kept.insert(id, body);
    }
    let marker = try_send(&app, &alice, &conversation, "marker")
        .await
        .expect("the server goes on sending");

    // Live and stored: exactly the committed sends, each once, none of the refused.
    let stored = assert_announced_and_stored(&app, &mut bob_ws, &bob, &conversation, &kept).await;
    assert!(stored.contains_key(&marker));
    assert!(
        stored
            .values()
            .all(|body| !body.contains("poison") && !body.contains("vanish")),
        "{stored:?}"
    );
}

/// A SQLite database of its own, whatever backend the other tests use: the full disk is SQLite's.
fn sqlite_url() -> String {
    let dir = std::env::temp_dir().join(format!("palaver-full-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}/full.db?mode=rwc", dir.display())
}

/// Grows the file with a table of blobs until the cap refuses more, as a full disk would.
async fn fill(db: &DatabaseConnection, max_pages: u64) {
    db.execute_unprepared(&format!("PRAGMA max_page_count = {max_pages}"))
        .await
        .unwrap();
    db.execute_unprepared("CREATE TABLE ballast (b BLOB)")
        .await
        .unwrap();
    for size in [65536, 4096, 512, 64] {
        while db
            .execute_unprepared(&format!("INSERT INTO ballast VALUES (zeroblob({size}))"))
            .await
            .is_ok()
        {}
    }
}

#[tokio::test]
async fn on_a_full_sqlite_disk_only_kept_sends_are_acknowledged_and_sending_recovers_without_restart()
 {
    const CAP_BYTES: u64 = 8 << 20;
    let url = sqlite_url();
    let mut config = test_config().await;
    config.database_url = url.clone();
    config.redis_url = None;
    config.sqlite_max_bytes = Some(CAP_BYTES);
    let app = spawn_app_with(config.clone()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    subscribed(&app, &mut bob_ws, &alice, &conversation).await;

    let ballast = connect(&url).await;
    fill(&ballast, CAP_BYTES / 4096).await;

    // The disk is full: sends, many at once so that they share batches, fail or are kept.
    let mut kept = HashMap::new();
    let mut refused = Vec::new();
    for wave in 0..3 {
        let bodies: Vec<String> = (0..40)
            .map(|i| format!("full {wave}-{i} {}", "x".repeat(600)))
            .collect();
        let results = join_all(
            bodies
                .iter()
                .map(|body| try_send(&app, &alice, &conversation, body)),
        )
        .await;
        for (body, result) in bodies.into_iter().zip(results) {
            match result {
                Ok(id) => {
                    kept.insert(id, body);
                }
                Err(code) => {
                    assert_eq!(code, "INTERNAL_SERVER_ERROR", "{body}");
                    refused.push(body);
                }
            }
        }
    }
    assert!(
        !refused.is_empty(),
        "the full disk refused nothing ({} kept)",
        kept.len()
    );
    // Signing in reads and writes too; it must answer, not hang on a lock left behind.
    let login = app
        .gql(
            None,
            "mutation($u: String!) { login(username: $u, password: \"s3cret-pass\") { token } }",
            json!({ "u": alice.username }),
        )
        .await;
    assert!(
        login["data"]["login"]["token"].is_string() || error_code(&login).is_some(),
        "{login}"
    );

    // The cause goes away: the same server sends again, with no restart.
    ballast
        .execute_unprepared("DROP TABLE ballast")
        .await
        .unwrap();
    ballast.close().await.ok();
    for i in 0..5 {
        let body = format!("after {i}");
        let id = try_send(&app, &alice, &conversation, &body)
            .await
            .expect("sending recovers once there is room");
        kept.insert(id, body);
    }
    try_send(&app, &alice, &conversation, "marker")
        .await
        .expect("marker sent");

    let stored = assert_announced_and_stored(&app, &mut bob_ws, &bob, &conversation, &kept).await;
    for body in &refused {
        assert!(
            !stored.values().any(|stored| stored == body),
            "refused yet stored: {body}"
        );
    }

    // After a restart everything acknowledged is still there and new ids are new.
    drop(bob_ws);
    drop(app);
    config.sqlite_max_bytes = None;
    let app = spawn_app_with(config).await;
    let login = app
        .gql(
            None,
            "mutation($u: String!) { login(username: $u, password: \"s3cret-pass\") { token } }",
            json!({ "u": alice.username }),
        )
        .await;
    let alice = TestUser {
        token: login["data"]["login"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{login}"))
            .to_owned(),
        ..alice
    };
    let again = history(&app, &alice, &conversation).await;
    for (id, body) in &kept {
        assert_eq!(again.get(id), Some(body), "{id} survived the restart");
    }
    let fresh = try_send(&app, &alice, &conversation, "after the restart")
        .await
        .unwrap();
    assert!(!again.contains_key(&fresh), "{fresh} was handed out before");
}
