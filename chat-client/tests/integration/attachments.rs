//! Attachments: uploads from a file, bytes and a reader, downloads whole,
//! by range and of thumbnails, sending them with messages (HTTP and the
//! live connection, across a dropped socket), who may see them, links.

use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_client::{
    Attachment, ChatClient, ClientError, ConnectionState, CreateRoomRequest, ErrorCode, ErrorKind,
    Event, HistoryQuery, Message, Progress, RoomId, RoomType, SendOptions, Tokens, Transfer,
};
use rand::RngCore;

use crate::proxy::Proxy;
use crate::support::TestServer;

/// Generous bound on any single wait: a hang fails instead of blocking CI.
const WAIT: Duration = Duration::from_secs(30);

const MIB: usize = 1024 * 1024;

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A progress callback and what it was called with.
fn recorder() -> (Progress, Arc<Mutex<Vec<Transfer>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let sink = calls.clone();
    let progress: Progress = Arc::new(move |t| sink.lock().expect("not poisoned").push(t));
    (progress, calls)
}

/// Checks that progress rose step by step to `size`, every call knowing the
/// total, and returns how many calls there were.
fn assert_rose_to(calls: &Mutex<Vec<Transfer>>, size: u64) -> usize {
    let calls = calls.lock().expect("not poisoned").clone();
    assert!(calls.len() > 1, "several calls for {size} bytes: {calls:?}");
    assert!(
        calls.windows(2).all(|w| w[0].done < w[1].done),
        "progress only rises"
    );
    assert!(calls.iter().all(|t| t.total == Some(size)), "{calls:?}");
    let last = calls.last().expect("a call");
    assert_eq!(last.done, size, "the last call counts every byte");
    calls.len()
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

async fn next_message(conn: &mut chat_client::Connection) -> Message {
    loop {
        let event = tokio::time::timeout(WAIT, conn.next_event())
            .await
            .expect("an event within the bound")
            .expect("the connection is open");
        if let Event::Message(m) = event {
            return m;
        }
    }
}

async fn download_all(client: &ChatClient, id: chat_client::AttachmentId) -> Vec<u8> {
    let mut bytes = Vec::new();
    client
        .download(id, &mut bytes, None)
        .await
        .expect("download");
    bytes
}

fn assert_not_found(result: Result<impl std::fmt::Debug, ClientError>) {
    let e = result.expect_err("not visible");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(e.code(), Some(ErrorCode::AttachmentNotFound), "{e}");
}

/// A 640×480 PNG with a transparent band.
fn png() -> Vec<u8> {
    let image = image::RgbaImage::from_fn(640, 480, |x, y| {
        let alpha = if x < 100 { 0 } else { 255 };
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, alpha])
    });
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode a PNG");
    out.into_inner()
}

#[tokio::test]
async fn a_file_goes_up_and_comes_back_with_progress() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("random.bin");
    // Not a multiple of the progress step: the last call is its own.
    let data = random_bytes(5 * MIB + 777);
    std::fs::write(&path, &data).expect("write the file");
    let size = data.len() as u64;

    let (progress, calls) = recorder();
    let uploaded = alice
        .upload_file(&path, Some(progress))
        .await
        .expect("upload");
    assert_eq!(uploaded.name, "random.bin");
    assert_eq!(uploaded.size, size);
    assert_eq!(uploaded.content_type, "application/octet-stream");
    assert_eq!((uploaded.width, uploaded.thumbnail.as_ref()), (None, None));
    let steps = assert_rose_to(&calls, size);
    assert!(steps >= 10, "about one call per 64 KiB or more: {steps}");

    // The uploader sees it, unsent.
    let info = alice.attachment(uploaded.id).await.expect("info");
    assert_eq!(info.attachment, uploaded);
    assert_eq!((info.message_id, info.room), (None, None));
    let usage = alice.upload_usage().await.expect("usage");
    assert_eq!(usage.used, size);
    assert!(
        usage.quota >= usage.used && usage.max_file >= size,
        "{usage:?}"
    );

    // Into memory, with progress.
    let (progress, calls) = recorder();
    let mut back = Vec::new();
    let n = alice
        .download(uploaded.id, &mut back, Some(progress))
        .await
        .expect("download");
    assert_eq!(n, size);
    assert!(back == data, "the same bytes back");
    assert_rose_to(&calls, size);

    // Into a file: complete under its name, no `.part` left.
    let target = dir.path().join("copy.bin");
    let n = alice
        .download_to_file(uploaded.id, &target, None)
        .await
        .expect("download to a file");
    assert_eq!(n, size);
    assert!(std::fs::read(&target).expect("the copy") == data);
    assert!(!Path::new(&format!("{}.part", target.display())).exists());

    // A file that is not there fails locally.
    let e = alice
        .upload_file(dir.path().join("missing.bin"), None)
        .await
        .expect_err("no such file");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
}

