//! Notifications, per-conversation mute, and users' last-seen time (presence).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    UserId,
    ActorId,
    Kind,
    Text,
    ConversationId,
    MessageId,
    Count,
    IsRead,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    Muted,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    LastSeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .col(big_pk_auto(Notifications::Id))
                    .col(big_integer(Notifications::UserId))
                    .col(big_integer_null(Notifications::ActorId))
                    .col(string(Notifications::Kind))
                    .col(text(Notifications::Text))
                    .col(big_integer_null(Notifications::ConversationId))
                    .col(big_integer_null(Notifications::MessageId))
                    .col(big_integer(Notifications::Count).default(1))
                    .col(boolean(Notifications::IsRead).default(false))
                    .col(timestamp_with_time_zone(Notifications::CreatedAt))
                    .col(timestamp_with_time_zone(Notifications::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_notifications_user")
                            .from(Notifications::Table, Notifications::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The list (newest first), the unread count, and finding the unread row to collapse into.
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_user_updated")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::UpdatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_conversation_unread")
                    .table(Notifications::Table)
                    .col(Notifications::ConversationId)
                    .col(Notifications::IsRead)
                    .col(Notifications::Kind)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Members::Table)
                    .add_column(boolean(Members::Muted).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(timestamp_with_time_zone_null(Users::LastSeenAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Notifications::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Members::Table)
                    .drop_column(Members::Muted)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::LastSeenAt)
                    .to_owned(),
            )
            .await
    }
}
