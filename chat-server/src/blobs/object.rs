//! [`BlobStore`] over the `object_store` crate: one implementation for
//! `memory://` (`InMemory`), `file://` (`LocalFileSystem`) and `s3://`
//! (`AmazonS3`, feature `s3`).
//!
//! A put streams: the body is cut into parts of [`PART_SIZE`] (S3's
//! minimum, except for the last part). A body that ends within its first
//! part is one plain write; a longer one is a multipart upload with at most
//! [`PARTS_IN_FLIGHT`] parts uploading while the next fills. So a put holds
//! at most `(PARTS_IN_FLIGHT + 1) × PART_SIZE` = 15 MiB of the body, plus
//! the one chunk the body yielded last, whatever the body's length.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::memory::InMemory;
use object_store::path::{Path, PathPart};
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, PutResult,
};
use tokio::task::{JoinHandle, JoinSet};

use super::{Blob, BlobError, BlobKey, BlobStore, ByteStream};

/// The size of every part of a multipart upload but the last: S3's minimum.
pub(super) const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one put uploading at once.
const PARTS_IN_FLIGHT: usize = 2;

/// How long [`BlobStore::ping`] waits for an answer.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`BlobStore`] over an `object_store` store, every key under `prefix`.
#[derive(Debug)]
pub(super) struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

pub(super) async fn open(url: &str) -> Result<Arc<dyn BlobStore>, BlobError> {
    // The URL itself is never echoed back: its query may hold credentials.
    let parsed = url::Url::parse(url)
        .map_err(|e| BlobError::Backend(format!("the blob store URL is not a URL: {e}")))?;
    let blobs = match parsed.scheme() {
        "memory" => ObjectBlobs::new(Arc::new(InMemory::new()), Path::default()),
        "file" => {
            let dir = parsed
                .to_file_path()
                .ok()
                .filter(|dir| dir.is_absolute())
                .ok_or_else(|| {
                    BlobError::Backend(
                        "a file:// blob store needs an absolute directory (file:///var/lib/chat/blobs)"
                            .to_owned(),
                    )
                })?;
            tokio::fs::create_dir_all(&dir).await.map_err(|e| {
                BlobError::Backend(format!(
                    "cannot create the blob directory {}: {e}",
                    dir.display()
                ))
            })?;
            // Synced before a put returns, like S3's acknowledgement: a
            // message is stored only after its attachment, and must not
            // outlive it in a crash.
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(backend_error)?
                .with_fsync(true);
            ObjectBlobs::new(Arc::new(store), Path::default())
        }
        #[cfg(feature = "s3")]
        "s3" => {
            let (store, prefix) = s3(&parsed)?;
            ObjectBlobs::new(store, prefix)
        }
        #[cfg(not(feature = "s3"))]
        "s3" => {
            return Err(BlobError::Backend(
                "s3:// blob stores need chat-server built with the `s3` feature".to_owned(),
            ));
        }
        other => {
            return Err(BlobError::Backend(format!(
                "unknown blob store scheme `{other}` (memory://, file://, s3://)"
            )));
        }
    };
    Ok(Arc::new(blobs))
}

/// The S3 client and key prefix of an `s3://bucket[/prefix]?…` URL.
#[cfg(feature = "s3")]
pub(super) fn s3(url: &url::Url) -> Result<(Arc<dyn ObjectStore>, Path), BlobError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| BlobError::Backend("an s3:// blob store URL needs a bucket".to_owned()))?;
    let prefix = Path::from_url_path(url.path())
        .map_err(|_| BlobError::Backend("the s3:// URL's prefix is not a valid path".to_owned()))?;
    // reqwest builds its rustls config from the process's provider, and
    // panics without one: the server installs ring at start, this covers a
    // store opened without a server (tests, embedding). Request signing
    // uses ring directly (object_store's `ring` feature).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // object_store retries for up to 3 minutes by default; an upload or a
    // health check would hang that long on a dead endpoint.
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    };
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry)
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            "5s",
        );
    for (key, value) in url.query_pairs() {
        let config: AmazonS3ConfigKey = key.parse().map_err(|_| {
            BlobError::Backend(format!(
                "unknown option `{key}` in the s3:// blob store URL"
            ))
        })?;
        builder = builder.with_config(config, value);
    }
    let store = builder.build().map_err(backend_error)?;
    Ok((Arc::new(store), prefix))
}