#[tokio::test]
async fn bytes_and_readers_without_a_length() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;

    let text = alice
        .upload_bytes("notes.txt", b"remember the milk\n".to_vec())
        .await
        .expect("upload bytes");
    assert_eq!(text.name, "notes.txt");
    assert_eq!(text.size, 18);
    assert!(
        text.content_type.starts_with("text/plain"),
        "{}",
        text.content_type
    );
    assert_eq!(download_all(&alice, text.id).await, b"remember the milk\n");

    // Chunked: the length is not known ahead.
    let data = random_bytes(MIB + 12_345);
    let (progress, calls) = recorder();
    let streamed = alice
        .upload_reader(
            "stream.bin",
            Cursor::new(data.clone()),
            None,
            Some(progress),
        )
        .await
        .expect("upload a reader");
    assert_eq!(streamed.size, data.len() as u64);
    assert!(download_all(&alice, streamed.id).await == data);
    let calls = calls.lock().expect("not poisoned").clone();
    assert!(calls.iter().all(|t| t.total.is_none()), "no total known");
    assert_eq!(calls.last().map(|t| t.done), Some(data.len() as u64));

    // Empty: one call, at the end.
    let (progress, calls) = recorder();
    let empty = alice
        .upload_reader(
            "empty.txt",
            Cursor::new(Vec::new()),
            Some(0),
            Some(progress),
        )
        .await
        .expect("an empty file");
    assert_eq!(empty.size, 0);
    assert!(download_all(&alice, empty.id).await.is_empty());
    let calls = calls.lock().expect("not poisoned").clone();
    assert_eq!(
        calls.iter().map(|t| (t.done, t.total)).collect::<Vec<_>>(),
        [(0, Some(0))]
    );

    // A reader shorter than the length it was announced with.
    let e = alice
        .upload_reader("short.bin", Cursor::new(vec![1; 10]), Some(20), None)
        .await
        .expect_err("the reader ends early");
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");

    // A name the server will not take.
    let e = alice
        .upload_bytes("", b"x".to_vec())
        .await
        .expect_err("an empty name");
    assert_eq!(e.code(), Some(ErrorCode::InvalidInput), "{e}");

    let usage = alice.upload_usage().await.expect("usage");
    assert_eq!(usage.used, text.size + streamed.size);
}

#[tokio::test]
async fn ranges_of_a_file() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let data = random_bytes(300_000);
    let file = alice
        .upload_bytes("data.bin", data.clone())
        .await
        .expect("upload");

    let mut part = Vec::new();
    let n = alice
        .download_range(file.id, 10..20, &mut part)
        .await
        .expect("range");
    assert_eq!((n, part.as_slice()), (10, &data[10..20]));

    part.clear();
    alice
        .download_range(file.id, 299_995.., &mut part)
        .await
        .expect("to the end");
    assert_eq!(part, &data[299_995..]);

    part.clear();
    alice
        .download_range(file.id, ..=65_536, &mut part)
        .await
        .expect("from the start");
    assert_eq!(part, &data[..=65_536]);

    part.clear();
    let n = alice
        .download_range(file.id, 299_990..400_000, &mut part)
        .await
        .expect("past the end: what there is");
    assert_eq!((n, part.as_slice()), (10, &data[299_990..]));

    part.clear();
    let n = alice
        .download_range(file.id, 5..5, &mut part)
        .await
        .expect("empty");
    assert_eq!(n, 0);

    let e = alice
        .download_range(file.id, 300_000.., &mut part)
        .await
        .expect_err("starts past the end");
    assert_eq!(e.code(), Some(ErrorCode::RangeNotSatisfiable), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn an_image_gets_a_thumbnail() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let dir = tempfile::tempdir().expect("temp dir");

    let photo = alice
        .upload_bytes("photo.png", png())
        .await
        .expect("upload a PNG");
    assert_eq!(photo.content_type, "image/png");
    assert_eq!((photo.width, photo.height), (Some(640), Some(480)));
    let thumb = photo.thumbnail.clone().expect("a thumbnail");
    assert_eq!((thumb.width, thumb.height), (320, 240));
    assert_eq!(thumb.content_type, "image/png", "it has transparency");

    let mut bytes = Vec::new();
    let n = alice
        .download_thumbnail(photo.id, &mut bytes, None)
        .await
        .expect("thumbnail");
    assert_eq!(n, thumb.size);
    let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .expect("a PNG thumbnail");
    assert_eq!((decoded.width(), decoded.height()), (320, 240));

    let target = dir.path().join("thumb.png");
    let n = alice
        .download_thumbnail_to_file(photo.id, &target, None)
        .await
        .expect("thumbnail to a file");
    assert_eq!(n, thumb.size);
    assert_eq!(std::fs::read(&target).expect("the thumbnail"), bytes);

    // Not an image: no thumbnail.
    let text = alice
        .upload_bytes("a.txt", b"hello".to_vec())
        .await
        .expect("upload");
    let e = alice
        .download_thumbnail(text.id, &mut Vec::new(), None)
        .await
        .expect_err("no thumbnail");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // Bytes that claim to be a PNG and are not one.
    let mut broken = png();
    broken.truncate(100);
    let e = alice
        .upload_bytes("broken.png", broken)
        .await
        .expect_err("not decodable");
    assert_eq!(e.code(), Some(ErrorCode::InvalidImage), "{e}");
}

