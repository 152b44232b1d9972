use serde_json::json;

use crate::helpers::*;

const FORWARD: &str = "query($c: ID!, $a: String) { messages(conversationId: $c, first: 25, after: $a) { edges { cursor node { body } } pageInfo { hasNextPage hasPreviousPage endCursor } } }";
const BACKWARD: &str = "query($c: ID!, $b: String) { messages(conversationId: $c, last: 25, before: $b) { edges { cursor node { body } } pageInfo { hasNextPage hasPreviousPage startCursor } } }";

async fn seed(app: &TestApp) -> (TestUser, TestUser, String, Vec<String>) {
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut bodies = vec!["hello".to_owned()];
    for i in 0..119 {
        let body = format!("m{i:03}");
        let from = if i % 2 == 0 { &alice } else { &bob };
        app.send(from, &conversation, &body).await;
        bodies.push(body);
    }
    (alice, bob, conversation, bodies)
}

fn bodies_of(page: &serde_json::Value) -> Vec<String> {
    page["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn walking_forward_and_backward_over_120_messages_yields_each_once_in_order() {
    let app = spawn_app().await;
    let (alice, _bob, conversation, bodies) = seed(&app).await;

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .data(
                &alice.token,
                FORWARD,
                json!({ "c": conversation, "a": after }),
            )
            .await;
        seen.extend(bodies_of(&page));
        let info = &page["messages"]["pageInfo"];
        if info["hasNextPage"] == false {
            break;
        }
        after = info["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, bodies);

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = app
            .data(
                &alice.token,
                BACKWARD,
                json!({ "c": conversation, "b": before }),
            )
            .await;
        let mut chunk = bodies_of(&page);
        chunk.extend(seen);
        seen = chunk;
        let info = &page["messages"]["pageInfo"];
        if info["hasPreviousPage"] == false {
            break;
        }
        before = info["startCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, bodies);
}

#[tokio::test]
async fn history_with_a_user_pages_the_direct_conversation() {
    let app = spawn_app().await;
    let (alice, bob, _conversation, bodies) = seed(&app).await;
    let page = app
        .data(
            &bob.token,
            "query($u: ID!) { history(userId: $u, last: 10) { edges { node { body } } pageInfo { hasPreviousPage } } }",
            json!({ "u": alice.id }),
        )
        .await;
    let got: Vec<_> = page["history"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, bodies[110..]);
    assert_eq!(page["history"]["pageInfo"]["hasPreviousPage"], true);

    // With someone never written to, history is empty.
    let carol = app.user("carol").await;
    let empty = app
        .data(
            &carol.token,
            "query($u: ID!) { history(userId: $u) { edges { cursor } } }",
            json!({ "u": alice.id }),
        )
        .await;
    assert_eq!(empty["history"]["edges"], json!([]));
}

#[tokio::test]
async fn bad_pagination_arguments_are_refused() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let cases = [
        json!({ "first": -1 }),
        json!({ "first": 1000000 }),
        json!({ "last": -5 }),
        json!({ "first": 2, "last": 2 }),
        json!({ "after": "bm90LWEtY3Vyc29y" }),
        json!({ "after": "%%%" }),
        json!({ "first": 2, "before": "bTox" }),
    ];
    for args in cases {
        let mut vars = args.clone();
        vars["c"] = json!(conversation);
        let response = app
            .gql(
                Some(&alice.token),
                "query($c: ID!, $first: Int, $last: Int, $after: String, $before: String) { messages(conversationId: $c, first: $first, last: $last, after: $after, before: $before) { edges { cursor } } }",
                vars,
            )
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{args}: {response}"
        );
    }
}
