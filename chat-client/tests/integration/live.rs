//! The live [`Connection`]: events, sends, and recovery from dropped sockets
//! and a restarted server. (Token expiry, `auth` renewals and the 4401
//! fallback: `reauth.rs`.)

use std::time::Duration;

use chat_client::chat_core::timeline::MemberChange;
use chat_client::{
    ChatClient, ConnectOptions, Connection, ConnectionState, CreateRoomRequest, ErrorKind, Event,
    HistoryQuery, Message, PresenceStatus, RoomId, RoomMessages, RoomType, SendOptions, Seq,
};

use crate::proxy::Proxy;
use crate::support::TestServer;

/// Generous bound on any single wait: a hang fails instead of blocking CI.
const WAIT: Duration = Duration::from_secs(30);

async fn next(conn: &mut Connection) -> Event {
    tokio::time::timeout(WAIT, conn.next_event())
        .await
        .expect("an event within the bound")
        .expect("the connection is still open")
}

/// The next event `pick` accepts, skipping the others.
async fn next_matching<T>(conn: &mut Connection, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    loop {
        if let Some(found) = pick(next(conn).await) {
            return found;
        }
    }
}

/// Message events until `room` reaches `last`, plus every state change seen.
async fn messages_until(
    conn: &mut Connection,
    room: RoomId,
    last: Seq,
) -> (Vec<Message>, Vec<ConnectionState>) {
    let mut messages = Vec::new();
    let mut states = Vec::new();
    while messages.last().is_none_or(|m: &Message| m.seq < last) {
        match next(conn).await {
            Event::Message(m) if m.room == room => messages.push(m),
            Event::StateChanged(s) => states.push(s),
            _ => {}
        }
    }
    (messages, states)
}

fn seqs(messages: &[Message]) -> Vec<Seq> {
    messages.iter().map(|m| m.seq).collect()
}

async fn public_room(client: &ChatClient, name: &str) -> RoomId {
    client
        .create_room(CreateRoomRequest {
            name: Some(name.into()),
            kind: Some(RoomType::Public),
            ..Default::default()
        })
        .await
        .expect("create a public room")
        .id
}

async fn no_rate_limit() -> TestServer {
    TestServer::start_with(|c| c.rate_limit = 0).await
}

