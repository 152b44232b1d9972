//! The domain: rules and queries for users, conversations, rooms, messages and read markers. Nothing here
//! knows about GraphQL; the transport layer calls in with parsed values.
pub mod audit;
pub mod blocks;
pub mod conversations;
pub mod messages;
pub mod notifications;
pub mod pagination;
pub mod presence;
pub mod rooms;
pub mod typing;
pub mod users;
