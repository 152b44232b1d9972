//! Indexes that keep a message's notifications cheap in big rooms: finding the rows a message
//! made or updated (by message), and finding a member's unread row in one conversation.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Notifications {
    Table,
    MessageId,
    UserId,
    ConversationId,
    IsRead,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_message")
                    .table(Notifications::Table)
                    .col(Notifications::MessageId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_user_conversation_unread")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::ConversationId)
                    .col(Notifications::IsRead)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_notifications_user_conversation_unread")
                    .table(Notifications::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_notifications_message")
                    .table(Notifications::Table)
                    .to_owned(),
            )
            .await
    }
}
