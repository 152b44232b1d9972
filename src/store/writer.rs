//! The single writer behind every write on SQLite: group commit.
//!
//! A send is a handful of small statements and one commit. Run one transaction per send and, on
//! SQLite, every sender queues for the one write lock (sleeping in the busy handler), and every
//! commit writes the same hot pages (the conversation, the indexes' tails) to the WAL again. Here
//! writes (sends, edits, deletes, read markers, notifications) are queued to one task, which runs
//! whatever has queued up, up to [`MAX_BATCH`], in one transaction and one commit, then publishes
//! the jobs' events in commit order and answers the callers.
//!
//! The promise to callers: **a job is answered with success only after the transaction that made
//! its writes has committed, and its events are published only then.** Two kinds of failure keep
//! it differently:
//! - A job refused by a rule (its own error, the database healthy) undoes only itself: the batch
//!   is rolled back and run again with a savepoint around each job (see [`run`]).
//! - A failure of the database itself (a statement, a savepoint, the commit or a rollback failing:
//!   a full disk, an I/O error) leaves the connection in a state we cannot know. SQLite may have
//!   rolled the whole transaction back on its own (it does for SQLITE_FULL and SQLITE_IOERR), or
//!   kept it open (a failed COMMIT can), and the driver's count of open transactions may no longer
//!   match: a later `BEGIN` would then become a savepoint inside a transaction that never
//!   commits, and its "commit" would only release the savepoint. So the connection is closed,
//!   which rolls back whatever it held, and every job of the batch is run again alone, each in its
//!   own transaction on a fresh connection, and answered by its own commit. While the cause lasts
//!   (a disk still full) those attempts fail and their callers are told so; once it is gone the
//!   next batch commits: the writer recovers by itself, with no restart.
//!
//! On PostgreSQL there is no batching: each job runs in its own transaction, as many at once as
//! the pool allows, and is answered by its own commit. There a statement is a network round trip,
//! so concurrent transactions beat one task running jobs in turn; and a batch spanning several
//! conversations would take row locks in an order that other transactions do not, inviting
//! deadlocks. A send that is one statement needs no transaction of the writer's: see
//! `send_queue`, which commits sends in groups without a `BEGIN` or `COMMIT` round trip.
use std::{future::Future, pin::Pin, sync::Arc};

use sea_orm::{DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::{AppError, AppResult},
    events::{Envelope, EventBus},
};

/// Most jobs committed together.
pub const MAX_BATCH: usize = 256;
/// Jobs that may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

/// A boxed future borrowing the batch's transaction.
pub type TxnFuture<'t, T> = Pin<Box<dyn Future<Output = T> + Send + 't>>;

/// Opens the writer's own SQLite connection: at start, and again after a failure of the
/// database has made the previous one untrustworthy.
pub type OpenConnection = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<DatabaseConnection, DbErr>> + Send>>
        + Send
        + Sync,
>;

/// What one attempt at a job came to.
enum Attempt {
    /// Its writes stand in the transaction (not yet committed).
    Done,
    /// A rule refused it; its writes are undone and the transaction is healthy.
    Refused,
    /// The database failed: the transaction's state is unknown.
    Failed(DbErr),
}

/// A queued job: its work, which may be attempted several times (see [`run`]), what the last
/// attempt made, and its caller, answered once the outcome is known. In a batch, failed jobs'
/// callers too are answered only when the batch has ended: a caller that looks again at what it
/// lost to (a retry to the send that beat it in the same batch) then finds it committed.
trait Job: Send {
    /// Runs the work in `txn`, inside a savepoint of its own if `savepoint`.
    fn attempt<'t>(
        &'t mut self,
        txn: &'t DatabaseTransaction,
        savepoint: bool,
    ) -> TxnFuture<'t, Attempt>;
    /// The events of a successful attempt, to publish once its transaction has committed.
    fn take_events(&mut self) -> Vec<Envelope>;
    /// Answers the caller: the work's value if it succeeded and `committed` holds, else why not.
    fn answer(self: Box<Self>, committed: Result<(), &str>);
}

pub type Made<T> = AppResult<(T, Vec<Envelope>)>;

struct Queued<T, F> {
    work: F,
    made: Option<Made<T>>,
    reply: oneshot::Sender<AppResult<T>>,
}

