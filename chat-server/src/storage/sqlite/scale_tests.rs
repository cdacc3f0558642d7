//! Unread counts, room lists and history at scale come from indexes.
//!
//! The test fills a database by bulk SQL: three users; 10,000 rooms where
//! the reader and a sender are members, room 1 holding 1,000,000 messages
//! and rooms 2..=10,000 three each; 10,000 more rooms of a bystander. That
//! takes about 6 s in a debug test build on the 2-core machine it was
//! written on (SQLite itself built unoptimised), so the full million is
//! kept. It then checks the answers through the [`Storage`] trait and the
//! query plans of the exact SQL constants, without `ANALYZE` (as in
//! production, where nothing runs it). The plans seen with SQLite 3.51:
//!
//! ```text
//! UNREAD_TOTAL
//!   SEARCH m USING INDEX room_members_user_id_idx (user_id=?)
//!   SEARCH r USING INTEGER PRIMARY KEY (rowid=?)
//! HISTORY_BEFORE
//!   SEARCH m USING INDEX sqlite_autoindex_messages_1 (room_id=? AND seq<?)
//!   SEARCH u USING INTEGER PRIMARY KEY (rowid=?)
//! HISTORY_AFTER
//!   SEARCH m USING INDEX sqlite_autoindex_messages_1 (room_id=? AND seq>? AND seq<?)
//!   SEARCH u USING INTEGER PRIMARY KEY (rowid=?)
//! USER_ROOMS
//!   SEARCH m USING INDEX room_members_user_id_idx (user_id=?)
//!   SEARCH r USING INTEGER PRIMARY KEY (rowid=?)
//!   SEARCH l USING INDEX sqlite_autoindex_messages_1 (room_id=? AND seq=?) LEFT-JOIN
//!   SEARCH lu USING INTEGER PRIMARY KEY (rowid=?) LEFT-JOIN
//!   CORRELATED SCALAR SUBQUERY 1
//!   SEARCH c USING PRIMARY KEY (room_id=?)
//!   CORRELATED SCALAR SUBQUERY 2
//!   SEARCH o USING PRIMARY KEY (room_id=?)
//!   USE TEMP B-TREE FOR ORDER BY
//! USER_CONVERSATIONS: as USER_ROOMS, plus
//!   SEARCH p USING INTEGER PRIMARY KEY (rowid=?)
//! DIRECT_ROOM_BY_PAIR
//!   SEARCH rooms USING INDEX rooms_direct_lo_direct_hi_key (direct_lo=? AND direct_hi=?)
//! ```
//!
//! What they say: the unread total walks the user's membership rows through
//! the `user_id` index and fetches each room by primary key to subtract the
//! mark from `last_seq`; `messages` is not in the query at all, so its cost
//! grows with the number of rooms, not of messages. History is a range
//! search on the `(room_id, seq)` unique index (`messages_room_id_seq_key`,
//! which SQLite names `sqlite_autoindex_messages_1`), read in index order
//! with no sort, so a page deep in a million-message room costs the same as
//! the newest one. The room list enters by the same `user_id` index, finds
//! each last message with one equality probe `seq = last_seq` and counts
//! members and the others' best mark with a search of `room_members`'
//! primary key on `room_id`; its only sort is the activity order of the
//! user's own rows, which no index can serve since it is per user and
//! computed. No statement scans a table.

use std::time::Instant;

use chat_core::{RoomId, Seq, Timestamp, UserId};
use sqlx::{AssertSqlSafe, Row};

use super::SqliteStorage;
use crate::storage::sql::statements as sql;
use crate::storage::{HistoryPage, HistoryQuery, NewUser, Storage, StorageOptions};

/// Rooms the reader is a member of; room 1 is the big one.
const ROOMS: i64 = 10_000;
/// Messages in room 1.
const BIG: Seq = 1_000_000;
/// The reader's mark in room 1.
const BIG_READ: Seq = 900_000;
/// Messages in each of rooms 2..=ROOMS.
const SMALL: Seq = 3;
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

/// `WITH` clause numbering `n(i)` from 1 to `count`.
fn numbers(count: i64) -> String {
    format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) ")
}

