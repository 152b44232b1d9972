//! Resolving a live event once for all its subscribers. In a room of 1,000 members, one message
//! reaches 1,000 subscriptions; most ask the same question of it (`message { id body sender { id } }`),
//! and for fields that read the same to every member the answer is the same. A [`Shared`] event
//! resolves its selection once per distinct shape, keeps the value in the event's envelope, and
//! hands copies to the other subscribers who asked in that shape. A selection that reaches any field
//! whose value depends on the viewer (`clientMessageId`, `isRead`, `conversation.unreadCount`,
//! `sender.presence`, ...) is resolved per subscriber, as before.
use std::{borrow::Cow, collections::HashMap, fmt::Write as _, sync::Arc};

use async_graphql::{
    Context, ContextSelectionSet, Name, OutputType, Positioned, ServerError, ServerResult, Value,
    parser::types::{Field, FragmentDefinition, Selection, SelectionSet},
    registry::Registry,
};

use async_graphql_value::RAW_VALUE_TOKEN;

use crate::{AppState, events::Envelope};

/// A subscription item and, for live events, the envelope it came in (where shared renders live)
/// and the shape of the subscriber's selection (None when it is not the same for every viewer).
pub struct Shared<T> {
    pub item: T,
    pub shared: Option<(Arc<Envelope>, Arc<str>)>,
}

impl<T> Shared<T> {
    /// An item resolved on its own (read back from the database, or asked for per viewer).
    pub fn alone(item: T) -> Self {
        Self { item, shared: None }
    }

    /// An item from a live event, which shares its renders when the selection allows.
    pub fn live(item: T, envelope: &Arc<Envelope>, shape: Option<&Arc<str>>) -> Self {
        Self {
            item,
            shared: shape.map(|shape| (envelope.clone(), shape.clone())),
        }
    }
}

/// Why a render was not kept for others.
enum Unshared {
    Failed(ServerError),
    /// Resolved, but with field errors: they belong to this subscriber's response alone.
    Partial(Value),
}

impl<T: OutputType> OutputType for Shared<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn qualified_type_name() -> String {
        T::qualified_type_name()
    }

    fn introspection_type_name(&self) -> Cow<'static, str> {
        self.item.introspection_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let slot = self
            .shared
            .as_ref()
            .and_then(|(envelope, shape)| envelope.renders.slot(shape));
        let Some(slot) = slot else {
            return self.item.resolve(ctx, field).await;
        };
        let mut made_here = false;
        let render = slot
            .get_or_try_init(|| async {
                made_here = true;
                let errors_before = ctx.query_env.errors.lock().map_or(0, |e| e.len());
                let value = self
                    .item
                    .resolve(ctx, field)
                    .await
                    .map_err(Unshared::Failed)?;
                let errors_after = ctx.query_env.errors.lock().map_or(0, |e| e.len());
                if errors_after == errors_before {
                    Ok(serialized_once(value))
                } else {
                    Err(Unshared::Partial(value))
                }
            })
            .await;
        match render {
            Ok(value) => {
                if !made_here && let Some(state) = ctx.data_opt::<AppState>() {
                    state.metrics.shared_renders.increment(1);
                }
                Ok(value.clone())
            }
            Err(Unshared::Failed(err)) => Err(err),
            Err(Unshared::Partial(value)) => Ok(value),
        }
    }
}

/// The value as JSON text, written once for every subscriber in the shape. async-graphql (with
/// its `raw_value` feature) writes an object whose one key is [`RAW_VALUE_TOKEN`] as the text it
/// holds, so each subscriber's frame copies a string instead of cloning and serialising the tree.
pub(super) fn serialized_once(value: Value) -> Value {
    match serde_json::to_string(&value) {
        Ok(json) => Value::Object(
            [(Name::new(RAW_VALUE_TOKEN), Value::String(json))]
                .into_iter()
                .collect(),
        ),
        Err(_) => value,
    }
}

/// A canonical spelling of the selection under a subscription field, taken once when the
/// subscription starts, or None if it reaches a field whose value may differ from one viewer to the
/// next (or uses something this check does not follow: arguments, directives, fragments on other
/// types).
pub fn shape_of(ctx: &Context<'_>, type_name: &str) -> Option<Arc<str>> {
    shape_of_selection(
        &ctx.query_env.fragments,
        type_name,
        &ctx.item.node.selection_set.node,
    )
}

