//! PostgreSQL only: a send's writes as one function, `palaver_send`, so that a send is one
//! statement. Called on its own (autocommitted) it is the whole transaction, one network round
//! trip where `BEGIN`, the sequence bump, the insert and `COMMIT` were four.
//!
//! Why a function and not one plain statement: a statement reads from the snapshot taken when it
//! starts, so a statement that waited for the conversation's lock would still read the member list
//! and thread root as they were before the lock's previous holder committed. In a VOLATILE
//! PL/pgSQL function each statement takes a fresh snapshot, so the checks after
//! `pg_advisory_xact_lock` see everything that holder committed.
//!
//! What it does, in order:
//! 1. takes the conversation's advisory lock, before any write, so before the transaction has an
//!    id: within a conversation, transaction ids (the first part of a change's position) follow
//!    sequence numbers (see `store::changes::next_seq`, which takes the same lock for other
//!    changes);
//! 2. reads the members, and checks, under the lock, that the sender is one and that the thread
//!    root, if any, is a standing root of the conversation; if not it returns no row, having
//!    written nothing;
//! 3. takes the conversation's next sequence number;
//! 4. inserts the message, its change-log entry and, when `note_kind` is given (a message directed
//!    at no one), the collapsed notifications of the members not muted but the sender (or the
//!    backlog row in a conversation of more than `inline_max` members), and returns the message,
//!    its log position, the members (comma-separated), whether notifications were made inline and
//!    the rows made, as JSON.
//!
//! Each step is a statement of its own rather than one statement with a CTE per write: a plan of a
//! few nodes is cheap to start, where the one big statement spent more of PostgreSQL's time
//! setting its forty-odd nodes up than running them.
//!
//! Its parameters after `at` are the message columns in the order of `store::send_row`'s
//! `SEND_COLUMNS`.
use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE FUNCTION palaver_send(
    p_at timestamptz,
    p_sender_id bigint, p_kind text, p_body text, p_reply_to_id bigint, p_thread_root_id bigint,
    p_client_message_id text, p_attachment_key text, p_attachment_filename text,
    p_attachment_content_type text, p_attachment_size bigint, p_attachment_sha256 text,
    p_conversation_id bigint,
    p_note_kind text, p_note_text text, p_inline_max bigint)
RETURNS TABLE (sent_message messages, sent_event_id bigint, sent_event_tx bigint,
               sent_members text, sent_inline boolean, sent_notes text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_members bigint[];
    v_audience bigint[];
    v_admitted boolean;
    v_seq bigint;
    v_message messages;
    v_event_id bigint;
    v_event_tx bigint;
    v_inline boolean;
    v_notes text;
BEGIN
    PERFORM pg_advisory_xact_lock(p_conversation_id);
    SELECT array_agg(m.user_id),
           array_agg(m.user_id) FILTER (WHERE NOT m.muted AND m.user_id <> p_sender_id),
           bool_or(m.user_id = p_sender_id)
        INTO v_members, v_audience, v_admitted
        FROM members m WHERE m.conversation_id = p_conversation_id;
    IF v_admitted IS NOT TRUE
       OR (p_thread_root_id IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM messages r WHERE r.id = p_thread_root_id
             AND r.conversation_id = p_conversation_id AND r.thread_root_id IS NULL
             AND r.sender_id IS NOT NULL AND r.deleted_at IS NULL)) THEN
        RETURN;
    END IF;
    UPDATE conversations c SET last_seq = c.last_seq + 1, last_activity_at = p_at
        WHERE c.id = p_conversation_id RETURNING c.last_seq INTO v_seq;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO messages (seq, created_at, sender_id, kind, body, reply_to_id, thread_root_id,
        client_message_id, attachment_key, attachment_filename, attachment_content_type,
        attachment_size, attachment_sha256, conversation_id)
    VALUES (v_seq, p_at, p_sender_id, p_kind, p_body, p_reply_to_id, p_thread_root_id,
        p_client_message_id, p_attachment_key, p_attachment_filename, p_attachment_content_type,
        p_attachment_size, p_attachment_sha256, p_conversation_id)
    RETURNING * INTO v_message;
    INSERT INTO conversation_events (conversation_id, seq, kind, message_id, created_at)
    VALUES (p_conversation_id, v_seq, 'CREATED', v_message.id, p_at)
    RETURNING id, tx INTO v_event_id, v_event_tx;
    v_inline := cardinality(v_members) <= p_inline_max;
    IF p_note_kind IS NOT NULL AND v_inline THEN
        -- The INSERT goes by what the UPDATE did (its RETURNING), not by a second look at the
        -- table: a row marked read by a concurrent transaction is skipped by the UPDATE (which
        -- waits for it and checks again), and then gets a new row.
        WITH bumped AS (
            UPDATE notifications n SET kind = p_note_kind, text = p_note_text,
                message_id = v_message.id, actor_id = p_sender_id, updated_at = p_at,
                count = n.count + 1
            WHERE n.conversation_id = p_conversation_id AND n.is_read = FALSE
                AND n.kind IN ('MESSAGE', 'FILE') AND n.user_id = ANY (v_audience)
            RETURNING n.*),
        made AS (
            INSERT INTO notifications (user_id, actor_id, kind, text, conversation_id,
                message_id, count, is_read, created_at, updated_at)
            SELECT a.user_id, p_sender_id, p_note_kind, p_note_text, p_conversation_id,
                v_message.id, 1, FALSE, p_at, p_at
            FROM unnest(v_audience) AS a(user_id)
            WHERE a.user_id NOT IN (SELECT b.user_id FROM bumped b)
            RETURNING *)
        SELECT json_agg(x)::text INTO v_notes
            FROM (SELECT * FROM bumped UNION ALL SELECT * FROM made) x;
    ELSIF p_note_kind IS NOT NULL THEN
        INSERT INTO notification_backlog (conversation_id, seq) VALUES (p_conversation_id, v_seq);
    END IF;
    RETURN QUERY SELECT v_message, v_event_id, v_event_tx, array_to_string(v_members, ','),
        v_inline, v_notes;
