//! Attachments over HTTP: `/chat/attachments/`.
//!
//! An upload is the request body itself, streamed from a file or a reader
//! as it is read; a download streams the answer into a writer as it comes.
//! Neither holds the file in memory. A transfer is not limited in time as a
//! whole (a large file on a slow link takes what it takes): what
//! [`ClientOptions::timeout`](crate::ClientOptions::timeout) limits is how
//! long no byte moves.

use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use chat_core::attachment::{Attachment, AttachmentInfo, AttachmentLink, UploadUsage};
use chat_core::{AttachmentId, ErrorCode};
use futures_util::Stream;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::client::{Req, decode, read_body};
use crate::{ChatClient, ClientError};

/// How far a transfer has come: what [`Progress`] is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transfer {
    /// Bytes moved so far.
    pub done: u64,
    /// Bytes to move in all, when known (an upload from a reader without a
    /// length, a download without `Content-Length`: `None`).
    pub total: Option<u64>,
}

/// Called as an upload's bytes go out or a download's come in, to show
/// progress: at most once per 64 KiB moved, and once at the end with every
/// byte counted (`done == total` when the total is known; an empty file is
/// one call with `done` 0). `done` only grows within one transfer; an
/// upload from a file that is sent again after a refused token
/// ([`ChatClient::upload_file`]) counts again from 0.
///
/// It runs on the task that moves the bytes, in the middle of the transfer
/// (on one of the runtime's threads): keep it short and never block in it;
/// hand the numbers to a channel or an atomic for a UI to read.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use chat_client::{Progress, Transfer};
///
/// let done = Arc::new(AtomicU64::new(0));
/// let seen = done.clone();
/// let progress: Progress = Arc::new(move |t: Transfer| seen.store(t.done, Ordering::Relaxed));
/// # let _ = progress;
/// ```
pub type Progress = Arc<dyn Fn(Transfer) + Send + Sync>;

/// Progress is reported at most once per this many bytes.
const STEP: u64 = 64 * 1024;

/// Bytes read from a file or a reader at a time.
const CHUNK: usize = 64 * 1024;

/// Counts a transfer's bytes and reports them to its [`Progress`].
struct Meter {
    progress: Option<Progress>,
    total: Option<u64>,
    done: u64,
    /// `done` when last reported.
    reported: Option<u64>,
}

impl Meter {
    fn new(progress: Option<Progress>, total: Option<u64>) -> Self {
        Self {
            progress,
            total,
            done: 0,
            reported: None,
        }
    }

    /// Counts `n` more bytes; whether that made a report.
    fn add(&mut self, n: u64) -> bool {
        self.done += n;
        let due = self.done - self.reported.unwrap_or(0) >= STEP;
        if due {
            self.report();
        }
        due
    }

    /// The last report, with every byte counted.
    fn finish(&mut self) {
        if self.reported != Some(self.done) {
            self.report();
        }
    }

    fn report(&mut self) {
        self.reported = Some(self.done);
        if let Some(progress) = &self.progress {
            progress(Transfer {
                done: self.done,
                total: self.total,
            });
        }
    }
}

/// What an upload reads.
enum Source {
    /// Read again from its start for a second attempt.
    File(PathBuf),
    Bytes(Bytes),
    /// Taken by the first attempt: it cannot be read twice.
    Reader(Option<Pin<Box<dyn AsyncRead + Send>>>, Option<u64>),
}

type Reader = Pin<Box<dyn AsyncRead + Send>>;

impl Source {
    fn can_restart(&self) -> bool {
        !matches!(self, Self::Reader(..))
    }

    /// What the source is, for error messages.
    fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("reading {}", path.display()),
            Self::Bytes(_) => "reading the upload's bytes".to_owned(),
            Self::Reader(..) => "reading the upload's reader".to_owned(),
        }
    }

    /// The bytes from their start, and how many there are if known.
    async fn open(&mut self) -> Result<(Reader, Option<u64>), ClientError> {
        match self {
            Self::File(path) => {
                let file = tokio::fs::File::open(&*path)
                    .await
                    .map_err(|e| ClientError::io(format!("opening {}", path.display()), e))?;
                let len = file
                    .metadata()
                    .await
                    .map_err(|e| ClientError::io(format!("reading {}", path.display()), e))?
                    .len();
                Ok((Box::pin(file), Some(len)))
            }
            Self::Bytes(bytes) => {
                let len = bytes.len() as u64;
                Ok((Box::pin(io::Cursor::new(bytes.clone())), Some(len)))
            }
            Self::Reader(reader, len) => match reader.take() {
                Some(reader) => Ok((reader, *len)),
                None => Err(ClientError::protocol(
                    None,
                    "an upload from a reader cannot be sent twice",
                )),
            },
        }
    }
}

