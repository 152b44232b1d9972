//! A conversation's `last_message_id` is kept by the database: a trigger on every message insert
//! points the conversation at the new row. Messages only ever join a conversation at its end (each
//! takes the next sequence number), so the newest insert is the last message. The send path is
//! the hottest write; this saves it one statement, which on SQLite is a hand-over to the database
//! thread and back and on PostgreSQL a network round trip.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE FUNCTION palaver_mark_last_message() RETURNS trigger \
                     LANGUAGE plpgsql AS $$ BEGIN \
                       UPDATE conversations SET last_message_id = NEW.id \
                       WHERE id = NEW.conversation_id; \
                       RETURN NULL; \
                     END $$",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER trg_messages_last_message AFTER INSERT ON messages \
                     FOR EACH ROW EXECUTE FUNCTION palaver_mark_last_message()",
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(
                    "CREATE TRIGGER trg_messages_last_message AFTER INSERT ON messages \
                     FOR EACH ROW BEGIN \
                       UPDATE conversations SET last_message_id = NEW.id \
                       WHERE id = NEW.conversation_id; \
                     END",
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "DROP TRIGGER IF EXISTS trg_messages_last_message ON messages",
                )
                .await?;
                db.execute_unprepared("DROP FUNCTION IF EXISTS palaver_mark_last_message()")
                    .await?;
            }
            _ => {
                db.execute_unprepared("DROP TRIGGER IF EXISTS trg_messages_last_message")
                    .await?;
            }
        }
        Ok(())
    }
}
