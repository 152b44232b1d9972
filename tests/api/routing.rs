//! Routing across instances: each instance listens on Redis only to the conversations and users
//! its subscribers follow, starts following a conversation when one of them joins it elsewhere,
//! and lets every channel go when its subscribers leave. Checked from Redis's side (`PUBSUB`)
//! and from each instance's `/metrics`.
use std::collections::HashMap;

use serde_json::json;

use crate::helpers::*;

const EVENTS: &str =
    "subscription($c: ID) { messageEvents(conversationId: $c) { kind message { id body } } }";
const TYPING: &str = "subscription { typing { isTyping conversationId } }";

/// Two instances over one database and one Redis, the Redis URL, and the base channel name.
struct Cluster {
    a: TestApp,
    b: TestApp,
    redis: redis::aio::MultiplexedConnection,
    base: String,
    _own: Option<OwnRedis>,
}

async fn cluster() -> Cluster {
    let (redis_url, own) = redis_for_test();
    let mut config = test_config().await;
    config.redis_url = Some(redis_url.clone());
    let base = config.redis_channel.clone();
    let a = spawn_app_with(config.clone()).await;
    let b = spawn_app_with(config).await;
    let redis = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    Cluster {
        a,
        b,
        redis,
        base,
        _own: own,
    }
}

impl Cluster {
    fn conversation_channel(&self, conversation: &str) -> String {
        format!("{}:c:{}", self.base, number(conversation))
    }

    fn user_channel(&self, user: &TestUser) -> String {
        format!("{}:u:{}", self.base, number(&user.id))
    }