/// Most fields, and most levels below the subscription field, that a shape may have. Real
/// selections of a message event are far smaller; the bounds keep a shape well inside the schema's
/// own depth and complexity limits, so that a plain subscription (see `plain`), whose document is
/// judged by this check alone, never gets past what the schema would refuse.
const MAX_SHAPE_FIELDS: usize = 100;
const MAX_SHAPE_DEPTH: usize = 6;

/// [`shape_of`] for a selection taken from a parsed document.
///
/// Besides being the same for every viewer, a selection with a shape is valid: every field
/// exists on its type, leaves have no selection and objects have one, and no response key is used
/// twice on one level (even for the same field), so nothing is left for field merging to decide.
pub fn shape_of_selection(
    fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    type_name: &str,
    set: &SelectionSet,
) -> Option<Arc<str>> {
    match valid_selection(fragments, type_name, set, false)? {
        (shape, true) => Some(shape),
        (_, false) => None,
    }
}

/// The canonical spelling of a valid selection (as [`shape_of_selection`] checks it), which may
/// also reach the fields [`resolved_per_viewer`] names when `per_viewer` allows, and whether it
/// reads the same to every viewer (then its events can share their renders).
pub fn valid_selection(
    fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    type_name: &str,
    set: &SelectionSet,
    per_viewer: bool,
) -> Option<(Arc<str>, bool)> {
    let mut writer = ShapeWriter {
        fragments,
        shape: String::new(),
        fields: 0,
        per_viewer_allowed: per_viewer,
        per_viewer_seen: false,
    };
    writer
        .level(type_name, set, 1)
        .then(|| (writer.shape.into(), !writer.per_viewer_seen))
}

struct ShapeWriter<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    shape: String,
    fields: usize,
    /// Whether fields resolved per viewer are allowed, and whether one was met.
    per_viewer_allowed: bool,
    per_viewer_seen: bool,
}

