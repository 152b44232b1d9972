//! An authorization matrix generated from the schema by introspection: every query, mutation and
//! subscription field is tried without a token; every field that names a conversation or a message
//! is tried by a user outside it and refused; and every other field is tried by that outsider with
//! arguments pointing at someone else's session, notification and user, and must neither reveal nor
//! change anything of theirs. A field added later is tried too, so a new operation that forgets its
//! check fails here.
use serde_json::{Value, json};

use crate::helpers::*;

/// Fields that anyone may call without a token: they are how one gets a token.
const PUBLIC: &[&str] = &["register", "login"];

const INTROSPECTION: &str = r#"
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
{ __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types {
      name kind
      enumValues { name }
      inputFields { name type { ...T } }
      fields { name args { name type { ...T } } type { ...T } }
    }
} }"#;

/// The ids the generated arguments point at: a conversation between Alice and Bob, and Alice's
/// message in it.
struct Targets {
    conversation: String,
    message: String,
    user: String,
    /// One of Alice's sessions and one of her notifications (`ses_1`/`ntf_1` when unset).
    session: String,
    notification: String,
}

struct Schema(Value);

impl Schema {
    fn type_named(&self, name: &str) -> &Value {
        self.0["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no type {name}"))
    }

    fn root_fields(&self, root: &str) -> Vec<Value> {
        let Some(name) = self.0[root]["name"].as_str() else {
            return vec![];
        };
        self.type_named(name)["fields"].as_array().unwrap().clone()
    }

    /// A value for a required argument or input field of type `ty`.
    fn value(&self, field: &str, arg: &str, ty: &Value, targets: &Targets) -> Value {
        match ty["kind"].as_str().unwrap() {
            "NON_NULL" => self.value(field, arg, &ty["ofType"], targets),
            "LIST" => json!([self.value(field, arg, &ty["ofType"], targets)]),
            "ENUM" => {
                self.type_named(ty["name"].as_str().unwrap())["enumValues"][0]["name"].clone()
            }
            "INPUT_OBJECT" => {
                let input = self.type_named(ty["name"].as_str().unwrap());
                let mut object = serde_json::Map::new();
                for f in input["inputFields"].as_array().unwrap() {
                    let name = f["name"].as_str().unwrap();
                    // Required ones, plus where a message goes (one of two optional ids).
                    if f["type"]["kind"] == "NON_NULL" || name == "conversationId" {
                        object.insert(name.into(), self.value(field, name, &f["type"], targets));
                    }
                }
                if ty["name"] == "SendMessageInput" {
                    object.insert("body".into(), json!("matrix"));
                }
                Value::Object(object)
            }
            _ => match ty["name"].as_str().unwrap() {
                "ID" => json!(id_for(field, arg, targets)),
                "Int" => json!(1),
                "Float" => json!(1.0),
                "Boolean" => json!(true),
                "DateTime" => json!("2026-01-01T00:00:00Z"),
                _ => json!("matrix-Value-1"),
            },
        }
    }

    /// A one-field operation that calls `field` with generated required arguments (and
    /// `conversationId` when it takes one).
    fn operation(&self, kind: &str, field: &Value, targets: &Targets) -> (String, Value) {
        let name = field["name"].as_str().unwrap();
        let mut params = vec![];
        let mut args = vec![];
        let mut variables = serde_json::Map::new();
        for arg in field["args"].as_array().unwrap() {
            let arg_name = arg["name"].as_str().unwrap();
            // Required ones, and the conversation wherever one may be named.
            if arg["type"]["kind"] != "NON_NULL" && arg_name != "conversationId" {
                continue;
            }
            params.push(format!("${arg_name}: {}", type_ref(&arg["type"])));
            args.push(format!("{arg_name}: ${arg_name}"));
            variables.insert(
                arg_name.into(),
                self.value(name, arg_name, &arg["type"], targets),
            );
        }
        let params = if params.is_empty() {
            String::new()
        } else {
            format!("({})", params.join(", "))
        };
        let args = if args.is_empty() {
            String::new()
        } else {
            format!("({})", args.join(", "))
        };
        let selection = match named(&field["type"])["kind"].as_str().unwrap() {
            "OBJECT" | "INTERFACE" | "UNION" => " { __typename }",
            _ => "",
        };
        (
            format!("{kind}{params} {{ {name}{args}{selection} }}"),
            Value::Object(variables),
        )
    }
}

