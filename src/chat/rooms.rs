//! Rooms: named conversations of many members, each with a role. The permission table lives in
//! [`allowed`] and nowhere else; every room operation, and a moderator deleting someone else's
//! message, asks it. Each operation is one write transaction that checks permissions against the
//! membership as it is under the conversation's lock, makes the change, and records it as a SYSTEM
//! message through the same sequence, change log and publish path as any other message.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use entity::{conversation, member, message, notification};

use super::{
    Chat, blocks, conversations,
    model::{ROOM, Role, SystemKind, now},
    notifications::{self, NotificationKind},
};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
    events::{Envelope, Event, MessageChange},
    ids,
    store::{self, Made, Txn, TxnFuture, changes},
    text,
};

/// The longest room name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest room topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 500;
/// The most members `createRoom` takes at once (more can be added one by one).
pub const MAX_INITIAL_MEMBERS: usize = 1000;

/// A room's name: trimmed, not empty, at most [`MAX_NAME_CHARS`], with no control, bidirectional
/// or invisible character (refused, see [`crate::text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomName(String);

impl RoomName {
    /// Parses a name as typed.
    pub fn parse(raw: &str) -> AppResult<Self> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(AppError::bad_input("a room name must not be empty"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(AppError::bad_input(format!(
                "a room name must be at most {MAX_NAME_CHARS} characters"
            )));
        }
        if let Some(found) = text::first_unwanted(name, text::unwanted_in_name) {
            return Err(AppError::bad_input(text::describe("a room name", found)));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A room's topic: trimmed, at most [`MAX_TOPIC_CHARS`]; line breaks and tabs are allowed, other
/// control characters and bidirectional or invisible ones are refused, as in names. Blank means
/// "no topic".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTopic(Option<String>);

impl RoomTopic {
    /// Parses a topic as typed.
    pub fn parse(raw: &str) -> AppResult<Self> {
        let topic = raw.trim();
        if topic.chars().count() > MAX_TOPIC_CHARS {
            return Err(AppError::bad_input(format!(
                "a room topic must be at most {MAX_TOPIC_CHARS} characters"
            )));
        }
        if let Some(found) = text::first_unwanted(topic, text::unwanted_in_multiline) {
            return Err(AppError::bad_input(text::describe("a room topic", found)));
        }
        Ok(Self((!topic.is_empty()).then(|| topic.to_owned())))
    }

    /// No topic.
    pub fn none() -> Self {
        Self(None)
    }
}

/// What a member may try to do to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Change the room's name or topic.
    UpdateRoom,
    /// Add someone with the given role.
    AddMember(Role),
    /// Remove a member who has the given role.
    RemoveMember(Role),
    /// Make a member an admin, or an admin a member.
    SetRole,
    /// Hand the room to another member.
    TransferOwnership,
    /// Delete a message someone else sent.
    DeleteOthersMessage,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::UpdateRoom => "change the room's name or topic",
            Action::AddMember(Role::Member) => "add members",
            Action::AddMember(_) => "add admins",
            Action::RemoveMember(Role::Member) => "remove members",
            Action::RemoveMember(Role::Admin) => "remove admins",
            Action::RemoveMember(Role::Owner) => "remove the owner",
            Action::SetRole => "change members' roles",
            Action::TransferOwnership => "transfer ownership",
            Action::DeleteOthersMessage => "delete other people's messages",
        }
    }
}

/// The permission table (README, "Rooms"). Everything a member may do beyond reading and writing
/// their own messages is decided here.
pub fn allowed(actor: Role, action: Action) -> bool {
    use Role::*;
    match action {
        Action::UpdateRoom | Action::DeleteOthersMessage => actor >= Admin,
        Action::AddMember(Member) => actor >= Admin,
        // A room has exactly one owner; a second one is only ever made by a transfer.
        Action::AddMember(role) => actor == Owner && role == Admin,
        // Moderators act only on those below them: an admin cannot remove another admin.
        Action::RemoveMember(target) => actor >= Admin && actor > target,
        Action::SetRole | Action::TransferOwnership => actor == Owner,
    }
}

/// [`allowed`], as a FORBIDDEN error when it says no.
pub fn authorize(actor: Role, action: Action) -> AppResult<()> {
    if allowed(actor, action) {
        Ok(())
    } else {
        let who = match actor {
            Role::Member => "members",
            Role::Admin => "admins",
            Role::Owner => "owners",
        };
        Err(AppError::Forbidden(format!(
            "{who} may not {}",
            action.describe()
        )))
    }
}

