//! The one conformance suite every [`Storage`] backend runs.
//!
//! Each check is a `pub async fn` taking a fresh, empty store. A backend runs
//! them all by invoking [`storage_conformance_tests!`](crate::storage_conformance_tests)
//! in its test module with an async expression that builds a [`TestStore`]:
//!
//! ```ignore
//! #[cfg(test)]
//! mod tests {
//!     use chat_server::storage::conformance::TestStore;
//!     chat_server::storage_conformance_tests!(async {
//!         TestStore::new(MyStorage::connect_for_tests().await)
//!     });
//! }
//! ```
//!
//! The macro expands to one `#[tokio::test]` per check on a multi-thread
//! runtime, so the crate invoking it needs `tokio` with the `macros` and
//! `rt-multi-thread` features. Outside this crate, enable chat-server's
//! `testing` feature.
//!
//! Expected values are written out by hand rather than computed through the
//! store, so that a backend cannot pass by being consistently wrong.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use chat_core::moderation::{Role, RoomSettings};
use chat_core::room::RoomType;
use chat_core::timeline::MemberChange;
use chat_core::{AttachmentId, MessageId, RoomId, Seq, Timestamp, UserId};

use super::{
    Appended, AttachmentRecord, Authority, ChangeOp, Changed, Conflict, Conversation, ExternalUser,
    HistoryPage, HistoryQuery, MAX_PINS, MAX_REACTION_KEYS, MemberState, MemberUpdate,
    MessageChange, NewAttachment, NewMessage, NewReport, NewRoom, NewUser, OutboxBacklog,
    PublicRoom, ReactionCount, RefreshTokenRecord, Refusal, ReportRecord, ReportStatus, RoomChange,
    RoomKey, RoomPerson, RoomRecord, SearchRequest, Storage, StorageError, StoredEvent,
    StoredMember, StoredMessage, StoredReply, StoredUpdate, TokenUse, UpdateKind, UserRecord,
    UserRoom,
};

/// A store under test, with whatever must outlive it (a temporary directory,
/// a database to drop).
pub struct TestStore {
    storage: Arc<dyn Storage>,
    // Declared after `storage` so that it is dropped after it: the store
    // closes before its files or schema go away.
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

impl TestStore {
    /// A store that needs nothing else kept alive.
    pub fn new(storage: impl Storage) -> Self {
        Self {
            storage: Arc::new(storage),
            _guard: None,
        }
    }

    /// A store that must be dropped before `guard`.
    pub fn with_guard(storage: impl Storage, guard: impl Any + Send + Sync) -> Self {
        Self {
            storage: Arc::new(storage),
            _guard: Some(Box::new(guard)),
        }
    }

    /// The store, shareable with spawned tasks.
    pub fn storage(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.storage)
    }
}

impl fmt::Debug for TestStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestStore")
            .field("guarded", &self._guard.is_some())
            .finish_non_exhaustive()
    }
}

/// Expands to one `#[tokio::test]` per conformance check, each on a fresh
/// store built by `$make`, an async expression evaluating to a
/// [`TestStore`](crate::storage::conformance::TestStore).
#[macro_export]
macro_rules! storage_conformance_tests {
    ($make:expr) => {
        $crate::storage_conformance_tests!(@each $make;
            users_create_and_lookup,
            users_conflicts,
            users_paging,
            users_by_ids,
            refresh_token_live_then_spent,
            refresh_token_concurrent_use,
            refresh_family_revoke,
            server_secret_get_or_create,
            room_create,
            room_name_conflict,
            room_lookup,
            room_delete,
            room_people_ordering,
            membership_states,
            room_for,
            join_room,
            invite,
            leave_room,
            moderate_members,
            room_settings_and_the_rule_of_sending,
            public_directory,
            blocks,
            account_control,
            provision_external_users,
            api_keys,
            outbox_cursors,
            push_devices,
            reports,
            user_rooms,
            user_rooms_others_read_seq,
            direct_room_create_then_get,
            direct_room_pair_is_unordered,
            direct_room_concurrent_create,
            direct_room_distinct_pairs,
            direct_room_with_oneself,
            find_direct_room,
            user_conversations,
            direct_room_delete_frees_pair,
            append_assigns_seq,
            append_concurrent_seq,
            append_client_id_idempotent,
            append_concurrent_duplicates,
            append_missing_room,
            append_needs_membership,
            append_unknown_sender,
            append_mixed_burst,
            append_many_in_order,
            append_many_concurrent,
            history_empty,
            history_pagination,
            history_walk,
            read_marks,
            append_advances_sender_mark,
            unread_total,
            unread_counts_match_a_naive_count,
            edit_message,
            delete_message,
            change_message_refusals,
            changes_heard_in_order,
            react_to_message,
            pin_message,
            reply_to_message,
            thread_replies,
            mentions_counted,
            message_lookups,
            search_messages,
            search_pages_through_many_messages,
            timeline_pages_every_kind,
            listener_hears_every_event_in_order,
            attachments_recorded_with_usage,
            attachments_linked_by_the_append,
            attachments_doomed_with_their_message_or_room,
            attachments_unsent_doomed_by_age_or_uploader,
            ping,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            // Several workers on every test, so that the concurrent checks
            // race for real.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store: $crate::storage::conformance::TestStore = $make.await;
                $crate::storage::conformance::$name(store.storage()).await;
            }
        )*
    };
}

// Helpers. They panic with a reason, which is what a test wants.

fn at(micros: i64) -> Timestamp {
    // A fixed base keeps expected values readable and ordering explicit.
    Timestamp::from_unix_micros(1_770_000_000_000_000 + micros)
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.to_owned(),
        email: format!("{name}@example.com"),
        display_name: format!("{name} display"),
        password_hash: format!("$argon2id$v=19$hash-of-{name}"),
        created_at: at(0),
    }
}

async fn user(store: &dyn Storage, name: &str) -> UserRecord {
    store
        .create_user(new_user(name))
        .await
        .expect("create user")
}

async fn room(store: &dyn Storage, name: &str, creator: UserId, invited: &[UserId]) -> RoomRecord {
    room_at(store, name, creator, invited, at(0)).await
}

async fn room_at(
    store: &dyn Storage,
    name: &str,
    creator: UserId,
    invited: &[UserId],
    created_at: Timestamp,
) -> RoomRecord {
    store
        .create_room(NewRoom {
            name: name.to_owned(),
            kind: RoomType::Private,
            creator,
            invited: invited.to_vec(),
            created_at,
        })
        .await
        .expect("create room")
}

fn message(room: RoomId, sender: UserId, body: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        room,
        sender,
        body: body.to_owned(),
        client_id: client_id.map(str::to_owned),
        created_at: at(1_000),
        origin: None,
        reply_to: None,
        thread_root: None,
        mentions: Vec::new(),
        attachments: Vec::new(),
    }
}

async fn send(store: &dyn Storage, room: RoomId, sender: UserId, body: &str) -> StoredMessage {
    let appended = store
        .append(message(room, sender, body, None))
        .await
        .expect("append");
    assert!(
        appended.created,
        "a message without client_id is always new"
    );
    appended.message
}

/// Appends what `with` makes of a plain message (a reply, a thread
/// reply, mentions) at `at(micros)`.
async fn send_with(
    store: &dyn Storage,
    room: RoomId,
    sender: UserId,
    body: &str,
    with: impl FnOnce(&mut NewMessage),
) -> StoredMessage {
    let mut new = message(room, sender, body, None);
    with(&mut new);
    let appended = store.append(new).await.expect("append");
    assert!(appended.created);
    appended.message
}

async fn page(
    store: &dyn Storage,
    room: RoomId,
    before: Option<Seq>,
    after: Option<Seq>,
    limit: u32,
) -> HistoryPage {
    store
        .history(
            room,
            HistoryQuery {
                before,
                after,
                limit,
            },
        )
        .await
        .expect("history")
}

/// The room's whole timeline, oldest first.
async fn timeline(store: &dyn Storage, room: RoomId) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .timeline(
                room,
                HistoryQuery {
                    before: None,
                    after: Some(after),
                    limit: 200,
                },
            )
            .await
            .expect("timeline");
        after = page.events.last().map_or(after, StoredEvent::seq);
        events.extend(page.events);
        if !page.has_more {
            return events;
        }
    }
}

fn change(message: MessageId, user: UserId, op: ChangeOp, allowed: Authority) -> MessageChange {
    MessageChange {
        message,
        room: None,
        user,
        op,
        allowed,
        created_at: at(5_000),
    }
}

/// Makes `change`; where the backend answers with what the changer sees
/// of the message ([`Changed::seen`]), it is what the reads say (read
/// marks as of the change: appends running beside it may have moved them
/// on since).
async fn changed_as_read(
    store: &dyn Storage,
    change: MessageChange,
) -> Result<Changed, StorageError> {
    let user = change.user;
    let changed = store.change_message(change).await?;
    let Some(seen) = &changed.seen else {
        return Ok(changed);
    };
    let read = super::read_seen(store, &changed.message, user)
        .await
        .expect("read");
    assert_eq!(
        seen.reactions, read.reactions,
        "the changer's reactions, as read"
    );
    assert!(
        seen.own_mark <= read.own_mark && seen.others_mark <= read.others_mark,
        "read marks as of the change: {seen:?}, read {read:?}"
    );
    Ok(changed)
}

async fn edit(
    store: &dyn Storage,
    message: MessageId,
    user: UserId,
    body: &str,
) -> Result<Changed, StorageError> {
    changed_as_read(
        store,
        change(
            message,
            user,
            ChangeOp::Edit {
                body: body.to_owned(),
            },
            Authority::Sender,
        ),
    )
    .await
}

async fn react(
    store: &dyn Storage,
    message: MessageId,
    user: UserId,
    key: &str,
    add: bool,
) -> Result<Changed, StorageError> {
    changed_as_read(
        store,
        change(
            message,
            user,
            ChangeOp::React {
                key: key.to_owned(),
                add,
            },
            Authority::Member,
        ),
    )
    .await
}

fn counts(reactions: &[ReactionCount]) -> Vec<(&str, u32, bool)> {
    reactions
        .iter()
        .map(|r| (r.key.as_str(), r.count, r.mine))
        .collect()
}

async fn delete(
    store: &dyn Storage,
    message: MessageId,
    user: UserId,
) -> Result<Changed, StorageError> {
    changed_as_read(
        store,
        change(
            message,
            user,
            ChangeOp::Delete,
            Authority::SenderOrModerator,
        ),
    )
    .await
}

fn seqs(page: &HistoryPage) -> Vec<Seq> {
    page.messages.iter().map(|m| m.seq).collect()
}

fn bodies(page: &HistoryPage) -> Vec<&str> {
    page.messages.iter().map(|m| m.body.as_str()).collect()
}

async fn last_seq(store: &dyn Storage, room: RoomId) -> Seq {
    store
        .room(room)
        .await
        .expect("room")
        .expect("room exists")
        .last_seq
}

async fn read_seq_of(store: &dyn Storage, room: RoomId, user: UserId) -> Seq {
    store
        .room_people(room)
        .await
        .expect("room people")
        .into_iter()
        .find(|p| p.user == user)
        .expect("user is in the room")
        .read_seq
}

fn token(id: &str, user: UserId, family: &str) -> RefreshTokenRecord {
    RefreshTokenRecord {
        id: id.to_owned(),
        user,
        family: family.to_owned(),
        expires_at: at(86_400_000_000),
    }
}

fn person(user: &UserRecord, state: MemberState, read_seq: Seq) -> RoomPerson {
    RoomPerson {
        user: user.id,
        username: user.username.clone(),
        state,
        read_seq,
        role: Role::Member,
    }
}

/// [`person`] for the room's owner.
fn owner(user: &UserRecord, state: MemberState, read_seq: Seq) -> RoomPerson {
    RoomPerson {
        role: Role::Owner,
        ..person(user, state, read_seq)
    }
}

// Users

pub async fn users_create_and_lookup(store: Arc<dyn Storage>) {
    let store = &*store;
    let created = store
        .create_user(NewUser {
            username: "alice".to_owned(),
            email: "Alice@Example.COM".to_owned(),
            display_name: "Alice A.".to_owned(),
            password_hash: "$argon2id$v=19$abc".to_owned(),
            created_at: at(42),
        })
        .await
        .expect("create alice");
    assert!(created.id.get() > 0);
    assert_eq!(created.username, "alice");
    assert_eq!(
        created.email, "alice@example.com",
        "emails are stored lowercased"
    );
    assert_eq!(created.display_name, "Alice A.");
    assert_eq!(created.password_hash, "$argon2id$v=19$abc");
    assert_eq!(created.created_at, at(42));

    let bob = user(store, "bob").await;
    assert_ne!(bob.id, created.id);

    assert_eq!(
        store.user(created.id).await.expect("user"),
        Some(created.clone())
    );
    assert_eq!(store.user(bob.id).await.expect("user"), Some(bob.clone()));
    assert_eq!(
        store.user_by_username("alice").await.expect("by username"),
        Some(created.clone())
    );
    assert_eq!(
        store
            .user_by_email("ALICE@example.com")
            .await
            .expect("by email"),
        Some(created.clone()),
        "emails match case-insensitively"
    );
    assert_eq!(
        store
            .user_by_email("alice@example.com")
            .await
            .expect("by email"),
        Some(created)
    );
    assert_eq!(store.user(UserId(987_654)).await.expect("user"), None);
    assert_eq!(
        store.user_by_username("carol").await.expect("by username"),
        None
    );
    assert_eq!(
        store.user_by_username("ALICE").await.expect("by username"),
        None,
        "usernames are exact"
    );
    assert_eq!(
        store
            .user_by_email("carol@example.com")
            .await
            .expect("by email"),
        None
    );
}

pub async fn users_conflicts(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;

    let same_name = NewUser {
        email: "other@example.com".to_owned(),
        ..new_user("alice")
    };
    let err = store
        .create_user(same_name)
        .await
        .expect_err("username taken");
    assert!(
        matches!(err, StorageError::Conflict(Conflict::Username)),
        "got {err:?}"
    );

    let same_email = NewUser {
        email: "ALICE@EXAMPLE.com".to_owned(),
        ..new_user("alice2")
    };
    let err = store
        .create_user(same_email)
        .await
        .expect_err("email taken");
    assert!(
        matches!(err, StorageError::Conflict(Conflict::Email)),
        "got {err:?}"
    );

    let all = store.users(None, 100).await.expect("users");
    assert_eq!(all, vec![alice], "a rejected user stores nothing");

    // The names are free for a user that takes neither.
    let alice2 = user(store, "alice2").await;
    assert_eq!(alice2.email, "alice2@example.com");
}

pub async fn users_paging(store: Arc<dyn Storage>) {
    let store = &*store;
    let mut made = Vec::new();
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        made.push(user(store, name).await);
    }
    let ids: Vec<UserId> = made.iter().map(|u| u.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids grow with creation");

    let first = store.users(None, 2).await.expect("users");
    assert_eq!(first, made[0..2].to_vec());
    let second = store.users(Some(made[1].id), 2).await.expect("users");
    assert_eq!(second, made[2..4].to_vec());
    let third = store.users(Some(made[3].id), 2).await.expect("users");
    assert_eq!(third, made[4..5].to_vec());
    let past_end = store.users(Some(made[4].id), 2).await.expect("users");
    assert!(past_end.is_empty());
    let all = store.users(None, 100).await.expect("users");
    assert_eq!(all, made);
    let none = store.users(None, 0).await.expect("users");
    assert!(none.is_empty(), "limit 0 returns nothing");
}

pub async fn users_by_ids(store: Arc<dyn Storage>) {
    let store = &*store;
    let a = user(store, "a").await;
    let b = user(store, "b").await;
    let c = user(store, "c").await;

    let found = store
        .users_by_ids(&[c.id, UserId(987_654), a.id, c.id])
        .await
        .expect("users by ids");
    assert_eq!(
        found,
        vec![a.clone(), c.clone()],
        "existing ones, by id, once each"
    );
    let found = store.users_by_ids(&[b.id]).await.expect("users by ids");
    assert_eq!(found, vec![b]);
    let found = store.users_by_ids(&[]).await.expect("users by ids");
    assert!(found.is_empty());
}

// Refresh tokens

pub async fn refresh_token_live_then_spent(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let record = token("jti-1", alice.id, "fam-1");
    store
        .insert_refresh_token(record.clone())
        .await
        .expect("insert token");

    assert_eq!(
        store.use_refresh_token("jti-1").await.expect("use"),
        TokenUse::Live(record.clone())
    );
    assert_eq!(
        store.use_refresh_token("jti-1").await.expect("use"),
        TokenUse::Spent(record.clone())
    );
    assert_eq!(
        store.use_refresh_token("jti-1").await.expect("use"),
        TokenUse::Spent(record)
    );
    assert_eq!(
        store.use_refresh_token("never-issued").await.expect("use"),
        TokenUse::Unknown
    );
}

pub async fn refresh_token_concurrent_use(store: Arc<dyn Storage>) {
    let alice = user(&*store, "alice").await;
    for round in 0..5 {
        let id = format!("jti-{round}");
        store
            .insert_refresh_token(token(&id, alice.id, "fam"))
            .await
            .expect("insert token");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                let id = id.clone();
                tokio::spawn(async move { store.use_refresh_token(&id).await.expect("use") })
            })
            .collect();
        let mut live = 0;
        let mut spent = 0;
        for task in tasks {
            match task.await.expect("task") {
                TokenUse::Live(r) => {
                    assert_eq!(r.id, id);
                    live += 1;
                }
                TokenUse::Spent(r) => {
                    assert_eq!(r.id, id);
                    spent += 1;
                }
                TokenUse::Unknown => panic!("token {id} was inserted"),
            }
        }
        assert_eq!((live, spent), (1, 7), "exactly one use sees the token live");
    }
}

pub async fn refresh_family_revoke(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let a1 = token("a1", alice.id, "fam-a");
    let a2 = token("a2", alice.id, "fam-a");
    let b1 = token("b1", alice.id, "fam-b");
    for t in [&a1, &a2, &b1] {
        store
            .insert_refresh_token(t.clone())
            .await
            .expect("insert token");
    }

    store.revoke_refresh_family("fam-a").await.expect("revoke");
    store
        .revoke_refresh_family("no-such-family")
        .await
        .expect("revoking nothing is fine");

    assert_eq!(
        store.use_refresh_token("a1").await.expect("use"),
        TokenUse::Spent(a1)
    );
    assert_eq!(
        store.use_refresh_token("a2").await.expect("use"),
        TokenUse::Spent(a2)
    );
    assert_eq!(
        store.use_refresh_token("b1").await.expect("use"),
        TokenUse::Live(b1)
    );
}

// Server secrets

pub async fn server_secret_get_or_create(store: Arc<dyn Storage>) {
    let store = &*store;
    assert_eq!(
        store.server_secret("jwt", "first").await.expect("secret"),
        "first"
    );
    assert_eq!(
        store.server_secret("jwt", "second").await.expect("secret"),
        "first",
        "the stored secret wins over a later candidate"
    );
    assert_eq!(
        store.server_secret("other", "third").await.expect("secret"),
        "third"
    );
    assert_eq!(
        store.server_secret("jwt", "fourth").await.expect("secret"),
        "first"
    );
}

// Rooms

pub async fn room_create(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;

    let created = store
        .create_room(NewRoom {
            name: "lobby".to_owned(),
            kind: RoomType::Public,
            creator: alice.id,
            invited: vec![bob.id, carol.id, bob.id, alice.id],
            created_at: at(7),
        })
        .await
        .expect("create room");
    assert!(created.id.get() > 0);
    assert_eq!(created.name, "lobby");
    assert_eq!(created.kind, RoomType::Public);
    assert_eq!(created.creator, alice.id);
    assert_eq!(created.created_at, at(7));
    assert_eq!(created.last_seq, 0);

    let people = store.room_people(created.id).await.expect("people");
    assert_eq!(
        people,
        vec![
            owner(&alice, MemberState::Member, 0),
            person(&bob, MemberState::Invited, 0),
            person(&carol, MemberState::Invited, 0),
        ],
        "the creator is a member once; invitees once each, in order"
    );

    // Every kind survives a round trip.
    for (i, kind) in [
        RoomType::Public,
        RoomType::Private,
        RoomType::Game,
        RoomType::Direct,
    ]
    .into_iter()
    .enumerate()
    {
        let made = store
            .create_room(NewRoom {
                name: format!("kind-{i}"),
                kind,
                creator: bob.id,
                invited: Vec::new(),
                created_at: at(8),
            })
            .await
            .expect("create room");
        let read = store.room(made.id).await.expect("room").expect("exists");
        assert_eq!(read.kind, kind);
        assert_eq!(read, made);
    }
}

pub async fn room_name_conflict(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let first = room(store, "lobby", alice.id, &[]).await;

    let err = store
        .create_room(NewRoom {
            name: "lobby".to_owned(),
            kind: RoomType::Game,
            creator: bob.id,
            invited: vec![alice.id],
            created_at: at(9),
        })
        .await
        .expect_err("name taken");
    assert!(
        matches!(err, StorageError::Conflict(Conflict::RoomName)),
        "got {err:?}"
    );

    assert_eq!(
        store.room_by_name("lobby").await.expect("room"),
        Some(first.clone())
    );
    let bob_rooms = store.user_rooms(bob.id).await.expect("rooms");
    assert!(bob_rooms.is_empty(), "the rejected room left no membership");
    let alice_rooms = store.user_rooms(alice.id).await.expect("rooms");
    assert_eq!(alice_rooms.len(), 1);
    assert_eq!(alice_rooms[0].room, first);
}

pub async fn room_lookup(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    let other = room(store, "other", alice.id, &[]).await;
    assert_ne!(lobby.id, other.id);

    assert_eq!(
        store.room(lobby.id).await.expect("room"),
        Some(lobby.clone())
    );
    assert_eq!(
        store.room_by_name("other").await.expect("room"),
        Some(other.clone())
    );
    assert_eq!(store.room(RoomId(987_654)).await.expect("room"), None);
    assert_eq!(store.room_by_name("nowhere").await.expect("room"), None);

    send(store, lobby.id, alice.id, "one").await;
    send(store, lobby.id, alice.id, "two").await;
    let read = store
        .room_by_name("lobby")
        .await
        .expect("room")
        .expect("exists");
    assert_eq!(read.last_seq, 2);
    assert_eq!(last_seq(store, other.id).await, 0, "rooms count separately");
}