/// Fills the database with one plain SQL statement per table, rows drawn
/// from a recursive CTE: a trait call per row would take many minutes. The
/// rows keep the storage invariants by construction: seqs 1..=last_seq
/// with no gap, `last_message_at` the last message's time, the sender's
/// mark at `last_seq`. Small room `i`'s messages are later than room 1's
/// and grow with `i`, so the activity order is rooms 10,000 down to 1.
async fn fill(store: &SqliteStorage, reader: UserId, sender: UserId, bystander: UserId) {
    let mut tx = store.write.begin().await.expect("begin");

    let rooms = format!(
        "{}INSERT INTO rooms (id, name, kind, creator_id, owner_id, created_at, last_seq, \
             msg_count, last_message_seq, last_message_at) \
         SELECT i, 'room-' || i, 'private', CASE WHEN i <= $1 THEN $2 ELSE $3 END, \
             CASE WHEN i <= $1 THEN $2 ELSE $3 END, $4, \
             CASE WHEN i = 1 THEN $5 WHEN i <= $1 THEN $6 ELSE 0 END, \
             CASE WHEN i = 1 THEN $5 WHEN i <= $1 THEN $6 ELSE 0 END, \
             CASE WHEN i = 1 THEN $5 WHEN i <= $1 THEN $6 ELSE 0 END, \
             CASE WHEN i = 1 THEN $4 + $5 \
                  WHEN i <= $1 THEN $4 + 10000000 + i * 10 + $6 END \
         FROM n",
        numbers(2 * ROOMS)
    );
    sqlx::query(AssertSqlSafe(rooms))
        .bind(ROOMS)
        .bind(sender.get())
        .bind(bystander.get())
        .bind(BASE)
        .bind(BIG)
        .bind(SMALL)
        .execute(&mut *tx)
        .await
        .expect("insert rooms");

    let members = format!(
        "{}INSERT INTO room_members (room_id, user_id, state, read_seq, read_no, position) \
         SELECT i, $2, 'member', CASE WHEN i = 1 THEN $3 ELSE i % 4 END, \
             CASE WHEN i = 1 THEN $3 ELSE i % 4 END, 2 \
             FROM n WHERE i <= $1 \
         UNION ALL SELECT i, $4, 'member', CASE WHEN i = 1 THEN $5 ELSE $6 END, \
             CASE WHEN i = 1 THEN $5 ELSE $6 END, 1 \
             FROM n WHERE i <= $1 \
         UNION ALL SELECT i, $7, 'member', 0, 0, 1 FROM n WHERE i > $1",
        numbers(2 * ROOMS)
    );
    sqlx::query(AssertSqlSafe(members))
        .bind(ROOMS)
        .bind(reader.get())
        .bind(BIG_READ)
        .bind(sender.get())
        .bind(BIG)
        .bind(SMALL)
        .bind(bystander.get())
        .execute(&mut *tx)
        .await
        .expect("insert members");

    let small = format!(
        "{}INSERT INTO messages (room_id, seq, msg_no, sender_id, body, created_at) \
         SELECT r.i, s.i, s.i, $1, 'room ' || r.i || ' message ' || s.i, \
             $2 + 10000000 + r.i * 10 + s.i \
         FROM n r JOIN n s ON s.i <= $3 WHERE r.i BETWEEN 2 AND $4",
        numbers(ROOMS)
    );
    sqlx::query(AssertSqlSafe(small))
        .bind(sender.get())
        .bind(BASE)
        .bind(SMALL)
        .bind(ROOMS)
        .execute(&mut *tx)
        .await
        .expect("insert small rooms' messages");

    let big = format!(
        "{}INSERT INTO messages (room_id, seq, msg_no, sender_id, body, created_at) \
         SELECT 1, i, i, $1, 'big ' || i, $2 + i FROM n",
        numbers(BIG)
    );
    sqlx::query(AssertSqlSafe(big))
        .bind(sender.get())
        .bind(BASE)
        .execute(&mut *tx)
        .await
        .expect("insert the big room's messages");
    tx.commit().await.expect("commit");
}

/// The `detail` lines of `EXPLAIN QUERY PLAN` for `query`. Asked of the
/// writer: `EXPLAIN` opens no transaction, so a pooled reader would answer
/// from whatever schema it loaded last, while the writer made every schema
/// change itself.
async fn plan(store: &SqliteStorage, query: &str, binds: &[i64]) -> Vec<String> {
    let mut explain = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")));
    for value in binds {
        explain = explain.bind(*value);
    }
    explain
        .fetch_all(&store.write)
        .await
        .expect("explain")
        .iter()
        .map(|row| row.try_get::<String, _>("detail").expect("detail column"))
        .collect()
}

/// The name SQLite gave the index of `messages` on exactly `(room_id, seq)`
/// (an automatic one, for the unique constraint), looked up rather than
/// hard-coded so that a renamed index fails on its columns, not its name.
async fn room_seq_index(store: &SqliteStorage) -> String {
    // Not the partial index of deleted messages, on the same columns.
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_index_list('messages') WHERE partial = 0")
            .fetch_all(&store.read)
            .await
            .expect("index list");
    for name in names {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                .bind(&name)
                .fetch_all(&store.read)
                .await
                .expect("index info");
        if columns == ["room_id", "seq"] {
            return name;
        }
    }
    panic!("messages has no index on (room_id, seq)");
}

