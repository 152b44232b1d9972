//! Schema migrations. Append-only: never edit a migration that has landed; add a new one.
pub use sea_orm_migration::prelude::*;

mod m20261124_000001_init;
mod m20261124_000002_attachments;
mod m20261124_000003_rooms;
mod m20261124_000004_notifications;
mod m20261124_000006_blocks;
mod m20261124_000007_audit_log;
mod m20261124_000008_notification_lookups;
mod m20261124_000009_last_message_trigger;
mod m20261125_000010_notification_backlog;
mod m20261207_000011_event_positions;
mod m20261207_000012_reactions_and_pins;
mod m20261207_000013_threads;
mod m20261207_000014_send_function;

/// Every migration, in order; the server runs the pending ones at start.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_init::Migration),
            Box::new(m20261124_000002_attachments::Migration),
            Box::new(m20261124_000003_rooms::Migration),
            Box::new(m20261124_000004_notifications::Migration),
            // Keep last: numbered after 000005, which lands from another branch.
            Box::new(m20261124_000006_blocks::Migration),
            Box::new(m20261124_000007_audit_log::Migration),
            Box::new(m20261124_000008_notification_lookups::Migration),
            Box::new(m20261124_000009_last_message_trigger::Migration),
            Box::new(m20261125_000010_notification_backlog::Migration),
            Box::new(m20261207_000011_event_positions::Migration),
            Box::new(m20261207_000012_reactions_and_pins::Migration),
            Box::new(m20261207_000013_threads::Migration),
            Box::new(m20261207_000014_send_function::Migration),
        ]
    }
}
