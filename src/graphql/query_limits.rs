//! Refuses documents that would cost the server dearly before anything else looks at them: text
//! of too many tokens, too many fragments, a document whose fragments spread out to too many
//! selections (a "fragment bomb": each fragment spreading the next one ten times is 10^n
//! selections in n lines), fragment cycles, many root fields (each may be a database round trip,
//! or a password hash for `login`, so aliases would multiply a brute force), many aliases, and
//! introspection when it is switched off (by `api::Api`, before async-graphql's own checks,
//! validation and execution).
//!
//! Every check here is linear in the size of the document: each fragment is walked once, and what
//! it costs once spread out is remembered, so spreading it again costs one addition. That matters
//! because what runs after it is not: async-graphql's recursion-depth and directive checks and its
//! depth and complexity visitors walk the document with every fragment spread written out in
//! place, once per spread. The bounds here keep that walk (and execution) small: a document they
//! let through spreads out to at most [`MAX_SELECTIONS`] selections in all.
//!
//! The costs are first read from the text, token by token, before it is parsed
//! ([`QueryLimits::check_text`]): async-graphql's parser takes about a microsecond a byte, so a
//! document refused for its cost (a fragment bomb) is refused in microseconds, without being
//! parsed. They are read again from the parsed document ([`QueryLimits::check`]), together with the
//! aliases and introspection. Both readings give the same outline of a well-formed document (a
//! property test holds them to it); of text the parser refuses, the first is only an estimate.
use std::collections::{HashMap, hash_map::Entry};

use async_graphql::{
    Positioned, ServerError, ServerResult,
    parser::types::{Directive, ExecutableDocument, Field, Selection, SelectionSet},
};

/// Most tokens (names, punctuation, numbers, strings) a document's text may hold. The same default
/// as graphql-java's parser; clients' operations are a few hundred.
pub const MAX_TOKENS: usize = 15_000;
/// Most fragment definitions in one document.
pub const MAX_FRAGMENTS: usize = 100;
/// Most selections (fields, fragment spreads, inline fragments, and the arguments of each and of
/// their directives) that every operation and every fragment, each with the fragments it spreads
/// written out in place, may hold together. Arguments count because validation compares them
/// pairwise wherever fields meet, spread out like the rest. Five times the complexity limit: an
/// operation that complexity lets through stays well inside it.
pub const MAX_SELECTIONS: usize = 10_000;

/// The limits a document must keep.
#[derive(Clone, Copy, Debug)]
pub struct QueryLimits {
    pub max_root_fields: usize,
    pub max_aliases: usize,
    pub introspection: bool,
    pub max_tokens: usize,
    pub max_fragments: usize,
    pub max_selections: usize,
}

fn refusal(code: &'static str, message: String) -> ServerError {
    crate::error::request_error(code, message)
}

fn too_complex(message: String) -> ServerError {
    refusal("QUERY_TOO_COMPLEX", message)
}

impl QueryLimits {
    /// Checks a document's text before it is parsed: its tokens, its fragments, what they spread
    /// out to, its root fields. Reads the text once, and stops as soon as a bound is passed.
    pub fn check_text(&self, text: &str) -> ServerResult<()> {
        let outline = Outline::of_text(text, self.max_tokens, self.max_fragments)?;
        self.check_outline(&outline)
    }

    /// Checks a parsed document against the limits, in time linear in its size.
    pub fn check(&self, document: &ExecutableDocument) -> ServerResult<()> {
        self.check_outline(&Outline::of_document(document))?;

        let mut aliases = 0usize;
        let mut introspects = false;
        let sets = document
            .operations
            .iter()
            .map(|(_, op)| &op.node.selection_set)
            .chain(document.fragments.values().map(|f| &f.node.selection_set));
        for set in sets {
            walk(set, &mut |field| {
                if field.alias.is_some() {
                    aliases += 1;
                }
                let name = field.name.node.as_str();
                if name == "__schema" || name == "__type" {
                    introspects = true;
                }
            });
        }
        if aliases > self.max_aliases {
            return Err(too_complex(format!(
                "the document uses {aliases} aliases; at most {} are allowed",
                self.max_aliases
            )));
        }
        if introspects && !self.introspection {
            return Err(refusal(
                "INTROSPECTION_DISABLED",
                "introspection is disabled on this server".into(),
            ));
        }
        Ok(())
    }

