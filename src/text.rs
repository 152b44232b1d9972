//! Which characters text from clients may carry, decided in one place.
//!
//! A name is shown where a reader cannot see what it is made of: `invoice\u{202E}fdp.html` reads
//! as "invoicelmth.pdf", a display name of Hangul fillers looks empty, and a zero-width space makes
//! two names that look alike differ. So names (usernames, display names, room names and topics, and
//! the names of uploaded files) may hold no control character, no bidirectional formatting
//! character and no invisible one. Message bodies are prose: right-to-left writing needs its marks
//! and emoji sequences need the zero-width joiner, so a body is only kept free of control
//! characters (line breaks as `\n` and tabs are the ones it may use).
//!
//! The fields that refuse such characters answer BAD_USER_INPUT with [`describe`]'s words; file
//! names drop them instead ([`strip_from_name`]), so that the upload still goes through.

/// Why a character is not allowed where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwanted {
    /// C0 controls, DEL and C1 controls (Unicode category Cc): ESC starts terminal sequences, NUL
    /// ends C strings.
    Control,
    /// Bidirectional embeddings, overrides, isolates and marks: they reorder what follows.
    Bidi,
    /// Characters that show nothing: zero-width spaces and joiners, invisible operators, the byte
    /// order mark, the soft hyphen, fillers and tag characters. Also the line and paragraph
    /// separators, which break a name that is meant to be one line.
    Invisible,
}

impl Unwanted {
    fn noun(self) -> &'static str {
        match self {
            Unwanted::Control => "a control character",
            Unwanted::Bidi => "a bidirectional formatting character",
            Unwanted::Invisible => "an invisible character",
        }
    }
}

/// Whether `c` is a control character (C0, DEL or C1).
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// Whether `c` is a bidirectional formatting character: LRE, RLE, PDF, LRO, RLO (U+202A–U+202E),
/// the isolates LRI, RLI, FSI, PDI (U+2066–U+2069), and the marks LRM, RLM, ALM.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

/// Whether `c` shows nothing (or, for the line and paragraph separators, breaks the line).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        // Zero-width space, non-joiner and joiner.
        '\u{200B}'..='\u{200D}'
        // Word joiner and the invisible operators.
        | '\u{2060}'..='\u{2064}'
        // Byte order mark (zero-width no-break space), soft hyphen, Mongolian vowel separator.
        | '\u{FEFF}' | '\u{00AD}' | '\u{180E}'
        // Hangul fillers: letters that render as nothing.
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}'
        // Tag characters.
        | '\u{E0000}'..='\u{E007F}'
        // Line and paragraph separators.
        | '\u{2028}' | '\u{2029}'
    )
}

/// What is wrong with `c` in a one-line name, if anything.
pub fn unwanted_in_name(c: char) -> Option<Unwanted> {
    if is_control(c) {
        Some(Unwanted::Control)
    } else if is_bidi_control(c) {
        Some(Unwanted::Bidi)
    } else if is_invisible(c) {
        Some(Unwanted::Invisible)
    } else {
        None
    }
}

/// The same for text that may run over several lines (a room topic): line breaks and tabs are
/// allowed, nothing else that [`unwanted_in_name`] refuses is.
pub fn unwanted_in_multiline(c: char) -> Option<Unwanted> {
    if matches!(c, '\n' | '\t') {
        None
    } else {
        unwanted_in_name(c)
    }
}

/// What is wrong with `c` in a message body, if anything: only control characters other than
/// `\n` and `\t` (a carriage return too: line breaks are sent as `\n`).
pub fn unwanted_in_body(c: char) -> Option<Unwanted> {
    (is_control(c) && !matches!(c, '\n' | '\t')).then_some(Unwanted::Control)
}

/// The first character of `text` that `rule` refuses, and why.
pub fn first_unwanted(text: &str, rule: fn(char) -> Option<Unwanted>) -> Option<(char, Unwanted)> {
    text.chars().find_map(|c| rule(c).map(|why| (c, why)))
}

/// Words for an error: `"must not contain U+202E (a bidirectional formatting character)"`,
/// prefixed by the field's name.
pub fn describe(field: &str, (c, why): (char, Unwanted)) -> String {
    format!(
        "{field} must not contain U+{:04X} ({})",
        u32::from(c),
        why.noun()
    )
}

/// `text` without the characters [`unwanted_in_name`] refuses.
pub fn strip_from_name(text: &str) -> String {
    text.chars()
        .filter(|c| unwanted_in_name(*c).is_none())
        .collect()
}

