//! The audit log records security-relevant actions and only server administrators may read it.
use std::process::Command;

use serde_json::json;

use crate::helpers::*;

const AUDIT: &str =
    "{ auditLog(first: 100) { edges { node { action target detail actor { id } } } } }";

fn admin_cli(database_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_palaver"))
        .args(["admin"])
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .output()
        .expect("the CLI runs")
}

#[tokio::test]
async fn the_audit_log_records_what_happened_and_only_administrators_read_it() {
    let config = test_config().await;
    let database_url = config.database_url.clone();
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let admin = app.user("admin").await;

    let login =
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }";
    let failed = app
        .gql(
            None,
            login,
            json!({ "u": alice.username, "p": "wrong-pass-1" }),
        )
        .await;
    assert_eq!(error_code(&failed), Some("UNAUTHENTICATED"));
    let ok = app
        .gql(
            None,
            login,
            json!({ "u": alice.username, "p": "s3cret-pass" }),
        )
        .await;
    assert!(ok["data"]["login"]["token"].is_string());
    let conversation = app.direct(&alice, &bob).await;
    let message = app.send(&alice, &conversation, "to be edited").await;
    app.data(
        &alice.token,
        "mutation($id: ID!) { editMessage(id: $id, body: \"edited\") { id } }",
        json!({ "id": message["id"] }),
    )
    .await;
    app.data(
        &alice.token,
        "mutation($id: ID!) { deleteMessage(id: $id) { id } }",
        json!({ "id": message["id"] }),
    )
    .await;
    let room = app
        .data(
            &alice.token,
            "mutation($m: [ID!]!) { createRoom(input: {name: \"Desk\", memberIds: $m}) { id } }",
            json!({ "m": [] }),
        )
        .await["createRoom"]["id"]
        .clone();
    app.data(
        &alice.token,
        "mutation($r: ID!, $u: ID!) { addMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;
    app.data(&bob.token, "mutation { logout }", json!({})).await;

    // Ordinary users, and the admin before being granted, are refused.
    for user in [&alice, &admin] {
        let refused = app.gql(Some(&user.token), AUDIT, json!({})).await;
        assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
    }
    let unknown = admin_cli(&database_url, &["grant", "nobody-at-all"]);
    assert!(!unknown.status.success());
    let granted = admin_cli(&database_url, &["grant", &admin.username]);
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );

    let log = app.data(&admin.token, AUDIT, json!({})).await;
    let entries: Vec<_> = log["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let find = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {entries:?}"))
            .clone()
    };
    let failure = find("login.failed");
    assert_eq!(failure["target"], alice.username.as_str());
    assert!(failure["actor"].is_null());
    assert_eq!(find("login.succeeded")["actor"]["id"], alice.id);
    assert_eq!(find("message.edited")["target"], message["id"]);
    assert_eq!(find("message.deleted")["actor"]["id"], alice.id);
    assert_eq!(find("room.member_added")["target"], room);
    assert_eq!(find("session.logout")["actor"]["id"], bob.id);
    assert_eq!(
        find("admin.granted")["target"],
        admin.username.to_lowercase()
    );
    // No password ever lands in the log.
    assert!(!log.to_string().contains("wrong-pass-1") && !log.to_string().contains("s3cret-pass"));

    let revoked = admin_cli(&database_url, &["revoke", &admin.username]);
    assert!(revoked.status.success());
    let refused = app.gql(Some(&admin.token), AUDIT, json!({})).await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"));
}
