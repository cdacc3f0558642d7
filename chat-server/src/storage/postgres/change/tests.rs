//! The one-statement change against the locked transaction it stands in
//! for, and against a room that moved between its read and its write.

use chat_core::room::RoomType;
use chat_core::{MessageId, RoomId, Timestamp, UserId};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row as _};

use super::{change_message, write};
use crate::storage::postgres::testing::TestSchema;
use crate::storage::postgres::{PgDialect, PostgresStorage};
use crate::storage::sql::change::{self as locked, Judged, judge, reaction_key};
use crate::storage::sql::statements;
use crate::storage::{
    Authority, ChangeOp, Changed, MessageChange, NewMessage, NewRoom, NewUser, Storage,
    StorageOptions, StoredMessage, UpdateKind,
};

fn at(micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_770_000_000_000_000 + micros)
}

async fn user(store: &PostgresStorage, name: &str) -> UserId {
    store
        .create_user(NewUser {
            username: name.to_owned(),
            email: format!("{name}@example.com"),
            display_name: name.to_owned(),
            password_hash: "hash".to_owned(),
            created_at: at(0),
        })
        .await
        .expect("user")
        .id
}

/// A room of `ann` and `bob` with a root message, a reply to it, a thread
/// reply mentioning bob, and a plain message: their ids, in that order.
async fn seeded_room(
    store: &PostgresStorage,
    name: &str,
    ann: UserId,
    bob: UserId,
) -> (RoomId, Vec<MessageId>) {
    let room = store
        .create_room(NewRoom {
            name: name.to_owned(),
            kind: RoomType::Public,
            creator: ann,
            invited: Vec::new(),
            created_at: at(1),
        })
        .await
        .expect("room")
        .id;
    store.join_room(room, bob).await.expect("join");
    let mut ids = Vec::new();
    let send = |mut message: NewMessage| async move {
        // The same times in both rooms: a root keeps its last reply's.
        message.created_at = at(10);
        store.append(message).await.expect("append").message.id
    };
    let root = send(NewMessage::new(room, ann, "the root")).await;
    ids.push(root);
    let mut reply = NewMessage::new(room, bob, "a reply");
    reply.reply_to = Some(root);
    ids.push(send(reply).await);
    let mut threaded = NewMessage::new(room, ann, "in the thread, @bob");
    threaded.thread_root = Some(root);
    threaded.mentions = vec![bob];
    ids.push(send(threaded).await);
    ids.push(send(NewMessage::new(room, bob, "plain")).await);
    // Bob reads everything, so that deletions lower his count.
    let last = store
        .message(ids[3])
        .await
        .expect("read")
        .expect("there")
        .seq;
    store.mark_read(room, bob, last).await.expect("mark");
    (room, ids)
}

/// Every kind of change, by whom, on which of the seeded messages.
fn script(ann: UserId, bob: UserId, ids: &[MessageId]) -> Vec<MessageChange> {
    let change = |user, message: MessageId, op, allowed, t: i64| MessageChange {
        message,
        room: None,
        user,
        op,
        allowed,
        created_at: at(100 + t),
    };
    let react = |key: &str, add| ChangeOp::React {
        key: key.to_owned(),
        add,
    };
    vec![
        change(
            bob,
            ids[3],
            ChangeOp::Edit {
                body: "plain, fixed".into(),
            },
            Authority::Sender,
            1,
        ),
        change(
            bob,
            ids[3],
            ChangeOp::Edit {
                body: "plain, fixed".into(),
            },
            Authority::Sender,
            2,
        ),
        change(
            ann,
            ids[3],
            ChangeOp::Edit {
                body: "not hers".into(),
            },
            Authority::Sender,
            3,
        ),
        change(ann, ids[3], react("👍", true), Authority::Member, 4),
        change(bob, ids[3], react("🎉", true), Authority::Member, 5),
        change(bob, ids[3], react("👍", true), Authority::Member, 6),
        change(ann, ids[3], react("👍", false), Authority::Member, 7),
        change(ann, ids[3], react("👍", false), Authority::Member, 8),
        change(
            ann,
            ids[1],
            ChangeOp::Pin { pin: true },
            Authority::Moderator,
            9,
        ),
        change(
            ann,
            ids[3],
            ChangeOp::Pin { pin: true },
            Authority::Moderator,
            10,
        ),
        change(
            ann,
            ids[1],
            ChangeOp::Pin { pin: false },
            Authority::Moderator,
            11,
        ),
        change(
            bob,
            ids[0],
            ChangeOp::Delete,
            Authority::SenderOrModerator,
            12,
        ),
        change(
            ann,
            ids[0],
            ChangeOp::Delete,
            Authority::SenderOrModerator,
            13,
        ),
        change(
            ann,
            ids[0],
            ChangeOp::Delete,
            Authority::SenderOrModerator,
            14,
        ),
        change(
            ann,
            ids[0],
            ChangeOp::Edit {
                body: "gone".into(),
            },
            Authority::Sender,
            15,
        ),
        change(ann, ids[2], ChangeOp::Delete, Authority::Sender, 16),
        change(
            ann,
            ids[3],
            ChangeOp::Delete,
            Authority::SenderOrModerator,
            17,
        ),
    ]
}