    /// How many connections (one per instance at most) listen on each channel.
    async fn listeners(&self, channels: &[&str]) -> HashMap<String, i64> {
        redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channels)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    /// The channels of this test's deployment that some instance listens on, sorted.
    async fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(format!("{}*", self.base))
            .query_async(&mut self.redis.clone())
            .await
            .unwrap();
        channels.sort();
        channels
    }

    /// Polls Redis's channel list (nothing announces a change to it) until `done` holds of it, or
    /// fails after [`WAIT`].
    async fn until_channels(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let channels = self.channels().await;
            if done(&channels) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: channels are {channels:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Bob on instance `a`, following all his conversations' messages (`m`) and typing (`t`), both
/// live (probed through a direct conversation with alice, made on `b`).
async fn listening_on_a(cluster: &Cluster, alice: &TestUser, bob: &TestUser) -> WsClient {
    let (a, b) = (&cluster.a, &cluster.b);
    let with_alice = b.direct(alice, bob).await;
    let mut bob_ws = a.ws(Some(&bob.token)).await;
    bob_ws.subscribe("m", EVENTS, json!({})).await;
    bob_ws.subscribe("t", TYPING, json!({})).await;
    bob_ws
        .until_live(&["m"], 1, async |_| {
            b.probe_message(alice, &with_alice).await
        })
        .await;
    bob_ws
        .until_live(&["t"], 2, async |n| {
            b.probe_typing(alice, &with_alice, n).await
        })
        .await;
    bob_ws
}

#[tokio::test]
async fn an_instance_receives_only_the_conversations_its_subscribers_follow() {
    let cluster = cluster().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let alice = b.user("alice").await;
    let bob = b.user("bob").await;
    let carol = b.user("carol").await;
    let dave = b.user("dave").await;
    let followed_on_a = b.direct(&alice, &bob).await;
    let followed_on_b = b.direct(&carol, &dave).await;
    let mut bob_ws = a.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe("m", EVENTS, json!({ "c": followed_on_a }))
        .await;
    bob_ws
        .until_live(&["m"], 1, async |_| {
            b.probe_message(&alice, &followed_on_a).await
        })
        .await;
    let mut dave_ws = b.ws(Some(&dave.token)).await;
    dave_ws
        .subscribe("m", EVENTS, json!({ "c": followed_on_b }))
        .await;
    dave_ws
        .until_live(&["m"], 1, async |_| {
            b.probe_message(&carol, &followed_on_b).await
        })
        .await;
    // Each conversation's channel has one listener: the instance of its subscriber.
    let on_a = cluster.conversation_channel(&followed_on_a);
    let on_b = cluster.conversation_channel(&followed_on_b);
    let listeners = cluster.listeners(&[&on_a, &on_b]).await;
    assert_eq!(listeners[&on_a], 1, "{listeners:?}");
    assert_eq!(listeners[&on_b], 1, "{listeners:?}");

    let received = "palaver_bus_events_received_total";
    let before = a.metric(received).await;
    for i in 0..20 {
        b.send(&carol, &followed_on_b, &format!("elsewhere {i}"))
            .await;
    }
    for i in 0..20 {
        let event = dave_ws.next_data("m").await;
        assert_eq!(
            event["messageEvents"]["message"]["body"],
            format!("elsewhere {i}")
        );
    }
    b.send(&alice, &followed_on_a, "here").await;
    bob_ws.expect_next_event("m", "\"here\"").await;
    // Of the 21 sends (and their notifications, for users nobody follows on a), a received the
    // one its subscriber follows.
    assert_eq!(a.metric(received).await - before, 1);
}

#[tokio::test]
async fn no_channel_is_left_once_the_subscribers_disconnect() {
    let cluster = cluster().await;
    let (a, b) = (&cluster.a, &cluster.b);
    let alice = b.user("alice").await;
    let bob = b.user("bob").await;
    let conversation = b.direct(&alice, &bob).await;
    let mut bob_ws = a.ws(Some(&bob.token)).await;
    bob_ws.subscribe("all", EVENTS, json!({})).await;
    bob_ws
        .subscribe("one", EVENTS, json!({ "c": conversation }))
        .await;
    bob_ws.subscribe("t", TYPING, json!({})).await;
    bob_ws
        .until_live(&["all", "one"], 1, async |_| {
            b.probe_message(&alice, &conversation).await
        })
        .await;
    bob_ws
        .until_live(&["t"], 2, async |n| {
            b.probe_typing(&alice, &conversation, n).await
        })
        .await;
    // Subscribed after the probes, which each notify bob.
    bob_ws
        .subscribe("n", "subscription { notifications { kind } }", json!({}))
        .await;
    let mut expected = vec![
        cluster.base.clone(),
        cluster.conversation_channel(&conversation),
        cluster.user_channel(&bob),
    ];
    expected.sort();
    cluster
        .until_channels("while bob listens", |channels| channels == expected)
        .await;

    drop(bob_ws);
    let base = cluster.base.clone();
    cluster
        .until_channels("after bob left", |channels| channels == [base.clone()])
        .await;
}

#[tokio::test]
async fn a_member_added_on_another_instance_hears_the_room_live() {
    let cluster = cluster().await;
    let b = &cluster.b;
    let alice = b.user("alice").await;
    let bob = b.user("bob").await;
    let carol = b.user("carol").await;
    let room = b.room(&alice, "Ops", &[&carol]).await;
    let mut bob_ws = listening_on_a(&cluster, &alice, &bob).await;
    let room_channel = cluster.conversation_channel(&room);
    assert!(!cluster.channels().await.contains(&room_channel));

    b.data(
        &alice.token,
        "mutation($r: ID!, $u: ID!) { addMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;
    bob_ws.expect_next_event("m", "added").await;
    // Instance a follows the room now (asked of Redis: nothing announces it).
    cluster
        .until_channels("after bob joined", |channels| {
            channels.contains(&room_channel)
        })
        .await;
    b.send(&carol, &room, "welcome").await;
    bob_ws.expect_next_event("m", "\"welcome\"").await;
    typing_reaches(b, &carol, &room, &mut bob_ws).await;
}

#[tokio::test]
async fn a_first_direct_message_sent_on_another_instance_opens_a_followed_conversation() {
    let cluster = cluster().await;
    let b = &cluster.b;
    let alice = b.user("alice").await;
    let bob = b.user("bob").await;
    let carol = b.user("carol").await;
    let mut bob_ws = listening_on_a(&cluster, &alice, &bob).await;

    // Carol writes to bob for the first time, through b.
    let opened = b.direct(&carol, &bob).await;
    bob_ws.expect_next_event("m", "\"hello\"").await;
    let channel = cluster.conversation_channel(&opened);
    cluster
        .until_channels("after carol wrote", |channels| channels.contains(&channel))
        .await;
    typing_reaches(b, &carol, &opened, &mut bob_ws).await;
}

#[tokio::test]
async fn after_redis_comes_back_an_instance_follows_again_what_its_subscribers_need() {
    let mut own = OwnRedis::start_or_fail();
    let mut config = test_config().await;
    config.redis_url = Some(own.url());
    let base = config.redis_channel.clone();
    let app = spawn_app_with(config).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_ws = app.ws(Some(&bob.token)).await;
    bob_ws
        .subscribe(
            "t",
            "subscription($c: ID) { typing(conversationId: $c) { isTyping } }",
            json!({ "c": conversation }),
        )
        .await;
    bob_ws
        .until_live(&["t"], 2, async |n| {
            app.probe_typing(&alice, &conversation, n).await
        })
        .await;

    // A new Redis knows no subscriptions: the instance subscribes again by itself to the
    // broadcast channel and to what bob's subscription needs (asked of the new Redis: nothing
    // announces it).
    own.restart();
    let redis = redis::Client::open(own.url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{base}:c:{}", number(&conversation));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(format!("{base}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if channels.contains(&channel) && channels.contains(&base) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "channels after the restart: {channels:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(bob_ws);
}

#[tokio::test]
async fn a_join_announced_while_redis_was_away_is_followed_once_it_is_back() {
    let mut own = OwnRedis::start_or_fail();
    let mut config = test_config().await;
    config.redis_url = Some(own.url());
    let a = spawn_app_with(config.clone()).await;
    let b = spawn_app_with(config).await;
    let alice = b.user("alice").await;
    let bob = b.user("bob").await;
    let carol = b.user("carol").await;
    let room = b.room(&alice, "Ops", &[&carol]).await;
    let with_alice = b.direct(&alice, &bob).await;
    let mut bob_ws = a.ws(Some(&bob.token)).await;
    bob_ws.subscribe("t", TYPING, json!({})).await;
    bob_ws
        .until_live(&["t"], 2, async |n| {
            b.probe_typing(&alice, &with_alice, n).await
        })
        .await;

    // Bob joins while Redis is down: the announcement that would make a follow the room is
    // lost, on every instance.
    own.stop();
    b.data(
        &alice.token,
        "mutation($r: ID!, $u: ID!) { addMember(roomId: $r, userId: $u) { id } }",
        json!({ "r": room, "u": bob.id }),
    )
    .await;
    own.restart();

    // Typing is carried by the room's channel alone, never read back from the database: it
    // reaches bob only once a follows the room again (bounded: the probes would go on forever).
    tokio::time::timeout(
        WAIT * 3,
        bob_ws.until_live(&["t"], 2, async |n| b.probe_typing(&carol, &room, n).await),
    )
    .await
    .expect("a follows the room bob joined while Redis was away");
    typing_reaches(&b, &carol, &room, &mut bob_ws).await;
}

/// `typist` starts typing in `conversation` through `via`, and `ws` (subscribed as "t" to typing
/// on another instance) hears it. Typing is never read back from the database, so only the
/// conversation's Redis channel can carry it there.
async fn typing_reaches(via: &TestApp, typist: &TestUser, conversation: &str, ws: &mut WsClient) {
    via.data(
        &typist.token,
        "mutation($c: ID!) { setTyping(conversationId: $c, isTyping: true) }",
        json!({ "c": conversation }),
    )
    .await;
    let typing = ws.expect_next_event("t", "true").await;
    assert_eq!(typing["typing"]["conversationId"], conversation);
}
