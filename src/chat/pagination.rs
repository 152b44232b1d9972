//! Relay-style page requests, parsed once at the edge.
use crate::error::{AppError, AppResult};

/// The largest page a client may ask for.
pub const MAX_PAGE: u64 = 100;
/// The page size when the client names none.
pub const DEFAULT_PAGE: u64 = 50;

/// A page of rows and whether more lie on either side.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_previous: bool,
    pub has_next: bool,
}

/// Which way a page is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `first` items after a position (or from the start).
    Forward,
    /// `last` items before a position (or from the end).
    Backward,
}

/// A validated page request over some position type `P`.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<P> {
    pub direction: Direction,
    pub limit: u64,
    /// `after` when forward, `before` when backward.
    pub anchor: Option<P>,
}

/// Checks a `first` / `last` count.
pub fn page_size(name: &str, value: Option<i32>) -> AppResult<Option<u64>> {
    match value {
        None => Ok(None),
        Some(n) if n < 0 => Err(AppError::bad_input(format!(
            "`{name}` must not be negative"
        ))),
        Some(n) if n as u64 > MAX_PAGE => Err(AppError::bad_input(format!(
            "`{name}` must be at most {MAX_PAGE}"
        ))),
        Some(n) => Ok(Some(n as u64)),
    }
}

impl<P> PageRequest<P> {
    /// Builds a request from Relay arguments. With neither `first` nor `last`, `default` decides.
    pub fn new(
        first: Option<i32>,
        after: Option<P>,
        last: Option<i32>,
        before: Option<P>,
        default: Direction,
    ) -> AppResult<Self> {
        let first = page_size("first", first)?;
        let last = page_size("last", last)?;
        if first.is_some() && last.is_some() {
            return Err(AppError::bad_input("pass `first` or `last`, not both"));
        }
        if after.is_some() && before.is_some() {
            return Err(AppError::bad_input("pass `after` or `before`, not both"));
        }
        let direction = match (first, last, &after, &before) {
            (Some(_), _, _, _) | (_, _, Some(_), _) => Direction::Forward,
            (_, Some(_), _, _) | (_, _, _, Some(_)) => Direction::Backward,
            _ => default,
        };
        if (direction == Direction::Forward && before.is_some())
            || (direction == Direction::Backward && after.is_some())
        {
            return Err(AppError::bad_input(
                "use `first` with `after`, and `last` with `before`",
            ));
        }
        Ok(Self {
            direction,
            limit: first.or(last).unwrap_or(DEFAULT_PAGE),
            anchor: after.or(before),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests_are_validated() {
        assert!(PageRequest::<i64>::new(Some(-1), None, None, None, Direction::Forward).is_err());
        assert!(PageRequest::<i64>::new(Some(101), None, None, None, Direction::Forward).is_err());
        assert!(PageRequest::<i64>::new(Some(1), None, Some(1), None, Direction::Forward).is_err());
        assert!(PageRequest::new(Some(5), None, None, Some(3), Direction::Forward).is_err());
        let r = PageRequest::<i64>::new(None, None, None, None, Direction::Backward).unwrap();
        assert_eq!((r.direction, r.limit), (Direction::Backward, DEFAULT_PAGE));
        let r = PageRequest::new(None, None, Some(10), Some(7), Direction::Forward).unwrap();
        assert_eq!(
            (r.direction, r.limit, r.anchor),
            (Direction::Backward, 10, Some(7))
        );
    }
}
