//! Unread counts and history at scale come from indexes, on PostgreSQL.
//!
//! As `storage/sqlite/scale_tests.rs`, in a schema of its own: the reader
//! is a member of 10,000 rooms with a sender, room 1 holding 1,000,000
//! messages and rooms 2..=10,000 three each. Unlike the SQLite test, the
//! other 10,000 rooms have 20 members each, drawn from 200 more users, so
//! that the reader owns about 4% of `room_members` as a real user would own
//! far less, not a third of it: the planner picks an index by how selective
//! it is, and a table where one user is a third of the rows rightly gets
//! scanned. Everything is loaded by `INSERT … SELECT generate_series(…)`
//! and `ANALYZE`d, as autovacuum would have by then.
//!
//! It checks the answers through the [`Storage`] trait, then the plans of
//! the exact SQL constants (`EXPLAIN (ANALYZE, FORMAT JSON)`), both the
//! custom plan made for the bound values and the generic plan a prepared
//! statement may switch to after a few executions, and prints `EXPLAIN (ANALYZE,
//! BUFFERS)` of the main ones (`cargo test … pg_unread_and_history_at_scale
//! -- --nocapture`). The load takes about 10 s on the 2-core machine it was
//! written on; the work is the server's, so a debug build does not slow it.

use std::time::Instant;

use chat_core::{RoomId, Seq, Timestamp, UserId};
use serde_json::Value;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row};

use super::PostgresStorage;
use super::testing::TestSchema;
use crate::storage::sql::statements as sql;
use crate::storage::{HistoryPage, HistoryQuery, NewUser, SearchRequest, Storage, StorageOptions};

/// Rooms the reader is a member of; room 1 is the big one. As many again
/// belong to the filler users.
const ROOMS: i64 = 10_000;
/// Messages in room 1.
const BIG: Seq = 1_000_000;
/// The reader's mark in room 1.
const BIG_READ: Seq = 900_000;
/// Messages in each of rooms 2..=ROOMS.
const SMALL: Seq = 3;
/// Users who fill rooms ROOMS+1..=2×ROOMS, and members per such room.
const FILLERS: i64 = 200;
const PER_FILLER_ROOM: i64 = 20;
const BASE: i64 = 1_770_000_000_000_000;

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.to_owned(),
        email: format!("{name}@example.com"),
        display_name: format!("{name} display"),
        password_hash: "hash".to_owned(),
        created_at: Timestamp::from_unix_micros(BASE),
    }
}

/// The reader's mark in small room `i`, cycling through 0..=3 so that every
/// unread count from 3 down to 0 occurs.
fn small_read(i: i64) -> Seq {
    i % 4
}

async fn run(conn: &mut PgConnection, what: &str, query: &str, binds: &[i64]) {
    let mut q = sqlx::query(AssertSqlSafe(query.to_owned()));
    for value in binds {
        q = q.bind(*value);
    }
    let started = Instant::now();
    q.execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!("{what}: {:?}", started.elapsed());
}