    fn check_outline(&self, outline: &Outline) -> ServerResult<()> {
        if outline.fragments.len() > self.max_fragments {
            return Err(too_many_fragments(self.max_fragments));
        }
        let costs = self.fragment_costs(outline)?;
        let mut selections = costs
            .values()
            .fold(0usize, |sum, cost| sum.saturating_add(cost.selections));
        self.check_selections(selections)?;
        for operation in &outline.operations {
            let cost = operation.spread_out(|spread| costs.get(spread).copied());
            if cost.roots > self.max_root_fields {
                return Err(too_complex(format!(
                    "an operation selects {} root fields; at most {} are allowed",
                    cost.roots, self.max_root_fields
                )));
            }
            selections = selections.saturating_add(cost.selections);
            self.check_selections(selections)?;
        }
        Ok(())
    }

    fn check_selections(&self, selections: usize) -> ServerResult<()> {
        if selections > self.max_selections {
            return Err(too_complex(format!(
                "the document, with its fragments spread out, selects more than {} fields, \
                 fragments and arguments",
                self.max_selections
            )));
        }
        Ok(())
    }

    /// What each fragment costs with the fragments it spreads written out, each fragment walked
    /// once. Fragments are resolved depth first with a stack of their own (a chain of fragments
    /// never deepens the call stack), and refused as soon as one passes `max_selections` or a
    /// cycle is found: a fragment that spreads itself, directly or not, spreads out for ever.
    fn fragment_costs<'a>(&self, outline: &Outline<'a>) -> ServerResult<HashMap<&'a str, Cost>> {
        let locals = &outline.fragments;
        // Each fragment's cost once known; None while it is being resolved.
        let mut marks: HashMap<&str, Option<Cost>> = HashMap::with_capacity(locals.len());
        // Fragments being resolved, each with the index of the next spread to look at.
        let mut stack: Vec<(&str, usize)> = Vec::new();
        for start in locals.keys() {
            if marks.contains_key(start) {
                continue;
            }
            marks.insert(start, None);
            stack.push((start, 0));
            while let Some((name, next)) = stack.last_mut() {
                let name = *name;
                let local = &locals[name];
                if let Some((target, _)) = local.spreads.get(*next) {
                    *next += 1;
                    // An unknown fragment costs nothing more here; validation refuses it.
                    if !locals.contains_key(target) {
                        continue;
                    }
                    match marks.entry(target) {
                        Entry::Occupied(open) if open.get().is_none() => {
                            return Err(too_complex(format!(
                                "fragment `{}` spreads itself",
                                crate::error::quote(target)
                            )));
                        }
                        Entry::Occupied(_) => {}
                        Entry::Vacant(new) => {
                            new.insert(None);
                            stack.push((target, 0));
                        }
                    }
                    continue;
                }
                let cost = local.spread_out(|spread| marks.get(spread).copied().flatten());
                if cost.selections > self.max_selections {
                    return Err(too_complex(format!(
                        "fragment `{}` spreads out to more than {} fields, fragments and arguments",
                        crate::error::quote(name),
                        self.max_selections
                    )));
                }
                marks.insert(name, Some(cost));
                stack.pop();
            }
        }
        Ok(marks
            .into_iter()
            .filter_map(|(name, cost)| Some((name, cost?)))
            .collect())
    }
}

/// What a selection set (an operation's or a fragment's) costs with its fragments spread out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cost {
    /// Fields, fragment spreads and inline fragments, at every level.
    selections: usize,
    /// Fields at its own level (through inline fragments and spreads): for an operation, its root
    /// fields.
    roots: usize,
}

/// A selection set as written: its own cost, without what the fragments it spreads add, and those
/// spreads (whether each is at its top level).
#[derive(Debug, Default, PartialEq, Eq)]
struct Local<'a> {
    own: Cost,
    spreads: Vec<(&'a str, bool)>,
}