/// An upload's body: the source in chunks, counted as they are handed to
/// the connection.
struct UploadStream {
    chunks: ReaderStream<Reader>,
    meter: Meter,
    /// Bytes handed over so far, read by the stall watchdog.
    moved: Arc<AtomicU64>,
    /// The source's own failure, kept to report it as such (the HTTP stack
    /// only says the body failed).
    failure: Arc<Mutex<Option<io::Error>>>,
    /// The length announced in `Content-Length`.
    expected: Option<u64>,
}

impl UploadStream {
    fn fail(&mut self, error: io::Error) -> Poll<Option<io::Result<Bytes>>> {
        let copy = io::Error::new(error.kind(), error.to_string());
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(error);
        }
        Poll::Ready(Some(Err(copy)))
    }
}

impl Stream for UploadStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.chunks).poll_next(cx)) {
            Some(Ok(chunk)) => {
                let n = chunk.len() as u64;
                if this.expected.is_some_and(|len| this.meter.done + n > len) {
                    let len = this.expected.unwrap_or_default();
                    return this.fail(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the source holds more than the {len} bytes announced"),
                    ));
                }
                this.meter.add(n);
                this.moved.fetch_add(n, Ordering::Relaxed);
                if this.expected == Some(this.meter.done) {
                    // With a known length the HTTP stack stops polling once
                    // it has that many bytes, so the end is reported here.
                    this.meter.finish();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => this.fail(e),
            None => {
                if let Some(len) = this.expected.filter(|&len| len != this.meter.done) {
                    let done = this.meter.done;
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the source ended after {done} of the {len} bytes announced"),
                    ));
                }
                this.meter.finish();
                Poll::Ready(None)
            }
        }
    }
}

/// The failure of a transfer during which no byte moved for `limit`.
fn stalled_error(limit: Duration) -> ClientError {
    ClientError::Network {
        timeout: true,
        source: Box::new(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no data moved for {} s", limit.as_secs_f64()),
        )),
    }
}

/// Resolves once `moved` has not changed for `limit` (checked every
/// `limit`, so after between one and two of them).
async fn stalled(moved: &AtomicU64, limit: Duration) {
    let mut seen = moved.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(limit).await;
        let now = moved.load(Ordering::Relaxed);
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// `fut`, or a timeout error if it takes longer than `limit`.
async fn within<T>(
    limit: Option<Duration>,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| stalled_error(limit))?,
        None => fut.await,
    }
}

/// Which bytes of an attachment a download reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Content,
    Thumbnail,
}

impl Part {
    fn path(self, id: AttachmentId) -> String {
        match self {
            Self::Content => format!("chat/attachments/{id}/content/"),
            Self::Thumbnail => format!("chat/attachments/{id}/thumbnail/"),
        }
    }
}

/// A byte range as `Range: bytes=start-end` says it: `end` inclusive,
/// `None` for "to the end". `None` for an empty range.
fn inclusive(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e),
        Bound::Excluded(&e) => Some(e.checked_sub(1)?),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end < start => None,
        _ => Some((start, end)),
    }
}

/// `path` with `.part` added to its file name.
fn part_path(path: &Path) -> PathBuf {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    PathBuf::from(part)
}