pub async fn room_delete(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let doomed = room(store, "doomed", alice.id, &[carol.id]).await;
    let kept = room(store, "kept", alice.id, &[]).await;
    store.join_room(doomed.id, bob.id).await.expect("join");
    store
        .append(message(doomed.id, alice.id, "gone soon", Some("c-1")))
        .await
        .expect("append");
    send(store, doomed.id, bob.id, "me too").await;
    send(store, kept.id, alice.id, "stays").await;

    assert!(store.delete_room(doomed.id).await.expect("delete"));

    assert_eq!(store.room(doomed.id).await.expect("room"), None);
    assert_eq!(store.room_by_name("doomed").await.expect("room"), None);
    assert!(
        store
            .room_people(doomed.id)
            .await
            .expect("people")
            .is_empty()
    );
    assert!(store.read_marks(doomed.id).await.expect("marks").is_empty());
    assert_eq!(
        store
            .membership(doomed.id, alice.id)
            .await
            .expect("membership"),
        None
    );
    assert_eq!(
        store
            .membership(doomed.id, carol.id)
            .await
            .expect("membership"),
        None
    );
    let history = page(store, doomed.id, None, None, 50).await;
    assert!(history.messages.is_empty() && !history.has_more);
    let bob_rooms = store.user_rooms(bob.id).await.expect("rooms");
    assert!(bob_rooms.is_empty());
    let carol_rooms = store.user_rooms(carol.id).await.expect("rooms");
    assert!(carol_rooms.is_empty());
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 0);

    assert!(
        !store.delete_room(doomed.id).await.expect("delete"),
        "already gone"
    );
    assert!(!store.delete_room(RoomId(987_654)).await.expect("delete"));

    // The other room is untouched.
    let kept_page = page(store, kept.id, None, None, 50).await;
    assert_eq!(seqs(&kept_page), vec![1]);
    assert_eq!(kept_page.messages[0].body, "stays");

    // The name is free again, for a new room with a new id and no history;
    // the deleted message no longer holds its client_id.
    let again = room(store, "doomed", alice.id, &[]).await;
    assert_ne!(again.id, doomed.id, "ids are not reused");
    assert_eq!(again.last_seq, 0);
    let appended = store
        .append(message(again.id, alice.id, "fresh", Some("c-1")))
        .await
        .expect("append");
    assert!(appended.created);
    assert_eq!(appended.message.seq, 1);
    assert_eq!(appended.message.room, again.id);
}

pub async fn room_people_ordering(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let erin = user(store, "erin").await;
    let lobby = room(store, "lobby", alice.id, &[carol.id, bob.id]).await;
    send(store, lobby.id, alice.id, "one").await;
    send(store, lobby.id, alice.id, "two").await;

    // Seqs: one 1, two 2, dave joined 3, three 4, bob joined 5.
    assert!(store.join_room(lobby.id, dave.id).await.expect("join"));
    send(store, lobby.id, alice.id, "three").await;
    assert!(store.join_room(lobby.id, bob.id).await.expect("join"));
    store
        .invite(lobby.id, alice.id, &[erin.id])
        .await
        .expect("invite");

    let people = store.room_people(lobby.id).await.expect("people");
    assert_eq!(
        people,
        vec![
            owner(&alice, MemberState::Member, 4),
            person(&dave, MemberState::Member, 2),
            person(&bob, MemberState::Member, 4),
            person(&carol, MemberState::Invited, 0),
            person(&erin, MemberState::Invited, 0),
        ],
        "members by joining, then invitees by invitation"
    );
    assert!(
        store
            .room_people(RoomId(987_654))
            .await
            .expect("people")
            .is_empty()
    );
}

pub async fn membership_states(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;

    let of = |u: UserId| store.membership(lobby.id, u);
    assert_eq!(
        of(alice.id).await.expect("membership"),
        Some(MemberState::Member)
    );
    assert_eq!(
        of(bob.id).await.expect("membership"),
        Some(MemberState::Invited)
    );
    assert_eq!(of(carol.id).await.expect("membership"), None);
    assert_eq!(
        store
            .membership(RoomId(987_654), alice.id)
            .await
            .expect("membership"),
        None
    );
    store.join_room(lobby.id, bob.id).await.expect("join");
    assert_eq!(
        of(bob.id).await.expect("membership"),
        Some(MemberState::Member)
    );
}

/// `room_for`: the room by id or name with one user's standing, the same
/// as `room` (or `room_by_name`) and `membership` one after the other.
pub async fn room_for(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    let other = room(store, "other", bob.id, &[]).await;
    send(store, lobby.id, alice.id, "moves last_seq").await;
    let current = store.room(lobby.id).await.expect("room").expect("lobby");

    for key in [RoomKey::Id(lobby.id), RoomKey::Name("lobby")] {
        let of = |u: UserId| store.room_for(key, u);
        assert_eq!(
            of(alice.id).await.expect("room_for"),
            Some((current.clone(), Some(MemberState::Member))),
            "{key:?}"
        );
        assert_eq!(
            of(bob.id).await.expect("room_for"),
            Some((current.clone(), Some(MemberState::Invited))),
            "{key:?}"
        );
        assert_eq!(
            of(carol.id).await.expect("room_for"),
            Some((current.clone(), None)),
            "{key:?}"
        );
    }
    assert_eq!(current.last_seq, 1);
    // Another room's membership does not leak into this one.
    assert_eq!(
        store
            .room_for(RoomKey::Id(other.id), alice.id)
            .await
            .expect("room_for"),
        Some((other.clone(), None))
    );
    for key in [RoomKey::Id(RoomId(987_654)), RoomKey::Name("nowhere")] {
        assert_eq!(store.room_for(key, alice.id).await.expect("room_for"), None);
    }
    store.delete_room(lobby.id).await.expect("delete");
    assert_eq!(
        store
            .room_for(RoomKey::Id(lobby.id), alice.id)
            .await
            .expect("room_for"),
        None
    );
}

pub async fn join_room(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    for body in ["1", "2", "3"] {
        send(store, lobby.id, alice.id, body).await;
    }

    assert!(
        store.join_room(lobby.id, bob.id).await.expect("join"),
        "invited joins"
    );
    assert_eq!(
        store
            .membership(lobby.id, bob.id)
            .await
            .expect("membership"),
        Some(MemberState::Member)
    );
    assert_eq!(
        read_seq_of(store, lobby.id, bob.id).await,
        3,
        "the mark starts at last_seq"
    );
    assert_eq!(
        store.unread_total(bob.id).await.expect("unread"),
        0,
        "old messages are not unread"
    );

    // Bob's join took seq 4: the timeline's, not a message.
    assert_eq!(
        store
            .room(lobby.id)
            .await
            .expect("room")
            .map(|r| r.last_seq),
        Some(4)
    );
    assert!(
        store.join_room(lobby.id, carol.id).await.expect("join"),
        "a stranger joins"
    );
    assert_eq!(read_seq_of(store, lobby.id, carol.id).await, 4);

    send(store, lobby.id, alice.id, "6").await;
    send(store, lobby.id, alice.id, "7").await;
    assert!(
        !store.join_room(lobby.id, bob.id).await.expect("join"),
        "already a member"
    );
    assert_eq!(
        read_seq_of(store, lobby.id, bob.id).await,
        3,
        "joining again leaves the mark"
    );
    assert!(!store.join_room(lobby.id, alice.id).await.expect("join"));
    assert_eq!(read_seq_of(store, lobby.id, alice.id).await, 7);
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 2);
    // Only the two joins are in the timeline beside the messages; joining
    // again appended nothing.
    let kinds: Vec<(Seq, &str)> = timeline(store, lobby.id)
        .await
        .iter()
        .map(|e| match e {
            StoredEvent::Message(m) => (m.seq, "message"),
            StoredEvent::Member(m) if m.user == bob.id => (m.seq, "bob joined"),
            StoredEvent::Member(m) if m.user == carol.id => (m.seq, "carol joined"),
            StoredEvent::Member(_) => (e.seq(), "someone else"),
            StoredEvent::Update(_) | StoredEvent::Room(_) => (e.seq(), "a change"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, "message"),
            (2, "message"),
            (3, "message"),
            (4, "bob joined"),
            (5, "carol joined"),
            (6, "message"),
            (7, "message")
        ]
    );

    let err = store
        .join_room(RoomId(987_654), bob.id)
        .await
        .expect_err("no room");
    assert!(matches!(err, StorageError::NotFound), "got {err:?}");
}

pub async fn invite(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, carol.id).await.expect("join");
    send(store, lobby.id, alice.id, "hi").await;

    store
        .invite(
            lobby.id,
            alice.id,
            &[bob.id, alice.id, dave.id, carol.id, dave.id],
        )
        .await
        .expect("invite");
    let people = store.room_people(lobby.id).await.expect("people");
    assert_eq!(
        people,
        // Carol's join took seq 1, alice's message 2.
        vec![
            owner(&alice, MemberState::Member, 2),
            person(&carol, MemberState::Member, 0),
            person(&bob, MemberState::Invited, 0),
            person(&dave, MemberState::Invited, 0),
        ],
        "only dave is new, once; nobody else changes"
    );
    store
        .invite(lobby.id, alice.id, &[])
        .await
        .expect("inviting nobody is fine");

    let err = store
        .invite(RoomId(987_654), alice.id, &[dave.id])
        .await
        .expect_err("no room");
    assert!(matches!(err, StorageError::NotFound), "got {err:?}");
}

pub async fn leave_room(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let lobby = room(store, "lobby", alice.id, &[carol.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    send(store, lobby.id, alice.id, "unread for bob").await;
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 1);

    assert!(
        store.leave_room(lobby.id, bob.id).await.expect("leave"),
        "member leaves"
    );
    assert!(
        store.leave_room(lobby.id, carol.id).await.expect("leave"),
        "invitee declines"
    );
    assert!(
        !store.leave_room(lobby.id, bob.id).await.expect("leave"),
        "already left"
    );
    assert!(
        !store.leave_room(lobby.id, dave.id).await.expect("leave"),
        "never there"
    );
    assert!(
        !store
            .leave_room(RoomId(987_654), alice.id)
            .await
            .expect("leave")
    );

    assert_eq!(
        store
            .membership(lobby.id, bob.id)
            .await
            .expect("membership"),
        None
    );
    assert_eq!(
        store
            .membership(lobby.id, carol.id)
            .await
            .expect("membership"),
        None
    );
    assert_eq!(
        store.room_people(lobby.id).await.expect("people"),
        // Bob's join took seq 1, alice's message 2.
        vec![owner(&alice, MemberState::Member, 2)]
    );
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 0);
    assert!(store.user_rooms(bob.id).await.expect("rooms").is_empty());
    let err = store
        .mark_read(lobby.id, bob.id, 1)
        .await
        .expect_err("not a member");
    assert!(matches!(err, StorageError::NotFound), "got {err:?}");

    // Leaving takes a seq in the timeline (two: bob left, carol
    // declined) and leaves the messages as they were.
    assert_eq!(seqs(&page(store, lobby.id, None, None, 50).await), vec![2]);
    let left: Vec<(Seq, UserId, MemberChange)> = timeline(store, lobby.id)
        .await
        .iter()
        .filter_map(|e| match e {
            StoredEvent::Member(m) => Some((m.seq, m.user, m.change)),
            StoredEvent::Message(_) | StoredEvent::Update(_) | StoredEvent::Room(_) => None,
        })
        .collect();
    assert_eq!(
        left,
        vec![
            (1, bob.id, MemberChange::Joined),
            (3, bob.id, MemberChange::Left),
            (4, carol.id, MemberChange::Left)
        ]
    );
}

pub async fn user_rooms(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;

    // Creation times and message times chosen so that activity order
    // differs from both creation order and id order.
    let quiet = room_at(store, "quiet", alice.id, &[], at(300)).await;
    let busy = room_at(store, "busy", bob.id, &[], at(100)).await;
    let invited = room_at(store, "invited", carol.id, &[alice.id], at(200)).await;
    let elsewhere = room_at(store, "elsewhere", bob.id, &[], at(900)).await;
    store.join_room(busy.id, alice.id).await.expect("join");

    let mut in_busy = message(busy.id, bob.id, "first", None);
    in_busy.created_at = at(400);
    store.append(in_busy).await.expect("append");
    let mut in_busy = message(busy.id, bob.id, "newest", Some("n-1"));
    in_busy.created_at = at(500);
    let newest = store.append(in_busy).await.expect("append").message;
    let mut in_invited = message(invited.id, carol.id, "secret", None);
    in_invited.created_at = at(600);
    store.append(in_invited).await.expect("append");
    send(store, elsewhere.id, bob.id, "not alice's").await;

    let rooms = store.user_rooms(alice.id).await.expect("rooms");
    let names: Vec<&str> = rooms.iter().map(|r| r.room.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["invited", "busy", "quiet"],
        "newest activity first"
    );

    let invited_row = &rooms[0];
    assert_eq!(invited_row.state, MemberState::Invited);
    assert_eq!(invited_row.read_seq, 0);
    assert_eq!(
        invited_row.member_count, 1,
        "invitees are not counted as members"
    );
    assert_eq!(invited_row.last_message, None, "invitees see no message");
    assert_eq!(invited_row.room.last_seq, 1);

    let busy_row = &rooms[1];
    assert_eq!(busy_row.state, MemberState::Member);
    assert_eq!(busy_row.read_seq, 0);
    assert_eq!(busy_row.member_count, 2);
    assert_eq!(busy_row.room.last_seq, 3, "alice's join, then two messages");
    assert_eq!(
        busy_row.unread, 2,
        "the two messages; her join is no message"
    );
    assert_eq!(busy_row.last_message.as_ref(), Some(&newest));
    assert_eq!(newest.body, "newest");
    assert_eq!(newest.sender_name, "bob display");
    assert_eq!(newest.client_id.as_deref(), Some("n-1"));
    assert_eq!(newest.created_at, at(500));

    let quiet_row = &rooms[2];
    assert_eq!(quiet_row.room, quiet);
    assert_eq!(quiet_row.state, MemberState::Member);
    assert_eq!(quiet_row.member_count, 1);
    assert_eq!(
        quiet_row.last_message, None,
        "an empty room has no last message"
    );

    // A message makes an old room the most active.
    let mut wake = message(quiet.id, alice.id, "awake", None);
    wake.created_at = at(700);
    store.append(wake).await.expect("append");
    let rooms = store.user_rooms(alice.id).await.expect("rooms");
    let names: Vec<&str> = rooms.iter().map(|r| r.room.name.as_str()).collect();
    assert_eq!(names, vec!["quiet", "invited", "busy"]);
    assert_eq!(rooms[0].read_seq, 1, "her own message is read");

    let carol_rooms = store.user_rooms(carol.id).await.expect("rooms");
    assert_eq!(carol_rooms.len(), 1);
    assert_eq!(
        carol_rooms[0]
            .last_message
            .as_ref()
            .map(|m| m.body.as_str()),
        Some("secret"),
        "members see the last message"
    );
    let stranger = user(store, "stranger").await;
    assert!(
        store
            .user_rooms(stranger.id)
            .await
            .expect("rooms")
            .is_empty()
    );
}

