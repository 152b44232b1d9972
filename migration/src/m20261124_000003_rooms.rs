//! Rooms: the structured record of a system message (what changed in a room's membership or
//! settings, who did it, to whom, with which role), kept beside its human-readable body so clients
//! can render and localise it without parsing text.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    SystemKind,
    SystemActorId,
    SystemTargetId,
    SystemRole,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE takes a single change at a time.
        for column in [
            string_null(Messages::SystemKind),
            big_integer_null(Messages::SystemActorId),
            big_integer_null(Messages::SystemTargetId),
            string_null(Messages::SystemRole),
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
        // A subscriber removed from a room still gets the message about its own removal when it
        // replays the change log; that lookup goes by target.
        manager
            .create_index(
                Index::create()
                    .name("idx_messages_system_target")
                    .table(Messages::Table)
                    .col(Messages::SystemTargetId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_messages_system_target")
                    .table(Messages::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Messages::SystemRole,
            Messages::SystemTargetId,
            Messages::SystemActorId,
            Messages::SystemKind,
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
