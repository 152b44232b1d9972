//! Where the domain's data lives: one interface over SQLite and PostgreSQL.
//!
//! The domain (`chat`) calls the methods here and never writes SQL of its own. Statements that
//! read the same on both backends are written once, with sea-orm; what differs between the two
//! (SQLite's single batching writer, PostgreSQL's advisory locks, transaction ids and row tricks)
//! lives in the backend's own module, named and commented.
pub mod changes;
pub mod reactions;
pub mod reads;
pub mod writer;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};

pub use writer::{Made, TxnFuture, Writer};

use crate::error::AppResult;

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
}

impl Store {
    pub fn new(db: DatabaseConnection, writer: Writer) -> Self {
        let backend = match db.get_database_backend() {
            DbBackend::Postgres => Backend::Postgres,
            _ => Backend::Sqlite,
        };
        Self {
            db,
            writer,
            backend,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool reads run on.
    pub(crate) fn reader(&self) -> &DatabaseConnection {
        &self.db
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