pub async fn user_rooms_others_read_seq(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let lobby = room(store, "lobby", alice.id, &[dave.id]).await;
    let alone = room(store, "alone", alice.id, &[]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    store.join_room(lobby.id, carol.id).await.expect("join");
    // The joins are seqs 1 and 2; m1..m6 are 3..8.
    for i in 1..=6 {
        send(store, lobby.id, alice.id, &format!("m{i}")).await;
    }
    send(store, alone.id, alice.id, "to myself").await;
    store.mark_read(lobby.id, bob.id, 4).await.expect("mark");
    store.mark_read(lobby.id, carol.id, 6).await.expect("mark");

    let others_of = |rooms: &[UserRoom], id: RoomId| {
        rooms
            .iter()
            .find(|r| r.room.id == id)
            .map(|r| (r.read_seq, r.others_read_seq))
            .expect("room is listed")
    };
    let rooms = store.user_rooms(alice.id).await.expect("rooms");
    assert_eq!(
        others_of(&rooms, lobby.id),
        (8, 6),
        "the best of bob's 4 and carol's 6, not alice's own 8"
    );
    assert_eq!(
        others_of(&rooms, alone.id),
        (1, 0),
        "nobody else: 0, not her own mark"
    );
    let rooms = store.user_rooms(carol.id).await.expect("rooms");
    assert_eq!(others_of(&rooms, lobby.id), (6, 8), "alice sent all six");
    let rooms = store.user_rooms(dave.id).await.expect("rooms");
    assert_eq!(
        others_of(&rooms, lobby.id),
        (0, 0),
        "invitees learn nothing of the room's progress"
    );

    // Bob's own message moves his mark, and so alice's view of the others.
    send(store, lobby.id, bob.id, "b1").await;
    let rooms = store.user_rooms(alice.id).await.expect("rooms");
    assert_eq!(others_of(&rooms, lobby.id), (8, 9));
    let rooms = store.user_rooms(bob.id).await.expect("rooms");
    assert_eq!(others_of(&rooms, lobby.id), (9, 8));
}

// Conversations

async fn direct(store: &dyn Storage, a: UserId, b: UserId, at_micros: i64) -> (RoomRecord, bool) {
    store
        .direct_room(a, b, at(at_micros))
        .await
        .expect("direct room")
}

pub async fn direct_room_create_then_get(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;

    let (created, fresh) = direct(store, bob.id, alice.id, 50).await;
    assert!(fresh, "the first call creates it");
    assert!(created.id.get() > 0);
    assert_eq!(created.kind, RoomType::Direct);
    assert_eq!(created.creator, bob.id, "the caller who asked first");
    assert_eq!(created.created_at, at(50));
    assert_eq!(created.last_seq, 0);
    assert_eq!(
        created.name,
        format!("direct/{}/{}", alice.id, bob.id),
        "lower id first, whoever asked"
    );
    assert_eq!(
        store.room(created.id).await.expect("room"),
        Some(created.clone()),
        "what was returned is what was stored"
    );
    assert_eq!(
        store.room_people(created.id).await.expect("people"),
        vec![
            owner(&bob, MemberState::Member, 0),
            person(&alice, MemberState::Member, 0),
        ],
        "both are members at once, marks at 0, creator first"
    );

    send(store, created.id, alice.id, "hi").await;
    let (again, fresh) = direct(store, bob.id, alice.id, 99).await;
    assert!(!fresh, "the second call finds it");
    assert_eq!(again.id, created.id);
    assert_eq!(
        (again.creator, again.created_at, again.last_seq),
        (bob.id, at(50), 1),
        "the stored room, not a new description of it"
    );
    assert_eq!(
        store.read_marks(created.id).await.expect("marks"),
        vec![(bob.id, 0), (alice.id, 1)],
        "getting it touches no mark"
    );
}

pub async fn direct_room_pair_is_unordered(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;

    let (first, fresh) = direct(store, alice.id, bob.id, 10).await;
    assert!(fresh);
    let (second, fresh) = direct(store, bob.id, alice.id, 20).await;
    assert!(!fresh, "(b, a) is the same pair as (a, b)");
    assert_eq!(second, first);
    assert_eq!(second.creator, alice.id);
    assert_eq!(
        store.user_rooms(bob.id).await.expect("rooms").len(),
        1,
        "one room, not one per direction"
    );
}

pub async fn direct_room_concurrent_create(store: Arc<dyn Storage>) {
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let (a, b) = if i % 2 == 0 {
                (alice.id, bob.id)
            } else {
                (bob.id, alice.id)
            };
            tokio::spawn(async move { store.direct_room(a, b, at(i)).await.expect("direct room") })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    assert_eq!(
        results.iter().filter(|(_, created)| *created).count(),
        1,
        "exactly one call creates it"
    );
    let (winner, _) = results
        .iter()
        .find(|(_, created)| *created)
        .expect("one was created");
    assert!(
        results.iter().all(|(room, _)| room == winner),
        "all get the same room: {results:?}"
    );
    assert_eq!(
        store.room_people(winner.id).await.expect("people").len(),
        2,
        "members were added once"
    );
    let rooms = store.user_rooms(alice.id).await.expect("rooms");
    assert_eq!(rooms.len(), 1, "no second room for the pair");
    assert_eq!(rooms[0].room.id, winner.id);
}

pub async fn direct_room_distinct_pairs(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;

    let (ab, _) = direct(store, alice.id, bob.id, 1).await;
    let (ac, fresh_ac) = direct(store, alice.id, carol.id, 2).await;
    let (cb, fresh_cb) = direct(store, carol.id, bob.id, 3).await;
    assert!(fresh_ac && fresh_cb, "a new pair is a new conversation");
    let ids: HashSet<RoomId> = [ab.id, ac.id, cb.id].into_iter().collect();
    assert_eq!(ids.len(), 3, "one room per pair");
    assert_eq!(
        store
            .room_people(cb.id)
            .await
            .expect("people")
            .iter()
            .map(|p| p.user)
            .collect::<Vec<_>>(),
        vec![carol.id, bob.id],
        "only the pair"
    );
    assert_eq!(store.user_rooms(alice.id).await.expect("rooms").len(), 2);
    assert_eq!(store.user_rooms(bob.id).await.expect("rooms").len(), 2);
    assert_eq!(store.user_rooms(carol.id).await.expect("rooms").len(), 2);
}

pub async fn direct_room_with_oneself(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let result = store.direct_room(alice.id, alice.id, at(1)).await;
    assert!(
        matches!(result, Err(StorageError::Backend(_))),
        "got {result:?}"
    );
    assert!(
        store.user_rooms(alice.id).await.expect("rooms").is_empty(),
        "nothing was stored"
    );
    assert_eq!(
        store
            .find_direct_room(alice.id, alice.id)
            .await
            .expect("find"),
        None
    );
}

pub async fn find_direct_room(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    // A group room with both in it is not their conversation.
    let lobby = room(store, "lobby", alice.id, &[]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");

    assert_eq!(
        store
            .find_direct_room(alice.id, bob.id)
            .await
            .expect("find"),
        None
    );
    let (made, _) = direct(store, bob.id, alice.id, 5).await;
    assert_eq!(
        store
            .find_direct_room(alice.id, bob.id)
            .await
            .expect("find"),
        Some(made.clone())
    );
    assert_eq!(
        store
            .find_direct_room(bob.id, alice.id)
            .await
            .expect("find"),
        Some(made.clone()),
        "either order"
    );
    assert_eq!(
        store
            .find_direct_room(alice.id, carol.id)
            .await
            .expect("find"),
        None,
        "alice's conversation with bob is not one with carol"
    );
    assert_eq!(
        store
            .find_direct_room(alice.id, UserId(987_654))
            .await
            .expect("find"),
        None
    );

    send(store, made.id, alice.id, "one").await;
    let found = store
        .find_direct_room(alice.id, bob.id)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.last_seq, 1, "the current row");
}

pub async fn user_conversations(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let loner = user(store, "loner").await;

    // Creation and message times chosen so that activity order differs
    // from creation order and id order.
    let (with_bob, _) = direct(store, alice.id, bob.id, 100).await;
    let (with_carol, _) = direct(store, carol.id, alice.id, 300).await;
    let (with_dave, _) = direct(store, alice.id, dave.id, 200).await;
    let (bob_carol, _) = direct(store, bob.id, carol.id, 900).await;
    // Group rooms, even one with a single other member and newer activity,
    // are not conversations.
    let lobby = room_at(store, "lobby", alice.id, &[], at(50)).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let mut late = message(lobby.id, bob.id, "group talk", None);
    late.created_at = at(5_000);
    store.append(late).await.expect("append");

    let mut first = message(with_bob.id, alice.id, "hi bob", None);
    first.created_at = at(400);
    store.append(first).await.expect("append");
    let mut reply = message(with_bob.id, bob.id, "hi alice", Some("r-1"));
    reply.created_at = at(500);
    let reply = store.append(reply).await.expect("append").message;
    let mut mine = message(with_dave.id, alice.id, "ping dave", None);
    mine.created_at = at(450);
    let mine = store.append(mine).await.expect("append").message;
    let mut other = message(bob_carol.id, bob.id, "not alice's", None);
    other.created_at = at(6_000);
    store.append(other).await.expect("append");

    let list = store.user_conversations(alice.id).await.expect("list");
    let order: Vec<(RoomId, UserId)> = list.iter().map(|c| (c.room.room.id, c.other.id)).collect();
    assert_eq!(
        order,
        vec![
            (with_bob.id, bob.id),
            (with_dave.id, dave.id),
            (with_carol.id, carol.id),
        ],
        "newest activity first: 500, 450, then created at 300"
    );

    let Conversation { room, other } = &list[0];
    assert_eq!(other, &bob, "the whole user row of the other side");
    assert_eq!(room.room.kind, RoomType::Direct);
    assert_eq!(room.room.last_seq, 2);
    assert_eq!(room.state, MemberState::Member);
    assert_eq!(room.member_count, 2);
    assert_eq!(room.read_seq, 1, "her own message, not bob's reply");
    assert_eq!(room.others_read_seq, 2, "bob's reply moved his mark");
    assert_eq!(room.last_message.as_ref(), Some(&reply));
    assert_eq!(reply.body, "hi alice");
    assert_eq!(reply.sender_name, "bob display");

    let dave_row = &list[1].room;
    assert_eq!(dave_row.last_message.as_ref(), Some(&mine));
    assert_eq!(
        (dave_row.read_seq, dave_row.others_read_seq),
        (1, 0),
        "dave has not read it yet"
    );
    let carol_row = &list[2].room;
    assert_eq!(carol_row.last_message, None);
    assert_eq!((carol_row.read_seq, carol_row.others_read_seq), (0, 0));
    assert_eq!(carol_row.room, with_carol);

    // Dave reads: alice can now tell her message was seen.
    store
        .mark_read(with_dave.id, dave.id, 1)
        .await
        .expect("mark");
    let list = store.user_conversations(alice.id).await.expect("list");
    assert_eq!(list[1].room.room.id, with_dave.id);
    assert_eq!(list[1].room.others_read_seq, 1);

    // The same rooms from the other side name alice.
    let from_bob = store.user_conversations(bob.id).await.expect("list");
    let from_bob: Vec<(RoomId, UserId, Seq, Seq)> = from_bob
        .iter()
        .map(|c| {
            (
                c.room.room.id,
                c.other.id,
                c.room.read_seq,
                c.room.others_read_seq,
            )
        })
        .collect();
    assert_eq!(
        from_bob,
        vec![
            (bob_carol.id, carol.id, 1, 0),
            (with_bob.id, alice.id, 2, 1)
        ]
    );
    let from_dave = store.user_conversations(dave.id).await.expect("list");
    assert_eq!(from_dave.len(), 1);
    assert_eq!(from_dave[0].other, alice);
    assert_eq!(from_dave[0].room.read_seq, 1);
    assert_eq!(from_dave[0].room.others_read_seq, 1);

    assert!(
        store
            .user_conversations(loner.id)
            .await
            .expect("list")
            .is_empty(),
        "no conversations, no rows"
    );

    // user_rooms still lists conversations, beside the group room.
    let kinds: Vec<(RoomId, RoomType)> = store
        .user_rooms(alice.id)
        .await
        .expect("rooms")
        .iter()
        .map(|r| (r.room.id, r.room.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (lobby.id, RoomType::Private),
            (with_bob.id, RoomType::Direct),
            (with_dave.id, RoomType::Direct),
            (with_carol.id, RoomType::Direct),
        ]
    );
}

pub async fn direct_room_delete_frees_pair(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let (old, _) = direct(store, alice.id, bob.id, 1).await;
    send(store, old.id, alice.id, "soon gone").await;

    assert!(store.delete_room(old.id).await.expect("delete"));
    assert_eq!(
        store
            .find_direct_room(alice.id, bob.id)
            .await
            .expect("find"),
        None
    );
    assert!(
        store
            .user_conversations(bob.id)
            .await
            .expect("list")
            .is_empty()
    );

    let (fresh, created) = direct(store, bob.id, alice.id, 2).await;
    assert!(created, "the pair is free again");
    assert_ne!(fresh.id, old.id, "ids are not reused");
    assert_eq!(fresh.name, old.name, "and so is the name");
    assert_eq!(fresh.creator, bob.id);
    assert_eq!(fresh.last_seq, 0, "no history carried over");
    assert_eq!(
        store.read_marks(fresh.id).await.expect("marks"),
        vec![(bob.id, 0), (alice.id, 0)]
    );
    assert_eq!(
        store
            .find_direct_room(alice.id, bob.id)
            .await
            .expect("find"),
        Some(fresh)
    );
}

// Messages

pub async fn append_assigns_seq(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    let other = room(store, "other", bob.id, &[]).await;
    // Bob's join is the lobby's seq 1; the messages are 2, 3, 4.
    store.join_room(lobby.id, bob.id).await.expect("join");

    let mut stored = Vec::new();
    for (i, body) in ["one", "two", "three"].into_iter().enumerate() {
        let sender = if i == 1 { bob.id } else { alice.id };
        let appended = store
            .append(NewMessage {
                room: lobby.id,
                sender,
                body: body.to_owned(),
                client_id: Some(format!("c-{i}")),
                created_at: at(10 + i as i64),
                origin: None,
                reply_to: None,
                thread_root: None,
                mentions: Vec::new(),
                attachments: Vec::new(),
            })
            .await
            .expect("append");
        assert!(appended.created);
        stored.push(appended.message);
    }
    assert_eq!(
        stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert!(stored[0].id < stored[1].id && stored[1].id < stored[2].id);
    let second = &stored[1];
    assert_eq!(second.room, lobby.id);
    assert_eq!(second.sender, bob.id);
    assert_eq!(second.sender_name, "bob display");
    assert_eq!(second.body, "two");
    assert_eq!(second.client_id.as_deref(), Some("c-1"));
    assert_eq!(second.created_at, at(11));
    assert_eq!(last_seq(store, lobby.id).await, 4);

    let history = page(store, lobby.id, None, None, 50).await;
    assert_eq!(
        history.messages, stored,
        "history returns what append returned"
    );

    let first_other = send(store, other.id, bob.id, "elsewhere").await;
    assert_eq!(first_other.seq, 1, "each room counts from 1");
    assert!(
        first_other.id > stored[2].id,
        "message ids are unique across rooms"
    );
}

pub async fn append_concurrent_seq(store: Arc<dyn Storage>) {
    const TASKS: usize = 8;
    const EACH: usize = 50;
    let alice = user(&*store, "alice").await;
    let lobby = room(&*store, "lobby", alice.id, &[]).await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut seqs = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    let appended = store
                        .append(message(lobby.id, alice.id, &format!("{t}:{i}"), None))
                        .await
                        .expect("append");
                    seqs.push(appended.message.seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.expect("task");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's messages keep its order"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    let expected: Vec<Seq> = (1..=(TASKS * EACH) as Seq).collect();
    assert_eq!(all, expected, "no gap, no duplicate");
    assert_eq!(last_seq(&*store, lobby.id).await, (TASKS * EACH) as Seq);

    let mut from_history = Vec::new();
    let mut after = 0;
    loop {
        let p = page(&*store, lobby.id, None, Some(after), 200).await;
        from_history.extend(p.messages.iter().map(|m| (m.seq, m.body.clone())));
        after = p.messages.last().map_or(after, |m| m.seq);
        if !p.has_more {
            break;
        }
    }
    assert_eq!(
        from_history.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        expected,
        "history returns every message in seq order"
    );
    let bodies: HashSet<&str> = from_history.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies.len(), TASKS * EACH, "every message stored once");
    for t in 0..TASKS {
        let own: Vec<usize> = from_history
            .iter()
            .filter_map(|(_, b)| b.strip_prefix(&format!("{t}:")))
            .map(|i| i.parse().expect("index"))
            .collect();
        assert_eq!(
            own,
            (0..EACH).collect::<Vec<_>>(),
            "seq order is commit order"
        );
    }
}

pub async fn append_client_id_idempotent(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");

    let first = store
        .append(message(lobby.id, alice.id, "hello", Some("c-1")))
        .await
        .expect("append");
    assert!(first.created);
    assert_eq!(first.message.seq, 2, "after bob's join");

    let mut retry = message(lobby.id, alice.id, "hello, edited", Some("c-1"));
    retry.created_at = at(99_999);
    let again = store.append(retry).await.expect("append");
    assert_eq!(
        again,
        Appended {
            message: first.message.clone(),
            created: false
        },
        "the original comes back, body and time included"
    );
    assert_eq!(last_seq(store, lobby.id).await, 2, "no seq was used");
    assert_eq!(
        store
            .message_by_client_id(alice.id, "c-1")
            .await
            .expect("lookup"),
        Some(first.message.clone()),
        "found by sender and client id"
    );
    assert_eq!(
        store
            .message_by_client_id(bob.id, "c-1")
            .await
            .expect("lookup"),
        None,
        "client ids are per sender"
    );

    let from_bob = store
        .append(message(lobby.id, bob.id, "hello", Some("c-1")))
        .await
        .expect("append");
    assert!(from_bob.created, "client ids are per sender");
    assert_eq!(from_bob.message.seq, 3);
    assert_ne!(from_bob.message.id, first.message.id);

    let next = store
        .append(message(lobby.id, alice.id, "next", Some("c-2")))
        .await
        .expect("append");
    assert!(next.created);
    assert_eq!(next.message.seq, 4, "no gap after a duplicate");

    // Without a client id nothing is deduplicated.
    let a = send(store, lobby.id, alice.id, "same").await;
    let b = send(store, lobby.id, alice.id, "same").await;
    assert_eq!((a.seq, b.seq), (5, 6));
    assert_eq!((a.client_id, b.client_id), (None, None));

    let history = page(store, lobby.id, None, None, 50).await;
    let bodies: Vec<&str> = history.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["hello", "hello", "next", "same", "same"]);
}

pub async fn append_concurrent_duplicates(store: Arc<dyn Storage>) {
    let alice = user(&*store, "alice").await;
    let lobby = room(&*store, "lobby", alice.id, &[]).await;
    for round in 0..5 {
        let client_id = format!("dup-{round}");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                let client_id = client_id.clone();
                tokio::spawn(async move {
                    store
                        .append(message(lobby.id, alice.id, "once", Some(&client_id)))
                        .await
                        .expect("append")
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("task"));
        }
        assert_eq!(
            results.iter().filter(|r| r.created).count(),
            1,
            "stored once"
        );
        let original = results
            .iter()
            .find(|r| r.created)
            .map(|r| r.message.clone())
            .expect("one was created");
        assert!(
            results.iter().all(|r| r.message == original),
            "all see the original"
        );
        assert_eq!(original.seq, round + 1);
    }
    assert_eq!(last_seq(&*store, lobby.id).await, 5);
    assert_eq!(
        seqs(&page(&*store, lobby.id, None, None, 50).await),
        vec![1, 2, 3, 4, 5]
    );
}

/// Only members post, checked by the append itself: a stranger, an
/// invitee and someone who left are refused (with what the service needs to
/// choose 404 or 403), a refusal takes no seq and claims no `client_id`,
/// and a repeat from someone who left is refused rather than answered.
pub async fn append_needs_membership(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let plaza = store
        .create_room(NewRoom {
            name: "plaza".to_owned(),
            kind: RoomType::Public,
            creator: alice.id,
            invited: vec![carol.id],
            created_at: at(0),
        })
        .await
        .expect("room");
    let refusal = |r: Result<Appended, StorageError>| match r {
        Err(StorageError::NotMember { kind, state }) => (kind, state),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let bob_says = |client_id| message(plaza.id, bob.id, "hi", Some(client_id));

    assert_eq!(
        refusal(store.append(bob_says("b-1")).await),
        (RoomType::Public, None)
    );
    assert_eq!(
        refusal(store.append(message(plaza.id, carol.id, "hi", None)).await),
        (RoomType::Public, Some(MemberState::Invited))
    );
    assert_eq!(last_seq(store, plaza.id).await, 0, "refusals take no seq");

    assert!(store.join_room(plaza.id, bob.id).await.expect("join"));
    let first = store.append(bob_says("b-1")).await.expect("member");
    assert!(first.created, "the refused send did not claim b-1");
    assert_eq!(first.message.seq, 2, "after his join");

    assert!(store.leave_room(plaza.id, bob.id).await.expect("leave"));
    assert_eq!(
        refusal(store.append(bob_says("b-2")).await),
        (RoomType::Public, None)
    );
    assert_eq!(
        refusal(store.append(bob_says("b-1")).await),
        (RoomType::Public, None),
        "a repeat is refused too once he left"
    );
    let refused_burst = store
        .append_many(vec![
            bob_says("b-3"),
            message(plaza.id, alice.id, "still here", None),
        ])
        .await;
    assert!(matches!(
        refused_burst[0],
        Err(StorageError::NotMember { .. })
    ));
    let kept = refused_burst[1].as_ref().expect("alice's message");
    assert_eq!(kept.message.seq, 4, "join 1, b-1 2, leave 3");
}

pub async fn append_missing_room(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let err = store
        .append(message(RoomId(987_654), alice.id, "void", Some("c-1")))
        .await
        .expect_err("no room");
    assert!(matches!(err, StorageError::NotFound), "got {err:?}");

    let gone = room(store, "gone", alice.id, &[]).await;
    store.delete_room(gone.id).await.expect("delete");
    let err = store
        .append(message(gone.id, alice.id, "void", None))
        .await
        .expect_err("deleted room");
    assert!(matches!(err, StorageError::NotFound), "got {err:?}");

    // The failed append did not claim the client id.
    let lobby = room(store, "lobby", alice.id, &[]).await;
    let appended = store
        .append(message(lobby.id, alice.id, "real", Some("c-1")))
        .await
        .expect("append");
    assert!(appended.created);
    assert_eq!(appended.message.seq, 1);
}

pub async fn append_unknown_sender(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    send(store, lobby.id, alice.id, "one").await;

    let result = store
        .append(message(lobby.id, UserId(987_654), "ghost", None))
        .await;
    assert!(result.is_err(), "a sender must exist, got {result:?}");
    assert_eq!(
        last_seq(store, lobby.id).await,
        1,
        "the failed append used no seq"
    );
    assert_eq!(send(store, lobby.id, alice.id, "two").await.seq, 2);
}

/// Many appends at once, as group commit batches them: three rooms, two
/// senders, retried `client_id`s, a deleted room and an unknown sender in
/// the same burst. Each answer is that message's own, as if it had come
/// alone.
pub async fn append_mixed_burst(store: Arc<dyn Storage>) {
    const PER_ROOM: usize = 40;
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    // Bob is a member of "one" (his join is its seq 1), invited to "two"
    // and nothing in "three": his sends are stored in one, refused in the
    // others, by the append itself, in the middle of the others' batches.
    let rooms = [
        room(&*store, "one", alice.id, &[]).await.id,
        room(&*store, "two", alice.id, &[bob.id]).await.id,
        room(&*store, "three", alice.id, &[]).await.id,
    ];
    store.join_room(rooms[0], bob.id).await.expect("join");
    let gone = room(&*store, "gone", alice.id, &[]).await.id;
    store.delete_room(gone).await.expect("delete");

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Expect {
        Stored,
        Repeat,
        NotFound,
        NotMember(Option<MemberState>),
        Error,
    }
    let mut plan: Vec<(NewMessage, Expect)> = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for i in 0..PER_ROOM {
            let bob_sends = i % 2 == 1;
            let sender = if bob_sends { bob.id } else { alice.id };
            let refused = match r {
                _ if !bob_sends || r == 0 => None,
                1 => Some(Expect::NotMember(Some(MemberState::Invited))),
                _ => Some(Expect::NotMember(None)),
            };
            plan.push((
                message(
                    *room,
                    sender,
                    &format!("{r}:{i}"),
                    Some(&format!("c-{r}-{i}")),
                ),
                refused.unwrap_or(Expect::Stored),
            ));
            if i % 10 == 3 {
                // The same send again, racing the first.
                plan.push((
                    message(
                        *room,
                        sender,
                        &format!("{r}:{i}"),
                        Some(&format!("c-{r}-{i}")),
                    ),
                    refused.unwrap_or(Expect::Repeat),
                ));
            }
        }
    }
    plan.push((
        message(gone, alice.id, "void", Some("c-gone")),
        Expect::NotFound,
    ));
    plan.push((
        message(rooms[0], UserId(987_654), "ghost", None),
        Expect::Error,
    ));

    let start = Arc::new(tokio::sync::Barrier::new(plan.len()));
    let tasks: Vec<_> = plan
        .iter()
        .cloned()
        .map(|(m, expect)| {
            let (store, start) = (Arc::clone(&store), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                (m.client_id.clone(), expect, store.append(m).await)
            })
        })
        .collect();
    let mut by_client_id: HashMap<String, Vec<Appended>> = HashMap::new();
    for task in tasks {
        let (client_id, expect, result) = task.await.expect("task");
        match (expect, result) {
            (Expect::Stored | Expect::Repeat, Ok(a)) => {
                let id = client_id.expect("planned with a client id");
                assert_eq!(a.message.client_id.as_deref(), Some(id.as_str()));
                by_client_id.entry(id).or_default().push(a);
            }
            (Expect::NotFound, Err(StorageError::NotFound)) => {}
            (Expect::NotMember(state), Err(StorageError::NotMember { kind, state: got })) => {
                assert_eq!((kind, got), (RoomType::Private, state));
            }
            (Expect::Error, Err(_)) => {}
            (expect, got) => panic!("expected {expect:?}, got {got:?}"),
        }
    }
    for (id, answers) in &by_client_id {
        assert_eq!(
            answers.iter().filter(|a| a.created).count(),
            1,
            "{id} stored once"
        );
        assert!(
            answers.windows(2).all(|w| w[0].message == w[1].message),
            "{id}: every answer is the one stored message"
        );
    }
    for (r, room) in rooms.iter().enumerate() {
        // Room one: bob's join, then every message; the others: alice's.
        let seqs: Vec<Seq> = match r {
            0 => (2..=PER_ROOM as Seq + 1).collect(),
            _ => (1..=PER_ROOM as Seq / 2).collect(),
        };
        assert_eq!(
            last_seq(&*store, *room).await,
            seqs[seqs.len() - 1],
            "room {r}"
        );
        let p = page(&*store, *room, None, Some(0), 200).await;
        assert_eq!(
            p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            seqs,
            "room {r}: no gap, no duplicate, nothing refused"
        );
        for m in &p.messages {
            let id = m.client_id.as_deref().expect("client id");
            let answered = &by_client_id[id][0].message;
            assert_eq!(answered, m, "the answer is what history holds");
            assert_eq!(m.body.split(':').next(), Some(r.to_string().as_str()));
        }
        // The creator, a member, has read up to her own newest message.
        let newest = p
            .messages
            .iter()
            .filter(|m| m.sender == alice.id)
            .map(|m| m.seq)
            .max();
        assert_eq!(
            Some(read_seq_of(&*store, *room, alice.id).await),
            newest,
            "room {r}"
        );
    }
}

