//! Messages and the change log: the rows a send writes, history pages, and the reads that
//! replay and deliver changes in log order.
use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use entity::{conversation_event, member, message};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, IdenStatic,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set,
    sea_query::{Expr, ExprTrait},
};

use super::{
    Made, Reads, Store, Txn, TxnFuture, all_rows,
    pagination::{Direction, Page, PageRequest},
    postgres, sql, sqlite,
};
use crate::{
    chat::model::{SystemKind, now},
    error::AppResult,
    events::{Envelope, Event, MessageChange, Position},
};

/// A new message's content, as the domain checked it.
#[derive(Debug, Clone)]
pub struct Draft {
    pub conversation_id: i64,
    pub sender_id: i64,
    /// TEXT, or the attachment's kind.
    pub kind: String,
    pub body: Option<String>,
    pub reply_to_id: Option<i64>,
    /// The root of the thread the message is a reply in.
    pub thread_root_id: Option<i64>,
    pub client_message_id: Option<String>,
    pub attachment: Option<DraftFile>,
    /// The notifications, when the message is directed at no one and the store may make them in
    /// the send's own write (see `chat::notifications::undirected`).
    pub collapsed: Option<Collapsed>,
}

/// A stored file a new message names.
#[derive(Debug, Clone)]
pub struct DraftFile {
    pub key: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

pub use super::changes::{Notified, Sent};
pub use super::send_row::Collapsed;

/// Writes a new message with the conversation's next sequence number and logs it. A second send
/// with the sender's client message id fails on the unique index (a database error
/// [`crate::error::is_unique_violation`] recognises). None when the write refused it under the
/// conversation's lock (PostgreSQL checks there that the sender is still a member and the thread
/// root still stands): nothing is written.
pub async fn insert(txn: &Txn, draft: &Draft, at: DateTime<Utc>) -> AppResult<Option<Sent>> {
    let row = new_row(draft);
    // The conversation's `last_message_id` follows by trigger (migration 000009).
    match txn.get_database_backend() {
        DbBackend::Postgres => postgres::send(txn, row, at, draft.collapsed.as_ref()).await,
        _ => sqlite::send(txn, row, at).await.map(Some),
    }
}

/// Writes a send, [`insert`], and finishes it with `finish`, as one write (see `Store::write`):
/// the value `finish` makes is returned, and its events published, once the write has committed.
/// `finish` is given what the insert came to and the transaction to write anything more in.
///
/// On PostgreSQL a draft with collapsed notifications is written whole by one statement (see
/// [`postgres::send`]: the message, its log entry and its notifications, with every check under
/// the conversation's lock), so it needs no transaction of the writer's: it goes to the store's
/// send queue (see [`super::send_queue`]), which commits it alone or with the sends queued beside
/// it, with no `BEGIN` or `COMMIT` round trip; `finish` is then given no transaction, and what it
/// is given is complete (`Sent::notified` is set, `Sent::root_checked` holds).
pub async fn write_send<T, F>(store: &Store, draft: Draft, finish: F) -> AppResult<T>
where
    T: Send + 'static,
    F: for<'t> Fn(Option<&'t Txn>, AppResult<Option<Sent>>) -> TxnFuture<'t, Made<T>>
        + Send
        + Sync
        + 'static,
{
    if draft.collapsed.is_some()
        && let Some((queue, bus)) = store.send_queue()
    {
        let sent = queue
            .send(postgres::Queued {
                conversation_id: draft.conversation_id,
                row: new_row(&draft),
                at: now(),
                collapsed: draft.collapsed.clone(),
            })
            .await;
        let (value, events) = finish(None, sent).await?;
        for envelope in events {
            bus.publish(envelope).await;
        }
        return Ok(value);
    }
    let finish = Arc::new(finish);
    store
        .write(move |txn| {
            // The work may run more than once (see `Store::write`): each attempt takes its own
            // copies.
            let draft = draft.clone();
            let finish = finish.clone();
            Box::pin(async move {
                let sent = insert(txn, &draft, now()).await;
                finish(Some(txn), sent).await
            })
        })
        .await
}

