//! The shape every resumable subscription shares: listen to the bus, replay from the database
//! what changed after the client's position, then follow the bus live, skipping what the replay
//! already delivered, and replaying again whenever the bus may have dropped something (the
//! subscriber fell behind, or Redis was away).
use std::{collections::HashSet, future::Future, hash::Hash, sync::Arc};

use futures_util::Stream;

use crate::{
    error::AppResult,
    events::{Envelope, Event, Lagged, Receiver},
};

/// How many rows one replay query reads.
pub const REPLAY_BATCH: u64 = 500;

/// A resumable stream. `since` is the client's position (None: live from now, with `start` as
/// the position to catch up from after a lapse). `replay(after, limit)` returns up to `limit`
/// items after a position, oldest first; `pick` keeps the bus events this subscriber wants.
pub fn durable<P, T, R, Fut, F>(
    mut live: Receiver,
    since: Option<P>,
    start: P,
    replay: R,
    pick: F,
) -> impl Stream<Item = T>
where
    P: Ord + Copy + Hash + Send + 'static,
    T: Send + 'static,
    R: Fn(P, u64) -> Fut + Send + 'static,
    Fut: Future<Output = AppResult<Vec<(P, T)>>> + Send,
    F: Fn(&Arc<Envelope>) -> Option<(P, T)> + Send + 'static,
{
    async_stream::stream! {
        // Positions a replay delivered, which the live feed may carry again.
        let mut replayed: HashSet<P> = HashSet::new();
        let mut last = since.unwrap_or(start);
        let mut replay_from = since;
        loop {
            if let Some(mut after) = replay_from.take() {
                loop {
                    // Boxed, so that the database query's future is allocated only while it
                    // runs: held inline, it would make every idle subscription's state as big as
                    // that future (measured: a few KiB per idle connection).
                    let batch = match Box::pin(replay(after, REPLAY_BATCH)).await {
                        Ok(batch) => batch,
                        Err(err) => {
                            tracing::error!(error = %err, "replay failed; ending subscription");
                            return;
                        }
                    };
                    let full = batch.len() as u64 == REPLAY_BATCH;
                    for (position, item) in batch {
                        after = after.max(position);
                        last = last.max(position);
                        if replayed.insert(position) {
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
                        && !replayed.contains(&position)
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