/// `append_many` answers each message as one `append` after the other
/// would: in order, each with its own result, repeats of earlier messages
/// of the same call answered with them.
pub async fn append_many_in_order(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let lobby = room(store, "lobby", alice.id, &[]).await.id;
    let other = room(store, "other", alice.id, &[]).await.id;
    let gone = room(store, "gone", alice.id, &[]).await.id;
    store.delete_room(gone).await.expect("delete");
    send(store, lobby, alice.id, "before").await;

    let results = store
        .append_many(vec![
            message(lobby, alice.id, "one", Some("c-1")),
            message(gone, alice.id, "void", Some("c-void")),
            message(lobby, alice.id, "two", None),
            message(lobby, alice.id, "one again", Some("c-1")),
            message(other, alice.id, "elsewhere", None),
            message(lobby, UserId(987_654), "ghost", None),
            message(lobby, alice.id, "three", Some("c-3")),
        ])
        .await;
    assert_eq!(results.len(), 7, "one answer per message: {results:?}");
    let ok = |i: usize| match &results[i] {
        Ok(a) => a.clone(),
        Err(e) => panic!("message {i}: {e:?}"),
    };
    assert!(ok(0).created);
    assert_eq!((ok(0).message.seq, ok(0).message.body.as_str()), (2, "one"));
    assert!(
        matches!(results[1], Err(StorageError::NotFound)),
        "deleted room: {:?}",
        results[1]
    );
    assert_eq!((ok(2).message.seq, ok(2).created), (3, true));
    assert!(!ok(3).created, "a repeat within the call");
    assert_eq!(ok(3).message, ok(0).message);
    assert_eq!(
        (ok(4).message.room, ok(4).message.seq, ok(4).created),
        (other, 1, true)
    );
    assert!(results[5].is_err(), "unknown sender: {:?}", results[5]);
    assert_eq!(
        (ok(6).message.seq, ok(6).message.body.as_str()),
        (4, "three")
    );
    assert_eq!(
        bodies(&page(store, lobby, None, Some(0), 50).await),
        vec!["before", "one", "two", "three"]
    );
    assert!(store.append_many(Vec::new()).await.is_empty());
}

/// Two callers' `append_many` into one room at once: each caller's
/// messages keep their order, and the room's seqs have no gap.
pub async fn append_many_concurrent(store: Arc<dyn Storage>) {
    const EACH: usize = 60;
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let lobby = room(&*store, "lobby", alice.id, &[]).await.id;
    // Bob's join is seq 1.
    store.join_room(lobby, bob.id).await.expect("join");
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let tasks: Vec<_> = [alice.id, bob.id]
        .into_iter()
        .map(|sender| {
            let (store, start) = (Arc::clone(&store), Arc::clone(&start));
            tokio::spawn(async move {
                let burst = (0..EACH)
                    .map(|i| message(lobby, sender, &i.to_string(), None))
                    .collect();
                start.wait().await;
                store.append_many(burst).await
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let results = task.await.expect("task");
        let seqs: Vec<Seq> = results
            .iter()
            .map(|r| r.as_ref().expect("append").message.seq)
            .collect();
        assert_eq!(seqs.len(), EACH);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one caller's messages in its order: {seqs:?}"
        );
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.as_ref().expect("append").message.body, i.to_string());
        }
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (2..=2 * EACH as Seq + 1).collect::<Vec<_>>());
    assert_eq!(last_seq(&*store, lobby).await, 2 * EACH as Seq + 1);
}

pub async fn history_empty(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;

    for (before, after) in [
        (None, None),
        (Some(1), None),
        (None, Some(0)),
        (Some(5), Some(0)),
    ] {
        let p = page(store, lobby.id, before, after, 50).await;
        assert!(p.messages.is_empty(), "{before:?} {after:?}");
        assert!(!p.has_more, "{before:?} {after:?}");
    }
    let p = page(store, RoomId(987_654), None, None, 50).await;
    assert!(
        p.messages.is_empty() && !p.has_more,
        "an unknown room has no history"
    );
}

pub async fn history_pagination(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    // A conversation: both are members from the start, with no join events.
    let (lobby, _) = store
        .direct_room(alice.id, bob.id, at(0))
        .await
        .expect("direct room");
    for i in 1..=10 {
        let sender = if i % 2 == 0 { bob.id } else { alice.id };
        send(store, lobby.id, sender, &format!("m{i}")).await;
    }
    // Another room's messages must never leak in.
    let other = room(store, "other", bob.id, &[]).await;
    for i in 1..=3 {
        send(store, other.id, bob.id, &format!("o{i}")).await;
    }

    // (before, after, limit) → (seqs, has_more)
    type Case = (Option<Seq>, Option<Seq>, u32, &'static [Seq], bool);
    let cases: &[Case] = &[
        (None, None, 3, &[8, 9, 10], true),
        (None, None, 1, &[10], true),
        (None, None, 9, &[2, 3, 4, 5, 6, 7, 8, 9, 10], true),
        (None, None, 10, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], false),
        (None, None, 200, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], false),
        (Some(5), None, 3, &[2, 3, 4], true),
        (Some(4), None, 3, &[1, 2, 3], false),
        (Some(2), None, 3, &[1], false),
        (Some(1), None, 3, &[], false),
        (Some(11), None, 2, &[9, 10], true),
        (Some(99), None, 2, &[9, 10], true),
        (None, Some(0), 3, &[1, 2, 3], true),
        (None, Some(0), 10, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], false),
        (None, Some(6), 3, &[7, 8, 9], true),
        (None, Some(7), 3, &[8, 9, 10], false),
        (None, Some(9), 1, &[10], false),
        (None, Some(8), 1, &[9], true),
        (None, Some(10), 5, &[], false),
        (None, Some(50), 5, &[], false),
        (Some(8), Some(3), 2, &[4, 5], true),
        (Some(8), Some(3), 4, &[4, 5, 6, 7], false),
        (Some(8), Some(3), 9, &[4, 5, 6, 7], false),
        (Some(4), Some(3), 5, &[], false),
        (Some(3), Some(3), 5, &[], false),
    ];
    for &(before, after, limit, expected, more) in cases {
        let p = page(store, lobby.id, before, after, limit).await;
        assert_eq!(
            seqs(&p),
            expected,
            "before {before:?} after {after:?} limit {limit}"
        );
        assert_eq!(
            p.has_more, more,
            "has_more for before {before:?} after {after:?} limit {limit}"
        );
    }

    // The rows themselves, not only their seqs.
    let p = page(store, lobby.id, Some(3), None, 5).await;
    assert_eq!(p.messages.len(), 2);
    assert_eq!(p.messages[0].body, "m1");
    assert_eq!(p.messages[0].sender, alice.id);
    assert_eq!(p.messages[0].sender_name, "alice display");
    assert_eq!(p.messages[1].body, "m2");
    assert_eq!(p.messages[1].sender_name, "bob display");
    assert!(p.messages.iter().all(|m| m.room == lobby.id));
}

pub async fn history_walk(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    for i in 1..=7 {
        send(store, lobby.id, alice.id, &format!("m{i}")).await;
    }

    // Backwards, as a client scrolling up does.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let p = page(store, lobby.id, before, None, 3).await;
        before = p.messages.first().map(|m| m.seq);
        pages.push((seqs(&p), p.has_more));
        if !p.has_more {
            break;
        }
    }
    assert_eq!(
        pages,
        vec![
            (vec![5, 6, 7], true),
            (vec![2, 3, 4], true),
            (vec![1], false)
        ]
    );

    // Forwards, as a reconnecting client catching up does.
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let p = page(store, lobby.id, None, Some(after), 3).await;
        after = p.messages.last().map_or(after, |m| m.seq);
        pages.push((seqs(&p), p.has_more));
        if !p.has_more {
            break;
        }
    }
    assert_eq!(
        pages,
        vec![
            (vec![1, 2, 3], true),
            (vec![4, 5, 6], true),
            (vec![7], false)
        ]
    );
}

// Read marks

pub async fn read_marks(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let lobby = room(store, "lobby", alice.id, &[carol.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    for i in 1..=5 {
        send(store, lobby.id, alice.id, &format!("m{i}")).await;
    }

    let mark = store.mark_read(lobby.id, bob.id, 3).await.expect("mark");
    assert_eq!((mark.previous, mark.current, mark.advanced()), (0, 3, true));
    let mark = store.mark_read(lobby.id, bob.id, 2).await.expect("mark");
    assert_eq!(
        (mark.previous, mark.current, mark.advanced()),
        (3, 3, false),
        "never back"
    );
    let mark = store.mark_read(lobby.id, bob.id, 3).await.expect("mark");
    assert_eq!(
        (mark.previous, mark.current, mark.advanced()),
        (3, 3, false)
    );
    // Bob's join is seq 1, m1..m5 are 2..6: marked at 3, m3..m5 are unread.
    assert_eq!(
        store.read_marks(lobby.id).await.expect("marks"),
        vec![(alice.id, 6), (bob.id, 3)]
    );
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 3);

    let mark = store.mark_read(lobby.id, bob.id, 100).await.expect("mark");
    assert_eq!((mark.previous, mark.current), (3, 6), "clamped to last_seq");
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 0);
    let mark = store.mark_read(lobby.id, bob.id, 100).await.expect("mark");
    assert_eq!(
        (mark.previous, mark.current, mark.advanced()),
        (6, 6, false)
    );

    for who in [carol.id, dave.id] {
        let err = store
            .mark_read(lobby.id, who, 1)
            .await
            .expect_err("not a member");
        assert!(matches!(err, StorageError::NotFound), "got {err:?}");
    }
    let err = store
        .mark_read(RoomId(987_654), bob.id, 1)
        .await
        .expect_err("no room");
    assert!(matches!(err, StorageError::NotFound), "got {err:?}");

    assert_eq!(
        store.read_marks(lobby.id).await.expect("marks"),
        vec![(alice.id, 6), (bob.id, 6)],
        "members only, in order of joining"
    );
    assert!(
        store
            .read_marks(RoomId(987_654))
            .await
            .expect("marks")
            .is_empty()
    );
}

pub async fn append_advances_sender_mark(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[carol.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    // Bob's join is seq 1; a1..a3 are 2..4.
    for i in 1..=3 {
        send(store, lobby.id, alice.id, &format!("a{i}")).await;
    }
    assert_eq!(read_seq_of(store, lobby.id, alice.id).await, 4);
    assert_eq!(read_seq_of(store, lobby.id, bob.id).await, 0);

    send(store, lobby.id, bob.id, "b1").await;
    assert_eq!(
        read_seq_of(store, lobby.id, bob.id).await,
        5,
        "sending reads everything below"
    );
    assert_eq!(
        read_seq_of(store, lobby.id, alice.id).await,
        4,
        "others' marks stay"
    );
    assert_eq!(store.unread_total(alice.id).await.expect("unread"), 1);
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 0);

    // A duplicate is not a new message and moves nothing.
    store.mark_read(lobby.id, alice.id, 5).await.expect("mark");
    let dup = store
        .append(message(lobby.id, alice.id, "x", Some("k")))
        .await
        .expect("append");
    assert_eq!(dup.message.seq, 6);
    send(store, lobby.id, bob.id, "b2").await;
    let again = store
        .append(message(lobby.id, alice.id, "x", Some("k")))
        .await
        .expect("append");
    assert!(!again.created);
    assert_eq!(
        read_seq_of(store, lobby.id, alice.id).await,
        6,
        "the duplicate left her mark"
    );

    // An invitee may not post, and her mark stays 0.
    let refused = store.append(message(lobby.id, carol.id, "c1", None)).await;
    assert!(
        matches!(
            refused,
            Err(StorageError::NotMember {
                state: Some(MemberState::Invited),
                ..
            })
        ),
        "got {refused:?}"
    );
    assert_eq!(read_seq_of(store, lobby.id, carol.id).await, 0);
    assert_eq!(last_seq(store, lobby.id).await, 7, "a refusal takes no seq");
    assert_eq!(
        store
            .membership(lobby.id, carol.id)
            .await
            .expect("membership"),
        Some(MemberState::Invited)
    );
}

pub async fn unread_total(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let r1 = room(store, "r1", alice.id, &[]).await;
    let r2 = room(store, "r2", bob.id, &[]).await;
    let r3 = room(store, "r3", carol.id, &[alice.id]).await;
    store.join_room(r1.id, bob.id).await.expect("join");
    store.join_room(r2.id, alice.id).await.expect("join");

    for (sender, body) in [
        (alice.id, "1"),
        (alice.id, "2"),
        (alice.id, "3"),
        (bob.id, "4"),
        (alice.id, "5"),
        (alice.id, "6"),
    ] {
        send(store, r1.id, sender, body).await;
    }
    for body in ["1", "2", "3", "4"] {
        send(store, r2.id, bob.id, body).await;
    }
    // Each join took seq 1 of its room: r1's messages are seqs 2..7, r2's
    // 2..5. Alice reads r2 to its second message.
    store.mark_read(r2.id, alice.id, 3).await.expect("mark");
    for body in ["1", "2", "3", "4", "5"] {
        send(store, r3.id, carol.id, body).await;
    }

    // r1: alice sent last, bob has 5 and 6 unread. r2: alice read 2 of 4.
    // r3: alice is only invited, so its 5 messages do not count.
    assert_eq!(store.unread_total(alice.id).await.expect("unread"), 2);
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 2);
    assert_eq!(store.unread_total(carol.id).await.expect("unread"), 0);
    let stranger = user(store, "stranger").await;
    assert_eq!(store.unread_total(stranger.id).await.expect("unread"), 0);

    store.join_room(r3.id, alice.id).await.expect("join");
    assert_eq!(
        store.unread_total(alice.id).await.expect("unread"),
        2,
        "joining starts at last_seq"
    );
    // Her join is r3's seq 6, the next message 7.
    send(store, r3.id, carol.id, "6").await;
    assert_eq!(store.unread_total(alice.id).await.expect("unread"), 3);
    store.mark_read(r1.id, bob.id, 6).await.expect("mark");
    assert_eq!(
        store.unread_total(bob.id).await.expect("unread"),
        1,
        "seq 6 is the message before the last"
    );
    store.mark_read(r1.id, bob.id, 7).await.expect("mark");
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 0);
    store.mark_read(r2.id, alice.id, 5).await.expect("mark");
    store.mark_read(r3.id, alice.id, 6).await.expect("mark");
    assert_eq!(
        store.unread_total(alice.id).await.expect("unread"),
        1,
        "read up to her own join, not the message after it"
    );
    store.mark_read(r3.id, alice.id, 7).await.expect("mark");
    assert_eq!(store.unread_total(alice.id).await.expect("unread"), 0);
}

// Health

pub async fn ping(store: Arc<dyn Storage>) {
    store.ping().await.expect("ping");
    // Still usable afterwards.
    let alice = user(&*store, "alice").await;
    assert_eq!(store.user(alice.id).await.expect("user"), Some(alice));
}

/// A reply keeps its target's seq, sender and snippet (the first
/// `SNIPPET_CHARS` characters, as they were when it was sent) wherever it
/// is read; deleting the target erases the snippet from every reply, and a
/// deleted reply loses its own.
pub async fn reply_to_message(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let long: String = "é".repeat(chat_core::message::SNIPPET_CHARS + 20);
    let question = send(store, lobby.id, alice.id, &long).await;
    let short = send(store, lobby.id, alice.id, "short").await;
    let answer = send_with(store, lobby.id, bob.id, "an answer", |m| {
        m.reply_to = Some(question.id);
    })
    .await;
    let expected = StoredReply {
        id: question.id,
        seq: question.seq,
        sender: alice.id,
        snippet: Some("é".repeat(chat_core::message::SNIPPET_CHARS)),
    };
    assert_eq!(answer.reply, Some(expected.clone()), "as appended");
    let second = send_with(store, lobby.id, bob.id, "another", |m| {
        m.reply_to = Some(question.id);
    })
    .await;
    let third = send_with(store, lobby.id, alice.id, "to the short one", |m| {
        m.reply_to = Some(short.id);
    })
    .await;
    let history = page(store, lobby.id, None, None, 50).await;
    let read = |id: MessageId| {
        history
            .messages
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.reply.clone())
    };
    assert_eq!(read(answer.id), Some(expected.clone()), "in history");
    assert_eq!(
        read(third.id).and_then(|r| r.snippet),
        Some("short".to_owned())
    );
    assert_eq!(read(question.id), None, "not a reply");

    // An edit of the target leaves the snippet as it was.
    edit(store, question.id, alice.id, "reworded")
        .await
        .expect("edit");
    let again = store
        .message(answer.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(again.reply, Some(expected.clone()));

    delete(store, question.id, alice.id).await.expect("delete");
    for id in [answer.id, second.id] {
        let reply = store
            .message(id)
            .await
            .expect("read")
            .expect("found")
            .reply
            .expect("still a reply");
        assert_eq!(reply.id, question.id);
        assert_eq!(reply.snippet, None, "the deleted text is gone");
    }
    let events = timeline(store, lobby.id).await;
    let in_timeline = events.iter().find_map(|e| match e {
        StoredEvent::Message(m) if m.id == answer.id => m.reply.clone(),
        _ => None,
    });
    assert_eq!(in_timeline.and_then(|r| r.snippet), None);
    // A deleted reply keeps whom it answered, not what it quoted.
    delete(store, third.id, alice.id).await.expect("delete");
    let tombstone = store.message(third.id).await.expect("read").expect("found");
    assert_eq!(
        tombstone.reply.map(|r| (r.id, r.snippet)),
        Some((short.id, None))
    );
}

/// Thread replies take the room's seqs and count on their root; history
/// leaves them out, the thread pages them, a deleted reply leaves the
/// count.
pub async fn thread_replies(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let root = send(store, lobby.id, alice.id, "root").await;
    let other = send(store, lobby.id, alice.id, "another root").await;
    let mut replies = Vec::new();
    for i in 0..5 {
        let reply = store
            .append(NewMessage {
                created_at: at(2_000 + i),
                thread_root: Some(root.id),
                ..message(lobby.id, bob.id, &format!("reply {i}"), None)
            })
            .await
            .expect("append")
            .message;
        assert_eq!(reply.thread_root, Some(root.id));
        replies.push(reply);
    }
    send_with(store, lobby.id, alice.id, "elsewhere", |m| {
        m.thread_root = Some(other.id);
    })
    .await;
    let after = send(store, lobby.id, alice.id, "main again").await;

    let stored = store.message(root.id).await.expect("read").expect("root");
    assert_eq!(stored.reply_count, 5);
    assert_eq!(stored.last_reply_at, Some(at(2_004)));
    assert_eq!(stored.thread_root, None);

    let history = page(store, lobby.id, None, None, 50).await;
    assert_eq!(
        history.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![root.id, other.id, after.id],
        "history leaves thread replies out"
    );
    assert!(
        history.messages[0].reply_count == 5,
        "history shows the root's count"
    );
    assert_eq!(
        timeline(store, lobby.id).await.len() as Seq,
        last_seq(store, lobby.id).await,
        "the timeline has every reply"
    );

    let thread = |before, after, limit| {
        store.thread(
            root.id,
            HistoryQuery {
                before,
                after,
                limit,
            },
        )
    };
    let newest = thread(None, None, 2).await.expect("thread");
    assert_eq!(
        newest.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![replies[3].id, replies[4].id],
        "the newest replies, oldest first"
    );
    assert!(newest.has_more);
    let first = thread(None, Some(0), 3).await.expect("thread");
    assert_eq!(
        first.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        replies[..3].iter().map(|m| m.id).collect::<Vec<_>>()
    );
    assert!(first.has_more);
    let older = thread(Some(replies[3].seq), None, 10)
        .await
        .expect("thread");
    assert_eq!(older.messages.len(), 3);
    assert!(!older.has_more);

    delete(store, replies[1].id, bob.id).await.expect("delete");
    let stored = store.message(root.id).await.expect("read").expect("root");
    assert_eq!(stored.reply_count, 4, "a deleted reply leaves the count");
    assert_eq!(stored.last_reply_at, Some(at(2_004)));
    let all = thread(None, Some(0), 10).await.expect("thread");
    assert_eq!(all.messages.len(), 5, "its tombstone keeps its place");
    assert!(all.messages[1].deleted);
    delete(store, replies[1].id, bob.id).await.expect("again");
    let stored = store.message(root.id).await.expect("read").expect("root");
    assert_eq!(stored.reply_count, 4, "deleting twice counts once");
}

/// Mentions are listed on the message and counted per member above the
/// read mark, like unread: reading, a deletion and the sender's own
/// mark lower the count; nothing else raises it.
pub async fn mentions_counted(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id, carol.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    store.join_room(lobby.id, carol.id).await.expect("join");
    let mentions_of = |user: UserId| async move {
        store
            .user_rooms(user)
            .await
            .expect("rooms")
            .into_iter()
            .find(|r| r.room.id == lobby.id)
            .map(|r| (r.unread, r.mentions))
    };
    let first = send_with(store, lobby.id, alice.id, "@bob @carol", |m| {
        m.mentions = vec![bob.id, carol.id];
    })
    .await;
    assert_eq!(first.mentions, vec![bob.id, carol.id]);
    let second = send_with(store, lobby.id, alice.id, "@bob again", |m| {
        m.mentions = vec![bob.id];
    })
    .await;
    send(store, lobby.id, alice.id, "no mention").await;
    send_with(store, lobby.id, bob.id, "me, myself", |m| {
        m.mentions = vec![bob.id];
    })
    .await;
    assert_eq!(mentions_of(bob.id).await, Some((0, 0)), "bob sent last");
    assert_eq!(mentions_of(carol.id).await, Some((4, 1)));
    assert_eq!(mentions_of(alice.id).await, Some((1, 0)));

    store.mark_read(lobby.id, bob.id, 0).await.expect("mark");
    assert_eq!(
        store
            .history(
                lobby.id,
                HistoryQuery {
                    before: None,
                    after: None,
                    limit: 10
                }
            )
            .await
            .expect("history")
            .messages
            .iter()
            .find(|m| m.id == second.id)
            .map(|m| m.mentions.clone()),
        Some(vec![bob.id]),
        "history lists them"
    );
    // Carol reads past the first: no mention left.
    store
        .mark_read(lobby.id, carol.id, first.seq)
        .await
        .expect("mark");
    assert_eq!(mentions_of(carol.id).await, Some((3, 0)));
    // Dave joins later: earlier mentions are below his mark.
    let dave = user(store, "dave").await;
    store.join_room(lobby.id, dave.id).await.expect("join");
    let third = send_with(store, lobby.id, alice.id, "@dave @carol", |m| {
        m.mentions = vec![dave.id, carol.id];
    })
    .await;
    assert_eq!(mentions_of(dave.id).await, Some((1, 1)));
    assert_eq!(mentions_of(carol.id).await, Some((4, 1)));
    // Edits, reactions and pins raise nothing; a deletion lowers both.
    edit(store, third.id, alice.id, "@dave @carol!")
        .await
        .expect("edit");
    react(store, third.id, bob.id, "x", true)
        .await
        .expect("react");
    pin(store, third.id, alice.id, true).await.expect("pin");
    assert_eq!(mentions_of(dave.id).await, Some((1, 1)));
    delete(store, third.id, alice.id).await.expect("delete");
    assert_eq!(mentions_of(dave.id).await, Some((0, 0)));
    assert_eq!(mentions_of(carol.id).await, Some((3, 0)));
    let tombstone = store.message(third.id).await.expect("read").expect("found");
    assert!(tombstone.mentions.is_empty(), "a tombstone names nobody");

    // Conversations count them the same way.
    let (direct, _) = store
        .direct_room(alice.id, bob.id, at(9))
        .await
        .expect("conversation");
    send_with(store, direct.id, alice.id, "@bob", |m| {
        m.mentions = vec![bob.id];
    })
    .await;
    let conversation = store
        .user_conversations(bob.id)
        .await
        .expect("conversations")
        .into_iter()
        .find(|c| c.room.room.id == direct.id)
        .expect("listed");
    assert_eq!(
        (conversation.room.unread, conversation.room.mentions),
        (1, 1)
    );
}