impl Local<'_> {
    /// Its cost with every spread's cost added (those `cost_of` does not know add nothing).
    fn spread_out(&self, cost_of: impl Fn(&str) -> Option<Cost>) -> Cost {
        let mut cost = self.own;
        for (name, top) in &self.spreads {
            if let Some(spread) = cost_of(name) {
                cost.selections = cost.selections.saturating_add(spread.selections);
                if *top {
                    cost.roots = cost.roots.saturating_add(spread.roots);
                }
            }
        }
        cost
    }
}

/// A document's operations and fragments, each as written ([`Local`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct Outline<'a> {
    operations: Vec<Local<'a>>,
    fragments: HashMap<&'a str, Local<'a>>,
}

impl<'a> Outline<'a> {
    fn of_document(document: &'a ExecutableDocument) -> Self {
        Outline {
            operations: document
                .operations
                .iter()
                .map(|(_, op)| Self::local(&op.node.selection_set))
                .collect(),
            fragments: document
                .fragments
                .iter()
                .map(|(name, fragment)| (name.as_str(), Self::local(&fragment.node.selection_set)))
                .collect(),
        }
    }

    fn local(set: &'a Positioned<SelectionSet>) -> Local<'a> {
        /// Recursion follows the nesting written in the text, which the parser bounds (64 levels).
        fn add<'a>(local: &mut Local<'a>, set: &'a Positioned<SelectionSet>, top: bool) {
            for item in &set.node.items {
                local.own.selections += 1;
                match &item.node {
                    Selection::Field(field) => {
                        local.own.selections +=
                            field.node.arguments.len() + arguments(&field.node.directives);
                        local.own.roots += usize::from(top);
                        add(local, &field.node.selection_set, false);
                    }
                    Selection::InlineFragment(inline) => {
                        local.own.selections += arguments(&inline.node.directives);
                        add(local, &inline.node.selection_set, top)
                    }
                    Selection::FragmentSpread(spread) => {
                        local.own.selections += arguments(&spread.node.directives);
                        local
                            .spreads
                            .push((spread.node.fragment_name.node.as_str(), top));
                    }
                }
            }
        }
        fn arguments(directives: &[Positioned<Directive>]) -> usize {
            directives.iter().map(|d| d.node.arguments.len()).sum()
        }
        let mut local = Local::default();
        add(&mut local, set, true);
        local
    }

