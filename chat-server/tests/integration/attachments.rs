//! Attachments end to end: uploads streamed within their limits, sniffed,
//! measured and thumbnailed; sent with messages over HTTP and WebSocket;
//! read back by whoever may read the room, with ranges, validators and
//! safe headers; links that need no header; and files that go when their
//! message, their room or their grace period does, on the file store, in
//! memory and on S3 (moto).

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, RANGE,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{Backend, TestServer, TestUser, each_backend};

each_backend!(upload_send_and_read_back);

/// A download: status, headers, bytes.
struct Got {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Got {
    fn header(&self, name: reqwest::header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("a JSON body")
    }
}

async fn download(
    s: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Got {
    let mut req = s.http.get(s.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("download");
    Got {
        status: resp.status(),
        headers: resp.headers().clone(),
        bytes: resp.bytes().await.expect("body").to_vec(),
    }
}

async fn uploaded(s: &TestServer, user: &TestUser, name: &str, bytes: Vec<u8>) -> Value {
    let (status, body) = s.upload(&user.access, name, bytes).await;
    assert_eq!(status, StatusCode::CREATED, "upload {name}: {body}");
    body
}

async fn send_with(
    s: &TestServer,
    user: &TestUser,
    room: i64,
    body: &str,
    ids: &[&Value],
) -> (StatusCode, Value) {
    let ids: Vec<Value> = ids.iter().map(|a| a["id"].clone()).collect();
    s.post(
        "/chat/send/",
        &user.access,
        json!({"room": room, "message": body, "attachments": ids}),
    )
    .await
}

/// Regular files under `dir`, recursively (a store's objects, and any
/// staging file it left).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Waits (bounded) until `dir` holds `n` files.
async fn until_files(dir: &Path, n: usize) {
    for _ in 0..200 {
        if files_under(dir).len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected {n} files under {}, found {:?}",
        dir.display(),
        files_under(dir)
    );
}

async fn upload_send_and_read_back(backend: Backend) {
    let s = TestServer::start(backend).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let eve = s.user("eve").await;
    let room = s.room(&alice, "files", "private", &[&bob]).await;
    let (status, body) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    assert_eq!(status, StatusCode::OK, "join: {body}");

    // The declared type is ignored: the bytes say text.
    let text = b"meeting notes: ship it\n".to_vec();
    let resp = s
        .http
        .post(s.url("/chat/attachments/?name=..%2F..%2Fnotes.txt"))
        .bearer_auth(&alice.access)
        .header(CONTENT_TYPE, "image/png")
        .body(text.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let notes: Value = resp.json().await.expect("attachment");
    assert_eq!(notes["name"], "notes.txt", "the path is cut off the name");
    assert_eq!(notes["size"], text.len());
    assert_eq!(notes["content_type"], "text/plain; charset=utf-8");
    assert!(notes.get("width").is_none() && notes.get("thumbnail").is_none());
    let id = notes["id"].as_i64().expect("id");

    let (status, usage) = s.get("/chat/attachments/usage/", &alice.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(usage["used"], text.len());
    assert_eq!(usage["max_file"], 25 * 1024 * 1024);

    // Unsent: the uploader's alone.
    let (status, info) = s
        .get(&format!("/chat/attachments/{id}/"), &alice.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert!(info.get("message_id").is_none());
    let hidden = s
        .get(&format!("/chat/attachments/{id}/"), &bob.access)
        .await;
    let missing = s.get("/chat/attachments/999999/", &bob.access).await;
    assert_eq!(hidden.0, StatusCode::NOT_FOUND);
    assert_eq!(
        hidden, missing,
        "an upload of someone else's reads as none at all"
    );
    assert_eq!(hidden.1["code"], "attachment_not_found");
    // Nobody else may send it.
    let (status, refused) = send_with(&s, &bob, room, "mine now", &[&notes]).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("attachment_not_found"))
    );

    // Bob listens on a socket; alice sends the file with no text.
    let mut bob_socket = s.ws("/ws/", &bob).await;
    bob_socket.subscribe(json!(room), None).await;
    let (status, sent) = send_with(&s, &alice, room, "", &[&notes]).await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let live = bob_socket.expect("message").await;
    assert_eq!(
        live["message"]["attachments"][0]["id"], id,
        "the live frame carries it: {live}"
    );
    assert_eq!(live["message"]["body"], "");
    let (_, history) = s
        .get(&format!("/chat/history/?room={room}"), &bob.access)
        .await;
    let last = history["chat_history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned()
        .expect("a message");
    assert_eq!(last["attachments"][0]["name"], "notes.txt", "{history}");

    // Sent: each upload goes with one message; a blank text is no text.
    let (status, again) = send_with(&s, &alice, room, "again", &[&notes]).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (StatusCode::CONFLICT, Some("attachment_in_use"))
    );
    let (status, blank) = s
        .post(
            "/chat/send/",
            &alice.access,
            json!({"room": room, "message": "  ", "attachments": [id]}),
        )
        .await;
    assert_eq!(
        (status, blank["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("empty_body"))
    );
    let (status, gone) = s
        .call(
            "DELETE",
            &format!("/chat/attachments/{id}/"),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(
        (status, gone["code"].as_str()),
        (StatusCode::CONFLICT, Some("attachment_in_use"))
    );

    // Readers: the room's members, with the headers that keep it inert.
    let (status, info) = s
        .get(&format!("/chat/attachments/{id}/"), &bob.access)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["room"], room);
    assert_eq!(info["message_id"], sent["id"]);
    let content = format!("/chat/attachments/{id}/content/");
    let got = download(&s, &content, Some(&bob.access), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, text);
    assert_eq!(got.header(CONTENT_TYPE), "text/plain; charset=utf-8");
    assert_eq!(got.header(CONTENT_LENGTH), text.len().to_string());
    assert_eq!(
        got.header(reqwest::header::X_CONTENT_TYPE_OPTIONS),
        "nosniff"
    );
    assert!(
        got.header(CONTENT_DISPOSITION).starts_with("attachment;"),
        "text is never inline"
    );
    assert!(got.header(CONTENT_DISPOSITION).contains("notes.txt"));
    assert!(got.header(CACHE_CONTROL).contains("private"));
    assert!(
        got.header(reqwest::header::CONTENT_SECURITY_POLICY)
            .contains("sandbox")
    );
    let etag = got.header(ETAG).to_owned();
    let stranger = download(&s, &content, Some(&eve.access), &[]).await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    assert_eq!(stranger.json()["code"], "attachment_not_found");
    let nobody = download(&s, &content, None, &[]).await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED);

    // Ranges and validators.
    let part = download(&s, &content, Some(&bob.access), &[("range", "bytes=8-12")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes, b"notes");
    assert_eq!(
        part.header(CONTENT_RANGE),
        format!("bytes 8-12/{}", text.len())
    );
    let tail = download(&s, &content, Some(&bob.access), &[("range", "bytes=-3")]).await;
    assert_eq!(tail.bytes, b"it\n");
    let open = download(&s, &content, Some(&bob.access), &[("range", "bytes=15-")]).await;
    assert_eq!(open.bytes, &text[15..]);
    let beyond = download(&s, &content, Some(&bob.access), &[("range", "bytes=500-")]).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.json()["code"], "range_not_satisfiable");
    let cached = download(
        &s,
        &content,
        Some(&bob.access),
        &[(IF_NONE_MATCH.as_str(), &etag)],
    )
    .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.bytes.is_empty());
    let cached = download(
        &s,
        &content,
        Some(&eve.access),
        &[(IF_NONE_MATCH.as_str(), &etag)],
    )
    .await;
    assert_eq!(
        cached.status,
        StatusCode::NOT_FOUND,
        "a validator tells a stranger nothing"
    );
    let _ = RANGE;

    // A link reads without a header, as its maker, and nothing else does.
    let (status, link) = s
        .post(
            &format!("/chat/attachments/{id}/link/"),
            &bob.access,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{link}");
    assert!(link.get("thumbnail_url").is_none());
    let url = &format!("/{}", link["url"].as_str().expect("url"));
    let by_link = download(&s, url, None, &[]).await;
    assert_eq!(by_link.status, StatusCode::OK);
    assert_eq!(by_link.bytes, text);
    let forged = url.replace("expires=", "expires=9");
    assert_eq!(
        download(&s, &forged, None, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let other = url.replace(&format!("/attachments/{id}/"), "/attachments/999999/");
    assert_eq!(
        download(&s, &other, None, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let (status, _) = s
        .post(
            &format!("/chat/attachments/{id}/link/"),
            &eve.access,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no link for a stranger");

    // Over the socket: a send with an attachment, acked with it.
    let photo = uploaded(&s, &bob, "second.txt", b"second file".to_vec()).await;
    bob_socket
        .send(
            json!({"type": "send", "room": room, "body": "over ws", "client_id": "ws-1",
                     "attachments": [photo["id"]]}),
        )
        .await;
    let ack = bob_socket.expect("ack").await;
    assert_eq!(ack["message"]["attachments"][0]["id"], photo["id"], "{ack}");

    // Deleting the message takes its file: the reader gets 404.
    let message = sent["id"].as_i64().expect("message id");
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/messages/{message}/"),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        download(&s, &content, Some(&alice.access), &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let (_, usage) = s.get("/chat/attachments/usage/", &alice.access).await;
    assert_eq!(
        usage["used"], 0,
        "a deleted message's files no longer count"
    );

    // The uploader deletes an unsent upload.
    let spare = uploaded(&s, &alice, "spare.bin", vec![0, 1, 2]).await;
    let spare_id = spare["id"].as_i64().expect("id");
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/attachments/{spare_id}/"),
            Some(&bob.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not bob's");
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/attachments/{spare_id}/"),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .get(&format!("/chat/attachments/{spare_id}/"), &alice.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A PNG whose header claims `width`×`height` grey pixels, with a valid
/// zlib stream of a few zero bytes as its data: what a decompression bomb
/// looks like before anything is decoded.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffff_u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).expect("small").to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib: header, one stored block of 16 zero bytes, adler32 of them.
    let mut idat = vec![0x78, 0x01, 0x01, 16, 0, !16u8, 0xff];
    idat.extend_from_slice(&[0; 16]);
    idat.extend_from_slice(&0x0010_0001_u32.to_be_bytes());
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_measured_and_bombs_refused() {
    let s = TestServer::start(Backend::Memory).await;
    let alice = s.user("alice").await;

    let photo = image::RgbImage::from_fn(1200, 800, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&photo)
        .expect("encode");
    let uploaded = uploaded(&s, &alice, "photo.jpg", jpeg.clone()).await;
    assert_eq!(uploaded["content_type"], "image/jpeg");
    assert_eq!(
        (uploaded["width"].as_u64(), uploaded["height"].as_u64()),
        (Some(1200), Some(800))
    );
    let thumb = &uploaded["thumbnail"];
    assert_eq!(
        (thumb["width"].as_u64(), thumb["height"].as_u64()),
        (Some(320), Some(213)),
        "{uploaded}"
    );
    assert_eq!(thumb["content_type"], "image/jpeg");
    let id = uploaded["id"].as_i64().expect("id");

    let got = download(
        &s,
        &format!("/chat/attachments/{id}/thumbnail/"),
        Some(&alice.access),
        &[],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header(CONTENT_TYPE), "image/jpeg");
    assert_eq!(
        got.bytes.len() as u64,
        thumb["size"].as_u64().expect("size")
    );
    let decoded = image::load_from_memory(&got.bytes).expect("a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (320, 213));
    let full = download(
        &s,
        &format!("/chat/attachments/{id}/content/"),
        Some(&alice.access),
        &[],
    )
    .await;
    assert_eq!(full.bytes, jpeg);
    assert!(
        full.header(CONTENT_DISPOSITION).starts_with("inline;"),
        "an image shows inline"
    );
    let (_, link) = s
        .post(
            &format!("/chat/attachments/{id}/link/"),
            &alice.access,
            json!({}),
        )
        .await;
    let thumb_url = &format!(
        "/{}",
        link["thumbnail_url"].as_str().expect("a thumbnail link")
    );
    assert_eq!(download(&s, thumb_url, None, &[]).await.bytes, got.bytes);

    // A text file has no thumbnail to fetch.
    let text = uploaded_text(&s, &alice).await;
    let none = download(
        &s,
        &format!("/chat/attachments/{text}/thumbnail/"),
        Some(&alice.access),
        &[],
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    // A bomb: refused from its header, nothing kept.
    let (_, before) = s.get("/chat/attachments/usage/", &alice.access).await;
    let (status, refused) = s
        .upload(&alice.access, "bomb.png", png_claiming(100_000, 100_000))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["code"], "invalid_image");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("100000")),
        "says why: {refused}"
    );
    let (_, after) = s.get("/chat/attachments/usage/", &alice.access).await;
    assert_eq!(before, after, "a refused image leaves nothing");
    // A PNG that is not one.
    let mut broken = png_claiming(10, 10);
    broken.truncate(40);
    let (status, refused) = s.upload(&alice.access, "broken.png", broken).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_image"))
    );
}

async fn uploaded_text(s: &TestServer, user: &TestUser) -> i64 {
    uploaded(s, user, "plain.txt", b"plain".to_vec()).await["id"]
        .as_i64()
        .expect("id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_and_interrupted_uploads_leave_nothing() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.max_upload_bytes = 1024 * 1024;
        c.upload_quota_bytes = 1536 * 1024;
    })
    .await;
    let files = s.dir().join("chat.db.attachments");
    let alice = s.user("alice").await;

    // Over the file limit: with a length, refused before the body.
    let (status, refused) = s
        .upload(&alice.access, "big.bin", vec![7; 2 * 1024 * 1024])
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("file_too_large"))
    );
    // Chunked, without a length: refused as the bytes pass the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..32).map(|_| Ok(vec![1; 64 * 1024])).collect();
    let resp = s
        .http
        .post(s.url("/chat/attachments/?name=chunked.bin"))
        .bearer_auth(&alice.access)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("chunked upload");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    until_files(&files, 0).await;

    // Within the limit, then over the quota.
    uploaded(&s, &alice, "one.bin", vec![1; 1024 * 1024]).await;
    let (status, refused) = s
        .upload(&alice.access, "two.bin", vec![2; 1024 * 1024])
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded"))
    );
    until_files(&files, 1).await;

    // A client that goes away mid-body: nothing of it stays, and the
    // server serves on.
    let mut socket = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /chat/attachments/?name=cut.bin HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 400000\r\n\r\n",
        s.addr, alice.access
    );
    socket.write_all(head.as_bytes()).await.expect("head");
    socket
        .write_all(&vec![3; 150_000])
        .await
        .expect("part of the body");
    socket.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(socket);
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_files(&files, 1).await;
    let (_, usage) = s.get("/chat/attachments/usage/", &alice.access).await;
    assert_eq!(usage["used"], 1024 * 1024);
    uploaded(&s, &alice, "small.bin", vec![4; 1000]).await;
    until_files(&files, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_with_their_message_their_room_or_their_grace() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.upload_grace = Duration::from_secs(3);
    })
    .await;
    let files = s.dir().join("chat.db.attachments");
    let alice = s.user("alice").await;
    let room = s.room(&alice, "to-delete", "public", &[]).await;
    let png = {
        let img = image::RgbaImage::from_pixel(64, 64, image::Rgba([0, 0, 255, 128]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("png");
        out.into_inner()
    };
    let first = uploaded(&s, &alice, "first.png", png).await;
    assert_eq!(
        first["thumbnail"]["content_type"], "image/png",
        "transparency keeps PNG"
    );
    let second = uploaded(&s, &alice, "second.txt", b"two".to_vec()).await;
    until_files(&files, 3).await; // two files and a thumbnail
    let (status, one) = send_with(&s, &alice, room, "first", &[&first]).await;
    assert_eq!(status, StatusCode::CREATED, "{one}");
    let (status, _) = send_with(&s, &alice, room, "second", &[&second]).await;
    assert_eq!(status, StatusCode::CREATED);

    let message = one["id"].as_i64().expect("id");
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/messages/{message}/"),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    until_files(&files, 1).await; // the image and its thumbnail are gone
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/rooms/{room}/"),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    until_files(&files, 0).await;

    // Never sent: gone after the grace period, and no longer sendable.
    let late = uploaded(&s, &alice, "late.txt", b"late".to_vec()).await;
    until_files(&files, 1).await;
    let other = s.room(&alice, "later", "public", &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    until_files(&files, 0).await;
    let (status, refused) = send_with(&s, &alice, other, "too late", &[&late]).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("attachment_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_survives_a_restart_before_it_is_sent() {
    let mut s = TestServer::start(Backend::Sqlite).await;
    let alice = s.user("alice").await;
    let room = s.room(&alice, "restart", "public", &[]).await;
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let upload = uploaded(&s, &alice, "report.bin", bytes.clone()).await;
    s.stop().await;

    let dir = s.into_dir();
    let url = format!("sqlite://{}", dir.path().join("chat.db").display());
    let s = TestServer::start_on(url, None, dir, |_| {}).await;
    let (status, sent) = send_with(&s, &alice, room, "after the restart", &[&upload]).await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let id = upload["id"].as_i64().expect("id");
    let got = download(
        &s,
        &format!("/chat/attachments/{id}/content/"),
        Some(&alice.access),
        &[],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_too() {
    let url = chat_server::blobs::testing::moto_s3_url().await;
    let s = TestServer::start_with(Backend::Memory, |c| {
        c.attachments_url = Some(url);
    })
    .await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = s.room(&alice, "s3", "public", &[]).await;
    // Over one part (5 MiB): a multipart upload.
    let bytes: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let upload = uploaded(&s, &alice, "big.bin", bytes.clone()).await;
    let (status, sent) = send_with(&s, &alice, room, "on s3", &[&upload]).await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let id = upload["id"].as_i64().expect("id");
    let content = format!("/chat/attachments/{id}/content/");
    let (status, _) = s
        .post("/chat/join-room/", &bob.access, json!({"room_id": room}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = download(&s, &content, Some(&bob.access), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.bytes == bytes, "the same bytes back");
    let part = download(
        &s,
        &content,
        Some(&bob.access),
        &[("range", "bytes=5242870-5242889")],
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.bytes,
        &bytes[5_242_870..5_242_890],
        "a range across the part boundary"
    );
    let message = sent["id"].as_i64().expect("id");
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/chat/messages/{message}/"),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        download(&s, &content, Some(&bob.access), &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ranges_and_missing_thumbnails() {
    let s = TestServer::start(Backend::Memory).await;
    let alice = s.user("alice").await;
    let id = uploaded_text(&s, &alice).await;
    let content = format!("/chat/attachments/{id}/content/");
    // Malformed ranges are ignored (RFC 9110): the whole file.
    for range in [
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=4-1",
        "bytes=-",
        "items=0-1",
    ] {
        let got = download(&s, &content, Some(&alice.access), &[("range", range)]).await;
        assert_eq!(
            (got.status, got.bytes.as_slice()),
            (StatusCode::OK, &b"plain"[..]),
            "{range}"
        );
    }
    // A file without a thumbnail has none to validate or to range.
    let thumb = format!("/chat/attachments/{id}/thumbnail/");
    for headers in [
        [("if-none-match", format!("\"a{id}t\""))],
        [("range", "bytes=0-".to_owned())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let got = download(&s, &thumb, Some(&alice.access), &headers).await;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{headers:?}");
        assert_eq!(got.json()["code"], "attachment_not_found");
    }
}
