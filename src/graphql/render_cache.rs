//! Resolving a live event once for all its subscribers. In a room of 1,000 members, one message
//! reaches 1,000 subscriptions; most select the same of it (`message { id body sender { id } }`),
//! and when every field they select reads the same to every member (see `selection`), the answer
//! is the same. Subscriptions that select alike share one [`Shape`]; it keeps the renders of the
//! events lately resolved in it, by event, and the first subscriber to reach an event resolves it
//! while the others wait, then copy it. A selection that reaches any field whose value depends on
//! the viewer is resolved for each subscriber.
//!
//! Only live events share: an event replayed from the change log is read afresh for its one
//! subscriber, and may show the message as it is now rather than as the event left it.
use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    future::Future,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use async_graphql::{
    Context, ContextSelectionSet, Name, OutputType, Positioned, ServerError, ServerResult, Value,
    parser::types::{Field, FragmentDefinition, SelectionSet},
    registry::Registry,
};
use async_graphql_value::RAW_VALUE_TOKEN;
use moka::ops::compute::Op;
use tokio::sync::OnceCell;

use super::{
    selection::{Selection, SelectionRules},
    types::MessageEvent,
};
use crate::{events::Position, lock};

/// Most distinct selections a new subscription can find; past it, the least used give way. A
/// subscription keeps its [`Shape`] however long it lives: one given way only stops being found
/// by new subscribers, whose renders then go to a new one.
const MAX_SHAPES: u64 = 1024;
/// Most events one shape keeps renders for, and for how long: a subscriber further behind
/// resolves the event on its own.
const RECENT_EVENTS: usize = 32;
const RECENT_FOR: Duration = Duration::from_secs(10);

/// The selections subscriptions to `messageEvents` make, each with its recent renders.
pub struct RenderCache {
    rules: SelectionRules,
    /// By their spelling. Held by their subscriptions alone: a shape and its renders go with the
    /// last subscription that made its selection.
    shapes: moka::sync::Cache<Arc<str>, Weak<Shape>>,
    /// Deliveries served from a render another subscriber made (`/metrics`).
    copies: metrics::Counter,
}

impl RenderCache {
    pub fn new(copies: metrics::Counter) -> Self {
        Self {
            rules: SelectionRules::of::<MessageEvent>(),
            shapes: moka::sync::Cache::new(MAX_SHAPES),
            copies,
        }
    }

    /// Reads a `messageEvents` selection against the schema (see [`SelectionRules::read`]).
    pub fn read(
        &self,
        fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
        set: &SelectionSet,
    ) -> Option<Selection> {
        self.rules.read(fragments, set)
    }

    /// The shape every subscription making this selection shares.
    pub fn shape(&self, selection: Selection) -> Arc<Shape> {
        let made = Arc::new(Shape {
            selection,
            recent: Mutex::default(),
            copies: self.copies.clone(),
        });
        let mut shape = made.clone();
        // Atomic for one spelling, so that subscriptions starting together share one shape.
        self.shapes
            .entry(made.selection.shape.clone())
            .and_compute_with(|kept| match kept.and_then(|k| k.into_value().upgrade()) {
                Some(kept) => {
                    shape = kept;
                    Op::Nop
                }
                None => Op::Put(Arc::downgrade(&made)),
            });
        shape
    }

    /// The shape of the schema's `messageEvents` field being resolved, when its renders can be
    /// shared (the selection reads the same to every viewer).
    pub fn shape_of_field(&self, ctx: &Context<'_>) -> Option<Arc<Shape>> {
        self.read(&ctx.query_env.fragments, &ctx.item.node.selection_set.node)
            .filter(|selection| selection.same_for_every_viewer)
            .map(|selection| self.shape(selection))
    }
}

/// One selection of `messageEvents`, shared by the subscriptions that make it, with the renders
/// of recent live events in it when it reads the same to every viewer.
pub struct Shape {
    pub selection: Selection,
    /// Oldest first.
    recent: Mutex<VecDeque<Kept>>,
    copies: metrics::Counter,
}