/// One message by id, and members among a list of users.
pub async fn message_lookups(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[carol.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let sent = send(store, lobby.id, alice.id, "hello").await;
    let found = store.message(sent.id).await.expect("read").expect("found");
    assert_eq!(found, sent);
    assert_eq!(
        store.message(MessageId(9_999_999)).await.expect("read"),
        None
    );
    // The join event has an id too, but is no message.
    let join_event = MessageId(sent.id.get() - 1);
    assert_eq!(store.message(join_event).await.expect("read"), None);

    let mut members = store
        .members_among(lobby.id, &[alice.id, bob.id, carol.id, UserId(9_999_999)])
        .await
        .expect("members");
    members.sort_unstable();
    assert_eq!(members, vec![alice.id, bob.id], "an invitee is no member");
    assert!(
        store
            .members_among(RoomId(9_999_999), &[alice.id])
            .await
            .expect("members")
            .is_empty()
    );
}

/// The unread rule against a naive count: random interleavings of
/// messages, joins, leaves (timeline events that take seqs but are no
/// messages) and read marks, over two rooms, and after every step each
/// user's `unread_total` and room list entries equal the messages from
/// others above their mark, counted one by one from the model.
pub async fn unread_counts_match_a_naive_count(store: Arc<dyn Storage>) {
    use rand::{Rng as _, SeedableRng as _};

    /// One event of the model's timeline.
    #[derive(Clone)]
    struct Ev {
        /// The sender, the member, or who changed a message.
        who: UserId,
        /// A message: its id and whether it was deleted since.
        message: Option<(MessageId, bool)>,
        /// Who a message mentions.
        mentions: Vec<UserId>,
    }
    /// What the store should hold, kept the obvious way.
    #[derive(Default)]
    struct Model {
        /// Per room, its events at index `seq - 1`.
        events: HashMap<RoomId, Vec<Ev>>,
        /// Per room, each member's read mark.
        marks: HashMap<RoomId, HashMap<UserId, Seq>>,
        creators: HashMap<RoomId, UserId>,
    }
    impl Ev {
        fn other(who: UserId) -> Self {
            Self {
                who,
                message: None,
                mentions: Vec::new(),
            }
        }
    }
    impl Model {
        fn last(&self, room: RoomId) -> Seq {
            self.events.get(&room).map_or(0, |e| e.len() as Seq)
        }
        fn mentions(&self, room: RoomId, user: UserId) -> Option<u64> {
            let mark = *self.marks.get(&room)?.get(&user)?;
            Some(
                self.events[&room]
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| {
                        matches!(e.message, Some((_, false)))
                            && e.who != user
                            && e.mentions.contains(&user)
                            && (*i as Seq) + 1 > mark
                    })
                    .count() as u64,
            )
        }
        fn unread(&self, room: RoomId, user: UserId) -> Option<u64> {
            let mark = *self.marks.get(&room)?.get(&user)?;
            Some(
                self.events[&room]
                    .iter()
                    .enumerate()
                    .filter(|(i, e)| {
                        matches!(e.message, Some((_, false)))
                            && e.who != user
                            && (*i as Seq) + 1 > mark
                    })
                    .count() as u64,
            )
        }
        /// The messages not deleted that `who` may change: its own, or
        /// any if `moderator`.
        fn changeable(&self, room: RoomId, who: UserId, moderator: bool) -> Vec<usize> {
            self.events[&room]
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    matches!(e.message, Some((_, false))) && (moderator || e.who == who)
                })
                .map(|(i, _)| i)
                .collect()
        }
        fn push(&mut self, room: RoomId, ev: Ev) {
            self.events.get_mut(&room).expect("room").push(ev);
        }
    }

    let store = &*store;
    for seed in 0..6u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Users of their own: each seed's counts start from nothing.
        let mut users = Vec::new();
        for i in 0..4 {
            users.push(user(store, &format!("p{seed}-{i}")).await.id);
        }
        let mut model = Model::default();
        let mut rooms = Vec::new();
        for (r, &creator) in users.iter().take(2).enumerate() {
            let room = room(store, &format!("prop-{seed}-{r}"), creator, &[])
                .await
                .id;
            model.events.insert(room, Vec::new());
            model.marks.insert(room, HashMap::from([(creator, 0)]));
            model.creators.insert(room, creator);
            rooms.push(room);
        }
        for step in 0..80 {
            let room = rooms[rng.random_range(0..rooms.len())];
            let who = users[rng.random_range(0..users.len())];
            let member = model.marks[&room].contains_key(&who);
            let last = model.last(room);
            match rng.random_range(0..14) {
                // Messages most often, so that counts grow.
                0..=4 if member => {
                    // Some mention members (the sender too, at times), some
                    // are thread replies: both count like any message.
                    let mut mentions: Vec<UserId> = model.marks[&room]
                        .keys()
                        .copied()
                        .filter(|_| rng.random_bool(0.3))
                        .collect();
                    mentions.sort_unstable();
                    let roots = model.changeable(room, who, true);
                    let thread_root = (!roots.is_empty() && rng.random_bool(0.2))
                        .then(|| {
                            model.events[&room][roots[rng.random_range(0..roots.len())]].message
                        })
                        .flatten()
                        .map(|(id, _)| id);
                    let sent = send_with(store, room, who, &format!("{seed}-{step}"), |m| {
                        m.mentions = mentions.clone();
                        m.thread_root = thread_root;
                    })
                    .await;
                    model.push(
                        room,
                        Ev {
                            who,
                            message: Some((sent.id, false)),
                            mentions,
                        },
                    );
                    model
                        .marks
                        .get_mut(&room)
                        .expect("room")
                        .insert(who, last + 1);
                }
                0..=5 if !member => {
                    assert!(store.join_room(room, who).await.expect("join"));
                    model.push(room, Ev::other(who));
                    model.marks.get_mut(&room).expect("room").insert(who, last);
                }
                6 if member => {
                    assert!(store.leave_room(room, who).await.expect("leave"));
                    model.push(room, Ev::other(who));
                    model.marks.get_mut(&room).expect("room").remove(&who);
                }
                7 if member => {
                    let own = model.changeable(room, who, false);
                    if own.is_empty() {
                        continue;
                    }
                    let i = own[rng.random_range(0..own.len())];
                    let Some((id, _)) = model.events[&room][i].message else {
                        continue;
                    };
                    let changed = edit(store, id, who, &format!("edited {seed}-{step}"))
                        .await
                        .expect("edit");
                    assert!(changed.event.is_some(), "a new body is an event");
                    model.push(room, Ev::other(who));
                }
                8 if member => {
                    let moderator = model.creators[&room] == who;
                    let targets = model.changeable(room, who, moderator);
                    if targets.is_empty() {
                        continue;
                    }
                    let i = targets[rng.random_range(0..targets.len())];
                    let Some((id, _)) = model.events[&room][i].message else {
                        continue;
                    };
                    delete(store, id, who).await.expect("delete");
                    model.events.get_mut(&room).expect("room")[i].message = Some((id, true));
                    model.push(room, Ev::other(who));
                }
                9 if member => {
                    let live = model.changeable(room, who, true);
                    if live.is_empty() {
                        continue;
                    }
                    let i = live[rng.random_range(0..live.len())];
                    let Some((id, _)) = model.events[&room][i].message else {
                        continue;
                    };
                    let key = ["a", "b"][rng.random_range(0..2)];
                    let add = rng.random_bool(0.6);
                    let changed = react(store, id, who, key, add).await.expect("react");
                    if changed.event.is_some() {
                        model.push(room, Ev::other(who));
                    }
                }
                10 if member && model.creators[&room] == who => {
                    let live = model.changeable(room, who, true);
                    if live.is_empty() {
                        continue;
                    }
                    let i = live[rng.random_range(0..live.len())];
                    let Some((id, _)) = model.events[&room][i].message else {
                        continue;
                    };
                    let changed = pin(store, id, who, rng.random_bool(0.7))
                        .await
                        .expect("pin");
                    if changed.event.is_some() {
                        model.push(room, Ev::other(who));
                    }
                }
                _ if member => {
                    let to = rng.random_range(0..=last + 2);
                    store.mark_read(room, who, to).await.expect("mark");
                    let mark = model
                        .marks
                        .get_mut(&room)
                        .and_then(|m| m.get_mut(&who))
                        .expect("member");
                    *mark = (*mark).max(to.min(last));
                }
                _ => continue,
            }
            for &user in &users {
                let naive: u64 = rooms.iter().filter_map(|r| model.unread(*r, user)).sum();
                assert_eq!(
                    store.unread_total(user).await.expect("unread"),
                    naive,
                    "seed {seed} step {step}: unread total of {user}"
                );
                for entry in store.user_rooms(user).await.expect("rooms") {
                    if let Some(expected) = model.unread(entry.room.id, user) {
                        assert_eq!(
                            entry.unread, expected,
                            "seed {seed} step {step}: unread of {user} in {}",
                            entry.room.id
                        );
                    }
                    if let Some(expected) = model.mentions(entry.room.id, user) {
                        assert_eq!(
                            entry.mentions, expected,
                            "seed {seed} step {step}: mentions of {user} in {}",
                            entry.room.id
                        );
                    }
                }
            }
        }
        // And the timeline is the model's, kind for kind, deletions kept.
        for room in rooms {
            let stored: Vec<(UserId, Option<bool>)> = timeline(store, room)
                .await
                .iter()
                .map(|e| match e {
                    StoredEvent::Message(m) => (m.sender, Some(m.deleted)),
                    StoredEvent::Member(m) => (m.user, None),
                    StoredEvent::Update(u) => (u.user, None),
                    StoredEvent::Room(r) => (r.user, None),
                })
                .collect();
            let expected: Vec<(UserId, Option<bool>)> = model.events[&room]
                .iter()
                .map(|e| (e.who, e.message.map(|(_, deleted)| deleted)))
                .collect();
            assert_eq!(stored, expected, "seed {seed}: timeline");
        }
    }
}

/// The timeline pages every kind of event in seq order, both directions,
/// while history pages the messages alone.
pub async fn timeline_pages_every_kind(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    send(store, lobby.id, alice.id, "1").await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    send(store, lobby.id, bob.id, "3").await;
    store.leave_room(lobby.id, bob.id).await.expect("leave");
    send(store, lobby.id, alice.id, "5").await;

    let all = timeline(store, lobby.id).await;
    assert_eq!(
        all.iter().map(StoredEvent::seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(matches!(
        &all[1],
        StoredEvent::Member(m) if m.user == bob.id && m.change == MemberChange::Joined
    ));
    assert!(matches!(
        &all[3],
        StoredEvent::Member(m) if m.user == bob.id && m.change == MemberChange::Left
    ));
    let newest = store
        .timeline(
            lobby.id,
            HistoryQuery {
                before: None,
                after: None,
                limit: 2,
            },
        )
        .await
        .expect("timeline");
    assert_eq!(
        newest
            .events
            .iter()
            .map(StoredEvent::seq)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert!(newest.has_more);
    let below = store
        .timeline(
            lobby.id,
            HistoryQuery {
                before: Some(4),
                after: Some(1),
                limit: 10,
            },
        )
        .await
        .expect("timeline");
    assert_eq!(
        below
            .events
            .iter()
            .map(StoredEvent::seq)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(!below.has_more);
    assert_eq!(
        seqs(&page(store, lobby.id, None, None, 50).await),
        vec![1, 3, 5],
        "history is the messages"
    );
    let rooms = store.user_rooms(alice.id).await.expect("rooms");
    assert_eq!(
        rooms[0].last_message.as_ref().map(|m| m.seq),
        Some(5),
        "the last message, not the last event"
    );
}

/// Whoever listens to commits hears every event once, in seq order per
/// room, messages and membership changes alike, and before the call that
/// made it returns.
pub async fn listener_hears_every_event_in_order(store: Arc<dyn Storage>) {
    #[derive(Default)]
    struct Heard(std::sync::Mutex<Vec<(RoomId, Seq)>>);
    impl super::CommitListener for Heard {
        fn committed(&self, event: super::Committed<'_>, _origin: Option<crate::event::ConnId>) {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((event.room(), event.seq()));
        }
    }
    let heard = Arc::new(Heard::default());
    store.listen(heard.clone());
    let alice = user(&*store, "alice").await;
    let bob = user(&*store, "bob").await;
    let one = room(&*store, "one", alice.id, &[]).await;
    let two = room(&*store, "two", alice.id, &[]).await;
    let heard_now = || {
        heard
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    };
    let sent = send(&*store, one.id, alice.id, "first").await;
    assert_eq!(
        heard_now(),
        vec![(one.id, sent.seq)],
        "before append returned"
    );
    store.join_room(one.id, bob.id).await.expect("join");
    assert_eq!(
        heard_now().last(),
        Some(&(one.id, 2)),
        "before join returned"
    );

    // Concurrent appends to two rooms: each room heard in seq order, each
    // event once.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = Arc::clone(&store);
            let room = if i % 2 == 0 { one.id } else { two.id };
            tokio::spawn(async move {
                store
                    .append(message(room, alice.id, "m", None))
                    .await
                    .expect("append")
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    store.leave_room(one.id, bob.id).await.expect("leave");
    let heard = heard_now();
    for room in [one.id, two.id] {
        let seqs: Vec<Seq> = heard
            .iter()
            .filter(|(r, _)| *r == room)
            .map(|(_, s)| *s)
            .collect();
        let last = last_seq(&*store, room).await;
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "room {room}");
    }
    // A repeat of a client id stores nothing new and is not heard.
    let before = heard.len();
    let keyed = message(two.id, alice.id, "k", Some("once"));
    store.append(keyed.clone()).await.expect("append");
    store.append(keyed).await.expect("append");
    assert_eq!(heard_now().len(), before + 1);
}

// Changes to messages

/// An edit changes the stored body, counts a version, takes the room's
/// next seq as an event that carries the message as it stands; the same
/// body again changes nothing.
pub async fn edit_message(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let first = send(store, lobby.id, alice.id, "helo").await;
    send(store, lobby.id, bob.id, "hi").await;
    let before = last_seq(store, lobby.id).await;

    let changed = edit(store, first.id, alice.id, "hello")
        .await
        .expect("edit");
    assert_eq!(changed.message.body, "hello");
    assert_eq!(
        changed.message.seq, first.seq,
        "the message keeps its place"
    );
    assert_eq!(changed.message.version, 1);
    assert_eq!(changed.message.edited_at, Some(at(5_000)));
    assert!(!changed.message.deleted);
    let event = changed.event.expect("an edit is an event");
    assert_eq!(event.seq, before + 1, "the event takes the next seq");
    assert_eq!(event.kind, UpdateKind::Edited);
    assert_eq!(event.user, alice.id);
    assert_eq!(event.message, changed.message);
    assert_eq!(last_seq(store, lobby.id).await, before + 1);

    // History has the current body; the timeline the event.
    let history = page(store, lobby.id, None, None, 10).await;
    assert_eq!(bodies(&history), vec!["hello", "hi"]);
    assert_eq!(history.messages[0].version, 1);
    let events = timeline(store, lobby.id).await;
    assert_eq!(events.last(), Some(&StoredEvent::Update(event.clone())));

    // A second edit: version 2, the earlier event now shows it too.
    let again = edit(store, first.id, alice.id, "hello!")
        .await
        .expect("edit");
    assert_eq!(again.message.version, 2);
    let events = timeline(store, lobby.id).await;
    let updates: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StoredEvent::Update(u) => Some((u.seq, u.message.body.as_str(), u.message.version)),
            _ => None,
        })
        .collect();
    assert_eq!(
        updates,
        vec![(before + 1, "hello!", 2), (before + 2, "hello!", 2)],
        "a replayed edit shows the message as it stands"
    );

    // The same body: no event, no seq, no version.
    let same = edit(store, first.id, alice.id, "hello!")
        .await
        .expect("same body");
    assert!(same.event.is_none());
    assert_eq!(same.message.version, 2);
    assert_eq!(last_seq(store, lobby.id).await, before + 2);

    // Edits never count as unread, nor move the room's newest message.
    let rooms = store.user_rooms(bob.id).await.expect("rooms");
    assert_eq!(rooms[0].unread, 0, "bob read up to his own message");
    assert_eq!(rooms[0].room.last_message_seq, first.seq + 1);
}

/// A deletion erases the body and keeps the seq (a tombstone in history),
/// takes a seq of its own, and answers a second time without a new event.
/// Deleting an unread message lowers the unread count; deleting a read one
/// leaves it.
pub async fn delete_message(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let read = send(store, lobby.id, alice.id, "read by bob").await;
    store
        .mark_read(lobby.id, bob.id, read.seq)
        .await
        .expect("mark");
    let unread = send(store, lobby.id, alice.id, "secret").await;
    let kept = send(store, lobby.id, alice.id, "kept").await;
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 2);
    let before = last_seq(store, lobby.id).await;

    let changed = delete(store, unread.id, alice.id).await.expect("delete");
    assert!(changed.message.deleted);
    assert_eq!(changed.message.body, "", "the body is erased");
    assert_eq!(changed.message.seq, unread.seq);
    assert_eq!(changed.message.version, 1);
    let event = changed.event.expect("a deletion is an event");
    assert_eq!(event.seq, before + 1);
    assert_eq!(event.kind, UpdateKind::Deleted);
    assert_eq!(
        store.unread_total(bob.id).await.expect("unread"),
        1,
        "the deleted message was unread"
    );
    let rooms = store.user_rooms(bob.id).await.expect("rooms");
    assert_eq!(rooms[0].unread, 1);

    // History keeps the seq as a tombstone; nothing of the body is left.
    let history = page(store, lobby.id, None, None, 10).await;
    assert_eq!(seqs(&history), vec![read.seq, unread.seq, kept.seq]);
    assert_eq!(bodies(&history), vec!["read by bob", "", "kept"]);
    assert!(history.messages[1].deleted);
    assert!(timeline(store, lobby.id).await.iter().all(
        |e| !matches!(e, StoredEvent::Message(m) if m.body.contains("secret"))
            && !matches!(e, StoredEvent::Update(u) if u.message.body.contains("secret"))
    ));

    // Twice: the same tombstone, no event.
    let twice = delete(store, unread.id, alice.id).await.expect("again");
    assert!(twice.event.is_none());
    assert_eq!(twice.message, changed.message);
    assert_eq!(last_seq(store, lobby.id).await, before + 1);

    // A read message: counts nothing either way; marks stay exact after.
    delete(store, read.id, alice.id).await.expect("delete read");
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 1);
    store
        .mark_read(lobby.id, bob.id, kept.seq)
        .await
        .expect("mark");
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 0);
    // Bob joins another room's worth of counts after deletions: a new
    // message is one unread.
    send(store, lobby.id, alice.id, "new").await;
    assert_eq!(store.unread_total(bob.id).await.expect("unread"), 1);

    // The moderator (the room's creator) deletes someone else's message.
    let bobs = send(store, lobby.id, bob.id, "bob's").await;
    let moderated = delete(store, bobs.id, alice.id).await.expect("moderate");
    assert!(moderated.message.deleted);
    assert_eq!(moderated.event.map(|e| e.user), Some(alice.id));
    // An edit of a deleted message is refused.
    assert!(matches!(
        edit(store, bobs.id, bob.id, "back").await,
        Err(StorageError::Refused(Refusal::Deleted))
    ));
}

/// Who may change what: the sender edits; the sender or the moderator
/// deletes (nobody moderates a conversation); a non-member cannot reach
/// the message; an id that names no message (or another kind of event) is
/// not found.
pub async fn change_message_refusals(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id, carol.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let alices = send(store, lobby.id, alice.id, "alice's").await;

    assert!(matches!(
        edit(store, alices.id, bob.id, "mine now").await,
        Err(StorageError::Refused(Refusal::NotAllowed))
    ));
    assert!(matches!(
        delete(store, alices.id, bob.id).await,
        Err(StorageError::Refused(Refusal::NotAllowed))
    ));
    // The creator moderates deletions, not edits.
    let bobs = send(store, lobby.id, bob.id, "bob's").await;
    assert!(matches!(
        edit(store, bobs.id, alice.id, "edited by alice").await,
        Err(StorageError::Refused(Refusal::NotAllowed))
    ));
    // An invitee and a stranger are not members.
    for outsider in [carol.id, user(store, "dave").await.id] {
        assert!(
            matches!(
                edit(store, alices.id, outsider, "x").await,
                Err(StorageError::NotMember { .. })
            ),
            "{outsider} edits"
        );
        assert!(matches!(
            delete(store, alices.id, outsider).await,
            Err(StorageError::NotMember { .. })
        ));
    }
    // A member who left is a stranger again, even to their own message.
    store.leave_room(lobby.id, bob.id).await.expect("leave");
    assert!(matches!(
        delete(store, bobs.id, bob.id).await,
        Err(StorageError::NotMember { .. })
    ));
    // No such message; a membership event's id is no message.
    assert!(matches!(
        edit(store, MessageId(i64::MAX), alice.id, "x").await,
        Err(StorageError::NotFound)
    ));
    // Bob's join took the id just before Alice's message (every event of a
    // fresh store takes the next id).
    let join_id = MessageId(alices.id.get() - 1);
    assert!(matches!(
        timeline(store, lobby.id).await.first(),
        Some(StoredEvent::Member(m)) if m.user == bob.id
    ));
    assert!(matches!(
        delete(store, join_id, alice.id).await,
        Err(StorageError::NotFound)
    ));

    // Nothing refused left a trace.
    let history = page(store, lobby.id, None, None, 10).await;
    assert_eq!(bodies(&history), vec!["alice's", "bob's"]);
    assert!(history.messages.iter().all(|m| m.version == 0));

    // A conversation has no moderator.
    let (direct, _) = store
        .direct_room(alice.id, bob.id, at(0))
        .await
        .expect("direct");
    let bobs = send(store, direct.id, bob.id, "private").await;
    assert!(matches!(
        delete(store, bobs.id, alice.id).await,
        Err(StorageError::Refused(Refusal::NotAllowed))
    ));
    assert!(delete(store, bobs.id, bob.id).await.is_ok());

    // A deleted room takes its messages along.
    store.delete_room(lobby.id).await.expect("delete room");
    assert!(matches!(
        edit(store, alices.id, alice.id, "x").await,
        Err(StorageError::NotFound)
    ));
}

