//! The single writer behind sends: group commit.
//!
//! A send is a handful of small statements and one commit. Run one transaction per send and, on
//! SQLite, every sender queues for the one write lock (sleeping in the busy handler), and every
//! commit writes the same hot pages (the conversation, the indexes' tails) to the WAL again. Here
//! sends are queued to one task, which runs whatever has queued up, up to [`MAX_BATCH`], in one
//! transaction: each job in its own savepoint (a failing job undoes only itself), one commit for
//! all, then the jobs' events are published in commit order and the callers answered.
//!
//! On PostgreSQL the batch takes the change-log lock first (see [`db::begin_change`]), as every
//! other transaction that logs changes does, so lock order is the same everywhere.
use std::{future::Future, pin::Pin};

use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use crate::{
    db,
    error::{AppError, AppResult},
    events::{Envelope, EventBus},
};

/// Most jobs committed together.
pub const MAX_BATCH: usize = 256;
/// Jobs that may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

/// A boxed future borrowing the batch's transaction.
pub type TxnFuture<'t, T> = Pin<Box<dyn Future<Output = T> + Send + 't>>;

/// What a job leaves for after the commit: the events to publish and how to answer its caller.
struct Done {
    events: Vec<Envelope>,
    answer: Box<dyn FnOnce(AppResult<()>) + Send>,
}

type Job = Box<dyn for<'t> FnOnce(&'t DatabaseTransaction) -> TxnFuture<'t, Option<Done>> + Send>;

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task over `db`, publishing committed events on `bus`.
    pub fn start(db: DatabaseConnection, bus: EventBus) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, bus, queue));
        Self { jobs }
    }

    /// Runs `work` inside the next batch's transaction. Its value is returned once the batch has
    /// committed and its events (returned beside the value) have been published; an error from
    /// `work` rolls back its own writes only.
    pub async fn write<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> TxnFuture<'t, AppResult<(T, Vec<Envelope>)>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel::<AppResult<T>>();
        let job: Job = Box::new(move |txn| {
            Box::pin(async move {
                let savepoint = match txn.begin().await {
                    Ok(savepoint) => savepoint,
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                        return None;
                    }
                };
                match work(&savepoint).await {
                    Ok((value, events)) => match savepoint.commit().await {
                        Ok(()) => Some(Done {
                            events,
                            answer: Box::new(move |committed| {
                                let _ = reply.send(committed.map(|()| value));
                            }),
                        }),
                        Err(err) => {
                            let _ = reply.send(Err(err.into()));
                            None
                        }
                    },
                    Err(err) => {
                        if let Err(rollback) = savepoint.rollback().await {
                            tracing::error!(error = %rollback, "rolling back a savepoint failed");
                        }
                        let _ = reply.send(Err(err));
                        None
                    }
                }
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| AppError::Internal("the writer has stopped".into()))?;
        answer.await.map_err(|_| {
            AppError::Internal("the writer dropped a job (its transaction could not start)".into())
        })?
    }
}

async fn run(db: DatabaseConnection, bus: EventBus, mut queue: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let txn = match db::begin_change(&db).await {
            Ok(txn) => txn,
            Err(err) => {
                // Dropping the jobs answers their callers with an internal error.
                tracing::error!(error = %err, jobs = batch.len(), "could not begin a write batch");
                batch.clear();
                continue;
            }
        };
        let mut done = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            if let Some(finished) = job(&txn).await {
                done.push(finished);
            }
        }
        match txn.commit().await {
            Ok(()) => {
                for finished in &mut done {
                    for envelope in std::mem::take(&mut finished.events) {
                        bus.publish(envelope).await;
                    }
                }
                for finished in done {
                    (finished.answer)(Ok(()));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, jobs = done.len(), "a write batch failed to commit");
                for finished in done {
                    (finished.answer)(Err(AppError::Internal(format!(
                        "the write batch failed to commit: {err}"
                    ))));
                }
            }
        }
    }
}