impl ChatClient {
    /// Uploads the file at `path` (`POST /chat/attachments/`), named by its
    /// file name, and answers the [`Attachment`] to send with a message
    /// ([`SendOptions::attachments`](crate::SendOptions::attachments)).
    /// Until then it is the caller's alone (and counts in their
    /// [`upload_usage`](Self::upload_usage)).
    ///
    /// The file is streamed from disk as it is sent, never read whole into
    /// memory; `progress` (see [`Progress`]) is told as it goes out. The
    /// server decides the type from the bytes, reads an image's size and
    /// makes a thumbnail of it.
    ///
    /// The access token is refreshed before the upload starts if it is
    /// near expiry; should the server still refuse it (401, or a connection
    /// cut under the body that turns out to be one), the token is
    /// refreshed and the file sent once more from its start.
    ///
    /// Errors: [`InvalidInput`](crate::ErrorKind::InvalidInput) with
    /// `file_too_large` (over the server's largest file),
    /// `invalid_image` (an image the server will not decode) or
    /// `invalid_input` (a name it refuses);
    /// [`Forbidden`](crate::ErrorKind::Forbidden) with `quota_exceeded`
    /// (see [`upload_usage`](Self::upload_usage));
    /// [`Unavailable`](crate::ErrorKind::Unavailable) with
    /// `files_unavailable` (retry later); [`Io`](crate::ErrorKind::Io) when
    /// the file cannot be read.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use chat_client::{SendOptions, Transfer};
    ///
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let progress = Arc::new(|t: Transfer| eprintln!("{} of {:?} bytes", t.done, t.total));
    /// let photo = client.upload_file("holiday.jpg", Some(progress)).await?;
    /// let options = SendOptions::new().attachments([photo.id]);
    /// client.send_with("lobby", "from the beach", None, options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn upload_file(
        &self,
        path: impl AsRef<Path>,
        progress: Option<Progress>,
    ) -> Result<Attachment, ClientError> {
        let path = path.as_ref();
        let Some(name) = path.file_name() else {
            return Err(ClientError::io(
                format!("uploading {}", path.display()),
                io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
            ));
        };
        let name = name.to_string_lossy().into_owned();
        self.upload(&name, Source::File(path.to_owned()), progress)
            .await
    }

    /// Uploads `bytes` as a file named `name` (see
    /// [`upload_file`](Self::upload_file), whose errors it shares).
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let notes = client.upload_bytes("notes.txt", b"remember the milk".to_vec()).await?;
    /// assert_eq!(notes.size, 17);
    /// # Ok(()) }
    /// ```
    pub async fn upload_bytes(
        &self,
        name: &str,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<Attachment, ClientError> {
        let bytes = Bytes::from(bytes.into());
        self.upload(name, Source::Bytes(bytes), None).await
    }

    /// Uploads what `reader` yields, as a file named `name`, streamed as it
    /// is read (see [`upload_file`](Self::upload_file), whose errors it
    /// shares). `len`, when known, is sent as the `Content-Length` (the
    /// server can then refuse a file too large at once) and must be
    /// exactly what the reader yields; without it the body is sent
    /// chunked.
    ///
    /// A reader is read once: if the server refuses the access token
    /// halfway (401), the error is returned rather than the upload retried.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let file = tokio::fs::File::open("report.pdf").await.expect("file");
    /// let report = client.upload_reader("report.pdf", file, None, None).await?;
    /// println!("{} bytes of {}", report.size, report.content_type);
    /// # Ok(()) }
    /// ```
    pub async fn upload_reader(
        &self,
        name: &str,
        reader: impl AsyncRead + Send + 'static,
        len: Option<u64>,
        progress: Option<Progress>,
    ) -> Result<Attachment, ClientError> {
        self.upload(name, Source::Reader(Some(Box::pin(reader)), len), progress)
            .await
    }

    /// The upload, with one refresh and retry on a 401 when the source can
    /// be read again.
    async fn upload(
        &self,
        name: &str,
        mut source: Source,
        progress: Option<Progress>,
    ) -> Result<Attachment, ClientError> {
        // Refreshed ahead of its expiry, so that a long upload does not
        // start with a token about to be refused.
        let token = self.access_token().await?;
        let first = self
            .upload_once(name, &mut source, &token, progress.clone())
            .await;
        if !source.can_restart() {
            return first;
        }
        let refused = match &first {
            Err(e) if e.code() == Some(ErrorCode::Unauthorized) => true,
            // A server that refuses the token without reading the body
            // closes the connection under it: the body's write fails and the
            // 401 is lost. A small call says whether that was it (and
            // refreshes the token if so).
            Err(ClientError::Network { timeout: false, .. }) => {
                self.upload_usage().await.is_ok()
                    && self.auth().get().is_some_and(|now| now.access != token)
            }
            _ => false,
        };
        if !refused {
            return first;
        }
        tracing::debug!("access token rejected; refreshing and uploading again");
        let fresh = self.refresh_after(Some(&token)).await?;
        self.upload_once(name, &mut source, &fresh.access, progress)
            .await
    }

    async fn upload_once(
        &self,
        name: &str,
        source: &mut Source,
        token: &str,
        progress: Option<Progress>,
    ) -> Result<Attachment, ClientError> {
        let (reader, len) = source.open().await?;
        let moved = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let mut meter = Meter::new(progress, len);
        if len == Some(0) {
            // Nothing to send: the HTTP stack may never poll the body.
            meter.finish();
        }
        let body = reqwest::Body::wrap_stream(UploadStream {
            chunks: ReaderStream::with_capacity(reader, CHUNK),
            meter,
            moved: moved.clone(),
            failure: failure.clone(),
            expected: len,
        });
        let mut req = Req::post("chat/attachments/")
            .query("name", Some(name))
            .header(CONTENT_TYPE, "application/octet-stream")
            .transfer();
        if let Some(len) = len {
            req = req.header(CONTENT_LENGTH, len.to_string());
        }
        let sending = self.exchange(&req, Some(token), Some(body));
        let answer = match self.options().timeout {
            Some(limit) => tokio::select! {
                answer = sending => answer,
                () = stalled(&moved, limit) => Err(stalled_error(limit)),
            },
            None => sending.await,
        };
        let taken = failure.lock().ok().and_then(|mut slot| slot.take());
        if let Some(e) = taken {
            return Err(ClientError::io(source.describe(), e));
        }
        let bytes = read_body(answer?).await?;
        decode(&bytes)
    }

    /// An attachment and where it stands (`GET /chat/attachments/{id}/`):
    /// the message and room that carry it, once sent.
    ///
    /// Errors: [`NotFound`](crate::ErrorKind::NotFound) with
    /// `attachment_not_found` for an unknown id and for one the caller may
    /// not see (someone else's unsent upload, a file of a room the caller
    /// is not in).
    pub async fn attachment(&self, id: AttachmentId) -> Result<AttachmentInfo, ClientError> {
        self.call(Req::get(format!("chat/attachments/{id}/"))).await
    }

    /// Deletes one of the caller's uploads not yet sent
    /// (`DELETE /chat/attachments/{id}/`), giving its bytes back to their
    /// quota.
    ///
    /// Errors: [`Conflict`](crate::ErrorKind::Conflict) with
    /// `attachment_in_use` once it was sent (delete the message instead);
    /// [`NotFound`](crate::ErrorKind::NotFound) with `attachment_not_found`.
    pub async fn delete_attachment(&self, id: AttachmentId) -> Result<(), ClientError> {
        self.call_empty(Req::delete(format!("chat/attachments/{id}/")))
            .await
    }

    /// What the caller has uploaded and may still upload
    /// (`GET /chat/attachments/usage/`): bytes used, the quota, the largest
    /// file the server takes.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let usage = client.upload_usage().await?;
    /// println!("{} of {} bytes used", usage.used, usage.quota);
    /// # Ok(()) }
    /// ```
    pub async fn upload_usage(&self) -> Result<UploadUsage, ClientError> {
        self.call(Req::get("chat/attachments/usage/")).await
    }

    /// Short-lived URLs that read the attachment (and its thumbnail)
    /// without a token (`POST /chat/attachments/{id}/link/`): for an image
    /// view or a download manager. They are relative to the server's base
    /// URL ([`link_url`](Self::link_url) makes them whole); whoever holds
    /// one reads the file until `expires_at`.
    ///
    /// Errors: [`NotFound`](crate::ErrorKind::NotFound) with
    /// `attachment_not_found`.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient, id: chat_client::AttachmentId) -> Result<(), chat_client::ClientError> {
    /// let link = client.attachment_link(id).await?;
    /// let url = client.link_url(&link.url)?;
    /// println!("open {url} before {}", link.expires_at);
    /// # Ok(()) }
    /// ```
    pub async fn attachment_link(&self, id: AttachmentId) -> Result<AttachmentLink, ClientError> {
        self.call(Req::post(format!("chat/attachments/{id}/link/")))
            .await
    }

    /// The whole URL of a link of [`attachment_link`](Self::attachment_link):
    /// `path` (with its query) taken relative to the base URL, so that a
    /// server mounted under a path prefix keeps it, with or without a
    /// leading `/`.
    ///
    /// ```
    /// let client = chat_client::ChatClient::new("https://example.com/chat-app").expect("valid URL");
    /// let url = client.link_url("/chat/attachments/5/content/?sig=x").expect("a path");
    /// assert_eq!(url.as_str(), "https://example.com/chat-app/chat/attachments/5/content/?sig=x");
    /// ```
    pub fn link_url(&self, path: &str) -> Result<url::Url, ClientError> {
        self.base_url()
            .join(path.trim_start_matches('/'))
            .map_err(|e| ClientError::protocol(None, format!("link {path:?}: {e}")))
    }

    /// Downloads an attachment's bytes
    /// (`GET /chat/attachments/{id}/content/`) into `writer` as they come,
    /// never holding the file whole; answers how many were written. The
    /// writer is flushed at the end, and `progress` told as bytes come in.
    ///
    /// Errors: [`NotFound`](crate::ErrorKind::NotFound) with
    /// `attachment_not_found` for an unknown id and for one the caller may
    /// not read; [`Io`](crate::ErrorKind::Io) when the writer fails. After
    /// a failure the writer holds what came before it.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient, id: chat_client::AttachmentId) -> Result<(), chat_client::ClientError> {
    /// let mut bytes = Vec::new();
    /// let n = client.download(id, &mut bytes, None).await?;
    /// assert_eq!(n as usize, bytes.len());
    /// # Ok(()) }
    /// ```
    pub async fn download(
        &self,
        id: AttachmentId,
        writer: &mut (impl AsyncWrite + Unpin),
        progress: Option<Progress>,
    ) -> Result<u64, ClientError> {
        self.download_part(id, Part::Content, None, writer, progress)
            .await
    }

    /// Downloads an image attachment's thumbnail
    /// (`GET /chat/attachments/{id}/thumbnail/`, the type and size in
    /// [`Attachment::thumbnail`](chat_core::attachment::Attachment::thumbnail)),
    /// like [`download`](Self::download). An attachment without one is
    /// [`NotFound`](crate::ErrorKind::NotFound).
    pub async fn download_thumbnail(
        &self,
        id: AttachmentId,
        writer: &mut (impl AsyncWrite + Unpin),
        progress: Option<Progress>,
    ) -> Result<u64, ClientError> {
        self.download_part(id, Part::Thumbnail, None, writer, progress)
            .await
    }

    /// Downloads the bytes of `range` of an attachment (a `Range` request;
    /// `10..20`, `100..`, `..=99`…) into `writer`; answers how many were
    /// written (fewer than asked when the range passes the end of the
    /// file). An empty range writes nothing and asks nothing.
    ///
    /// Errors: those of [`download`](Self::download), and
    /// [`InvalidInput`](crate::ErrorKind::InvalidInput) with
    /// `range_not_satisfiable` for a range that starts past the end.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient, id: chat_client::AttachmentId) -> Result<(), chat_client::ClientError> {
    /// // The first kilobyte, e.g. to look at a file's header.
    /// let mut head = Vec::new();
    /// client.download_range(id, ..1024, &mut head).await?;
    /// # Ok(()) }
    /// ```
    pub async fn download_range(
        &self,
        id: AttachmentId,
        range: impl RangeBounds<u64>,
        writer: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        match inclusive(&range) {
            Some(range) => {
                self.download_part(id, Part::Content, Some(range), writer, None)
                    .await
            }
            None => Ok(0),
        }
    }

    /// Downloads an attachment to the file at `path`: written to
    /// `path` + `.part` first and renamed to `path` once complete (and
    /// synced), so that `path` never holds part of a file; the `.part` is
    /// removed after a failure. An existing `path` is replaced. Answers the
    /// file's size.
    ///
    /// Errors: those of [`download`](Self::download);
    /// [`Io`](crate::ErrorKind::Io) when the file cannot be written.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient, m: chat_client::Message) -> Result<(), chat_client::ClientError> {
    /// for file in &m.attachments {
    ///     client.download_to_file(file.id, format!("downloads/{}", file.name), None).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn download_to_file(
        &self,
        id: AttachmentId,
        path: impl AsRef<Path>,
        progress: Option<Progress>,
    ) -> Result<u64, ClientError> {
        self.download_file(id, Part::Content, path.as_ref(), progress)
            .await
    }

    /// Downloads an image attachment's thumbnail to the file at `path`,
    /// like [`download_to_file`](Self::download_to_file).
    pub async fn download_thumbnail_to_file(
        &self,
        id: AttachmentId,
        path: impl AsRef<Path>,
        progress: Option<Progress>,
    ) -> Result<u64, ClientError> {
        self.download_file(id, Part::Thumbnail, path.as_ref(), progress)
            .await
    }

    async fn download_file(
        &self,
        id: AttachmentId,
        part: Part,
        path: &Path,
        progress: Option<Progress>,
    ) -> Result<u64, ClientError> {
        let partial = part_path(path);
        let writing = |e| ClientError::io(format!("writing {}", partial.display()), e);
        let mut file = tokio::fs::File::create(&partial).await.map_err(writing)?;
        let result = async {
            let n = self
                .download_part(id, part, None, &mut file, progress)
                .await?;
            file.sync_all().await.map_err(writing)?;
            drop(file);
            tokio::fs::rename(&partial, path).await.map_err(|e| {
                ClientError::io(
                    format!("renaming {} to {}", partial.display(), path.display()),
                    e,
                )
            })?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    /// A download of `part`, or of `range` of it (`end` inclusive).
    async fn download_part(
        &self,
        id: AttachmentId,
        part: Part,
        range: Option<(u64, Option<u64>)>,
        writer: &mut (impl AsyncWrite + Unpin),
        progress: Option<Progress>,
    ) -> Result<u64, ClientError> {
        let mut req = Req::get(part.path(id)).transfer();
        if let Some((start, end)) = range {
            let end = end.map(|e| e.to_string()).unwrap_or_default();
            req = req.header(RANGE, format!("bytes={start}-{end}"));
        }
        let limit = self.options().timeout;
        let mut resp = within(limit, self.open(&req)).await?;
        let length = resp.content_length();
        // A server may answer a range with the whole file (200): then the
        // bytes before it are skipped and those after it left unread.
        let (mut skip, mut take) = match range {
            Some((start, end)) if resp.status() == StatusCode::OK => {
                (start, end.map(|end| end - start + 1))
            }
            _ => (0, None),
        };
        let total = match (take, length) {
            (Some(take), Some(length)) => Some(take.min(length.saturating_sub(skip))),
            (Some(take), None) => Some(take),
            (None, length) => length.map(|l| l.saturating_sub(skip)),
        };
        let mut meter = Meter::new(progress, total);
        let writing = |e| ClientError::io("writing the download", e);
        loop {
            if take == Some(0) {
                break;
            }
            let chunk = within(limit, async {
                resp.chunk().await.map_err(ClientError::network)
            })
            .await?;
            let Some(mut chunk) = chunk else { break };
            if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                skip -= n;
                chunk = chunk.slice(n as usize..);
            }
            if let Some(left) = take.as_mut() {
                let n = (*left).min(chunk.len() as u64);
                *left -= n;
                chunk.truncate(n as usize);
            }
            writer.write_all(&chunk).await.map_err(writing)?;
            if meter.add(chunk.len() as u64) {
                // Chunks already received are read without a pause: one
                // here lets a caller polling this future beside others
                // (a progress bar on the same task) see each report.
                tokio::task::yield_now().await;
            }
        }
        writer.flush().await.map_err(writing)?;
        meter.finish();
        Ok(meter.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_inclusive_bounds() {
        assert_eq!(inclusive(&(10..20)), Some((10, Some(19))));
        assert_eq!(inclusive(&(10..=20)), Some((10, Some(20))));
        assert_eq!(inclusive(&(100..)), Some((100, None)));
        assert_eq!(inclusive(&(..1024)), Some((0, Some(1023))));
        assert_eq!(inclusive(&(..)), Some((0, None)));
        assert_eq!(inclusive(&(5..5)), None);
        assert_eq!(inclusive(&(..0)), None);
        assert_eq!(inclusive(&std::ops::RangeInclusive::new(7, 6)), None);
    }

    #[test]
    fn progress_is_reported_per_step_and_once_at_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let progress: Progress = Arc::new(move |t: Transfer| {
            sink.lock().expect("not poisoned").push((t.done, t.total));
        });
        let mut meter = Meter::new(Some(progress), Some(200_000));
        for _ in 0..25 {
            meter.add(8_000);
        }
        meter.finish();
        meter.finish();
        let seen = seen.lock().expect("not poisoned").clone();
        assert_eq!(
            seen,
            [
                (72_000, Some(200_000)),
                (144_000, Some(200_000)),
                (200_000, Some(200_000))
            ]
        );

        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let mut empty = Meter::new(
            Some(Arc::new(move |t: Transfer| {
                assert_eq!(t.done, 0);
                counter.fetch_add(1, Ordering::Relaxed);
            })),
            Some(0),
        );
        empty.finish();
        assert_eq!(calls.load(Ordering::Relaxed), 1, "an empty file: one call");
    }

    #[test]
    fn the_part_file_is_beside_the_file() {
        assert_eq!(
            part_path(Path::new("/tmp/x/photo.jpg")),
            Path::new("/tmp/x/photo.jpg.part")
        );
    }
}