impl<'a> ShapeWriter<'a> {
    /// Writes one level of selection (its fragments flattened into it).
    fn level(&mut self, type_name: &str, set: &'a SelectionSet, depth: usize) -> bool {
        let mut keys = Vec::new();
        depth <= MAX_SHAPE_DEPTH && self.items(type_name, set, depth, &mut keys)
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
                Selection::Field(field) => self.field(type_name, &field.node, depth, keys),
                Selection::FragmentSpread(spread) => {
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
                Selection::InlineFragment(fragment) => {
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
        let leads_to = if name == "__typename" {
            Some(None)
        } else if let Some(leads_to) = same_for_every_viewer(type_name, name) {
            Some(leads_to)
        } else if self.per_viewer_allowed {
            let leads_to = resolved_per_viewer(type_name, name);
            self.per_viewer_seen |= leads_to.is_some();
            leads_to
        } else {
            None
        };
        let Some(child) = leads_to else {
            return false;
        };
        let key = field.response_key().node.as_str();
        self.fields += 1;
        if !field.arguments.is_empty()
            || !field.directives.is_empty()
            || keys.contains(&key)
            || self.fields > MAX_SHAPE_FIELDS
        {
            return false;
        }
        keys.push(key);
        if let Some(alias) = &field.alias {
            let _ = write!(self.shape, "{}:", alias.node);
        }
        self.shape.push_str(name);
        let set = &field.selection_set.node;
        let ok = match child {
            None => set.items.is_empty(),
            Some(_) if set.items.is_empty() => false,
            Some(child) => {
                self.shape.push('{');
                let ok = self.level(child, set, depth + 1);
                self.shape.push('}');
                ok
            }
        };
        self.shape.push(' ');
        ok
    }
}

/// The fields whose value is the same for every viewer allowed to see the event, with the type each
/// leads to (`Some(None)` for a leaf). Everything else, `Message.isRead` or
/// `Conversation.unreadCount` say, is resolved per subscriber.
fn same_for_every_viewer(type_name: &str, field: &str) -> Option<Option<&'static str>> {
    Some(match (type_name, field) {
        ("MessageEvent", "kind" | "cursor") => None,
        ("MessageEvent", "message") => Some("Message"),
        ("Message", "id" | "kind" | "body" | "createdAt" | "editedAt" | "deletedAt") => None,
        ("Message", "sender") => Some("User"),
        ("Message", "replyTo") => Some("Message"),
        ("Message", "attachment") => Some("Attachment"),
        ("Message", "systemEvent") => Some("SystemEvent"),
        ("Message", "conversation") => Some("Conversation"),
        ("Conversation", "id" | "kind" | "name" | "topic" | "lastActivityAt" | "createdAt") => None,
        ("User", "id" | "username" | "displayName" | "createdAt") => None,
        ("Attachment", "filename" | "contentType" | "size" | "sha256") => None,
        ("SystemEvent", "kind" | "role") => None,
        ("SystemEvent", "actor" | "target") => Some("User"),
        _ => return None,
    })
}

/// Fields without arguments, outside [`same_for_every_viewer`], that a message event's selection
/// may reach: their value depends on the viewer (or is not worth sharing), so an event selected
/// with any of them is resolved for each subscriber.
fn resolved_per_viewer(type_name: &str, field: &str) -> Option<Option<&'static str>> {
    Some(match (type_name, field) {
        ("Message", "clientMessageId" | "isRead") => None,
        ("Message", "readBy") => Some("User"),
        ("Conversation", "title" | "unreadCount" | "muted") => None,
        ("Conversation", "members") => Some("Member"),
        ("Conversation", "lastMessage") => Some("Message"),
        ("Member", "role" | "lastReadAt" | "joinedAt") => None,
        ("Member", "user") => Some("User"),
        ("User", "presence") => Some("Presence"),
        ("Presence", "status" | "lastSeenAt") => None,
        // Signed for the viewer, so that it ends with their membership.
        ("Attachment", "downloadUrl") => None,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{resolved_per_viewer, same_for_every_viewer};

    /// Every field the table names exists in the schema with the type the table says, so a
    /// renamed or retyped field cannot slip past the check unnoticed.
    #[test]
    fn the_table_of_shared_fields_matches_the_schema() {
        let sdl = super::super::sdl();
        // A type's body in the SDL: from its `type Name` line (perhaps `implements ...`) to its
        // closing brace, without the descriptions, which are prose.
        let body_of = |type_name: &str| -> String {
            let start = [" {", " implements"]
                .iter()
                .find_map(|end| sdl.find(&format!("\ntype {type_name}{end}")))
                .unwrap_or_else(|| panic!("type {type_name} in the schema"));
            let body = &sdl[start + 1..];
            let mut in_description = false;
            body[..body.find("\n}").unwrap()]
                .lines()
                .filter(|line| {
                    let quotes = line.trim() == "\"\"\"";
                    in_description ^= quotes;
                    !quotes && !in_description
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let fields = |type_name: &str| -> Vec<(String, String)> {
            body_of(type_name)
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let line = line.trim();
                    let (name, ty) = line.split_once(':')?;
                    let name = name.split('(').next()?.trim().to_string();
                    let ty = ty.trim().trim_matches(|c| c == '!' || c == '[' || c == ']');
                    Some((name, ty.trim_end_matches('!').to_string()))
                })
                .collect()
        };
        let mut checked = 0;
        for type_name in [
            "MessageEvent",
            "Message",
            "User",
            "Conversation",
            "Attachment",
            "SystemEvent",
        ] {
            for (name, ty) in fields(type_name) {
                if let Some(leads_to) = same_for_every_viewer(type_name, &name) {
                    checked += 1;
                    if let Some(child) = leads_to {
                        assert_eq!(ty, child, "{type_name}.{name}");
                    }
                }
            }
        }
        assert_eq!(
            checked, 32,
            "every field in the table was found in the schema"
        );
        // Viewer-dependent fields stay out.
        for (type_name, field) in [
            ("Message", "clientMessageId"),
            ("Message", "isRead"),
            ("Message", "readBy"),
            ("Conversation", "unreadCount"),
            ("Conversation", "title"),
            ("Conversation", "muted"),
            ("User", "presence"),
            ("Attachment", "downloadUrl"),
        ] {
            assert_eq!(same_for_every_viewer(type_name, field), None);
        }
        // The fields resolved per viewer exist too, take no arguments, and are not also shared.
        let mut per_viewer = 0;
        for type_name in [
            "Message",
            "Conversation",
            "Member",
            "User",
            "Presence",
            "Attachment",
        ] {
            for (name, ty) in fields(type_name) {
                if let Some(leads_to) = resolved_per_viewer(type_name, &name) {
                    per_viewer += 1;
                    assert_eq!(same_for_every_viewer(type_name, &name), None, "{name}");
                    let body = body_of(type_name);
                    assert!(
                        !body.contains(&format!("\t{name}(")),
                        "{type_name}.{name} takes arguments"
                    );
                    if let Some(child) = leads_to {
                        assert_eq!(ty, child, "{type_name}.{name}");
                    }
                }
            }
        }
        assert_eq!(
            per_viewer, 16,
            "every per-viewer field was found in the schema"
        );
    }
}