impl ObjectBlobs {
    pub(super) fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self { store, prefix }
    }

    pub(super) fn location(&self, key: &BlobKey) -> Path {
        // A BlobKey's segments are valid path parts (BlobKey::parse), so
        // nothing is escaped here.
        self.prefix
            .parts()
            .chain(key.as_str().split('/').map(PathPart::from))
            .collect()
    }
}

#[async_trait]
impl BlobStore for ObjectBlobs {
    async fn put(&self, key: &BlobKey, mut body: ByteStream) -> Result<u64, BlobError> {
        let location = self.location(key);
        let mut part = Part::default();
        let mut written = 0u64;
        // The first part: a body that ends within it is one plain write.
        while part.len < PART_SIZE {
            match body.next().await {
                Some(Ok(chunk)) => {
                    written += chunk.len() as u64;
                    part.push(chunk);
                }
                Some(Err(e)) => return Err(BlobError::Input(e)),
                None => {
                    let payload = part.take(usize::MAX);
                    let (store, at) = (self.store.clone(), location.clone());
                    let write = async move { store.put(&at, payload).await };
                    Commit::new(&self.store, &location, write).wait().await?;
                    return Ok(written);
                }
            }
        }

        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(backend_error)?;
        let mut upload = Upload {
            parts: JoinSet::new(),
            abort_on_drop: AbortOnDrop(Some(upload)),
        };
        loop {
            while part.len >= PART_SIZE {
                upload.send(part.take(PART_SIZE)).await?;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    written += chunk.len() as u64;
                    part.push(chunk);
                }
                Some(Err(e)) => {
                    upload.abort().await;
                    return Err(BlobError::Input(e));
                }
                None => break,
            }
        }
        if part.len > 0 {
            upload.send(part.take(usize::MAX)).await?;
        }
        while let Some(sent) = upload.parts.join_next().await {
            if let Err(e) = flatten(sent) {
                upload.abort().await;
                return Err(e);
            }
        }
        let Some(mut multipart) = upload.abort_on_drop.0.take() else {
            unreachable!("the upload is taken only here or by abort, which returns");
        };
        let complete = async move {
            let completed = multipart.complete().await;
            if completed.is_err() {
                let _ = multipart.abort().await;
            }
            completed
        };
        Commit::new(&self.store, &location, complete).wait().await?;
        Ok(written)
    }

    async fn put_bytes(&self, key: &BlobKey, bytes: Bytes) -> Result<(), BlobError> {
        let location = self.location(key);
        let (store, at) = (self.store.clone(), location.clone());
        let write = async move { store.put(&at, bytes.into()).await };
        Commit::new(&self.store, &location, write).wait().await
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Blob, BlobError> {
        let location = self.location(key);
        if let Some(range) = range.clone().filter(|r| r.is_empty()) {
            // Stores refuse an empty range; the object must still exist.
            let meta = self.store.head(&location).await.map_err(backend_error)?;
            return Ok(Blob {
                size: meta.size,
                range,
                body: Box::pin(futures_util::stream::empty()),
            });
        }
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .store
            .get_opts(&location, options)
            .await
            .map_err(backend_error)?;
        Ok(Blob {
            size: result.meta.size,
            range: result.range.clone(),
            body: Box::pin(
                result
                    .into_stream()
                    .map(|r| r.map_err(std::io::Error::from)),
            ),
        })
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        match self.store.delete(&self.location(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend_error(e)),
        }
    }

    async fn ping(&self) -> Result<(), BlobError> {
        // A HEAD of a key nothing writes: an answer, found or not, is a store
        // that works (and, for S3, accepts our credentials).
        let probe: Path = self
            .prefix
            .parts()
            .chain([PathPart::from("ping")])
            .collect();
        match tokio::time::timeout(PING_TIMEOUT, self.store.head(&probe)).await {
            Ok(Ok(_) | Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(backend_error(e)),
            Err(_) => Err(BlobError::Unavailable(format!(
                "no answer within {} s",
                PING_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Chunks of the body waiting to be written, cut at part boundaries
/// without copying (`Bytes` slices).
#[derive(Default)]
struct Part {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Part {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// The first `max` bytes (all if fewer), as a payload.
    fn take(&mut self, max: usize) -> PutPayload {
        if self.len <= max {
            self.len = 0;
            return std::mem::take(&mut self.chunks).into_iter().collect();
        }
        let mut taken = Vec::new();
        let mut need = max;
        let mut rest = std::mem::take(&mut self.chunks).into_iter();
        for mut chunk in rest.by_ref() {
            if chunk.len() <= need {
                need -= chunk.len();
                taken.push(chunk);
                if need == 0 {
                    break;
                }
            } else {
                taken.push(chunk.split_to(need));
                self.chunks.push(chunk);
                break;
            }
        }
        self.chunks.extend(rest);
        self.len -= max;
        taken.into_iter().collect()
    }
}

/// A multipart upload in progress and its parts being sent.
struct Upload {
    // Fields drop in order: the parts in flight are cancelled before the
    // upload is aborted.
    parts: JoinSet<object_store::Result<()>>,
    abort_on_drop: AbortOnDrop,
}

impl Upload {
    /// Starts sending `payload` as the next part, once fewer than
    /// [`PARTS_IN_FLIGHT`] are in flight; aborts the upload if one failed.
    async fn send(&mut self, payload: PutPayload) -> Result<(), BlobError> {
        while self.parts.len() >= PARTS_IN_FLIGHT {
            let Some(sent) = self.parts.join_next().await else {
                break;
            };
            if let Err(e) = flatten(sent) {
                self.abort().await;
                return Err(e);
            }
        }
        let Some(upload) = self.abort_on_drop.0.as_mut() else {
            unreachable!("the upload is taken only once the parts are all sent");
        };
        self.parts.spawn(upload.put_part(payload));
        Ok(())
    }

    /// Stops the parts in flight and aborts the upload, here and now (not in
    /// the background, as a drop does): when `put` returns, nothing is left.
    async fn abort(&mut self) {
        self.parts.shutdown().await;
        if let Some(mut upload) = self.abort_on_drop.0.take()
            && let Err(e) = upload.abort().await
        {
            tracing::warn!(error = %e, "aborting a blob upload failed");
        }
    }
}

fn flatten(
    sent: Result<object_store::Result<()>, tokio::task::JoinError>,
) -> Result<(), BlobError> {
    match sent {
        Ok(result) => result.map_err(backend_error),
        Err(e) => Err(BlobError::Backend(format!("a part upload ended: {e}"))),
    }
}

/// Aborts a multipart upload that a dropped `put` left behind, in a task
/// (a drop cannot wait): the local store's staging file is removed, S3's
/// parts are discarded. Needs the tokio runtime to outlive the drop; the
/// local store also removes its staging file when the upload is dropped.
struct AbortOnDrop(Option<Box<dyn MultipartUpload>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(mut upload) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "aborting an abandoned blob upload failed");
                }
            });
        }
    }
}

/// The last step of a put (the plain write, or the completion of a
/// multipart upload), run as its own task: once started it may publish
/// the object even if the put is dropped (the local store's write runs on
/// a blocking thread, S3 may have the request), so a dropped put leaves a
/// task that waits for it and deletes what it published.
struct Commit {
    task: Option<JoinHandle<object_store::Result<PutResult>>>,
    store: Arc<dyn ObjectStore>,
    location: Path,
}

impl Commit {
    fn new<F>(store: &Arc<dyn ObjectStore>, location: &Path, write: F) -> Self
    where
        F: Future<Output = object_store::Result<PutResult>> + Send + 'static,
    {
        Self {
            task: Some(tokio::spawn(write)),
            store: store.clone(),
            location: location.clone(),
        }
    }

    async fn wait(mut self) -> Result<(), BlobError> {
        let Some(task) = self.task.as_mut() else {
            unreachable!("the task is taken only here, after it ended");
        };
        let done = task.await;
        self.task = None;
        match done {
            Ok(result) => result.map(|_| ()).map_err(backend_error),
            Err(e) => Err(BlobError::Backend(format!("a blob write ended: {e}"))),
        }
    }
}

impl Drop for Commit {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let (store, location) = (self.store.clone(), self.location.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(_)) = task.await
                    && let Err(e) = store.delete(&location).await
                {
                    tracing::warn!(error = %e, "deleting the blob of an abandoned put failed");
                }
            });
        }
    }
}

