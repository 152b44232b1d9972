//! What a subscriber selects of a `messageEvents` event, read against the schema's own types: its
//! canonical spelling (its shape), whether it is valid as it stands, and whether every field it
//! reaches reads the same to every viewer, so that one render of an event can serve them all (see
//! `render_cache`).
//!
//! Whether a field reads the same to every viewer is said by the field itself, with a tag beside
//! its resolver: `#[graphql(tag = "same_for_every_viewer")]`, or `#[graphql(tag = "per_viewer")]`
//! for a field whose value depends on who asks. A field with neither is taken to differ per viewer,
//! and `every_field_a_shared_render_can_reach_says_whether_it_differs_per_viewer` (below) fails
//! while any field of a type a shared render can reach has neither: a field added later is
//! classified where it is written. Tags are federation metadata; without federation they appear in
//! no SDL and no introspection.
use std::{collections::HashMap, fmt::Write as _, sync::Arc};

use async_graphql::{
    Name, OutputType, Positioned,
    parser::types::{Field, FragmentDefinition, Selection as Item, SelectionSet},
    registry::{MetaType, MetaTypeName, Registry},
};

/// The tag of a field whose value is the same for every viewer allowed to see the event.
pub const SAME_FOR_EVERY_VIEWER: &str = "same_for_every_viewer";
/// The tag of a field whose value depends on the viewer.
pub const PER_VIEWER: &str = "per_viewer";

/// A selection read by [`SelectionRules::read`].
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// The selection spelled canonically: fragments written out in place, one space after each
    /// field, aliases kept. Two subscribers whose selections have the same shape receive the same
    /// response.
    pub shape: Arc<str>,
    /// Whether every field it reaches is tagged [`SAME_FOR_EVERY_VIEWER`].
    pub same_for_every_viewer: bool,
}

/// What a field's tags say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sharing {
    Same,
    PerViewer,
    Unmarked,
}

/// Where a field leads.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Leads {
    /// A scalar or an enum: no selection below it.
    Leaf,
    /// An object type, by name: a selection below it.
    Object(String),
    /// An interface or a union, which this reading does not follow.
    Other,
}

/// One field, as the registry describes it.
#[derive(Debug)]
struct FieldRule {
    leads: Leads,
    takes_arguments: bool,
    sharing: Sharing,
}

/// The object types reachable from one root type, with each field's type, arguments and tags,
/// taken from the schema's registry.
pub struct SelectionRules {
    root: String,
    types: HashMap<String, HashMap<String, FieldRule>>,
}

/// Most fields, and most levels below the subscription field, that a selection read here may have.
/// Real selections of a message event are far smaller; the bounds keep a selection well inside the
/// schema's own depth and complexity limits, so that a lean subscription (see `lean_subscription`),
/// whose document is judged by this reading alone, never gets past what the schema would refuse.
const MAX_FIELDS: usize = 100;
const MAX_DEPTH: usize = 6;

impl SelectionRules {
    /// The rules for selections of `T` and everything below it, from the same type information
    /// the schema registers for `T`.
    pub fn of<T: OutputType>() -> Self {
        let mut registry = Registry::default();
        T::create_type_info(&mut registry);
        let types = registry
            .types
            .iter()
            .filter_map(|(name, ty)| match ty {
                MetaType::Object { fields, .. } => Some((
                    name.clone(),
                    fields
                        .iter()
                        .map(|(field_name, field)| {
                            (
                                field_name.clone(),
                                FieldRule {
                                    leads: leads(&registry, &field.ty),
                                    takes_arguments: !field.args.is_empty(),
                                    sharing: sharing(&field.tags),
                                },
                            )
                        })
                        .collect(),
                )),
                _ => None,
            })
            .collect();
        Self {
            root: T::type_name().into_owned(),
            types,
        }
    }

    /// Reads a selection of the root type, or None if it uses what this reading does not follow:
    /// a field the type does not have, arguments, directives, fragments on other types, interfaces
    /// or unions, a response key used twice on one level (even for the same field), a leaf with a
    /// selection or an object without one, or more than the bounds allow. What it reads is
    /// therefore valid, with nothing left for field merging to decide.
    pub fn read(
        &self,
        fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
        set: &SelectionSet,
    ) -> Option<Selection> {
        let mut reader = Reader {
            rules: self,
            fragments,
            shape: String::new(),
            fields: 0,
            same_for_every_viewer: true,
        };
        reader.level(&self.root, set, 1).then(|| Selection {
            shape: reader.shape.into(),
            same_for_every_viewer: reader.same_for_every_viewer,
        })
    }
}

