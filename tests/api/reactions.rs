//! Reactions and pinned messages: who may, what they change, how subscribers and resumers see it.
use serde_json::{Value, json};

use crate::helpers::*;

const REACT: &str = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id reactions { emoji count reactedByMe users { id } } } }";
const UNREACT: &str = "mutation($m: ID!, $e: String!) { removeReaction(messageId: $m, emoji: $e) { id reactions { emoji count reactedByMe users { id } } } }";
const PIN: &str = "mutation($m: ID!) { pinMessage(messageId: $m) { id pinnedAt pinnedBy { id } } }";
const UNPIN: &str =
    "mutation($m: ID!) { unpinMessage(messageId: $m) { id pinnedAt pinnedBy { id } } }";
const PINNED: &str =
    "query($c: ID!) { conversation(id: $c) { pinnedMessages { id pinnedBy { id } } } }";
const EVENTS: &str = "subscription($c: ID, $s: String) { messageEvents(conversationId: $c, since: $s) { kind cursor message { id pinnedAt reactions { emoji count reactedByMe } } } }";

fn id_of(sent: &Value) -> String {
    sent["id"].as_str().expect("a message id").to_owned()
}

async fn react(app: &TestApp, who: &TestUser, message: &str, emoji: &str) -> Value {
    app.data(&who.token, REACT, json!({ "m": message, "e": emoji }))
        .await["addReaction"]
        .clone()
}

#[tokio::test]
async fn reactions_count_once_per_user_and_emoji_in_order_of_first_use() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "Lobby", &[&bob, &carol]).await;
    let message = id_of(&app.send(&alice, &room, "lunch?").await);

    react(&app, &bob, &message, "👍").await;
    react(&app, &carol, &message, ":tada:").await;
    react(&app, &carol, &message, "👍").await;
    // Adding the same again is not an error and changes nothing.
    let again = react(&app, &bob, &message, "👍").await;
    assert_eq!(
        again["reactions"],
        json!([
            { "emoji": "👍", "count": 2, "reactedByMe": true, "users": [{ "id": bob.id }, { "id": carol.id }] },
            { "emoji": ":tada:", "count": 1, "reactedByMe": false, "users": [{ "id": carol.id }] },
        ])
    );
    // Seen by another member, reactedByMe is theirs.
    let seen = app
        .data(
            &alice.token,
            "query($c: ID!) { messages(conversationId: $c, last: 1) { edges { node { reactions { emoji count reactedByMe users(first: 1) { id } } } } } }",
            json!({ "c": room }),
        )
        .await;
    assert_eq!(
        seen["messages"]["edges"][0]["node"]["reactions"],
        json!([
            { "emoji": "👍", "count": 2, "reactedByMe": false, "users": [{ "id": bob.id }] },
            { "emoji": ":tada:", "count": 1, "reactedByMe": false, "users": [{ "id": carol.id }] },
        ])
    );

    let after = app
        .data(&bob.token, UNREACT, json!({ "m": message, "e": "👍" }))
        .await;
    // An emoji's place is its earliest standing reaction: Carol's 👍 came after her :tada:.
    assert_eq!(
        after["removeReaction"]["reactions"],
        json!([
            { "emoji": ":tada:", "count": 1, "reactedByMe": false, "users": [{ "id": carol.id }] },
            { "emoji": "👍", "count": 1, "reactedByMe": false, "users": [{ "id": carol.id }] },
        ])
    );
    // Removing what is not there changes nothing.
    let none = app
        .data(&bob.token, UNREACT, json!({ "m": message, "e": ":tada:" }))
        .await;
    assert_eq!(none["removeReaction"], after["removeReaction"]);
    // The last one gone, the emoji goes, and a later first use comes last.
    app.data(&carol.token, UNREACT, json!({ "m": message, "e": "👍" }))
        .await;
    let last = react(&app, &bob, &message, "👍").await;
    let order: Vec<&str> = last["reactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["emoji"].as_str().unwrap())
        .collect();
    assert_eq!(order, [":tada:", "👍"]);
}

