//! The messages whose collapsed notifications are still to be made. In a big room a message is
//! committed (and delivered) first, and its members' MESSAGE/FILE notifications are bumped just
//! after, several messages at a time; the row written beside the message and removed with the
//! bump means a crash in between loses nothing: the next start works the backlog off.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum NotificationBacklog {
    Table,
    ConversationId,
    Seq,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(NotificationBacklog::Table)
                    .col(
                        ColumnDef::new(NotificationBacklog::ConversationId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationBacklog::Seq)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(NotificationBacklog::ConversationId)
                            .col(NotificationBacklog::Seq),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(NotificationBacklog::Table).to_owned())
            .await
    }
}