/// Fills the schema with one statement per table. The rows keep the storage
/// invariants by construction: seqs 1..=last_seq with no gap,
/// `last_message_at` the last message's time, the sender's mark at
/// `last_seq`. Small room `i`'s messages are later than room 1's and grow
/// with `i`, so the activity order is rooms 10,000 down to 1. Room ids are
/// given explicitly (`OVERRIDING SYSTEM VALUE`), then the identity moved
/// past them.
async fn fill(conn: &mut PgConnection, reader: UserId, sender: UserId, bystander: UserId) {
    run(
        conn,
        "filler users",
        "INSERT INTO users (username, email, display_name, password_hash, created_at) \
         SELECT 'filler-' || i, 'filler-' || i || '@example.com', 'Filler ' || i, 'hash', $2 \
         FROM generate_series(1, $1) AS i",
        &[FILLERS, BASE],
    )
    .await;

    run(
        conn,
        "rooms",
        "INSERT INTO rooms (id, name, kind, creator_id, owner_id, created_at, last_seq, \
             msg_count, last_message_seq, last_message_at) \
         OVERRIDING SYSTEM VALUE \
         SELECT i, 'room-' || i, 'private', CASE WHEN i <= $1 THEN $2 ELSE $3 END, \
             CASE WHEN i <= $1 THEN $2 ELSE $3 END, $4, \
             CASE WHEN i = 1 THEN $5 WHEN i <= $1 THEN $6 ELSE 0 END, \
             CASE WHEN i = 1 THEN $5 WHEN i <= $1 THEN $6 ELSE 0 END, \
             CASE WHEN i = 1 THEN $5 WHEN i <= $1 THEN $6 ELSE 0 END, \
             CASE WHEN i = 1 THEN $4 + $5 \
                  WHEN i <= $1 THEN $4 + 10000000 + i * 10 + $6 END \
         FROM generate_series(1, 2 * $1) AS i",
        &[ROOMS, sender.get(), bystander.get(), BASE, BIG, SMALL],
    )
    .await;
    run(
        conn,
        "rooms identity",
        "SELECT setval(pg_get_serial_sequence('rooms', 'id'), 2 * $1)",
        &[ROOMS],
    )
    .await;

    // Filler k of room i is user `first + (i + k) % FILLERS`: 20 different
    // users per room, each in about 1,000 rooms.
    run(
        conn,
        "members",
        "INSERT INTO room_members (room_id, user_id, state, read_seq, read_no, position) \
         SELECT i, $2, 'member', CASE WHEN i = 1 THEN $3 ELSE i % 4 END, \
             CASE WHEN i = 1 THEN $3 ELSE i % 4 END, 2 \
             FROM generate_series(1, $1) AS i \
         UNION ALL SELECT i, $4, 'member', CASE WHEN i = 1 THEN $5 ELSE $6 END, \
             CASE WHEN i = 1 THEN $5 ELSE $6 END, 1 \
             FROM generate_series(1, $1) AS i \
         UNION ALL SELECT i, $7, 'member', 0, 0, 1 FROM generate_series($1 + 1, 2 * $1) AS i \
         UNION ALL SELECT i, u.first + (i + k) % $8, 'member', 0, 0, k + 2 \
             FROM generate_series($1 + 1, 2 * $1) AS i, generate_series(0, $9 - 1) AS k, \
                 (SELECT MIN(id) AS first FROM users WHERE username LIKE 'filler-%') AS u",
        &[
            ROOMS,
            reader.get(),
            BIG_READ,
            sender.get(),
            BIG,
            SMALL,
            bystander.get(),
            FILLERS,
            PER_FILLER_ROOM,
        ],
    )
    .await;

    run(
        conn,
        "small rooms' messages",
        "INSERT INTO messages (room_id, seq, msg_no, sender_id, body, created_at) \
         SELECT r, s, s, $1, 'room ' || r || ' message ' || s, $2 + 10000000 + r * 10 + s \
         FROM generate_series(2, $4) AS r, generate_series(1, $3) AS s",
        &[sender.get(), BASE, SMALL, ROOMS],
    )
    .await;
    run(
        conn,
        "the big room's messages",
        "INSERT INTO messages (room_id, seq, msg_no, sender_id, body, created_at) \
         SELECT 1, i, i, $1, 'big ' || i, $2 + i FROM generate_series(1, $3) AS i",
        &[sender.get(), BASE, BIG],
    )
    .await;
    // Only this schema's tables (a bare ANALYZE would do the whole
    // database, other tests' schemas included).
    run(
        conn,
        "analyze",
        "ANALYZE users, rooms, room_members, messages",
        &[],
    )
    .await;
}

/// One node of a JSON plan, flattened: what it does and to which relation,
/// through which index, and how many rows it produced over all its loops.
#[derive(Debug)]
struct Node {
    kind: String,
    relation: Option<String>,
    alias: Option<String>,
    index: Option<String>,
    rows: f64,
    /// 0 for a node never executed.
    loops: f64,
}

