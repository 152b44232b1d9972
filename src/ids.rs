//! Opaque ids and cursors. Ids look like `usr_12`; cursors are URL-safe base64 of a tagged number.
//! Both are parsed at the edge into typed values, so a forged or mangled one is BAD_USER_INPUT and
//! never reaches a query.
use async_graphql::ID;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::{AppError, quote};

/// The kinds of object that have ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    Conversation,
    Message,
    Notification,
    /// A signed-in session (one bearer token).
    Session,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::User => "usr_",
            Kind::Conversation => "cnv_",
            Kind::Message => "msg_",
            Kind::Notification => "ntf_",
            Kind::Session => "ses_",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Conversation => "conversation",
            Kind::Message => "message",
            Kind::Notification => "notification",
            Kind::Session => "session",
        }
    }
}

/// The public id of a row.
pub fn encode(kind: Kind, id: i64) -> ID {
    ID(encode_str(kind, id))
}

/// The public id of a row, as a plain string (for the domain, which knows no GraphQL types).
pub fn encode_str(kind: Kind, id: i64) -> String {
    format!("{}{id}", kind.prefix())
}

/// Parses a public id of the given kind. Only the spelling [`encode`] gives is accepted: `cnv_01`,
/// `cnv_+1` or `cnv_1 ` are not `cnv_1` (BAD_USER_INPUT, as every malformed id).
pub fn decode(kind: Kind, id: &ID) -> Result<i64, AppError> {
    id.strip_prefix(kind.prefix())
        .and_then(canonical_number)
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            AppError::bad_input(format!(
                "`{}` is not a valid {} id",
                quote(id.as_str()),
                kind.name()
            ))
        })
}

/// Parses a public id of any kind: the kind is read from its prefix. BAD_USER_INPUT for anything
/// [`encode`] would not have written.
pub fn decode_any(id: &ID) -> Result<(Kind, i64), AppError> {
    const KINDS: [Kind; 5] = [
        Kind::User,
        Kind::Conversation,
        Kind::Message,
        Kind::Notification,
        Kind::Session,
    ];
    KINDS
        .into_iter()
        .find(|kind| id.starts_with(kind.prefix()))
        .and_then(|kind| decode(kind, id).ok().map(|n| (kind, n)))
        .ok_or_else(|| AppError::bad_input(format!("`{}` is not a valid id", quote(id.as_str()))))
}

/// A number as `i64::to_string` spells it, without a sign: digits only, no leading zero (but `0`
/// itself), within `i64`.
fn canonical_number(digits: &str) -> Option<i64> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse::<i64>().ok()).flatten()
}

/// Parses an optional public id.
pub fn decode_opt(kind: Kind, id: Option<&ID>) -> Result<Option<i64>, AppError> {
    id.map(|id| decode(kind, id)).transpose()
}

/// The tags that keep one kind of cursor from being passed where another is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorKind {
    /// A position in a conversation's messages (the message's sequence number).
    Message,
    /// A position in the durable event log (the event's id).
    Event,
    /// A position in a list ordered by id (users, notifications).
    Row,
    /// A position in the conversation list: (last activity in ms, id).
    Activity,
    /// A position in the read-receipt stream: (read time in µs, conversation, user).
    Receipt,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            CursorKind::Message => "m",
            CursorKind::Event => "e",
            CursorKind::Row => "r",
            CursorKind::Activity => "a",
            CursorKind::Receipt => "c",
        }
    }
}

/// Encodes one or two numbers as an opaque cursor.
pub fn cursor(kind: CursorKind, parts: &[i64]) -> String {
    let text = parts
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(":");
    URL_SAFE_NO_PAD.encode(format!("{}:{text}", kind.tag()))
}

/// Decodes a cursor of the given kind into its numbers.
pub fn decode_cursor(kind: CursorKind, cursor: &str, arity: usize) -> Result<Vec<i64>, AppError> {
    let invalid = || AppError::bad_input(format!("`{}` is not a valid cursor here", quote(cursor)));
    if cursor.len() > 128 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.split(':');
    if parts.next() != Some(kind.tag()) {
        return Err(invalid());
    }
    // Only the numbers `cursor` writes: a cursor is read back as it was handed out.
    let numbers = parts
        .map(|p| canonical_number(p).ok_or_else(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    if numbers.len() != arity {
        return Err(invalid());
    }
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_other_kinds() {
        let id = encode(Kind::Message, 42);
        assert_eq!(id.as_str(), "msg_42");
        assert_eq!(decode(Kind::Message, &id).unwrap(), 42);
        assert!(decode(Kind::User, &id).is_err());
    }

    #[test]
    fn ids_of_any_kind_are_read_by_their_prefix() {
        assert_eq!(
            decode_any(&encode(Kind::Notification, 7)).unwrap(),
            (Kind::Notification, 7)
        );
        assert_eq!(decode_any(&ID("usr_3".into())).unwrap(), (Kind::User, 3));
        for bad in ["", "usr_", "usr_01", "xyz_1", "1", "msg_1 "] {
            assert!(decode_any(&ID(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "msg_",
            "msg_-1",
            "msg_0",
            "msg_1x",
            "msg_+1",
            "msg_01",
            "msg_00",
            "msg_ 1",
            "msg_1 ",
            " msg_1",
            "msg_1\n",
            "msg_１",
            "MSG_1",
            "msg_99999999999999999999",
            "msg_9223372036854775808",
            "1",
        ] {
            assert!(decode(Kind::Message, &ID(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_quote_a_short_prefix_of_the_input() {
        let huge = format!("cnv_{}", "é".repeat(1_000_000));
        let message = decode(Kind::Conversation, &ID(huge.clone()))
            .unwrap_err()
            .to_string();
        assert!(message.chars().count() < 100, "{message}");
        assert!(message.contains("cnv_ééé"), "{message}");
        let message = decode_cursor(CursorKind::Message, &huge, 1)
            .unwrap_err()
            .to_string();
        assert!(message.chars().count() < 100, "{message}");
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_kinds() {
        let c = cursor(CursorKind::Activity, &[1_700_000_000_000, 7]);
        assert_eq!(
            decode_cursor(CursorKind::Activity, &c, 2).unwrap(),
            vec![1_700_000_000_000, 7]
        );
        assert!(decode_cursor(CursorKind::Message, &c, 2).is_err());
        assert!(decode_cursor(CursorKind::Activity, &c, 1).is_err());
    }

    #[test]
    fn forged_cursors_are_refused() {
        let spelled = |text: &str| URL_SAFE_NO_PAD.encode(text);
        for bad in [
            "",
            "!!!",
            "bTo=",
            "bTotMQ",
            "bTphYmM",
            &"A".repeat(500),
            // Numbers other than as `cursor` writes them.
            &spelled("m:01"),
            &spelled("m:+1"),
            &spelled("m: 1"),
            &spelled("m:-0"),
        ] {
            assert!(decode_cursor(CursorKind::Message, bad, 1).is_err(), "{bad}");
        }
    }
}
