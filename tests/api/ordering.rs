//! Live delivery in cursor order with no gap: many concurrent writers on several instances (three
//! on PostgreSQL + Redis, one on the embedded defaults), a change committed by an instance that
//! died before publishing it, and a checker that every subscriber sees every committed change once,
//! in the order a resumed subscription replays them.
use std::collections::{BTreeMap, HashMap};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
use serde_json::json;

use crate::helpers::*;

const EVENTS: &str = "subscription($c: ID, $s: String) { messageEvents(conversationId: $c, since: $s) { kind cursor message { id body conversation { id } } } }";
const EDIT: &str = "mutation($id: ID!, $b: String!) { editMessage(id: $id, body: $b) { id } }";
const DELETE: &str = "mutation($id: ID!) { deleteMessage(id: $id) { id } }";
const RENAME: &str =
    "mutation($r: ID!, $n: String!) { updateRoom(roomId: $r, input: {name: $n}) { id } }";

/// One change as a subscriber saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    kind: String,
    message: String,
    conversation: String,
    body: String,
    cursor: String,
}

/// The instances of one deployment: three sharing the database and Redis when the tests have
/// Redis, else one.
async fn deployment() -> (Vec<TestApp>, String) {
    let config = test_config().await;
    let count = if config.redis_url.is_some() { 3 } else { 1 };
    let mut apps = Vec::new();
    for _ in 0..count {
        apps.push(spawn_app_with(config.clone()).await);
    }
    (apps, config.database_url)
}

/// Reads `ws`'s operation `id` until every body in `ends` has arrived; returns what arrived,
/// probes left out.
async fn read_until(ws: &mut WsClient, id: &str, ends: &[String]) -> Vec<Seen> {
    let mut left: Vec<&String> = ends.iter().collect();
    let mut seen = Vec::new();
    while !left.is_empty() {
        let event = ws.next_data(id).await["messageEvents"].clone();
        let item = Seen {
            kind: event["kind"].as_str().unwrap().to_owned(),
            message: event["message"]["id"].as_str().unwrap().to_owned(),
            conversation: event["message"]["conversation"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
            body: event["message"]["body"].as_str().unwrap_or("").to_owned(),
            cursor: event["cursor"].as_str().unwrap().to_owned(),
        };
        left.retain(|end| **end != item.body);
        if !item.body.starts_with("probe") {
            seen.push(item);
        }
    }
    seen
}

/// The ids of a conversation's messages in the order history pages them, probes left out.
async fn history(app: &TestApp, user: &TestUser, conversation: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .data(
                &user.token,
                "query($c: ID!, $a: String) { messages(conversationId: $c, first: 100, after: $a) \
                 { edges { cursor node { id body } } pageInfo { hasNextPage } } }",
                json!({ "c": conversation, "a": after }),
            )
            .await;
        let edges = page["messages"]["edges"].as_array().unwrap();
        for edge in edges {
            if !edge["node"]["body"]
                .as_str()
                .unwrap_or("")
                .starts_with("probe")
            {
                ids.push(edge["node"]["id"].as_str().unwrap().to_owned());
            }
        }
        if page["messages"]["pageInfo"]["hasNextPage"] != true {
            return ids;
        }
        after = edges
            .last()
            .map(|e| e["cursor"].as_str().unwrap().to_owned());
    }
}