/// Where a field of type `ty` (`[User!]!`, `Message`, ...) leads.
fn leads(registry: &Registry, ty: &str) -> Leads {
    let name = MetaTypeName::concrete_typename(ty);
    match registry.types.get(name) {
        Some(MetaType::Scalar { .. } | MetaType::Enum { .. }) => Leads::Leaf,
        Some(MetaType::Object { .. }) => Leads::Object(name.to_owned()),
        _ => Leads::Other,
    }
}

/// What a field's tags say; both tags at once count as per viewer.
fn sharing(tags: &[String]) -> Sharing {
    let tagged = |tag: &str| tags.iter().any(|t| t == tag);
    if tagged(PER_VIEWER) {
        Sharing::PerViewer
    } else if tagged(SAME_FOR_EVERY_VIEWER) {
        Sharing::Same
    } else {
        Sharing::Unmarked
    }
}

struct Reader<'a> {
    rules: &'a SelectionRules,
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    shape: String,
    fields: usize,
    same_for_every_viewer: bool,
}

impl<'a> Reader<'a> {
    /// Reads one level of selection (its fragments written out in place).
    fn level(&mut self, type_name: &str, set: &'a SelectionSet, depth: usize) -> bool {
        let mut keys = Vec::new();
        depth <= MAX_DEPTH && self.items(type_name, set, depth, &mut keys)
    }