END
$fn$
"#;

/// Several sends in one call, one transaction: `p_sends` is a JSON array of objects with
/// `palaver_send`'s parameters as keys (without the `p_`). The conversations' locks are all taken
/// first, in the order of their ids, so that two batches never wait for each other in a circle and
/// the transaction has no id until every lock is held. Each row returned names the send it answers
/// by its place in the array (`item`, from 1); a send the checks refused has no row.
const CREATE_BATCH: &str = r#"
CREATE FUNCTION palaver_send_batch(p_sends jsonb)
RETURNS TABLE (item bigint, sent_message messages, sent_event_id bigint, sent_event_tx bigint,
               sent_members text, sent_inline boolean, sent_notes text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_conversation bigint;
    v_send record;
BEGIN
    FOR v_conversation IN
        SELECT DISTINCT (e.value->>'conversation_id')::bigint AS c
        FROM jsonb_array_elements(p_sends) AS e ORDER BY c
    LOOP
        PERFORM pg_advisory_xact_lock(v_conversation);
    END LOOP;
    FOR v_send IN
        SELECT e.value AS v, e.ordinality AS n
        FROM jsonb_array_elements(p_sends) WITH ORDINALITY AS e ORDER BY e.ordinality
    LOOP
        RETURN QUERY SELECT v_send.n, s.* FROM palaver_send(
            (v_send.v->>'at')::timestamptz,
            (v_send.v->>'sender_id')::bigint, v_send.v->>'kind', v_send.v->>'body',
            (v_send.v->>'reply_to_id')::bigint, (v_send.v->>'thread_root_id')::bigint,
            v_send.v->>'client_message_id', v_send.v->>'attachment_key',
            v_send.v->>'attachment_filename', v_send.v->>'attachment_content_type',
            (v_send.v->>'attachment_size')::bigint, v_send.v->>'attachment_sha256',
            (v_send.v->>'conversation_id')::bigint,
            v_send.v->>'note_kind', v_send.v->>'note_text', (v_send.v->>'inline_max')::bigint) s;
    END LOOP;
END
$fn$
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(CREATE).await?;
        manager
            .get_connection()
            .execute_unprepared(CREATE_BATCH)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared("DROP FUNCTION palaver_send_batch; DROP FUNCTION palaver_send")
            .await?;
        Ok(())
    }
}