/// Whether `member` may delete `message`, which someone else sent. Direct conversations have no
/// moderators; system messages are the room's record and nobody deletes them.
pub fn authorize_moderation(
    conversation: &conversation::Model,
    member: &member::Model,
    message: &message::Model,
) -> AppResult<()> {
    if conversation.kind != ROOM {
        return Err(AppError::Forbidden(
            "only the sender may delete a message".into(),
        ));
    }
    if message.sender_id.is_none() {
        return Err(AppError::Forbidden(
            "system messages cannot be deleted".into(),
        ));
    }
    authorize(Role::parse(&member.role), Action::DeleteOthersMessage)
}

/// A room to create, parsed.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub name: RoomName,
    pub topic: RoomTopic,
    /// Everyone to add besides the creator, who becomes the owner.
    pub member_ids: Vec<i64>,
}

/// A change to a room's settings, parsed; `None` leaves a field as it is.
#[derive(Debug, Clone)]
pub struct RoomUpdate {
    pub name: Option<RoomName>,
    pub topic: Option<RoomTopic>,
}

/// A room operation in progress, inside the writer's transaction: the room and the acting member
/// as they are under the conversation's lock, and what the operation has recorded so far.
struct RoomTxn<'t> {
    txn: &'t Txn,
    room: conversation::Model,
    actor: member::Model,
    /// The sequence number the lock took, used by the first system message.
    reserved: Option<(i64, DateTime<Utc>)>,
    logged: Vec<changes::Logged>,
    /// ROOM_ADDED / ROOM_REMOVED notifications made in this transaction, published after commit.
    notes: Vec<notification::Model>,
}

impl<'t> RoomTxn<'t> {
    /// Locks the room and loads the viewer's membership. Outsiders get NOT_FOUND, as for any
    /// conversation; a direct conversation is not a room.
    async fn open(txn: &'t Txn, room_id: i64, user_id: i64) -> AppResult<Self> {
        // Taking the sequence number first serialises this operation with every other change to
        // the room, so the checks below cannot be raced. Refusing rolls it back.
        let reserved = changes::next_seq(txn, room_id).await?;
        let (room, actor) = conversations::require_member(txn, room_id, user_id).await?;
        if room.kind != ROOM {
            return Err(AppError::bad_input(
                "this is a direct conversation, not a room",
            ));
        }
        Ok(Self {
            txn,
            room,
            actor,
            reserved: Some(reserved),
            logged: Vec::new(),
            notes: Vec::new(),
        })
    }

    fn actor_role(&self) -> Role {
        Role::parse(&self.actor.role)
    }

    /// The membership of `user_id`, or NOT_FOUND.
    async fn member(&self, user_id: i64) -> AppResult<member::Model> {
        store::rooms::member(self.txn, self.room.id, user_id)
            .await?
            .ok_or_else(|| AppError::not_found("member"))
    }

    /// Writes a SYSTEM message (the room's next message), audits and logs it; returns its
    /// sequence number.
    async fn note(
        &mut self,
        kind: SystemKind,
        target_id: Option<i64>,
        role: Option<Role>,
        body: String,
    ) -> AppResult<i64> {
        let (seq, at) = match self.reserved.take() {
            Some(reserved) => reserved,
            None => changes::next_seq(self.txn, self.room.id).await?,
        };
        super::audit::record(
            self.txn,
            Some(self.actor.user_id),
            &format!("room.{}", kind.as_str().to_ascii_lowercase()),
            Some(ids::public_id(ids::Kind::Conversation, self.room.id)),
            Some(body.clone()),
        )
        .await?;
        let system = store::rooms::SystemMessage {
            kind,
            actor_id: self.actor.user_id,
            target_id,
            role,
            body,
        };
        let message =
            store::rooms::insert_system_message(self.txn, self.room.id, seq, at, system).await?;
        self.logged
            .push(changes::log_change(self.txn, MessageChange::Created, message, seq).await?);
        Ok(seq)
    }

    /// Tells a user they were added to or removed from the room.
    async fn notify(
        &mut self,
        user_id: i64,
        kind: NotificationKind,
        text: String,
    ) -> AppResult<()> {
        let note = notifications::create_one(
            self.txn,
            user_id,
            Some(self.actor.user_id),
            kind,
            text,
            Some(self.room.id),
            None,
        )
        .await?;
        self.notes.push(note);
        Ok(())
    }