/// The row a draft becomes (its sequence number and time are the write's).
fn new_row(draft: &Draft) -> message::ActiveModel {
    let file = draft.attachment.as_ref();
    message::ActiveModel {
        conversation_id: Set(draft.conversation_id),
        sender_id: Set(Some(draft.sender_id)),
        kind: Set(draft.kind.clone()),
        body: Set(draft.body.clone()),
        reply_to_id: Set(draft.reply_to_id),
        thread_root_id: Set(draft.thread_root_id),
        client_message_id: Set(draft.client_message_id.clone()),
        edited_at: Set(None),
        deleted_at: Set(None),
        attachment_key: Set(file.map(|f| f.key.clone())),
        attachment_filename: Set(file.map(|f| f.filename.clone())),
        attachment_content_type: Set(file.map(|f| f.content_type.clone())),
        attachment_size: Set(file.map(|f| f.size)),
        attachment_sha256: Set(file.map(|f| f.sha256.clone())),
        ..Default::default()
    }
}

/// What a send into a known conversation needs to know before it is queued.
pub struct SendFacts {
    /// DIRECT or ROOM.
    pub kind: String,
    pub sender_name: String,
    /// In the conversation, a member who blocked the sender.
    pub blocker: Option<i64>,
    /// The message an earlier attempt with the same client message id made.
    pub earlier: Option<message::Model>,
}

/// Everything a send into a known conversation checks, in one statement (sends are the hot
/// path): the conversation's kind, the sender's name, a member who blocked the sender, and the
/// message of an earlier attempt with the same client message id. None if the sender is not a
/// member (or the conversation does not exist).
pub async fn send_facts(
    db: &impl Reads,
    conversation_id: i64,
    sender_id: i64,
    client_message_id: Option<&str>,
) -> AppResult<Option<SendFacts>> {
    let db = db.conn();
    // Raw: the builder cannot put two correlated scalar subqueries beside a join in one SELECT.
    let row = db
        .query_one_raw(sql(
            db,
            "SELECT c.kind AS kind, u.display_name AS sender_name, \
             (SELECT b.blocker_id FROM blocks b JOIN members o \
                ON o.user_id = b.blocker_id AND o.conversation_id = c.id \
              WHERE b.blocked_id = $2 LIMIT 1) AS blocker, \
             (SELECT m.id FROM messages m \
              WHERE m.sender_id = $2 AND m.client_message_id = $3) AS earlier \
             FROM conversations c \
             JOIN members me ON me.conversation_id = c.id AND me.user_id = $2 \
             JOIN users u ON u.id = $2 \
             WHERE c.id = $1",
            vec![
                conversation_id.into(),
                sender_id.into(),
                client_message_id.map(str::to_owned).into(),
            ],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let earlier = match row.try_get::<Option<i64>>("", "earlier")? {
        Some(id) => message::Entity::find_by_id(id).one(db).await?,
        None => None,
    };
    Ok(Some(SendFacts {
        kind: row.try_get("", "kind")?,
        sender_name: row.try_get("", "sender_name")?,
        blocker: row.try_get("", "blocker")?,
        earlier,
    }))
}

/// A message by id.
pub async fn find(db: &impl Reads, id: i64) -> AppResult<Option<message::Model>> {
    Ok(message::Entity::find_by_id(id).one(db.conn()).await?)
}

/// The message a sender sent with a client message id.
pub async fn by_client_id(
    db: &impl Reads,
    sender_id: i64,
    client_message_id: &str,
) -> AppResult<Option<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::SenderId.eq(sender_id))
        .filter(message::Column::ClientMessageId.eq(client_message_id))
        .one(db.conn())
        .await?)
}

/// Messages by id, for batching.
pub async fn by_ids(db: &impl Reads, ids: &[i64]) -> AppResult<HashMap<i64, message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::Id.is_in(ids.iter().copied()))
        .all(db.conn())
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect())
}

/// Replaces a message's body, marking it edited `at`.
pub async fn set_body(
    txn: &Txn,
    message: message::Model,
    body: String,
    at: DateTime<Utc>,
) -> AppResult<message::Model> {
    let mut active: message::ActiveModel = message.into();
    active.body = Set(Some(body));
    active.edited_at = Set(Some(at));
    Ok(active.update(txn).await?)
}