/// Commits a message straight into the database, as an instance would that died after its commit
/// and before publishing: no instance ever announces it.
async fn commit_unannounced(database_url: &str, conversation: &str, sender: &TestUser) -> String {
    let db = sea_orm::Database::connect(database_url).await.unwrap();
    let backend = db.get_database_backend();
    let conversation = number(conversation);
    let sender = number(&sender.id);
    let run = |sql: &str, values: Vec<sea_orm::Value>| {
        Statement::from_sql_and_values(backend, sql, values)
    };
    let txn = db.begin().await.unwrap();
    if backend == sea_orm::DbBackend::Postgres {
        // Changes to one conversation are serialised by this lock (see `chat::messages`).
        txn.execute_raw(run(
            "SELECT pg_advisory_xact_lock($1)",
            vec![conversation.into()],
        ))
        .await
        .unwrap();
    }
    let now = chrono::Utc::now();
    let seq: i64 = txn
        .query_one_raw(run(
            "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = $1 \
             WHERE id = $2 RETURNING last_seq",
            vec![now.into(), conversation.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "last_seq")
        .unwrap();
    let message: i64 = txn
        .query_one_raw(run(
            "INSERT INTO messages (conversation_id, seq, sender_id, kind, body, created_at) \
             VALUES ($1, $2, $3, 'TEXT', 'unannounced', $4) RETURNING id",
            vec![conversation.into(), seq.into(), sender.into(), now.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "id")
        .unwrap();
    txn.execute_raw(run(
        "INSERT INTO conversation_events (conversation_id, seq, kind, message_id, created_at) \
         VALUES ($1, $2, 'CREATED', $3, $4)",
        vec![conversation.into(), seq.into(), message.into(), now.into()],
    ))
    .await
    .unwrap();
    txn.commit().await.unwrap();
    db.close().await.unwrap();
    format!("msg_{message}")
}

#[tokio::test]
async fn concurrent_writers_on_every_instance_reach_every_subscriber_once_in_cursor_order() {
    let (apps, database_url) = deployment().await;
    let first = &apps[0];
    let users = {
        let mut users = Vec::new();
        for i in 0..5 {
            users.push(first.user(&format!("w{i}")).await);
        }
        users
    };
    let watcher = &users[0];
    let room = first
        .room(watcher, "ordering", &users[1..].iter().collect::<Vec<_>>())
        .await;
    let mut conversations = vec![room.clone()];
    for other in &users[1..3] {
        conversations.push(first.direct(watcher, other).await);
    }
    // Who may write where: everyone in the room, the two pairs in their direct conversations.
    let members: HashMap<&String, Vec<usize>> = conversations
        .iter()
        .enumerate()
        .map(|(i, c)| (c, if i == 0 { (0..5).collect() } else { vec![0, i] }))
        .collect();

    // On every instance, the watcher follows every conversation on one subscription and the
    // room alone on another.
    let mut subscribers = Vec::new();
    for app in &apps {
        let mut ws = app.ws(Some(&watcher.token)).await;
        ws.subscribe("all", EVENTS, json!({})).await;
        ws.subscribe("room", EVENTS, json!({ "c": room })).await;
        ws.until_live(&["all", "room"], 1, async |_| {
            app.probe_message(watcher, &room).await
        })
        .await;
        subscribers.push(ws);
    }

    // Writers: each a user on a random instance, sending, editing, deleting and renaming.
    let seed: u64 = rand::rng().random();
    eprintln!("ordering checker seed: {seed}");
    let mut writers = Vec::new();
    for (w, user) in users.iter().enumerate() {
        let apps: Vec<TestApp> = apps.iter().map(|a| TestApp::at(a.addr)).collect();
        let user = user.clone();
        let room = room.clone();
        let mine: Vec<String> = conversations
            .iter()
            .filter(|c| members[c].contains(&w))
            .cloned()
            .collect();
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ w as u64);
            let mut sent: Vec<String> = Vec::new();
            let mut done: Vec<(String, String)> = Vec::new();
            for i in 0..40 {
                let app = apps.choose(&mut rng).unwrap();
                match rng.random_range(0..10) {
                    0..=1 if !sent.is_empty() => {
                        let id = sent.choose(&mut rng).unwrap().clone();
                        let body = format!("edit {w}.{i}");
                        app.data(&user.token, EDIT, json!({ "id": id, "b": body }))
                            .await;
                        done.push(("EDITED".into(), id));
                    }
                    2 if !sent.is_empty() => {
                        let id = sent.swap_remove(rng.random_range(0..sent.len()));
                        app.data(&user.token, DELETE, json!({ "id": id })).await;
                        done.push(("DELETED".into(), id));
                    }
                    3 if w == 0 => {
                        let renamed = app
                            .data(
                                &user.token,
                                RENAME,
                                json!({ "r": room, "n": format!("ordering {i}") }),
                            )
                            .await;
                        assert!(renamed["updateRoom"]["id"].is_string());
                        done.push(("SYSTEM".into(), room.clone()));
                    }
                    _ => {
                        let conversation = mine.choose(&mut rng).unwrap();
                        let message = app.send(&user, conversation, &format!("m {w}.{i}")).await;
                        let id = message["id"].as_str().unwrap().to_owned();
                        sent.push(id.clone());
                        done.push(("CREATED".into(), id));
                    }
                }
            }
            done
        }));
    }
    // Meanwhile, a change committed by an instance that died before announcing it.
    let unannounced = commit_unannounced(&database_url, &conversations[1], watcher).await;
    let mut acknowledged = vec![("CREATED".to_owned(), unannounced)];
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }

    // A last message in each conversation closes the run.
    let mut ends = Vec::new();
    for (i, conversation) in conversations.iter().enumerate() {
        let body = format!("end {i}");
        first.send(watcher, conversation, &body).await;
        ends.push(body);
    }

    // The order each conversation's messages were created in, as history pages them.
    let mut created_order: HashMap<String, Vec<String>> = HashMap::new();
    for conversation in &conversations {
        created_order.insert(
            conversation.clone(),
            history(first, watcher, conversation).await,
        );
    }

    for (n, ws) in subscribers.iter_mut().enumerate() {
        let all = read_until(ws, "all", &ends).await;
        let in_room = read_until(ws, "room", &ends[..1]).await;
        check(
            &format!("instance {n}, all"),
            &all,
            &acknowledged,
            &created_order,
            None,
        );
        check(
            &format!("instance {n}, room"),
            &in_room,
            &acknowledged,
            &created_order,
            Some(&room),
        );
        assert_eq!(
            all.iter()
                .filter(|s| s.conversation == room)
                .cloned()
                .collect::<Vec<_>>(),
            in_room,
            "instance {n}: the room's own subscription and the all-conversations one disagree"
        );

        // Resuming from any cursor brings exactly what followed it, in the same order.
        for k in [0, all.len() / 3, all.len() / 2, all.len() - 2] {
            let app = &apps[(n + k) % apps.len()];
            let mut again = app.ws(Some(&watcher.token)).await;
            again
                .subscribe("again", EVENTS, json!({ "s": all[k].cursor }))
                .await;
            let later: Vec<String> = ends
                .iter()
                .filter(|end| all[k + 1..].iter().any(|s| &s.body == *end))
                .cloned()
                .collect();
            let rest = read_until(&mut again, "again", &later).await;
            assert_eq!(
                rest.iter()
                    .map(|s| (&s.kind, &s.message))
                    .collect::<Vec<_>>(),
                all[k + 1..]
                    .iter()
                    .map(|s| (&s.kind, &s.message))
                    .collect::<Vec<_>>(),
                "instance {n}: resuming after event {k} of {}",
                all.len()
            );
        }
    }
}