/// Changes are heard at their commit point, in seq order with the
/// messages around them, each once.
pub async fn changes_heard_in_order(store: Arc<dyn Storage>) {
    #[derive(Default)]
    struct Heard(std::sync::Mutex<Vec<(RoomId, Seq, bool)>>);
    impl super::CommitListener for Heard {
        fn committed(&self, event: super::Committed<'_>, _origin: Option<crate::event::ConnId>) {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((
                    event.room(),
                    event.seq(),
                    matches!(event, super::Committed::Update(_)),
                ));
        }
    }
    let heard = Arc::new(Heard::default());
    store.listen(heard.clone());
    let alice = user(&*store, "alice").await;
    let lobby = room(&*store, "lobby", alice.id, &[]).await;
    let first = send(&*store, lobby.id, alice.id, "first").await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                if i % 4 == 0 {
                    edit(&*store, first.id, alice.id, &format!("v{i}"))
                        .await
                        .map(|_| ())
                } else {
                    store
                        .append(message(lobby.id, alice.id, "m", None))
                        .await
                        .map(|_| ())
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("change or append");
    }
    let heard = heard
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let seqs: Vec<Seq> = heard.iter().map(|(_, s, _)| *s).collect();
    let last = last_seq(&*store, lobby.id).await;
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "in order, each once");
    assert_eq!(heard.iter().filter(|(_, _, u)| *u).count(), 5, "five edits");
    let edited = page(&*store, lobby.id, None, Some(0), 1).await;
    assert_eq!(edited.messages[0].version, 5);
}

/// Reactions: any member, once per key; counts per key in the order of
/// each key's first; each change an event; the viewer's own marked; a
/// bounded number of keys; gone with the message.
pub async fn react_to_message(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id, carol.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let target = send(store, lobby.id, alice.id, "react to me").await;
    let before = last_seq(store, lobby.id).await;
    let unread = store.unread_total(bob.id).await.expect("unread");

    let changed = react(store, target.id, bob.id, "👍", true)
        .await
        .expect("react");
    let event = changed.event.expect("a reaction is an event");
    assert_eq!(event.seq, before + 1);
    assert_eq!(
        event.kind,
        UpdateKind::Reacted {
            key: "👍".to_owned(),
            added: true
        }
    );
    assert_eq!(counts(&event.reactions), vec![("👍", 1, false)]);
    assert_eq!(changed.message.version, 1);
    // Again: nothing.
    let again = react(store, target.id, bob.id, "👍", true)
        .await
        .expect("again");
    assert!(again.event.is_none());
    assert_eq!(last_seq(store, lobby.id).await, before + 1);

    react(store, target.id, alice.id, "❤️", true)
        .await
        .expect("react");
    let last = react(store, target.id, alice.id, "👍", true)
        .await
        .expect("react");
    assert_eq!(
        counts(&last.event.expect("event").reactions),
        vec![("👍", 2, false), ("❤️", 1, false)],
        "in the order of each key's first reaction"
    );
    let seen = store
        .reactions(&[target.id, MessageId(i64::MAX)], bob.id)
        .await
        .expect("reactions");
    assert_eq!(seen.len(), 1, "messages without reactions are left out");
    assert_eq!(seen[0].0, target.id);
    assert_eq!(counts(&seen[0].1), vec![("👍", 2, true), ("❤️", 1, false)]);

    // Taken back: once; twice changes nothing.
    let back = react(store, target.id, bob.id, "👍", false)
        .await
        .expect("unreact");
    assert_eq!(
        back.event.as_ref().map(|e| e.kind.clone()),
        Some(UpdateKind::Reacted {
            key: "👍".to_owned(),
            added: false
        })
    );
    assert!(
        react(store, target.id, bob.id, "👍", false)
            .await
            .expect("again")
            .event
            .is_none()
    );
    // The timeline replays each reaction with its key.
    let keys: Vec<(String, bool)> = timeline(store, lobby.id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            StoredEvent::Update(StoredUpdate {
                kind: UpdateKind::Reacted { key, added },
                ..
            }) => Some((key, added)),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[3], ("👍".to_owned(), false));
    assert_eq!(
        store.unread_total(bob.id).await.expect("unread"),
        unread,
        "reactions count for nobody"
    );

    // An invitee is not a member.
    assert!(matches!(
        react(store, target.id, carol.id, "👍", true).await,
        Err(StorageError::NotMember { .. })
    ));
    // A bounded number of keys; an existing key is still welcome.
    let other = send(store, lobby.id, alice.id, "many").await;
    for i in 0..MAX_REACTION_KEYS {
        react(store, other.id, alice.id, &format!("k{i}"), true)
            .await
            .expect("under the bound");
    }
    assert!(matches!(
        react(store, other.id, bob.id, "one-too-many", true).await,
        Err(StorageError::Refused(Refusal::TooManyReactions))
    ));
    react(store, other.id, bob.id, "k0", true)
        .await
        .expect("an existing key");

    // Deleted: the reactions go, and the keys of their events.
    delete(store, target.id, alice.id).await.expect("delete");
    assert!(
        store
            .reactions(&[target.id], bob.id)
            .await
            .expect("reactions")
            .is_empty()
    );
    assert!(matches!(
        react(store, target.id, bob.id, "👍", true).await,
        Err(StorageError::Refused(Refusal::Deleted))
    ));
    let kept_keys: Vec<String> = timeline(store, lobby.id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            StoredEvent::Update(StoredUpdate {
                kind: UpdateKind::Reacted { key, .. },
                message,
                ..
            }) if message.id == target.id => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(kept_keys.len(), 4, "the events keep their seqs");
    assert!(
        kept_keys.iter().all(String::is_empty),
        "no key of a deleted message's reactions is left: {kept_keys:?}"
    );
}

async fn pin(
    store: &dyn Storage,
    message: MessageId,
    user: UserId,
    pin: bool,
) -> Result<Changed, StorageError> {
    changed_as_read(
        store,
        change(message, user, ChangeOp::Pin { pin }, Authority::Moderator),
    )
    .await
}

/// Pins: the moderator pins and unpins (either participant of a
/// conversation), each change an event; the room lists its pins, the
/// latest first; a deletion unpins; a bounded number per room.
pub async fn pin_message(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let first = send(store, lobby.id, bob.id, "first").await;
    let second = send(store, lobby.id, bob.id, "second").await;
    let unread = store.unread_total(alice.id).await.expect("unread");

    assert!(matches!(
        pin(store, first.id, bob.id, true).await,
        Err(StorageError::Refused(Refusal::NotModerator))
    ));
    let before = last_seq(store, lobby.id).await;
    let pinned = pin(store, first.id, alice.id, true).await.expect("pin");
    assert!(pinned.message.pinned);
    assert_eq!(pinned.message.version, 1);
    let event = pinned.event.expect("a pin is an event");
    assert_eq!(event.seq, before + 1);
    assert_eq!(event.kind, UpdateKind::Pinned { pinned: true });
    assert!(
        pin(store, first.id, alice.id, true)
            .await
            .expect("again")
            .event
            .is_none()
    );
    pin(store, second.id, alice.id, true).await.expect("pin");
    let ids: Vec<MessageId> = store
        .pins(lobby.id)
        .await
        .expect("pins")
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![second.id, first.id], "the latest pin first");
    assert_eq!(
        store.unread_total(alice.id).await.expect("unread"),
        unread,
        "pins count for nobody"
    );

    let unpinned = pin(store, second.id, alice.id, false).await.expect("unpin");
    assert!(!unpinned.message.pinned);
    assert_eq!(
        unpinned.event.map(|e| e.kind),
        Some(UpdateKind::Pinned { pinned: false })
    );
    // A deletion unpins.
    delete(store, first.id, bob.id).await.expect("delete");
    assert!(store.pins(lobby.id).await.expect("pins").is_empty());
    assert!(matches!(
        pin(store, first.id, alice.id, true).await,
        Err(StorageError::Refused(Refusal::Deleted))
    ));
    let events: Vec<UpdateKind> = timeline(store, lobby.id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            StoredEvent::Update(u) => Some(u.kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        vec![
            UpdateKind::Pinned { pinned: true },
            UpdateKind::Pinned { pinned: true },
            UpdateKind::Pinned { pinned: false },
            UpdateKind::Deleted,
        ]
    );

    // A conversation: either participant pins.
    let (direct, _) = store
        .direct_room(alice.id, bob.id, at(0))
        .await
        .expect("direct");
    let said = send(store, direct.id, alice.id, "pin me").await;
    assert!(pin(store, said.id, bob.id, true).await.is_ok());

    // At most MAX_PINS per room.
    let busy = room(store, "busy", alice.id, &[]).await;
    for i in 0..MAX_PINS {
        let m = send(store, busy.id, alice.id, &format!("m{i}")).await;
        pin(store, m.id, alice.id, true)
            .await
            .expect("under the bound");
    }
    let extra = send(store, busy.id, alice.id, "one more").await;
    assert!(matches!(
        pin(store, extra.id, alice.id, true).await,
        Err(StorageError::Refused(Refusal::TooManyPins))
    ));
    assert_eq!(store.pins(busy.id).await.expect("pins").len(), MAX_PINS);
}

async fn found(
    store: &dyn Storage,
    viewer: UserId,
    terms: &[&str],
    room: Option<RoomId>,
    before: Option<MessageId>,
    limit: u32,
) -> (Vec<(String, String)>, bool) {
    let page = store
        .search(&SearchRequest {
            viewer,
            terms: terms.iter().map(|t| (*t).to_owned()).collect(),
            room,
            before,
            limit,
        })
        .await
        .expect("search");
    (
        page.hits
            .into_iter()
            .map(|(m, room)| (m.body, room))
            .collect(),
        page.has_more,
    )
}

fn hits(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(b, r)| ((*b).to_owned(), (*r).to_owned()))
        .collect()
}

/// Search: every word, case and punctuation ignored, newest first, only
/// in the viewer's rooms; edits reindex, deletions and leaving remove.
/// Paging a search through thousands of messages finds every match once,
/// newest first, whether a word is in many recent messages or a few old
/// ones (PostgreSQL matches its newest messages one by one and asks its
/// index below them: the pages must meet without a gap or an overlap).
pub async fn search_pages_through_many_messages(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    let side = room(store, "side", bob.id, &[]).await;
    let mut batch = Vec::new();
    for i in 0..2_600_u32 {
        let body = match (i % 7, i < 300) {
            (0, _) => format!("common {i}"),
            (_, true) if i % 50 == 1 => format!("rare and common {i}"),
            _ => format!("filler {i}"),
        };
        batch.push(message(lobby.id, alice.id, &body, None));
        if i % 100 == 0 {
            batch.push(message(side.id, bob.id, "common rare, not alice's", None));
        }
    }
    let mut expected: HashMap<&str, Vec<MessageId>> = HashMap::new();
    for appended in store.append_many(batch).await {
        let m = appended.expect("append").message;
        if m.room != lobby.id {
            continue;
        }
        for word in ["common", "rare"] {
            if m.body.split(' ').any(|w| w == word) {
                expected.entry(word).or_default().push(m.id);
            }
        }
    }
    for (word, room) in [
        ("common", None),
        ("rare", None),
        ("common", Some(lobby.id)),
        ("rare", Some(lobby.id)),
    ] {
        let mut want = expected[word].clone();
        want.reverse();
        let mut got = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .search(&SearchRequest {
                    viewer: alice.id,
                    terms: vec![word.to_owned()],
                    room,
                    before,
                    limit: 37,
                })
                .await
                .expect("search");
            got.extend(page.hits.iter().map(|(m, _)| m.id));
            before = page.hits.last().map(|(m, _)| m.id);
            if !page.has_more {
                break;
            }
        }
        assert_eq!(
            got, want,
            "{word:?} in {room:?}: every match once, newest first"
        );
    }
}

pub async fn search_messages(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let side = room(store, "side", alice.id, &[]).await;
    let fox = send(store, lobby.id, alice.id, "The quick brown fox").await;
    send(store, lobby.id, bob.id, "quick thinking").await;
    send(store, side.id, alice.id, "a quick side note").await;
    let dog = send(store, lobby.id, alice.id, "Slow brown dog").await;
    send(store, lobby.id, bob.id, "QUICK, Brown!").await;
    // Joins and leaves are events, never hits.
    store.join_room(side.id, carol.id).await.expect("join");

    assert_eq!(
        found(store, bob.id, &["quick"], None, None, 10).await,
        (
            hits(&[
                ("QUICK, Brown!", "lobby"),
                ("quick thinking", "lobby"),
                ("The quick brown fox", "lobby")
            ]),
            false
        ),
        "bob's rooms only, newest first, case ignored"
    );
    assert_eq!(
        found(store, alice.id, &["quick", "brown"], None, None, 10)
            .await
            .0,
        hits(&[("QUICK, Brown!", "lobby"), ("The quick brown fox", "lobby")])
    );
    assert_eq!(
        found(store, alice.id, &["quick"], Some(side.id), None, 10)
            .await
            .0,
        hits(&[("a quick side note", "side")])
    );
    assert_eq!(
        found(store, carol.id, &["brown"], None, None, 10).await.0,
        Vec::<(String, String)>::new(),
        "carol is in no room with a brown"
    );
    // Paging: a limit and has_more, then below the last hit.
    let (first, more) = found(store, alice.id, &["brown"], None, None, 2).await;
    assert_eq!(first.len(), 2);
    assert!(more);
    let (rest, more) = found(store, alice.id, &["brown"], None, Some(dog.id), 2).await;
    assert_eq!(rest, hits(&[("The quick brown fox", "lobby")]));
    assert!(!more);

    // An edit reindexes; a deletion removes.
    edit(store, fox.id, alice.id, "The lazy red fox")
        .await
        .expect("edit");
    assert!(
        !found(store, alice.id, &["quick", "brown"], None, None, 10)
            .await
            .0
            .iter()
            .any(|(b, _)| b.contains("fox"))
    );
    assert_eq!(
        found(store, alice.id, &["lazy"], None, None, 10).await.0,
        hits(&[("The lazy red fox", "lobby")])
    );
    delete(store, fox.id, alice.id).await.expect("delete");
    assert!(
        found(store, alice.id, &["lazy"], None, None, 10)
            .await
            .0
            .is_empty()
    );
    // Leaving takes the room out of one's search.
    store.leave_room(lobby.id, bob.id).await.expect("leave");
    assert!(
        found(store, bob.id, &["quick"], None, None, 10)
            .await
            .0
            .is_empty()
    );
    // A deleted room takes its messages out of the index.
    store.delete_room(side.id).await.expect("delete room");
    assert!(
        found(store, alice.id, &["side"], None, None, 10)
            .await
            .0
            .is_empty()
    );
    send(store, lobby.id, alice.id, "quick again").await;
    assert_eq!(
        found(store, alice.id, &["again"], None, None, 10).await.0,
        hits(&[("quick again", "lobby")]),
        "the index takes new messages after all that"
    );
}

// Moderation

/// `update` made by `by` at `at(micros)`.
fn moderation(
    room: RoomId,
    user: UserId,
    change: MemberChange,
    by: UserId,
    micros: i64,
) -> MemberUpdate {
    MemberUpdate {
        created_at: at(micros),
        ..MemberUpdate::new(room, user, change, Some(by))
    }
}

