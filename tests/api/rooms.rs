//! Group rooms: the permission table as a matrix, membership changes as system messages and
//! events, removal cutting off live and replayed delivery, ownership rules, bad input, fan-out, and
//! the statement budget of room lists.
use serde_json::{Value, json};

use crate::helpers::*;

const CREATE: &str = "mutation($n: String!, $t: String, $m: [ID!]!) { createRoom(input: {name: $n, topic: $t, memberIds: $m}) { id kind name topic members { role user { id } } } }";
const ADD: &str = "mutation($r: ID!, $u: ID!, $role: MemberRole) { addMember(roomId: $r, userId: $u, role: $role) { id } }";
const REMOVE: &str = "mutation($r: ID!, $u: ID!) { removeMember(roomId: $r, userId: $u) { id } }";
const LEAVE: &str = "mutation($r: ID!) { leaveRoom(roomId: $r) }";
const SET_ROLE: &str = "mutation($r: ID!, $u: ID!, $role: MemberRole!) { setMemberRole(roomId: $r, userId: $u, role: $role) { id } }";
const TRANSFER: &str =
    "mutation($r: ID!, $u: ID!) { transferOwnership(roomId: $r, userId: $u) { id } }";
const UPDATE: &str = "mutation($r: ID!, $n: String, $t: String) { updateRoom(roomId: $r, input: {name: $n, topic: $t}) { id name topic } }";
const DELETE: &str = "mutation($id: ID!) { deleteMessage(id: $id) { id deletedAt } }";
const EDIT: &str = "mutation($id: ID!) { editMessage(id: $id, body: \"changed\") { id } }";
const SEND: &str =
    "mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }";
const HISTORY: &str = "query($c: ID!) { messages(conversationId: $c, last: 100) { edges { node { id kind body deletedAt sender { id } systemEvent { kind role actor { id } target { id } } } } } }";
const SNAPSHOT: &str = "query($c: ID!) { conversation(id: $c) { name topic lastActivityAt members { role user { id } } } messages(conversationId: $c, last: 100) { edges { node { id kind body editedAt deletedAt } } } }";
const EVENTS: &str = "subscription($c: ID, $s: String) { messageEvents(conversationId: $c, since: $s) { kind cursor message { id kind body sender { id } systemEvent { kind target { id } } } } }";

/// Everything a member can see of a room, to prove that a refused operation changed nothing.
async fn snapshot(app: &TestApp, viewer: &TestUser, room: &str) -> Value {
    app.data(&viewer.token, SNAPSHOT, json!({ "c": room }))
        .await
}

