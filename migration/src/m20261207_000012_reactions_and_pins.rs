//! Reactions (one row per user, emoji and message) and pinned messages (two columns on the
//! message, with an index for a conversation's pins, newest first).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Reactions {
    Table,
    Id,
    MessageId,
    UserId,
    Emoji,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ConversationId,
    PinnedAt,
    PinnedById,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Reactions::Table)
                    // The id orders a message's emoji by first use.
                    .col(big_pk_auto(Reactions::Id))
                    .col(big_integer(Reactions::MessageId))
                    .col(big_integer(Reactions::UserId))
                    .col(string_len(Reactions::Emoji, 64))
                    .col(timestamp_with_time_zone(Reactions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_reactions_message")
                            .from(Reactions::Table, Reactions::MessageId)
                            .to(Messages::Table, Messages::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_reactions_user")
                            .from(Reactions::Table, Reactions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One reaction per user per emoji; also how a page's reactions are read, by message.
        manager
            .create_index(
                Index::create()
                    .name("ux_reactions_message_emoji_user")
                    .table(Reactions::Table)
                    .col(Reactions::MessageId)
                    .col(Reactions::Emoji)
                    .col(Reactions::UserId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        for column in [
            ColumnDef::new(Messages::PinnedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
            ColumnDef::new(Messages::PinnedById)
                .big_integer()
                .null()
                .to_owned(),
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
        manager
            .create_index(
                Index::create()
                    .name("ix_messages_pins")
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::PinnedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_messages_pins").to_owned())
            .await?;
        for column in [Messages::PinnedAt, Messages::PinnedById] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Messages::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(Reactions::Table).to_owned())
            .await
    }
}
