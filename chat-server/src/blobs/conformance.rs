//! The one test suite every [`BlobStore`] runs. A backend supplies a
//! [`TestBlobs`] (a fresh, empty store, and if it has any, a way to list
//! unfinished writes) and invokes
//! [`blob_conformance_tests!`](crate::blob_conformance_tests).
//!
//! ```ignore
//! mod memory {
//!     chat_server::blob_conformance_tests!(async {
//!         chat_server::blobs::conformance::TestBlobs::new(
//!             chat_server::blobs::open("memory://").await.expect("memory://"),
//!         )
//!     });
//! }
//! ```

use std::any::Any;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, stream};

use super::{Blob, BlobError, BlobKey, BlobStore, ByteStream};

const MIB: usize = 1024 * 1024;

/// Lists a store's unfinished writes: staging files, multipart uploads in
/// progress. Each is named by a string for the failure message.
pub type Leftovers = Box<dyn Fn() -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// A store for one test: empty, its own (a temporary directory, a bucket).
pub struct TestBlobs {
    store: Arc<dyn BlobStore>,
    leftovers: Option<Leftovers>,
    keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for TestBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBlobs")
            .field("leftovers", &self.leftovers.is_some())
            .field("keep", &self.keep.len())
            .finish_non_exhaustive()
    }
}

impl TestBlobs {
    /// A store whose unfinished writes cannot be listed (only what `get`
    /// sees is checked).
    pub fn new(store: Arc<dyn BlobStore>) -> Self {
        Self {
            store,
            leftovers: None,
            keep: Vec::new(),
        }
    }

    /// How to list the store's unfinished writes, which a failed or dropped
    /// put must not leave behind (once its cleanup, maybe in the background,
    /// is done).
    pub fn with_leftovers(
        mut self,
        list: impl Fn() -> BoxFuture<'static, Vec<String>> + Send + Sync + 'static,
    ) -> Self {
        self.leftovers = Some(Box::new(list));
        self
    }

    /// Keeps `guard` (a temporary directory) alive as long as the store.
    pub fn keeping(mut self, guard: impl Any + Send + Sync) -> Self {
        self.keep.push(Box::new(guard));
        self
    }

    /// The store under test.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// Waits up to 10 s for the store to have no unfinished write.
    pub async fn assert_no_leftovers(&self) {
        let Some(list) = &self.leftovers else {
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = list().await;
            if left.is_empty() {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("unfinished writes left behind: {left:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance test, each on a fresh
/// store: `$make` is an async expression evaluating to a [`TestBlobs`].
#[macro_export]
macro_rules! blob_conformance_tests {
    ($make:expr) => {
        $crate::blob_conformance_tests!(@each $make;
            round_trip_of_a_multipart_body,
            round_trip_across_part_boundaries,
            empty_body,
            ranges,
            missing_key_is_not_found,
            delete_then_get_is_not_found,
            delete_of_a_missing_key_is_ok,
            failing_body_leaves_nothing,
            dropped_put_leaves_nothing,
            overwrite_keeps_the_second,
            put_bytes_and_thumbnails,
            concurrent_puts,
            ping,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let blobs: $crate::blobs::conformance::TestBlobs = $make.await;
                $crate::blobs::conformance::$name(&blobs).await;
            }
        )*
    };
}

// Bodies whose every byte depends on its offset (and a seed), so that a
// part written twice, dropped or out of place shows.

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The bytes at `range` of the body of `seed`.
pub fn content(seed: u64, range: Range<u64>) -> Vec<u8> {
    range
        .map(|i| {
            splitmix(seed.wrapping_mul(0x1_0000_0001) ^ (i / 8)).to_le_bytes()[(i % 8) as usize]
        })
        .collect()
}

/// A body of `size` bytes of seed 0 in chunks of `chunk`, made as it is
/// read.
pub fn body(size: usize, chunk: usize) -> ByteStream {
    seeded_body(0, size, chunk)
}

/// A body of `size` bytes of `seed` in chunks of `chunk`.
pub fn seeded_body(seed: u64, size: usize, chunk: usize) -> ByteStream {
    let starts = (0..size).step_by(chunk.max(1));
    Box::pin(stream::iter(starts).map(move |start| {
        let end = (start + chunk).min(size);
        Ok(Bytes::from(content(seed, start as u64..end as u64)))
    }))
}

/// `body` followed by an item that never comes; `reached` fires when it is
/// asked for.
fn stalling(body: ByteStream, reached: tokio::sync::oneshot::Sender<()>) -> ByteStream {
    let stall = stream::once(async move {
        let _ = reached.send(());
        futures_util::future::pending::<Result<Bytes, io::Error>>().await
    });
    Box::pin(body.chain(stall))
}

/// The error a failing body yields.
#[derive(Debug, thiserror::Error)]
#[error("the client went away")]
pub struct BodyFailed;

/// `body` followed by a [`BodyFailed`] error.
fn failing(body: ByteStream) -> ByteStream {
    let fail = stream::once(async { Err(io::Error::other(BodyFailed)) });
    Box::pin(body.chain(fail))
}

async fn read_all(blob: Blob) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut body = blob.body;
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.expect("a chunk of the body"));
    }
    bytes
}

/// The length and SHA-256 of a body, read in a stream.
async fn digest(mut body: ByteStream) -> (u64, Vec<u8>) {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut len = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("a chunk of the body");
        len += chunk.len() as u64;
        context.update(&chunk);
    }
    (len, context.finish().as_ref().to_vec())
}

