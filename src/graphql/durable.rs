//! What every resumable subscription does: listen to the bus, replay from the database
//! what changed after the client's position, then follow the bus live, skipping what the replay
//! already delivered, and replaying again whenever the bus may have dropped something (the
//! subscriber fell behind, or Redis was away).
use std::{collections::BTreeSet, future::Future, sync::Arc};

use futures_util::Stream;

use crate::{
    error::AppResult,
    events::{Envelope, Event, Lagged, Receiver},
};

/// The first and the longest wait before reading again after a replay failed.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// How many rows one replay query reads.
pub const REPLAY_BATCH: u64 = 500;

/// Most replayed positions remembered for de-duplication: more than a subscriber's live buffer
/// holds (`events::LOCAL_CAPACITY`), so every live copy of a replayed event still finds its entry.
const MAX_REMEMBERED: usize = 2 * crate::events::LOCAL_CAPACITY;

/// A resumable stream. `since` is the client's position (None: live from now, with `start` as
/// the position to catch up from after a lapse). `replay(after, limit)` returns up to `limit`
/// items after a position, oldest first; `pick` keeps the bus events this subscriber wants.
/// `ordered`: the live feed arrives in position order (see `delivery`), so a live event at or
/// before the last position delivered is one the replay already delivered. `before`: positions
/// the live feed may still carry that precede the subscription, not to be delivered.
#[allow(clippy::too_many_arguments)]
pub fn durable<P, T, R, Fut, F>(
    mut live: Receiver,
    since: Option<P>,
    start: P,
    ordered: bool,
    before: BTreeSet<P>,
    replay: R,
    pick: F,
) -> impl Stream<Item = T>
where
    P: Ord + Copy + Send + 'static,
    T: Send + 'static,
    R: Fn(P, u64) -> Fut + Send + 'static,
    Fut: Future<Output = AppResult<Vec<(P, T)>>> + Send,
    F: Fn(&Arc<Envelope>) -> Option<(P, T)> + Send + 'static,
{
    async_stream::stream! {
        // Positions a replay delivered that the live feed may still carry again: events published
        // after this subscription began listening, which are the newest positions a replay
        // reads. Live events do not arrive in position order (several publishers, several
        // instances), so an entry goes only when its live copy arrives, or when the set holds
        // more than the live feed could ever have buffered (then its smallest, oldest entry).
        let mut replayed: BTreeSet<P> = before;
        let mut last = since.unwrap_or(start);
        let mut replay_from = since;
        let mut retry = RETRY_FIRST;
        loop {
            if let Some(mut after) = replay_from.take() {
                loop {
                    // Boxed, so that the database query's future is allocated only while it
                    // runs: held inline, it would make every idle subscription's state as big as
                    // that future, which is several KiB.
                    let batch = match Box::pin(replay(after, REPLAY_BATCH)).await {
                        Ok(batch) => {
                            retry = RETRY_FIRST;
                            batch
                        }
                        Err(err) => {
                            // Ending here would look like a finished subscription to the client,
                            // which would then miss what follows without knowing: the stream
                            // stays open and reads again, less and less often, until the
                            // database answers.
                            tracing::error!(error = %err, retry_in_ms = retry.as_millis() as u64, "replay failed; retrying");
                            tokio::time::sleep(retry).await;
                            retry = (retry * 2).min(RETRY_MAX);
                            continue;
                        }
                    };
                    let full = batch.len() as u64 == REPLAY_BATCH;
                    for (position, item) in batch {
                        after = after.max(position);
                        last = last.max(position);
                        if replayed.insert(position) {
                            if replayed.len() > MAX_REMEMBERED {
                                replayed.pop_first();
                            }
                            yield item;
                        }
                    }
                    if !full {
                        break;
                    }
                }
            }
            match live.recv().await {
                Ok(envelope) => {
                    if let Event::Resync = envelope.event {
                        replay_from = Some(last);
                        continue;
                    }
                    if let Some((position, item)) = pick(&envelope)
                        && !replayed.remove(&position)
                        && !(ordered && position <= last)
                    {
                        last = last.max(position);
                        yield item;
                    }
                }
                Err(Lagged) => replay_from = Some(last),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::events::{EventBus, Topic};

    fn typing(position: i64) -> Envelope {
        Envelope::new(
            vec![1],
            Event::Typing {
                conversation_id: position,
                user_id: 2,
                is_typing: true,
            },
        )
    }

    /// What a subscription delivers when the replay reads positions 1 to 3 while the live feed
    /// carries `live` (in that order), then its first four items.
    async fn delivered(live: [i64; 3]) -> Vec<i64> {
        let bus = EventBus::start(None, "test").await.unwrap();
        let receiver = bus.subscribe(Topic::Typing, 1);
        for position in live {
            bus.publish(typing(position)).await;
        }
        let stream = durable(
            receiver,
            Some(0),
            0,
            false,
            BTreeSet::new(),
            |after: i64, _limit| async move { Ok((after + 1..=3).map(|p| (p, p)).collect()) },
            |envelope| match envelope.event {
                Event::Typing {
                    conversation_id, ..
                } => Some((conversation_id, conversation_id)),
                _ => None,
            },
        );
        stream.take(4).collect().await
    }

    #[tokio::test]
    async fn what_the_replay_delivered_is_not_delivered_again_live() {
        // Published while the replay reads: the live feed carries 2 and 3 again.
        assert_eq!(delivered([2, 3, 4]).await, [1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replay_that_fails_is_read_again_and_the_stream_goes_on() {
        let bus = EventBus::start(None, "test").await.unwrap();
        let receiver = bus.subscribe(Topic::Typing, 1);
        bus.publish(typing(4)).await;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let stream = durable(
            receiver,
            Some(0),
            0,
            true,
            BTreeSet::new(),
            move |after: i64, _limit| {
                let call = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    // The database fails twice, then answers.
                    if call < 2 {
                        Err(crate::error::AppError::Internal("database away".into()))
                    } else {
                        Ok((after + 1..=3).map(|p| (p, p)).collect())
                    }
                }
            },
            |envelope| match envelope.event {
                Event::Typing {
                    conversation_id, ..
                } => Some((conversation_id, conversation_id)),
                _ => None,
            },
        );
        let items: Vec<i64> = stream.take(4).collect().await;
        assert_eq!(items, [1, 2, 3, 4]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn live_copies_arriving_out_of_order_are_still_skipped() {
        // Two publishers: the live feed carries 3 before 2, both already replayed.
        assert_eq!(delivered([3, 2, 4]).await, [1, 2, 3, 4]);
    }
}