fn refused(result: Result<Option<StoredMember>, StorageError>) -> Refusal {
    match result {
        Err(StorageError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn role_in(store: &dyn Storage, room: RoomId, user: UserId) -> Option<Role> {
    store
        .room_people(room)
        .await
        .expect("people")
        .into_iter()
        .find(|p| p.user == user && p.state == MemberState::Member)
        .map(|p| p.role)
}

/// Roles, kicks, bans, mutes and handovers: the rule judged by the
/// backend, what each writes, and each as a timeline event.
pub async fn moderate_members(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let dave = user(store, "dave").await;
    let erin = user(store, "erin").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    for u in [&bob, &carol, &dave] {
        assert!(store.join_room(lobby.id, u.id).await.expect("join"));
    }
    assert_eq!(role_in(store, lobby.id, alice.id).await, Some(Role::Owner));
    assert_eq!(role_in(store, lobby.id, bob.id).await, Some(Role::Member));

    // A member moderates nobody; a stranger is not a member.
    let kick = |user, by| moderation(lobby.id, user, MemberChange::Kicked, by, 10);
    assert_eq!(
        refused(store.update_member(kick(dave.id, carol.id)).await),
        Refusal::NotModerator
    );
    assert!(matches!(
        store.update_member(kick(dave.id, erin.id)).await,
        Err(StorageError::NotMember { state: None, .. })
    ));

    // The owner names an admin; an admin acts on members only.
    let promote = MemberUpdate {
        role: Some(Role::Admin),
        ..moderation(lobby.id, bob.id, MemberChange::RoleChanged, alice.id, 20)
    };
    let event = store
        .update_member(promote.clone())
        .await
        .expect("promote")
        .expect("an event");
    assert_eq!(
        (event.change, event.by, event.role),
        (MemberChange::RoleChanged, Some(alice.id), Some(Role::Admin))
    );
    assert!(
        store.update_member(promote).await.expect("again").is_none(),
        "the same role again changes nothing"
    );
    assert_eq!(role_in(store, lobby.id, bob.id).await, Some(Role::Admin));
    let bob_sets_carol = MemberUpdate {
        role: Some(Role::Admin),
        ..moderation(lobby.id, carol.id, MemberChange::RoleChanged, bob.id, 30)
    };
    assert_eq!(
        refused(store.update_member(bob_sets_carol).await),
        Refusal::InsufficientRole,
        "roles are the owner's"
    );
    assert_eq!(
        refused(store.update_member(kick(alice.id, bob.id)).await),
        Refusal::InsufficientRole
    );
    assert_eq!(
        refused(store.update_member(kick(bob.id, bob.id)).await),
        Refusal::SelfAction
    );
    assert_eq!(
        refused(store.update_member(kick(erin.id, bob.id)).await),
        Refusal::NotInRoom
    );

    // A kick removes and tells why; the kicked may come back.
    let said = send(store, lobby.id, carol.id, "spam spam").await;
    let event = store
        .update_member(MemberUpdate {
            reason: Some("spam".to_owned()),
            ..kick(carol.id, bob.id)
        })
        .await
        .expect("kick")
        .expect("an event");
    assert_eq!(event.reason.as_deref(), Some("spam"));
    assert_eq!(store.membership(lobby.id, carol.id).await.expect("m"), None);
    assert!(matches!(
        store
            .append(message(lobby.id, carol.id, "more", None))
            .await,
        Err(StorageError::NotMember { state: None, .. })
    ));
    let timeline = store
        .timeline(
            lobby.id,
            HistoryQuery {
                before: None,
                after: Some(event.seq - 1),
                limit: 10,
            },
        )
        .await
        .expect("timeline");
    assert_eq!(
        timeline.events,
        vec![StoredEvent::Member(event.clone())],
        "the kick as stored: who, by whom, why"
    );
    assert!(store.join_room(lobby.id, carol.id).await.expect("rejoin"));

    // An admin deletes others' messages; a member pins nothing.
    changed_as_read(
        store,
        change(
            said.id,
            bob.id,
            ChangeOp::Delete,
            Authority::SenderOrModerator,
        ),
    )
    .await
    .expect("an admin deletes");
    let kept = send(store, lobby.id, alice.id, "keep").await;
    assert!(matches!(
        store
            .change_message(change(
                kept.id,
                dave.id,
                ChangeOp::Pin { pin: true },
                Authority::Moderator
            ))
            .await,
        Err(StorageError::Refused(Refusal::NotModerator))
    ));

    // A ban removes and keeps out until it ends; inviting is refused too.
    let ban = MemberUpdate {
        reason: Some("again".to_owned()),
        until: Some(at(3_600_000_000)),
        ..moderation(lobby.id, carol.id, MemberChange::Banned, bob.id, 40)
    };
    let event = store
        .update_member(ban)
        .await
        .expect("ban")
        .expect("an event");
    assert_eq!(
        (event.change, event.until, event.reason.as_deref()),
        (MemberChange::Banned, Some(at(3_600_000_000)), Some("again"))
    );
    assert_eq!(store.membership(lobby.id, carol.id).await.expect("m"), None);
    let rejoin = MemberUpdate {
        created_at: at(50),
        ..MemberUpdate::new(lobby.id, carol.id, MemberChange::Joined, None)
    };
    assert_eq!(
        refused(store.update_member(rejoin.clone()).await),
        Refusal::Banned
    );
    let invite = moderation(lobby.id, carol.id, MemberChange::Invited, dave.id, 50);
    assert_eq!(refused(store.update_member(invite).await), Refusal::Banned);
    let bans = store.bans(lobby.id, at(60)).await.expect("bans");
    assert_eq!(
        bans.iter()
            .map(|b| (b.user, b.by, b.reason.as_deref(), b.until))
            .collect::<Vec<_>>(),
        vec![(carol.id, bob.id, Some("again"), Some(at(3_600_000_000)))]
    );
    assert!(
        store
            .bans(lobby.id, at(3_600_000_001))
            .await
            .expect("bans")
            .is_empty(),
        "an ended ban is not listed"
    );
    // Strangers can be banned too; a ban that has ended keeps nobody out.
    let erin_ban = MemberUpdate {
        until: Some(at(100)),
        ..moderation(lobby.id, erin.id, MemberChange::Banned, alice.id, 70)
    };
    store.update_member(erin_ban).await.expect("ban a stranger");
    let erin_joins = MemberUpdate {
        created_at: at(200),
        ..MemberUpdate::new(lobby.id, erin.id, MemberChange::Joined, None)
    };
    assert!(
        store
            .update_member(erin_joins)
            .await
            .expect("join")
            .is_some()
    );
    let unban = moderation(lobby.id, carol.id, MemberChange::Unbanned, bob.id, 80);
    assert!(
        store
            .update_member(unban.clone())
            .await
            .expect("unban")
            .is_some()
    );
    assert!(store.update_member(unban).await.expect("again").is_none());
    assert!(store.update_member(rejoin).await.expect("rejoin").is_some());

    // A mute stops sends only, outlives leaving, and lifts.
    let mute = MemberUpdate {
        until: Some(at(10_000)),
        ..moderation(lobby.id, dave.id, MemberChange::Muted, bob.id, 90)
    };
    store
        .update_member(mute)
        .await
        .expect("mute")
        .expect("an event");
    let muted = |r: Result<Appended, StorageError>| match r {
        Err(StorageError::Refused(Refusal::Muted { until })) => until,
        other => panic!("expected muted, got {other:?}"),
    };
    assert_eq!(
        muted(store.append(message(lobby.id, dave.id, "hush", None)).await),
        Some(at(10_000))
    );
    let later = NewMessage {
        created_at: at(10_001),
        ..message(lobby.id, dave.id, "after the mute", None)
    };
    let results = store
        .append_many(vec![
            message(lobby.id, dave.id, "hush", None),
            later,
            message(lobby.id, alice.id, "hi", None),
        ])
        .await;
    assert!(matches!(
        results[0],
        Err(StorageError::Refused(Refusal::Muted { .. }))
    ));
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
    changed_as_read(
        store,
        change(
            kept.id,
            dave.id,
            ChangeOp::React {
                key: "+1".to_owned(),
                add: true,
            },
            Authority::Member,
        ),
    )
    .await
    .expect("a muted member still reacts");
    let forever = moderation(lobby.id, dave.id, MemberChange::Muted, bob.id, 100);
    store.update_member(forever).await.expect("mute for good");
    let dave_room = store
        .user_rooms(dave.id)
        .await
        .expect("rooms")
        .into_iter()
        .find(|r| r.room.id == lobby.id)
        .expect("dave's lobby");
    assert_eq!(
        (dave_room.role, dave_room.muted_until.is_some()),
        (Role::Member, true)
    );
    assert!(store.leave_room(lobby.id, dave.id).await.expect("leave"));
    assert!(store.join_room(lobby.id, dave.id).await.expect("join"));
    assert_eq!(
        muted(store.append(message(lobby.id, dave.id, "back", None)).await),
        None,
        "muted for good, through leaving and coming back"
    );
    let unmute = moderation(lobby.id, dave.id, MemberChange::Unmuted, alice.id, 110);
    assert!(
        store
            .update_member(unmute.clone())
            .await
            .expect("unmute")
            .is_some()
    );
    assert!(store.update_member(unmute).await.expect("again").is_none());
    send(store, lobby.id, dave.id, "free").await;

    // The owner hands the room over and stays as an admin.
    let handover = MemberUpdate {
        role: Some(Role::Owner),
        ..moderation(lobby.id, bob.id, MemberChange::RoleChanged, alice.id, 120)
    };
    store
        .update_member(handover)
        .await
        .expect("handover")
        .expect("an event");
    assert_eq!(
        store.room(lobby.id).await.expect("room").map(|r| r.owner),
        Some(bob.id)
    );
    assert_eq!(role_in(store, lobby.id, bob.id).await, Some(Role::Owner));
    assert_eq!(role_in(store, lobby.id, alice.id).await, Some(Role::Admin));
    let alice_sets = MemberUpdate {
        role: Some(Role::Admin),
        ..moderation(lobby.id, dave.id, MemberChange::RoleChanged, alice.id, 130)
    };
    assert_eq!(
        refused(store.update_member(alice_sets).await),
        Refusal::InsufficientRole
    );
    assert!(
        store
            .update_member(kick(dave.id, alice.id))
            .await
            .expect("kick")
            .is_some()
    );

    // Conversations take no moderation.
    let (direct, _) = store
        .direct_room(alice.id, bob.id, at(0))
        .await
        .expect("direct");
    let in_direct = moderation(direct.id, bob.id, MemberChange::Kicked, alice.id, 140);
    assert_eq!(
        refused(store.update_member(in_direct).await),
        Refusal::Conversation
    );

    // Every change above is in the timeline, with its details.
    let all = store
        .timeline(
            lobby.id,
            HistoryQuery {
                before: None,
                after: Some(0),
                limit: 200,
            },
        )
        .await
        .expect("timeline");
    let changes: Vec<MemberChange> = all
        .events
        .iter()
        .filter_map(|e| match e {
            StoredEvent::Member(m) if m.by.is_some() => Some(m.change),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            MemberChange::RoleChanged,
            MemberChange::Kicked,
            MemberChange::Banned,
            MemberChange::Banned,
            MemberChange::Unbanned,
            MemberChange::Muted,
            MemberChange::Muted,
            MemberChange::Unmuted,
            MemberChange::RoleChanged,
            MemberChange::Kicked,
        ]
    );
}

/// A room's settings change under the rule, as a timeline event of what
/// changed; the rule of sending reads them inside the append; a repeat of
/// a stored message gets its original whatever the rule says now.
pub async fn room_settings_and_the_rule_of_sending(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    let _other = room(store, "taken", alice.id, &[]).await;
    for u in [&bob, &carol] {
        store.join_room(lobby.id, u.id).await.expect("join");
    }
    let promote = MemberUpdate {
        role: Some(Role::Admin),
        ..moderation(lobby.id, bob.id, MemberChange::RoleChanged, alice.id, 1)
    };
    store.update_member(promote).await.expect("promote");
    let change = |by: UserId, settings: RoomSettings| RoomChange {
        room: lobby.id,
        by,
        settings,
        created_at: at(2),
    };
    let topic = RoomSettings {
        topic: Some("news".to_owned()),
        ..RoomSettings::default()
    };
    assert!(matches!(
        store.update_room(change(carol.id, topic.clone())).await,
        Err(StorageError::Refused(Refusal::NotModerator))
    ));
    let event = store
        .update_room(change(bob.id, topic.clone()))
        .await
        .expect("an admin changes settings")
        .expect("an event");
    assert_eq!((event.user, &event.settings), (bob.id, &topic));
    assert!(
        store
            .update_room(change(bob.id, topic))
            .await
            .expect("again")
            .is_none(),
        "the same topic again changes nothing"
    );
    let rename = RoomSettings {
        name: Some("taken".to_owned()),
        ..RoomSettings::default()
    };
    assert!(matches!(
        store.update_room(change(alice.id, rename)).await,
        Err(StorageError::Conflict(Conflict::RoomName))
    ));
    let many = RoomSettings {
        name: Some("hall".to_owned()),
        kind: Some(RoomType::Public),
        topic: Some(String::new()),
        description: Some("a hall".to_owned()),
        avatar_url: Some("https://example.com/a.png".to_owned()),
        announcement: Some(false),
        slow_mode_seconds: Some(0),
    };
    let event = store
        .update_room(change(alice.id, many))
        .await
        .expect("update")
        .expect("an event");
    assert_eq!(
        event.settings,
        RoomSettings {
            name: Some("hall".to_owned()),
            kind: Some(RoomType::Public),
            topic: Some(String::new()),
            description: Some("a hall".to_owned()),
            avatar_url: Some("https://example.com/a.png".to_owned()),
            ..RoomSettings::default()
        },
        "what changed, a cleared topic as empty"
    );
    let hall = store.room(lobby.id).await.expect("room").expect("a room");
    assert_eq!((hall.name.as_str(), hall.kind), ("hall", RoomType::Public));
    assert_eq!(hall.profile.topic, None);
    assert_eq!(hall.profile.description.as_deref(), Some("a hall"));
    assert!(
        store
            .room_by_name("lobby")
            .await
            .expect("by name")
            .is_none()
    );
    let page = store
        .timeline(
            lobby.id,
            HistoryQuery {
                before: None,
                after: Some(event.seq - 1),
                limit: 5,
            },
        )
        .await
        .expect("timeline");
    assert_eq!(page.events, vec![StoredEvent::Room(event)]);

    // Announcement mode: admins and the owner post, members not.
    let announce = RoomSettings {
        announcement: Some(true),
        ..RoomSettings::default()
    };
    store
        .update_room(change(alice.id, announce))
        .await
        .expect("announce");
    assert!(matches!(
        store.append(message(lobby.id, carol.id, "hi", None)).await,
        Err(StorageError::Refused(Refusal::AnnouncementOnly))
    ));
    send(store, lobby.id, bob.id, "an announcement").await;
    let open = RoomSettings {
        announcement: Some(false),
        slow_mode_seconds: Some(60),
        ..RoomSettings::default()
    };
    store
        .update_room(change(alice.id, open))
        .await
        .expect("slow mode");

    // Slow mode: one message a minute for members; a repeat gets its
    // original; admins are not slowed.
    let first = NewMessage {
        created_at: at(10_000_000),
        ..message(lobby.id, carol.id, "first", Some("c-1"))
    };
    let stored = store.append(first.clone()).await.expect("first");
    let soon = NewMessage {
        created_at: at(20_000_000),
        ..message(lobby.id, carol.id, "too soon", Some("c-2"))
    };
    let refused = store.append(soon.clone()).await;
    assert!(
        matches!(refused, Err(StorageError::Refused(Refusal::SlowMode { until })) if until == at(70_000_000)),
        "{refused:?}"
    );
    let again = store
        .append(NewMessage {
            created_at: at(20_000_000),
            ..first
        })
        .await
        .expect("repeat");
    assert_eq!(
        (again.created, again.message.id),
        (false, stored.message.id)
    );
    let later = NewMessage {
        created_at: at(70_000_000),
        ..soon
    };
    assert!(store.append(later).await.expect("a minute on").created);
    // Two in one burst: the first goes, the second waits.
    let burst = store
        .append_many(vec![
            NewMessage {
                created_at: at(200_000_000),
                ..message(lobby.id, carol.id, "one", None)
            },
            NewMessage {
                created_at: at(200_000_001),
                ..message(lobby.id, carol.id, "two", None)
            },
            NewMessage {
                created_at: at(200_000_002),
                ..message(lobby.id, bob.id, "admin", None)
            },
            NewMessage {
                created_at: at(200_000_003),
                ..message(lobby.id, bob.id, "admin", None)
            },
        ])
        .await;
    assert!(burst[0].is_ok(), "{burst:?}");
    assert!(
        matches!(
            burst[1],
            Err(StorageError::Refused(Refusal::SlowMode { .. }))
        ),
        "{burst:?}"
    );
    assert!(burst[2].is_ok() && burst[3].is_ok(), "{burst:?}");

    // Conversations take no settings.
    let (direct, _) = store
        .direct_room(alice.id, bob.id, at(0))
        .await
        .expect("direct");
    let in_direct = RoomChange {
        room: direct.id,
        ..change(
            alice.id,
            RoomSettings {
                topic: Some("x".to_owned()),
                ..RoomSettings::default()
            },
        )
    };
    assert!(matches!(
        store.update_room(in_direct).await,
        Err(StorageError::Refused(Refusal::Conversation))
    ));
}

/// Public rooms by name, by prefix, paged; never private, game or direct.
pub async fn public_directory(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let make = |name: &'static str, kind: RoomType| NewRoom {
        name: name.to_owned(),
        kind,
        creator: alice.id,
        invited: Vec::new(),
        created_at: at(0),
    };
    for (name, kind) in [
        ("Chess", RoomType::Public),
        ("chess-club", RoomType::Public),
        ("cooking", RoomType::Public),
        ("chess-secret", RoomType::Private),
        ("chess-game", RoomType::Game),
        ("50%_off", RoomType::Public),
    ] {
        store.create_room(make(name, kind)).await.expect("create");
    }
    store
        .direct_room(alice.id, bob.id, at(0))
        .await
        .expect("direct");
    let names = |rooms: Vec<PublicRoom>| rooms.into_iter().map(|r| r.room.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.public_rooms(None, None, 10).await.expect("all")),
        ["50%_off", "Chess", "chess-club", "cooking"]
    );
    assert_eq!(
        names(
            store
                .public_rooms(Some("CHE"), None, 10)
                .await
                .expect("prefix")
        ),
        ["Chess", "chess-club"],
        "a prefix, case-insensitive"
    );
    assert_eq!(
        names(
            store
                .public_rooms(Some("50%_"), None, 10)
                .await
                .expect("literal")
        ),
        ["50%_off"],
        "wildcards are literal"
    );
    assert!(
        store
            .public_rooms(Some("5_"), None, 10)
            .await
            .expect("none")
            .is_empty()
    );
    let first = store.public_rooms(None, None, 2).await.expect("page");
    assert_eq!(names(first.clone()), ["50%_off", "Chess"]);
    assert_eq!(
        names(
            store
                .public_rooms(None, Some("Chess"), 2)
                .await
                .expect("next")
        ),
        ["chess-club", "cooking"]
    );
    let club = store
        .room_by_name("chess-club")
        .await
        .expect("by name")
        .expect("room");
    store.join_room(club.id, bob.id).await.expect("join");
    let listed = store
        .public_rooms(Some("chess-"), None, 10)
        .await
        .expect("club");
    assert_eq!(
        (listed[0].member_count, listed[0].last_activity_at),
        (2, at(0))
    );
}

/// A block: listed, idempotent, lifted; inside a conversation the blocked
/// participant's sends are refused, the blocker's are not, a repeat of a
/// message stored before still gets its original; group rooms are not
/// filtered.
pub async fn blocks(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let (direct, _) = store
        .direct_room(alice.id, bob.id, at(0))
        .await
        .expect("direct");
    let before = store
        .append(message(direct.id, bob.id, "before", Some("b-1")))
        .await
        .expect("before the block");
    assert!(
        store
            .block_user(alice.id, bob.id, at(5))
            .await
            .expect("block")
    );
    assert!(
        !store
            .block_user(alice.id, bob.id, at(6))
            .await
            .expect("again")
    );
    store
        .block_user(alice.id, carol.id, at(7))
        .await
        .expect("block");
    assert!(store.is_blocked(alice.id, bob.id).await.expect("is"));
    assert!(!store.is_blocked(bob.id, alice.id).await.expect("one way"));
    let listed: Vec<(UserId, Timestamp)> = store
        .blocked_users(alice.id)
        .await
        .expect("list")
        .into_iter()
        .map(|(u, t)| (u.id, t))
        .collect();
    assert_eq!(listed, vec![(carol.id, at(7)), (bob.id, at(5))]);

    assert!(matches!(
        store
            .append(message(direct.id, bob.id, "hello?", None))
            .await,
        Err(StorageError::Refused(Refusal::Blocked))
    ));
    let burst = store
        .append_many(vec![
            message(direct.id, bob.id, "one", None),
            message(direct.id, alice.id, "mine", None),
        ])
        .await;
    assert!(
        matches!(burst[0], Err(StorageError::Refused(Refusal::Blocked))),
        "{burst:?}"
    );
    assert!(burst[1].is_ok(), "the blocker still sends: {burst:?}");
    let again = store
        .append(message(direct.id, bob.id, "before", Some("b-1")))
        .await
        .expect("a repeat");
    assert_eq!(
        (again.created, again.message.id),
        (false, before.message.id)
    );

    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    send(store, lobby.id, bob.id, "group rooms are not filtered").await;

    assert!(store.unblock_user(alice.id, bob.id).await.expect("unblock"));
    assert!(!store.unblock_user(alice.id, bob.id).await.expect("again"));
    send(store, direct.id, bob.id, "back").await;
}

/// Server admins, deactivation and revocation: each moves what it should
/// and spends the refresh tokens where it revokes.
pub async fn account_control(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    assert_eq!(
        (alice.is_admin, alice.deactivated_at, alice.token_version),
        (false, None, 0)
    );
    assert!(store.set_admin(alice.id, true).await.expect("grant"));
    assert!(
        !store
            .set_admin(UserId(987_654), true)
            .await
            .expect("nobody")
    );
    let read = store.user(alice.id).await.expect("user").expect("alice");
    assert!(read.is_admin);

    store
        .insert_refresh_token(token("t-1", alice.id, "fam-1"))
        .await
        .expect("token");
    assert_eq!(
        store.revoke_sessions(alice.id).await.expect("revoke"),
        Some(1)
    );
    assert!(matches!(
        store.use_refresh_token("t-1").await.expect("use"),
        TokenUse::Spent(_)
    ));
    store
        .insert_refresh_token(token("t-2", alice.id, "fam-2"))
        .await
        .expect("token");
    assert_eq!(
        store
            .set_deactivated(alice.id, Some(at(9)))
            .await
            .expect("deactivate"),
        Some(2)
    );
    assert!(matches!(
        store.use_refresh_token("t-2").await.expect("use"),
        TokenUse::Spent(_)
    ));
    let read = store.user(alice.id).await.expect("user").expect("alice");
    assert_eq!((read.deactivated_at, read.token_version), (Some(at(9)), 2));
    assert_eq!(
        store
            .set_deactivated(alice.id, None)
            .await
            .expect("reactivate"),
        Some(2),
        "reactivating revokes nothing"
    );
    assert_eq!(
        store
            .user_by_username("alice")
            .await
            .expect("user")
            .map(|u| u.deactivated_at),
        Some(None)
    );
    assert_eq!(
        store
            .revoke_sessions(UserId(987_654))
            .await
            .expect("nobody"),
        None
    );
    assert_eq!(
        store
            .set_deactivated(UserId(987_654), None)
            .await
            .expect("nobody"),
        None
    );
}

/// Reports keep the reported text after a deletion, page newest first by
/// status, and resolve once.
pub async fn reports(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[bob.id]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let rude = send(store, lobby.id, bob.id, "something rude").await;
    let report = |n: i64, message: Option<&StoredMessage>| NewReport {
        reporter: alice.id,
        user: bob.id,
        message: message.map(|m| m.id),
        room: message.map(|m| m.room),
        reason: format!("reason {n}"),
        message_body: message.map(|m| m.body.clone()),
        created_at: at(n),
    };
    let first = store
        .create_report(report(1, Some(&rude)))
        .await
        .expect("report");
    let second = store.create_report(report(2, None)).await.expect("report");
    assert!(second > first);
    changed_as_read(
        store,
        change(
            rude.id,
            bob.id,
            ChangeOp::Delete,
            Authority::SenderOrModerator,
        ),
    )
    .await
    .expect("the sender deletes it");
    let kept = store.report(first).await.expect("report").expect("stored");
    assert_eq!(
        (
            kept.message_body.as_deref(),
            kept.message_deleted,
            kept.reason.as_str()
        ),
        (Some("something rude"), true, "reason 1")
    );
    assert_eq!(
        (kept.user, kept.message, kept.room),
        (bob.id, Some(rude.id), Some(lobby.id))
    );
    let ids = |r: Vec<ReportRecord>| r.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .reports(ReportStatus::Open, None, 10)
            .await
            .expect("open")),
        [second, first]
    );
    assert_eq!(
        ids(store
            .reports(ReportStatus::Open, Some(second), 10)
            .await
            .expect("page")),
        [first]
    );
    assert!(
        store
            .resolve_report(first, alice.id, "removed", at(3))
            .await
            .expect("resolve")
    );
    assert!(
        !store
            .resolve_report(first, alice.id, "again", at(4))
            .await
            .expect("once")
    );
    assert!(
        !store
            .resolve_report(987_654, alice.id, "none", at(4))
            .await
            .expect("none")
    );
    let resolved = store.report(first).await.expect("report").expect("stored");
    assert_eq!(
        (
            resolved.resolved_at,
            resolved.resolved_by,
            resolved.resolution.as_deref()
        ),
        (Some(at(3)), Some(alice.id), Some("removed"))
    );
    assert_eq!(
        ids(store
            .reports(ReportStatus::Open, None, 10)
            .await
            .expect("open")),
        [second]
    );
    assert_eq!(
        ids(store
            .reports(ReportStatus::Resolved, None, 10)
            .await
            .expect("done")),
        [first]
    );
    assert_eq!(
        ids(store
            .reports(ReportStatus::All, None, 1)
            .await
            .expect("all")),
        [second]
    );
    assert!(store.report(987_654).await.expect("none").is_none());
}

fn external(id: &str, username: &str, email: &str, name: Option<&str>) -> ExternalUser {
    ExternalUser {
        external_id: id.to_owned(),
        username: username.to_owned(),
        email: email.to_owned(),
        display_name: name.map(str::to_owned),
        created_at: at(3),
        bot: false,
    }
}