/// Marks a message deleted `at` (the row stays).
pub async fn set_deleted(
    txn: &Txn,
    message: message::Model,
    at: DateTime<Utc>,
) -> AppResult<message::Model> {
    let mut active: message::ActiveModel = message.into();
    active.deleted_at = Set(Some(at));
    // A deleted message keeps no reactions and no pin.
    active.pinned_at = Set(None);
    active.pinned_by_id = Set(None);
    let message = active.update(txn).await?;
    super::reactions::clear(txn, message.id).await?;
    Ok(message)
}

/// Which of a conversation's messages a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// The conversation's own timeline: every message but the replies in threads.
    Timeline,
    /// Every message, replies in threads among them.
    Everything,
    /// The replies in one thread (not its root).
    Thread(i64),
}

/// A page of a conversation's messages in sequence order; positions are sequence numbers.
pub async fn page(
    db: &impl Reads,
    conversation_id: i64,
    listed: Listed,
    request: PageRequest<i64>,
) -> AppResult<Page<message::Model>> {
    let mut query = message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .limit(request.limit + 1);
    query = match listed {
        Listed::Timeline => query.filter(message::Column::ThreadRootId.is_null()),
        Listed::Everything => query,
        Listed::Thread(root) => query.filter(message::Column::ThreadRootId.eq(root)),
    };
    query = match (request.direction, request.anchor) {
        (Direction::Forward, anchor) => {
            let q = query.order_by_asc(message::Column::Seq);
            match anchor {
                Some(seq) => q.filter(message::Column::Seq.gt(seq)),
                None => q,
            }
        }
        (Direction::Backward, anchor) => {
            let q = query.order_by_desc(message::Column::Seq);
            match anchor {
                Some(seq) => q.filter(message::Column::Seq.lt(seq)),
                None => q,
            }
        }
    };
    let mut rows = all_rows(db.conn(), query).await?;
    // `all_rows` does not keep the order.
    match request.direction {
        Direction::Forward => rows.sort_unstable_by_key(|m| m.seq),
        Direction::Backward => rows.sort_unstable_by_key(|m| std::cmp::Reverse(m.seq)),
    }
    let more = rows.len() as u64 > request.limit;
    rows.truncate(request.limit as usize);
    Ok(match request.direction {
        Direction::Forward => Page {
            items: rows,
            has_previous: request.anchor.is_some(),
            has_next: more,
        },
        Direction::Backward => {
            rows.reverse();
            Page {
                items: rows,
                has_previous: more,
                has_next: request.anchor.is_some(),
            }
        }
    })
}

/// The largest change-log id, for cursors from before positions had a transaction part.
pub async fn latest_event_id(db: &impl Reads) -> AppResult<i64> {
    Ok(conversation_event::Entity::find()
        .select_only()
        .column_as(Expr::col(conversation_event::Column::Id).max(), "max_id")
        .into_tuple::<Option<i64>>()
        .one(db.conn())
        .await?
        .flatten()
        .unwrap_or(0))
}

/// Change-log rows after `after` in log order: `(tx, id) > (after.tx, after.id)`, spelled as a
/// row comparison so that both backends read it as one range of the `(tx, id)` index, in order
/// (an `OR` of the two cases is two ranges, merged and then sorted).
fn after_position(after: Position) -> Expr {
    use conversation_event::{Column as C, Entity as Log};
    Expr::tuple([Expr::col((Log, C::Tx)), Expr::col((Log, C::Id))])
        .gt(Expr::tuple([Expr::val(after.tx), Expr::val(after.id)]))
}

/// The positions of up to `limit` committed changes after `after`, settled or not, in log order.
pub async fn positions_after(
    db: &impl Reads,
    after: Position,
    limit: u64,
) -> AppResult<Vec<Position>> {
    use conversation_event::Column as C;
    Ok(conversation_event::Entity::find()
        .select_only()
        .column(C::Tx)
        .column(C::Id)
        .filter(after_position(after))
        .order_by_asc(C::Tx)
        .order_by_asc(C::Id)
        .limit(limit)
        .into_tuple::<(i64, i64)>()
        .all(db.conn())
        .await?
        .into_iter()
        .map(|(tx, id)| Position { tx, id })
        .collect())
}