/// Checks one subscriber's events against what the writers were told was done.
fn check(
    who: &str,
    seen: &[Seen],
    acknowledged: &[(String, String)],
    created_order: &HashMap<String, Vec<String>>,
    only: Option<&String>,
) {
    // Every acknowledged change arrived exactly once (room renames are SYSTEM messages, counted
    // per room).
    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut renames = 0;
    for (kind, id) in acknowledged {
        if kind == "SYSTEM" {
            renames += 1;
            continue;
        }
        *expected.entry((kind.clone(), id.clone())).or_default() += 1;
    }
    let in_scope = |id: &String| only.is_none_or(|room| created_order[room].contains(id));
    let mut got: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut system = 0;
    for s in seen {
        if s.body.starts_with("end ") {
            continue;
        }
        if s.kind == "CREATED" && !expected.contains_key(&(s.kind.clone(), s.message.clone())) {
            // Renames write a system message; nothing else arrives unannounced.
            system += 1;
            continue;
        }
        *got.entry((s.kind.clone(), s.message.clone())).or_default() += 1;
    }
    expected.retain(|(_, id), _| in_scope(id));
    let missing: Vec<_> = expected
        .iter()
        .filter(|(key, n)| got.get(*key) != Some(*n))
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(key, n)| expected.get(*key) != Some(*n))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{who}: expected but not seen so: {missing:?}; seen but not so expected: {extra:?}"
    );
    assert_eq!(system, renames, "{who}: room renames");

    // Each conversation's creations arrive in the conversation's order.
    let mut per_conversation: HashMap<&String, Vec<&String>> = HashMap::new();
    for s in seen.iter().filter(|s| s.kind == "CREATED") {
        per_conversation
            .entry(&s.conversation)
            .or_default()
            .push(&s.message);
    }
    for (conversation, ids) in per_conversation {
        let order: Vec<&String> = created_order[conversation]
            .iter()
            .filter(|id| ids.contains(id))
            .collect();
        assert_eq!(
            ids, order,
            "{who}: creations in {conversation} out of order"
        );
    }
}

