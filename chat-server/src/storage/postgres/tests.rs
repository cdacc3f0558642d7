//! The conformance suite and the PostgreSQL specifics, each test in a schema
//! of its own ([`TestSchema`]) on the machine's server.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::{RoomId, Seq, Timestamp, UserId};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::sync::Barrier;

use super::testing::{TestSchema, admin};
use super::{PostgresStorage, connect_options, is_unavailable, map_err};
use crate::storage::conformance::TestStore;
use crate::storage::{
    self, HistoryQuery, NewMessage, NewRoom, NewUser, Storage, StorageError, StorageOptions,
};

crate::storage_conformance_tests!(async {
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    TestStore::with_guard(store, schema)
});

fn pool_of(max_connections: u32) -> StorageOptions {
    StorageOptions { max_connections }
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.to_owned(),
        email: format!("{name}@example.com"),
        display_name: name.to_owned(),
        password_hash: "hash".to_owned(),
        created_at: Timestamp::from_unix_micros(1_770_000_000_000_000),
    }
}

async fn lobby(store: &dyn Storage, creator: UserId) -> RoomId {
    store
        .create_room(NewRoom {
            name: "lobby".to_owned(),
            kind: chat_core::room::RoomType::Public,
            creator,
            invited: Vec::new(),
            created_at: Timestamp::from_unix_micros(1_770_000_000_000_000),
        })
        .await
        .expect("room")
        .id
}

/// `writers` tasks, each appending `each` messages `"{tag}{w}:{i}"` in turn
/// through `store`; returns each writer's seqs in the order it got them.
fn spawn_writers(
    store: Arc<dyn Storage>,
    room: RoomId,
    sender: UserId,
    tag: &'static str,
    writers: usize,
    each: usize,
    start: Arc<Barrier>,
) -> Vec<tokio::task::JoinHandle<Vec<Seq>>> {
    (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let mut seqs = Vec::with_capacity(each);
                for i in 0..each {
                    let appended = store
                        .append(NewMessage {
                            room,
                            sender,
                            body: format!("{tag}{w}:{i}"),
                            client_id: Some(format!("{tag}{w}:{i}")),
                            created_at: Timestamp::from_unix_micros(1_770_000_000_000_000),
                            origin: None,
                            reply_to: None,
                            thread_root: None,
                            mentions: Vec::new(),
                            attachments: Vec::new(),
                        })
                        .await
                        .expect("append");
                    assert!(appended.created);
                    seqs.push(appended.message.seq);
                }
                seqs
            })
        })
        .collect()
}

/// Every message of `room` by paging history upward, as `(seq, body)`.
async fn whole_history(store: &dyn Storage, room: RoomId) -> Vec<(Seq, String)> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .history(
                room,
                HistoryQuery {
                    before: None,
                    after: Some(after),
                    limit: 200,
                },
            )
            .await
            .expect("history");
        all.extend(page.messages.iter().map(|m| (m.seq, m.body.clone())));
        after = page.messages.last().map_or(after, |m| m.seq);
        if !page.has_more {
            return all;
        }
    }
}

/// Checks what concurrent writers produced: seqs exactly
/// `first..first + total`, each writer's own in increasing order, and
/// history agreeing in seq order with every writer's messages in the order
/// it sent them. `first` is 1 plus the timeline events before the writers
/// (a join).
async fn assert_gap_free(
    store: &dyn Storage,
    room: RoomId,
    per_writer: Vec<(String, Vec<Seq>)>,
    each: usize,
    first: Seq,
) {
    let total = per_writer.len() * each;
    let mut all = Vec::with_capacity(total);
    for (writer, seqs) in &per_writer {
        assert_eq!(seqs.len(), each);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "writer {writer}: its messages got increasing seqs"
        );
        all.extend_from_slice(seqs);
    }
    all.sort_unstable();
    let last = first - 1 + Seq::try_from(total).expect("total");
    let expected: Vec<Seq> = (first..=last).collect();
    assert_eq!(
        all, expected,
        "seqs are {first}..={last}: no gap, no duplicate"
    );
    assert_eq!(
        store
            .room(room)
            .await
            .expect("room")
            .expect("exists")
            .last_seq,
        last
    );

    let history = whole_history(store, room).await;
    assert_eq!(
        history.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        expected,
        "history returns every message in seq order"
    );
    let bodies: HashSet<&str> = history.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies.len(), total, "every message stored once");
    for (writer, _) in &per_writer {
        let own: Vec<usize> = history
            .iter()
            .filter_map(|(_, b)| b.strip_prefix(&format!("{writer}:")))
            .map(|i| i.parse().expect("index"))
            .collect();
        assert_eq!(
            own,
            (0..each).collect::<Vec<_>>(),
            "writer {writer}: seq order is its sending order"
        );
    }
}

