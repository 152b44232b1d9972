//! The plans of statements whose cost must follow what they return, not the size of the tables:
//! the one place these tests look inside, at the statements the store sends, on the database the
//! other tests use.
use palaver::{events::Position, store::messages::log_read_statement};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};

/// Rows in the log and in `messages`: enough that scanning them would be the planner's mistake.
const ROWS: i64 = 20_000;

async fn fresh_database() -> DatabaseConnection {
    palaver::db::connect(&crate::helpers::fresh_database_url().await)
        .await
        .expect("migrate")
}

/// One conversation with `ROWS` messages, each with its change-log row. Statistics are gathered
/// when the first tenth is in, as on a live server whose tables grew since the last `ANALYZE`.
async fn seed(db: &DatabaseConnection) {
    let rows = |from: i64, to: i64| {
        let series = format!(
            "WITH RECURSIVE g(n) AS (SELECT {from} UNION ALL SELECT n + 1 FROM g WHERE n < {to})"
        );
        [
            format!(
                "{series} INSERT INTO messages (id, conversation_id, seq, kind, body, created_at) \
                 SELECT n, 1, n, 'TEXT', 'hello', CURRENT_TIMESTAMP FROM g"
            ),
            format!(
                "{series} INSERT INTO conversation_events \
                 (id, conversation_id, seq, kind, message_id, created_at, tx) \
                 SELECT n, 1, n, 'CREATED', n, CURRENT_TIMESTAMP, 1000 + n FROM g"
            ),
        ]
    };
    let mut statements = vec![
        "INSERT INTO conversations (id, kind, last_seq, last_activity_at, created_at) \
         VALUES (1, 'ROOM', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            .to_owned(),
    ];
    statements.extend(rows(1, ROWS / 10));
    statements.push("ANALYZE".to_owned());
    statements.extend(rows(ROWS / 10 + 1, ROWS));
    for sql in statements {
        db.execute_unprepared(&sql).await.expect(&sql);
    }
}

/// The plan of `statement`, one line per step. On PostgreSQL it is the generic plan, the one a
/// prepared statement (as sqlx runs every statement) settles on after its first executions, made
/// without looking at the values: here, the position the reader has reached.
async fn plan(db: &DatabaseConnection, statement: Statement) -> String {
    let backend = db.get_database_backend();
    let values = statement.values.map(|v| v.0).unwrap_or_default();
    let (explain, column) = match backend {
        DbBackend::Postgres => {
            let literals: Vec<String> = values
                .iter()
                .map(|value| match value {
                    Value::BigInt(Some(v)) => v.to_string(),
                    Value::BigUnsigned(Some(v)) => v.to_string(),
                    other => panic!("no literal for {other:?}"),
                })
                .collect();
            // One connection for the three statements: the setting and the prepared statement
            // are the session's.
            let txn = db.begin().await.expect("begin");
            for sql in [
                "SET LOCAL plan_cache_mode = force_generic_plan".to_owned(),
                format!("PREPARE reader AS {}", statement.sql),
            ] {
                txn.execute_unprepared(&sql).await.expect(&sql);
            }
            let rows = txn
                .query_all_raw(Statement::from_string(
                    backend,
                    format!("EXPLAIN EXECUTE reader({})", literals.join(", ")),
                ))
                .await
                .expect("explain");
            txn.rollback().await.expect("rollback");
            (rows, "QUERY PLAN")
        }
        _ => (
            db.query_all_raw(Statement::from_sql_and_values(
                backend,
                format!("EXPLAIN QUERY PLAN {}", statement.sql),
                values,
            ))
            .await
            .expect("explain"),
            "detail",
        ),
    };
    explain
        .iter()
        .map(|row| row.try_get::<String>("", column).expect("a plan line"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The change-log reader reads the few rows after its position and looks each one's message up by
/// key. On PostgreSQL the planner cannot tell how few rows the watermark leaves (it is computed as
/// the statement runs), and a plain join let it hash the whole `messages` table on every read.
#[tokio::test]
async fn the_log_reader_looks_each_message_up_by_key() {
    let db = fresh_database().await;
    seed(&db).await;
    let after = Position {
        tx: 1000 + ROWS - 10,
        id: ROWS - 10,
    };
    let plan = plan(&db, log_read_statement(&db, after, 256)).await;
    match db.get_database_backend() {
        DbBackend::Postgres => {
            assert!(
                !plan.contains("Seq Scan on messages"),
                "the reader scans every message:\n{plan}"
            );
            assert!(
                plan.contains("messages_pkey"),
                "the reader does not look messages up by key:\n{plan}"
            );
            // The position bounds the index scan; as a filter it would leave the scan to read
            // the whole log below the watermark on every read.
            assert!(
                plan.contains("Index Cond: ((ROW(tx, id) > ROW("),
                "the reader does not start its scan at its position:\n{plan}"
            );
        }
        _ => {
            assert!(
                !plan.contains("SCAN messages") && !plan.contains("SCAN conversation_events"),
                "the reader scans a whole table:\n{plan}"
            );
            assert!(
                plan.contains("SEARCH messages USING INTEGER PRIMARY KEY"),
                "the reader does not look messages up by key:\n{plan}"
            );
        }
    }
}
