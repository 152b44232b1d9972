//! Positions in the change log that need no global lock. Each change-log row records the
//! PostgreSQL transaction that wrote it (`tx`, its 64-bit transaction id); the log is read in
//! `(tx, id)` order and only below the oldest transaction still running, so a reader never hands
//! out a position before which another may still commit. Rows written before this migration keep
//! `tx = 0`: they committed in id order (a global lock serialised them), and come first. On SQLite,
//! where one writer at a time commits in id order, `tx` stays 0.
use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConversationEvents {
    Table,
    Tx,
    Id,
    ConversationId,
}

const BY_POSITION: &str = "conversation_events_by_position";
const BY_CONVERSATION_POSITION: &str = "conversation_events_by_conversation_position";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ConversationEvents::Table)
                    .add_column(
                        ColumnDef::new(ConversationEvents::Tx)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            // Every insert records its own transaction, whichever statement writes the row.
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE conversation_events ALTER COLUMN tx \
                     SET DEFAULT (pg_current_xact_id()::text::bigint)",
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(BY_POSITION)
                    .table(ConversationEvents::Table)
                    .col(ConversationEvents::Tx)
                    .col(ConversationEvents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(BY_CONVERSATION_POSITION)
                    .table(ConversationEvents::Table)
                    .col(ConversationEvents::ConversationId)
                    .col(ConversationEvents::Tx)
                    .col(ConversationEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [BY_CONVERSATION_POSITION, BY_POSITION] {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(ConversationEvents::Table)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(ConversationEvents::Table)
                    .drop_column(ConversationEvents::Tx)
                    .to_owned(),
            )
            .await
    }
}