/// Whether `text` has nothing a reader would see: only white space and invisible or formatting
/// characters (a body of zero-width spaces is as empty as a blank one).
pub fn is_blank(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_whitespace() || unwanted_in_name(c).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character the rules name, by class.
    const CONTROLS: &[char] = &[
        '\0', '\u{7}', '\u{1B}', '\r', '\u{7F}', '\u{80}', '\u{9B}', '\u{9F}',
    ];
    const BIDI: &[char] = &[
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
    ];
    const INVISIBLE: &[char] = &[
        '\u{200B}',
        '\u{200C}',
        '\u{200D}',
        '\u{2060}',
        '\u{2061}',
        '\u{2062}',
        '\u{2063}',
        '\u{2064}',
        '\u{FEFF}',
        '\u{00AD}',
        '\u{180E}',
        '\u{115F}',
        '\u{1160}',
        '\u{3164}',
        '\u{FFA0}',
        '\u{E0000}',
        '\u{E0001}',
        '\u{E0041}',
        '\u{E007F}',
        '\u{2028}',
        '\u{2029}',
    ];
    /// Characters that look unusual but are ordinary text.
    const ORDINARY: &[char] = &[
        'a',
        'é',
        'ß',
        'ж',
        'א',
        'ب',
        '中',
        '😀',
        '\u{FE0F}',
        '\u{0301}',
        ' ',
        '\u{A0}',
        '_',
        '\u{2010}',
        '\u{E0080}',
        '\u{2065}',
        '\u{206A}',
        '\u{2027}',
        '\u{202F}',
    ];

    #[test]
    fn names_refuse_controls_bidi_and_invisible_characters() {
        for &c in CONTROLS.iter().chain(['\n', '\t'].iter()) {
            assert_eq!(unwanted_in_name(c), Some(Unwanted::Control), "{c:?}");
        }
        for &c in BIDI {
            assert_eq!(unwanted_in_name(c), Some(Unwanted::Bidi), "{c:?}");
        }
        for &c in INVISIBLE {
            assert_eq!(unwanted_in_name(c), Some(Unwanted::Invisible), "{c:?}");
        }
        for &c in ORDINARY {
            assert_eq!(unwanted_in_name(c), None, "{c:?}");
        }
    }

    #[test]
    fn topics_also_take_line_breaks_and_tabs() {
        assert_eq!(unwanted_in_multiline('\n'), None);
        assert_eq!(unwanted_in_multiline('\t'), None);
        for &c in CONTROLS.iter().chain(BIDI).chain(INVISIBLE) {
            assert!(unwanted_in_multiline(c).is_some(), "{c:?}");
        }
    }

    #[test]
    fn bodies_refuse_only_control_characters() {
        for &c in CONTROLS {
            assert_eq!(unwanted_in_body(c), Some(Unwanted::Control), "{c:?}");
        }
        // Right-to-left prose and emoji sequences need these.
        for &c in BIDI
            .iter()
            .chain(INVISIBLE)
            .chain(ORDINARY)
            .chain(['\n', '\t'].iter())
        {
            assert_eq!(unwanted_in_body(c), None, "{c:?}");
        }
        let family = "👩\u{200D}👩\u{200D}👧";
        assert_eq!(first_unwanted(family, unwanted_in_body), None);
    }

    #[test]
    fn the_first_unwanted_character_is_named_in_words() {
        let found = first_unwanted("invoice\u{202E}fdp.html", unwanted_in_name).unwrap();
        assert_eq!(found, ('\u{202E}', Unwanted::Bidi));
        assert_eq!(
            describe("a room name", found),
            "a room name must not contain U+202E (a bidirectional formatting character)"
        );
        assert_eq!(
            describe("x", ('\u{E0041}', Unwanted::Invisible)),
            "x must not contain U+E0041 (an invisible character)"
        );
        assert_eq!(first_unwanted("plain", unwanted_in_name), None);
    }

    #[test]
    fn stripping_keeps_everything_else_in_order() {
        assert_eq!(
            strip_from_name("invoice\u{202E}fdp.html"),
            "invoicefdp.html"
        );
        assert_eq!(strip_from_name("a\u{200B}b\u{1B}[31mc\u{E0041}"), "ab[31mc");
        assert_eq!(strip_from_name("résumé 😀.pdf"), "résumé 😀.pdf");
    }

    #[test]
    fn text_of_nothing_visible_is_blank() {
        assert!(is_blank(" \u{200B}\u{3164}\u{FEFF}\n"));
        assert!(is_blank(""));
        assert!(!is_blank(" x "));
        assert!(!is_blank("😀"));
    }
}