#[tokio::test]
async fn messages_carry_attachments_over_http_and_the_connection() {
    let server = TestServer::start_with(|c| c.rate_limit = 0).await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let (carol, _) = server.user("carol").await;
    let room = public_room(&alice, "files").await;
    bob.join_room(room).await.expect("bob joins");
    let mut bobs = bob.connect().await.expect("connect");
    bobs.subscribe(room).await.expect("subscribe");

    // Over HTTP, with an empty body.
    let a = alice
        .upload_bytes("a.txt", b"first".to_vec())
        .await
        .expect("upload");
    let b = alice.upload_bytes("b.png", png()).await.expect("upload");
    let sent = alice
        .send_with(room, "", None, SendOptions::new().attachments([a.id, b.id]))
        .await
        .expect("send with attachments");
    let live = next_message(&mut bobs).await;
    assert_eq!(live.id, sent.id);
    assert_eq!(live.body, "");
    assert_eq!(live.attachments, vec![a.clone(), b.clone()]);

    // Over the connection.
    let alices = alice.connect().await.expect("connect");
    let c = alice
        .upload_bytes("c.bin", random_bytes(70_000))
        .await
        .expect("upload");
    let echoed = alices
        .send_with(
            room,
            "over the socket",
            SendOptions::new().attachments([c.id]),
        )
        .await
        .expect("send over the connection");
    assert_eq!(echoed.attachments, vec![c.clone()]);
    let live = next_message(&mut bobs).await;
    assert_eq!((live.id, &live.attachments), (echoed.id, &vec![c.clone()]));

    let page = bob
        .history(room, HistoryQuery::new())
        .await
        .expect("history");
    let with_files: Vec<_> = page
        .chat_history
        .iter()
        .map(|m| m.attachments.iter().map(|f| f.id).collect::<Vec<_>>())
        .filter(|ids| !ids.is_empty())
        .collect();
    assert_eq!(with_files, vec![vec![a.id, b.id], vec![c.id]]);

    // Sent: members read them, the message and room are known.
    let info = bob.attachment(a.id).await.expect("a member sees it");
    assert_eq!((info.message_id, info.room), (Some(sent.id), Some(room)));
    assert_eq!(download_all(&bob, a.id).await, b"first");
    // A stranger does not.
    assert_not_found(carol.attachment(a.id).await);
    assert_not_found(carol.download(a.id, &mut Vec::new(), None).await);
    assert_not_found(carol.download_thumbnail(b.id, &mut Vec::new(), None).await);

    // Each upload goes with one message, and stays with it.
    let e = alice
        .send_with(room, "again", None, SendOptions::new().attachments([a.id]))
        .await
        .expect_err("already sent");
    assert_eq!(e.code(), Some(ErrorCode::AttachmentInUse), "{e}");
    let e = alice
        .delete_attachment(a.id)
        .await
        .expect_err("sent: not deletable alone");
    assert_eq!(e.code(), Some(ErrorCode::AttachmentInUse), "{e}");
    // Only one's own uploads.
    let bobs_file = bob
        .upload_bytes("bob.txt", b"mine".to_vec())
        .await
        .expect("upload");
    let e = alice
        .send_with(
            room,
            "",
            None,
            SendOptions::new().attachments([bobs_file.id]),
        )
        .await
        .expect_err("someone else's upload");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    alices.close().await;
    bobs.close().await;
}