fn named(ty: &Value) -> &Value {
    match ty["kind"].as_str() {
        Some("NON_NULL" | "LIST") => named(&ty["ofType"]),
        _ => ty,
    }
}

fn type_ref(ty: &Value) -> String {
    match ty["kind"].as_str().unwrap() {
        "NON_NULL" => format!("{}!", type_ref(&ty["ofType"])),
        "LIST" => format!("[{}]", type_ref(&ty["ofType"])),
        _ => ty["name"].as_str().unwrap().to_owned(),
    }
}

/// A well-formed id of the kind an argument expects, pointing at the targets where it can.
fn id_for(field: &str, arg: &str, targets: &Targets) -> String {
    let field = field.to_ascii_lowercase();
    match arg {
        "conversationId" => targets.conversation.clone(),
        "userId" | "userIds" | "recipientId" | "memberIds" => targets.user.clone(),
        "upToMessageId" | "fromMessageId" | "replyToId" | "messageId" | "rootId"
        | "threadRootId" => targets.message.clone(),
        _ if field.contains("session") => targets.session.clone(),
        _ if field.contains("notification") => targets.notification.clone(),
        _ if field.contains("message") => targets.message.clone(),
        _ if field.contains("user") => targets.user.clone(),
        _ => targets.conversation.clone(),
    }
}

async fn schema(app: &TestApp, token: &str) -> Schema {
    Schema(app.data(token, INTROSPECTION, json!({})).await["__schema"].clone())
}

/// Everything a call could have changed that the matrix looks at: the conversation's history and
/// members as Alice sees them, and her unread count.
async fn snapshot(app: &TestApp, alice: &TestUser, conversation: &str) -> Value {
    app.data(
        &alice.token,
        "query($c: ID!) { conversation(id: $c) { members { user { id } } } messages(conversationId: $c) { edges { node { id body editedAt deletedAt } } } unreadCount }",
        json!({ "c": conversation }),
    )
    .await
}

#[tokio::test]
async fn every_operation_without_a_token_is_unauthenticated_and_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app.send(&alice, &conversation, "private").await;
    let targets = Targets {
        conversation,
        message: message["id"].as_str().unwrap().into(),
        user: alice.id.clone(),
        session: "ses_1".into(),
        notification: "ntf_1".into(),
    };
    let schema = schema(&app, &alice.token).await;
    let before = snapshot(&app, &alice, &targets.conversation).await;
    let mut tried = 0;

    for (root, kind) in [("queryType", "query"), ("mutationType", "mutation")] {
        for field in schema.root_fields(root) {
            let name = field["name"].as_str().unwrap();
            if PUBLIC.contains(&name) {
                continue;
            }
            let (query, variables) = schema.operation(kind, &field, &targets);
            let response = app.gql(None, &query, variables.clone()).await;
            assert_eq!(
                error_code(&response),
                Some("UNAUTHENTICATED"),
                "{query} {variables} answered {response}"
            );
            tried += 1;
        }
    }
    // Over the WebSocket nothing runs without a token: connection_init without one is refused,
    // and a socket that skips it is closed at its first operation.
    let mut ws = app.ws_raw("graphql-transport-ws").await;
    ws.send_json(json!({ "type": "connection_init", "payload": {} }))
        .await;
    ws.expect_refused_init().await;
    for (i, field) in schema.root_fields("subscriptionType").iter().enumerate() {
        let (query, variables) = schema.operation("subscription", field, &targets);
        let mut ws = app.ws_raw("graphql-transport-ws").await;
        ws.subscribe(&format!("s{i}"), &query, variables).await;
        assert_eq!(ws.expect_close(4401).await, "Unauthorized", "{query}");
        tried += 1;
    }

    assert!(tried > 30, "only {tried} operations were found");
    assert_eq!(snapshot(&app, &alice, &targets.conversation).await, before);
}