/// 50 writers on 50 connections of one pool, 40 messages each, all into
/// one room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_writers_on_one_room_get_gap_free_seqs() {
    const WRITERS: usize = 50;
    const EACH: usize = 40;
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &pool_of(50))
        .await
        .expect("connect");
    let store: Arc<dyn Storage> = Arc::new(store);
    let alice = store.create_user(new_user("alice")).await.expect("user").id;
    let room = lobby(&*store, alice).await;

    let start = Arc::new(Barrier::new(WRITERS));
    let tasks = spawn_writers(Arc::clone(&store), room, alice, "w", WRITERS, EACH, start);
    let mut per_writer = Vec::new();
    for (w, task) in tasks.into_iter().enumerate() {
        per_writer.push((format!("w{w}"), task.await.expect("writer")));
    }
    assert_gap_free(&*store, room, per_writer, EACH, 1).await;
    assert_eq!(
        store.unread_total(alice).await.expect("unread"),
        0,
        "the sender's mark followed its messages"
    );
}

/// Two stores with a pool each, as two server instances would have,
/// appending to one room at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_append_to_one_room_gap_free() {
    const WRITERS: usize = 16;
    const EACH: usize = 30;
    let schema = TestSchema::create().await;
    let first: Arc<dyn Storage> = Arc::new(
        PostgresStorage::connect(&schema.url(), &pool_of(16))
            .await
            .expect("connect"),
    );
    let second: Arc<dyn Storage> = Arc::new(
        PostgresStorage::connect(&schema.url(), &pool_of(16))
            .await
            .expect("connect"),
    );
    let alice = first.create_user(new_user("alice")).await.expect("user").id;
    let bob = first.create_user(new_user("bob")).await.expect("user").id;
    let room = lobby(&*first, alice).await;
    assert!(second.join_room(room, bob).await.expect("join"));

    let start = Arc::new(Barrier::new(2 * WRITERS));
    let a = spawn_writers(
        Arc::clone(&first),
        room,
        alice,
        "a",
        WRITERS,
        EACH,
        Arc::clone(&start),
    );
    let b = spawn_writers(Arc::clone(&second), room, bob, "b", WRITERS, EACH, start);
    let mut per_writer = Vec::new();
    for (tag, tasks) in [("a", a), ("b", b)] {
        for (w, task) in tasks.into_iter().enumerate() {
            per_writer.push((format!("{tag}{w}"), task.await.expect("writer")));
        }
    }
    // Bob's join took seq 1.
    assert_gap_free(&*second, room, per_writer, EACH, 2).await;
}

