//! Relay's Global Object Identification: `node(id:)` and `nodes(ids:)` fetch users,
//! conversations, messages and notifications by id, checked exactly as each kind's own lookup is.
use serde_json::{Value, json};

use crate::helpers::*;

const NODE: &str = "query($id: ID!) { node(id: $id) { __typename id ...on User { username } ...on Conversation { kind } ...on Message { body conversation { id } } ...on Notification { kind isRead } } }";
const NODES: &str = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }";

/// Alice and Bob in a direct conversation; Alice's message in it, and the notification it gave
/// Bob.
struct World {
    app: TestApp,
    alice: TestUser,
    bob: TestUser,
    conversation: String,
    message: String,
    notification: String,
}

async fn world() -> World {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app.send(&alice, &conversation, "hello bob").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let notification = app
        .data(
            &bob.token,
            "{ notifications { edges { node { id } } } }",
            json!({}),
        )
        .await["notifications"]["edges"][0]["node"]["id"]
        .as_str()
        .expect("Bob has a notification")
        .to_owned();
    World {
        app,
        alice,
        bob,
        conversation,
        message,
        notification,
    }
}

async fn node(app: &TestApp, user: &TestUser, id: &str) -> Value {
    app.gql(Some(&user.token), NODE, json!({ "id": id })).await
}

#[tokio::test]
async fn node_fetches_each_kind_of_object_for_someone_who_may_see_it() {
    let w = world().await;

    let user = node(&w.app, &w.alice, &w.bob.id).await;
    assert_eq!(user["data"]["node"]["__typename"], "User", "{user}");
    assert_eq!(user["data"]["node"]["id"], w.bob.id);
    assert_eq!(user["data"]["node"]["username"], w.bob.username);

    let conversation = node(&w.app, &w.bob, &w.conversation).await;
    assert_eq!(conversation["data"]["node"]["__typename"], "Conversation");
    assert_eq!(conversation["data"]["node"]["id"], w.conversation.as_str());
    assert_eq!(conversation["data"]["node"]["kind"], "DIRECT");

    let message = node(&w.app, &w.bob, &w.message).await;
    assert_eq!(
        message["data"]["node"]["__typename"], "Message",
        "{message}"
    );
    assert_eq!(message["data"]["node"]["body"], "hello bob");
    assert_eq!(
        message["data"]["node"]["conversation"]["id"],
        w.conversation.as_str()
    );

    let notification = node(&w.app, &w.bob, &w.notification).await;
    assert_eq!(notification["data"]["node"]["__typename"], "Notification");
    assert_eq!(notification["data"]["node"]["kind"], "MESSAGE");
    assert_eq!(notification["data"]["node"]["isRead"], false);
    for response in [user, conversation, message, notification] {
        assert!(response.get("errors").is_none(), "{response}");
    }
}

#[tokio::test]
async fn node_refuses_an_outsider_exactly_as_each_kinds_own_lookup_does() {
    let w = world().await;
    let eve = w.app.user("eve").await;

    // A conversation Eve is not in: NOT_FOUND, as `conversation(id:)` answers her.
    let own_lookup = w
        .app
        .gql(
            Some(&eve.token),
            "query($id: ID!) { conversation(id: $id) { id } }",
            json!({ "id": w.conversation }),
        )
        .await;
    assert_eq!(error_code(&own_lookup), Some("NOT_FOUND"), "{own_lookup}");
    let refused = node(&w.app, &eve, &w.conversation).await;
    assert_eq!(error_code(&refused), Some("NOT_FOUND"), "{refused}");
    assert!(refused["data"]["node"].is_null());
    assert_eq!(refused["errors"][0]["path"], json!(["node"]));

    // Nor can she tell it from one that does not exist.
    let missing = node(&w.app, &eve, "cnv_999999").await;
    assert_eq!(
        missing["errors"][0]["message"],
        refused["errors"][0]["message"]
    );

    // A message of that conversation: NOT_FOUND, as for `editMessage` or `replyToId`.
    let message = node(&w.app, &eve, &w.message).await;
    assert_eq!(error_code(&message), Some("NOT_FOUND"), "{message}");
    assert!(message["data"]["node"].is_null());
    assert!(!message.to_string().contains("hello bob"), "{message}");

    // Bob's notification, asked for by Alice (who is in the conversation it is about).
    let notification = node(&w.app, &w.alice, &w.notification).await;
    assert_eq!(
        error_code(&notification),
        Some("NOT_FOUND"),
        "{notification}"
    );
    assert!(notification["data"]["node"].is_null());

    // A user who does not exist is null without an error, as `user(id:)` answers.
    let nobody = node(&w.app, &eve, "usr_999999").await;
    assert!(nobody.get("errors").is_none(), "{nobody}");
    assert!(nobody["data"]["node"].is_null(), "{nobody}");

    // Without a token, nothing at all.
    let anonymous = w.app.gql(None, NODE, json!({ "id": w.bob.id })).await;
    assert_eq!(
        error_code(&anonymous),
        Some("UNAUTHENTICATED"),
        "{anonymous}"
    );
}