#[tokio::test]
async fn every_operation_on_a_conversation_or_message_is_refused_to_an_outsider() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let eve = app.user("eve").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = app.send(&alice, &conversation, "private").await;
    let targets = Targets {
        conversation,
        message: message["id"].as_str().unwrap().into(),
        user: alice.id.clone(),
        session: "ses_1".into(),
        notification: "ntf_1".into(),
    };
    let schema = schema(&app, &alice.token).await;
    let before = snapshot(&app, &alice, &targets.conversation).await;
    let aimed = |field: &Value| {
        let name = field["name"].as_str().unwrap().to_ascii_lowercase();
        field["args"].as_array().unwrap().iter().any(|arg| {
            let arg = arg["name"].as_str().unwrap();
            arg == "conversationId"
                || arg == "input"
                    && field["args"][0]["type"]["ofType"]["name"] == "SendMessageInput"
                || arg == "id" && (name.contains("message") || name.contains("conversation"))
        })
    };
    let mut tried = 0;

    for (root, kind) in [("queryType", "query"), ("mutationType", "mutation")] {
        for field in schema.root_fields(root).iter().filter(|f| aimed(f)) {
            let (query, variables) = schema.operation(kind, field, &targets);
            let response = app.gql(Some(&eve.token), &query, variables.clone()).await;
            let refused = matches!(error_code(&response), Some("NOT_FOUND" | "FORBIDDEN"));
            let empty = response.get("errors").is_none()
                && response["data"][field["name"].as_str().unwrap()].is_null();
            assert!(
                refused || empty,
                "{query} {variables} answered an outsider with {response}"
            );
            tried += 1;
        }
    }
    let mut ws = app.ws(Some(&eve.token)).await;
    for (i, field) in schema
        .root_fields("subscriptionType")
        .iter()
        .filter(|f| aimed(f))
        .enumerate()
    {
        let (query, variables) = schema.operation("subscription", field, &targets);
        let id = format!("s{i}");
        ws.subscribe(&id, &query, variables).await;
        let code = ws.next_error_code(&id).await;
        assert!(
            matches!(code.as_str(), "NOT_FOUND" | "FORBIDDEN"),
            "{query}: {code}"
        );
        tried += 1;
    }

    assert!(
        tried > 10,
        "only {tried} operations were aimed at the conversation"
    );
    assert_eq!(snapshot(&app, &alice, &targets.conversation).await, before);
}

/// Alice's own things that no one else may read or change: one session, one unread notification,
/// her block list.
async fn account_snapshot(app: &TestApp, alice: &TestUser) -> Value {
    app.data(
        &alice.token,
        "{ sessions { id } notifications { edges { node { id isRead } } } blockedUsers { id } }",
        json!({}),
    )
    .await
}

#[tokio::test]
async fn every_other_operation_aimed_at_someone_elses_account_reveals_and_changes_nothing_of_it() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let eve = app.user("eve").await;
    let conversation = app.direct(&bob, &alice).await;
    let message = app.send(&alice, &conversation, "private").await;
    let account = account_snapshot(&app, &alice).await;
    let session = account["sessions"][0]["id"].as_str().unwrap().to_owned();
    let notification = account["notifications"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let targets = Targets {
        conversation,
        message: message["id"].as_str().unwrap().into(),
        user: alice.id.clone(),
        session: session.clone(),
        notification: notification.clone(),
    };
    let schema = schema(&app, &alice.token).await;
    let before = snapshot(&app, &alice, &targets.conversation).await;
    let mut tried = 0;

    for (root, kind) in [("queryType", "query"), ("mutationType", "mutation")] {
        let mut fields = schema.root_fields(root);
        // Signing out ends the caller's own session: do it last, so every other call is made.
        fields.sort_by_key(|f| f["name"] == "logout");
        for field in &fields {
            let name = field["name"].as_str().unwrap();
            if PUBLIC.contains(&name) {
                continue;
            }
            let (query, variables) = schema.operation(kind, field, &targets);
            let response = app.gql(Some(&eve.token), &query, variables.clone()).await;
            let text = response.to_string();
            assert_ne!(
                error_code(&response),
                Some("INTERNAL_SERVER_ERROR"),
                "{query}"
            );
            assert!(
                !text.contains("private") && !text.contains(&alice.token),
                "{query} {variables} showed Eve Alice's data: {response}"
            );
            tried += 1;
        }
    }

    assert!(tried > 30, "only {tried} operations were found");
    // Her conversation is untouched (her total unread count may grow: anyone may put her in a
    // new room, which is not hers to refuse).
    let now = snapshot(&app, &alice, &targets.conversation).await;
    assert_eq!(now["conversation"], before["conversation"]);
    assert_eq!(now["messages"], before["messages"]);
    let after = account_snapshot(&app, &alice).await;
    assert!(after["sessions"].to_string().contains(&session), "{after}");
    let still_unread = after["notifications"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["node"]["id"] == notification.as_str() && e["node"]["isRead"] == false);
    assert!(still_unread, "{after}");
    assert_eq!(after["blockedUsers"], account["blockedUsers"]);
}