/// Several instances starting at once on a fresh schema: every connect
/// succeeds and each migration is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_connects_migrate_once() {
    const INSTANCES: usize = 8;
    let schema = TestSchema::create().await;
    let url = Arc::new(schema.url());
    let start = Arc::new(Barrier::new(INSTANCES));
    let tasks: Vec<_> = (0..INSTANCES)
        .map(|_| {
            let url = Arc::clone(&url);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                PostgresStorage::connect(&url, &pool_of(2)).await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.expect("task").expect("every connect succeeds"));
    }

    let mut conn = admin(&url).await;
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("migrations table");
    let expected: Vec<(i64, bool)> = super::MIGRATOR.iter().map(|m| (m.version, true)).collect();
    assert_eq!(
        expected.len(),
        11,
        "0001_init, 0002_direct_rooms, 0003_timeline, 0004_message_changes, 0005_search, \
         0006_replies_threads_mentions, 0007_moderation, 0008_embedding, 0009_outbox, \
         0010_push and 0011_attachments"
    );
    assert_eq!(applied, expected, "each migration recorded once");
    drop(conn);

    // Every instance sees the same, complete schema.
    let alice = stores[0]
        .create_user(new_user("alice"))
        .await
        .expect("user");
    let room = lobby(&stores[1], alice.id).await;
    let bob = stores[2].create_user(new_user("bob")).await.expect("user");
    let (direct, created) = stores[3]
        .direct_room(alice.id, bob.id, Timestamp::from_unix_micros(1))
        .await
        .expect("direct");
    assert!(created);
    assert_eq!(
        stores[INSTANCES - 1]
            .room(room)
            .await
            .expect("room")
            .map(|r| r.id),
        Some(room)
    );
    assert_eq!(
        stores[INSTANCES - 1]
            .find_direct_room(bob.id, alice.id)
            .await
            .expect("find")
            .map(|r| r.id),
        Some(direct.id)
    );

    // A later start applies nothing and still works.
    PostgresStorage::migrate(&url).await.expect("migrate again");
    storage::migrate(&url)
        .await
        .expect("migrate through dispatch");
    let again = storage::connect(&url, &pool_of(1))
        .await
        .expect("reconnect");
    assert_eq!(
        again.user(alice.id).await.expect("user"),
        Some(alice),
        "data kept"
    );
}

#[tokio::test]
async fn sslmode_in_the_url_selects_tls() {
    let modes = [
        ("", PgSslMode::Prefer),
        ("?sslmode=disable", PgSslMode::Disable),
        ("?sslmode=require", PgSslMode::Require),
        ("?sslmode=verify-ca", PgSslMode::VerifyCa),
        ("?sslmode=verify-full", PgSslMode::VerifyFull),
    ];
    for (query, mode) in modes {
        let url = format!("postgres://chat:secret@db.example.com:6432/chat{query}");
        let options = connect_options(&url).expect("parses");
        assert_eq!(
            format!("{:?}", options.get_ssl_mode()),
            format!("{mode:?}"),
            "{url}"
        );
        assert_eq!(options.get_host(), "db.example.com");
        assert_eq!(options.get_port(), 6432);
        assert_eq!(options.get_database(), Some("chat"));
        assert_eq!(options.get_application_name(), Some("chat-server"));
    }
    let options =
        connect_options("postgresql://h/d?sslmode=require&application_name=mine").expect("parses");
    assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
    assert_eq!(options.get_application_name(), Some("mine"), "the URL wins");

    let options = connect_options(
        "postgres://h/d?options=-c%20search_path%3Dchat_test_x&sslmode=verify-full&sslrootcert=/ca.pem",
    )
    .expect("parses");
    assert_eq!(
        options.get_options(),
        Some("-c search_path=chat_test_x -c jit=off"),
        "our default added to the URL's options"
    );
    assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
    let options = connect_options("postgres://h/d?options=-c%20jit%3Don").expect("parses");
    assert_eq!(
        options.get_options(),
        Some("-c jit=on"),
        "the URL's choice kept"
    );
    assert!(PgConnectOptions::from_str("postgres://h/d?sslmode=sometimes").is_err());
    let err = PostgresStorage::migrate("postgres://h/d?sslmode=sometimes")
        .await
        .expect_err("bad sslmode");
    assert!(matches!(err, StorageError::Backend(_)), "got {err:?}");
}

/// Debian's PostgreSQL listens with TLS on (a self-signed "snakeoil"
/// certificate), so `sslmode=require` is tested for real: the session is
/// encrypted, through rustls. `verify-full` must refuse that certificate,
/// which no trusted CA signed.
#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    let schema = TestSchema::create().await;
    let mut conn = admin(&schema.url()).await;
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut conn)
        .await
        .expect("show ssl");
    assert_eq!(
        ssl, "on",
        "the test server has ssl=off; Debian's default is on (ssl_cert_file = snakeoil), \
         which this test relies on"
    );
    drop(conn);

    let url = format!("{}&sslmode=require", schema.url());
    let store = PostgresStorage::connect(&url, &pool_of(1))
        .await
        .expect("connect with sslmode=require");
    let (ssl, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.write)
            .await
            .expect("pg_stat_ssl");
    assert!(ssl, "the session is encrypted");
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("TLS")),
        "{version:?}"
    );

    let url = format!("{}&sslmode=verify-full", schema.url());
    let err = PostgresStorage::connect(&url, &pool_of(1))
        .await
        .expect_err("a self-signed certificate is not trusted");
    assert!(
        matches!(err, StorageError::Backend(_)),
        "a TLS failure is configuration, not an outage: {err:?}"
    );
}

