//! PostgreSQL's group commit for sends written whole by one call (see
//! `messages::write_send`): sends queue here, each conversation's always to the same one of a few
//! workers, and a worker takes whatever has queued up for it (up to [`MAX_BATCH`]) and writes it
//! with one call of `palaver_send_batch`, one transaction and one commit. Since a conversation
//! belongs to one worker, two batches never hold the same conversation's lock, so a batch never
//! waits for another to commit, and a conversation's sends are written in the order they came. A lone send goes alone through `palaver_send`, as it would unqueued, so at low
//! rates nothing changes; under load a commit's WAL flush, its round trip and the statement's
//! overhead are shared by the batch.
//!
//! The promise to callers is the writer's: a send is answered with success only once the
//! transaction that wrote it has committed. A batch that fails as a whole (a duplicate client
//! message id, a deadlock with another transaction, the database going away) is run again one
//! send at a time, each its own transaction, so that a send fails only for its own reason.
use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use super::{
    changes::Sent,
    postgres::{self, Queued},
};
use crate::error::{AppError, AppResult};

/// Most sends written together.
pub const MAX_BATCH: usize = 64;
/// Batches written at once, each on a connection of the pool, each for its own conversations.
const WORKERS: usize = 4;
/// Sends that may wait before callers wait to enqueue.
const QUEUE: usize = 4096;

type Job = (Queued, oneshot::Sender<AppResult<Option<Sent>>>);

/// Handle to the queue. Cheap to clone; the workers stop when the last handle is dropped.
#[derive(Clone)]
pub struct SendQueue(Arc<[mpsc::Sender<Job>]>);

impl SendQueue {
    pub fn start(db: DatabaseConnection) -> Self {
        let workers: Vec<mpsc::Sender<Job>> = (0..WORKERS)
            .map(|_| {
                let (jobs, queue) = mpsc::channel(QUEUE);
                tokio::spawn(work(db.clone(), queue));
                jobs
            })
            .collect();
        Self(workers.into())
    }

    /// Writes `send` and answers once it has committed: None if the checks under the
    /// conversation's lock refused it (nothing was written).
    pub async fn send(&self, send: Queued) -> AppResult<Option<Sent>> {
        let worker = &self.0[send.conversation_id.unsigned_abs() as usize % self.0.len()];
        let (reply, answer) = oneshot::channel();
        worker
            .send((send, reply))
            .await
            .map_err(|_| AppError::Internal("the send queue has stopped".into()))?;
        answer
            .await
            .map_err(|_| AppError::Internal("the send queue dropped a send".into()))?
    }
}

async fn work(db: DatabaseConnection, mut queue: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() > 1 {
            let sends: Vec<&Queued> = batch.iter().map(|(send, _)| send).collect();
            match postgres::send_batch(&db, &sends).await {
                Ok(answers) => {
                    for ((_, reply), answer) in batch.drain(..).zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                    continue;
                }
                Err(err) => {
                    tracing::debug!(error = %err, sends = batch.len(), "a send batch failed; writing its sends alone");
                }
            }
        }
        for (send, reply) in batch.drain(..) {
            let answer = postgres::send(&db, send.row, send.at, send.collapsed.as_ref()).await;
            let _ = reply.send(answer);
        }
    }
}