/// One event's render. Every subscriber's copy of an event points at the same message, and the
/// render holds that pointer, so no other event can be taken for it.
struct Kept {
    position: Position,
    message: Arc<entity::message::Model>,
    made: Instant,
    render: Arc<OnceCell<Value>>,
}

impl Shape {
    /// The event's render in this shape: the one kept for it, or `render()` resolved now (and
    /// kept when it succeeds, as JSON text written once). None when the selection differs per
    /// viewer: the caller resolves the event on its own.
    pub async fn shared<E, F, Fut>(
        &self,
        event: &MessageEvent,
        render: F,
    ) -> Option<Result<Value, E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value, E>>,
    {
        let slot = self.slot(event)?;
        let mut made_here = false;
        let result = slot
            .get_or_try_init(|| {
                made_here = true;
                async { render().await.map(serialized_once) }
            })
            .await;
        if result.is_ok() && !made_here {
            self.copies.increment(1);
        }
        Some(result.cloned())
    }

    /// The slot of one event's render, searched from the newest: subscribers reach an event soon
    /// after it is published. Every delivery looks here, which is why each shape keeps its own
    /// few recent events behind a lock held for a short scan, rather than every render living in
    /// one concurrent map keyed by event and shape.
    fn slot(&self, event: &MessageEvent) -> Option<Arc<OnceCell<Value>>> {
        if !self.selection.same_for_every_viewer {
            return None;
        }
        let mut recent = lock(&self.recent);
        if let Some(kept) = recent.iter().rev().find(|kept| {
            kept.position == event.position && Arc::ptr_eq(&kept.message, &event.message)
        }) {
            return Some(kept.render.clone());
        }
        let now = Instant::now();
        while let Some(oldest) = recent.front() {
            if recent.len() < RECENT_EVENTS && now.duration_since(oldest.made) < RECENT_FOR {
                break;
            }
            recent.pop_front();
        }
        let render = Arc::new(OnceCell::new());
        recent.push_back(Kept {
            position: event.position,
            message: event.message.clone(),
            made: now,
            render: render.clone(),
        });
        Some(render)
    }
}

/// The value as JSON text, written once for every subscriber in the shape. async-graphql (with
/// its `raw_value` feature) writes an object whose one key is [`RAW_VALUE_TOKEN`] as the text it
/// holds, so each subscriber's frame copies a string instead of cloning and serialising the tree.
fn serialized_once(value: Value) -> Value {
    match serde_json::to_string(&value) {
        Ok(json) => Value::Object(
            [(Name::new(RAW_VALUE_TOKEN), Value::String(json))]
                .into_iter()
                .collect(),
        ),
        Err(_) => value,
    }
}

/// A `messageEvents` item: the event, and for a live one the shape of its subscriber's selection
/// when that can share renders.
pub struct Rendered {
    pub event: MessageEvent,
    pub shape: Option<Arc<Shape>>,
}

/// Why a render made through the schema was not kept for others.
enum Unshared {
    Failed(ServerError),
    /// Resolved, but with field errors: they belong to this subscriber's response alone.
    Partial(Value),
}