/// The room's messages, oldest first.
async fn history(app: &TestApp, viewer: &TestUser, room: &str) -> Vec<Value> {
    app.data(&viewer.token, HISTORY, json!({ "c": room })).await["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

fn role_of(snapshot: &Value, user: &TestUser) -> Option<String> {
    snapshot["conversation"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["id"] == user.id.as_str())
        .map(|m| m["role"].as_str().unwrap().to_owned())
}

fn bodies(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|m| m["body"].as_str().unwrap_or("<deleted>").to_owned())
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Send,
    EditOthersMessage,
    DeleteOthersMessage,
    Rename,
    AddMember,
    AddAdmin,
    RemoveMember,
    RemoveAdmin,
    RemoveOwner,
    PromoteMember,
    DemoteAdmin,
    TransferOwnership,
    Leave,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Allowed,
    Refused(&'static str),
}

/// The people of one matrix case: a fresh room where `owner`, `admin`, `member` act on `a_member`
/// and `an_admin` (and add `newcomer`), watched from outside by `outsider`.
struct Cast {
    owner: TestUser,
    admin: TestUser,
    member: TestUser,
    a_member: TestUser,
    an_admin: TestUser,
    newcomer: TestUser,
    outsider: TestUser,
}

async fn perform(
    app: &TestApp,
    cast: &Cast,
    room: &str,
    message: &str,
    op: Op,
    actor: &TestUser,
) -> Value {
    let r = room;
    let (query, vars) = match op {
        Op::Send => (SEND, json!({ "c": r, "b": "hello" })),
        Op::EditOthersMessage => (EDIT, json!({ "id": message })),
        Op::DeleteOthersMessage => (DELETE, json!({ "id": message })),
        Op::Rename => (UPDATE, json!({ "r": r, "n": "Renamed" })),
        Op::AddMember => (ADD, json!({ "r": r, "u": cast.newcomer.id })),
        Op::AddAdmin => (
            ADD,
            json!({ "r": r, "u": cast.newcomer.id, "role": "ADMIN" }),
        ),
        Op::RemoveMember => (REMOVE, json!({ "r": r, "u": cast.a_member.id })),
        Op::RemoveAdmin => (REMOVE, json!({ "r": r, "u": cast.an_admin.id })),
        Op::RemoveOwner => (REMOVE, json!({ "r": r, "u": cast.owner.id })),
        Op::PromoteMember => (
            SET_ROLE,
            json!({ "r": r, "u": cast.a_member.id, "role": "ADMIN" }),
        ),
        Op::DemoteAdmin => (
            SET_ROLE,
            json!({ "r": r, "u": cast.an_admin.id, "role": "MEMBER" }),
        ),
        Op::TransferOwnership => (TRANSFER, json!({ "r": r, "u": cast.a_member.id })),
        Op::Leave => (LEAVE, json!({ "r": r })),
    };
    app.gql(Some(&actor.token), query, vars).await
}

/// Checks the effect of an allowed operation on the room, seen by its owner (who never leaves).
fn assert_effect(op: Op, cast: &Cast, actor: &TestUser, after: &Value) {
    let role = |u: &TestUser| role_of(after, u);
    let messages = after["messages"]["edges"].as_array().unwrap();
    let last = &messages[messages.len() - 1]["node"];
    match op {
        Op::Send => assert_eq!(last["body"], "hello"),
        Op::DeleteOthersMessage => assert!(
            messages
                .iter()
                .any(|m| m["node"]["body"].is_null() && !m["node"]["deletedAt"].is_null())
        ),
        Op::Rename => assert_eq!(after["conversation"]["name"], "Renamed"),
        Op::AddMember => assert_eq!(role(&cast.newcomer).as_deref(), Some("MEMBER")),
        Op::AddAdmin => assert_eq!(role(&cast.newcomer).as_deref(), Some("ADMIN")),
        Op::RemoveMember => assert_eq!(role(&cast.a_member), None),
        Op::RemoveAdmin => assert_eq!(role(&cast.an_admin), None),
        Op::PromoteMember => assert_eq!(role(&cast.a_member).as_deref(), Some("ADMIN")),
        Op::DemoteAdmin => assert_eq!(role(&cast.an_admin).as_deref(), Some("MEMBER")),
        Op::TransferOwnership => {
            assert_eq!(role(&cast.a_member).as_deref(), Some("OWNER"));
            assert_eq!(role(&cast.owner).as_deref(), Some("ADMIN"));
        }
        Op::Leave => assert_eq!(role(actor), None),
        Op::EditOthersMessage | Op::RemoveOwner => panic!("{op:?} is never allowed"),
    }
    // Every change to the membership or settings is in the history, as a system message.
    if !matches!(op, Op::Send | Op::DeleteOthersMessage) {
        assert_eq!(last["kind"], "SYSTEM", "{op:?}: {last}");
    }
}

#[tokio::test]
async fn the_permission_table_is_enforced_for_every_role_and_outsiders() {
    use Outcome::*;
    const FORBIDDEN: Outcome = Refused("FORBIDDEN");
    const NOT_FOUND: Outcome = Refused("NOT_FOUND");
    // Each operation × [OWNER, ADMIN, MEMBER, outsider]; the README's table.
    let matrix = [
        (Op::Send, [Allowed, Allowed, Allowed, NOT_FOUND]),
        (
            Op::EditOthersMessage,
            [FORBIDDEN, FORBIDDEN, FORBIDDEN, NOT_FOUND],
        ),
        (
            Op::DeleteOthersMessage,
            [Allowed, Allowed, FORBIDDEN, NOT_FOUND],
        ),
        (Op::Rename, [Allowed, Allowed, FORBIDDEN, NOT_FOUND]),
        (Op::AddMember, [Allowed, Allowed, FORBIDDEN, NOT_FOUND]),
        (Op::AddAdmin, [Allowed, FORBIDDEN, FORBIDDEN, NOT_FOUND]),
        (Op::RemoveMember, [Allowed, Allowed, FORBIDDEN, NOT_FOUND]),
        (Op::RemoveAdmin, [Allowed, FORBIDDEN, FORBIDDEN, NOT_FOUND]),
        (
            Op::RemoveOwner,
            [Refused("BAD_USER_INPUT"), FORBIDDEN, FORBIDDEN, NOT_FOUND],
        ),
        (
            Op::PromoteMember,
            [Allowed, FORBIDDEN, FORBIDDEN, NOT_FOUND],
        ),
        (Op::DemoteAdmin, [Allowed, FORBIDDEN, FORBIDDEN, NOT_FOUND]),
        (
            Op::TransferOwnership,
            [Allowed, FORBIDDEN, FORBIDDEN, NOT_FOUND],
        ),
        (
            Op::Leave,
            [Refused("CONFLICT"), Allowed, Allowed, NOT_FOUND],
        ),
    ];
    let app = spawn_app().await;
    let cast = Cast {
        owner: app.user("owner").await,
        admin: app.user("admin").await,
        member: app.user("member").await,
        a_member: app.user("amember").await,
        an_admin: app.user("anadmin").await,
        newcomer: app.user("newcomer").await,
        outsider: app.user("outsider").await,
    };
    for (op, outcomes) in matrix {
        let actors = [&cast.owner, &cast.admin, &cast.member, &cast.outsider];
        for (actor, expected) in actors.into_iter().zip(outcomes) {
            // A fresh room per case, so that cases cannot affect each other.
            let r = app
                .room(
                    &cast.owner,
                    "Matrix",
                    &[&cast.admin, &cast.member, &cast.a_member, &cast.an_admin],
                )
                .await;
            for admin in [&cast.admin, &cast.an_admin] {
                app.data(
                    &cast.owner.token,
                    SET_ROLE,
                    json!({ "r": r, "u": admin.id, "role": "ADMIN" }),
                )
                .await;
            }
            let message = app.send(&cast.a_member, &r, "someone else's").await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let before = snapshot(&app, &cast.owner, &r).await;

            let response = perform(&app, &cast, &r, &message, op, actor).await;
            let after = snapshot(&app, &cast.owner, &r).await;
            let case = format!("{op:?} by {}", actor.username);
            match expected {
                Allowed => {
                    assert!(response.get("errors").is_none(), "{case}: {response}");
                    assert_effect(op, &cast, actor, &after);
                }
                Refused(code) => {
                    assert_eq!(error_code(&response), Some(code), "{case}: {response}");
                    assert_eq!(after, before, "{case} changed the room");
                }
            }
        }
    }
}

#[tokio::test]
async fn membership_changes_are_system_messages_in_history_and_events() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let created = app
        .data(
            &alice.token,
            CREATE,
            json!({ "n": "  Front desk ", "t": "Shifts", "m": [bob.id] }),
        )
        .await["createRoom"]
        .clone();
    assert_eq!(created["kind"], "ROOM");
    assert_eq!(created["name"], "Front desk");
    assert_eq!(created["topic"], "Shifts");
    let r = created["id"].as_str().unwrap().to_owned();
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws.subscribe("e", EVENTS, json!({ "c": r })).await;
    bob_ws
        .until_live(&["e"], 1, async |_| app.probe_message(&alice, &r).await)
        .await;

    app.data(&alice.token, ADD, json!({ "r": r, "u": carol.id }))
        .await;
    app.data(
        &alice.token,
        SET_ROLE,
        json!({ "r": r, "u": bob.id, "role": "ADMIN" }),
    )
    .await;
    app.data(
        &bob.token,
        UPDATE,
        json!({ "r": r, "n": "Reception", "t": "" }),
    )
    .await;
    app.data(&bob.token, REMOVE, json!({ "r": r, "u": carol.id }))
        .await;
    app.data(&alice.token, TRANSFER, json!({ "r": r, "u": bob.id }))
        .await;
    app.data(&alice.token, LEAVE, json!({ "r": r })).await;

    let (a, b, c) = (&alice.username, &bob.username, &carol.username);
    let expected = [
        format!("{a} created the room “Front desk”"),
        format!("{a} added {c}"),
        format!("{a} made {b} an admin"),
        format!("{b} renamed the room to “Reception”"),
        format!("{b} cleared the topic"),
        format!("{b} removed {c}"),
        format!("{a} made {b} the owner"),
        format!("{a} left"),
    ];
    // Everything but the probe messages that showed Bob's subscription live.
    let messages: Vec<Value> = history(&app, &bob, &r)
        .await
        .into_iter()
        .filter(|m| m["body"] != "probe")
        .collect();
    assert_eq!(bodies(&messages), expected);
    for m in &messages {
        assert_eq!(m["kind"], "SYSTEM");
        assert!(m["sender"].is_null());
    }
    let kinds: Vec<_> = messages
        .iter()
        .map(|m| m["systemEvent"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "ROOM_CREATED",
            "MEMBER_ADDED",
            "ROLE_CHANGED",
            "ROOM_RENAMED",
            "TOPIC_CHANGED",
            "MEMBER_REMOVED",
            "OWNERSHIP_TRANSFERRED",
            "MEMBER_LEFT"
        ]
    );
    assert_eq!(messages[2]["systemEvent"]["actor"]["id"], alice.id);
    assert_eq!(messages[2]["systemEvent"]["target"]["id"], bob.id);
    assert_eq!(messages[2]["systemEvent"]["role"], "ADMIN");
    // Bob, subscribed from the start, saw each change live (all but the creation) in order.
    for body in &expected[1..] {
        let event = bob_ws.next_data("e").await;
        assert_eq!(event["messageEvents"]["kind"], "CREATED");
        assert_eq!(&event["messageEvents"]["message"]["body"], body);
    }
    let room = snapshot(&app, &bob, &r).await;
    assert_eq!(room["conversation"]["name"], "Reception");
    assert!(room["conversation"]["topic"].is_null());
    assert_eq!(role_of(&room, &bob).as_deref(), Some("OWNER"));
    assert_eq!(room["conversation"]["members"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn rooms_share_the_message_paths_of_direct_conversations() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let r = app.room(&alice, "Team", &[&bob, &carol]).await;
    let direct = app.direct(&alice, &bob).await;
    let mut carol_ws = app.ws(Some(&carol.token)).await;
    carol_ws
        .subscribe(
            "t",
            "subscription($c: ID) { typing(conversationId: $c) { user { id } isTyping } }",
            json!({ "c": r }),
        )
        .await;
    carol_ws
        .subscribe("r", "subscription($c: ID) { readReceipts(conversationId: $c) { user { id } upToMessageId } }", json!({ "c": r }))
        .await;
    carol_ws
        .until_live(&["t"], 2, async |n| app.probe_typing(&alice, &r, n).await)
        .await;
    // Alice's probe messages, which Bob reads, stay unread for Carol.
    let probes = carol_ws
        .until_live(&["r"], 1, async |_| {
            app.probe_receipt(&alice, &bob, &r).await
        })
        .await;

    let first = app.send(&alice, &r, "agenda?").await;
    let reply = app
        .data(
            &bob.token,
            "mutation($c: ID!, $to: ID!) { sendMessage(input: {conversationId: $c, body: \"monday\", replyToId: $to}) { id replyTo { id } } }",
            json!({ "c": r, "to": first["id"] }),
        )
        .await["sendMessage"]
        .clone();
    assert_eq!(reply["replyTo"]["id"], first["id"]);
    app.data(
        &bob.token,
        "mutation($id: ID!) { editMessage(id: $id, body: \"tuesday\") { id } }",
        json!({ "id": reply["id"] }),
    )
    .await;
    app.data(
        &alice.token,
        "mutation($c: ID!) { setTyping(conversationId: $c, isTyping: true) }",
        json!({ "c": r }),
    )
    .await;
    assert_eq!(
        carol_ws.next_data("t").await["typing"]["user"]["id"],
        alice.id
    );
    app.data(
        &bob.token,
        "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
        json!({ "c": r }),
    )
    .await;
    let receipt = carol_ws.next_data("r").await;
    assert_eq!(receipt["readReceipts"]["user"]["id"], bob.id);
    assert_eq!(receipt["readReceipts"]["upToMessageId"], reply["id"]);

    let read = app
        .data(
            &alice.token,
            "query($c: ID!) { messages(conversationId: $c, last: 2) { edges { node { body isRead readBy { id } } } } }",
            json!({ "c": r }),
        )
        .await;
    let first_node = &read["messages"]["edges"][0]["node"];
    assert_eq!(first_node["body"], "agenda?");
    assert_eq!(first_node["readBy"], json!([{ "id": bob.id }]));
    assert_eq!(first_node["isRead"], false, "carol has not read it");

    // Carol has the creation message and both messages unread; alice, bob's reply only.
    let unread = |u: &TestUser| {
        let token = u.token.clone();
        let app = &app;
        let r = r.clone();
        async move {
            let list = app
                .data(
                    &token,
                    "{ conversations(kind: ROOM) { edges { node { id unreadCount } } } }",
                    json!({}),
                )
                .await;
            let edges = list["conversations"]["edges"].as_array().unwrap().clone();
            assert_eq!(edges.len(), 1, "only the room is listed under ROOM");
            assert_eq!(edges[0]["node"]["id"], r.as_str());
            edges[0]["node"]["unreadCount"].as_i64().unwrap()
        }
    };
    assert_eq!(unread(&carol).await, 3 + probes as i64);
    assert_eq!(unread(&alice).await, 1);
    let directs = app
        .data(
            &alice.token,
            "{ conversations(kind: DIRECT) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(directs["conversations"]["edges"][0]["node"]["id"], direct);
    assert_eq!(
        directs["conversations"]["edges"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_moderator_may_delete_others_messages_but_not_system_messages() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let r = app.room(&alice, "Moderated", &[&bob]).await;
    let spam = app.send(&bob, &r, "spam").await;
    let deleted = app
        .data(&alice.token, DELETE, json!({ "id": spam["id"] }))
        .await;
    assert!(!deleted["deleteMessage"]["deletedAt"].is_null());
    let system = history(&app, &alice, &r).await[0]["id"].clone();
    let refused = app
        .gql(Some(&alice.token), DELETE, json!({ "id": system }))
        .await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
    assert_eq!(history(&app, &alice, &r).await[0]["deletedAt"], Value::Null);
}

#[tokio::test]
async fn one_message_reaches_all_50_members_of_a_room_live() {
    let app = spawn_app().await;
    let owner = app.user("owner").await;
    let mut others = Vec::new();
    for _ in 0..49 {
        others.push(app.user("m").await);
    }
    let refs: Vec<&TestUser> = others.iter().collect();
    let r = app.room(&owner, "All hands", &refs).await;
    let mut sockets = Vec::new();
    for user in std::iter::once(&owner).chain(others.iter()) {
        let mut ws = app.ws(Some(&user.token)).await;
        ws.subscribe("e", EVENTS, json!({ "c": r })).await;
        sockets.push(ws);
    }
    let mut live: Vec<_> = sockets.iter_mut().map(|ws| (ws, &["e"][..])).collect();
    until_all_live(&mut live, 1, async |_| app.probe_message(&owner, &r).await).await;

    let sent = app.send(&others[0], &r, "hello everyone").await;
    for ws in &mut sockets {
        let event = ws.next_data("e").await;
        assert_eq!(event["messageEvents"]["kind"], "CREATED");
        assert_eq!(event["messageEvents"]["message"]["id"], sent["id"]);
        assert_eq!(event["messageEvents"]["message"]["body"], "hello everyone");
    }
    // Once each: the next event on every socket is the marker's.
    let marker = app.probe_message(&owner, &r).await;
    for ws in &mut sockets {
        ws.expect_next_event("e", &marker).await;
    }
}

#[tokio::test]
async fn a_removed_member_hears_of_the_removal_then_nothing_and_loses_the_history() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let r = app.room(&alice, "Team", &[&bob, &carol]).await;
    // Where the markers come once Bob is out of the room.
    let direct = app.direct(&carol, &bob).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws.subscribe("one", EVENTS, json!({ "c": r })).await;
    bob_ws.subscribe("all", EVENTS, json!({})).await;
    bob_ws
        .subscribe(
            "typing",
            "subscription { typing { isTyping user { id } } }",
            json!({}),
        )
        .await;
    bob_ws
        .until_live(&["one", "all"], 1, async |_| {
            app.probe_message(&carol, &r).await
        })
        .await;
    bob_ws
        .until_live(&["typing"], 2, async |n| {
            app.probe_typing(&carol, &r, n).await
        })
        .await;
    app.send(&carol, &r, "before").await;
    let mut cursor = String::new();
    for id in ["one", "all"] {
        let event = bob_ws.next_data(id).await;
        assert_eq!(event["messageEvents"]["message"]["body"], "before");
        cursor = event["messageEvents"]["cursor"]
            .as_str()
            .unwrap()
            .to_owned();
    }

    app.data(&alice.token, REMOVE, json!({ "r": r, "u": bob.id }))
        .await;
    for id in ["one", "all"] {
        let event = bob_ws.next_data(id).await;
        let message = &event["messageEvents"]["message"];
        assert_eq!(message["kind"], "SYSTEM");
        assert_eq!(message["systemEvent"]["kind"], "MEMBER_REMOVED");
        assert_eq!(message["systemEvent"]["target"]["id"], bob.id);
    }
    // Nothing further reaches the open subscriptions.
    app.send(&carol, &r, "after").await;
    app.data(
        &carol.token,
        "mutation($c: ID!) { setTyping(conversationId: $c, isTyping: true) }",
        json!({ "c": r }),
    )
    .await;
    // Markers in Bob's direct conversation: whatever leaked would have come before them.
    let marker = app.probe_message(&carol, &direct).await;
    bob_ws.expect_next_event("all", &marker).await;
    app.probe_typing(&carol, &direct, 0).await;
    let typing = bob_ws
        .expect_next_event("typing", "\"isTyping\":true")
        .await;
    assert_eq!(typing["typing"]["user"]["id"], carol.id);

    // Nor to a new one resuming from before the removal: it replays the removal, then the
    // direct conversation's marker, and nothing of the room.
    let mut resumed = app.ws(Some(&bob.token)).await;
    resumed.subscribe("s", EVENTS, json!({ "s": cursor })).await;
    let replayed = resumed.next_data("s").await;
    assert_eq!(
        replayed["messageEvents"]["message"]["systemEvent"]["kind"],
        "MEMBER_REMOVED"
    );
    resumed.expect_next_event("s", &marker).await;
    let live_marker = app.probe_message(&carol, &direct).await;
    resumed.expect_next_event("s", &live_marker).await;
    resumed.subscribe("c", EVENTS, json!({ "c": r })).await;
    assert_eq!(resumed.next_error_code("c").await, "NOT_FOUND");

    // The history and the room are gone for bob.
    for (query, vars) in [
        (HISTORY, json!({ "c": r })),
        (SNAPSHOT, json!({ "c": r })),
        (SEND, json!({ "c": r, "b": "let me in" })),
        (
            "mutation($c: ID!) { markRead(conversationId: $c) { id } }",
            json!({ "c": r }),
        ),
    ] {
        let response = app.gql(Some(&bob.token), query, vars).await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{response}");
    }
    let rooms = app
        .data(
            &bob.token,
            "{ conversations(kind: ROOM) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(rooms["conversations"]["edges"], json!([]));
}

#[tokio::test]
async fn a_re_added_member_sees_the_whole_history_again() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let r = app.room(&alice, "Team", &[&bob]).await;
    app.send(&bob, &r, "before").await;
    app.data(&alice.token, REMOVE, json!({ "r": r, "u": bob.id }))
        .await;
    app.send(&alice, &r, "while away").await;
    // Bob's own messages in a direct conversation show his subscription live, and leave his
    // unread count as it is.
    let direct = app.direct(&bob, &alice).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws.subscribe("all", EVENTS, json!({})).await;
    bob_ws
        .until_live(&["all"], 1, async |_| {
            app.probe_message(&bob, &direct).await
        })
        .await;

    app.data(&alice.token, ADD, json!({ "r": r, "u": bob.id }))
        .await;
    let event = bob_ws.next_data("all").await;
    assert_eq!(
        event["messageEvents"]["message"]["systemEvent"]["kind"],
        "MEMBER_ADDED"
    );
    let (a, b) = (&alice.username, &bob.username);
    assert_eq!(
        bodies(&history(&app, &bob, &r).await),
        [
            format!("{a} created the room “Team”"),
            "before".into(),
            format!("{a} removed {b}"),
            "while away".into(),
            format!("{a} added {b}"),
        ]
    );
    // What was said while away is history, not unread; the message announcing bob is.
    let unread = app.data(&bob.token, "{ unreadCount }", json!({})).await;
    assert_eq!(unread["unreadCount"], 1);
    app.send(&alice, &r, "welcome back").await;
    assert_eq!(
        bob_ws.next_data("all").await["messageEvents"]["message"]["body"],
        "welcome back"
    );
}

#[tokio::test]
async fn the_owner_cannot_leave_or_be_demoted_or_removed_without_transferring_ownership() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let r = app.room(&alice, "Owned", &[&bob]).await;
    app.data(
        &alice.token,
        SET_ROLE,
        json!({ "r": r, "u": bob.id, "role": "ADMIN" }),
    )
    .await;
    let before = snapshot(&app, &alice, &r).await;
    let attempts = [
        (&alice, LEAVE, json!({ "r": r }), "CONFLICT"),
        (
            &alice,
            SET_ROLE,
            json!({ "r": r, "u": alice.id, "role": "MEMBER" }),
            "CONFLICT",
        ),
        (
            &alice,
            SET_ROLE,
            json!({ "r": r, "u": bob.id, "role": "OWNER" }),
            "BAD_USER_INPUT",
        ),
        (
            &alice,
            ADD,
            json!({ "r": r, "u": bob.id, "role": "OWNER" }),
            "BAD_USER_INPUT",
        ),
        (
            &alice,
            TRANSFER,
            json!({ "r": r, "u": alice.id }),
            "BAD_USER_INPUT",
        ),
        (&bob, REMOVE, json!({ "r": r, "u": alice.id }), "FORBIDDEN"),
        (&bob, TRANSFER, json!({ "r": r, "u": bob.id }), "FORBIDDEN"),
    ];
    for (user, query, vars, code) in attempts {
        let response = app.gql(Some(&user.token), query, vars.clone()).await;
        assert_eq!(error_code(&response), Some(code), "{vars}: {response}");
    }
    assert_eq!(snapshot(&app, &alice, &r).await, before);

    app.data(&alice.token, TRANSFER, json!({ "r": r, "u": bob.id }))
        .await;
    app.data(&alice.token, LEAVE, json!({ "r": r })).await;
    let after = snapshot(&app, &bob, &r).await;
    assert_eq!(role_of(&after, &bob).as_deref(), Some("OWNER"));
    assert_eq!(role_of(&after, &alice), None);
    // And now bob, the only member and owner, is the one who cannot leave.
    let response = app.gql(Some(&bob.token), LEAVE, json!({ "r": r })).await;
    assert_eq!(error_code(&response), Some("CONFLICT"), "{response}");
}

#[tokio::test]
async fn bad_room_input_is_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let long = "x".repeat(101);
    let long_topic = "t".repeat(501);
    let creations = [
        (
            json!({ "n": "Team", "m": [bob.id, "usr_999999"] }),
            "NOT_FOUND",
        ),
        (
            json!({ "n": "Team", "m": [bob.id, bob.id] }),
            "BAD_USER_INPUT",
        ),
        (json!({ "n": "Team", "m": [alice.id] }), "BAD_USER_INPUT"),
        (json!({ "n": "Team", "m": ["cnv_1"] }), "BAD_USER_INPUT"),
        (json!({ "n": "   ", "m": [bob.id] }), "BAD_USER_INPUT"),
        (json!({ "n": "", "m": [] }), "BAD_USER_INPUT"),
        (json!({ "n": long, "m": [bob.id] }), "BAD_USER_INPUT"),
        (json!({ "n": "bell\u{7}", "m": [bob.id] }), "BAD_USER_INPUT"),
        (
            json!({ "n": "Team", "t": long_topic, "m": [bob.id] }),
            "BAD_USER_INPUT",
        ),
    ];
    for (vars, code) in creations {
        let response = app.gql(Some(&alice.token), CREATE, vars.clone()).await;
        assert_eq!(error_code(&response), Some(code), "{vars}: {response}");
    }
    for user in [&alice, &bob] {
        let rooms = app
            .data(
                &user.token,
                "{ conversations { edges { node { id } } } unreadCount }",
                json!({}),
            )
            .await;
        assert_eq!(
            rooms["conversations"]["edges"],
            json!([]),
            "a room was made"
        );
    }

    let r = app.room(&alice, "Team", &[&bob]).await;
    let direct = app.direct(&alice, &carol).await;
    let before = snapshot(&app, &alice, &r).await;
    let attempts = [
        (ADD, json!({ "r": r, "u": bob.id }), "CONFLICT"),
        (ADD, json!({ "r": r, "u": alice.id }), "CONFLICT"),
        (ADD, json!({ "r": r, "u": "usr_999999" }), "NOT_FOUND"),
        (ADD, json!({ "r": r, "u": "bob" }), "BAD_USER_INPUT"),
        (
            ADD,
            json!({ "r": "cnv_999999", "u": carol.id }),
            "NOT_FOUND",
        ),
        (ADD, json!({ "r": direct, "u": bob.id }), "BAD_USER_INPUT"),
        (REMOVE, json!({ "r": r, "u": carol.id }), "NOT_FOUND"),
        (REMOVE, json!({ "r": r, "u": "usr_999999" }), "NOT_FOUND"),
        (
            SET_ROLE,
            json!({ "r": r, "u": carol.id, "role": "ADMIN" }),
            "NOT_FOUND",
        ),
        (
            SET_ROLE,
            json!({ "r": r, "u": bob.id, "role": "KING" }),
            "BAD_USER_INPUT",
        ),
        (TRANSFER, json!({ "r": r, "u": carol.id }), "NOT_FOUND"),
        (UPDATE, json!({ "r": r, "n": "  " }), "BAD_USER_INPUT"),
        (UPDATE, json!({ "r": r, "n": long }), "BAD_USER_INPUT"),
        (UPDATE, json!({ "r": r }), "BAD_USER_INPUT"),
        (
            UPDATE,
            json!({ "r": direct, "n": "Ours" }),
            "BAD_USER_INPUT",
        ),
        (LEAVE, json!({ "r": direct }), "BAD_USER_INPUT"),
    ];
    for (query, vars, code) in attempts {
        let response = app.gql(Some(&alice.token), query, vars.clone()).await;
        assert_eq!(error_code(&response), Some(code), "{vars}: {response}");
    }
    assert_eq!(snapshot(&app, &alice, &r).await, before);
    // Renaming to the same name, or giving a role someone has, is not a change and writes nothing.
    app.data(&alice.token, UPDATE, json!({ "r": r, "n": "Team" }))
        .await;
    app.data(
        &alice.token,
        SET_ROLE,
        json!({ "r": r, "u": bob.id, "role": "MEMBER" }),
    )
    .await;
    assert_eq!(snapshot(&app, &alice, &r).await, before);
}

const ROOM_LIST: &str = "query($n: Int) { conversations(kind: ROOM, first: $n) { edges { node { id kind title name unreadCount members { role user { id username } } lastMessage { id body sender { id } systemEvent { kind actor { id } } } } } } }";
const ROOM_PAGE: &str = "query($c: ID!, $n: Int) { messages(conversationId: $c, last: $n) { edges { node { id body isRead readBy { id } sender { id username } replyTo { id sender { id } } systemEvent { kind actor { id } target { id } } } } } }";

/// The most statements one list may cost (see batching.rs).
const MAX_STATEMENTS: u64 = 16;

async fn statements_for(app: &TestApp, token: &str, query: &str, vars: Value) -> u64 {
    let before = app.statements().await;
    app.data(token, query, vars).await;
    app.statements().await - before
}

#[tokio::test]
async fn room_lists_and_pages_cost_a_constant_number_of_statements() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let mut rooms = Vec::new();
    for i in 0..200 {
        let r = app
            .room(&alice, &format!("Room {i}"), &[&bob, &carol])
            .await;
        if i % 2 == 0 {
            app.send(&bob, &r, "ping").await;
        }
        rooms.push(r);
    }
    let small = statements_for(&app, &alice.token, ROOM_LIST, json!({ "n": 5 })).await;
    let large = statements_for(&app, &alice.token, ROOM_LIST, json!({ "n": 100 })).await;
    assert!(
        small <= MAX_STATEMENTS && large <= MAX_STATEMENTS,
        "statements: 5 rooms {small}, 100 rooms {large}"
    );

    let busy = &rooms[0];
    for i in 0..60 {
        let from = [&alice, &bob, &carol][i % 3];
        app.send(from, busy, &format!("m{i}")).await;
    }
    let dave = app.user("dave").await;
    app.data(&alice.token, ADD, json!({ "r": busy, "u": dave.id }))
        .await;
    let small = statements_for(&app, &bob.token, ROOM_PAGE, json!({ "c": busy, "n": 5 })).await;
    let large = statements_for(&app, &bob.token, ROOM_PAGE, json!({ "c": busy, "n": 50 })).await;
    assert!(
        small <= MAX_STATEMENTS && large <= MAX_STATEMENTS,
        "statements: 5 messages {small}, 50 messages {large}"
    );
}
