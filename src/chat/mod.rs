//! The domain: rules and queries for users, conversations, rooms, messages and read markers.
//!
//! [`Chat`] is the whole of what the domain depends on: a store, the event bus it announces
//! changes on, the file store and its own settings. Nothing here knows about GraphQL or the
//! server; the transport layer calls in with parsed values.
pub mod audit;
pub mod blocks;
pub mod conversations;
pub mod messages;
pub mod model;
pub mod notifications;
pub mod pagination;
pub mod pins;
pub mod presence;
pub mod reactions;
pub mod reads;
pub mod rooms;
pub mod threads;
pub mod typing;
pub mod users;

use std::sync::Arc;

use crate::{events::EventBus, files::Files, store::Store};

/// The domain's dependencies. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    pub store: Store,
    /// Where committed changes are announced.
    pub events: EventBus,
    pub files: Arc<Files>,
    pub settings: Arc<Settings>,
    /// Big rooms' notifications, made in the background after their sends.
    pub backlog: Arc<notifications::Backlog>,
}

/// The settings the domain's rules read.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Rooms up to this size get their notifications in the send's own transaction; larger
    /// ones through the backlog.
    pub notify_inline_members: usize,
}

impl Settings {
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            notify_inline_members: config.notify_inline_members,
        }
    }
}