fn assert_search(plan: &[String], query: &str, prefix: &str, index: &str, constraint: &str) {
    assert!(
        plan.iter()
            .any(|l| l.starts_with(prefix) && l.contains(index) && l.contains(constraint)),
        "{query} should `{prefix}… {index} … {constraint}`; plan: {plan:#?}"
    );
}

fn assert_no_scan(plan: &[String], query: &str) {
    assert!(
        !plan.iter().any(|l| l.starts_with("SCAN")),
        "{query} scans a table; plan: {plan:#?}"
    );
}

async fn page(
    store: &SqliteStorage,
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

#[tokio::test]
async fn unread_and_history_at_scale_come_from_indexes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("chat.db").display());
    let store = SqliteStorage::connect(&url, &StorageOptions::default())
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
    fill(&store, reader, sender, bystander).await;
    // For whoever wonders why the test is slow; nothing depends on it.
    eprintln!("filled in {:?}", started.elapsed());

    // Unread: room 1 has 100,000 above the mark; small room i has
    // 3 - i % 4, which over i = 2..=10,000 is 2,500 × 3 (i % 4 = 0)
    // + 2,499 × 2 (i % 4 = 1; i = 1 is the big room) + 2,500 × 1.
    let small_unread: i64 = (2..=ROOMS).map(|i| SMALL - small_read(i)).sum();
    assert_eq!(small_unread, 14_998);
    assert_eq!(store.unread_total(reader).await.expect("unread"), 114_998);
    assert_eq!(store.unread_total(sender).await.expect("unread"), 0);
    assert_eq!(store.unread_total(bystander).await.expect("unread"), 0);

    let rooms = store.user_rooms(reader).await.expect("rooms");
    assert_eq!(rooms.len(), 10_000);
    let order: Vec<i64> = rooms.iter().map(|r| r.room.id.get()).collect();
    let expected: Vec<i64> = (1..=ROOMS).rev().collect();
    assert_eq!(order, expected, "newest activity first");
    for i in [1, 2, 3, 4, 5, 4_999, 7_777, 9_998, 10_000] {
        let index = usize::try_from(ROOMS - i).expect("index");
        let row = &rooms[index];
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
        assert_eq!(
            row.room.last_seq - row.read_seq,
            if i == 1 { 100_000 } else { 3 - i % 4 },
            "unread in room {i}"
        );
        assert_eq!(row.others_read_seq, last_seq, "the sender read it all");
        assert_eq!(row.member_count, 2);
        let last = row.last_message.as_ref().expect("a last message");
        assert_eq!(last.seq, last_seq);
        assert_eq!(last.sender, sender);
        let body = if i == 1 {
            format!("big {BIG}")
        } else {
            format!("room {i} message {SMALL}")
        };
        assert_eq!(last.body, body);
    }

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
    let p = page(&store, Some(3), None, 50).await;
    assert_eq!((seqs(&p), p.has_more), (vec![1, 2], false));
    let p = page(&store, None, Some(0), 5).await;
    assert_eq!((seqs(&p), p.has_more), (vec![1, 2, 3, 4, 5], true));
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
    let p = page(&store, None, Some(BIG - 3), 10).await;
    assert_eq!((seqs(&p), p.has_more), (vec![BIG - 2, BIG - 1, BIG], false));
    let p = page(&store, None, None, 2).await;
    assert_eq!((seqs(&p), p.has_more), (vec![BIG - 1, BIG], true));

    // The plans of the exact statements the backend runs.
    let by_seq = room_seq_index(&store).await;
    let user = reader.get();

    assert!(
        !sql::UNREAD_TOTAL.contains("messages"),
        "the unread total must not read history"
    );
    let p = plan(&store, sql::UNREAD_TOTAL, &[user]).await;
    assert!(!p.iter().any(|l| l.contains("messages")), "{p:#?}");
    assert_search(
        &p,
        "UNREAD_TOTAL",
        "SEARCH m ",
        "room_members_user_id_idx",
        "(user_id=?)",
    );
    assert_no_scan(&p, "UNREAD_TOTAL");

    let p = plan(&store, sql::HISTORY_BEFORE, &[1, 101, 101]).await;
    assert_search(
        &p,
        "HISTORY_BEFORE",
        "SEARCH m ",
        &by_seq,
        "(room_id=? AND seq<?)",
    );
    assert_no_scan(&p, "HISTORY_BEFORE");
    assert!(
        !p.iter().any(|l| l.contains("TEMP B-TREE")),
        "index order, no sort: {p:#?}"
    );

    let p = plan(&store, sql::HISTORY_AFTER, &[1, 10, Seq::MAX, 51]).await;
    assert_search(
        &p,
        "HISTORY_AFTER",
        "SEARCH m ",
        &by_seq,
        "(room_id=? AND seq>? AND seq<?)",
    );
    assert_no_scan(&p, "HISTORY_AFTER");
    assert!(
        !p.iter().any(|l| l.contains("TEMP B-TREE")),
        "index order, no sort: {p:#?}"
    );

    for (name, query) in [
        ("USER_ROOMS", sql::USER_ROOMS),
        ("USER_CONVERSATIONS", sql::USER_CONVERSATIONS),
    ] {
        let p = plan(&store, query, &[user]).await;
        assert_search(
            &p,
            name,
            "SEARCH m ",
            "room_members_user_id_idx",
            "(user_id=?)",
        );
        assert_search(&p, name, "SEARCH l ", &by_seq, "(room_id=? AND seq=?)");
        assert_search(&p, name, "SEARCH c ", "PRIMARY KEY", "(room_id=?)");
        assert_search(&p, name, "SEARCH o ", "PRIMARY KEY", "(room_id=?)");
        assert_no_scan(&p, name);
    }

    // Marking read counts the deleted messages below the mark on their
    // own partial index, never the room's history; the timeline finds the
    // message a change changed by its key.
    let p = plan(&store, sql::ADVANCE_READ_MARK, &[1, user, BIG / 2]).await;
    assert_search(
        &p,
        "ADVANCE_READ_MARK",
        "SEARCH d ",
        "messages_deleted_idx",
        "(room_id=? AND seq<?)",
    );
    assert_search(
        &p,
        "ADVANCE_READ_MARK",
        "SEARCH e ",
        &by_seq,
        "(room_id=? AND seq=?)",
    );
    assert_no_scan(&p, "ADVANCE_READ_MARK");
    let p = plan(&store, sql::TIMELINE_BEFORE, &[1, 101, 101]).await;
    assert_search(
        &p,
        "TIMELINE_BEFORE",
        "SEARCH m ",
        &by_seq,
        "(room_id=? AND seq<?)",
    );
    assert_search(
        &p,
        "TIMELINE_BEFORE",
        "SEARCH t ",
        "INTEGER PRIMARY KEY",
        "(rowid=?)",
    );
    assert_no_scan(&p, "TIMELINE_BEFORE");

    // Search reads the FTS5 index in its own order, newest first: no sort,
    // no scan of messages.
    let mut explain = sqlx::query(AssertSqlSafe(format!(
        "EXPLAIN QUERY PLAN {}",
        sql::SQLITE_SEARCH
    )))
    .bind("\"big\"")
    .bind(user)
    .bind(i64::MAX)
    .bind(0_i64)
    .bind(21_i64);
    explain = explain.persistent(false);
    let p: Vec<String> = explain
        .fetch_all(&store.write)
        .await
        .expect("explain")
        .iter()
        .map(|row| row.try_get::<String, _>("detail").expect("detail column"))
        .collect();
    assert!(
        p.iter().any(|l| l.contains("VIRTUAL TABLE INDEX")),
        "SQLITE_SEARCH reads the FTS index: {p:#?}"
    );
    assert!(
        !p.iter().any(|l| l.contains("TEMP B-TREE")),
        "SQLITE_SEARCH in index order, no sort: {p:#?}"
    );
    // The one `SCAN` is of the FTS index itself, by its own order.
    assert!(
        p.iter()
            .filter(|l| l.starts_with("SCAN"))
            .all(|l| l.starts_with("SCAN f VIRTUAL TABLE INDEX")),
        "SQLITE_SEARCH scans a table: {p:#?}"
    );
    for word in ["500000", "big"] {
        let started = std::time::Instant::now();
        let page = store
            .search(&crate::storage::SearchRequest {
                viewer: reader,
                terms: vec![word.to_owned()],
                room: None,
                before: None,
                limit: 20,
            })
            .await
            .expect("search");
        eprintln!(
            "SQLITE_SEARCH {word:?}: {} hits in {:?}",
            page.hits.len(),
            started.elapsed()
        );
        assert!(!page.hits.is_empty(), "{word} is found");
    }

    let p = plan(&store, sql::DIRECT_ROOM_BY_PAIR, &[1, 2]).await;
    assert_search(
        &p,
        "DIRECT_ROOM_BY_PAIR",
        "SEARCH rooms ",
        "rooms_direct_lo_direct_hi_key",
        "(direct_lo=? AND direct_hi=?)",
    );
}