fn flatten(plan: &Value, out: &mut Vec<Node>) {
    let text = |key: &str| plan.get(key).and_then(Value::as_str).map(str::to_owned);
    let number = |key: &str| plan.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    out.push(Node {
        kind: text("Node Type").unwrap_or_default(),
        relation: text("Relation Name"),
        alias: text("Alias"),
        index: text("Index Name"),
        rows: number("Actual Rows") * number("Actual Loops"),
        loops: number("Actual Loops"),
    });
    for child in plan
        .get("Plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        flatten(child, out);
    }
}

fn nodes_of(json: &str) -> Vec<Node> {
    let value: Value = serde_json::from_str(json).expect("plan JSON");
    let root = value
        .get(0)
        .and_then(|p| p.get("Plan"))
        .expect("a plan at the root");
    let mut nodes = Vec::new();
    flatten(root, &mut nodes);
    nodes
}

/// The custom plan of `query` with `binds`, as PostgreSQL makes it for
/// the values a statement is executed with, run (`ANALYZE`) to count the
/// rows each node really produced.
async fn custom_plan(conn: &mut PgConnection, query: &str, binds: &[i64]) -> Vec<Node> {
    let mut explain = sqlx::query(AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {query}"
    )));
    for value in binds {
        explain = explain.bind(*value);
    }
    let row = explain.fetch_one(&mut *conn).await.expect("explain");
    // The column is `json`; its bytes are the text, which is all we need
    // (the crate does not enable sqlx's `json` feature).
    let json: String = row.try_get_unchecked(0).expect("plan text");
    nodes_of(&json)
}

/// The generic plan: the one a prepared statement (sqlx prepares every
/// query) may switch to after five executions, made without the values.
/// Through a statement of our own (`PREPARE`, simple protocol), deallocated
/// after: sqlx's cached statements on the connection stay untouched.
async fn generic_plan(conn: &mut PgConnection, query: &str, binds: &[i64]) -> Vec<Node> {
    let types = vec!["bigint"; binds.len()].join(", ");
    let args: Vec<String> = binds.iter().map(i64::to_string).collect();
    let script = format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE scale_probe ({types}) AS {query}"
    );
    sqlx::raw_sql(AssertSqlSafe(script))
        .execute(&mut *conn)
        .await
        .expect("prepare");
    let row = sqlx::query(AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE scale_probe({})",
        args.join(", ")
    )))
    .fetch_one(&mut *conn)
    .await
    .expect("explain execute");
    let json: String = row.try_get_unchecked(0).expect("plan text");
    sqlx::raw_sql("DEALLOCATE scale_probe; RESET plan_cache_mode")
        .execute(&mut *conn)
        .await
        .expect("deallocate");
    nodes_of(&json)
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of `query` with `binds`, printed.
async fn print_analyzed(conn: &mut PgConnection, name: &str, query: &str, binds: &[i64]) {
    let mut explain = sqlx::query(AssertSqlSafe(format!("EXPLAIN (ANALYZE, BUFFERS) {query}")));
    for value in binds {
        explain = explain.bind(*value);
    }
    let rows = explain
        .fetch_all(&mut *conn)
        .await
        .expect("explain analyze");
    println!("--- {name} {binds:?}");
    for row in rows {
        let line: String = row.try_get(0).expect("plan line");
        println!("{line}");
    }
}

/// Whether some node reads through `index` (a plain, index-only or bitmap
/// index scan; index names are unique within the schema).
fn uses_index(plan: &[Node], index: &str) -> bool {
    plan.iter().any(|n| {
        n.index.as_deref() == Some(index)
            && matches!(
                n.kind.as_str(),
                "Index Scan" | "Index Only Scan" | "Bitmap Index Scan"
            )
    })
}