#[tokio::test]
async fn emoji_must_be_one_emoji_or_a_short_shortcode_and_a_message_takes_twenty() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = id_of(&app.send(&alice, &conversation, "pick one").await);
    let too_long = format!(":{}:", "a".repeat(31));
    for bad in ["", "ok", "👍👍", ":no spaces:", too_long.as_str()] {
        let response = app
            .gql(Some(&bob.token), REACT, json!({ "m": message, "e": bad }))
            .await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{bad:?}: {response}"
        );
    }
    for good in ["👍🏽", "👨‍👩‍👧", "🇿🇦", ":+1:"] {
        react(&app, &bob, &message, good).await;
    }
    for n in 4..20 {
        react(&app, &bob, &message, &format!(":e{n}:")).await;
    }
    let response = app
        .gql(
            Some(&bob.token),
            REACT,
            json!({ "m": message, "e": ":one-more:" }),
        )
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    // An emoji already on the message can still be added by someone else.
    let joined = react(&app, &alice, &message, "👍🏽").await;
    assert_eq!(joined["reactions"].as_array().unwrap().len(), 20);
    assert_eq!(joined["reactions"][0]["count"], 2);
}

#[tokio::test]
async fn outsiders_get_not_found_and_room_members_cannot_pin() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let room = app.room(&alice, "Staff", &[&bob]).await;
    let message = id_of(&app.send(&alice, &room, "schedule").await);
    let vars = json!({ "m": message, "e": "👍" });
    for (query, vars) in [
        (REACT, vars.clone()),
        (UNREACT, vars.clone()),
        (PIN, json!({ "m": message })),
        (UNPIN, json!({ "m": message })),
    ] {
        let response = app.gql(Some(&mallory.token), query, vars).await;
        assert_eq!(
            error_code(&response),
            Some("NOT_FOUND"),
            "{query}: {response}"
        );
    }
    let response = app
        .gql(Some(&mallory.token), PINNED, json!({ "c": room }))
        .await;
    assert!(response["data"]["conversation"].is_null(), "{response}");

    // A plain member may not pin or unpin; the owner and admins may.
    let refused = app
        .gql(Some(&bob.token), PIN, json!({ "m": message }))
        .await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
    let pinned = app.data(&alice.token, PIN, json!({ "m": message })).await;
    assert_eq!(pinned["pinMessage"]["pinnedBy"]["id"], alice.id);
    let refused = app
        .gql(Some(&bob.token), UNPIN, json!({ "m": message }))
        .await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
    app.data(
        &alice.token,
        "mutation($r: ID!, $u: ID!) { setMemberRole(roomId: $r, userId: $u, role: ADMIN) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;
    let unpinned = app.data(&bob.token, UNPIN, json!({ "m": message })).await;
    assert!(unpinned["unpinMessage"]["pinnedAt"].is_null());

    // A former member is an outsider again.
    let other = id_of(&app.send(&alice, &room, "later").await);
    app.data(
        &alice.token,
        "mutation($r: ID!, $u: ID!) { removeMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;
    let response = app
        .gql(Some(&bob.token), REACT, json!({ "m": other, "e": "👍" }))
        .await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
}

#[tokio::test]
async fn pins_list_newest_first_up_to_fifty_and_either_member_of_a_direct_conversation_may_pin() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut messages = Vec::new();
    for i in 0..51 {
        messages.push(id_of(
            &app.send(&alice, &conversation, &format!("m{i}")).await,
        ));
    }
    for (i, message) in messages.iter().take(50).enumerate() {
        let who = if i % 2 == 0 { &alice } else { &bob };
        app.data(&who.token, PIN, json!({ "m": message })).await;
    }
    // Pinning a pinned message changes nothing.
    app.data(&bob.token, PIN, json!({ "m": messages[0] })).await;
    let full = app
        .gql(Some(&alice.token), PIN, json!({ "m": messages[50] }))
        .await;
    assert_eq!(error_code(&full), Some("BAD_USER_INPUT"), "{full}");
    let listed = app
        .data(&bob.token, PINNED, json!({ "c": conversation }))
        .await;
    let pins = listed["conversation"]["pinnedMessages"].as_array().unwrap();
    assert_eq!(pins.len(), 50);
    assert_eq!(pins[0]["id"], messages[49].as_str());
    assert_eq!(pins[0]["pinnedBy"]["id"], bob.id);
    assert_eq!(pins[49]["id"], messages[0].as_str());
    assert_eq!(pins[49]["pinnedBy"]["id"], alice.id);
    app.data(&bob.token, UNPIN, json!({ "m": messages[49] }))
        .await;
    let now = app
        .data(&alice.token, PIN, json!({ "m": messages[50] }))
        .await;
    assert_eq!(now["pinMessage"]["pinnedBy"]["id"], alice.id);
}

