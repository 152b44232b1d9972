//! Facts about this deployment's data, shared by every instance that uses the database: for now,
//! the epoch that cursors carry so a cursor from another deployment's data is recognised.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ServerSettings {
    Table,
    Name,
    Value,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ServerSettings::Table)
                    .col(string(ServerSettings::Name).primary_key())
                    .col(text(ServerSettings::Value))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ServerSettings::Table).to_owned())
            .await
    }
}