/// A history page reads the page from the `(room_id, seq)` index and no
/// more: an Index Scan of `messages` through it, stopped by the `LIMIT` or
/// by the range's bounds after at most `fetch` rows, whatever the room's
/// size. (A sort above it is then a sort of at most `fetch` rows: the
/// planner does that for a narrow range to merge-join the senders.)
fn assert_page_from_index(plan: &[Node], what: &str, index: &str, fetch: i64) {
    let scans: Vec<&Node> = plan
        .iter()
        .filter(|n| n.relation.as_deref() == Some("messages"))
        .collect();
    assert!(
        scans.len() == 1
            && scans[0].kind == "Index Scan"
            && scans[0].alias.as_deref() == Some("m")
            && scans[0].index.as_deref() == Some(index),
        "{what}: expected one Index Scan of messages using {index}; plan: {plan:#?}"
    );
    assert!(
        scans[0].rows <= fetch as f64,
        "{what}: read {} rows of messages for a page of {fetch}; plan: {plan:#?}",
        scans[0].rows
    );
    assert!(
        !plan.iter().any(|n| n.kind == "Seq Scan"),
        "{what} scans a table; plan: {plan:#?}"
    );
}

async fn page(
    store: &PostgresStorage,
    before: Option<Seq>,
    after: Option<Seq>,
    limit: u32,
) -> HistoryPage {
    store
        .history(
            RoomId(1),
            HistoryQuery {
                before,
                after,
                limit,
            },
        )
        .await
        .expect("history")
}