/// The rows of the change log after `after`, in log order, that no transaction still running can
/// precede, so that a reader handing out positions only from here never skips a change that
/// commits later. On SQLite one writer at a time commits, in id order, and every committed row
/// may be read; on PostgreSQL see [`postgres::settled`].
fn settled_after(
    db: &impl ConnectionTrait,
    after: Position,
) -> sea_orm::Select<conversation_event::Entity> {
    use conversation_event::Column as C;
    let query = conversation_event::Entity::find()
        .filter(after_position(after))
        .order_by_asc(C::Tx)
        .order_by_asc(C::Id);
    match db.get_database_backend() {
        DbBackend::Postgres => query.filter(postgres::settled()),
        _ => query,
    }
}

/// The position of the last settled change (see [`settled_after`]), from which a live
/// subscription starts.
pub async fn latest_position(db: &impl Reads) -> AppResult<Position> {
    use conversation_event::Column as C;
    let db = db.conn();
    let query = settled_after(db, Position::default())
        .select_only()
        .column(C::Tx)
        .column(C::Id);
    // `settled_after` orders ascending; the last one is wanted.
    let mut query = QueryTrait::into_query(query);
    query
        .clear_order_by()
        .order_by(C::Tx, sea_orm::Order::Desc)
        .order_by(C::Id, sea_orm::Order::Desc)
        .limit(1);
    let row = db.query_one(&query).await?;
    Ok(match row {
        Some(row) => Position {
            tx: row.try_get("", C::Tx.as_str())?,
            id: row.try_get("", C::Id.as_str())?,
        },
        None => Position::default(),
    })
}

/// On PostgreSQL, a change log written by another cluster (see
/// [`postgres::positions_from_elsewhere`]); never on SQLite.
pub async fn positions_from_elsewhere(db: &impl Reads) -> AppResult<Option<(i64, i64)>> {
    let db = db.conn();
    match db.get_database_backend() {
        DbBackend::Postgres => postgres::positions_from_elsewhere(db).await,
        _ => Ok(None),
    }
}

/// Up to `limit` logged changes after `after`, in log order, in the given conversation or in
/// any, each with the message as it is now. Only changes the user may see are returned: those of
/// conversations the user belongs to now, and the message about the user's own removal or
/// departure (the last thing a former member is told). With `thread`, only the changes to that
/// root and to the replies in its thread, and that message (see `chat::threads::concerns`).
pub async fn events_after(
    db: &impl Reads,
    user_id: i64,
    conversation_id: Option<i64>,
    thread: Option<i64>,
    after: Position,
    limit: u64,
) -> AppResult<Vec<(conversation_event::Model, message::Model)>> {
    let db = db.conn();
    let mut query = settled_after(db, after)
        .filter(
            Condition::any()
                .add(
                    conversation_event::Column::ConversationId.in_subquery(
                        sea_orm::sea_query::Query::select()
                            .column(member::Column::ConversationId)
                            .from(member::Entity)
                            .and_where(member::Column::UserId.eq(user_id))
                            .to_owned(),
                    ),
                )
                .add(
                    conversation_event::Column::MessageId.in_subquery(
                        sea_orm::sea_query::Query::select()
                            .column(message::Column::Id)
                            .from(message::Entity)
                            .and_where(message::Column::SystemTargetId.eq(user_id))
                            .and_where(
                                message::Column::SystemKind
                                    .is_in(SystemKind::DEPARTURES.map(|k| k.as_str())),
                            )
                            .to_owned(),
                    ),
                ),
        )
        .limit(limit);
    if let Some(id) = conversation_id {
        query = query.filter(conversation_event::Column::ConversationId.eq(id));
    }
    if let Some(root) = thread {
        query = query.filter(
            conversation_event::Column::MessageId.in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(message::Column::Id)
                    .from(message::Entity)
                    .cond_where(
                        Condition::any()
                            .add(message::Column::Id.eq(root))
                            .add(message::Column::ThreadRootId.eq(root))
                            .add(
                                Condition::all()
                                    .add(message::Column::SystemTargetId.eq(user_id))
                                    .add(
                                        message::Column::SystemKind
                                            .is_in(SystemKind::DEPARTURES.map(|k| k.as_str())),
                                    ),
                            ),
                    )
                    .to_owned(),
            ),
        );
    }
    // Each row with its message in one statement (rows whose message is gone are left out).
    Ok(with_messages(db, query)
        .await?
        .into_iter()
        .filter_map(|(event, message)| Some((event, message?)))
        .collect())
}

