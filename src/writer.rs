//! The single writer behind sends: group commit.
//!
//! A send is a handful of small statements and one commit. Run one transaction per send and, on
//! SQLite, every sender queues for the one write lock (sleeping in the busy handler), and every
//! commit writes the same hot pages (the conversation, the indexes' tails) to the WAL again. Here
//! sends are queued to one task, which runs whatever has queued up, up to [`MAX_BATCH`], in one
//! transaction: each job in its own savepoint (a failing job undoes only itself), one commit for
//! all, then the jobs' events are published in commit order and the callers answered.
//!
//! On PostgreSQL there is no batching: each job runs in its own transaction, as many at once as
//! the pool allows. There a statement is a network round trip, so one task running jobs one after
//! another was slower (460 sends/s against 575) than concurrent transactions, which PostgreSQL
//! handles well; and a batch spanning several conversations would take row locks in an order
//! that other transactions do not, inviting deadlocks.
use std::{future::Future, pin::Pin};

use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait};
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

/// Handle to the writer. Cheap to clone.
#[derive(Clone)]
pub struct Writer(Mode);

#[derive(Clone)]
enum Mode {
    /// SQLite: jobs go to the one writer task.
    Batched(mpsc::Sender<Job>),
    /// PostgreSQL: each job is its own transaction.
    Direct(DatabaseConnection, EventBus),
}

impl Writer {
    /// Starts the writer over `db` (a task, on SQLite), publishing committed events on `bus`.
    pub fn start(db: DatabaseConnection, bus: EventBus) -> Self {
        if db.get_database_backend() == DbBackend::Postgres {
            return Self(Mode::Direct(db, bus));
        }
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, bus, queue));
        Self(Mode::Batched(jobs))
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
        let jobs = match &self.0 {
            Mode::Batched(jobs) => jobs,
            Mode::Direct(db, bus) => {
                let txn = db::begin_write(db).await?;
                // Dropping the transaction on error rolls it back.
                let (value, events) = work(&txn).await?;
                txn.commit().await?;
                for envelope in events {
                    bus.publish(envelope).await;
                }
                return Ok(value);
            }
        };
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
        jobs.send(job)
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
        let txn = match db::begin_write(&db).await {
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