async fn assert_round_trip(t: &TestBlobs, size: usize, chunk: usize) {
    let store = t.store();
    let key = BlobKey::random();
    let written = store.put(&key, body(size, chunk)).await.expect("put");
    assert_eq!(written, size as u64, "bytes written");
    let blob = store.get(&key, None).await.expect("get");
    assert_eq!(
        (blob.size, blob.range.clone()),
        (size as u64, 0..size as u64)
    );
    let (len, read) = digest(blob.body).await;
    let (_, sent) = digest(body(size, chunk)).await;
    assert_eq!(len, size as u64, "bytes read back");
    assert!(
        read == sent,
        "{size} bytes in chunks of {chunk}: the SHA-256 read back differs"
    );
}

async fn assert_not_found(store: &dyn BlobStore, key: &BlobKey) {
    match store.get(key, None).await {
        Err(BlobError::NotFound) => {}
        other => panic!("expected NotFound under {key}, got {other:?}"),
    }
}

/// 12 MiB in 64 KiB chunks: several parts of a multipart upload.
pub async fn round_trip_of_a_multipart_body(t: &TestBlobs) {
    assert_round_trip(t, 12 * MIB, 64 * 1024).await;
}

/// Exactly one part, and chunks that straddle part boundaries.
pub async fn round_trip_across_part_boundaries(t: &TestBlobs) {
    assert_round_trip(t, 5 * MIB, MIB).await;
    assert_round_trip(t, 10 * MIB + 12_345, MIB + 7).await;
    assert_round_trip(t, 1, 1).await;
}

pub async fn empty_body(t: &TestBlobs) {
    let store = t.store();
    let key = BlobKey::random();
    let written = store
        .put(&key, Box::pin(stream::empty()))
        .await
        .expect("put");
    assert_eq!(written, 0);
    let blob = store.get(&key, None).await.expect("get");
    assert_eq!((blob.size, blob.range.clone()), (0, 0..0));
    assert!(read_all(blob).await.is_empty());
}

pub async fn ranges(t: &TestBlobs) {
    let store = t.store();
    let key = BlobKey::random();
    let size = 100_000u64;
    store
        .put(&key, body(size as usize, 4096))
        .await
        .expect("put");
    for range in [
        0..10,
        500..1_500,
        size - 10..size,
        42..43,
        0..1,
        size - 1..size,
        0..size,
    ] {
        let blob = store.get(&key, Some(range.clone())).await.expect("get");
        assert_eq!(blob.size, size, "the whole object's size for {range:?}");
        assert_eq!(blob.range, range);
        assert!(
            read_all(blob).await == content(0, range.clone()),
            "bytes of {range:?}"
        );
    }
}

pub async fn missing_key_is_not_found(t: &TestBlobs) {
    let key = BlobKey::random();
    assert_not_found(t.store().as_ref(), &key).await;
    match t.store().get(&key, Some(0..1)).await {
        Err(BlobError::NotFound) => {}
        other => panic!("expected NotFound for a range, got {other:?}"),
    }
}

pub async fn delete_then_get_is_not_found(t: &TestBlobs) {
    let store = t.store();
    let key = BlobKey::random();
    let other = BlobKey::random();
    store
        .put_bytes(&key, Bytes::from_static(b"gone"))
        .await
        .expect("put");
    store
        .put_bytes(&other, Bytes::from_static(b"kept"))
        .await
        .expect("put");
    store.delete(&key).await.expect("delete");
    assert_not_found(store.as_ref(), &key).await;
    let kept = store.get(&other, None).await.expect("the other object");
    assert_eq!(read_all(kept).await, b"kept");
}