#[tokio::test]
async fn a_deleted_message_loses_its_reactions_and_pin_and_takes_no_more() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let message = id_of(&app.send(&alice, &conversation, "oops").await);
    react(&app, &bob, &message, "👍").await;
    app.data(&bob.token, PIN, json!({ "m": message })).await;
    let deleted = app
        .data(
            &alice.token,
            "mutation($id: ID!) { deleteMessage(id: $id) { pinnedAt pinnedBy { id } reactions { emoji } } }",
            json!({ "id": message }),
        )
        .await;
    assert_eq!(
        deleted["deleteMessage"],
        json!({ "pinnedAt": null, "pinnedBy": null, "reactions": [] })
    );
    let listed = app
        .data(&bob.token, PINNED, json!({ "c": conversation }))
        .await;
    assert_eq!(listed["conversation"]["pinnedMessages"], json!([]));
    for (query, vars) in [
        (REACT, json!({ "m": message, "e": "👍" })),
        (PIN, json!({ "m": message })),
    ] {
        let response = app.gql(Some(&bob.token), query, vars).await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    }
}

#[tokio::test]
async fn the_author_is_notified_of_reactions_once_per_message_while_unread() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "Desk", &[&bob, &carol]).await;
    let message = id_of(&app.send(&alice, &room, "done").await);
    let notes = "query { notifications(unreadOnly: true, first: 10) { edges { node { kind count message { id } } } } }";
    let reactions_of = async |who: &TestUser| -> Vec<Value> {
        app.data(&who.token, notes, json!({})).await["notifications"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .filter(|n| n["kind"] == "REACTION")
            .collect()
    };
    // One's own reaction notifies no one.
    react(&app, &alice, &message, "✅").await;
    assert!(reactions_of(&alice).await.is_empty());
    react(&app, &bob, &message, "👍").await;
    react(&app, &carol, &message, "👍").await;
    let found = reactions_of(&alice).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["count"], 2);
    assert_eq!(found[0]["message"]["id"], message.as_str());
    assert!(reactions_of(&bob).await.is_empty());
}

#[tokio::test]
async fn concurrent_reactions_by_many_users_end_with_the_right_counts() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let mut users = Vec::new();
    for _ in 0..12 {
        users.push(app.user("fan").await);
    }
    let refs: Vec<&TestUser> = users.iter().collect();
    let room = app.room(&owner, "Stage", &refs).await;
    let message = id_of(&app.send(&owner, &room, "encore?").await);
    // Everyone adds 👍 and 🎉 at once, then the first half take 👍 back at once, while the
    // others add 👍 again.
    let adds = users.iter().flat_map(|u| {
        let message = message.clone();
        ["👍", "🎉"].map(move |e| (u, message.clone(), e))
    });
    let app = &app;
    futures_util::future::join_all(adds.map(|(u, m, e)| async move {
        react(app, u, &m, e).await;
    }))
    .await;
    futures_util::future::join_all(users.iter().enumerate().map(|(i, u)| {
        let message = message.clone();
        async move {
            if i < 6 {
                app.data(&u.token, UNREACT, json!({ "m": message, "e": "👍" }))
                    .await;
            } else {
                react(app, u, &message, "👍").await;
            }
        }
    }))
    .await;
    let now = react(app, &owner, &message, "🎉").await;
    let count = |emoji: &str| {
        now["reactions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["emoji"] == emoji)
            .map(|r| r["count"].clone())
    };
    assert_eq!(now["reactions"].as_array().unwrap().len(), 2, "{now}");
    assert_eq!(count("👍"), Some(json!(6)), "{now}");
    assert_eq!(count("🎉"), Some(json!(13)), "{now}");
}