    /// Ends the operation: the room as it will be committed, and the events that tell the members
    /// as they are now, plus `also` (someone who just left or was removed hears about it, and
    /// nothing after), about the system messages, then the notifications. With nothing noted,
    /// nothing changed: see [`unless_unchanged`].
    async fn finish(self, also: &[i64]) -> Made<Outcome> {
        if self.logged.is_empty() {
            return Ok((Outcome::Unchanged(self.room), Vec::new()));
        }
        let room_id = self.room.id;
        let recipients = changes::recipients(self.txn, room_id, also).await?;
        let mut events = changes::envelopes(self.logged, recipients);
        events.extend(notifications::envelope(self.notes));
        let room = store::rooms::find(self.txn, room_id)
            .await?
            .ok_or_else(|| AppError::not_found("conversation"))?;
        Ok((Outcome::Changed(room), events))
    }
}

/// What a room operation came to.
enum Outcome {
    Changed(conversation::Model),
    /// Nothing to record: its transaction's writes (the sequence number the lock took, the
    /// activity time) must not stand.
    Unchanged(conversation::Model),
}

/// Runs a room operation that may turn out to change nothing in a savepoint of its own, rolled
/// back if it did: a room whose name is set to what it was keeps its place in everyone's list.
async fn unless_unchanged<F>(txn: &Txn, op: F) -> Made<conversation::Model>
where
    F: for<'s> FnOnce(&'s Txn) -> TxnFuture<'s, Made<Outcome>> + Send + 'static,
{
    store::in_savepoint(txn, |savepoint| {
        Box::pin(async move {
            let (outcome, events) = op(savepoint).await?;
            Ok(match outcome {
                Outcome::Changed(room) => ((room, true), events),
                Outcome::Unchanged(room) => ((room, false), events),
            })
        })
    })
    .await
}

/// The room an operation that always changes something returns.
fn changed(made: Made<Outcome>) -> Made<conversation::Model> {
    let (outcome, events) = made?;
    match outcome {
        Outcome::Changed(room) | Outcome::Unchanged(room) => Ok((room, events)),
    }
}

/// Usernames by id, for the text of system messages; NOT_FOUND unless every one exists.
async fn usernames(txn: &Txn, ids: &[i64]) -> AppResult<HashMap<i64, String>> {
    let names = store::users::usernames(txn, ids).await?;
    if ids.iter().any(|id| !names.contains_key(id)) {
        return Err(AppError::not_found("user"));
    }
    Ok(names)
}

/// Creates a room with the viewer as its owner and the given users as members.
pub async fn create(chat: &Chat, viewer: Viewer, new: NewRoom) -> AppResult<conversation::Model> {
    if new.member_ids.len() > MAX_INITIAL_MEMBERS {
        return Err(AppError::bad_input(format!(
            "a room starts with at most {MAX_INITIAL_MEMBERS} members besides its owner"
        )));
    }
    let mut seen = HashSet::new();
    for id in &new.member_ids {
        if *id == viewer.user_id {
            return Err(AppError::bad_input(
                "leave yourself out of memberIds: the creator is the owner",
            ));
        }
        if !seen.insert(*id) {
            return Err(AppError::bad_input("memberIds names someone twice"));
        }
    }
    chat.store
        .write(move |txn| {
            let new = new.clone();
            Box::pin(async move { changed(create_in(txn, viewer, new).await) })
        })
        .await
}

async fn create_in(txn: &Txn, viewer: Viewer, new: NewRoom) -> Made<Outcome> {
    let mut everyone = new.member_ids.clone();
    everyone.push(viewer.user_id);
    let names = usernames(txn, &everyone).await?;
    blocks::ensure_may_add(txn, viewer.user_id, &new.member_ids, &names).await?;
    let at = now();
    let room = store::rooms::insert(txn, new.name.as_str().to_owned(), new.topic.0, at).await?;
    // Markers start before the creation message, so everyone but the creator sees it as unread:
    // that is how they learn they are in a new room.
    let member = |user_id, role| store::rooms::NewMember {
        user_id,
        role,
        read_up_to: 0,
    };
    store::rooms::insert_members(
        txn,
        room.id,
        at,
        std::iter::once(member(viewer.user_id, Role::Owner))
            .chain(new.member_ids.iter().map(|id| member(*id, Role::Member))),
    )
    .await?;
    let actor = member::Model {
        conversation_id: room.id,
        user_id: viewer.user_id,
        role: Role::Owner.as_str().into(),
        last_read_seq: 0,
        last_read_at: None,
        joined_at: at,
        muted: false,
    };
    let creator = names.get(&viewer.user_id).cloned().unwrap_or_default();
    let body = format!("{creator} created the room “{}”", new.name.as_str());
    let mut op = RoomTxn {
        txn,
        room,
        actor,
        reserved: None,
        logged: Vec::new(),
        notes: Vec::new(),
    };
    op.note(SystemKind::RoomCreated, None, None, body).await?;
    for id in &new.member_ids {
        let text = format!("{creator} added you to “{}”", new.name.as_str());
        op.notify(*id, NotificationKind::RoomAdded, text).await?;
    }
    let room_id = op.room.id;
    joined(op.finish(&[]).await, room_id, everyone)
}