/// Users of the host's identity service: created once per external id,
/// renamed when the host's name changes, never given a password, and
/// without an email as often as need be.
pub async fn provision_external_users(store: Arc<dyn Storage>) {
    let store = &*store;
    let own = user(store, "alice").await;
    assert_eq!(own.external_id, None);

    let ann = store
        .provision_user(&external("host|1", "ann", "", Some("Ann")))
        .await
        .expect("provision");
    assert_eq!(
        (
            ann.username.as_str(),
            ann.display_name.as_str(),
            ann.email.as_str(),
            ann.password_hash.as_str(),
            ann.external_id.as_deref(),
            ann.created_at,
        ),
        ("ann", "Ann", "", "", Some("host|1"), at(3))
    );
    assert_eq!(store.user(ann.id).await.expect("read"), Some(ann.clone()));
    assert_eq!(
        store
            .user_by_external_id("host|1")
            .await
            .expect("by external id"),
        Some(ann.clone())
    );
    assert_eq!(
        store.user_by_external_id("host|9").await.expect("none"),
        None
    );

    // Seen again: the same user, whatever username or email comes along;
    // no name keeps theirs, a new one replaces it.
    let again = store
        .provision_user(&external("host|1", "other", "x@example.com", None))
        .await
        .expect("again");
    assert_eq!(again, ann);
    let renamed = store
        .provision_user(&external("host|1", "ann", "", Some("Ann B.")))
        .await
        .expect("rename");
    assert_eq!(
        (renamed.id, renamed.display_name.as_str()),
        (ann.id, "Ann B.")
    );
    assert_eq!(
        store
            .user(ann.id)
            .await
            .expect("read")
            .expect("ann")
            .display_name,
        "Ann B."
    );

    // Many users without an email; none found by the empty one.
    let bob = store
        .provision_user(&external("host|2", "bob", "", None))
        .await
        .expect("bob");
    assert_ne!(bob.id, ann.id);
    assert_eq!(
        bob.display_name, "bob",
        "the username when no name is given"
    );
    assert_eq!(store.user_by_email("").await.expect("lookup"), None);

    // A new user's username or email taken.
    assert!(matches!(
        store
            .provision_user(&external("host|3", "alice", "", None))
            .await,
        Err(StorageError::Conflict(Conflict::Username))
    ));
    assert!(matches!(
        store
            .provision_user(&external("host|3", "carol", "ALICE@example.com", None))
            .await,
        Err(StorageError::Conflict(Conflict::Email))
    ));
    let carol = store
        .provision_user(&external("host|3", "carol", "Carol@Example.com", None))
        .await
        .expect("carol");
    assert_eq!(carol.email, "carol@example.com");
    assert_eq!(
        store
            .user_by_email("carol@example.com")
            .await
            .expect("lookup")
            .map(|u| u.id),
        Some(carol.id)
    );
    // A bot is marked so; the mark is set once, at creation.
    let mut bot = external("bot:reminders", "reminders", "", Some("Reminders"));
    bot.bot = true;
    let reminders = store.provision_user(&bot).await.expect("bot");
    assert!(reminders.is_bot);
    assert!(!ann.is_bot);
    assert!(
        store
            .user(reminders.id)
            .await
            .expect("read")
            .expect("bot")
            .is_bot
    );
    // The own accounts' rule on email still holds against them.
    let mut taken = new_user("carol2");
    taken.email = "carol@example.com".into();
    assert!(matches!(
        store.create_user(taken).await,
        Err(StorageError::Conflict(Conflict::Email))
    ));
}

/// API keys: stored by hash, found only while live, names unique among the
/// live ones, revocation final.
pub async fn api_keys(store: Arc<dyn Storage>) {
    let store = &*store;
    let backend = store
        .create_api_key("backend", "hash-1", at(1))
        .await
        .expect("create");
    assert_eq!(
        (
            backend.name.as_str(),
            backend.created_at,
            backend.last_used_at,
            backend.revoked_at
        ),
        ("backend", at(1), None, None)
    );
    assert!(matches!(
        store.create_api_key("backend", "hash-2", at(2)).await,
        Err(StorageError::Conflict(Conflict::ApiKeyName))
    ));
    let bots = store
        .create_api_key("bots", "hash-2", at(2))
        .await
        .expect("second");
    assert_ne!(bots.id, backend.id);
    assert_eq!(
        store.api_key_by_hash("hash-1").await.expect("find"),
        Some(backend.clone())
    );
    assert_eq!(store.api_key_by_hash("hash-3").await.expect("find"), None);

    store.touch_api_key(backend.id, at(5)).await.expect("touch");
    let found = store
        .api_key_by_hash("hash-1")
        .await
        .expect("find")
        .expect("live");
    assert_eq!(found.last_used_at, Some(at(5)));

    assert!(
        store
            .revoke_api_key("backend", at(6))
            .await
            .expect("revoke")
    );
    assert!(!store.revoke_api_key("backend", at(7)).await.expect("again"));
    assert!(!store.revoke_api_key("nobody", at(7)).await.expect("none"));
    assert_eq!(store.api_key_by_hash("hash-1").await.expect("find"), None);
    // The name is free again; the old key stays revoked.
    let again = store
        .create_api_key("backend", "hash-4", at(8))
        .await
        .expect("name reused");
    assert_eq!(store.api_key_by_hash("hash-1").await.expect("find"), None);
    let all = store.api_keys().await.expect("list");
    assert_eq!(
        all.iter()
            .map(|k| (k.name.as_str(), k.revoked_at))
            .collect::<Vec<_>>(),
        vec![("backend", Some(at(6))), ("bots", None), ("backend", None)]
    );
    assert_eq!(all[2].id, again.id);
}

/// Webhook cursors: an endpoint starts at the present, rooms born later
/// from their first event; one lease holder at a time; the cursor moves
/// only forward and only for the holder; failures wait their turn.
pub async fn outbox_cursors(store: Arc<dyn Storage>) {
    let store = &*store;
    let ann = user(store, "ann").await;
    let old = room(store, "old", ann.id, &[]).await;
    send(store, old.id, ann.id, "before the endpoint").await;
    let url = "https://hooks.example/chat";
    assert!(store.outbox_start(url, at(1)).await.expect("start"));
    assert!(
        !store.outbox_start(url, at(2)).await.expect("again"),
        "known"
    );
    assert_eq!(
        store.outbox_backlog(url, at(3), 10).await.expect("backlog"),
        Vec::new(),
        "history before the endpoint is not owed"
    );

    let after_old = send(store, old.id, ann.id, "after").await;
    let young = room(store, "young", ann.id, &[]).await;
    send(store, young.id, ann.id, "born after").await;
    let backlog = store.outbox_backlog(url, at(3), 10).await.expect("backlog");
    let young_last = last_seq(store, young.id).await;
    assert_eq!(
        backlog,
        vec![
            OutboxBacklog {
                room: old.id,
                last_seq: after_old.seq,
                delivered: after_old.seq - 1
            },
            OutboxBacklog {
                room: young.id,
                last_seq: young_last,
                delivered: 0
            },
        ]
    );
    assert_eq!(
        store
            .outbox_backlog(url, at(3), 1)
            .await
            .expect("limit")
            .len(),
        1
    );
    assert_eq!(
        store
            .outbox_backlog("https://other.example/", at(3), 10)
            .await
            .expect("other")
            .len(),
        2,
        "an endpoint never started has no cursors: everything is owed"
    );

    // One holder at a time; its own lease renews; an expired one is free.
    let first = store
        .outbox_claim(url, young.id, "a", at(100), at(4))
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(
        (first.delivered, first.attempts, first.next_attempt_at),
        (0, 0, None)
    );
    assert_eq!(
        store
            .outbox_claim(url, young.id, "b", at(100), at(5))
            .await
            .expect("claim"),
        None,
        "held by a"
    );
    assert!(
        store
            .outbox_backlog(url, at(5), 10)
            .await
            .expect("backlog")
            .iter()
            .all(|b| b.room != young.id),
        "a held room is not offered"
    );
    assert!(
        store
            .outbox_claim(url, young.id, "a", at(200), at(6))
            .await
            .expect("renew")
            .is_some()
    );
    store
        .outbox_delivered(url, young.id, "b", young_last)
        .await
        .expect("not b's");
    store
        .outbox_delivered(url, young.id, "a", young_last)
        .await
        .expect("delivered");
    store
        .outbox_delivered(url, young.id, "a", 0)
        .await
        .expect("never back");
    let again = store
        .outbox_claim(url, young.id, "a", at(300), at(7))
        .await
        .expect("claim")
        .expect("ours");
    assert_eq!(again.delivered, young_last);
    store
        .outbox_release(url, young.id, "a")
        .await
        .expect("release");
    let taken = store
        .outbox_claim(url, young.id, "b", at(400), at(8))
        .await
        .expect("claim")
        .expect("released");
    assert_eq!(taken.delivered, young_last);
    assert!(
        store
            .outbox_claim(url, young.id, "c", at(500), at(401))
            .await
            .expect("claim")
            .is_some(),
        "an expired lease is free"
    );

    // A failure: attempts counted, the room offered again once due.
    store
        .outbox_claim(url, old.id, "a", at(1_000), at(10))
        .await
        .expect("claim")
        .expect("free");
    store
        .outbox_failed(url, old.id, "a", 1, at(50))
        .await
        .expect("failed");
    assert!(
        store
            .outbox_backlog(url, at(20), 10)
            .await
            .expect("backlog")
            .iter()
            .all(|b| b.room != old.id),
        "not due yet"
    );
    assert!(
        store
            .outbox_backlog(url, at(50), 10)
            .await
            .expect("backlog")
            .iter()
            .any(|b| b.room == old.id),
        "due"
    );
    let retry = store
        .outbox_claim(url, old.id, "b", at(1_000), at(51))
        .await
        .expect("claim")
        .expect("the failure released it");
    assert_eq!((retry.attempts, retry.next_attempt_at), (1, Some(at(50))));
    store
        .outbox_delivered(url, old.id, "b", after_old.seq)
        .await
        .expect("delivered");
    let done = store
        .outbox_claim(url, old.id, "b", at(1_000), at(52))
        .await
        .expect("claim")
        .expect("ours");
    assert_eq!(
        (done.delivered, done.attempts, done.next_attempt_at),
        (after_old.seq, 0, None)
    );

    // A deleted room leaves nothing owed, and cannot be claimed.
    assert!(store.delete_room(young.id).await.expect("delete"));
    assert_eq!(
        store
            .outbox_claim(url, young.id, "a", at(2_000), at(1_500))
            .await
            .expect("claim"),
        None
    );
}

/// Push devices: registered per user, moved with their token, listed per
/// user, unregistered by their owner only, forgotten when rejected.
pub async fn push_devices(store: Arc<dyn Storage>) {
    let store = &*store;
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let phone = store
        .register_device(ann.id, "fcm", "token-1", "com.example.chat", at(1))
        .await
        .expect("register");
    let tablet = store
        .register_device(ann.id, "apns", "token-2", "com.example.chat.ios", at(2))
        .await
        .expect("register");
    assert_ne!(phone.id, tablet.id);
    // The same token in another app is another device.
    let other_app = store
        .register_device(bob.id, "fcm", "token-1", "com.example.other", at(3))
        .await
        .expect("register");
    assert_ne!(other_app.id, phone.id);
    assert_eq!(
        store.devices(&[ann.id]).await.expect("devices"),
        vec![phone.clone(), tablet.clone()]
    );
    // The phone changes hands: same id, bob's now.
    let moved = store
        .register_device(bob.id, "fcm", "token-1", "com.example.chat", at(4))
        .await
        .expect("register");
    assert_eq!(
        (moved.id, moved.user, moved.created_at),
        (phone.id, bob.id, at(4))
    );
    assert_eq!(
        store.devices(&[ann.id]).await.expect("devices"),
        vec![tablet.clone()]
    );
    assert_eq!(
        store
            .devices(&[ann.id, bob.id])
            .await
            .expect("devices")
            .len(),
        3
    );
    assert_eq!(store.devices(&[]).await.expect("none"), Vec::new());

    assert!(
        !store
            .delete_device(ann.id, moved.id)
            .await
            .expect("not ann's")
    );
    assert!(store.delete_device(ann.id, tablet.id).await.expect("ann's"));
    assert!(!store.delete_device(ann.id, tablet.id).await.expect("gone"));
    assert!(
        store
            .delete_device_token("com.example.chat", "token-1")
            .await
            .expect("rejected")
    );
    assert!(
        !store
            .delete_device_token("com.example.chat", "token-1")
            .await
            .expect("again")
    );
    assert_eq!(
        store.devices(&[ann.id, bob.id]).await.expect("devices"),
        vec![other_app]
    );
}

// Attachments

fn upload(owner: UserId, name: &str, size: u64, micros: i64) -> NewAttachment {
    NewAttachment {
        owner,
        name: name.to_owned(),
        size,
        content_type: "application/octet-stream".to_owned(),
        dimensions: None,
        thumbnail: None,
        blob_key: format!("a/00/{name}"),
        created_at: at(micros),
    }
}

async fn uploaded(store: &dyn Storage, new: NewAttachment) -> AttachmentRecord {
    store
        .create_attachment(new)
        .await
        .expect("create attachment")
}

async fn attachment(store: &dyn Storage, id: AttachmentId) -> Option<AttachmentRecord> {
    store
        .attachments(&[id])
        .await
        .expect("attachments")
        .into_iter()
        .find(|a| a.attachment.id == id)
}

pub async fn attachments_recorded_with_usage(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let mut photo = upload(alice.id, "photo.jpg", 120_000, 10);
    photo.content_type = "image/jpeg".to_owned();
    photo.dimensions = Some((4000, 3000));
    photo.thumbnail = Some(chat_core::attachment::Thumbnail {
        width: 320,
        height: 240,
        content_type: "image/jpeg".to_owned(),
        size: 9_000,
    });
    let photo = uploaded(store, photo).await;
    let notes = uploaded(store, upload(alice.id, "notes.txt", 500, 20)).await;
    assert!(notes.attachment.id > photo.attachment.id, "ids increase");
    assert_eq!(photo.owner, alice.id);
    assert_eq!(photo.attachment.name, "photo.jpg");
    assert_eq!(photo.attachment.size, 120_000);
    assert_eq!(photo.attachment.content_type, "image/jpeg");
    assert_eq!(
        (photo.attachment.width, photo.attachment.height),
        (Some(4000), Some(3000))
    );
    assert_eq!(
        photo
            .attachment
            .thumbnail
            .as_ref()
            .map(|t| (t.width, t.height, t.size)),
        Some((320, 240, 9_000))
    );
    assert_eq!(photo.attachment.created_at, at(10));
    assert_eq!(photo.blob_key, "a/00/photo.jpg");
    assert_eq!(photo.sent, None);
    assert!(!photo.doomed);
    assert_eq!(notes.attachment.width, None);
    assert_eq!(notes.attachment.thumbnail, None);

    let read = attachment(store, photo.attachment.id).await;
    assert_eq!(read.as_ref(), Some(&photo), "read back as created");
    let found = store
        .attachments(&[
            notes.attachment.id,
            AttachmentId(999_999),
            photo.attachment.id,
        ])
        .await
        .expect("attachments");
    assert_eq!(found.len(), 2, "unknown ids are left out");

    assert_eq!(
        store.upload_usage(alice.id).await.expect("usage"),
        120_000 + 9_000 + 500,
        "files and thumbnails count"
    );
    assert_eq!(store.upload_usage(bob.id).await.expect("usage"), 0);
}

pub async fn attachments_linked_by_the_append(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    store.join_room(lobby.id, bob.id).await.expect("join");
    let one = uploaded(store, upload(alice.id, "one.bin", 10, 1)).await;
    let two = uploaded(store, upload(alice.id, "two.bin", 20, 2)).await;
    let bobs = uploaded(store, upload(bob.id, "bobs.bin", 30, 3)).await;

    // The single append.
    let sent = send_with(store, lobby.id, alice.id, "", |m| {
        m.attachments = vec![one.attachment.clone(), two.attachment.clone()];
    })
    .await;
    assert_eq!(
        sent.attachments,
        vec![one.attachment.clone(), two.attachment.clone()],
        "the message keeps them in order"
    );
    for a in [&one, &two] {
        let read = attachment(store, a.attachment.id).await.expect("exists");
        assert_eq!(read.sent, Some((lobby.id, sent.id)), "linked in the append");
    }
    let history = page(store, lobby.id, None, None, 10).await;
    assert_eq!(
        history.messages.last().map(|m| m.attachments.clone()),
        Some(vec![one.attachment.clone(), two.attachment.clone()]),
        "history shows them"
    );

    // A message naming an upload already sent, or someone else's, links
    // nothing (the service refuses both before; the row stays as it was).
    let again = send_with(store, lobby.id, alice.id, "again", |m| {
        m.attachments = vec![one.attachment.clone(), bobs.attachment.clone()];
    })
    .await;
    let read = attachment(store, one.attachment.id).await.expect("exists");
    assert_eq!(
        read.sent,
        Some((lobby.id, sent.id)),
        "still the first message's"
    );
    let read = attachment(store, bobs.attachment.id).await.expect("exists");
    assert_eq!(read.sent, None, "not alice's to send");
    assert_ne!(again.id, sent.id);

    // A batch (the committer's path), two senders.
    let three = uploaded(store, upload(alice.id, "three.bin", 1, 4)).await;
    let mut first = message(lobby.id, alice.id, "batch one", Some("b1"));
    first.attachments = vec![three.attachment.clone()];
    let mut second = message(lobby.id, bob.id, "batch two", Some("b2"));
    second.attachments = vec![bobs.attachment.clone()];
    let results = store.append_many(vec![first.clone(), second]).await;
    let ids: Vec<MessageId> = results
        .into_iter()
        .map(|r| r.expect("appended").message.id)
        .collect();
    assert_eq!(
        attachment(store, three.attachment.id)
            .await
            .and_then(|a| a.sent),
        Some((lobby.id, ids[0]))
    );
    assert_eq!(
        attachment(store, bobs.attachment.id)
            .await
            .and_then(|a| a.sent),
        Some((lobby.id, ids[1]))
    );
    // A repeat of the first answers the original, attachments and all.
    let repeat = store.append(first).await.expect("repeat");
    assert!(!repeat.created);
    assert_eq!(repeat.message.attachments, vec![three.attachment.clone()]);
}

pub async fn attachments_doomed_with_their_message_or_room(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    let other = room(store, "other", alice.id, &[]).await;
    let kept = uploaded(store, upload(alice.id, "kept.bin", 5, 1)).await;
    let gone = uploaded(store, upload(alice.id, "gone.bin", 7, 2)).await;
    let in_room = uploaded(store, upload(alice.id, "room.bin", 11, 3)).await;
    let keeper = send_with(store, lobby.id, alice.id, "keep", |m| {
        m.attachments = vec![kept.attachment.clone()];
    })
    .await;
    let doomed = send_with(store, lobby.id, alice.id, "delete me", |m| {
        m.attachments = vec![gone.attachment.clone()];
    })
    .await;
    send_with(store, other.id, alice.id, "in a room to delete", |m| {
        m.attachments = vec![in_room.attachment.clone()];
    })
    .await;
    assert!(
        store
            .doomed_attachments(10)
            .await
            .expect("doomed")
            .is_empty(),
        "nothing doomed yet"
    );

    let deleted = delete(store, doomed.id, alice.id).await.expect("delete");
    assert!(
        deleted.message.attachments.is_empty(),
        "a deleted message shows none"
    );
    let doomed_now = store.doomed_attachments(10).await.expect("doomed");
    assert_eq!(
        doomed_now
            .iter()
            .map(|a| a.attachment.id)
            .collect::<Vec<_>>(),
        vec![gone.attachment.id],
        "the deleted message's attachment, in its transaction"
    );
    assert!(doomed_now.iter().all(|a| a.doomed));
    assert_eq!(
        store.upload_usage(alice.id).await.expect("usage"),
        5 + 11,
        "a doomed attachment no longer counts"
    );

    assert!(store.delete_room(other.id).await.expect("delete room"));
    let mut doomed_ids: Vec<AttachmentId> = store
        .doomed_attachments(10)
        .await
        .expect("doomed")
        .iter()
        .map(|a| a.attachment.id)
        .collect();
    doomed_ids.sort_unstable();
    assert_eq!(doomed_ids, vec![gone.attachment.id, in_room.attachment.id]);
    assert_eq!(
        store.doomed_attachments(1).await.expect("doomed").len(),
        1,
        "limited"
    );

    store
        .forget_attachments(&[
            gone.attachment.id,
            in_room.attachment.id,
            kept.attachment.id,
        ])
        .await
        .expect("forget");
    assert!(
        store
            .doomed_attachments(10)
            .await
            .expect("doomed")
            .is_empty()
    );
    assert_eq!(
        attachment(store, gone.attachment.id).await,
        None,
        "forgotten"
    );
    assert!(
        attachment(store, kept.attachment.id).await.is_some(),
        "forgetting touches doomed rows only"
    );
    let history = page(store, lobby.id, None, None, 10).await;
    assert_eq!(
        history
            .messages
            .iter()
            .find(|m| m.id == keeper.id)
            .map(|m| m.attachments.len()),
        Some(1),
        "the other message keeps its attachment"
    );
}

pub async fn attachments_unsent_doomed_by_age_or_uploader(store: Arc<dyn Storage>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let lobby = room(store, "lobby", alice.id, &[]).await;
    let old = uploaded(store, upload(alice.id, "old.bin", 1, 100)).await;
    let young = uploaded(store, upload(alice.id, "young.bin", 1, 300)).await;
    let old_sent = uploaded(store, upload(alice.id, "old-sent.bin", 1, 50)).await;
    send_with(store, lobby.id, alice.id, "sent", |m| {
        m.attachments = vec![old_sent.attachment.clone()];
    })
    .await;

    assert_eq!(store.doom_unsent(at(200)).await.expect("doom unsent"), 1);
    let doomed: Vec<AttachmentId> = store
        .doomed_attachments(10)
        .await
        .expect("doomed")
        .iter()
        .map(|a| a.attachment.id)
        .collect();
    assert_eq!(doomed, vec![old.attachment.id], "only the old unsent one");
    assert_eq!(store.doom_unsent(at(200)).await.expect("again"), 0, "once");

    // The uploader deletes an unsent upload; nobody else can, nor a sent one.
    assert!(
        !store
            .doom_upload(bob.id, young.attachment.id)
            .await
            .expect("bob")
    );
    assert!(
        store
            .doom_upload(alice.id, young.attachment.id)
            .await
            .expect("alice")
    );
    assert!(
        !store
            .doom_upload(alice.id, young.attachment.id)
            .await
            .expect("twice"),
        "already doomed"
    );
    assert!(
        matches!(
            store.doom_upload(alice.id, old_sent.attachment.id).await,
            Err(StorageError::Conflict(Conflict::AttachmentSent))
        ),
        "a sent attachment goes with its message"
    );
    assert!(
        !store
            .doom_upload(alice.id, AttachmentId(999_999))
            .await
            .expect("unknown")
    );
    // A doomed upload is not linked by a message that names it.
    let late = send_with(store, lobby.id, alice.id, "late", |m| {
        m.attachments = vec![young.attachment.clone()];
    })
    .await;
    let read = attachment(store, young.attachment.id)
        .await
        .expect("still a row");
    assert_eq!(read.sent, None, "a doomed upload stays unsent");
    assert!(read.doomed);
    assert_ne!(late.id, MessageId(0));
}
