//! Threads: a reply in a thread names its root message. Threads are one level deep, so a root is a
//! message whose `thread_root_id` is null; the index serves a thread's pages (in sequence order)
//! and the summaries read for a page of roots. A conversation's last message is the last of its
//! timeline: the trigger of migration 000009 is made again to pass over replies in threads.
use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    ThreadRootId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .add_column(
                        ColumnDef::new(Messages::ThreadRootId)
                            .big_integer()
                            .null()
                            .to_owned(),
                    )
                    .to_owned(),
            )
            .await?;
        // Partial: most messages are no reply, and their rows need no place in it. Raw, as both
        // backends spell a partial index alike.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_messages_thread ON messages (thread_root_id, seq) \
                 WHERE thread_root_id IS NOT NULL",
            )
            .await?;
        last_message_trigger(manager, "WHEN NEW.thread_root_id IS NULL").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        last_message_trigger(manager, "").await?;
        manager
            .drop_index(Index::drop().name("ix_messages_thread").to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Messages::Table)
                    .drop_column(Messages::ThreadRootId)
                    .to_owned(),
            )
            .await
    }
}

/// Makes the trigger that keeps `conversations.last_message_id` again, firing for the inserts
/// `when` allows (an SQL `WHEN …` clause, or empty for every insert).
async fn last_message_trigger(manager: &SchemaManager<'_>, when: &str) -> Result<(), DbErr> {
    // The drop and the create go as one script, on one connection: run one by one on a pool,
    // the create may run on a connection that still sees the dropped trigger.
    let script = match manager.get_database_backend() {
        DbBackend::Postgres => {
            // PostgreSQL wants the condition in parentheses.
            let when = when
                .strip_prefix("WHEN ")
                .map(|condition| format!("WHEN ({condition})"))
                .unwrap_or_default();
            format!(
                "DROP TRIGGER IF EXISTS trg_messages_last_message ON messages; \
                 CREATE TRIGGER trg_messages_last_message AFTER INSERT ON messages \
                 FOR EACH ROW {when} EXECUTE FUNCTION palaver_mark_last_message()"
            )
        }
        _ => format!(
            "DROP TRIGGER IF EXISTS trg_messages_last_message; \
             CREATE TRIGGER trg_messages_last_message AFTER INSERT ON messages \
             FOR EACH ROW {when} BEGIN \
               UPDATE conversations SET last_message_id = NEW.id \
               WHERE id = NEW.conversation_id; \
             END"
        ),
    };
    manager.get_connection().execute_unprepared(&script).await?;
    Ok(())
}