    /// The outline read from the text, token by token, without parsing it; refused as soon as it
    /// has more than `max_tokens` tokens or `max_fragments` fragments. In a well-formed document,
    /// braces outside parentheses are only ever selection sets (values in braces are arguments or
    /// variable defaults, in parentheses), so reading the names and punctuation between them
    /// is enough: a name is a field, unless it is an alias (`:` follows it, and the field's name
    /// comes after), a directive (`@` before it), a fragment spread's (`...` before it) or an
    /// inline fragment's type (`... on` before it); `...` followed by `on`, `@` or `{` is an
    /// inline fragment.
    fn of_text(text: &'a str, max_tokens: usize, max_fragments: usize) -> ServerResult<Self> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Expect {
            Selection,
            /// After `...`.
            Spread,
            /// After `... on`, or `@`, or an alias's `:`: a name that adds no selection.
            Other,
        }
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Header<'a> {
            /// Between definitions.
            Start,
            /// After `fragment`, before its name.
            FragmentName,
            Fragment(&'a str),
            Operation,
        }
        let mut outline = Outline::default();
        let mut local = Local::default();
        let mut header = Header::Start;
        let mut parens = 0usize;
        // Object and list values open inside parentheses.
        let mut values_open = 0usize;
        // The open selection sets of the definition being read: whether each is a field's.
        let mut open: Vec<bool> = Vec::new();
        let mut fields_open = 0usize;
        // Whether the next `{` opens a field's selection set (else an inline fragment's).
        let mut field_set = false;
        let mut expect = Expect::Selection;
        let mut fragments = 0usize;
        for (count, token) in (Tokens { text, at: 0 }).enumerate() {
            if count >= max_tokens {
                return Err(too_complex(format!(
                    "the document has more than {max_tokens} tokens"
                )));
            }
            match token {
                Token::Punct(b'(') => parens += 1,
                Token::Punct(b')') => parens = parens.saturating_sub(1),
                // Inside a selection set, parentheses hold the arguments of a field or directive:
                // each is one `name: value`, its colon outside any object or list value. Each
                // counts as a selection, so that arguments spread out with their fragments too.
                Token::Punct(b'{' | b'[') if parens > 0 => values_open += 1,
                Token::Punct(b'}' | b']') if parens > 0 => {
                    values_open = values_open.saturating_sub(1)
                }
                Token::Punct(b':') if parens == 1 && values_open == 0 && !open.is_empty() => {
                    local.own.selections += 1
                }
                _ if parens > 0 => {}
                Token::Punct(b'{') => {
                    if open.is_empty() {
                        local = Local::default();
                    } else if expect == Expect::Spread {
                        // `... {`: an inline fragment without a type condition.
                        local.own.selections += 1;
                        field_set = false;
                    }
                    let field = !open.is_empty() && field_set;
                    open.push(field);
                    fields_open += usize::from(field);
                    expect = Expect::Selection;
                }
                Token::Punct(b'}') => {
                    if let Some(field) = open.pop() {
                        fields_open -= usize::from(field);
                        if open.is_empty() {
                            let done = std::mem::take(&mut local);
                            match header {
                                Header::Fragment(name) => {
                                    outline.fragments.insert(name, done);
                                }
                                _ => outline.operations.push(done),
                            }
                            header = Header::Start;
                        }
                    }
                    expect = Expect::Selection;
                }
                Token::Name(name) if open.is_empty() => {
                    header = match header {
                        Header::Start if name == "fragment" => {
                            fragments += 1;
                            if fragments > max_fragments {
                                return Err(too_many_fragments(max_fragments));
                            }
                            Header::FragmentName
                        }
                        Header::Start => Header::Operation,
                        Header::FragmentName => Header::Fragment(name),
                        other => other,
                    }
                }
                Token::Spread => expect = Expect::Spread,
                Token::Punct(b'@') => {
                    if expect == Expect::Spread {
                        // `... @include(…) {`: an inline fragment without a type condition.
                        local.own.selections += 1;
                        field_set = false;
                    }
                    expect = Expect::Other;
                }
                Token::Punct(b':') => expect = Expect::Other,
                Token::Name(name) => {
                    let top = fields_open == 0;
                    match expect {
                        Expect::Spread if name == "on" => {
                            local.own.selections += 1;
                            field_set = false;
                            expect = Expect::Other;
                        }
                        Expect::Spread => {
                            local.own.selections += 1;
                            local.spreads.push((name, top));
                            expect = Expect::Selection;
                        }
                        Expect::Other => expect = Expect::Selection,
                        Expect::Selection => {
                            local.own.selections += 1;
                            local.own.roots += usize::from(top);
                            field_set = true;
                        }
                    }
                }
                Token::Punct(_) | Token::Value => expect = Expect::Selection,
            }
        }
        Ok(outline)
    }
}

fn too_many_fragments(max: usize) -> ServerError {
    too_complex(format!("the document defines more than {max} fragments"))
}

/// Visits every field written in a selection set (fragments are visited where defined). The
/// nesting is bounded by the parser's recursion limit, so recursing here is safe.
fn walk(set: &Positioned<SelectionSet>, visit: &mut impl FnMut(&Field)) {
    for item in &set.node.items {
        match &item.node {
            Selection::Field(field) => {
                visit(&field.node);
                walk(&field.node.selection_set, visit);
            }
            Selection::InlineFragment(inline) => walk(&inline.node.selection_set, visit),
            Selection::FragmentSpread(_) => {}
        }
    }
}

/// A token of GraphQL text, as far as [`Outline::of_text`] needs to tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Name(&'a str),
    /// `...`
    Spread,
    /// Any other character outside names, numbers and strings: `{`, `(`, `:`, `@`, `$`…
    Punct(u8),
    /// A number or a string (block strings included).
    Value,
}

