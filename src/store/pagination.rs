//! Pages of rows and the requests for them (Relay-style, parsed once at the edge), and the
//! position filter keyset pages are read with.
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

impl<T> Page<T> {
    /// A forward page from rows fetched with one extra (`limit + 1`): the extra one only says that
    /// there is a next page.
    pub fn forward(mut rows: Vec<T>, limit: u64, has_previous: bool) -> Self {
        let has_next = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        Page {
            items: rows,
            has_previous,
            has_next,
        }
    }
}

/// The rows on one side of a (time, id) position in (time, id) order: `later` ones for a resume
/// or an ascending list, earlier ones for a newest-first list. Time is in µs, as cursors carry it.
pub fn beyond_position(
    time: impl sea_orm::sea_query::IntoColumnRef + Copy,
    id: impl sea_orm::sea_query::IntoColumnRef + Copy,
    (micros, row): (i64, i64),
    later: bool,
) -> AppResult<sea_orm::sea_query::SimpleExpr> {
    use sea_orm::sea_query::{Expr, ExprTrait};
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| AppError::bad_input("cursor out of range"))?;
    Ok(if later {
        Expr::col(time)
            .gt(at)
            .or(Expr::col(time).eq(at).and(Expr::col(id).gt(row)))
    } else {
        Expr::col(time)
            .lt(at)
            .or(Expr::col(time).eq(at).and(Expr::col(id).lt(row)))
    })
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