impl OutputType for Rendered {
    fn type_name() -> Cow<'static, str> {
        MessageEvent::type_name()
    }

    fn qualified_type_name() -> String {
        MessageEvent::qualified_type_name()
    }

    fn introspection_type_name(&self) -> Cow<'static, str> {
        self.event.introspection_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        MessageEvent::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let Some(shape) = &self.shape else {
            return self.event.resolve(ctx, field).await;
        };
        let shared = shape
            .shared(&self.event, || async {
                let errors_before = ctx.query_env.errors.lock().map_or(0, |e| e.len());
                let value = self
                    .event
                    .resolve(ctx, field)
                    .await
                    .map_err(Unshared::Failed)?;
                let errors_after = ctx.query_env.errors.lock().map_or(0, |e| e.len());
                if errors_after == errors_before {
                    Ok(value)
                } else {
                    Err(Unshared::Partial(value))
                }
            })
            .await;
        match shared {
            None => self.event.resolve(ctx, field).await,
            Some(Ok(value)) => Ok(value),
            Some(Err(Unshared::Failed(err))) => Err(err),
            Some(Err(Unshared::Partial(value))) => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::types::MessageEventKind;

    fn event(id: i64, message: &Arc<entity::message::Model>) -> MessageEvent {
        MessageEvent {
            position: Position { tx: 0, id },
            kind: MessageEventKind::Created,
            message: message.clone(),
        }
    }

    fn message() -> Arc<entity::message::Model> {
        Arc::new(serde_json::from_value(serde_json::json!({
            "id": 1, "conversation_id": 1, "seq": 1, "sender_id": 1, "kind": "TEXT", "body": "hi",
            "created_at": "2026-01-01T00:00:00Z"
        })).expect("a message row"))
    }

    fn shape(same_for_every_viewer: bool) -> Shape {
        Shape {
            selection: Selection {
                shape: "kind ".into(),
                same_for_every_viewer,
            },
            recent: Mutex::default(),
            copies: metrics::Counter::from_arc(COPIES.with(Arc::clone)),
        }
    }

    use std::sync::atomic::{AtomicU64, Ordering};

    thread_local! {
        /// What a test's shapes count their copies on (tokio tests run on one thread).
        static COPIES: Arc<AtomicU64> = Arc::default();
    }

    fn copies() -> u64 {
        COPIES.with(|c| c.load(Ordering::Relaxed))
    }

    async fn render(shape: &Shape, event: &MessageEvent, body: &str) -> Option<Value> {
        let body = body.to_owned();
        shape
            .shared(event, || async move { Ok::<_, ()>(Value::String(body)) })
            .await
            .map(|render| render.expect("rendered"))
    }

    #[tokio::test]
    async fn an_event_is_rendered_once_per_shape_and_copied() {
        let shape = shape(true);
        let message = message();
        let first = render(&shape, &event(1, &message), "made").await;
        let again = render(&shape, &event(1, &message), "made again").await;
        assert_eq!(first, again);
        assert_eq!(copies(), 1);
        // Another event (or the same position in another message) is rendered on its own.
        let other = render(&shape, &event(2, &message), "other").await;
        assert_ne!(other, first);
        let elsewhere = render(&shape, &event(1, &self::message()), "elsewhere").await;
        assert_ne!(elsewhere, first);
    }

    #[tokio::test]
    async fn a_selection_that_differs_per_viewer_shares_nothing() {
        let shape = shape(false);
        assert_eq!(render(&shape, &event(1, &message()), "mine").await, None);
    }

    #[tokio::test]
    async fn a_failed_render_is_not_kept() {
        let shape = shape(true);
        let message = message();
        let failed = shape
            .shared(&event(1, &message), || async { Err::<Value, _>("failed") })
            .await;
        assert_eq!(failed, Some(Err("failed")));
        assert!(render(&shape, &event(1, &message), "made").await.is_some());
        assert_eq!(copies(), 0);
    }

    #[tokio::test]
    async fn a_shape_keeps_the_renders_of_its_recent_events_only() {
        let shape = shape(true);
        let message = message();
        for id in 0..(RECENT_EVENTS as i64 * 2) {
            render(&shape, &event(id, &message), "made").await;
        }
        assert_eq!(lock(&shape.recent).len(), RECENT_EVENTS);
        assert_eq!(
            lock(&shape.recent).front().unwrap().position.id,
            RECENT_EVENTS as i64
        );
    }

    #[test]
    fn subscriptions_that_select_alike_share_one_shape() {
        let cache = RenderCache::new(metrics::Counter::noop());
        let selection = |shape: &str| Selection {
            shape: shape.into(),
            same_for_every_viewer: true,
        };
        let a = cache.shape(selection("kind "));
        assert!(Arc::ptr_eq(&a, &cache.shape(selection("kind "))));
        assert!(!Arc::ptr_eq(&a, &cache.shape(selection("cursor "))));
        // Once no subscription holds it, the next one starts afresh.
        let weak = Arc::downgrade(&a);
        drop(a);
        assert!(weak.upgrade().is_none());
        assert_eq!(
            cache.shape(selection("kind ")).selection.shape.as_ref(),
            "kind "
        );
    }
}