/// The tokens of a GraphQL text. Commas, white space and comments are no tokens. Reads the text
/// once, bytes at a time, and never fails: a text that is no GraphQL gets some tokens, and the
/// parser refuses it.
struct Tokens<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let bytes = self.text.as_bytes();
        let run = |mut i: usize, part: fn(u8) -> bool| {
            while i < bytes.len() && part(bytes[i]) {
                i += 1;
            }
            i
        };
        loop {
            let start = self.at;
            let &b = bytes.get(start)?;
            let (end, token) = match b {
                b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                    self.at += 1;
                    continue;
                }
                b'#' => {
                    self.at = run(start, |b| b != b'\n' && b != b'\r');
                    continue;
                }
                b'"' if bytes[start..].starts_with(b"\"\"\"") => {
                    (block_string_end(bytes, start + 3), Token::Value)
                }
                b'"' => (string_end(bytes, start + 1), Token::Value),
                b'.' => (run(start, |b| b == b'.'), Token::Spread),
                b'-' | b'0'..=b'9' => (
                    run(start + 1, |b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
                    }),
                    Token::Value,
                ),
                b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                    let end = run(start, |b| b.is_ascii_alphanumeric() || b == b'_');
                    // ASCII bytes only: the slice is on character boundaries.
                    (end, Token::Name(&self.text[start..end]))
                }
                other => (start + 1, Token::Punct(other)),
            };
            self.at = end;
            return Some(token);
        }
    }
}