/// Whether an error from a job's work is the database failing (rather than a rule refusing).
fn database_failure(made: &Made<impl Sized>) -> Option<DbErr> {
    match made {
        Err(AppError::Database(err)) => Some(DbErr::Custom(err.to_string())),
        _ => None,
    }
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
    ) -> TxnFuture<'t, Attempt> {
        Box::pin(async move {
            if !savepoint {
                let made = (self.work)(txn).await;
                let attempt = match (&made, database_failure(&made)) {
                    (_, Some(err)) => Attempt::Failed(err),
                    (Ok(_), None) => Attempt::Done,
                    (Err(_), None) => Attempt::Refused,
                };
                self.made = Some(made);
                return attempt;
            }
            let inner = match txn.begin().await {
                Ok(inner) => inner,
                Err(err) => {
                    self.made = Some(Err(AppError::Internal(format!(
                        "the write was not saved: {err}"
                    ))));
                    return Attempt::Failed(err);
                }
            };
            let made = (self.work)(&inner).await;
            let attempt = if let Some(err) = database_failure(&made) {
                Attempt::Failed(err)
            } else if made.is_ok() {
                match inner.commit().await {
                    Ok(()) => Attempt::Done,
                    Err(err) => Attempt::Failed(err),
                }
            } else {
                match inner.rollback().await {
                    Ok(()) => Attempt::Refused,
                    Err(err) => Attempt::Failed(err),
                }
            };
            self.made = Some(made);
            attempt
        })
    }

    fn take_events(&mut self) -> Vec<Envelope> {
        match &mut self.made {
            Some(Ok((_, events))) => std::mem::take(events),
            _ => Vec::new(),
        }
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        let answer = match (self.made, committed) {
            (Some(Err(err)), _) => Err(err),
            (_, Err(err)) => Err(AppError::Internal(format!(
                "the write was not saved: {err}"
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
    /// Starts the writer, publishing committed events on `bus`. On PostgreSQL jobs run on `db`'s
    /// pool; on SQLite one task runs them on a connection of its own, opened with `open`.
    pub fn start(db: DatabaseConnection, bus: EventBus, open: OpenConnection) -> Self {
        if db.get_database_backend() == DbBackend::Postgres {
            return Self(Mode::Direct(db, bus));
        }
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(open, bus, queue));
        Self(Mode::Batched(jobs))
    }

    /// On PostgreSQL, the bus a write made outside the writer (one statement that is its own
    /// transaction, see `Store::send_queue`) publishes its events to once it has committed; None on
    /// SQLite, where every write goes through the writer.
    pub fn direct_bus(&self) -> Option<&EventBus> {
        match &self.0 {
            Mode::Direct(_, bus) => Some(bus),
            Mode::Batched(_) => None,
        }
    }

    /// Runs `work` inside a transaction. Its value is returned once that transaction has
    /// committed and its events (returned beside the value) have been published; an error from
    /// `work` rolls back its own writes only. `work` may be run more than once (earlier attempts
    /// undone), so whatever it does outside the transaction must be safe to repeat.
    pub async fn write<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t DatabaseTransaction) -> TxnFuture<'t, Made<T>> + Send + 'static,
    {
        let jobs = match &self.0 {
            Mode::Batched(jobs) => jobs,
            Mode::Direct(db, bus) => {
                let txn = super::begin_write(db).await?;
                // Dropping the transaction on error rolls it back. A failed commit is an error
                // too: nothing is published and the caller is not told "done".
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

/// The writer's connection, opened when first needed and closed after a failure of the database.
struct Connection {
    open: OpenConnection,
    current: Option<DatabaseConnection>,
}

impl Connection {
    async fn get(&mut self) -> Result<DatabaseConnection, DbErr> {
        if let Some(db) = &self.current {
            return Ok(db.clone());
        }
        let db = (self.open)().await?;
        self.current = Some(db.clone());
        Ok(db)
    }

    /// Closes the connection: SQLite rolls back whatever transaction it still held.
    async fn discard(&mut self) {
        if let Some(db) = self.current.take()
            && let Err(err) = db.close().await
        {
            tracing::warn!(error = %err, "closing the writer's connection failed");
        }
    }
}

/// Takes whatever has queued up (up to [`MAX_BATCH`] jobs) as one batch. The batch is first run
/// with no savepoints: when every job succeeds, the usual case, that saves two statements per
/// job (each a hand-over to SQLite's thread and back). If a rule refuses one, everything the batch
/// wrote is rolled back, and the batch is run again with each job in a savepoint of its own, so
/// that the refusal undoes only itself. If the database fails, see [`one_by_one`].
async fn run(open: OpenConnection, bus: EventBus, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut connection = Connection {
        open,
        current: None,
    };
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = match connection.get().await {
            Ok(db) => match attempt_whole(&db, &mut batch).await {
                Ok(false) if batch.len() > 1 => attempt_each(&db, &mut batch).await,
                // A lone refused job is answered with its own error; nothing of it stands.
                Ok(_) => Ok(()),
                Err(err) => Err(err),
            },
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
                tracing::error!(error = %err, jobs = batch.len(), "a write batch failed; trying its jobs one at a time");
                connection.discard().await;
                one_by_one(&mut connection, &bus, &mut batch).await;
            }
        }
    }
}

/// After the database failed under a batch: each job alone, in its own transaction, answered by
/// its own commit. A job whose attempt fails the database again is answered with that failure
/// and the connection is replaced before the next one, so no job inherits another's state.
async fn one_by_one(connection: &mut Connection, bus: &EventBus, batch: &mut Vec<Box<dyn Job>>) {
    for mut job in batch.drain(..) {
        let outcome = match connection.get().await {
            Ok(db) => attempt_alone(&db, job.as_mut()).await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(committed) => {
                if committed {
                    for envelope in job.take_events() {
                        bus.publish(envelope).await;
                    }
                }
                job.answer(Ok(()));
            }
            Err(err) => {
                connection.discard().await;
                job.answer(Err(&err.to_string()));
            }
        }
    }
}

/// One job in a transaction of its own: true if it committed, false if a rule refused it (and
/// its transaction was rolled back).
async fn attempt_alone(db: &DatabaseConnection, job: &mut dyn Job) -> Result<bool, DbErr> {
    let txn = super::begin_write(db).await?;
    match job.attempt(&txn, false).await {
        Attempt::Done => txn.commit().await.map(|()| true),
        Attempt::Refused => txn.rollback().await.map(|()| false),
        Attempt::Failed(err) => Err(err),
    }
}

/// The batch in one transaction with no savepoints. False if a rule refused a job: then the whole
/// transaction has been rolled back. An error means the database failed; the transaction is
/// dropped and the caller must not use the connection again.
async fn attempt_whole(db: &DatabaseConnection, batch: &mut [Box<dyn Job>]) -> Result<bool, DbErr> {
    let txn = super::begin_write(db).await?;
    for job in batch.iter_mut() {
        match job.attempt(&txn, false).await {
            Attempt::Done => {}
            Attempt::Refused => {
                txn.rollback().await?;
                return Ok(false);
            }
            Attempt::Failed(err) => return Err(err),
        }
    }
    txn.commit().await.map(|()| true)
}

/// The batch in one transaction, each job in a savepoint of its own, so that a refused job
/// undoes only itself.
async fn attempt_each(db: &DatabaseConnection, batch: &mut [Box<dyn Job>]) -> Result<(), DbErr> {
    let txn = super::begin_write(db).await?;
    for job in batch.iter_mut() {
        if let Attempt::Failed(err) = job.attempt(&txn, true).await {
            return Err(err);
        }
    }
    txn.commit().await
}

#[cfg(test)]
mod tests {
    use entity::setting;
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};

    use super::*;
    use crate::db;

    fn temp_url() -> String {
        let dir = std::env::temp_dir().join(format!(
            "palaver-writer-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        format!("sqlite://{}/w.db?mode=rwc", dir.display())
    }

    async fn writer() -> (DatabaseConnection, Writer) {
        let (db, writer, _) = writer_capped(None).await;
        (db, writer)
    }

    /// A writer whose connections cap the file at `max_bytes`; also returns the URL.
    async fn writer_capped(max_bytes: Option<u64>) -> (DatabaseConnection, Writer, String) {
        let url = temp_url();
        let db = db::connect(&url).await.expect("database");
        let bus = EventBus::start(None, "test").await.expect("bus");
        let open: OpenConnection = Arc::new({
            let url = url.clone();
            move || {
                let url = url.clone();
                Box::pin(async move { db::connect_writer(&url, max_bytes).await })
            }
        });
        (db.clone(), Writer::start(db, bus, open), url)
    }

    /// Writes a setting, then fails if `fail` is set: what it wrote must not survive.
    async fn put(writer: &Writer, key: &str, fail: bool) -> AppResult<()> {
        put_value(writer, key, "v", fail).await
    }

    async fn put_value(writer: &Writer, key: &str, value: &str, fail: bool) -> AppResult<()> {
        let key = key.to_owned();
        let value = value.to_owned();
        writer
            .write(move |txn| {
                let key = key.clone();
                let value = value.clone();
                Box::pin(async move {
                    setting::ActiveModel {
                        key: Set(key),
                        value: Set(value),
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

    #[tokio::test]
    async fn a_failing_commit_or_rollback_acknowledges_nothing_that_was_not_kept() {
        let (db, writer) = writer().await;
        // A deferred foreign key fails at COMMIT, and SQLite then keeps the transaction open:
        // what a later batch wrote on that connection would never be committed.
        for sql in [
            "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
            "CREATE TRIGGER poison AFTER INSERT ON settings WHEN NEW.value = 'poison' BEGIN INSERT INTO child VALUES (1); END",
            // Rolls the whole transaction back under the writer, as SQLite itself does for
            // SQLITE_FULL and SQLITE_IOERR; the writer's ROLLBACK then fails.
            "CREATE TRIGGER vanish BEFORE INSERT ON settings WHEN NEW.value = 'vanish' BEGIN SELECT RAISE(ROLLBACK, 'vanished'); END",
        ] {
            sea_orm::ConnectionTrait::execute_unprepared(&db, sql)
                .await
                .expect(sql);
        }
        let (a, poisoned, c, vanished, e) = tokio::join!(
            put(&writer, "a", false),
            put_value(&writer, "p", "poison", false),
            put(&writer, "c", false),
            put_value(&writer, "v", "vanish", false),
            put(&writer, "e", false),
        );
        assert!(poisoned.is_err() && vanished.is_err());
        assert!(!stored(&db, "p").await && !stored(&db, "v").await);
        // The others of the batch are kept and told so.
        for (key, result) in [("a", a), ("c", c), ("e", e)] {
            assert!(result.is_ok(), "{key}: {result:?}");
            assert!(stored(&db, key).await, "{key} acknowledged but not kept");
        }
        for i in 0..20 {
            let key = format!("later-{i}");
            put(&writer, &key, false).await.expect("the writer goes on");
            assert!(stored(&db, &key).await, "{key} acknowledged but not kept");
        }
    }

    #[tokio::test]
    async fn on_a_full_disk_only_kept_writes_are_acknowledged_and_the_writer_recovers() {
        const CAP: u64 = 4 << 20;
        let (db, writer, url) = writer_capped(Some(CAP)).await;
        // Another connection under the same cap fills the file as another program would fill
        // the disk, then leaves a few pages free.
        let ballast = db::connect_writer(&url, Some(CAP)).await.expect("ballast");
        let exec = |sql: String| {
            let ballast = ballast.clone();
            async move { sea_orm::ConnectionTrait::execute_unprepared(&ballast, &sql).await }
        };
        exec("CREATE TABLE ballast (b BLOB)".into())
            .await
            .expect("table");
        for size in [65536, 4096, 256] {
            while exec(format!("INSERT INTO ballast VALUES (zeroblob({size}))"))
                .await
                .is_ok()
            {}
        }
        exec("DELETE FROM ballast WHERE rowid IN (SELECT rowid FROM ballast WHERE length(b) = 4096 LIMIT 3)".into())
            .await
            .expect("a little room");

        let value = "x".repeat(2000);
        let mut outcomes = Vec::new();
        for round in 0..4 {
            let keys: Vec<String> = (0..16).map(|i| format!("k{round}-{i}")).collect();
            let results = futures_util::future::join_all(
                keys.iter().map(|k| put_value(&writer, k, &value, false)),
            )
            .await;
            outcomes.extend(keys.into_iter().zip(results));
        }
        assert!(
            outcomes.iter().any(|(_, r)| r.is_err()),
            "the cap refused nothing"
        );
        for (key, result) in &outcomes {
            assert_eq!(
                result.is_ok(),
                stored(&db, key).await,
                "{key}: answered {result:?}"
            );
        }

        // The space comes back: the same writer commits again, with no restart.
        exec("DROP TABLE ballast".into()).await.expect("room again");
        for i in 0..8 {
            let key = format!("after-{i}");
            put_value(&writer, &key, &value, false)
                .await
                .expect("the writer recovers");
            assert!(stored(&db, &key).await);
        }
    }
}