/// A send queued while the socket is down goes out after the reconnect
/// with its attachments.
#[tokio::test]
async fn the_offline_queue_keeps_attachments() {
    let server = TestServer::start_with(|c| c.rate_limit = 0).await;
    let (alice, _) = server.user("alice").await;
    let room = public_room(&alice, "queued").await;

    let proxy = Proxy::start(server.addr()).await;
    let through = ChatClient::new(&format!("http://{}", proxy.addr)).expect("client");
    through.set_tokens(alice.tokens());
    let mut conn = through.connect().await.expect("connect through the proxy");
    conn.subscribe(room).await.expect("subscribe");
    let file = alice
        .upload_bytes("queued.txt", b"later".to_vec())
        .await
        .expect("upload");

    proxy.cut();
    loop {
        let event = tokio::time::timeout(WAIT, conn.next_event())
            .await
            .expect("an event")
            .expect("open");
        if matches!(
            event,
            Event::StateChanged(ConnectionState::Reconnecting { .. })
        ) {
            break;
        }
    }
    let conn = Arc::new(conn);
    let sending = {
        let conn = conn.clone();
        let options = SendOptions::new().attachments([file.id]);
        tokio::spawn(async move { conn.send_with(room, "", options).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sending.is_finished(), "queued while the socket is down");
    proxy.restore();
    let sent = tokio::time::timeout(WAIT, sending)
        .await
        .expect("sent after the reconnect")
        .expect("task")
        .expect("send");
    assert_eq!(sent.attachments, vec![file.clone()]);
    let page = alice
        .history(room, HistoryQuery::new())
        .await
        .expect("history");
    let carried: Vec<Vec<Attachment>> = page
        .chat_history
        .iter()
        .map(|m| m.attachments.clone())
        .collect();
    assert_eq!(carried, vec![vec![file]], "stored once, with its file");
}

#[tokio::test]
async fn uploads_are_private_until_sent_and_deletable() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let (bob, _) = server.user("bob").await;
    let file = alice
        .upload_bytes("secret.txt", b"unsent".to_vec())
        .await
        .expect("upload");

    assert_not_found(bob.attachment(file.id).await);
    assert_not_found(bob.download(file.id, &mut Vec::new(), None).await);
    assert_not_found(bob.delete_attachment(file.id).await);
    assert_not_found(bob.attachment_link(file.id).await);
    assert_not_found(alice.attachment(chat_client::AttachmentId(999_999)).await);

    alice.delete_attachment(file.id).await.expect("delete");
    assert_not_found(alice.attachment(file.id).await);
    assert_not_found(alice.download(file.id, &mut Vec::new(), None).await);
    assert_eq!(alice.upload_usage().await.expect("usage").used, 0);
}

#[tokio::test]
async fn links_read_without_a_token() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let data = png();
    let photo = alice
        .upload_bytes("photo.png", data.clone())
        .await
        .expect("upload");
    let link = alice.attachment_link(photo.id).await.expect("link");

    let plain = reqwest::Client::new();
    let url = alice.link_url(&link.url).expect("a link");
    let resp = plain.get(url).send().await.expect("GET the link");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), data.as_slice());

    let thumb = link.thumbnail_url.as_deref().expect("a thumbnail link");
    let url = alice.link_url(thumb).expect("a link");
    let resp = plain.get(url).send().await.expect("GET the thumbnail");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.content_length(),
        photo.thumbnail.as_ref().map(|t| t.size)
    );
}

/// The server refuses the access token mid-upload: a file is sent again
/// after a refresh; a reader, which cannot be read twice, fails.
#[tokio::test]
async fn a_refused_token_sends_a_file_again_but_not_a_reader() {
    let server = TestServer::start().await;
    let (alice, _) = server.user("alice").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("again.bin");
    let data = random_bytes(MIB);
    std::fs::write(&path, &data).expect("write");

    // A restored session whose access token the server rejects, with no
    // known expiry: only the 401 tells the client to refresh.
    let restored = server.client();
    let saved = alice.tokens().expect("logged in");
    restored.set_tokens(Some(Tokens::new(
        "garbage.access.token",
        saved.refresh,
        None,
    )));
    let file = restored
        .upload_file(&path, None)
        .await
        .expect("sent again after the refresh");
    assert_eq!(file.size, data.len() as u64);
    assert!(download_all(&restored, file.id).await == data);

    let fresh = restored.tokens().expect("refreshed");
    assert_ne!(fresh.access, "garbage.access.token", "refreshed on the 401");
    restored.set_tokens(Some(Tokens::new(
        "garbage.access.token",
        fresh.refresh,
        None,
    )));
    let e = restored
        // Small, so that the server's early 401 is not lost to a
        // connection it closes under a body still being written.
        .upload_reader("once.bin", Cursor::new(vec![7; 100]), None, None)
        .await
        .expect_err("a reader is not read twice");
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
}