/// Puts [`Event::Joined`] for `users` before an operation's other events: with Redis, the
/// instances where they follow all their conversations start following the room first (and
/// read what they missed of it from the change log).
fn joined(made: Made<Outcome>, room_id: i64, users: Vec<i64>) -> Made<Outcome> {
    let (outcome, mut events) = made?;
    if matches!(outcome, Outcome::Changed(_)) {
        let event = Event::Joined {
            conversation_id: room_id,
        };
        events.insert(0, Envelope::new(users, event));
    }
    Ok((outcome, events))
}

/// Changes a room's name or topic (owners and admins).
pub async fn update(
    chat: &Chat,
    viewer: Viewer,
    room_id: i64,
    update: RoomUpdate,
) -> AppResult<conversation::Model> {
    if update.name.is_none() && update.topic.is_none() {
        return Err(AppError::bad_input("give a name or a topic to change"));
    }
    chat.store
        .write(move |txn| {
            let update = update.clone();
            Box::pin(unless_unchanged(txn, move |txn| {
                Box::pin(update_in(txn, viewer, room_id, update))
            }))
        })
        .await
}

async fn update_in(txn: &Txn, viewer: Viewer, room_id: i64, update: RoomUpdate) -> Made<Outcome> {
    let mut op = RoomTxn::open(txn, room_id, viewer.user_id).await?;
    authorize(op.actor_role(), Action::UpdateRoom)?;
    let actor_name = usernames(txn, &[viewer.user_id])
        .await?
        .remove(&viewer.user_id)
        .unwrap_or_default();
    let room = op.room.clone();
    let name = update
        .name
        .filter(|n| room.name.as_deref() != Some(n.as_str()))
        .map(|n| n.0);
    if let Some(name) = &name {
        let body = format!("{actor_name} renamed the room to “{name}”");
        op.note(SystemKind::RoomRenamed, None, None, body).await?;
    }
    let topic = update.topic.filter(|t| room.topic != t.0).map(|t| t.0);
    if let Some(topic) = &topic {
        let body = match topic {
            Some(_) => format!("{actor_name} changed the topic"),
            None => format!("{actor_name} cleared the topic"),
        };
        op.note(SystemKind::TopicChanged, None, None, body).await?;
    }
    if name.is_some() || topic.is_some() {
        // Writes only the fields given; the notes moved the sequence and last message.
        store::rooms::update_settings(txn, room, name, topic).await?;
    }
    op.finish(&[]).await
}

/// Adds a user to a room with a role (MEMBER by default at the API).
pub async fn add_member(
    chat: &Chat,
    viewer: Viewer,
    room_id: i64,
    user_id: i64,
    role: Role,
) -> AppResult<conversation::Model> {
    if role == Role::Owner {
        return Err(AppError::bad_input(
            "a room has one owner: add as ADMIN or MEMBER, then transferOwnership",
        ));
    }
    chat.store
        .write(move |txn| {
            Box::pin(
                async move { changed(add_member_in(txn, viewer, room_id, user_id, role).await) },
            )
        })
        .await
}