#[tokio::test]
async fn a_change_no_instance_announced_reaches_live_subscribers_even_when_nothing_follows_it() {
    let (apps, database_url) = deployment().await;
    let alice = apps[0].user("alice").await;
    let bob = apps[0].user("bob").await;
    let conversation = apps[0].direct(&alice, &bob).await;
    let mut subscribers = Vec::new();
    for app in &apps {
        let mut ws = app.ws(Some(&bob.token)).await;
        ws.subscribe("events", EVENTS, json!({ "c": conversation }))
            .await;
        ws.until_live(&["events"], 1, async |_| {
            app.probe_message(&alice, &conversation).await
        })
        .await;
        subscribers.push(ws);
    }
    // The later instances' probes reached the earlier sockets too: drain them up to a marker.
    let marker = "probe end";
    apps[0].send(&alice, &conversation, marker).await;
    for ws in &mut subscribers {
        while ws.next_data("events").await["messageEvents"]["message"]["body"] != marker {}
    }

    let id = commit_unannounced(&database_url, &conversation, &alice).await;

    for ws in &mut subscribers {
        let event = ws.next_data("events").await["messageEvents"].clone();
        assert_eq!(event["kind"], "CREATED");
        assert_eq!(event["message"]["id"], id.as_str());
        assert_eq!(event["message"]["body"], "unannounced");
    }
}

#[tokio::test]
async fn an_instance_refuses_a_postgresql_log_from_another_cluster_and_says_how_to_repair_it() {
    let config = test_config().await;
    let app = spawn_app_with(config.clone()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    app.send(&alice, &conversation, "before the restore").await;
    drop(app);

    // As if the database had been restored into a cluster whose transaction ids are far behind.
    let db = sea_orm::Database::connect(&config.database_url)
        .await
        .unwrap();
    db.execute_unprepared("UPDATE conversation_events SET tx = 9000000000000000000")
        .await
        .unwrap();
    let started = palaver::Application::build(config.clone()).await;
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        let err = format!("{:#}", started.err().expect("the start is refused"));
        assert!(
            err.contains("UPDATE conversation_events SET tx = 0"),
            "{err}"
        );
        db.execute_unprepared("UPDATE conversation_events SET tx = 0")
            .await
            .unwrap();
    } else {
        // SQLite orders its log by row alone: the column means nothing there.
        drop(started.expect("SQLite starts"));
    }
    let app = spawn_app_with(config).await;
    let page = app
        .data(
            &alice.token,
            "query($c: ID!) { messages(conversationId: $c, last: 5) { edges { node { body } } } }",
            json!({ "c": conversation }),
        )
        .await;
    let bodies: Vec<&str> = page["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.last(), Some(&"before the restore"), "{bodies:?}");
}