#[tokio::test]
async fn dead_database_is_unavailable_quickly() {
    // Nothing listens on port 1: every attempt is refused, and the pool
    // retries until its acquire timeout.
    let started = Instant::now();
    let err = PostgresStorage::connect("postgres://postgres@127.0.0.1:1/test", &pool_of(2))
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    assert!(
        matches!(err, StorageError::Unavailable(_)),
        "got {err:?} after {took:?}"
    );
    assert!(
        took < super::ACQUIRE_TIMEOUT + Duration::from_secs(3),
        "took {took:?}"
    );
}

/// A restart or failover kills every session; the pool notices on the next
/// acquire and reconnects, without a restart of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_after_its_sessions_are_killed() {
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &pool_of(4))
        .await
        .expect("connect");
    let alice = store.create_user(new_user("alice")).await.expect("user");
    // Several sessions open at once, so that the pool holds more than one.
    let (a, b, c) = tokio::join!(store.ping(), store.ping(), store.ping());
    for result in [a, b, c] {
        result.expect("ping");
    }

    let mut conn = admin(&schema.url()).await;
    // Our own admin session has the schema's application name too.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(schema.name())
    .fetch_all(&mut conn)
    .await
    .expect("terminate");
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k),
        "{killed:?}"
    );
    drop(conn);

    assert_eq!(
        store.user(alice.id).await.expect("the pool reconnects"),
        Some(alice)
    );
    store.ping().await.expect("ping");
}

#[tokio::test]
async fn errors_map_to_the_contract() {
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &pool_of(2))
        .await
        .expect("connect");

    // A session killed under a query: 57P01 (or the socket closing first).
    let err = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&store.write)
        .await
        .map_err(map_err)
        .expect_err("the session ends");
    assert!(matches!(err, StorageError::Unavailable(_)), "got {err:?}");

    // A connection cut during its startup (the server vanishing, or a
    // proxy in between) surfaces as a protocol error: still "unavailable".
    let err = map_err(sqlx::Error::Protocol(
        "unexpected response from SSLRequest: 0x00".into(),
    ));
    assert!(matches!(err, StorageError::Unavailable(_)), "got {err:?}");

    let err = sqlx::query("SELECT * FROM no_such_table")
        .execute(&store.write)
        .await
        .map_err(map_err)
        .expect_err("no table");
    assert!(matches!(err, StorageError::Backend(_)), "got {err:?}");

    let alice = store.create_user(new_user("alice")).await.expect("user");
    let mut twin = new_user("alice");
    twin.email = "other@example.com".to_owned();
    let err = store.create_user(twin).await.expect_err("taken");
    assert!(
        matches!(err, StorageError::Conflict(storage::Conflict::Username)),
        "{err:?}"
    );
    // A unique rule the API has no conflict for stays `Backend`.
    let token = storage::RefreshTokenRecord {
        id: "t-1".to_owned(),
        user: alice.id,
        family: "f".to_owned(),
        expires_at: Timestamp::from_unix_micros(1),
    };
    store
        .insert_refresh_token(token.clone())
        .await
        .expect("token");
    let err = store
        .insert_refresh_token(token)
        .await
        .expect_err("reused id");
    assert!(matches!(err, StorageError::Backend(_)), "{err:?}");
}

#[test]
fn unavailable_sqlstates() {
    for code in [
        "08000", "08001", "08006", "08P01", "57P01", "57P02", "57P03",
    ] {
        assert!(is_unavailable(code), "{code}");
    }
    for code in ["53000", "53100", "53200", "53300", "53400"] {
        assert!(is_unavailable(code), "{code}");
    }
    // Unique, foreign key, syntax, serialization, query canceled.
    for code in ["23505", "23503", "42601", "40001", "57014", "57000"] {
        assert!(!is_unavailable(code), "{code}");
    }
}

