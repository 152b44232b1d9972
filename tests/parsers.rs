//! Property tests for the pieces that parse untrusted input: ids, cursors, signed download URLs,
//! upload file names, names and message bodies, and Range headers. Whatever arrives, they answer
//! with a value or a refusal, never a panic, and what the server itself writes always reads back.
use axum::http::HeaderValue;
use palaver::{
    chat::{
        messages::MessageBody,
        rooms::{RoomName, RoomTopic},
        users::{Username, parse_display_name},
    },
    files::{download::parse_range, kind::sanitize_filename, signing::SigningKey},
    ids::{self, CursorKind, Kind},
    text,
};
use proptest::prelude::*;

const KINDS: [Kind; 4] = [
    Kind::User,
    Kind::Conversation,
    Kind::Message,
    Kind::Notification,
];
const CURSORS: [CursorKind; 4] = [
    CursorKind::Message,
    CursorKind::Event,
    CursorKind::Activity,
    CursorKind::Receipt,
];

proptest! {
    #[test]
    fn any_text_as_an_id_is_a_value_or_a_refusal(text in ".{0,80}") {
        for kind in KINDS {
            if let Ok(id) = ids::decode(kind, &async_graphql::ID(text.clone())) {
                prop_assert!(id > 0);
            }
        }
    }

    /// Whatever text is read as an id is the very text the server writes for it: one id, one
    /// spelling (`cnv_01`, `cnv_+1` or `cnv_1 ` are not `cnv_1`).
    #[test]
    fn an_id_is_read_only_as_it_is_written(text in "(usr|cnv|msg|ntf)_[-+ 0-9]{0,22}[ \n]?") {
        for kind in KINDS {
            if let Ok(id) = ids::decode(kind, &async_graphql::ID(text.clone())) {
                let written = ids::encode(kind, id);
                prop_assert_eq!(written.as_str(), text.as_str());
            }
        }
    }

    #[test]
    fn other_spellings_of_an_id_are_refused(
        n in 1i64..i64::MAX,
        zeros in 1usize..4,
        around in prop::sample::select(vec!["+", " ", "\t", "\n", "-", "\u{a0}", "\u{feff}"]),
    ) {
        for kind in KINDS {
            let id = ids::encode(kind, n).to_string();
            let (prefix, digits) = id.split_once('_').unwrap();
            for spelled in [
                format!("{prefix}_{}{digits}", "0".repeat(zeros)),
                format!("{prefix}_{around}{digits}"),
                format!("{id}{around}"),
                format!("{around}{id}"),
                format!("{}_{digits}", prefix.to_uppercase()),
            ] {
                prop_assert!(ids::decode(kind, &async_graphql::ID(spelled.clone())).is_err(), "{:?}", spelled);
            }
        }
    }

    #[test]
    fn a_refused_id_is_quoted_short(text in ".{0,3000}") {
        for kind in KINDS {
            if let Err(refused) = ids::decode(kind, &async_graphql::ID(text.clone())) {
                prop_assert!(refused.to_string().chars().count() < 100);
            }
        }
    }

    #[test]
    fn ids_round_trip(n in 1i64..i64::MAX) {
        for kind in KINDS {
            prop_assert_eq!(ids::decode(kind, &ids::encode(kind, n)).unwrap(), n);
        }
    }

    #[test]
    fn any_text_as_a_cursor_is_a_value_or_a_refusal(text in ".{0,200}", arity in 1usize..4) {
        for kind in CURSORS {
            if let Ok(parts) = ids::decode_cursor(kind, &text, arity) {
                prop_assert_eq!(parts.len(), arity);
                prop_assert!(parts.iter().all(|p| *p >= 0));
            }
        }
    }

    /// A cursor is read back only as the server wrote it, numbers included.
    #[test]
    fn a_cursor_is_read_only_as_it_is_written(
        tag in "[mearc]",
        parts in proptest::collection::vec("[-+ 0-9]{1,5}", 1..4),
    ) {
        use base64::Engine;
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{tag}:{}", parts.join(":")));
        for kind in CURSORS {
            if let Ok(numbers) = ids::decode_cursor(kind, &text, parts.len()) {
                prop_assert_eq!(ids::cursor(kind, &numbers), text.clone());
            }
        }
    }

    #[test]
    fn cursors_round_trip_and_stay_in_their_kind(parts in proptest::collection::vec(0i64..i64::MAX, 1..4)) {
        for kind in CURSORS {
            let cursor = ids::cursor(kind, &parts);
            prop_assert_eq!(ids::decode_cursor(kind, &cursor, parts.len()).unwrap(), parts.clone());
            for other in CURSORS.into_iter().filter(|o| *o != kind) {
                prop_assert!(ids::decode_cursor(other, &cursor, parts.len()).is_err());
            }
        }
    }

    #[test]
    fn only_the_exact_signature_verifies(message in 1i64..1_000_000, user in 1i64..1_000_000, expires in 0i64..4_000_000_000, forged in ".{0,100}") {
        let key = SigningKey::new(*b"0123456789abcdef0123456789abcdef");
        let signature = key.signature(message, user, expires);
        prop_assert!(key.verify(message, user, expires, &signature, expires - 1));
        prop_assert!(!key.verify(message, user, expires, &signature, expires + 1), "expired");
        prop_assert!(!key.verify(message + 1, user, expires, &signature, 0), "other message");
        prop_assert!(!key.verify(message, user + 1, expires, &signature, 0), "other user");
        prop_assert!(!key.verify(message, user, expires + 1, &signature, 0), "other expiry");
        if forged != signature {
            prop_assert!(!key.verify(message, user, expires, &forged, 0));
        }
    }

    #[test]
    fn file_names_become_harmless_base_names(raw in ".{0,400}") {
        let name = sanitize_filename(&raw);
        prop_assert!(!name.is_empty());
        prop_assert!(name.len() <= 200);
        prop_assert!(!name.contains('/') && !name.contains('\\'));
        prop_assert!(!name.chars().any(|c| text::unwanted_in_name(c).is_some()));
        prop_assert!(name != "." && name != "..");
    }

    #[test]
    fn accepted_names_topics_and_bodies_hold_no_unwanted_character(raw in "(.|[\u{0}-\u{9F}\u{200B}-\u{200F}\u{202A}-\u{202E}\u{2060}-\u{2069}\u{FEFF}\u{E0000}-\u{E007F}]){0,40}") {
        if let Ok(name) = RoomName::parse(&raw) {
            prop_assert!(text::first_unwanted(name.as_str(), text::unwanted_in_name).is_none());
        }
        if RoomTopic::parse(&raw).is_ok() {
            prop_assert!(text::first_unwanted(raw.trim(), text::unwanted_in_multiline).is_none());
        }
        let username = Username::parse("someone").unwrap();
        if let Ok(name) = parse_display_name(Some(&raw), &username) {
            prop_assert!(text::first_unwanted(&name, text::unwanted_in_name).is_none());
        }
        // What is stored: a CR LF arrives as a line break and is kept as LF.
        if let Ok(body) = MessageBody::parse(&raw, 4000) {
            prop_assert!(!body.as_str().chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        }
    }

    #[test]
    fn range_headers_give_a_range_inside_the_file_or_a_refusal(header in "[ -~]{0,60}", size in 0u64..10_000) {
        if let Ok(value) = HeaderValue::from_str(&header)
            && let Ok(Some((start, end))) = parse_range(&value, size)
        {
            prop_assert!(start <= end && end < size);
        }
    }
}
