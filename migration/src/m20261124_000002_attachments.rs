//! File attachments on messages, and a small key/value table for server-wide settings (the URL
//! signing key that every instance on the same database must share).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    AttachmentKey,
    AttachmentFilename,
    AttachmentContentType,
    AttachmentSize,
    AttachmentSha256,
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    Key,
    Value,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds a single column at a time.
        for column in [
            string_null(Messages::AttachmentKey),
            string_null(Messages::AttachmentFilename),
            string_null(Messages::AttachmentContentType),
            big_integer_null(Messages::AttachmentSize),
            string_null(Messages::AttachmentSha256),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // The orphan sweep asks "which of these stored objects still has a message".
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_attachment_key")
                    .table(Messages::Table)
                    .col(Messages::AttachmentKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Settings::Table)
                    .col(string(Settings::Key).primary_key())
                    .col(text(Settings::Value))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Settings::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_messages_attachment_key")
                    .table(Messages::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Messages::AttachmentSha256,
            Messages::AttachmentSize,
            Messages::AttachmentContentType,
            Messages::AttachmentFilename,
            Messages::AttachmentKey,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