/// An answer with the room's ids taken out, to compare two rooms'.
fn shape(answer: &Result<Changed, crate::storage::StorageError>) -> String {
    match answer {
        Ok(changed) => {
            let m = &changed.message;
            let event = changed.event.as_ref().map(|e| {
                let counts: Vec<_> = e.reactions.iter().map(|r| (&r.key, r.count)).collect();
                format!("seq {} {:?} by {} {counts:?}", e.seq, e.kind, e.user.get())
            });
            format!(
                "seq {} {:?} v{} deleted {} pinned {} snippet {:?} replies {} mentions {:?} \
                 edited {:?} event {event:?}",
                m.seq,
                m.body,
                m.version,
                m.deleted,
                m.pinned,
                m.reply.as_ref().map(|r| (r.seq, &r.snippet)),
                m.reply_count,
                m.mentions,
                m.edited_at,
            )
        }
        Err(e) => format!("{e:?}"),
    }
}

/// What the database holds of `room`, without its ids.
async fn dump(conn: &mut PgConnection, room: RoomId) -> Vec<String> {
    let mut lines = Vec::new();
    let queries = [
        "SELECT concat_ws(' ', last_seq, msg_count, msg_deleted, last_message_seq) \
         FROM rooms WHERE id = $1",
        "SELECT concat_ws(' ', user_id, state, read_seq, read_no) FROM room_members \
         WHERE room_id = $1 ORDER BY user_id",
        "SELECT concat_ws(' ', m.seq, m.kind, m.sender_id, m.body, m.version, m.msg_no, \
             m.edited_at, m.deleted_at, m.pinned_at, m.reply_seq, m.reply_snippet, \
             m.reply_count, m.last_reply_at, m.mentions, t.seq) \
         FROM messages m LEFT JOIN messages t ON t.id = m.target_id \
         WHERE m.room_id = $1 ORDER BY m.seq",
        "SELECT concat_ws(' ', m.seq, x.user_id, x.key, x.seq) FROM reactions x \
         JOIN messages m ON m.id = x.message_id WHERE m.room_id = $1 ORDER BY x.seq",
        "SELECT concat_ws(' ', user_id, seq) FROM mentions WHERE room_id = $1 ORDER BY seq",
        "SELECT concat_ws(' ', count(*)) FROM messages \
         WHERE room_id = $1 AND to_tsvector('simple', body) @@ plainto_tsquery('simple', 'plain')",
    ];
    for query in queries {
        for row in sqlx::query(query)
            .bind(room.get())
            .fetch_all(&mut *conn)
            .await
            .expect("dump")
        {
            lines.push(row.get::<String, _>(0));
        }
    }
    lines
}

#[tokio::test]
async fn the_one_statement_write_does_what_the_locked_transaction_does() {
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let (ann, bob) = (user(&store, "ann").await, user(&store, "bob").await);
    let (fast_room, fast_ids) = seeded_room(&store, "fast", ann, bob).await;
    let (slow_room, slow_ids) = seeded_room(&store, "slow", ann, bob).await;
    let mut conn = PgConnection::connect(&schema.url()).await.expect("conn");

    let mut fast = Vec::new();
    for change in script(ann, bob, &fast_ids) {
        fast.push(shape(&change_message(&mut conn, &change, None).await));
    }
    let mut slow = Vec::new();
    for change in script(ann, bob, &slow_ids) {
        slow.push(shape(
            &locked::change_message::<PgDialect>(&mut conn, &change).await,
        ));
    }
    // The script did something of every kind, and refused and skipped.
    let seen = [
        "Edited",
        "Deleted",
        "added: true",
        "added: false",
        "pinned: true",
        "pinned: false",
        "NotAllowed",
        "event None",
        "Deleted)",
    ];
    same(&mut conn, (&fast, fast_room), (&slow, slow_room), &seen).await;
    drop(store);
}

