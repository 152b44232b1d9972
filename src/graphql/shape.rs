//! Refuses query shapes that the depth and complexity limits let through but that still cost the
//! server dearly: many root fields (each may be a database round trip, or a password hash for
//! `login`, so aliases would multiply a brute force), many aliases, and introspection when it is
//! switched off. Checked right after parsing, before validation and execution (by `api::Api`).
use std::collections::HashSet;

use async_graphql::{
    Positioned, ServerError, ServerResult,
    parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet},
};

/// The limits a document must keep.
#[derive(Clone, Copy, Debug)]
pub struct QueryShape {
    pub max_root_fields: usize,
    pub max_aliases: usize,
    pub introspection: bool,
}

fn refusal(code: &'static str, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    error
}

impl QueryShape {
    /// Checks a parsed document against the limits.
    pub fn check(&self, document: &ExecutableDocument) -> ServerResult<()> {
        for (_, operation) in document.operations.iter() {
            let mut visiting = HashSet::new();
            let roots = root_fields(document, &operation.node.selection_set, &mut visiting);
            if roots > self.max_root_fields {
                return Err(refusal(
                    "QUERY_TOO_COMPLEX",
                    format!(
                        "an operation selects {roots} root fields; at most {} are allowed",
                        self.max_root_fields
                    ),
                ));
            }
        }
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
            return Err(refusal(
                "QUERY_TOO_COMPLEX",
                format!(
                    "the document uses {aliases} aliases; at most {} are allowed",
                    self.max_aliases
                ),
            ));
        }
        if introspects && !self.introspection {
            return Err(refusal(
                "INTROSPECTION_DISABLED",
                "introspection is disabled on this server".into(),
            ));
        }
        Ok(())
    }
}

/// Root fields of a selection set, with fragments spread in. Runs before validation, so a
/// fragment cycle is possible here: a fragment already being expanded counts as nothing.
fn root_fields(
    document: &ExecutableDocument,
    set: &Positioned<SelectionSet>,
    visiting: &mut HashSet<String>,
) -> usize {
    set.node
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(inline) => {
                root_fields(document, &inline.node.selection_set, visiting)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.to_string();
                let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node) else {
                    return 0;
                };
                if !visiting.insert(name.clone()) {
                    return 0;
                }
                let n = root_fields_of(document, fragment, visiting);
                visiting.remove(&name);
                n
            }
        })
        .sum()
}

fn root_fields_of(
    document: &ExecutableDocument,
    fragment: &Positioned<FragmentDefinition>,
    visiting: &mut HashSet<String>,
) -> usize {
    root_fields(document, &fragment.node.selection_set, visiting)
}

/// Visits every field written in a selection set (fragments are visited where defined). The
/// nesting is bounded by the parser's recursion limit, so recursing here is safe.
fn walk(
    set: &Positioned<SelectionSet>,
    visit: &mut impl FnMut(&async_graphql::parser::types::Field),
) {
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
