//! Where the domain's data lives: one interface over SQLite and PostgreSQL.
//!
//! The domain (`chat`) calls the methods here and never writes SQL of its own. Statements that
//! read the same on both backends are written once, with sea-orm; what differs between the two
//! (SQLite's single batching writer, PostgreSQL's advisory locks, transaction ids and row tricks)
//! lives in the backend's own module, named and commented.
pub mod audit;
pub mod blocks;
pub mod changes;
pub mod conversations;
pub mod messages;
pub mod notifications;
pub mod pagination;
pub mod postgres;
pub mod presence;
pub mod reactions;
pub mod rooms;
pub mod send_queue;
pub mod send_row;
pub mod sqlite;
pub mod threads;
pub mod users;
pub mod writer;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    Select, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value,
};
use serde::de::DeserializeOwned;

pub use writer::{Made, TxnFuture, Writer};

use crate::error::AppResult;

/// An open write transaction, as [`Store::write`] hands it to its work.
pub type Txn = DatabaseTransaction;

/// Where a query runs: the store's pool of readers, or inside an open write transaction (which
/// sees its own writes). Every query in the store takes one, so a rule can ask the same question
/// before a write and inside it.
pub trait Reads: Sync {
    type Conn: ConnectionTrait;
    fn conn(&self) -> &Self::Conn;
}

impl Reads for Store {
    type Conn = DatabaseConnection;
    fn conn(&self) -> &DatabaseConnection {
        &self.db
    }
}

/// A bare connection reads like the store: for callers that hold the pool alone (loaders over
/// the store's readers, the `admin` command).
impl Reads for DatabaseConnection {
    type Conn = DatabaseConnection;
    fn conn(&self) -> &DatabaseConnection {
        self
    }
}

impl Reads for DatabaseTransaction {
    type Conn = DatabaseTransaction;
    fn conn(&self) -> &DatabaseTransaction {
        self
    }
}

/// Runs `op` in a savepoint of `txn`: kept when `op` answers `true` beside its value, rolled back
/// when it answers `false` or fails (the transaction itself goes on either way).
pub async fn in_savepoint<T, F>(txn: &Txn, op: F) -> Made<T>
where
    F: for<'s> FnOnce(&'s Txn) -> TxnFuture<'s, Made<(T, bool)>>,
{
    let savepoint = txn.begin().await?;
    match op(&savepoint).await {
        Ok(((value, keep), events)) => {
            if keep {
                savepoint.commit().await?;
            } else {
                savepoint.rollback().await?;
            }
            Ok((value, events))
        }
        Err(err) => {
            savepoint.rollback().await?;
            Err(err)
        }
    }
}

/// Every model `select` finds, in no particular order, in one hand-over on SQLite (see
/// [`sqlite::all_rows`]).
pub async fn all_rows<E>(
    db: &impl ConnectionTrait,
    select: Select<E>,
) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: DeserializeOwned,
{
    match db.get_database_backend() {
        DbBackend::Sqlite => sqlite::all_rows(db, select).await,
        _ => select.all(db).await,
    }
}

/// The integers `select` (raw SQL with `$n` placeholders) returns in its one column, `id`; on
/// SQLite in one hand-over (see [`sqlite::ids`]).
pub async fn ids(
    db: &impl ConnectionTrait,
    select: &str,
    values: Vec<Value>,
) -> AppResult<Vec<i64>> {
    let backend = db.get_database_backend();
    if backend == DbBackend::Sqlite {
        return sqlite::ids(db, select, values).await;
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, select, values))
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get::<i64>("", "id"))
        .collect::<Result<_, _>>()?)
}

/// Parses a comma-separated list of ids, as SQLite's `group_concat(id, ',')` and PostgreSQL's
/// `string_agg(id::text, ',')` make them (None when they aggregated no rows): one text value in
/// place of a row per id.
pub fn id_list(listed: Option<&str>) -> AppResult<Vec<i64>> {
    listed
        .unwrap_or_default()
        .split(',')
        .filter(|id| !id.is_empty())
        .map(|id| {
            id.parse().map_err(|_| {
                crate::error::AppError::Internal(format!("not an id in a listing: {id:?}"))
            })
        })
        .collect()
}

/// Begins a transaction that will write. On SQLite it takes the write lock up front (`BEGIN
/// IMMEDIATE`), so a writer waits on the busy timeout instead of failing to upgrade a read lock.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        db.begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
    } else {
        db.begin().await
    }
}

/// `count` numbered placeholders from `$first` on, comma-separated (`$2, $3, $4`), for an
/// `IN (…)` list in a raw statement.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement in the connection's dialect, written with `$1`-style placeholders (which SQLite
/// also understands).
pub fn sql(db: &impl ConnectionTrait, text: &str, values: Vec<Value>) -> Statement {
    let backend = db.get_database_backend();
    debug_assert!(matches!(backend, DbBackend::Sqlite | DbBackend::Postgres));
    Statement::from_sql_and_values(backend, text, values)
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database behind the domain: a pool to read from and the one writer every change goes
/// through. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    writer: Writer,
    backend: Backend,
    /// PostgreSQL's group commit for sends written whole by one call.
    sends: Option<send_queue::SendQueue>,
}

impl Store {
    pub fn new(db: DatabaseConnection, writer: Writer) -> Self {
        let backend = match db.get_database_backend() {
            DbBackend::Postgres => Backend::Postgres,
            _ => Backend::Sqlite,
        };
        let sends =
            (backend == Backend::Postgres).then(|| send_queue::SendQueue::start(db.clone()));
        Self {
            db,
            writer,
            backend,
            sends,
        }
    }

    /// The same store, reading on another connection (the delivery's own log reader, whose reads
    /// neither wait for the requests' pool nor count among their statements).
    pub fn reading_from(&self, db: DatabaseConnection) -> Self {
        Self {
            db,
            writer: self.writer.clone(),
            backend: self.backend,
            sends: self.sends.clone(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool reads run on.
    pub(crate) fn reader(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Where a send written whole by one call goes (PostgreSQL's group commit, see
    /// [`send_queue`]), and the bus its events go to once it has committed. None on SQLite, where
    /// every write joins the single writer's batch.
    pub(crate) fn send_queue(&self) -> Option<(&send_queue::SendQueue, &crate::events::EventBus)> {
        Some((self.sends.as_ref()?, self.writer.direct_bus()?))
    }

    /// Runs `work` in a write transaction: on SQLite in the single writer's next batch, on
    /// PostgreSQL in a transaction of its own. See [`Writer::write`].
    pub(crate) async fn write<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(&'t sea_orm::DatabaseTransaction) -> TxnFuture<'t, Made<T>> + Send + 'static,
    {
        self.writer.write(work).await
    }
}