    fn items(
        &mut self,
        type_name: &str,
        set: &'a SelectionSet,
        depth: usize,
        keys: &mut Vec<&'a str>,
    ) -> bool {
        for selection in &set.items {
            let ok = match &selection.node {
                Item::Field(field) => self.field(type_name, &field.node, depth, keys),
                Item::FragmentSpread(spread) => {
                    let spread = &spread.node;
                    match self.fragments.get(&spread.fragment_name.node) {
                        Some(fragment)
                            if spread.directives.is_empty()
                                && fragment.node.directives.is_empty()
                                && fragment.node.type_condition.node.on.node == type_name =>
                        {
                            self.items(type_name, &fragment.node.selection_set.node, depth, keys)
                        }
                        _ => false,
                    }
                }
                Item::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let on_this_type = fragment
                        .type_condition
                        .as_ref()
                        .is_none_or(|condition| condition.node.on.node == type_name);
                    on_this_type
                        && fragment.directives.is_empty()
                        && self.items(type_name, &fragment.selection_set.node, depth, keys)
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }

    fn field(
        &mut self,
        type_name: &str,
        field: &'a Field,
        depth: usize,
        keys: &mut Vec<&'a str>,
    ) -> bool {
        let name = field.name.node.as_str();
        let (leads, sharing) = if name == "__typename" {
            (&Leads::Leaf, Sharing::Same)
        } else {
            match self.rules.types.get(type_name).and_then(|t| t.get(name)) {
                Some(rule) if !rule.takes_arguments => (&rule.leads, rule.sharing),
                _ => return false,
            }
        };
        self.same_for_every_viewer &= sharing == Sharing::Same;
        let key = field.response_key().node.as_str();
        self.fields += 1;
        if !field.directives.is_empty() || keys.contains(&key) || self.fields > MAX_FIELDS {
            return false;
        }
        keys.push(key);
        if let Some(alias) = &field.alias {
            let _ = write!(self.shape, "{}:", alias.node);
        }
        self.shape.push_str(name);
        let set = &field.selection_set.node;
        let ok = match leads {
            Leads::Leaf => set.items.is_empty(),
            Leads::Object(_) if set.items.is_empty() => false,
            Leads::Object(child) => {
                self.shape.push('{');
                let ok = self.level(child, set, depth + 1);
                self.shape.push('}');
                ok
            }
            Leads::Other => false,
        };
        self.shape.push(' ');
        ok
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use async_graphql::parser::{parse_query, types::DocumentOperations};

    use super::*;
    use crate::graphql::types::MessageEvent;

    fn rules() -> SelectionRules {
        SelectionRules::of::<MessageEvent>()
    }

    /// The types a shared render can reach: the root, and every object type a field tagged
    /// [`SAME_FOR_EVERY_VIEWER`] leads to from one of them.
    fn shared_types(rules: &SelectionRules) -> BTreeSet<String> {
        let mut reached = BTreeSet::from([rules.root.clone()]);
        let mut next = vec![rules.root.clone()];
        while let Some(type_name) = next.pop() {
            for rule in rules.types[&type_name].values() {
                if let (Sharing::Same, Leads::Object(child)) = (rule.sharing, &rule.leads)
                    && reached.insert(child.clone())
                {
                    next.push(child.clone());
                }
            }
        }
        reached
    }

    /// A field added to `Message` (or to any type a shared render reaches) must say whether its
    /// value depends on the viewer before this passes; so must a type newly reached.
    #[test]
    fn every_field_a_shared_render_can_reach_says_whether_it_differs_per_viewer() {
        let rules = rules();
        let mut mistakes = Vec::new();
        let shared = shared_types(&rules);
        for type_name in &shared {
            for (name, rule) in &rules.types[type_name] {
                if rule.sharing == Sharing::Unmarked {
                    mistakes.push(format!(
                        "{type_name}.{name}: tag it `{SAME_FOR_EVERY_VIEWER}` or `{PER_VIEWER}`"
                    ));
                }
            }
        }
        assert!(mistakes.is_empty(), "{mistakes:#?}");
        // The types the tags lead to today; a new one is worth a look at its fields' tags.
        assert_eq!(
            shared.into_iter().collect::<Vec<_>>(),
            [
                "Attachment",
                "Conversation",
                "Message",
                "MessageEvent",
                "SystemEvent",
                "ThreadSummary",
                "User"
            ]
        );
    }

    /// Tags are free text: a misspelt one would leave its field unmarked without a word.
    #[test]
    fn every_tag_is_one_of_the_two() {
        let mut registry = Registry::default();
        MessageEvent::create_type_info(&mut registry);
        for (type_name, ty) in &registry.types {
            for (name, field) in ty.fields().into_iter().flatten() {
                for tag in &field.tags {
                    assert!(
                        [SAME_FOR_EVERY_VIEWER, PER_VIEWER].contains(&tag.as_str()),
                        "{type_name}.{name}: unknown tag {tag}"
                    );
                }
                assert!(
                    !(field.tags.iter().any(|t| t == SAME_FOR_EVERY_VIEWER)
                        && field.tags.iter().any(|t| t == PER_VIEWER)),
                    "{type_name}.{name} has both tags"
                );
            }
        }
    }

    #[test]
    fn fields_whose_value_depends_on_the_viewer_are_tagged_so() {
        let rules = rules();
        for (type_name, field) in [
            ("Message", "clientMessageId"),
            ("Message", "isRead"),
            ("Message", "readBy"),
            ("Conversation", "unreadCount"),
            ("Conversation", "title"),
            ("Conversation", "muted"),
            ("Conversation", "members"),
            ("Conversation", "lastMessage"),
            ("User", "presence"),
            ("Attachment", "downloadUrl"),
            ("Message", "reactions"),
            ("ThreadSummary", "unreadCount"),
        ] {
            assert_eq!(
                rules.types[type_name][field].sharing,
                Sharing::PerViewer,
                "{type_name}.{field}"
            );
        }
    }

    /// The selection under the first root field of a one-operation document.
    fn read(rules: &SelectionRules, query: &str) -> Option<Selection> {
        let document = parse_query(query).expect("the test's query parses");
        let DocumentOperations::Single(operation) = &document.operations else {
            panic!("one operation");
        };
        let Item::Field(field) = &operation.node.selection_set.node.items[0].node else {
            panic!("a field");
        };
        rules.read(&document.fragments, &field.node.selection_set.node)
    }

    #[test]
    fn a_selection_is_spelled_canonically_and_says_whether_it_is_the_same_for_everyone() {
        let rules = rules();
        let same = read(
            &rules,
            "subscription { messageEvents { kind ... on MessageEvent { cursor } m: message { id sender { id } ...F } } } fragment F on Message { body }",
        )
        .expect("read");
        assert_eq!(&*same.shape, "kind cursor m:message{id sender{id } body } ");
        assert!(same.same_for_every_viewer);

        let own = read(
            &rules,
            "subscription { messageEvents { message { id isRead conversation { members { role user { presence { status } } } } } } }",
        )
        .expect("read");
        assert!(!own.same_for_every_viewer);
        let attachment = read(
            &rules,
            "subscription { messageEvents { message { attachment { filename downloadUrl } } } }",
        )
        .expect("read");
        assert!(!attachment.same_for_every_viewer);
    }

    #[test]
    fn what_the_reading_does_not_follow_is_refused() {
        let rules = rules();
        for query in [
            "subscription { messageEvents { message { bogus } } }",
            "subscription { messageEvents { message } }",
            "subscription { messageEvents { kind { x } } }",
            "subscription { messageEvents { kind kind } }",
            "subscription { messageEvents { kind @include(if: true) } }",
            "subscription { messageEvents { ... on Message { id } } }",
            "subscription { messageEvents { ...F } } fragment F on Message { id }",
            "subscription { messageEvents { message { replyTo { replyTo { replyTo { replyTo { replyTo { id } } } } } } } }",
        ] {
            assert_eq!(read(&rules, query), None, "{query}");
        }
    }
}