#[tokio::test]
async fn nodes_answers_in_the_order_asked_with_a_not_found_at_each_refused_entry() {
    let w = world().await;
    let ids = [
        w.bob.id.as_str(),
        w.conversation.as_str(),
        w.notification.as_str(),
        w.message.as_str(),
        "usr_999999",
        w.bob.id.as_str(),
    ];
    let response = w
        .app
        .gql(Some(&w.alice.token), NODES, json!({ "ids": ids }))
        .await;
    let nodes = response["data"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"));
    let typenames: Vec<&Value> = nodes.iter().map(|n| &n["__typename"]).collect();
    assert_eq!(
        typenames,
        [
            &json!("User"),
            &json!("Conversation"),
            &Value::Null,
            &json!("Message"),
            &Value::Null,
            &json!("User"),
        ],
        "{response}"
    );
    assert_eq!(nodes[3]["id"], w.message.as_str());
    // Only Bob's notification is refused (the missing user is null without an error, as ever).
    let errors = response["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{response}");
    assert_eq!(errors[0]["path"], json!(["nodes", 2]));
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND");

    // Bob sees his notification among the rest.
    let data = w
        .app
        .data(
            &w.bob.token,
            NODES,
            json!({ "ids": [w.notification, w.alice.id] }),
        )
        .await;
    assert_eq!(data["nodes"][0]["__typename"], "Notification");
    assert_eq!(data["nodes"][1]["id"], w.alice.id);
}

#[tokio::test]
async fn malformed_ids_ids_of_other_kinds_and_too_many_ids_are_bad_user_input() {
    let w = world().await;
    let session = w
        .app
        .data(&w.alice.token, "{ sessions { id } }", json!({}))
        .await["sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for bad in [
        "",
        "usr_",
        "usr_01",
        "usr_1 ",
        "xyz_1",
        "42",
        "aud_1",
        session.as_str(),
    ] {
        let response = node(&w.app, &w.alice, bad).await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{bad}: {response}"
        );
        let response = w
            .app
            .gql(
                Some(&w.alice.token),
                NODES,
                json!({ "ids": [w.bob.id, bad] }),
            )
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{bad}: {response}"
        );
    }

    let hundred = vec![w.bob.id.clone(); 100];
    let data = w
        .app
        .data(&w.alice.token, NODES, json!({ "ids": hundred }))
        .await;
    assert_eq!(data["nodes"].as_array().map(Vec::len), Some(100));
    let too_many = vec![w.bob.id.clone(); 101];
    let response = w
        .app
        .gql(Some(&w.alice.token), NODES, json!({ "ids": too_many }))
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
}

#[tokio::test]
async fn nodes_reads_each_kind_in_one_batch_however_many_ids() {
    let w = world().await;
    let mut messages = vec![];
    for i in 0..30 {
        let sent = w
            .app
            .send(&w.alice, &w.conversation, &format!("m{i}"))
            .await;
        messages.push(sent["id"].as_str().unwrap().to_owned());
    }
    let cost = |ids: Vec<String>| {
        let app = &w.app;
        let token = w.bob.token.clone();
        async move {
            let before = app.statements().await;
            let data = app.data(&token, NODES, json!({ "ids": ids })).await;
            let after = app.statements().await;
            assert!(
                data["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(Value::is_object),
                "{data}"
            );
            after - before
        }
    };
    let mixed = |n: usize| {
        let mut ids: Vec<String> = messages[..n].to_vec();
        ids.extend([
            w.alice.id.clone(),
            w.conversation.clone(),
            w.notification.clone(),
        ]);
        ids
    };
    // A first call reads what later ones find cached (the token); it is not measured.
    cost(mixed(1)).await;
    let small = cost(mixed(2)).await;
    let large = cost(mixed(30)).await;
    assert_eq!(small, large, "30 messages cost more statements than 2");
}