/// Two rooms that went through the same script answered the same (and
/// said each of `seen` somewhere) and hold the same rows.
async fn same(
    conn: &mut PgConnection,
    (answers, room): (&[String], RoomId),
    (reference, reference_room): (&[String], RoomId),
    seen: &[&str],
) {
    assert_eq!(answers, reference);
    let all = answers.join("\n");
    for said in seen {
        assert!(all.contains(said), "{said} in\n{all}");
    }
    let (rows, reference_rows) = (dump(conn, room).await, dump(conn, reference_room).await);
    assert_eq!(rows, reference_rows);
    assert!(rows.len() > 10, "{rows:?}");
}

/// What `change`'s rule reads, read now.
async fn standing(conn: &mut PgConnection, change: &MessageChange) -> sqlx::postgres::PgRow {
    sqlx::query(statements::CHANGE_STANDING)
        .bind(change.message.get())
        .bind(change.user.get())
        .bind(reaction_key(&change.op))
        .fetch_one(&mut *conn)
        .await
        .expect("standing")
}

/// A judgement on a fresh read of `change`.
async fn judged(
    conn: &mut PgConnection,
    change: &MessageChange,
) -> (StoredMessage, UpdateKind, i64) {
    let row = standing(conn, change).await;
    let Judged::Change {
        target,
        kind,
        events,
        ..
    } = judge(&row, change).expect("allowed")
    else {
        panic!("{change:?} changes something");
    };
    (target, kind, events)
}

#[tokio::test]
async fn a_judgement_holds_over_messages_and_not_over_other_events() {
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let (ann, bob) = (user(&store, "ann").await, user(&store, "bob").await);
    let carol = user(&store, "carol").await;
    let (room, ids) = seeded_room(&store, "moving", ann, bob).await;
    let mut conn = PgConnection::connect(&schema.url()).await.expect("conn");
    let edit = |body: &str, t| MessageChange {
        message: ids[3],
        room: Some(room),
        user: bob,
        op: ChangeOp::Edit { body: body.into() },
        allowed: Authority::Sender,
        created_at: at(t),
    };

    // Messages sent between the read and the write change nothing the
    // rule read: the write goes through, after them.
    let first = edit("first", 50);
    let (target, kind, events) = judged(&mut conn, &first).await;
    let meanwhile = store
        .append(NewMessage::new(room, ann, "meanwhile"))
        .await
        .expect("append")
        .message;
    let done = write(&mut conn, &first, &target, kind, events)
        .await
        .expect("write")
        .expect("not stale");
    assert_eq!(done.event.expect("event").seq, meanwhile.seq + 1);
    assert_eq!(done.message.body, "first");

    // A membership change between them is an event the rule may depend
    // on: the write takes nothing and writes nothing.
    let second = edit("second", 60);
    let (target, kind, events) = judged(&mut conn, &second).await;
    store.join_room(room, carol).await.expect("join");
    let joined_at = store
        .room(room)
        .await
        .expect("room")
        .expect("there")
        .last_seq;
    let before = dump(&mut conn, room).await;
    let stale = write(&mut conn, &second, &target, kind, events)
        .await
        .expect("write");
    assert!(stale.is_none(), "a room with a new event takes nothing");
    assert_eq!(dump(&mut conn, room).await, before, "and writes nothing");

    // The whole change reads again and lands after the join.
    let done = change_message(&mut conn, &second, None)
        .await
        .expect("change");
    assert_eq!(done.message.body, "second");
    assert_eq!(done.message.version, target.version + 1);
    assert_eq!(done.event.expect("event").seq, joined_at + 1);
}