pub async fn delete_of_a_missing_key_is_ok(t: &TestBlobs) {
    let store = t.store();
    let key = BlobKey::random();
    store
        .delete(&key)
        .await
        .expect("delete of a key never written");
    store
        .put_bytes(&key, Bytes::from_static(b"x"))
        .await
        .expect("put");
    store.delete(&key).await.expect("delete");
    store.delete(&key).await.expect("delete again");
}

/// Fails within the first part (nothing sent yet) and after a part was
/// sent (a multipart upload to abort).
pub async fn failing_body_leaves_nothing(t: &TestBlobs) {
    let store = t.store();
    for size in [3 * 1024, 7 * MIB] {
        let key = BlobKey::random();
        match store.put(&key, failing(body(size, 64 * 1024))).await {
            Err(BlobError::Input(e)) => assert!(
                e.get_ref()
                    .is_some_and(|cause| cause.downcast_ref::<BodyFailed>().is_some()),
                "the body's own error, got {e:?}"
            ),
            other => panic!("after {size} bytes: expected Input, got {other:?}"),
        }
        assert_not_found(store.as_ref(), &key).await;
        t.assert_no_leftovers().await;
    }
}

/// The put's future dropped while it waits for the body, within the first
/// part and after a part was sent.
pub async fn dropped_put_leaves_nothing(t: &TestBlobs) {
    for size in [MIB, 6 * MIB] {
        let key = BlobKey::random();
        let (reached, stalled) = tokio::sync::oneshot::channel();
        let store = t.store().clone();
        let put = tokio::spawn({
            let key = key.clone();
            async move {
                store
                    .put(&key, stalling(body(size, 64 * 1024), reached))
                    .await
            }
        });
        tokio::time::timeout(Duration::from_secs(30), stalled)
            .await
            .expect("the put read the body within 30 s")
            .expect("the body stalled");
        // Let a part in flight reach the store.
        tokio::time::sleep(Duration::from_millis(100)).await;
        put.abort();
        let ended = put.await;
        assert!(ended.as_ref().is_err_and(|e| e.is_cancelled()), "{ended:?}");
        assert_not_found(t.store().as_ref(), &key).await;
        t.assert_no_leftovers().await;
        assert_not_found(t.store().as_ref(), &key).await;
    }
}

/// A second put under a key replaces the first whole, a shorter one too.
pub async fn overwrite_keeps_the_second(t: &TestBlobs) {
    let store = t.store();
    let key = BlobKey::random();
    store
        .put(&key, seeded_body(1, 300_000, 8192))
        .await
        .expect("first put");
    store
        .put(&key, seeded_body(2, 1000, 100))
        .await
        .expect("second put");
    let blob = store.get(&key, None).await.expect("get");
    assert_eq!(blob.size, 1000);
    assert!(read_all(blob).await == content(2, 0..1000));
}

pub async fn put_bytes_and_thumbnails(t: &TestBlobs) {
    let store = t.store();
    let key = BlobKey::random();
    store
        .put_bytes(&key, Bytes::from_static(b"the original"))
        .await
        .expect("put");
    store
        .put_bytes(&key.thumbnail(), Bytes::from_static(b"thumb"))
        .await
        .expect("put thumbnail");
    let original = store.get(&key, None).await.expect("get");
    assert_eq!(original.size, 12);
    assert_eq!(read_all(original).await, b"the original");
    let thumb = store
        .get(&key.thumbnail(), None)
        .await
        .expect("get thumbnail");
    assert_eq!(read_all(thumb).await, b"thumb");
    store.delete(&key).await.expect("delete");
    assert_not_found(store.as_ref(), &key).await;
    store
        .get(&key.thumbnail(), None)
        .await
        .expect("the thumbnail is an object of its own");
}

pub async fn concurrent_puts(t: &TestBlobs) {
    let puts = (0..8u64).map(|seed| {
        let store = t.store().clone();
        tokio::spawn(async move {
            let key = BlobKey::random();
            let size = 200_000 + seed as usize;
            store
                .put(&key, seeded_body(seed, size, 16 * 1024))
                .await
                .expect("put");
            (key, seed, size)
        })
    });
    for put in futures_util::future::join_all(puts).await {
        let (key, seed, size) = put.expect("the put task");
        let blob = t.store().get(&key, None).await.expect("get");
        assert!(
            read_all(blob).await == content(seed, 0..size as u64),
            "{key}"
        );
    }
}

pub async fn ping(t: &TestBlobs) {
    t.store().ping().await.expect("ping");
}
