//! Palaver's tables as sea-orm entities: one module per table, nothing else.
pub mod audit_entry;
pub mod auth_token;
pub mod block;
pub mod conversation;
pub mod conversation_event;
pub mod member;
pub mod message;
pub mod notification;
pub mod reaction;
pub mod setting;
pub mod user;