/// Where a string that started before `i` ends: after its closing quote, or at the end of its line
/// (where the parser refuses it).
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            b'\n' | b'\r' => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Where a block string (`"""…"""`) whose text starts at `i` ends: after its closing quotes (`\"""`
/// is an escaped quote, not the end), or at the end of the text.
fn block_string_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\\\"\"\"") {
            i += 4;
        } else if bytes[i..].starts_with(b"\"\"\"") {
            return i + 3;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use async_graphql::parser::parse_query;
    use proptest::prelude::*;

    use super::*;

    const LIMITS: QueryLimits = QueryLimits {
        max_root_fields: 20,
        max_aliases: 50,
        introspection: true,
        max_tokens: MAX_TOKENS,
        max_fragments: MAX_FRAGMENTS,
        max_selections: MAX_SELECTIONS,
    };

    fn code(result: ServerResult<()>) -> Option<String> {
        result.err().map(|error| {
            error
                .extensions
                .and_then(|e| e.get("code").cloned())
                .map(|code| code.to_string().trim_matches('"').to_owned())
                .unwrap_or_default()
        })
    }

    /// The answer before parsing, and the answer once parsed (None: accepted).
    fn check(text: &str) -> (Option<String>, Option<String>) {
        (
            code(LIMITS.check_text(text)),
            code(LIMITS.check(&parse_query(text).unwrap())),
        )
    }

    /// What a check may take in these tests: they run unoptimised, maybe on a busy machine, and
    /// are there to catch work that grows with the document spread out, not to time the checks
    /// (the bench tool measures; a linear check on these documents is far inside this).
    const BOUND: Duration = Duration::from_millis(500);

    fn too_complex() -> Option<String> {
        Some("QUERY_TOO_COMPLEX".into())
    }

    /// `levels` named fragments, each spreading the next one `width` times, under `root`.
    fn bomb(root: &str, on: &str, levels: usize, width: usize, leaf: &str) -> String {
        let mut text = format!("{root} ");
        for level in 0..levels {
            let spreads = vec![format!("...L{}", level + 1); width].join(" ");
            text.push_str(&format!("fragment L{level} on {on} {{ {spreads} }} "));
        }
        text.push_str(&format!("fragment L{levels} on {on} {{ {leaf} }}"));
        text
    }

    #[test]
    fn a_fragment_bomb_is_refused_before_it_is_parsed_whatever_its_depth() {
        for levels in [5, 7, 10, 30, 99, 100, 1_000, 10_000] {
            let text = bomb("query { me { ...L0 } }", "User", levels, 10, "id");
            // Refused from the text alone: parsing costs time in proportion to the text, and the
            // check must not.
            let started = Instant::now();
            let answer = code(LIMITS.check_text(&text));
            let took = started.elapsed();
            assert_eq!(answer, too_complex(), "{levels}");
            assert!(took < BOUND, "{levels}: {took:?}");
            if levels <= 30 {
                let document = parse_query(&text).unwrap();
                assert_eq!(code(LIMITS.check(&document)), too_complex(), "{levels}");
            }
        }
        // At the root, where root fields are counted through the fragments.
        let text = bomb("query { ...L0 }", "Query", 40, 10, "unreadCount");
        assert_eq!(check(&text), (too_complex(), too_complex()));
        let text = bomb("query { ...L0 }", "Query", 2, 5, "unreadCount");
        assert_eq!(
            check(&text),
            (too_complex(), too_complex()),
            "25 root fields"
        );
    }

    #[test]
    fn fragments_within_the_bounds_pass() {
        for text in [
            bomb("query { me { ...L0 } }", "User", 3, 3, "id username"),
            "query Q($v: In = {a: \"}\"}) @d { me { ...A ...B } } fragment A on User { id ...B } \
             fragment B on User @d(x: {y: [1]}) { u: username ... on User { id } ... { id } \
             ... @include(if: $v) { id } }"
                .into(),
            // `fragment` and `on` are names like any other, inside a selection.
            "{ fragment on { fragment: on } ...fragmentOn } fragment fragmentOn on T { a }".into(),
        ] {
            assert_eq!(check(&text), (None, None), "{text}");
        }
    }

    #[test]
    fn cycles_too_many_fragments_and_too_many_tokens_are_refused() {
        for text in [
            "query { me { ...A } } fragment A on User { ...A }",
            "query { me { ...A } } fragment A on User { id ...B } fragment B on User { ...C } \
             fragment C on User { ...A }",
            // A cycle no operation reaches.
            "query { me { id } } fragment A on User { ...B } fragment B on User { ...A }",
        ] {
            assert_eq!(check(text), (too_complex(), too_complex()), "{text}");
        }
        let chain: String = (0..=MAX_FRAGMENTS)
            .map(|i| format!("fragment F{i} on User {{ ...F{} }} ", i + 1))
            .collect();
        let text = format!("query {{ me {{ ...F0 }} }} {chain}");
        assert_eq!(check(&text), (too_complex(), too_complex()));
        let text = format!("query {{ me {{ {} }} }}", "id ".repeat(MAX_TOKENS));
        assert_eq!(code(LIMITS.check_text(&text)), too_complex());
    }

    #[test]
    fn tokens_are_read_as_graphql_reads_them() {
        let text = r#"query Q($a: [Int!] = [1, -2.5e+3]) { f(s: "a \" b, c", t: """x "" \""" y""") { ...F } } # a, b c"#;
        // query Q ( $ a : [ Int ! ] = [ 1 -2.5e+3 ] ) { f ( s : "…" t : """…""" ) { ...F } }
        let tokens: Vec<Token> = (Tokens { text, at: 0 }).collect();
        assert_eq!(tokens.len(), 31, "{tokens:?}");
        assert_eq!(tokens[27], Token::Spread);
        assert_eq!(tokens[28], Token::Name("F"));
        let count = |text| (Tokens { text, at: 0 }).count();
        assert_eq!(count(""), 0);
        assert_eq!(count("\"unterminated\n a"), 2);
        assert_eq!(count("\"\"\"never closed"), 1);
        assert_eq!(count("\"ends in a backslash\\"), 1);
        // Each byte of a character outside strings is a token of its own (the parser refuses it).
        assert_eq!(count("é { ü }"), 6);
        // The fragment limit counts definitions, not the name `fragment`.
        let text = "query { fragment } fragment A on T { a } # fragment\n";
        assert!(Outline::of_text(text, 100, 1).is_ok());
        assert!(Outline::of_text(text, 100, 0).is_err());
        assert!(Outline::of_text(text, 11, 1).is_ok());
        assert!(Outline::of_text(text, 10, 1).is_err());
    }

    /// One generated document: fragments `F0..Fn`, each a selection of fields (some aliased,
    /// some with arguments or directives, some nested), inline fragments, and spreads of later
    /// fragments only (so no cycles), and one operation.
    #[derive(Clone, Debug)]
    struct Doc {
        /// Per fragment, then the operation last: its items.
        sets: Vec<Vec<Item>>,
        /// How many times each spread is written where it stands.
        width: usize,
    }

    #[derive(Clone, Debug)]
    enum Item {
        Field {
            alias: bool,
            extras: u8,
            nested: Vec<Item>,
        },
        Spread(usize),
        Inline {
            extras: u8,
            nested: Vec<Item>,
        },
    }

    fn items(fragments: usize, from: usize) -> impl Strategy<Value = Vec<Item>> {
        let leaf = prop_oneof![
            (any::<bool>(), any::<u8>()).prop_map(|(alias, extras)| Item::Field {
                alias,
                extras,
                nested: vec![]
            }),
            (from..=fragments).prop_map(Item::Spread),
        ];
        let item = leaf.prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                (
                    any::<bool>(),
                    any::<u8>(),
                    prop::collection::vec(inner.clone(), 1..4)
                )
                    .prop_map(|(alias, extras, nested)| Item::Field {
                        alias,
                        extras,
                        nested
                    }),
                (any::<u8>(), prop::collection::vec(inner, 1..4))
                    .prop_map(|(extras, nested)| Item::Inline { extras, nested }),
            ]
        });
        prop::collection::vec(item, 1..6)
    }

    fn doc(max_fragments: usize, max_width: usize) -> impl Strategy<Value = Doc> {
        (0..=max_fragments, 1..=max_width).prop_flat_map(|(n, width)| {
            // Fragment i may spread fragments i+1..=n (n itself: an unknown fragment), so there
            // are no cycles; the operation, last, may spread any.
            let sets: Vec<_> = (0..n)
                .map(|i| items(n, i + 1).boxed())
                .chain([items(n, 0).boxed()])
                .collect();
            sets.prop_map(move |sets| Doc { sets, width })
        })
    }

    impl Doc {
        fn fragments(&self) -> usize {
            self.sets.len() - 1
        }

        fn text(&self) -> String {
            let mut text = String::from("query Q($v: In = {a: \"}\", b: [{c: 1}]}) @d(x: 1) ");
            self.write(self.sets.last().unwrap(), &mut text);
            for (i, set) in self.sets[..self.fragments()].iter().enumerate() {
                text.push_str(&format!(" fragment F{i} on T @d "));
                self.write(set, &mut text);
            }
            text
        }

        fn write(&self, items: &[Item], out: &mut String) {
            out.push('{');
            for item in items {
                match item {
                    Item::Field {
                        alias,
                        extras,
                        nested,
                    } => {
                        if *alias {
                            out.push_str(" a: ");
                        }
                        // Fields named like keywords are fields all the same.
                        out.push_str(["f", "on", "fragment", "query"][usize::from(extras % 4)]);
                        if extras & 4 != 0 {
                            out.push_str("(x: {y: \"{\", z: [1, {w: $v}]}, s: \"\"\"}\"\"\")");
                        }
                        if extras & 8 != 0 {
                            out.push_str(" @include(if: $v) @d");
                        }
                        if !nested.is_empty() {
                            self.write(nested, out);
                        }
                    }
                    Item::Spread(f) => {
                        for _ in 0..self.width {
                            out.push_str(&format!(" ...F{f}"));
                            if f % 2 == 1 {
                                out.push_str(" @d");
                            }
                        }
                    }
                    Item::Inline { extras, nested } => {
                        out.push_str(
                            ["...", "... on T", "... @d", "...on T @skip(if: $v)"]
                                [usize::from(extras % 4)],
                        );
                        self.write(nested, out);
                    }
                }
                out.push(' ');
            }
            out.push('}');
        }

        /// The naive count: every spread written out in place, as async-graphql walks it. Gives
        /// up (None) past `*budget` selections, so that it stays small on big documents.
        fn naive(&self, items: &[Item], top: bool, budget: &mut usize) -> Option<Cost> {
            let mut cost = Cost::default();
            for item in items {
                let times = match item {
                    Item::Spread(_) => self.width,
                    _ => 1,
                };
                for _ in 0..times {
                    let arguments = match item {
                        Item::Field { extras, .. } => {
                            2 * usize::from(extras & 4 != 0) + usize::from(extras & 8 != 0)
                        }
                        Item::Inline { extras, .. } => usize::from(extras % 4 == 3),
                        Item::Spread(_) => 0,
                    };
                    *budget = budget.checked_sub(1 + arguments)?;
                    cost.selections += 1 + arguments;
                    let inner = match item {
                        Item::Field { nested, .. } => {
                            cost.roots += usize::from(top);
                            self.naive(nested, false, budget)?
                        }
                        Item::Inline { nested, .. } => self.naive(nested, top, budget)?,
                        Item::Spread(f) if *f < self.fragments() => {
                            self.naive(&self.sets[*f], top, budget)?
                        }
                        Item::Spread(_) => Cost::default(),
                    };
                    cost.selections += inner.selections;
                    cost.roots += inner.roots;
                }
            }
            Some(cost)
        }

        /// Whether the document keeps `limits`'s root field and selection bounds, by the naive
        /// count.
        fn keeps(&self, limits: &QueryLimits) -> bool {
            let mut total = 0usize;
            for (i, set) in self.sets.iter().enumerate() {
                let mut budget = limits.max_selections;
                let Some(cost) = self.naive(set, true, &mut budget) else {
                    return false;
                };
                if i == self.fragments() && cost.roots > limits.max_root_fields {
                    return false;
                }
                total += cost.selections;
            }
            total <= limits.max_selections
        }

        fn aliases(items: &[Item]) -> usize {
            items
                .iter()
                .map(|item| match item {
                    Item::Field { alias, nested, .. } => {
                        usize::from(*alias) + Self::aliases(nested)
                    }
                    Item::Inline { nested, .. } => Self::aliases(nested),
                    Item::Spread(_) => 0,
                })
                .sum()
        }
    }

    proptest! {
        /// On small documents both readings give the same outline, and the checks answer
        /// exactly as counting every spread out would.
        #[test]
        fn the_checks_agree_with_a_naive_count(
            doc in doc(6, 3),
            roots in 1usize..12,
            selections in 1usize..400,
        ) {
            let limits = QueryLimits {
                max_root_fields: roots,
                max_selections: selections,
                max_aliases: 1_000,
                ..LIMITS
            };
            let text = doc.text();
            let document = parse_query(&text).unwrap();
            prop_assert_eq!(
                Outline::of_text(&text, MAX_TOKENS, MAX_FRAGMENTS).unwrap(),
                Outline::of_document(&document),
                "{}", text
            );
            let keeps = doc.keeps(&limits);
            prop_assert_eq!(limits.check_text(&text).is_ok(), keeps, "{}", text);
            prop_assert_eq!(limits.check(&document).is_ok(), keeps, "{}", text);
            // Aliases are counted as written, once each.
            let aliases: usize = doc.sets.iter().map(|set| Doc::aliases(set)).sum();
            let few = QueryLimits {
                max_aliases: aliases.saturating_sub(1),
                max_selections: usize::MAX,
                max_root_fields: usize::MAX,
                ..limits
            };
            prop_assert_eq!(few.check(&document).is_ok(), aliases == 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Big documents, fragments spreading many others many times: answered at once, and as
        /// the naive count (which gives up past the bound) would.
        #[test]
        fn big_documents_are_answered_at_once(doc in doc(60, 12)) {
            let text = doc.text();
            let limits = QueryLimits { max_aliases: usize::MAX, ..LIMITS };
            let started = Instant::now();
            let answer = limits.check_text(&text);
            let took = started.elapsed();
            prop_assert!(took < BOUND, "{:?}", took);
            if let Err(refused) = &answer {
                prop_assert!(refused.message.len() < 200);
            }
            let tokens = (Tokens { text: &text, at: 0 }).count();
            if tokens <= MAX_TOKENS {
                let keeps = doc.keeps(&limits);
                prop_assert_eq!(answer.is_ok(), keeps);
                let document = parse_query(&text).unwrap();
                let started = Instant::now();
                prop_assert_eq!(limits.check(&document).is_ok(), keeps);
                prop_assert!(started.elapsed() < BOUND);
            } else {
                prop_assert!(answer.is_err());
            }
        }
    }
}
