//! The single writer behind sends: group commit.
//!
//! A send is a handful of small statements and one commit. Run one transaction per send and, on
//! SQLite, every sender queues for the one write lock (sleeping in the busy handler), and every
//! commit writes the same hot pages (the conversation, the indexes' tails) to the WAL again. Here
//! sends are queued to one task, which runs whatever has queued up, up to [`MAX_BATCH`], in one
//! transaction and one commit, then publishes the jobs' events in commit order and answers the
//! callers. A job that fails must undo only itself: the batch is first run as it is, and only if a
//! job fails is it rolled back and run again with a savepoint around each job (see [`run`]).
//!
//! On PostgreSQL there is no batching: each job runs in its own transaction, as many at once as
//! the pool allows. There a statement is a network round trip, so one task running jobs one after
//! another was slower (460 sends/s against 575) than concurrent transactions, which PostgreSQL
//! handles well; and a batch spanning several conversations would take row locks in an order
//! that other transactions do not, inviting deadlocks.
use std::{future::Future, pin::Pin};

use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, TransactionTrait};
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

/// A queued job: its work, which may be attempted twice (see [`run`]), what the last attempt made,
/// and its caller, answered once the batch has ended. Failed jobs' callers too are answered only
/// then: a caller that looks again at what it lost to (a retry to the send that beat it in the
/// same batch) then finds it committed.
trait Job: Send {
    /// Runs the work in `txn`, inside a savepoint of its own if `savepoint`; true if it succeeded.
    fn attempt<'t>(
        &'t mut self,
        txn: &'t DatabaseTransaction,
        savepoint: bool,
    ) -> TxnFuture<'t, bool>;
    /// The events of a successful attempt, to publish once the batch has committed.
    fn take_events(&mut self) -> Vec<Envelope>;
    /// Answers the caller: the work's value if it succeeded and the batch committed, else why not.
    fn answer(self: Box<Self>, batch: Result<(), &str>);
}

type Made<T> = AppResult<(T, Vec<Envelope>)>;

struct Queued<T, F> {
    work: F,
    made: Option<Made<T>>,
    reply: oneshot::Sender<AppResult<T>>,
}

impl<T, F> Job for Queued<T, F>
where
    T: Send,
    F: for<'t> Fn(&'t DatabaseTransaction) -> TxnFuture<'t, Made<T>> + Send,
{
    fn attempt<'t>(
        &'t mut self,
        txn: &'t DatabaseTransaction,
        savepoint: bool,
    ) -> TxnFuture<'t, bool> {
        Box::pin(async move {
            let made = if savepoint {
                match txn.begin().await {
                    Ok(savepoint) => match (self.work)(&savepoint).await {
                        Ok(made) => savepoint.commit().await.map(|()| made).map_err(Into::into),
                        Err(err) => {
                            if let Err(rollback) = savepoint.rollback().await {
                                tracing::error!(error = %rollback, "rolling back a savepoint failed");
                            }
                            Err(err)
                        }
                    },
                    Err(err) => Err(err.into()),
                }
            } else {
                (self.work)(txn).await
            };
            let succeeded = made.is_ok();
            self.made = Some(made);
            succeeded
        })
    }

    fn take_events(&mut self) -> Vec<Envelope> {
        match &mut self.made {
            Some(Ok((_, events))) => std::mem::take(events),
            _ => Vec::new(),
        }
    }

    fn answer(self: Box<Self>, batch: Result<(), &str>) {
        let answer = match (self.made, batch) {
            (Some(Err(err)), _) => Err(err),
            (_, Err(err)) => Err(AppError::Internal(format!(
                "the write batch failed to commit: {err}"
            ))),
            (Some(Ok((value, _))), Ok(())) => Ok(value),
            (None, Ok(())) => Err(AppError::Internal("the job was never run".into())),
        };
        let _ = self.reply.send(answer);
    }
}

/// Handle to the writer. Cheap to clone.
#[derive(Clone)]
pub struct Writer(Mode);

#[derive(Clone)]
enum Mode {
    /// SQLite: jobs go to the one writer task.
    Batched(mpsc::Sender<Box<dyn Job>>),
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
    /// `work` rolls back its own writes only. `work` may be run twice (its first attempt undone),
    /// so whatever it does outside the transaction must be safe to repeat.
    pub async fn write<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t DatabaseTransaction) -> TxnFuture<'t, Made<T>> + Send + 'static,
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
        let job = Box::new(Queued {
            work,
            made: None,
            reply,
        });
        jobs.send(job)
            .await
            .map_err(|_| AppError::Internal("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| AppError::Internal("the writer dropped a job".into()))?
    }
}

/// Takes whatever has queued up (up to [`MAX_BATCH`] jobs) as one batch. The batch is first run
/// with no savepoints: when every job succeeds, the usual case, that saves two statements per
/// job (each a hand-over to SQLite's thread and back). If one fails, everything the batch wrote
/// is rolled back, and the batch is run again with each job in a savepoint of its own, so that
/// the failure undoes only itself. A job alone in its batch is answered with its failure at once.
async fn run(db: DatabaseConnection, bus: EventBus, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = match attempt_whole(&db, &mut batch).await {
            Ok(false) if batch.len() > 1 => attempt_each(&db, &mut batch).await,
            // A lone job that failed is answered with its own error; nothing of it stands.
            Ok(_) => Ok(()),
            Err(err) => Err(err),
        };
        match outcome {
            Ok(()) => {
                for job in &mut batch {
                    for envelope in job.take_events() {
                        bus.publish(envelope).await;
                    }
                }
                for job in batch.drain(..) {
                    job.answer(Ok(()));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, jobs = batch.len(), "a write batch failed");
                let err = err.to_string();
                for job in batch.drain(..) {
                    job.answer(Err(&err));
                }
            }
        }
    }
}

/// The batch in one transaction with no savepoints. False if a job failed: then the whole
/// transaction has been rolled back.
async fn attempt_whole(db: &DatabaseConnection, batch: &mut [Box<dyn Job>]) -> Result<bool, DbErr> {
    let txn = db::begin_write(db).await?;
    for job in batch.iter_mut() {
        if !job.attempt(&txn, false).await {
            txn.rollback().await?;
            return Ok(false);
        }
    }
    txn.commit().await.map(|()| true)
}

/// The batch in one transaction, each job in a savepoint of its own, so that a failing job
/// undoes only itself.
async fn attempt_each(db: &DatabaseConnection, batch: &mut [Box<dyn Job>]) -> Result<(), DbErr> {
    let txn = db::begin_write(db).await?;
    for job in batch.iter_mut() {
        job.attempt(&txn, true).await;
    }
    txn.commit().await
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
                let key = key.clone();
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