async fn add_member_in(
    txn: &Txn,
    viewer: Viewer,
    room_id: i64,
    user_id: i64,
    role: Role,
) -> Made<Outcome> {
    let mut op = RoomTxn::open(txn, room_id, viewer.user_id).await?;
    authorize(op.actor_role(), Action::AddMember(role))?;
    let names = usernames(txn, &[viewer.user_id, user_id]).await?;
    let name = |id: i64| names.get(&id).cloned().unwrap_or_default();
    if store::rooms::member(txn, room_id, user_id).await?.is_some() {
        return Err(AppError::Conflict(format!(
            "{} is already a member",
            name(user_id)
        )));
    }
    blocks::ensure_may_add(txn, viewer.user_id, &[user_id], &names).await?;
    let body = match role {
        Role::Member => format!("{} added {}", name(viewer.user_id), name(user_id)),
        _ => format!(
            "{} added {} as {}",
            name(viewer.user_id),
            name(user_id),
            role.noun()
        ),
    };
    let seq = op
        .note(SystemKind::MemberAdded, Some(user_id), Some(role), body)
        .await?;
    // The newcomer's marker sits just before the message announcing them: what was said earlier
    // is visible history, not a pile of unread messages.
    let newcomer = store::rooms::NewMember {
        user_id,
        role,
        read_up_to: seq - 1,
    };
    store::rooms::insert_members(txn, room_id, now(), [newcomer]).await?;
    let text = format!(
        "{} added you to “{}”",
        name(viewer.user_id),
        op.room.name.clone().unwrap_or_default()
    );
    op.notify(user_id, NotificationKind::RoomAdded, text)
        .await?;
    joined(op.finish(&[]).await, room_id, vec![user_id])
}

/// Removes a member (by someone who outranks them). The removed member is told, then nothing more.
pub async fn remove_member(
    chat: &Chat,
    viewer: Viewer,
    room_id: i64,
    user_id: i64,
) -> AppResult<conversation::Model> {
    if user_id == viewer.user_id {
        return Err(AppError::bad_input("use leaveRoom to leave a room"));
    }
    chat.store
        .write(move |txn| {
            Box::pin(async move { changed(remove_member_in(txn, viewer, room_id, user_id).await) })
        })
        .await
}

async fn remove_member_in(txn: &Txn, viewer: Viewer, room_id: i64, user_id: i64) -> Made<Outcome> {
    let mut op = RoomTxn::open(txn, room_id, viewer.user_id).await?;
    let target = op.member(user_id).await?;
    authorize(
        op.actor_role(),
        Action::RemoveMember(Role::parse(&target.role)),
    )?;
    let names = usernames(txn, &[viewer.user_id, user_id]).await?;
    let name = |id: i64| names.get(&id).cloned().unwrap_or_default();
    store::rooms::delete_member(txn, room_id, user_id).await?;
    let body = format!("{} removed {}", name(viewer.user_id), name(user_id));
    op.note(SystemKind::MemberRemoved, Some(user_id), None, body)
        .await?;
    let text = format!(
        "{} removed you from “{}”",
        name(viewer.user_id),
        op.room.name.clone().unwrap_or_default()
    );
    op.notify(user_id, NotificationKind::RoomRemoved, text)
        .await?;
    op.finish(&[user_id]).await
}

/// The viewer leaves a room. The owner must transfer ownership first.
pub async fn leave(chat: &Chat, viewer: Viewer, room_id: i64) -> AppResult<()> {
    chat.store
        .write(move |txn| Box::pin(async move { changed(leave_in(txn, viewer, room_id).await) }))
        .await?;
    Ok(())
}

async fn leave_in(txn: &Txn, viewer: Viewer, room_id: i64) -> Made<Outcome> {
    let mut op = RoomTxn::open(txn, room_id, viewer.user_id).await?;
    if op.actor_role() == Role::Owner {
        return Err(AppError::Conflict(
            "the owner cannot leave: transfer ownership to another member first".into(),
        ));
    }
    let name = usernames(txn, &[viewer.user_id])
        .await?
        .remove(&viewer.user_id)
        .unwrap_or_default();
    store::rooms::delete_member(txn, room_id, viewer.user_id).await?;
    op.note(
        SystemKind::MemberLeft,
        Some(viewer.user_id),
        None,
        format!("{name} left"),
    )
    .await?;
    op.finish(&[viewer.user_id]).await
}

/// Makes a member an admin or an admin a member (owner only). Setting the role someone already has
/// changes nothing.
pub async fn set_role(
    chat: &Chat,
    viewer: Viewer,
    room_id: i64,
    user_id: i64,
    role: Role,
) -> AppResult<conversation::Model> {
    if role == Role::Owner {
        return Err(AppError::bad_input(
            "use transferOwnership to make someone the owner",
        ));
    }
    chat.store
        .write(move |txn| {
            Box::pin(unless_unchanged(txn, move |txn| {
                Box::pin(set_role_in(txn, viewer, room_id, user_id, role))
            }))
        })
        .await
}