#[tokio::test]
async fn subscribers_see_reactions_and_pins_live_and_again_after_a_cursor_in_order() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut ws = app.ws(Some(&bob.token)).await;
    ws.subscribe("m", EVENTS, json!({ "c": conversation }))
        .await;
    ws.until_live(&["m"], 1, async |_| {
        app.probe_message(&alice, &conversation).await
    })
    .await;

    let message = id_of(&app.send(&alice, &conversation, "vote").await);
    let created = ws.expect_next_event("m", &message).await;
    let cursor = created["messageEvents"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    react(&app, &alice, &message, "👍").await;
    let reacted = ws.expect_next_event("m", "REACTED").await;
    assert_eq!(
        reacted["messageEvents"]["message"]["reactions"],
        json!([{ "emoji": "👍", "count": 1, "reactedByMe": false }])
    );
    app.data(&alice.token, PIN, json!({ "m": message })).await;
    let pinned = ws.expect_next_event("m", "PINNED").await;
    assert!(pinned["messageEvents"]["message"]["pinnedAt"].is_string());
    app.data(&bob.token, UNPIN, json!({ "m": message })).await;
    ws.expect_next_event("m", "UNPINNED").await;
    // No-ops make no events: the next event is the marker.
    app.data(&bob.token, UNPIN, json!({ "m": message })).await;
    react(&app, &alice, &message, "👍").await;
    let marker = app.probe_message(&alice, &conversation).await;
    ws.expect_next_event("m", &marker).await;

    // Resuming after the message replays the same changes, in order, once.
    let mut again = app.ws(Some(&bob.token)).await;
    again
        .subscribe("m", EVENTS, json!({ "c": conversation, "s": cursor }))
        .await;
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let event = again.next_data("m").await;
        kinds.push(event["messageEvents"]["kind"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["REACTED", "PINNED", "UNPINNED", "CREATED"]);
    let marker = app.probe_message(&alice, &conversation).await;
    again.expect_next_event("m", &marker).await;
}

#[tokio::test]
async fn reactions_and_pins_share_the_send_rate_limit_and_a_refused_one_changes_nothing() {
    let mut config = test_config().await;
    config.send_rate = "3/1m".parse().unwrap();
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    // Alice's one send of the budget starts the conversation.
    let conversation = app.direct(&alice, &bob).await;
    let message = app
        .data(
            &bob.token,
            "query($c: ID!) { messages(conversationId: $c, last: 1) { edges { node { id } } } }",
            json!({ "c": conversation }),
        )
        .await["messages"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    react(&app, &alice, &message, "👍").await;
    app.data(&alice.token, PIN, json!({ "m": message })).await;
    let refused = app
        .gql(
            Some(&alice.token),
            REACT,
            json!({ "m": message, "e": "🎉" }),
        )
        .await;
    assert_eq!(error_code(&refused), Some("RATE_LIMITED"), "{refused}");
    assert!(refused["errors"][0]["extensions"]["retryAfter"].as_u64() >= Some(1));
    // Bob has his own budget, and sees only what went through.
    let seen = react(&app, &bob, &message, "👀").await;
    let emoji: Vec<&str> = seen["reactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["emoji"].as_str().unwrap())
        .collect();
    assert_eq!(emoji, ["👍", "👀"]);
}

#[tokio::test]
async fn someone_the_author_has_blocked_reacts_without_notifying_them() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room = app.room(&alice, "Front desk", &[&bob, &carol]).await;
    let message = id_of(&app.send(&alice, &room, "closing at six").await);
    app.data(
        &alice.token,
        "mutation($u: ID!) { blockUser(userId: $u) }",
        json!({ "u": bob.id }),
    )
    .await;
    let notes = "query { notifications(unreadOnly: true, first: 10) { edges { node { kind count sender { id } } } } }";
    // Bob's reaction stands (he is a member), but Alice is not told of it; Carol's is told.
    react(&app, &bob, &message, "👎").await;
    react(&app, &carol, &message, "👍").await;
    let found: Vec<Value> =
        app.data(&alice.token, notes, json!({})).await["notifications"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"].clone())
            .filter(|n| n["kind"] == "REACTION")
            .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["count"], 1);
    assert_eq!(found[0]["sender"]["id"], carol.id);
}