#[tokio::test]
async fn a_deletion_that_waited_behind_another_instances_message_reads_again() {
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let (ann, bob) = (user(&store, "ann").await, user(&store, "bob").await);
    let (room, ids) = seeded_room(&store, "racing", ann, bob).await;
    let mut conn = PgConnection::connect(&schema.url()).await.expect("conn");
    let delete = MessageChange {
        message: ids[0],
        room: Some(room),
        user: ann,
        op: ChangeOp::Delete,
        allowed: Authority::SenderOrModerator,
        created_at: at(50),
    };
    let (target, kind, events) = judged(&mut conn, &delete).await;

    // Another instance appends a reply to the message, holding the room's
    // row lock until it commits, while the deletion waits for it.
    let mut other = PgConnection::connect(&schema.url()).await.expect("other");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query(
        "WITH bumped AS (UPDATE rooms SET last_seq = last_seq + 1, msg_count = msg_count + 1 \
             WHERE id = $1 RETURNING id, last_seq, msg_count) \
         INSERT INTO messages (room_id, seq, sender_id, body, created_at, msg_no, reply_to, \
             reply_seq, reply_sender_id, reply_snippet) \
         SELECT id, last_seq, $2, 'late reply', 0, msg_count, $3, $4, $5, 'the root' FROM bumped",
    )
    .bind(room.get())
    .bind(bob.get())
    .bind(ids[0].get())
    .bind(target.seq)
    .bind(ann.get())
    .execute(&mut *tx)
    .await
    .expect("reply");
    let (written, committed) =
        tokio::join!(write(&mut conn, &delete, &target, kind, events), async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            tx.commit().await
        });
    committed.expect("commit");
    assert!(
        written.expect("write").is_none(),
        "the deletion did not see the reply: it must read again"
    );

    // Read again, it erases the late reply's snippet too.
    let done = change_message(&mut conn, &delete, None)
        .await
        .expect("delete");
    assert!(done.message.deleted);
    let snippets: Vec<Option<String>> =
        sqlx::query_scalar("SELECT reply_snippet FROM messages WHERE reply_to = $1")
            .bind(ids[0].get())
            .fetch_all(&mut conn)
            .await
            .expect("snippets");
    assert_eq!(snippets, vec![None, None]);
}

/// `change` as the committer would write it in a batch, between a message
/// of bob's before it and one of ann's after it: the batch's answers, as
/// [`shape`] and the messages' seqs. A change that is refused or comes to
/// nothing never goes in a batch: it takes the op's path.
async fn in_a_batch(
    conn: &mut PgConnection,
    appender: &crate::storage::postgres::batch::PgAppender,
    change: &MessageChange,
    room: RoomId,
    (ann, bob): (UserId, UserId),
) -> String {
    use crate::storage::group_commit::{BatchAppend as _, Judgement, Placed, Stored};
    let row = standing(conn, change).await;
    let judged = match judge(&row, change) {
        Ok(Judged::Change {
            target,
            kind,
            events,
            ..
        }) if !matches!(change.op, ChangeOp::Delete) => Judgement {
            target,
            kind,
            events,
        },
        _ => return shape(&change_message(conn, change, None).await),
    };
    let before = NewMessage::new(room, bob, "before");
    let after = NewMessage::new(room, ann, "after");
    let placed = [Placed {
        before: 1,
        change,
        judged: &judged,
    }];
    let (stored, written) = appender
        .store_batch_with(&[&before, &after], &placed)
        .await
        .expect("batch");
    let seqs: Vec<String> = stored
        .iter()
        .map(|s| match s {
            Stored::New(m) => format!("{} {}", m.seq, m.body),
            other => format!("{other:?}"),
        })
        .collect();
    let [Some(changed)] = written.as_slice() else {
        panic!("the change was written: {written:?}");
    };
    assert!(
        changed.seen.is_some(),
        "a batch answers what the changer sees"
    );
    format!("{seqs:?} {}", shape(&Ok(changed.clone())))
}

/// The same with the locked transaction, the messages appended alone.
async fn one_after_another(
    conn: &mut PgConnection,
    store: &PostgresStorage,
    change: &MessageChange,
    room: RoomId,
    (ann, bob): (UserId, UserId),
) -> String {
    let row = standing(conn, change).await;
    let batched = matches!(judge(&row, change), Ok(Judged::Change { .. }))
        && !matches!(change.op, ChangeOp::Delete);
    if !batched {
        return shape(&locked::change_message::<PgDialect>(conn, change).await);
    }
    let before = store
        .append(NewMessage::new(room, bob, "before"))
        .await
        .expect("before")
        .message;
    let changed = locked::change_message::<PgDialect>(conn, change).await;
    let after = store
        .append(NewMessage::new(room, ann, "after"))
        .await
        .expect("after")
        .message;
    let seqs = vec![
        format!("{} {}", before.seq, before.body),
        format!("{} {}", after.seq, after.body),
    ];
    format!("{seqs:?} {}", shape(&changed))
}

