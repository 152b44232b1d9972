//! Database connection: SQLite tuned for a chat workload, or PostgreSQL; migrations run on connect.
use std::time::Duration;

use migration::MigratorTrait;
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbErr,
    sqlx::sqlite::{SqliteConnection, SqliteJournalMode, SqliteSynchronous},
};

/// How much of a SQLite file reads may map (address space, not memory: only the pages read become
/// resident, and the OS may drop them again).
const SQLITE_MMAP_BYTES: u64 = 1 << 30;

/// SQLite's page size, which we never change: `max_page_count` is counted in these.
const SQLITE_PAGE_BYTES: u64 = 4096;

/// How long a PostgreSQL connection may lie idle in the pool before it is pinged on its way out.
const PG_PING_AFTER_IDLE: Duration = Duration::from_secs(10);

/// Connects and runs pending migrations. A SQLite file's folder is created if missing.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    connect_capped(url, None).await
}

/// [`connect`], with the SQLite file capped at `max_bytes` (see `Config::sqlite_max_bytes`).
pub async fn connect_capped(
    url: &str,
    max_bytes: Option<u64>,
) -> anyhow::Result<DatabaseConnection> {
    if let Some(path) = sqlite_path(url)
        && let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = options(url, max_bytes);
    if url.starts_with("postgres") {
        options.max_connections(20);
    } else {
        options.max_connections(8);
    }
    let db = Database::connect(options).await?;
    migration::Migrator::up(&db, None).await?;
    Ok(db)
}

/// One SQLite connection of its own for the single writer (see `writer`), on a database that
/// [`connect`] has already migrated. The writer throws it away after any failure of the
/// database, so that nothing a failed transaction left on it (an open transaction, a savepoint)
/// can carry into the next batch.
pub async fn connect_writer(
    url: &str,
    max_bytes: Option<u64>,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = options(url, max_bytes);
    options.max_connections(1).min_connections(1);
    Database::connect(options).await
}

/// One connection of its own for the change-log reader (see `delivery`), on a database that
/// [`connect`] has already migrated: its reads follow the writes of the whole deployment, not any
/// one request, so they neither wait for the requests' pool nor count among their statements.
pub async fn connect_log_reader(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = options(url, None);
    options.max_connections(1).min_connections(1);
    Database::connect(options).await
}

fn options(url: &str, max_bytes: Option<u64>) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    if url.starts_with("postgres") {
        // sqlx pings a connection each time it leaves the pool, to find one the server hung up;
        // on PostgreSQL the ping is a network round trip, one more for every read and every
        // write transaction. A connection in steady use is pinged only after lying idle this
        // long, which is when a server's or a proxy's idle timeout may have closed it.
        options.test_before_acquire_if_idle_for(PG_PING_AFTER_IDLE);
    }
    options
        .sqlx_logging(false)
        .acquire_timeout(Duration::from_secs(10))
        .map_sqlx_sqlite_opts(move |opts| {
            // WAL lets readers run beside the writer; NORMAL sync is durable across application
            // crashes (an OS crash may lose the last transactions, never corrupt the file).
            let opts = opts
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // Reads map the file instead of copying each page in with a system call: with
                // SQLite's own page cache (2 MB a connection) far smaller than a large history,
                // reads would spend their time in `pread`. Mapped pages are the OS's page cache,
                // shared by every connection. The cost comes with writes: a reader that finds the
                // file changed by another connection drops its cache and unmaps the file,
                // faulting pages back in afterwards; see BENCHMARKS.md for both sides.
                .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string());
            match max_bytes {
                // A write that would grow the file past the cap fails with SQLITE_FULL, exactly
                // as on a full disk (a per-connection setting, so every connection gets it).
                Some(bytes) => opts.pragma(
                    "max_page_count",
                    (bytes / SQLITE_PAGE_BYTES).max(1).to_string(),
                ),
                None => opts,
            }
        })
        .map_sqlx_sqlite_pool_opts(|pool| {
            pool.after_connect(|conn, _| Box::pin(async move { stable_query_plans(conn).await }))
                // sqlx pings a connection each time it leaves the pool, to find connections whose
                // server hung up. A SQLite connection is a file held by a thread of ours and
                // cannot hang up, and the ping is a hand-over to that thread and back: one more
                // per statement outside a transaction, on every read and every send.
                .test_before_acquire(false)
        });
    options
}

/// Turns on SQLite's query planner stability guarantee for a new connection.
///
/// Without it SQLite treats some bound values as able to change a statement's plan (`LIMIT ?`,
/// which every sea-orm `.one()` carries, is one) and, on every execution that binds them, throws
/// the cached statement away and compiles it again, on every send and every lookup. Our plans
/// never depend on those values.
async fn stable_query_plans(conn: &mut SqliteConnection) -> Result<(), sea_orm::sqlx::Error> {
    use libsqlite3_sys::{SQLITE_DBCONFIG_ENABLE_QPSG, SQLITE_OK, sqlite3_db_config};
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle();
    // SAFETY: `raw` is the open connection's handle, held locked (no other thread uses it) for
    // the duration of the call; ENABLE_QPSG takes an int and an optional int* out-parameter.
    let rc = unsafe {
        sqlite3_db_config(
            raw.as_ptr(),
            SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if rc == SQLITE_OK {
        Ok(())
    } else {
        Err(sea_orm::sqlx::Error::Configuration(
            format!("sqlite3_db_config(ENABLE_QPSG) failed with code {rc}").into(),
        ))
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Counts every statement the connection runs, for `/metrics` and the statement-count tests.
pub fn count_statements(db: &mut DatabaseConnection, counter: metrics::Counter) {
    db.set_metric_callback(move |info| {
        counter.increment(1);
        // The SQL text only: bound values (token hashes, bodies) never reach the logs.
        tracing::trace!(target: "palaver::sql", micros = info.elapsed.as_micros() as u64, sql = %info.statement.sql);
    });
}

/// The value of a server setting, created with `init` by whichever instance asks first (all
/// instances then read the same value).
pub async fn setting_or_init(
    db: &DatabaseConnection,
    name: &str,
    init: impl FnOnce() -> String,
) -> Result<String, DbErr> {
    use entity::setting;
    use sea_orm::{EntityTrait, Set};
    if let Some(found) = setting::Entity::find_by_id(name).one(db).await? {
        return Ok(found.value);
    }
    setting::Entity::insert(setting::ActiveModel {
        key: Set(name.to_owned()),
        value: Set(init()),
    })
    .on_conflict_do_nothing_on([setting::Column::Key])
    .exec_without_returning(db)
    .await?;
    setting::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?
        .map(|s| s.value)
        .ok_or_else(|| DbErr::RecordNotFound(format!("setting {name}")))
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_path_is_taken_from_the_url() {
        assert_eq!(
            sqlite_path("sqlite://data/palaver.db?mode=rwc"),
            Some("data/palaver.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://localhost/test"), None);
    }
}