/// Concurrent `mark_read`s of one member: exactly one reports each step
/// forward, and the mark never goes back. Without the row lock of
/// `sql::PG_MEMBER_READ_MARK`, several reported the same step in the first
/// rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mark_read_reports_each_advance_once() {
    let schema = TestSchema::create().await;
    let store: Arc<dyn Storage> = Arc::new(
        PostgresStorage::connect(&schema.url(), &pool_of(16))
            .await
            .expect("connect"),
    );
    let alice = store.create_user(new_user("alice")).await.expect("user").id;
    let bob = store.create_user(new_user("bob")).await.expect("user").id;
    let room = lobby(&*store, alice).await;
    assert!(store.join_room(room, bob).await.expect("join"));
    for i in 0..20 {
        store
            .append(NewMessage {
                room,
                sender: alice,
                body: format!("m{i}"),
                client_id: None,
                created_at: Timestamp::from_unix_micros(1),
                origin: None,
                reply_to: None,
                thread_root: None,
                mentions: Vec::new(),
                attachments: Vec::new(),
            })
            .await
            .expect("append");
    }

    for round in 0..10 {
        let target: Seq = 2 * (round + 1);
        let start = Arc::new(Barrier::new(12));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let store = Arc::clone(&store);
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    store.mark_read(room, bob, target).await.expect("mark")
                })
            })
            .collect();
        let mut advanced = 0;
        for task in tasks {
            let mark = task.await.expect("task");
            assert_eq!(mark.current, target, "round {round}: {mark:?}");
            if mark.advanced() {
                advanced += 1;
                assert_eq!(mark.previous, target - 2, "round {round}");
            }
        }
        assert_eq!(advanced, 1, "round {round}: one call moved the mark");
    }
}

/// Concurrent joins get distinct positions and marks no higher than the
/// last seq. Without `sql::PG_LOCK_ROOM` they shared positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_get_distinct_positions() {
    const JOINERS: usize = 12;
    let schema = TestSchema::create().await;
    let store: Arc<dyn Storage> = Arc::new(
        PostgresStorage::connect(&schema.url(), &pool_of(JOINERS as u32))
            .await
            .expect("connect"),
    );
    let alice = store.create_user(new_user("alice")).await.expect("user").id;
    let room = lobby(&*store, alice).await;
    let mut joiners = Vec::new();
    for i in 0..JOINERS {
        joiners.push(
            store
                .create_user(new_user(&format!("u{i}")))
                .await
                .expect("user")
                .id,
        );
    }
    let start = Arc::new(Barrier::new(JOINERS + 1));
    let mut tasks: Vec<_> = joiners
        .iter()
        .map(|&user| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                assert!(store.join_room(room, user).await.expect("join"));
            })
        })
        .collect();
    // An append racing the joins: whoever joins after it starts at seq 1.
    let appender = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            start.wait().await;
            store
                .append(NewMessage {
                    room,
                    sender: alice,
                    body: "hi".to_owned(),
                    client_id: None,
                    created_at: Timestamp::from_unix_micros(1),
                    origin: None,
                    reply_to: None,
                    thread_root: None,
                    mentions: Vec::new(),
                    attachments: Vec::new(),
                })
                .await
                .expect("append");
        })
    };
    tasks.push(appender);
    for task in tasks {
        task.await.expect("task");
    }

    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM room_members WHERE room_id = $1 ORDER BY position",
    )
    .bind(room.get())
    .fetch_all(&admin_pool(&schema).await)
    .await
    .expect("positions");
    let expected: Vec<i64> = (1..=i64::try_from(JOINERS + 1).expect("count")).collect();
    assert_eq!(positions, expected, "one position each, no tie, no hole");
    let people = store.room_people(room).await.expect("people");
    assert_eq!(people.len(), JOINERS + 1);
    // Each join took the next seq, and each joiner's mark is the seq just
    // before its own join: the last committed event when it joined.
    let joins: HashMap<UserId, Seq> = store
        .timeline(
            room,
            HistoryQuery {
                before: None,
                after: Some(0),
                limit: 200,
            },
        )
        .await
        .expect("timeline")
        .events
        .iter()
        .filter_map(|e| match e {
            crate::storage::StoredEvent::Member(m) => Some((m.user, m.seq)),
            crate::storage::StoredEvent::Message(_)
            | crate::storage::StoredEvent::Update(_)
            | crate::storage::StoredEvent::Room(_) => None,
        })
        .collect();
    assert_eq!(joins.len(), JOINERS);
    for p in people.iter().filter(|p| p.user != alice) {
        assert_eq!(
            Some(p.read_seq + 1),
            joins.get(&p.user).copied(),
            "nobody starts past the last event before its join: {people:?}"
        );
    }
    assert_eq!(
        store.unread_total(alice).await.expect("unread"),
        0,
        "the sender read its own"
    );
}