#[tokio::test]
async fn a_change_written_in_a_batch_does_what_the_locked_transaction_does() {
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let (ann, bob) = (user(&store, "ann").await, user(&store, "bob").await);
    let (batch_room, batch_ids) = seeded_room(&store, "batched", ann, bob).await;
    let (slow_room, slow_ids) = seeded_room(&store, "slow", ann, bob).await;
    let mut conn = PgConnection::connect(&schema.url()).await.expect("conn");
    let appender = crate::storage::postgres::batch::PgAppender::new(
        crate::storage::postgres::connect_options(&schema.url()).expect("options"),
    );

    let mut batched = Vec::new();
    for change in script(ann, bob, &batch_ids) {
        batched.push(in_a_batch(&mut conn, &appender, &change, batch_room, (ann, bob)).await);
    }
    let mut slow = Vec::new();
    for change in script(ann, bob, &slow_ids) {
        slow.push(one_after_another(&mut conn, &store, &change, slow_room, (ann, bob)).await);
    }
    let seen = [
        "Edited",
        "added: true",
        "added: false",
        "pinned: true",
        "pinned: false",
        " after\"",
    ];
    same(&mut conn, (&batched, batch_room), (&slow, slow_room), &seen).await;
    drop(store);
}

#[tokio::test]
async fn a_stale_change_in_a_batch_stores_nothing_of_its_room() {
    use crate::storage::group_commit::{BatchAppend as _, Judgement, Placed, Stored};
    let schema = TestSchema::create().await;
    let store = PostgresStorage::connect(&schema.url(), &StorageOptions::default())
        .await
        .expect("connect");
    let (ann, bob) = (user(&store, "ann").await, user(&store, "bob").await);
    let carol = user(&store, "carol").await;
    let (room, ids) = seeded_room(&store, "moving", ann, bob).await;
    let (other, _) = seeded_room(&store, "still", ann, bob).await;
    let mut conn = PgConnection::connect(&schema.url()).await.expect("conn");
    let appender = crate::storage::postgres::batch::PgAppender::new(
        crate::storage::postgres::connect_options(&schema.url()).expect("options"),
    );
    let edit = MessageChange {
        message: ids[3],
        room: Some(room),
        user: bob,
        op: ChangeOp::Edit {
            body: "fixed".into(),
        },
        allowed: Authority::Sender,
        created_at: at(50),
    };
    let (target, kind, events) = judged(&mut conn, &edit).await;
    // An event other than a message after the judgement.
    store.join_room(room, carol).await.expect("join");
    let before = dump(&mut conn, room).await;

    let judgement = Judgement {
        target,
        kind,
        events,
    };
    let first = NewMessage::new(room, ann, "first");
    let elsewhere = NewMessage::new(other, ann, "elsewhere");
    let last = NewMessage::new(room, bob, "last");
    let (stored, written) = appender
        .store_batch_with(
            &[&first, &elsewhere, &last],
            &[Placed {
                before: 1,
                change: &edit,
                judged: &judgement,
            }],
        )
        .await
        .expect("batch");
    assert!(matches!(stored[0], Stored::Retry), "{stored:?}");
    assert!(matches!(stored[1], Stored::New(_)), "{stored:?}");
    assert!(matches!(stored[2], Stored::Retry), "{stored:?}");
    assert!(written[0].is_none(), "{written:?}");
    assert_eq!(dump(&mut conn, room).await, before, "nothing of the room");

    // Through group commit, the room's entries go again one by one, the
    // change judged again, in their order.
    let commit = crate::storage::group_commit::GroupCommit::start({
        let url = schema.url();
        move || {
            crate::storage::postgres::batch::PgAppender::new(
                crate::storage::postgres::connect_options(&url).expect("options"),
            )
        }
    });
    let (a, b) = tokio::join!(
        commit.append(first.clone()),
        commit.change_message(edit.clone(), Some(Box::new(judgement.clone())))
    );
    let c = commit.append(last.clone()).await;
    let (a, b, c) = (a.expect("first"), b.expect("edit"), c.expect("last"));
    let event = b.event.expect("an event").seq;
    assert_eq!(b.message.body, "fixed");
    assert!(a.message.seq < event && event < c.message.seq, "in order");
    drop(store);
}