/// The change-log rows `select` finds, in its order, each with its message as it is now (None
/// when the message is gone), in one statement.
async fn with_messages(
    db: &impl ConnectionTrait,
    select: sea_orm::Select<conversation_event::Entity>,
) -> AppResult<Vec<(conversation_event::Model, Option<message::Model>)>> {
    match db.get_database_backend() {
        DbBackend::Postgres => postgres::with_messages(db, select).await,
        _ => Ok(select.find_also_related(message::Entity).all(db).await?),
    }
}

/// The statement [`log_after`] reads the settled log with (its first statement), for tests of
/// its plan.
pub fn log_read_statement(
    db: &impl ConnectionTrait,
    after: Position,
    limit: u64,
) -> sea_orm::Statement {
    let backend = db.get_database_backend();
    let select = settled_after(db, after).limit(limit);
    match backend {
        DbBackend::Postgres => backend.build(&postgres::with_messages_query(select)),
        _ => select.find_also_related(message::Entity).build(backend),
    }
}

/// What one read of the settled log gave: the events, and how far it read (rows whose message
/// is gone or whose kind is unknown give no event, but are read past all the same).
pub struct LogBatch {
    pub events: Vec<Envelope>,
    /// How many rows were read (a full batch means there may be more).
    pub read: u64,
    /// The position of the last row read.
    pub last: Option<Position>,
}

/// Up to `limit` settled changes after `after`, in log order, each as the event its recipients
/// receive: the conversation's members now, and for a removal or departure the user it concerns
/// (as [`events_after`] would replay them to each); a user whose removal or departure comes later
/// in the same batch still receives the conversation's changes before it, as they would have had
/// the batch been read sooner. Two statements for the whole batch.
pub async fn log_after(db: &impl Reads, after: Position, limit: u64) -> AppResult<LogBatch> {
    let db = db.conn();
    let rows = with_messages(db, settled_after(db, after).limit(limit)).await?;
    let read = rows.len() as u64;
    let last = rows.last().map(|(event, _)| Position {
        tx: event.tx,
        id: event.id,
    });
    let rows: Vec<(conversation_event::Model, message::Model)> = rows
        .into_iter()
        .filter_map(|(event, message)| Some((event, message?)))
        .collect();
    if rows.is_empty() {
        return Ok(LogBatch {
            events: Vec::new(),
            read,
            last,
        });
    }
    let mut conversation_ids: Vec<i64> = rows.iter().map(|(e, _)| e.conversation_id).collect();
    conversation_ids.sort_unstable();
    conversation_ids.dedup();
    let mut members: HashMap<i64, Vec<i64>> = HashMap::new();
    for (conversation_id, user_id) in member::Entity::find()
        .select_only()
        .column(member::Column::ConversationId)
        .column(member::Column::UserId)
        .filter(member::Column::ConversationId.is_in(conversation_ids))
        .into_tuple::<(i64, i64)>()
        .all(db)
        .await?
    {
        members.entry(conversation_id).or_default().push(user_id);
    }
    let departures = SystemKind::DEPARTURES.map(|k| k.as_str());
    // Newest first, so that each change knows who leaves its conversation after it.
    let mut leaving_later: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut events: Vec<Envelope> = rows
        .into_iter()
        .rev()
        .filter_map(|(event, message)| {
            let change = MessageChange::parse(&event.kind)?;
            let mut recipients = members
                .get(&event.conversation_id)
                .cloned()
                .unwrap_or_default();
            let later = leaving_later.entry(event.conversation_id).or_default();
            recipients.extend_from_slice(later);
            if let (Some(target), Some(kind)) = (message.system_target_id, &message.system_kind)
                && departures.contains(&kind.as_str())
            {
                recipients.push(target);
                later.push(target);
            }
            Some(Envelope::new(
                recipients,
                Event::Message {
                    position: Position {
                        tx: event.tx,
                        id: event.id,
                    },
                    change,
                    message: Arc::new(message),
                },
            ))
        })
        .collect();
    events.reverse();
    Ok(LogBatch { events, read, last })
}