async fn admin_pool(schema: &TestSchema) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&schema.url())
        .await
        .expect("admin pool")
}

/// Many rounds of a pair's conversation created from both sides at once.
/// Without `PG_LOCK_DIRECT_PAIR` some calls failed with
/// `Conflict(RoomName)` within a few dozen rounds (both inserts passed the
/// pair index's check, then met on the name); see `sql::INSERT_DIRECT_ROOM`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_room_races_never_fail() {
    const ROUNDS: usize = 100;
    const CALLERS: usize = 12;
    let schema = TestSchema::create().await;
    let store: Arc<dyn Storage> = Arc::new(
        PostgresStorage::connect(&schema.url(), &pool_of(CALLERS as u32))
            .await
            .expect("connect"),
    );
    for round in 0..ROUNDS {
        let a = store
            .create_user(new_user(&format!("a{round}")))
            .await
            .expect("user")
            .id;
        let b = store
            .create_user(new_user(&format!("b{round}")))
            .await
            .expect("user")
            .id;
        let start = Arc::new(Barrier::new(CALLERS));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|i| {
                let store = Arc::clone(&store);
                let start = Arc::clone(&start);
                let (x, y) = if i % 2 == 0 { (a, b) } else { (b, a) };
                tokio::spawn(async move {
                    start.wait().await;
                    store
                        .direct_room(x, y, Timestamp::from_unix_micros(1))
                        .await
                })
            })
            .collect();
        let mut rooms = HashSet::new();
        let mut created = 0;
        for task in tasks {
            let (room, new) = task
                .await
                .expect("task")
                .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            rooms.insert(room.id);
            created += usize::from(new);
        }
        assert_eq!((created, rooms.len()), (1, 1), "round {round}");
    }
}

fn batch_message(room: RoomId, sender: UserId, body: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        room,
        sender,
        body: body.to_owned(),
        client_id: client_id.map(str::to_owned),
        created_at: Timestamp::from_unix_micros(1_770_000_000_000_000),
        origin: None,
        reply_to: None,
        thread_root: None,
        mentions: Vec::new(),
        attachments: Vec::new(),
    }
}

