//! The single writer behind sends: group commit.
//!
//! A send is a handful of small statements and one commit. Run one transaction per send and, on
//! SQLite, every sender queues for the one write lock (sleeping in the busy handler), and every
//! commit writes the same hot pages (the conversation, the indexes' tails) to the WAL again. Here
//! sends are queued to one task, which runs whatever has queued up, up to [`MAX_BATCH`], in one
//! transaction: each job in its own savepoint (a failing job undoes only itself), one commit for
//! all, then the jobs' events are published in commit order and the callers answered. A job alone
//! in its batch, the usual case under light load, runs without a savepoint (two statements fewer);
//! if it fails, the batch is rolled back.
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

/// What a job leaves for after the batch: the events to publish and how to answer its caller.
/// Every caller is answered only once the batch has ended, failed jobs' callers too: a caller
/// that looks again at what it lost to (a retry to the send that beat it in the same batch) then
/// finds it committed.
struct Done {
    events: Vec<Envelope>,
    answer: Box<dyn FnOnce(AppResult<()>) + Send>,
    failed: bool,
}

impl Done {
    /// A job whose writes stand: `value` goes to its caller if the batch commits.
    fn wrote<T: Send + 'static>(
        reply: oneshot::Sender<AppResult<T>>,
        value: T,
        events: Vec<Envelope>,
    ) -> Self {
        Self {
            events,
            answer: Box::new(move |committed| {
                let _ = reply.send(committed.map(|()| value));
            }),
            failed: false,
        }
    }

    /// A job that failed and whose writes are undone: its caller gets `err`.
    fn failed<T: Send + 'static>(reply: oneshot::Sender<AppResult<T>>, err: AppError) -> Self {
        Self {
            events: Vec::new(),
            answer: Box::new(move |_| {
                let _ = reply.send(Err(err));
            }),
            failed: true,
        }
    }
}

/// A queued job. Its flag says whether it runs alone in its batch: then it needs no savepoint of
/// its own, and the batch is rolled back if it fails.
type Job = Box<dyn for<'t> FnOnce(&'t DatabaseTransaction, bool) -> TxnFuture<'t, Done> + Send>;

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
        let job: Job = Box::new(move |txn, alone| {
            Box::pin(async move {
                if alone {
                    return match work(txn).await {
                        Ok((value, events)) => Done::wrote(reply, value, events),
                        Err(err) => Done::failed(reply, err),
                    };
                }
                let savepoint = match txn.begin().await {
                    Ok(savepoint) => savepoint,
                    Err(err) => return Done::failed(reply, err.into()),
                };
                match work(&savepoint).await {
                    Ok((value, events)) => match savepoint.commit().await {
                        Ok(()) => Done::wrote(reply, value, events),
                        Err(err) => Done::failed(reply, err.into()),
                    },
                    Err(err) => {
                        if let Err(rollback) = savepoint.rollback().await {
                            tracing::error!(error = %rollback, "rolling back a savepoint failed");
                        }
                        Done::failed(reply, err)
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
        let alone = batch.len() == 1;
        let mut done = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            done.push(job(&txn, alone).await);
        }
        let outcome = if alone && done[0].failed {
            // The one job failed part-way, without a savepoint: none of its writes may stay.
            txn.rollback().await
        } else {
            txn.commit().await
        };
        match outcome {
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
                tracing::error!(error = %err, jobs = done.len(), "a write batch failed to end");
                for finished in done {
                    (finished.answer)(Err(AppError::Internal(format!(
                        "the write batch failed to commit: {err}"
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use entity::setting;
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};

    use super::*;

    async fn writer() -> (DatabaseConnection, Writer) {
        let dir = std::env::temp_dir().join(format!(
            "palaver-writer-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let url = format!("sqlite://{}/w.db?mode=rwc", dir.display());
        let db = db::connect(&url).await.expect("database");
        let bus = EventBus::start(None, "test").await.expect("bus");
        (db.clone(), Writer::start(db, bus))
    }

    /// Writes a setting, then fails if `fail` is set: what it wrote must not survive.
    async fn put(writer: &Writer, key: &str, fail: bool) -> AppResult<()> {
        let key = key.to_owned();
        writer
            .write(move |txn| {
                Box::pin(async move {
                    setting::ActiveModel {
                        key: Set(key),
                        value: Set("v".into()),
                    }
                    .insert(txn)
                    .await?;
                    if fail {
                        return Err(AppError::Internal("failed on purpose".into()));
                    }
                    Ok(((), Vec::new()))
                })
            })
            .await
    }

    async fn stored(db: &DatabaseConnection, key: &str) -> bool {
        setting::Entity::find_by_id(key.to_owned())
            .one(db)
            .await
            .expect("read")
            .is_some()
    }

    #[tokio::test]
    async fn a_job_failing_alone_leaves_nothing() {
        let (db, writer) = writer().await;
        assert!(put(&writer, "lone", true).await.is_err());
        assert!(!stored(&db, "lone").await);
        put(&writer, "after", false)
            .await
            .expect("the writer goes on");
        assert!(stored(&db, "after").await);
    }

    #[tokio::test]
    async fn a_job_failing_in_a_batch_undoes_only_itself() {
        let (db, writer) = writer().await;
        // Queued together, so that the writer takes them as one batch.
        let (a, b, c) = tokio::join!(
            put(&writer, "a", false),
            put(&writer, "b", true),
            put(&writer, "c", false)
        );
        assert!(a.is_ok() && b.is_err() && c.is_ok());
        assert!(stored(&db, "a").await && stored(&db, "c").await);
        assert!(!stored(&db, "b").await);
    }
}
