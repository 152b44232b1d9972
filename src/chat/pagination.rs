//! Relay-style page requests, parsed once at the edge: the domain's names for the store's pages.
pub use crate::store::pagination::{
    DEFAULT_PAGE, Direction, MAX_PAGE, Page, PageRequest, page_size,
};
