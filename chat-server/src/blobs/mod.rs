//! Where attachments' bytes live, behind one trait.
//!
//! A [`BlobStore`] keeps opaque objects under keys the server makes
//! ([`BlobKey`]); what an object is (its type, size, owner, the message it
//! belongs to) is in storage, never here. Writes are all or nothing: a body
//! that fails or an upload that is cancelled leaves nothing readable.
//!
//! One implementation, over the `object_store` crate, serves every URL that
//! [`open`] takes: `memory://` (in-process, for tests and single-process
//! trials), `file:///absolute/dir` (the local filesystem) and, with the
//! `s3` cargo feature, `s3://bucket[/prefix]` (S3 or a compatible server).
//! An embedder may implement the trait itself; every implementation runs
//! the one `conformance` suite.

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

// Each public function is one test, named for the rule it checks.
#[cfg(any(test, feature = "testing"))]
#[allow(missing_docs)]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
mod moto;
mod object;

/// Helpers for tests of code that stores blobs.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    pub use super::moto::moto_s3_url;
}

/// A body being written or read: chunks of bytes, or the error that ended
/// it.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Keeps and serves attachments' bytes.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Writes `body` under `key`, all or nothing: when `body` yields an
    /// error, or the future is dropped before it resolves, nothing readable
    /// is left under `key` (a multipart upload is aborted, a staging file
    /// removed); a put that replaced an object and was dropped at its very
    /// end may leave nothing under `key` at all. Returns the bytes written.
    /// Streams: never holds the whole body in memory.
    ///
    /// Not cancel safe in the `select!` sense: dropping it abandons the
    /// write (that is its purpose), it never resumes.
    async fn put(&self, key: &BlobKey, body: ByteStream) -> Result<u64, BlobError>;

    /// Stores a small object from memory (thumbnails), all or nothing like
    /// [`put`](Self::put).
    async fn put_bytes(&self, key: &BlobKey, bytes: Bytes) -> Result<(), BlobError> {
        let body = futures_util::stream::once(async move { Ok(bytes) });
        self.put(key, Box::pin(body)).await.map(|_| ())
    }

    /// Reads the object, or `range` of it (`start..end`, end exclusive; the
    /// caller validated it against the object's size). [`BlobError::NotFound`]
    /// if there is none under `key`.
    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<Blob, BlobError>;

    /// Deletes the object; a key already absent is `Ok`.
    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError>;

    /// Whether the store answers (for `/healthz`): cheap, and bounded in
    /// time.
    async fn ping(&self) -> Result<(), BlobError>;
}

/// An object being read.
pub struct Blob {
    /// The size of the whole object, whatever the range read.
    pub size: u64,
    /// The part of the object that `body` holds.
    pub range: Range<u64>,
    /// The bytes of `range`.
    pub body: ByteStream,
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob")
            .field("size", &self.size)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Why a blob store call failed. Messages carry no credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No object under the key.
    #[error("no blob under this key")]
    NotFound,
    /// The body given to [`BlobStore::put`] yielded this error; it is the
    /// stream's own, returned as is, so that the caller can find its cause
    /// (`std::io::Error::get_ref`, then a downcast), e.g. an upload over its
    /// size limit.
    #[error("the blob's body failed: {0}")]
    Input(#[source] std::io::Error),
    /// The store did not answer (connection refused or reset, timeout): may
    /// work again later.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// Any other failure of the store, or a URL [`open`] cannot open.
    #[error("blob store: {0}")]
    Backend(String),
}

/// The key of an object. The server makes them ([`BlobKey::random`]) and
/// reads them back from storage ([`BlobKey::parse`]); a client's string is
/// never one, so no client-controlled path reaches a filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobKey(String);

impl BlobKey {
    /// The longest key [`parse`](Self::parse) accepts.
    const MAX_LEN: usize = 200;

    /// A new key, unique with overwhelming probability: `a/xy/<uuid>`, the
    /// first two hex digits of the uuid as a directory, so that no
    /// directory of a `file://` store grows past a few hundredths of the
    /// objects.
    pub fn random() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("a/{}/{id}", &id[..2]))
    }

    /// The key of this object's thumbnail: the same, plus `.thumb`.
    pub fn thumbnail(&self) -> BlobKey {
        Self(format!("{}.thumb", self.0))
    }

    /// A key read back from storage, if it is one the server could have
    /// made: at most 200 characters of `[a-z0-9/._-]`, relative, no empty,
    /// `.` or `..` segment.
    pub fn parse(s: &str) -> Option<BlobKey> {
        let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '/' | '.' | '_' | '-');
        let valid = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.chars().all(allowed)
            && !s.contains("..")
            && s.split('/')
                .all(|segment| !segment.is_empty() && segment != ".");
        valid.then(|| Self(s.to_owned()))
    }

    /// The key as text (what storage keeps).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opens the store a URL names:
/// - `memory://`: in this process, gone when it ends;
/// - `file:///absolute/dir`: files under the directory (created if
///   missing), written to a staging file, synced, then renamed into place;
/// - `s3://bucket[/prefix]?option=value&…` (cargo feature `s3`): S3 or a
///   compatible server. Configuration is read from the standard `AWS_*`
///   environment variables (credentials, region, endpoint), then from the
///   URL's query, whose keys are object_store's `AmazonS3ConfigKey` names
///   (`endpoint`, `region`, `allow_http`, `access_key_id`, …), e.g.
///   `s3://media?endpoint=http://127.0.0.1:9000&region=us-east-1&allow_http=true`.
///   Prefer the environment for credentials: a URL is easily logged.
///
/// Makes no request: a store that does not answer fails its first call
/// (see [`BlobStore::ping`]). An unknown scheme, or `s3://` without the
/// feature, is a [`BlobError::Backend`] that says so.
pub async fn open(url: &str) -> Result<Arc<dyn BlobStore>, BlobError> {
    object::open(url).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_are_distinct_and_parse_back() {
        let keys: std::collections::HashSet<BlobKey> =
            (0..1000).map(|_| BlobKey::random()).collect();
        assert_eq!(keys.len(), 1000);
        for key in keys.iter().take(10) {
            assert_eq!(BlobKey::parse(key.as_str()).as_ref(), Some(key));
            let thumb = key.thumbnail();
            assert_eq!(thumb.as_str(), format!("{key}.thumb"));
            assert_eq!(BlobKey::parse(thumb.as_str()), Some(thumb));
            let (fan_out, id) = key.as_str()["a/".len()..].split_once('/').expect("a/xy/id");
            assert!(id.starts_with(fan_out) && id.len() == 32, "{key}");
        }
    }

    #[test]
    fn parse_refuses_what_the_server_never_makes() {
        for bad in [
            "", "../x", "/x", "a/../b", "a/..", "..", "x/", "a//b", "./a", "a/./b", "A/b", "a b",
            "a\\b", "a/b#1", "a:b", "é", "a\0b",
        ] {
            assert_eq!(BlobKey::parse(bad), None, "{bad:?}");
        }
        assert_eq!(BlobKey::parse(&"a".repeat(201)), None);
        for good in [
            "a",
            "a/ab/0123456789abcdef",
            "x.thumb",
            "a_b-c.d/e",
            &"a".repeat(200),
        ] {
            assert_eq!(BlobKey::parse(good).map(|k| k.0), Some(good.to_owned()));
        }
    }
}