/// The batch statement on its own: seqs per room in arrival order after
/// what is there, the sender's mark, a deleted room answered alone, and the
/// rows handed back as history has them.
#[tokio::test]
async fn one_batch_numbers_each_room_in_arrival_order() {
    use crate::storage::group_commit::{BatchAppend as _, Stored};
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let alice = store.create_user(new_user("alice")).await.expect("user").id;
    let bob = store.create_user(new_user("bob")).await.expect("user").id;
    let one = lobby(&store, alice).await;
    let two = store
        .create_room(NewRoom {
            name: "two".to_owned(),
            kind: chat_core::room::RoomType::Public,
            creator: bob,
            invited: vec![],
            created_at: Timestamp::from_unix_micros(1_770_000_000_000_000),
        })
        .await
        .expect("room")
        .id;
    store
        .append(batch_message(one, alice, "before", None))
        .await
        .expect("append");
    let gone = store
        .create_room(NewRoom {
            name: "gone".to_owned(),
            kind: chat_core::room::RoomType::Public,
            creator: alice,
            invited: vec![],
            created_at: Timestamp::from_unix_micros(1_770_000_000_000_000),
        })
        .await
        .expect("room")
        .id;
    store.delete_room(gone).await.expect("delete");

    let appender =
        super::batch::PgAppender::new(super::connect_options(&schema.url()).expect("options"));
    let batch = [
        batch_message(one, alice, "a1", Some("k-a1")),
        batch_message(two, bob, "b1", None),
        batch_message(gone, alice, "lost", None),
        batch_message(one, alice, "a2", None),
        batch_message(two, bob, "b2", Some("k-b2")),
    ];
    let refs: Vec<&NewMessage> = batch.iter().collect();
    let results = appender.store_batch(&refs).await.expect("batch");
    let seqs: Vec<Option<(RoomId, Seq)>> = results
        .iter()
        .map(|r| match r {
            Stored::New(m) => Some((m.room, m.seq)),
            _ => None,
        })
        .collect();
    assert_eq!(
        seqs,
        vec![
            Some((one, 2)),
            Some((two, 1)),
            None,
            Some((one, 3)),
            Some((two, 2))
        ]
    );
    assert!(matches!(results[2], Stored::NoRoom));
    for (sent, result) in batch.iter().zip(&results) {
        if let Stored::New(m) = result {
            assert_eq!(m.body, sent.body);
            assert_eq!(m.client_id, sent.client_id);
            assert_eq!(
                m.sender_name,
                if sent.sender == alice { "alice" } else { "bob" }
            );
        }
    }
    let history = whole_history(&store, one).await;
    assert_eq!(
        history,
        vec![
            (1, "before".to_owned()),
            (2, "a1".to_owned()),
            (3, "a2".to_owned())
        ]
    );
    let marks = store.read_marks(one).await.expect("marks");
    assert!(
        marks.contains(&(alice, 3)),
        "the sender's mark moved to its newest message: {marks:?}"
    );
    assert_eq!(
        store.room(two).await.expect("room").expect("two").last_seq,
        2
    );
}

/// A batch holding a pair stored before fails whole on PostgreSQL, and
/// storage answers the repeat with its original all the same: group commit
/// then appends the messages one by one.
#[tokio::test]
async fn a_stored_repeat_fails_the_batch_and_is_answered_one_by_one() {
    use crate::storage::group_commit::BatchAppend as _;
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let alice = store.create_user(new_user("alice")).await.expect("user").id;
    let one = lobby(&store, alice).await;
    store
        .append(batch_message(one, alice, "first", Some("k-1")))
        .await
        .expect("append");
    let appender =
        super::batch::PgAppender::new(super::connect_options(&schema.url()).expect("options"));
    let batch = [
        batch_message(one, alice, "new", Some("k-2")),
        batch_message(one, alice, "first again", Some("k-1")),
        batch_message(one, alice, "newer", None),
    ];
    let refs: Vec<&NewMessage> = batch.iter().collect();
    appender
        .store_batch(&refs)
        .await
        .expect_err("the stored pair fails the statement");
    assert_eq!(
        whole_history(&store, one).await,
        vec![(1, "first".to_owned())],
        "nothing of the batch was stored"
    );
    let answers = store.append_many(batch.to_vec()).await;
    let answered: Vec<(bool, Seq, String)> = answers
        .into_iter()
        .map(|r| {
            let a = r.expect("appended");
            (a.created, a.message.seq, a.message.body)
        })
        .collect();
    assert_eq!(
        answered,
        vec![
            (true, 2, "new".to_owned()),
            (false, 1, "first".to_owned()),
            (true, 3, "newer".to_owned())
        ]
    );
}

