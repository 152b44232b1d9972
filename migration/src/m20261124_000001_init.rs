//! Users, tokens, conversations, members, messages and the per-conversation change log.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    UsernameKey,
    DisplayName,
    PasswordHash,
    IsAdmin,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuthTokens {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    Kind,
    Name,
    Topic,
    DirectKey,
    LastSeq,
    LastMessageId,
    LastActivityAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    ConversationId,
    UserId,
    Role,
    LastReadSeq,
    LastReadAt,
    JoinedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ConversationId,
    Seq,
    SenderId,
    Kind,
    Body,
    ReplyToId,
    ClientMessageId,
    CreatedAt,
    EditedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum ConversationEvents {
    Table,
    Id,
    ConversationId,
    Seq,
    Kind,
    MessageId,
    CreatedAt,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(big_pk_auto(Users::Id))
                    .col(string(Users::Username))
                    .col(string_uniq(Users::UsernameKey))
                    .col(string(Users::DisplayName))
                    .col(string(Users::PasswordHash))
                    .col(boolean(Users::IsAdmin).default(false))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuthTokens::Table)
                    .col(big_pk_auto(AuthTokens::Id))
                    .col(big_integer(AuthTokens::UserId))
                    .col(string_uniq(AuthTokens::TokenHash))
                    .col(timestamp_with_time_zone(AuthTokens::CreatedAt))
                    .col(timestamp_with_time_zone(AuthTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(AuthTokens::RevokedAt))
                    .foreign_key(&mut fk(
                        "fk_auth_tokens_user",
                        (AuthTokens::Table, AuthTokens::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_auth_tokens_user")
                    .table(AuthTokens::Table)
                    .col(AuthTokens::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .col(big_pk_auto(Conversations::Id))
                    .col(string(Conversations::Kind))
                    .col(string_null(Conversations::Name))
                    .col(text_null(Conversations::Topic))
                    .col(string_null(Conversations::DirectKey).unique_key())
                    .col(big_integer(Conversations::LastSeq).default(0))
                    .col(big_integer_null(Conversations::LastMessageId))
                    .col(timestamp_with_time_zone(Conversations::LastActivityAt))
                    .col(timestamp_with_time_zone(Conversations::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Members::Table)
                    .col(big_integer(Members::ConversationId))
                    .col(big_integer(Members::UserId))
                    .col(string(Members::Role))
                    .col(big_integer(Members::LastReadSeq).default(0))
                    .col(timestamp_with_time_zone_null(Members::LastReadAt))
                    .col(timestamp_with_time_zone(Members::JoinedAt))
                    .primary_key(
                        Index::create()
                            .col(Members::ConversationId)
                            .col(Members::UserId),
                    )
                    .foreign_key(&mut fk(
                        "fk_members_conversation",
                        (Members::Table, Members::ConversationId),
                        (Conversations::Table, Conversations::Id),
                    ))
                    .foreign_key(&mut fk(
                        "fk_members_user",
                        (Members::Table, Members::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        // "Which conversations is this user in" is asked on every request.
        manager
            .create_index(
                Index::create()
                    .name("idx_members_user")
                    .table(Members::Table)
                    .col(Members::UserId)
                    .col(Members::ConversationId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .col(big_pk_auto(Messages::Id))
                    .col(big_integer(Messages::ConversationId))
                    .col(big_integer(Messages::Seq))
                    .col(big_integer_null(Messages::SenderId))
                    .col(string(Messages::Kind))
                    .col(text_null(Messages::Body))
                    .col(big_integer_null(Messages::ReplyToId))
                    .col(string_null(Messages::ClientMessageId))
                    .col(timestamp_with_time_zone(Messages::CreatedAt))
                    .col(timestamp_with_time_zone_null(Messages::EditedAt))
                    .col(timestamp_with_time_zone_null(Messages::DeletedAt))
                    .foreign_key(&mut fk(
                        "fk_messages_conversation",
                        (Messages::Table, Messages::ConversationId),
                        (Conversations::Table, Conversations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        // History pages and unread counts are range scans over (conversation, seq).
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_conversation_seq")
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A retried send finds its first attempt by (sender, clientMessageId).
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_sender_client_id")
                    .table(Messages::Table)
                    .col(Messages::SenderId)
                    .col(Messages::ClientMessageId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConversationEvents::Table)
                    .col(big_pk_auto(ConversationEvents::Id))
                    .col(big_integer(ConversationEvents::ConversationId))
                    .col(big_integer(ConversationEvents::Seq))
                    .col(string(ConversationEvents::Kind))
                    .col(big_integer(ConversationEvents::MessageId))
                    .col(timestamp_with_time_zone(ConversationEvents::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_conversation_events_conversation",
                        (
                            ConversationEvents::Table,
                            ConversationEvents::ConversationId,
                        ),
                        (Conversations::Table, Conversations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_conversation_events_seq")
                    .table(ConversationEvents::Table)
                    .col(ConversationEvents::ConversationId)
                    .col(ConversationEvents::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ConversationEvents::Table.into_iden(),
            Messages::Table.into_iden(),
            Members::Table.into_iden(),
            Conversations::Table.into_iden(),
            AuthTokens::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