#[tokio::test]
async fn events_sends_and_errors() {
    let server = no_rate_limit().await;
    let (alice, _) = server.user("alice").await;
    let (bob, bob_user) = server.user("bob").await;
    let (carol, _) = server.user("carol").await;
    let lobby = public_room(&alice, "lobby").await;

    let mut a = alice.connect().await.expect("alice connects");
    assert_eq!(a.state(), ConnectionState::Connected);
    assert_eq!(a.subscribe(lobby).await.expect("subscribe by id"), lobby);
    let mut b = bob.connect().await.expect("bob connects");
    assert_eq!(
        b.subscribe("lobby").await.expect("subscribe by name joins"),
        lobby
    );

    // Bob's join, a timeline event (seq 1), then his presence, seen by
    // alice.
    let joined = next_matching(&mut a, |e| match e {
        Event::Member(m) if m.room == lobby => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(
        (joined.seq, joined.user, joined.change),
        (1, bob_user.id, MemberChange::Joined)
    );
    next_matching(&mut a, |e| match e {
        Event::Presence {
            room,
            user,
            status: PresenceStatus::Online,
        } => (room == lobby && user == bob_user.id).then_some(()),
        _ => None,
    })
    .await;

    // A message over HTTP, then one over bob's socket.
    bob.send(lobby, "over http", None).await.expect("http send");
    let sent = b.send(lobby, "over the socket").await.expect("socket send");
    assert_eq!(sent.seq, 3);
    assert_eq!(sent.body, "over the socket");
    assert_eq!(sent.sender, bob_user.id);
    assert!(sent.client_id.is_some(), "a client_id is generated");

    // Alice's own sends come back once, in order, among the others.
    let mine = a.send("lobby", "mine").await.expect("alice sends");
    assert_eq!(mine.seq, 4);
    let (seen, _) = messages_until(&mut a, lobby, 4).await;
    assert_eq!(seqs(&seen), [2, 3, 4]);
    assert_eq!(seen[2], mine);
    let (bob_seen, _) = messages_until(&mut b, lobby, 4).await;
    assert_eq!(seqs(&bob_seen), [2, 3, 4], "bob's own send once, in order");

    // Read marks and typing.
    b.mark_read(lobby, 4).await.expect("mark read");
    let read = next_matching(&mut a, |e| match e {
        Event::Read { room, user, seq } if room == lobby => Some((user, seq)),
        _ => None,
    })
    .await;
    assert_eq!(read, (bob_user.id, 4));
    b.typing(lobby).await.expect("typing");
    let typing = next_matching(&mut a, |e| match e {
        Event::Typing { room, user } if room == lobby => Some(user),
        _ => None,
    })
    .await;
    assert_eq!(typing, bob_user.id);

    // Errors come back as the HTTP call's would.
    let private = carol
        .create_room(CreateRoomRequest {
            name: Some("carols".into()),
            ..Default::default()
        })
        .await
        .expect("carol's private room")
        .id;
    let e = a
        .send(private, "let me in")
        .await
        .expect_err("not a member");
    assert!(
        matches!(e.kind(), ErrorKind::Forbidden | ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(e.code().is_some());
    let e = a.send(lobby, "   ").await.expect_err("empty body");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = a.subscribe("no-such-room").await.expect_err("unknown room");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = a.subscribe(private).await.expect_err("private room");
    assert!(matches!(
        e.kind(),
        ErrorKind::Forbidden | ErrorKind::NotFound
    ));
    let e = a
        .mark_read(private, 1)
        .await
        .expect_err("read a foreign room");
    assert!(matches!(
        e.kind(),
        ErrorKind::Forbidden | ErrorKind::NotFound
    ));
    // The connection goes on after errors.
    let after = a
        .send(lobby, "still here")
        .await
        .expect("send after errors");
    assert_eq!(after.seq, 5);

    // Deleting the room ends both subscriptions.
    alice.delete_room(lobby).await.expect("delete");
    let deleted = next_matching(&mut b, |e| match e {
        Event::RoomDeleted { room } => Some(room),
        _ => None,
    })
    .await;
    assert_eq!(deleted, lobby);

    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn unsubscribe_stops_events_and_close_ends_the_stream() {
    let server = no_rate_limit().await;
    let (alice, _) = server.user("alice").await;
    let first = public_room(&alice, "first").await;
    let second = public_room(&alice, "second").await;
    let mut a = alice.connect().await.expect("connect");
    a.subscribe(first).await.expect("subscribe first");
    a.subscribe(second).await.expect("subscribe second");
    a.unsubscribe("first").await.expect("unsubscribe");
    alice.send(first, "unseen", None).await.expect("send");
    alice.send(second, "seen", None).await.expect("send");
    let m = next_matching(&mut a, |e| match e {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!((m.room, m.body.as_str()), (second, "seen"));
    // Replay from the start of a room.
    a.subscribe_from(first, 0).await.expect("subscribe from 0");
    let m = next_matching(&mut a, |e| match e {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!((m.room, m.seq, m.body.as_str()), (first, 1, "unseen"));
    a.close().await;
}

#[tokio::test]
async fn socket_drop_mid_burst_loses_and_repeats_nothing() {
    const BURST: Seq = 1_000;
    let server = no_rate_limit().await;
    let (sender, _) = server.user("sender").await;
    let (direct, _) = server.user("subscriber").await;
    let room = public_room(&sender, "burst").await;
    direct.join_room(room).await.expect("join");

    // The subscriber talks to the server through a proxy the test can cut.
    let proxy = Proxy::start(server.addr()).await;
    let sub = ChatClient::new(&format!("http://{}", proxy.addr)).expect("client");
    sub.set_tokens(direct.tokens());
    let mut conn = sub.connect().await.expect("connect through the proxy");
    conn.subscribe(room).await.expect("subscribe");

    // The first half runs while the socket is cut partway through it; the
    // second half is sent only once the socket is cut, so it can reach the
    // subscriber only by the resubscribe's replay or the gap fill.
    let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
    let burst = tokio::spawn(async move {
        let mut cut = Some(cut_rx);
        for i in 1..=BURST {
            if i == BURST / 2 + 1
                && let Some(cut) = cut.take()
            {
                cut.await.expect("the test signals the cut");
            }
            sender
                .send(room, &format!("burst {i}"), None)
                .await
                .expect("http send");
        }
    });

    let (mut seen, _) = messages_until(&mut conn, room, 100).await;
    proxy.cut();
    cut_tx.send(()).expect("the burst task waits");
    let restore = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            proxy.restore();
        })
    };
    // Sent while cut: queued, then stored once after the restore.
    let (one, two) = tokio::join!(conn.send(room, "queued 1"), conn.send(room, "queued 2"));
    let (one, two) = (one.expect("queued send 1"), two.expect("queued send 2"));
    restore.await.expect("restore task");
    burst.await.expect("burst task");

    // The subscriber's join is seq 1: the messages are 2..=BURST + 3.
    let (rest, states) = messages_until(&mut conn, room, BURST + 3).await;
    seen.extend(rest);
    assert_eq!(seqs(&seen), (2..=BURST + 3).collect::<Vec<_>>());
    assert!(
        states
            .iter()
            .any(|s| matches!(s, ConnectionState::Reconnecting { .. })),
        "{states:?}"
    );
    assert_eq!(states.last(), Some(&ConnectionState::Connected));
    for mine in [&one, &two] {
        let copies: Vec<_> = seen.iter().filter(|m| m.body == mine.body).collect();
        assert_eq!(copies, [mine], "{} delivered once", mine.body);
    }

    // Stored once each: the room holds exactly BURST + 2 messages.
    let tail = direct
        .history(room, HistoryQuery::new().after(BURST + 1).limit(200))
        .await
        .expect("history");
    assert_eq!(seqs(&tail.chat_history), [BURST + 2, BURST + 3]);
    assert!(!tail.has_more);
    conn.close().await;
}

#[tokio::test]
async fn a_slow_reader_gets_everything_from_history() {
    const COUNT: Seq = 300;
    let server = no_rate_limit().await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let room = public_room(&alice, "busy").await;
    bob.join_room(room).await.expect("join");
    // Room for 8 events: the rest is dropped on arrival and fetched from
    // history as the application catches up.
    let mut conn = alice
        .connect_with(ConnectOptions::default().event_capacity(8))
        .await
        .expect("connect");
    conn.subscribe(room).await.expect("subscribe");
    for i in 1..=COUNT {
        bob.send(room, &format!("m{i}"), None).await.expect("send");
    }
    // Acks keep flowing while nobody reads events.
    let own = conn
        .send(room, "own")
        .await
        .expect("send while not reading");
    // Bob's join is seq 1.
    assert_eq!(own.seq, COUNT + 2);
    let (seen, _) = messages_until(&mut conn, room, COUNT + 2).await;
    assert_eq!(seqs(&seen), (2..=COUNT + 2).collect::<Vec<_>>());
    assert_eq!(seen.last(), Some(&own));
    conn.close().await;
}

#[tokio::test]
async fn keepalive_pings_do_not_disturb_answers() {
    let server = no_rate_limit().await;
    let (alice, _) = server.user("alice").await;
    let room = public_room(&alice, "quiet").await;
    let mut conn = alice
        .connect_with(ConnectOptions::default().keepalive(Duration::from_millis(10)))
        .await
        .expect("connect");
    for round in 1..=20 {
        conn.subscribe(room).await.expect("subscribe");
        let sent = conn.send(room, format!("m{round}")).await.expect("send");
        conn.mark_read(room, sent.seq).await.expect("read");
        let e = conn.mark_read(RoomId::from(9_999), 1).await;
        assert!(
            e.is_err(),
            "an unknown room's read fails, not a ping's pong"
        );
        // Let a few pings go by.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // (With a 10 ms interval a busy machine may take the socket for dead
    // and reconnect; the answers and the order must hold either way.)
    let (seen, _) = messages_until(&mut conn, room, 20).await;
    assert_eq!(seqs(&seen), (1..=20).collect::<Vec<_>>());
    conn.close().await;
}

#[tokio::test]
async fn an_oversized_frame_fails_its_send_and_the_connection_recovers() {
    let server = TestServer::start_with(|c| {
        c.rate_limit = 0;
        c.max_frame_bytes = 16 * 1024;
    })
    .await;
    let (alice, _) = server.user("alice").await;
    let room = public_room(&alice, "big").await;
    let mut conn = alice.connect().await.expect("connect");
    conn.subscribe(room).await.expect("subscribe");
    let e = conn
        .send(room, "x".repeat(32 * 1024))
        .await
        .expect_err("the server closes 1009");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let sent = conn.send(room, "small").await.expect("send after 1009");
    assert_eq!(sent.seq, 1);
    let (seen, states) = messages_until(&mut conn, room, 1).await;
    assert_eq!(seqs(&seen), [1]);
    assert!(states.contains(&ConnectionState::Connected), "{states:?}");
    conn.close().await;
}

#[tokio::test]
async fn server_restart_resumes_from_the_cursor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("sqlite://{}", dir.path().join("chat.db").display());
    let tune_storage = storage.clone();
    let first = TestServer::start_with(move |c| {
        c.storage_url = tune_storage;
        c.rate_limit = 0;
    })
    .await;
    let addr = first.addr();
    let (alice, _) = first.user("alice").await;
    let (bob, _) = first.user("bob").await;
    let room = public_room(&alice, "durable").await;
    bob.join_room(room).await.expect("join");

    let mut conn = alice.connect().await.expect("connect");
    conn.subscribe(room).await.expect("subscribe");
    for i in 1..=5 {
        bob.send(room, &format!("before {i}"), None)
            .await
            .expect("send");
    }
    let (mut seen, _) = messages_until(&mut conn, room, 5).await;

    first.shutdown().await;
    let second = TestServer::start_with(move |c| {
        c.listen = addr;
        c.storage_url = storage;
        c.rate_limit = 0;
    })
    .await;
    assert_eq!(second.addr(), addr);
    for i in 1..=5 {
        bob.send(room, &format!("after {i}"), None)
            .await
            .expect("send");
    }
    // Bob's join is seq 1.
    let (rest, states) = messages_until(&mut conn, room, 11).await;
    seen.extend(rest);
    assert_eq!(seqs(&seen), (2..=11).collect::<Vec<_>>());
    assert_eq!(
        states.first(),
        Some(&ConnectionState::Reconnecting { attempt: 1 })
    );
    assert_eq!(states.last(), Some(&ConnectionState::Connected));
    assert_eq!(conn.state(), ConnectionState::Connected);

    // The resumed connection sends too.
    let sent = conn.send(room, "back").await.expect("send after restart");
    assert_eq!(sent.seq, 12);
    conn.close().await;
}

/// Edits and deletions reach a subscriber as timeline events, each once and
/// in seq order with the messages around them, also when they happen while
/// its socket is cut: the resume replays them, showing each message as it
/// stands. The typed calls answer the message as it now is.
#[tokio::test]
async fn edits_and_deletions_resume_once_in_order() {
    let server = no_rate_limit().await;
    let (author, _) = server.user("author").await;
    let (reader, _) = server.user("reader").await;
    let room = public_room(&author, "changes").await;
    reader.join_room(room).await.expect("join");

    let proxy = Proxy::start(server.addr()).await;
    let sub = ChatClient::new(&format!("http://{}", proxy.addr)).expect("client");
    sub.set_tokens(reader.tokens());
    let mut conn = sub.connect().await.expect("connect through the proxy");
    conn.subscribe(room).await.expect("subscribe");

    let first = author.send(room, "helo", None).await.expect("send");
    let edited = author.edit_message(first.id, "hello").await.expect("edit");
    assert_eq!((edited.body.as_str(), edited.version), ("hello", 1));
    assert!(edited.edited_at.is_some());
    // Live: the message, then its edit.
    let got = next_matching(&mut conn, |e| match e {
        Event::MessageEdited(u) => Some(u),
        _ => None,
    })
    .await;
    assert_eq!(got.message.id, first.id);
    assert_eq!(got.seq, first.seq + 1);
    assert_eq!(got.message.body, "hello");

    // While the socket is cut: another edit, a message, its deletion.
    proxy.cut();
    author
        .edit_message(first.id, "hello!")
        .await
        .expect("second edit");
    let second = author.send(room, "regrettable", None).await.expect("send");
    let tombstone = author.delete_message(second.id).await.expect("delete");
    assert!(tombstone.deleted && tombstone.body.is_empty());
    let again = author
        .delete_message(second.id)
        .await
        .expect("delete again");
    assert_eq!(again, tombstone, "deleting twice answers the same");
    let refused = reader
        .edit_message(first.id, "not mine")
        .await
        .expect_err("not the sender");
    assert_eq!(refused.code(), Some(chat_client::ErrorCode::NotSender));
    assert_eq!(refused.kind(), ErrorKind::Forbidden);
    proxy.restore();

    // Resumed: every event above the cursor, once, in order.
    let mut after: Vec<(Seq, &'static str, String)> = Vec::new();
    while after.len() < 3 {
        match next(&mut conn).await {
            Event::MessageEdited(u) => after.push((u.seq, "edited", u.message.body)),
            Event::MessageDeleted(u) => after.push((u.seq, "deleted", u.message.body)),
            Event::Message(m) => after.push((m.seq, "message", m.body)),
            _ => {}
        }
    }
    assert_eq!(
        after,
        vec![
            (first.seq + 2, "edited", "hello!".to_owned()),
            // Replayed as it stands now: already a tombstone.
            (second.seq, "message", String::new()),
            (second.seq + 1, "deleted", String::new()),
        ]
    );
    // The refused edit and the second deletion made no event.
    let marker = author.send(room, "after", None).await.expect("send");
    let next_seq = next_matching(&mut conn, |e| match e {
        Event::Message(m) => Some(m.seq),
        Event::MessageEdited(u) | Event::MessageDeleted(u) => Some(u.seq),
        _ => None,
    })
    .await;
    assert_eq!(next_seq, marker.seq);
    assert_eq!(marker.seq, second.seq + 2);

    // A reaction whose key needs encoding in the path.
    let reacted = reader.react(marker.id, "+1").await.expect("react");
    assert_eq!(reacted.reactions.len(), 1);
    assert_eq!(
        (
            reacted.reactions[0].key.as_str(),
            reacted.reactions[0].count
        ),
        ("+1", 1)
    );
    assert!(reacted.reactions[0].me);
    let event = next_matching(&mut conn, |e| match e {
        Event::Reaction(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!((event.key.as_str(), event.added), ("+1", true));
    assert_eq!(event.message.id, marker.id);
    assert_eq!(event.seq, marker.seq + 1);
    let taken = reader.unreact(marker.id, "+1").await.expect("unreact");
    assert!(taken.reactions.is_empty());
    conn.close().await;
}

/// Replies, thread replies and mentions: sent over the connection and over
/// HTTP, replayed once and in order after a cut, kept apart by the room
/// model (the thread under its root, counted once), paged by `thread`, and
/// counted in the room list until read.
#[tokio::test]
async fn replies_threads_and_mentions_resume_once_in_order() {
    let server = no_rate_limit().await;
    let (author, _) = server.user("author").await;
    let (reader, reader_user) = server.user("reader").await;
    let reader_id = reader_user.id;
    let room = public_room(&author, "threads").await;
    reader.join_room(room).await.expect("join");

    let proxy = Proxy::start(server.addr()).await;
    let sub = ChatClient::new(&format!("http://{}", proxy.addr)).expect("client");
    sub.set_tokens(reader.tokens());
    let mut conn = sub.connect().await.expect("connect through the proxy");
    conn.subscribe(room).await.expect("subscribe");
    let mut model = RoomMessages::new(room, reader_id);

    let root = author.send(room, "lunch?", None).await.expect("send");
    let live = next_matching(&mut conn, |e| match e {
        Event::Message(m) => Some(m),
        _ => None,
    })
    .await;
    model.extend([live]);
    // The reader answers in the thread over the socket, quoting the root.
    let mine = conn
        .send_with(
            room,
            "noon?",
            SendOptions::new().reply_to(root.id).in_thread(root.id),
        )
        .await
        .expect("thread reply");
    assert_eq!(mine.thread_root, Some(root.id));
    assert_eq!(
        mine.reply_to.as_ref().map(|r| r.snippet.as_str()),
        Some("lunch?")
    );

    // While the socket is cut: two thread replies (one mentioning the
    // reader) and a message in the room.
    proxy.cut();
    let options = SendOptions::new().in_thread(root.id).mention(reader_id);
    author
        .send_with(room, "noon it is", None, options)
        .await
        .expect("reply");
    author
        .send_with(room, "see you", None, SendOptions::new().in_thread(root.id))
        .await
        .expect("reply");
    let main = author
        .send(room, "back in the room", None)
        .await
        .expect("send");
    let listed = reader.rooms().await.expect("rooms");
    let entry = listed.iter().find(|r| r.id == room).expect("listed");
    assert_eq!((entry.unread_count, entry.mention_count), (3, 1));
    proxy.restore();

    // Resumed: each once, in order; the model files them.
    let mut seqs = Vec::new();
    while seqs.last() != Some(&main.seq) {
        let event = next(&mut conn).await;
        if let Event::Message(m) = &event {
            seqs.push(m.seq);
        }
        model.apply(&event);
    }
    // The reader's own reply first: a sent message comes as an event too.
    assert_eq!(seqs, vec![mine.seq, main.seq - 2, main.seq - 1, main.seq]);
    let bodies: Vec<&str> = model.messages().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["lunch?", "back in the room"]);
    let thread: Vec<&str> = model.thread(root.id).map(|m| m.body.as_str()).collect();
    assert_eq!(thread, vec!["noon?", "noon it is", "see you"]);
    let summary = model.get(root.id).and_then(|m| m.thread).expect("summary");
    assert_eq!(summary.reply_count, 3, "counted from the events, once each");
    assert_eq!(
        model.thread(root.id).nth(1).map(|m| m.mentions.clone()),
        Some(vec![reader_id])
    );

    // The server's view: three replies, paged by seq.
    let page = reader
        .thread(root.id, HistoryQuery::new().after(0).limit(2))
        .await
        .expect("thread");
    assert_eq!(page.root.thread.map(|t| t.reply_count), Some(3));
    assert_eq!(page.replies.len(), 2);
    assert!(page.has_more);
    conn.mark_read(room, main.seq).await.expect("read");
    let listed = reader.rooms().await.expect("rooms");
    let entry = listed.iter().find(|r| r.id == room).expect("listed");
    assert_eq!((entry.unread_count, entry.mention_count), (0, 0));
    conn.close().await;
}
