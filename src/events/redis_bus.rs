//! The Redis bridge: events are PUBLISHed as JSON on one channel; a background task on every
//! instance SUBSCRIBEs to it and feeds the local hub, reconnecting by itself.
use std::{sync::Arc, time::Duration};

use super::{Envelope, hub::Hub};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;

/// How long a publish may wait for Redis.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

/// The publishing half of the bridge.
#[derive(Clone)]
pub struct RedisPublisher {
    conn: ConnectionManager,
    channel: Arc<str>,
}

impl RedisPublisher {
    /// Publishes one event.
    pub async fn publish(&self, envelope: &Envelope) -> anyhow::Result<()> {
        let payload = serde_json::to_string(envelope)?;
        let mut conn = self.conn.clone();
        // A send must not hang on an unreachable Redis: it has committed already, and subscribers
        // elsewhere catch up from the database once the bus is back.
        tokio::time::timeout(
            PUBLISH_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&*self.channel)
                .arg(payload)
                .query_async::<i64>(&mut conn),
        )
        .await??;
        Ok(())
    }
}

/// Connects to Redis and starts the subscriber task.
pub async fn start(url: &str, channel: &str, local: Arc<Hub>) -> anyhow::Result<RedisPublisher> {
    let client = redis::Client::open(url)?;
    let conn = ConnectionManager::new(client.clone()).await?;
    let channel: Arc<str> = Arc::from(channel);
    // Subscribe before returning, so that nothing published after start-up is missed.
    let pubsub = subscribe(&client, &channel).await?;
    tokio::spawn(forward(client, channel.clone(), pubsub, local));
    Ok(RedisPublisher { conn, channel })
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

async fn forward(
    client: redis::Client,
    channel: Arc<str>,
    mut pubsub: redis::aio::PubSub,
    local: Arc<Hub>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<Envelope>(&payload) {
                    Ok(envelope) => {
                        // Another instance's event: rebuilt through `Envelope::new`, so that
                        // its recipients are sorted however it was sent.
                        let envelope = Envelope::new(envelope.recipients, envelope.event);
                        local.publish(Arc::new(envelope));
                    }
                    Err(err) => tracing::warn!(error = %err, "undecodable event on redis"),
                }
            }
        }
        tracing::warn!("redis subscription lost; reconnecting");
        let mut delay = Duration::from_millis(100);
        pubsub = loop {
            tokio::time::sleep(delay).await;
            match subscribe(&client, &channel).await {
                Ok(p) => break p,
                Err(err) => {
                    tracing::warn!(error = %err, "redis reconnect failed");
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        };
        tracing::info!("redis subscription restored");
        // Whatever was published while we were away never reached us: let durable streams replay.
        local.publish(Arc::new(Envelope::new(Vec::new(), super::Event::Resync)));
    }
}