/// Two committers (two instances, a connection each) batching into the same
/// rooms, listed in opposite orders, at once: no batch fails (a deadlock
/// would abort one), a room the other moved meanwhile is retried, and every
/// room is numbered without gap. (Here the
/// plan's own `UPDATE` order happens to agree between the two as well; the
/// `locked` CTE is what makes id order a guarantee rather than a plan.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_same_rooms_from_two_connections_never_deadlock() {
    use crate::storage::group_commit::{BatchAppend as _, Stored};
    const ROUNDS: usize = 40;
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let alice = store.create_user(new_user("alice")).await.expect("user").id;
    let mut rooms = Vec::new();
    for name in ["r1", "r2", "r3", "r4"] {
        let room = store
            .create_room(NewRoom {
                name: name.to_owned(),
                kind: chat_core::room::RoomType::Public,
                creator: alice,
                invited: Vec::new(),
                created_at: Timestamp::from_unix_micros(1_770_000_000_000_000),
            })
            .await
            .expect("room");
        rooms.push(room.id);
    }
    let run = |order: Vec<RoomId>| {
        let options = super::connect_options(&schema.url()).expect("options");
        tokio::spawn(async move {
            let appender = super::batch::PgAppender::new(options);
            for round in 0..ROUNDS {
                let batch: Vec<NewMessage> = order
                    .iter()
                    .map(|room| batch_message(*room, alice, &round.to_string(), None))
                    .collect();
                // A room the other committer moved meanwhile answers
                // `Retry`, and goes again, as group commit does.
                let mut pending: Vec<&NewMessage> = batch.iter().collect();
                for _ in 0..100 {
                    if pending.is_empty() {
                        break;
                    }
                    let results = appender.store_batch(&pending).await.expect("no deadlock");
                    assert!(
                        results
                            .iter()
                            .all(|r| matches!(r, Stored::New(_) | Stored::Retry)),
                        "{results:?}"
                    );
                    pending = pending
                        .into_iter()
                        .zip(&results)
                        .filter(|(_, r)| matches!(r, Stored::Retry))
                        .map(|(m, _)| m)
                        .collect();
                }
                assert!(pending.is_empty(), "still retrying after 100 statements");
            }
        })
    };
    let backward: Vec<RoomId> = rooms.iter().rev().copied().collect();
    let (a, b) = tokio::join!(run(rooms.clone()), run(backward));
    a.expect("forward");
    b.expect("backward");
    for room in rooms {
        let seqs: Vec<Seq> = whole_history(&store, room)
            .await
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(seqs, (1..=2 * ROUNDS as Seq).collect::<Vec<_>>());
    }
}

/// A leave committed by another instance while this instance's batch waits
/// for the room's lock: the batch's snapshot still has the leaver as a
/// member, so without `stable` (the room's `last_seq` as locked against the
/// snapshot's) the message was stored after the leave. Now the room's
/// messages are retried in a new statement, which refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_racing_a_leave_on_another_instance_is_refused() {
    let schema = TestSchema::create().await;
    let store: Arc<dyn Storage> = Arc::new(
        PostgresStorage::connect(&schema.url(), &pool_of(4))
            .await
            .expect("connect"),
    );
    let alice = store.create_user(new_user("alice")).await.expect("user").id;
    let bob = store.create_user(new_user("bob")).await.expect("user").id;
    let room = lobby(&*store, alice).await;
    assert!(store.join_room(room, bob).await.expect("join"));

    // The other instance's leave, as `change_membership` makes it: the room
    // locked first, the member row gone, the room's timeline moved.
    let other = admin_pool(&schema).await;
    let mut leave = other.begin().await.expect("begin");
    sqlx::query("SELECT id FROM rooms WHERE id = $1 FOR NO KEY UPDATE")
        .bind(room.get())
        .execute(&mut *leave)
        .await
        .expect("lock");
    sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
        .bind(room.get())
        .bind(bob.get())
        .execute(&mut *leave)
        .await
        .expect("leave");
    sqlx::query("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1")
        .bind(room.get())
        .execute(&mut *leave)
        .await
        .expect("move the timeline");

    let send = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append(NewMessage {
                    room,
                    sender: bob,
                    body: "after I left".to_owned(),
                    client_id: None,
                    created_at: Timestamp::from_unix_micros(1_770_000_000_000_001),
                    origin: None,
                    reply_to: None,
                    thread_root: None,
                    mentions: Vec::new(),
                    attachments: Vec::new(),
                })
                .await
        })
    };
    // The batch has its snapshot and waits for the room's lock.
    let watch = admin_pool(&schema).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE 'WITH locked%'",
        )
        .fetch_one(&watch)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the batch never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    leave.commit().await.expect("commit the leave");

    let refused = send.await.expect("task");
    assert!(
        matches!(refused, Err(StorageError::NotMember { state: None, .. })),
        "got {refused:?}"
    );
    let history = whole_history(&*store, room).await;
    assert!(history.is_empty(), "nothing stored: {history:?}");
}