/// The store's error as ours: not found, unavailable (no connection, a
/// timeout), or anything else. object_store's messages name the store and
/// the object's path, never credentials.
pub(super) fn backend_error(e: object_store::Error) -> BlobError {
    if let object_store::Error::NotFound { .. } = e {
        return BlobError::NotFound;
    }
    if unavailable(&e) {
        BlobError::Unavailable(e.to_string())
    } else {
        BlobError::Backend(e.to_string())
    }
}

/// Whether something in `e`'s chain says the store could not be reached.
fn unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cause = Some(e);
    while let Some(e) = cause {
        #[cfg(feature = "s3")]
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind;
            if matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            ) {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::conformance::TestBlobs;

    #[test]
    fn parts_are_cut_at_the_boundary() {
        let mut part = Part::default();
        for chunk in [&b"abc"[..], b"defg", b"h"] {
            part.push(Bytes::from_static(chunk));
        }
        let first: Vec<u8> = part.take(5).iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(first, b"abcde");
        assert_eq!(part.len, 3);
        let rest: Vec<u8> = part
            .take(usize::MAX)
            .iter()
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(rest, b"fgh");
        assert_eq!((part.len, part.chunks.len()), (0, 0));
    }

    #[tokio::test]
    async fn open_refuses_what_it_cannot_open() {
        for url in ["ftp://x/y", "file://relative/dir", "not a url"] {
            match open(url).await.err() {
                Some(BlobError::Backend(message)) => assert!(!message.is_empty()),
                other => panic!("{url}: {other:?}"),
            }
        }
        #[cfg(feature = "s3")]
        match open("s3://bucket?access_key_id=secret-in-url&no_such_option=1")
            .await
            .err()
        {
            Some(BlobError::Backend(message)) => {
                assert!(message.contains("no_such_option"), "{message}");
                assert!(!message.contains("secret-in-url"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn file_url_creates_its_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("new/blobs");
        let url = url::Url::from_directory_path(&root).expect("file URL");
        let store = open(url.as_str()).await.expect("open");
        let key = BlobKey::random();
        store
            .put_bytes(&key, Bytes::from_static(b"x"))
            .await
            .expect("put");
        assert!(root.join(key.as_str()).is_file());
    }

    mod memory {
        crate::blob_conformance_tests!(async {
            crate::blobs::conformance::TestBlobs::new(
                crate::blobs::open("memory://").await.expect("memory://"),
            )
        });
    }

    /// A `file://` store in a temporary directory, whose unfinished writes
    /// are object_store's staging files (`<name>#<n>`).
    async fn file_store() -> TestBlobs {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = url::Url::from_directory_path(dir.path()).expect("file URL");
        let store = open(url.as_str()).await.expect("file://");
        let root = dir.path().to_owned();
        TestBlobs::new(store)
            .with_leftovers(move || {
                let root = root.clone();
                Box::pin(async move { staging_files(&root) })
            })
            .keeping(dir)
    }

    fn staging_files(dir: &std::path::Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![dir.to_owned()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.to_string_lossy().contains('#') {
                    found.push(path.display().to_string());
                }
            }
        }
        found
    }

    mod file {
        crate::blob_conformance_tests!(super::file_store());
    }

    #[cfg(feature = "s3")]
    mod s3 {
        use super::*;
        use crate::blobs::moto;

        /// A fresh bucket on the test process's moto server; its unfinished
        /// writes are the bucket's multipart uploads in progress.
        pub(super) async fn s3_store() -> TestBlobs {
            let url = moto::moto_s3_url().await;
            let store = open(&url).await.expect("s3://");
            TestBlobs::new(store).with_leftovers(move || {
                let url = url.clone();
                Box::pin(async move { moto::multipart_uploads(&url).await })
            })
        }

        crate::blob_conformance_tests!(s3_store());

        #[tokio::test]
        async fn twelve_mib_goes_multipart_in_three_parts() {
            let url = url::Url::parse(&moto::moto_s3_url().await).expect("URL");
            let (store, prefix) = super::super::s3(&url).expect("s3");
            let blobs = ObjectBlobs::new(store.clone(), prefix);
            let key = BlobKey::random();
            let size = 12 * 1024 * 1024;
            let body = crate::blobs::conformance::body(size, 64 * 1024);
            assert_eq!(blobs.put(&key, body).await.expect("put"), size as u64);
            // S3's ETag of a multipart object is `"<md5 of the parts' md5s>-<parts>"`:
            // 5 + 5 + 2 MiB.
            let meta = store.head(&blobs.location(&key)).await.expect("head");
            let e_tag = meta.e_tag.expect("an ETag");
            assert!(e_tag.trim_matches('"').ends_with("-3"), "{e_tag}");
            // A body shorter than one part is one plain PUT.
            let small = BlobKey::random();
            blobs
                .put(
                    &small,
                    crate::blobs::conformance::body(PART_SIZE - 1, 64 * 1024),
                )
                .await
                .expect("put");
            let meta = store.head(&blobs.location(&small)).await.expect("head");
            assert!(!meta.e_tag.expect("an ETag").contains('-'));
        }

        #[tokio::test]
        async fn prefix_keeps_keys_under_it() {
            let url = moto::moto_s3_url().await;
            let (base, query) = url.split_once('?').expect("a query");
            let prefixed = crate::blobs::open(&format!("{base}/some/prefix?{query}"))
                .await
                .expect("open");
            let key = BlobKey::random();
            prefixed
                .put_bytes(&key, Bytes::from_static(b"p"))
                .await
                .expect("put");
            let (store, _) = super::super::s3(&url::Url::parse(&url).expect("URL")).expect("s3");
            let path: Path = format!("some/prefix/{key}").as_str().into();
            assert_eq!(store.head(&path).await.expect("head").size, 1);
        }

        #[tokio::test]
        async fn unreachable_endpoint_is_unavailable() {
            let port = {
                let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                socket.local_addr().expect("addr").port()
            };
            let url = format!(
                "s3://nowhere?endpoint=http://127.0.0.1:{port}&region=us-east-1&allow_http=true\
                 &access_key_id=test&secret_access_key=test"
            );
            let store = crate::blobs::open(&url)
                .await
                .expect("open makes no request");
            match store.ping().await {
                Err(BlobError::Unavailable(message)) => {
                    assert!(!message.contains("secret"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }

        #[tokio::test]
        async fn over_tls_with_ring_as_the_process_provider() {
            let url = moto::moto_tls_s3_url().await;
            let store = crate::blobs::open(&url).await.expect("open");
            store.ping().await.expect("ping over TLS");
            let key = BlobKey::random();
            store
                .put_bytes(&key, Bytes::from_static(b"tls"))
                .await
                .expect("put");
            let blob = store.get(&key, None).await.expect("get");
            assert_eq!(blob.size, 3);
        }
    }
}