async fn set_role_in(
    txn: &Txn,
    viewer: Viewer,
    room_id: i64,
    user_id: i64,
    role: Role,
) -> Made<Outcome> {
    let mut op = RoomTxn::open(txn, room_id, viewer.user_id).await?;
    authorize(op.actor_role(), Action::SetRole)?;
    let target = op.member(user_id).await?;
    if Role::parse(&target.role) == Role::Owner {
        return Err(AppError::Conflict(
            "the owner's role changes only by transferring ownership".into(),
        ));
    }
    if Role::parse(&target.role) == role {
        return op.finish(&[]).await;
    }
    let names = usernames(txn, &[viewer.user_id, user_id]).await?;
    let name = |id: i64| names.get(&id).cloned().unwrap_or_default();
    store::rooms::set_role(txn, room_id, user_id, role).await?;
    let body = format!(
        "{} made {} {}",
        name(viewer.user_id),
        name(user_id),
        role.noun()
    );
    op.note(SystemKind::RoleChanged, Some(user_id), Some(role), body)
        .await?;
    op.finish(&[]).await
}

/// Hands the room to another member (owner only); the previous owner becomes an admin.
pub async fn transfer_ownership(
    chat: &Chat,
    viewer: Viewer,
    room_id: i64,
    user_id: i64,
) -> AppResult<conversation::Model> {
    chat.store
        .write(move |txn| {
            Box::pin(
                async move { changed(transfer_ownership_in(txn, viewer, room_id, user_id).await) },
            )
        })
        .await
}

async fn transfer_ownership_in(
    txn: &Txn,
    viewer: Viewer,
    room_id: i64,
    user_id: i64,
) -> Made<Outcome> {
    let mut op = RoomTxn::open(txn, room_id, viewer.user_id).await?;
    authorize(op.actor_role(), Action::TransferOwnership)?;
    if user_id == viewer.user_id {
        return Err(AppError::bad_input("you already own this room"));
    }
    op.member(user_id).await?;
    let names = usernames(txn, &[viewer.user_id, user_id]).await?;
    let name = |id: i64| names.get(&id).cloned().unwrap_or_default();
    store::rooms::set_role(txn, room_id, user_id, Role::Owner).await?;
    store::rooms::set_role(txn, room_id, viewer.user_id, Role::Admin).await?;
    let body = format!("{} made {} the owner", name(viewer.user_id), name(user_id));
    op.note(
        SystemKind::OwnershipTransferred,
        Some(user_id),
        Some(Role::Owner),
        body,
    )
    .await?;
    op.finish(&[]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table_is_what_the_readme_says() {
        use Action::*;
        use Role::*;
        // (action, [owner, admin, member])
        let table = [
            (UpdateRoom, [true, true, false]),
            (AddMember(Member), [true, true, false]),
            (AddMember(Admin), [true, false, false]),
            (AddMember(Owner), [false, false, false]),
            (RemoveMember(Member), [true, true, false]),
            (RemoveMember(Admin), [true, false, false]),
            (RemoveMember(Owner), [false, false, false]),
            (SetRole, [true, false, false]),
            (TransferOwnership, [true, false, false]),
            (DeleteOthersMessage, [true, true, false]),
        ];
        for (action, expected) in table {
            for (actor, want) in [Owner, Admin, Member].into_iter().zip(expected) {
                assert_eq!(allowed(actor, action), want, "{actor:?} {action:?}");
            }
        }
    }

    #[test]
    fn room_names_are_trimmed_bounded_and_printable() {
        assert_eq!(
            RoomName::parse("  Front desk ").unwrap().as_str(),
            "Front desk"
        );
        for bad in ["", "   ", "a\nb", "tab\there", &"x".repeat(101)] {
            assert!(RoomName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RoomName::parse(&"é".repeat(100)).is_ok());
    }

    #[test]
    fn topics_may_be_blank_or_multiline_but_not_too_long() {
        assert_eq!(RoomTopic::parse("  ").unwrap(), RoomTopic::none());
        assert!(RoomTopic::parse("line one\nline two").is_ok());
        assert!(RoomTopic::parse("bell\u{7}").is_err());
        assert!(RoomTopic::parse(&"x".repeat(501)).is_err());
    }

    #[test]
    fn stored_names_round_trip() {
        for role in [Role::Owner, Role::Admin, Role::Member] {
            assert_eq!(Role::parse(role.as_str()), role);
        }
        assert_eq!(Role::parse("ROOT"), Role::Member);
        for kind in [
            SystemKind::RoomCreated,
            SystemKind::TopicChanged,
            SystemKind::MemberLeft,
        ] {
            assert_eq!(SystemKind::parse(kind.as_str()), Some(kind));
        }
    }
}