fn seqs(page: &HistoryPage) -> Vec<Seq> {
    page.messages.iter().map(|m| m.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_unread_and_history_at_scale_come_from_indexes() {
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let reader = store
        .create_user(new_user("reader"))
        .await
        .expect("user")
        .id;
    let sender = store
        .create_user(new_user("sender"))
        .await
        .expect("user")
        .id;
    let bystander = store
        .create_user(new_user("bystander"))
        .await
        .expect("user")
        .id;

    let started = Instant::now();
    let mut conn = store.write.acquire().await.expect("connection");
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(&mut *conn)
        .await
        .expect("show jit");
    assert_eq!(jit, "off", "the backend's sessions run without JIT");
    fill(&mut conn, reader, sender, bystander).await;
    eprintln!("filled in {:?}", started.elapsed());
    let filler: i64 =
        sqlx::query_scalar("SELECT MIN(id) FROM users WHERE username LIKE 'filler-%'")
            .fetch_one(&mut *conn)
            .await
            .expect("a filler");

    // Unread: room 1 has 100,000 above the mark; small room i has
    // 3 - i % 4, which over i = 2..=10,000 sums to 14,998.
    let small_unread: i64 = (2..=ROOMS).map(|i| SMALL - small_read(i)).sum();
    assert_eq!(small_unread, 14_998);
    assert_eq!(store.unread_total(reader).await.expect("unread"), 114_998);
    assert_eq!(store.unread_total(sender).await.expect("unread"), 0);
    assert_eq!(store.unread_total(bystander).await.expect("unread"), 0);
    assert_eq!(store.unread_total(UserId(filler)).await.expect("unread"), 0);

    // Search: a word of every message of room 1, the newest first; a rare
    // one, deep in it (the plans are checked below).
    let search = |word: &str| {
        let request = SearchRequest {
            viewer: reader,
            terms: vec![word.to_owned()],
            room: None,
            before: None,
            limit: 20,
        };
        let store = &store;
        async move { store.search(&request).await.expect("search") }
    };
    let common = search("big").await;
    let bodies: Vec<&str> = common.hits.iter().map(|(m, _)| m.body.as_str()).collect();
    let newest: Vec<String> = (0..20).map(|i| format!("big {}", BIG - i)).collect();
    assert_eq!(bodies, newest);
    assert!(common.has_more);
    let rare = search("500000").await;
    assert_eq!(rare.hits.len(), 1);
    assert_eq!(rare.hits[0].0.body, "big 500000");
    assert!(!rare.has_more);

    let rooms = store.user_rooms(reader).await.expect("rooms");
    assert_eq!(rooms.len(), 10_000);
    let order: Vec<i64> = rooms.iter().map(|r| r.room.id.get()).collect();
    let expected: Vec<i64> = (1..=ROOMS).rev().collect();
    assert_eq!(order, expected, "newest activity first");
    for i in [1, 2, 3, 4, 5, 4_999, 7_777, 9_998, 10_000] {
        let row = &rooms[usize::try_from(ROOMS - i).expect("index")];
        assert_eq!(row.room.id, RoomId(i));
        let (last_seq, read_seq) = if i == 1 {
            (BIG, BIG_READ)
        } else {
            (SMALL, small_read(i))
        };
        assert_eq!(
            (row.room.last_seq, row.read_seq),
            (last_seq, read_seq),
            "room {i}"
        );
        assert_eq!(row.others_read_seq, last_seq, "the sender read it all");
        assert_eq!(row.member_count, 2);
        let last = row.last_message.as_ref().expect("a last message");
        assert_eq!((last.seq, last.sender), (last_seq, sender));
    }
    let filler_rooms = store.user_rooms(UserId(filler)).await.expect("rooms");
    assert_eq!(filler_rooms.len(), 1_000, "20 of 200 fillers per room");
    assert!(
        filler_rooms
            .iter()
            .all(|r| r.member_count == 21 && r.last_message.is_none())
    );

    // History at the deep end of the big room, and in its middle.
    let p = page(&store, Some(101), None, 100).await;
    assert_eq!(seqs(&p), (1..=100).collect::<Vec<_>>());
    assert!(!p.has_more, "nothing below seq 1");
    assert_eq!(p.messages[0].body, "big 1");
    assert_eq!(p.messages[0].sender_name, "sender display");
    assert_eq!(
        p.messages[0].created_at,
        Timestamp::from_unix_micros(BASE + 1)
    );
    let p = page(&store, None, Some(10), 50).await;
    assert_eq!((seqs(&p), p.has_more), ((11..=60).collect(), true));
    let p = page(&store, Some(500_001), None, 200).await;
    assert_eq!(
        (seqs(&p), p.has_more),
        ((499_801..=500_000).collect(), true)
    );
    assert_eq!(p.messages[199].body, "big 500000");
    let p = page(&store, Some(500_004), Some(500_000), 10).await;
    assert_eq!(
        (seqs(&p), p.has_more),
        (vec![500_001, 500_002, 500_003], false)
    );
    let p = page(&store, None, None, 2).await;
    assert_eq!((seqs(&p), p.has_more), (vec![BIG - 1, BIG], true));

    // The plans of the exact statements the backend runs.
    let user = reader.get();
    assert!(
        !sql::UNREAD_TOTAL.contains("messages"),
        "the unread total must not read history"
    );
    for (who, id) in [("reader", user), ("filler", filler)] {
        for (kind, plan) in [
            (
                "custom",
                custom_plan(&mut conn, sql::UNREAD_TOTAL, &[id]).await,
            ),
            (
                "generic",
                generic_plan(&mut conn, sql::UNREAD_TOTAL, &[id]).await,
            ),
        ] {
            let what = format!("UNREAD_TOTAL ({kind}, {who})");
            assert!(
                !plan
                    .iter()
                    .any(|n| n.relation.as_deref() == Some("messages")),
                "{what} reads messages: {plan:#?}"
            );
            assert!(
                uses_index(&plan, "room_members_user_id_idx"),
                "{what} should enter room_members by its user_id index: {plan:#?}"
            );
            assert!(
                !plan
                    .iter()
                    .any(|n| n.kind == "Seq Scan" && n.relation.as_deref() == Some("room_members")),
                "{what} scans room_members: {plan:#?}"
            );
        }
    }

    let by_seq = "messages_room_id_seq_key";
    for (name, query, binds) in [
        (
            "HISTORY_BEFORE (deep)",
            sql::HISTORY_BEFORE,
            vec![1, 101, 101],
        ),
        (
            "HISTORY_BEFORE (middle)",
            sql::HISTORY_BEFORE,
            vec![1, 500_001, 201],
        ),
        (
            "HISTORY_BEFORE (newest)",
            sql::HISTORY_BEFORE,
            vec![1, Seq::MAX, 51],
        ),
        (
            "HISTORY_AFTER (oldest)",
            sql::HISTORY_AFTER,
            vec![1, 10, Seq::MAX, 51],
        ),
        (
            "HISTORY_AFTER (middle)",
            sql::HISTORY_AFTER,
            vec![1, 500_000, 500_004, 11],
        ),
        (
            "HISTORY_BEFORE (small room)",
            sql::HISTORY_BEFORE,
            vec![2, Seq::MAX, 51],
        ),
    ] {
        let fetch = binds[binds.len() - 1];
        let plan = custom_plan(&mut conn, query, &binds).await;
        assert_page_from_index(&plan, &format!("{name}, custom"), by_seq, fetch);
        let plan = generic_plan(&mut conn, query, &binds).await;
        assert_page_from_index(&plan, &format!("{name}, generic"), by_seq, fetch);
    }

    // The room list's last-message probe; printed below, checked here.
    let plan = custom_plan(&mut conn, sql::USER_ROOMS, &[filler]).await;
    assert!(
        uses_index(&plan, "room_members_user_id_idx"),
        "USER_ROOMS (filler): {plan:#?}"
    );
    assert!(
        !plan
            .iter()
            .any(|n| n.kind == "Seq Scan" && n.relation.as_deref() == Some("messages")),
        "USER_ROOMS (filler) scans messages: {plan:#?}"
    );

    println!(
        "EXPLAIN (ANALYZE, BUFFERS) at {BIG} messages in room 1, {ROOMS} rooms of the reader:"
    );
    print_analyzed(
        &mut conn,
        "HISTORY_BEFORE, a deep page",
        sql::HISTORY_BEFORE,
        &[1, 101, 101],
    )
    .await;
    print_analyzed(
        &mut conn,
        "HISTORY_BEFORE, the middle",
        sql::HISTORY_BEFORE,
        &[1, 500_001, 201],
    )
    .await;
    print_analyzed(
        &mut conn,
        "HISTORY_AFTER, catching up",
        sql::HISTORY_AFTER,
        &[1, 900_000, Seq::MAX, 201],
    )
    .await;
    print_analyzed(
        &mut conn,
        "UNREAD_TOTAL, reader",
        sql::UNREAD_TOTAL,
        &[user],
    )
    .await;
    print_analyzed(
        &mut conn,
        "UNREAD_TOTAL, filler",
        sql::UNREAD_TOTAL,
        &[filler],
    )
    .await;
    print_analyzed(&mut conn, "USER_ROOMS, reader", sql::USER_ROOMS, &[user]).await;

    // Search, a rare word (one message of the million) and a word every
    // message holds: the rare one through the GIN index, the common one
    // from the newest messages alone (the index never asked).
    for (word, expect_index) in [("500000", true), ("big", false)] {
        let (plan, ms, text) = search_plan(&mut conn, word, user).await;
        println!("--- PG_SEARCH {word:?}, {ms:.2} ms (EXPLAIN ANALYZE)\n{text}");
        let asked = plan
            .iter()
            .any(|n| n.index.as_deref() == Some("messages_search_idx") && n.loops > 0.0);
        assert_eq!(asked, expect_index, "PG_SEARCH ({word}): {plan:#?}");
    }
}

/// `EXPLAIN (ANALYZE)` of the search for `word` by `viewer` (every room,
/// a first page of 20): its nodes, its execution time, and the text plan.
async fn search_plan(conn: &mut PgConnection, word: &str, viewer: i64) -> (Vec<Node>, f64, String) {
    let explain = |format: &'static str| {
        sqlx::query(AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, {format}) {}",
            sql::PG_SEARCH
        )))
        .bind(word.to_owned())
        .bind(viewer)
        .bind(i64::MAX)
        .bind(0_i64)
        .bind(21_i64)
    };
    let row = explain("FORMAT JSON")
        .fetch_one(&mut *conn)
        .await
        .expect("explain");
    let json: String = row.try_get_unchecked(0).expect("plan text");
    let value: Value = serde_json::from_str(&json).expect("plan JSON");
    let ms = value
        .get(0)
        .and_then(|p| p.get("Execution Time"))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    let text_rows = explain("BUFFERS")
        .fetch_all(&mut *conn)
        .await
        .expect("explain");
    let text = text_rows
        .iter()
        .map(|r| r.try_get::<String, _>(0).expect("plan line"))
        .collect::<Vec<_>>()
        .join("\n");
    (nodes_of(&json), ms, text)
}
