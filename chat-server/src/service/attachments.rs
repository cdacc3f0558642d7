//! Attachments: uploads streamed to the blob store, the access rule of
//! every read, the links that read without a header, and the sweeper that
//! deletes the files of what is gone.
//!
//! An upload is its uploader's alone until a message of theirs carries it
//! (`Storage::append` links the row in the message's transaction); from
//! then on it is read by whoever may read the message's room, on every
//! call. The bytes go to the store before the row exists, so a row always
//! has its files; a row is doomed (its message or room deleted, its
//! uploader's deletion, an upload never sent within the grace period) in
//! the transaction that makes it so, and the sweeper deletes the files of
//! doomed rows before the rows themselves, so a crash in between only
//! repeats a deletion.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_core::attachment::{Attachment, AttachmentInfo, AttachmentLink, Thumbnail, UploadUsage};
use chat_core::{AttachmentId, ErrorCode, RoomRef, Timestamp, UserId};
use futures_util::StreamExt;
use tokio::sync::Notify;

use super::ChatService;
use crate::blobs::{Blob, BlobError, BlobKey, BlobStore, ByteStream};
use crate::error::{ApiError, ApiResult};
use crate::media::{self, ImageError, ImageLimits};
use crate::storage::{AttachmentRecord, Conflict, NewAttachment, StorageError};

/// What uploads may be, and how long links and unsent uploads last.
#[derive(Debug, Clone)]
pub(crate) struct FileLimits {
    /// The largest file, in bytes.
    pub(crate) max_file: u64,
    /// The most bytes one user's uploads (sent or not) may add up to.
    pub(crate) quota: u64,
    /// How long an upload may wait to be sent before it is deleted.
    pub(crate) grace: Duration,
    /// How long a signed link reads.
    pub(crate) link_ttl: Duration,
    /// The largest image kept in memory to decode for a thumbnail; a
    /// larger one gets its dimensions from its header and no thumbnail.
    pub(crate) max_thumbnail_source: u64,
    /// The decoding bounds (pixels, allocation, time).
    pub(crate) image: ImageLimits,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            max_file: 25 * 1024 * 1024,
            quota: 1024 * 1024 * 1024,
            grace: Duration::from_secs(24 * 3600),
            link_ttl: Duration::from_secs(300),
            max_thumbnail_source: 32 * 1024 * 1024,
            image: ImageLimits::default(),
        }
    }
}

/// The blob store with its limits, the key that signs links, and the
/// sweeper's wake-up.
pub(crate) struct Files {
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) limits: FileLimits,
    link_key: ring::hmac::Key,
    sweep: Arc<Notify>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Files {
    /// `link_secret` signs links: every instance sharing the storage must
    /// use the same one (the builder keeps it in storage).
    pub(crate) fn new(blobs: Arc<dyn BlobStore>, limits: FileLimits, link_secret: &[u8]) -> Self {
        Self {
            blobs,
            limits,
            link_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, link_secret),
            sweep: Arc::new(Notify::new()),
        }
    }

    fn signed_text(id: AttachmentId, user: UserId, expires: i64) -> String {
        format!("attachment:{id}:{user}:{expires}")
    }

    fn signature(&self, id: AttachmentId, user: UserId, expires: i64) -> String {
        let text = Self::signed_text(id, user, expires);
        let tag = ring::hmac::sign(&self.link_key, text.as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `signature` (hex) signs the link, compared in constant time.
    fn verify(&self, id: AttachmentId, user: UserId, expires: i64, signature: &str) -> bool {
        let bytes: Option<Vec<u8>> = (0..signature.len())
            .step_by(2)
            .map(|i| {
                signature
                    .get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect();
        let Some(bytes) = bytes else {
            return false;
        };
        let text = Self::signed_text(id, user, expires);
        ring::hmac::verify(&self.link_key, text.as_bytes(), &bytes).is_ok()
    }
}

/// An upload's checks before its body: its safe name, and the caller's
/// usage when it began against the limits.
#[derive(Debug, Clone)]
pub(crate) struct Allowance {
    name: String,
    used: u64,
    max_file: u64,
    quota: u64,
}

impl Allowance {
    fn over(&self, size: u64) -> Option<Cutoff> {
        if size > self.max_file {
            Some(Cutoff::TooLarge)
        } else if size > self.quota.saturating_sub(self.used) {
            Some(Cutoff::OverQuota)
        } else {
            None
        }
    }

    fn refusal(&self, cutoff: &Cutoff) -> ApiError {
        match cutoff {
            Cutoff::TooLarge => ApiError::with_message(
                ErrorCode::FileTooLarge,
                format!("The file is too large (at most {} bytes)", self.max_file),
            ),
            Cutoff::OverQuota => ApiError::with_message(
                ErrorCode::QuotaExceeded,
                format!(
                    "Your uploads are over their quota ({} of {} bytes used)",
                    self.used, self.quota
                ),
            ),
        }
    }
}

/// Why an upload's body was cut off: carried through the blob store as the
/// body's own error (`BlobError::Input`).
#[derive(Debug, thiserror::Error)]
enum Cutoff {
    #[error("the file is over the size limit")]
    TooLarge,
    #[error("the file would take its uploader over their quota")]
    OverQuota,
}

/// Which variant of an attachment to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Content,
    Thumbnail,
}

/// An attachment's bytes being read, with what the response needs.
#[derive(Debug)]
pub(crate) struct Download {
    pub(crate) attachment: Attachment,
    pub(crate) variant: Variant,
    /// The type to serve: the sniffed one, or the thumbnail's.
    pub(crate) content_type: String,
    pub(crate) blob: Blob,
}

/// A signed link's proof, from its query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkProof<'a> {
    pub(crate) user: UserId,
    pub(crate) expires: i64,
    pub(crate) signature: &'a str,
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::AttachmentNotFound)
}

fn files_error(e: BlobError) -> ApiError {
    match e {
        BlobError::NotFound => not_found(),
        other => {
            tracing::warn!(error = %other, "blob store failed");
            ApiError::new(ErrorCode::FilesUnavailable)
        }
    }
}

impl ChatService {
    fn files(&self) -> &Files {
        &self.files
    }

    /// What an upload may be, checked before a byte of it is read: its
    /// name, and its declared length against the size limit and what is
    /// left of the caller's quota.
    pub(crate) async fn upload_allowance(
        &self,
        user: UserId,
        name: &str,
        declared: Option<u64>,
    ) -> ApiResult<Allowance> {
        // A blank name is stored as "file"; an empty one is a mistake.
        if name.is_empty() || name.chars().count() > 1000 {
            return Err(ApiError::invalid_field(
                "name",
                "must be 1 to 1000 characters",
            ));
        }
        let limits = &self.files().limits;
        let allowance = Allowance {
            name: media::safe_file_name(name),
            used: self.storage.upload_usage(user).await?,
            max_file: limits.max_file,
            quota: limits.quota,
        };
        if let Some(cutoff) = declared.and_then(|size| allowance.over(size)) {
            return Err(allowance.refusal(&cutoff));
        }
        Ok(allowance)
    }

    /// `POST /chat/attachments/`, once [`upload_allowance`](Self::upload_allowance)
    /// said yes: streams `body` to the blob store within
    /// the size limit and the caller's quota (both checked again as bytes
    /// arrive, so a missing or false `Content-Length` changes nothing),
    /// sniffs its type, measures an image and makes its thumbnail, then
    /// records it. A body that fails (the client went away) or goes over
    /// a limit leaves nothing behind.
    pub(crate) async fn upload_within(
        &self,
        user: UserId,
        allowance: Allowance,
        body: ByteStream,
    ) -> ApiResult<Attachment> {
        let files = self.files();
        let limits = &files.limits;
        let name = allowance.name.clone();
        let refuse = |cutoff: &Cutoff| allowance.refusal(cutoff);
        let checked = allowance.clone();
        let over = move |size: u64| checked.over(size);

        // The head for sniffing, and the whole file while it may be an image
        // small enough to decode: shared with the stream the store consumes.
        let kept = Arc::new(std::sync::Mutex::new(Kept::default()));
        let keep_max = usize::try_from(limits.max_thumbnail_source).unwrap_or(usize::MAX);
        let counted = {
            let kept = kept.clone();
            let mut total: u64 = 0;
            body.map(move |chunk| {
                let chunk = chunk?;
                total += chunk.len() as u64;
                if let Some(cutoff) = over(total) {
                    return Err(std::io::Error::other(cutoff));
                }
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                kept.take(&chunk, keep_max);
                Ok(chunk)
            })
        };
        let key = BlobKey::random();
        let size = match files.blobs.put(&key, Box::pin(counted)).await {
            Ok(size) => size,
            Err(BlobError::Input(e)) => {
                return Err(match e.get_ref().and_then(|e| e.downcast_ref::<Cutoff>()) {
                    Some(cutoff) => refuse(cutoff),
                    // The client's body failed: it went away or broke the
                    // framing. Nothing was stored; nobody is there to answer.
                    None => ApiError::invalid_field("body", "the upload was interrupted"),
                });
            }
            Err(e) => return Err(files_error(e)),
        };
        // From here until the row is written, any way out (an error, or the
        // request dropped during the decode) deletes what was stored.
        let unrecorded = Unrecorded {
            blobs: files.blobs.clone(),
            key: Some(key.clone()),
        };
        let kept = std::mem::take(&mut *kept.lock().unwrap_or_else(|p| p.into_inner()));
        match self.describe(&key, kept, size).await {
            Ok((content_type, dimensions, thumbnail)) => {
                let record = self
                    .storage
                    .create_attachment(NewAttachment {
                        owner: user,
                        name,
                        size,
                        content_type,
                        dimensions,
                        thumbnail,
                        blob_key: key.as_str().to_owned(),
                        created_at: Timestamp::now(),
                    })
                    .await;
                let record = record?;
                unrecorded.recorded();
                Ok(record.attachment)
            }
            Err(e) => Err(e),
        }
    }

    /// The type, dimensions and thumbnail of a stored upload (the
    /// thumbnail stored too).
    async fn describe(
        &self,
        key: &BlobKey,
        kept: Kept,
        size: u64,
    ) -> ApiResult<(String, Option<(u32, u32)>, Option<Thumbnail>)> {
        let limits = &self.files().limits;
        let content_type = media::sniff(kept.head());
        if !media::is_image(&content_type) {
            return Ok((content_type, None, None));
        }
        let refused = |e: ImageError| {
            let why = match e {
                ImageError::TooLarge { width, height } => format!(
                    "The image is too large to take ({width}×{height} pixels; at most {} pixels)",
                    limits.image.max_pixels
                ),
                ImageError::Invalid(why) => format!("The image cannot be read: {why}"),
                ImageError::Timeout => "The image took too long to read".to_owned(),
            };
            ApiError::with_message(ErrorCode::InvalidImage, why)
        };
        if !kept.whole || kept.bytes.len() as u64 != size {
            // Too big to decode here: its header's dimensions, if sane.
            let dimensions = media::dimensions(kept.head());
            if let Some((width, height)) = dimensions
                && (u64::from(width) * u64::from(height) > limits.image.max_pixels
                    || width.max(height) > limits.image.max_side)
            {
                return Err(refused(ImageError::TooLarge { width, height }));
            }
            return Ok((content_type, dimensions, None));
        }
        let info = media::inspect_image_async(Bytes::from(kept.bytes), limits.image.clone())
            .await
            .map_err(refused)?;
        let thumbnail = match info.thumbnail {
            Some(thumb) => {
                let described = Thumbnail {
                    width: thumb.width,
                    height: thumb.height,
                    content_type: thumb.content_type.to_owned(),
                    size: thumb.bytes.len() as u64,
                };
                self.files()
                    .blobs
                    .put_bytes(&key.thumbnail(), Bytes::from(thumb.bytes))
                    .await
                    .map_err(files_error)?;
                Some(described)
            }
            None => None,
        };
        Ok((content_type, Some((info.width, info.height)), thumbnail))
    }

    /// The attachment `id` if `user` may read it: its uploader while it is
    /// not sent; once sent, whoever may read its message's room (the room
    /// rule, read now). Anyone else, and any doomed attachment: 404.
    pub(crate) async fn readable_attachment(
        &self,
        user: UserId,
        id: AttachmentId,
    ) -> ApiResult<AttachmentRecord> {
        let record = self
            .storage
            .attachments(&[id])
            .await?
            .pop()
            .filter(|r| !r.doomed)
            .ok_or_else(not_found)?;
        match record.sent {
            None if record.owner == user => Ok(record),
            None => Err(not_found()),
            Some((room, _)) => match self.room_as_member(user, &RoomRef::Id(room)).await {
                Ok(_) => Ok(record),
                Err(e) if e.code == ErrorCode::StorageUnavailable => Err(e),
                Err(_) => Err(not_found()),
            },
        }
    }

    /// `GET /chat/attachments/{id}/`.
    pub(crate) async fn attachment_info(
        &self,
        user: UserId,
        id: AttachmentId,
    ) -> ApiResult<AttachmentInfo> {
        let record = self.readable_attachment(user, id).await?;
        Ok(AttachmentInfo {
            attachment: record.attachment,
            message_id: record.sent.map(|(_, m)| m),
            room: record.sent.map(|(r, _)| r),
        })
    }

    /// `GET /chat/attachments/usage/`.
    pub(crate) async fn upload_usage(&self, user: UserId) -> ApiResult<UploadUsage> {
        let limits = &self.files().limits;
        Ok(UploadUsage {
            used: self.storage.upload_usage(user).await?,
            quota: limits.quota,
            max_file: limits.max_file,
        })
    }

    /// `DELETE /chat/attachments/{id}/`: the uploader deletes an upload
    /// not sent; its files go at once.
    pub(crate) async fn delete_upload(&self, user: UserId, id: AttachmentId) -> ApiResult<()> {
        match self.storage.doom_upload(user, id).await {
            Ok(true) => {
                self.files().sweep.notify_one();
                Ok(())
            }
            Ok(false) => Err(not_found()),
            Err(StorageError::Conflict(Conflict::AttachmentSent)) => {
                Err(ApiError::new(ErrorCode::AttachmentInUse))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of an attachment `user` may read, or of its thumbnail, or
    /// a range of them (checked against the size first: 416).
    pub(crate) async fn download(
        &self,
        user: UserId,
        id: AttachmentId,
        variant: Variant,
        range: Option<std::ops::Range<u64>>,
    ) -> ApiResult<Download> {
        let record = self.readable_attachment(user, id).await?;
        let key = BlobKey::parse(&record.blob_key).ok_or_else(|| {
            tracing::error!(id = %id, "an attachment's blob key does not parse");
            ApiError::new(ErrorCode::Internal)
        })?;
        let (key, size, content_type) = match variant {
            Variant::Content => (
                key,
                record.attachment.size,
                record.attachment.content_type.clone(),
            ),
            Variant::Thumbnail => {
                let thumb = record.attachment.thumbnail.as_ref().ok_or_else(not_found)?;
                (key.thumbnail(), thumb.size, thumb.content_type.clone())
            }
        };
        if let Some(range) = &range
            && (range.start >= range.end || range.end > size)
        {
            return Err(ApiError::new(ErrorCode::RangeNotSatisfiable));
        }
        let blob = self
            .files()
            .blobs
            .get(&key, range)
            .await
            .map_err(files_error)?;
        Ok(Download {
            attachment: record.attachment,
            variant,
            content_type,
            blob,
        })
    }

    /// `POST /chat/attachments/{id}/link/`: URLs that read the attachment
    /// as `user` without a header until they expire (and only while `user`
    /// still may).
    pub(crate) async fn attachment_link(
        &self,
        user: UserId,
        id: AttachmentId,
    ) -> ApiResult<AttachmentLink> {
        let record = self.readable_attachment(user, id).await?;
        let files = self.files();
        let ttl = i64::try_from(files.limits.link_ttl.as_secs()).unwrap_or(i64::MAX);
        let expires_at = Timestamp::now().unix_micros() / 1_000_000 + ttl;
        let query = format!(
            "?user={user}&expires={expires_at}&sig={}",
            files.signature(id, user, expires_at)
        );
        Ok(AttachmentLink {
            url: format!("/chat/attachments/{id}/content/{query}"),
            thumbnail_url: record
                .attachment
                .thumbnail
                .as_ref()
                .map(|_| format!("/chat/attachments/{id}/thumbnail/{query}")),
            expires_at: Timestamp::from_unix_micros(expires_at.saturating_mul(1_000_000)),
        })
    }

    /// Who a signed link reads as, if its signature holds and it has not
    /// expired; the caller then applies the access rule as for them.
    pub(crate) fn link_reader(&self, id: AttachmentId, proof: LinkProof<'_>) -> ApiResult<UserId> {
        let now = Timestamp::now().unix_micros() / 1_000_000;
        let genuine = self
            .files()
            .verify(id, proof.user, proof.expires, proof.signature);
        if genuine && proof.expires >= now {
            Ok(proof.user)
        } else {
            Err(not_found())
        }
    }

    /// The sender's uploads a message will carry, checked: each theirs,
    /// not doomed, not sent (unless with the message this send repeats:
    /// the append then answers the original), young enough that the
    /// sweeper will not take it before the commit; each once, at most
    /// [`MAX_ATTACHMENTS`](chat_core::attachment::MAX_ATTACHMENTS).
    pub(crate) async fn check_attachments(
        &self,
        user: UserId,
        ids: &[AttachmentId],
        client_id: Option<&str>,
    ) -> ApiResult<Vec<Attachment>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let max = chat_core::attachment::MAX_ATTACHMENTS;
        if ids.len() > max {
            return Err(ApiError::invalid_field(
                "attachments",
                format!("at most {max} attachments"),
            ));
        }
        if ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id)) {
            return Err(ApiError::invalid_field(
                "attachments",
                "an attachment is named twice",
            ));
        }
        let found = self.storage.attachments(ids).await?;
        // Sent longer ago than this and it might be swept under the send.
        let grace = self.files().limits.grace;
        let cutoff = Timestamp::now().unix_micros()
            - i64::try_from((grace - grace / 10).as_micros()).unwrap_or(i64::MAX);
        let mut attachments = Vec::with_capacity(ids.len());
        for id in ids {
            let record = found
                .iter()
                .find(|r| r.attachment.id == *id && r.owner == user && !r.doomed)
                .ok_or_else(|| {
                    ApiError::with_message(
                        ErrorCode::AttachmentNotFound,
                        format!("No upload {id} of yours to send"),
                    )
                })?;
            if let Some((_, message)) = record.sent {
                let repeat = match client_id {
                    Some(client_id) => self
                        .storage
                        .message_by_client_id(user, client_id)
                        .await?
                        .is_some_and(|m| m.id == message),
                    None => false,
                };
                if !repeat {
                    return Err(ApiError::new(ErrorCode::AttachmentInUse));
                }
            } else if record.attachment.created_at.unix_micros() < cutoff {
                return Err(ApiError::with_message(
                    ErrorCode::AttachmentNotFound,
                    format!("Upload {id} waited too long to be sent; upload it again"),
                ));
            }
            attachments.push(record.attachment.clone());
        }
        Ok(attachments)
    }

    /// Wakes the sweeper (a message or room with attachments is gone).
    pub(crate) fn sweep_files(&self) {
        self.files().sweep.notify_one();
    }

    /// The sweeper: dooms uploads never sent within the grace period, and
    /// deletes the files of doomed attachments, then their rows. Runs
    /// every `every`, and when woken; several instances may sweep at once
    /// (deleting twice is harmless).
    pub(crate) fn start_sweeper(self: &Arc<Self>, every: Duration) {
        let service = Arc::downgrade(self);
        let wake = self.files().sweep.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(every) => {}
                }
                let Some(service) = service.upgrade() else {
                    return;
                };
                if let Err(e) = service.sweep().await {
                    tracing::warn!(error = %e.message, "the attachment sweep failed; retrying later");
                }
            }
        });
    }

    /// One sweep; how many attachments' files it deleted.
    pub(crate) async fn sweep(&self) -> ApiResult<usize> {
        let grace = self.files().limits.grace;
        let before = Timestamp::from_unix_micros(
            Timestamp::now().unix_micros() - i64::try_from(grace.as_micros()).unwrap_or(i64::MAX),
        );
        self.storage.doom_unsent(before).await?;
        let mut swept = 0;
        loop {
            let doomed = self.storage.doomed_attachments(100).await?;
            if doomed.is_empty() {
                return Ok(swept);
            }
            let mut gone = Vec::with_capacity(doomed.len());
            for record in &doomed {
                let Some(key) = BlobKey::parse(&record.blob_key) else {
                    gone.push(record.attachment.id);
                    continue;
                };
                let mut deleted = true;
                for key in [key.clone(), key.thumbnail()] {
                    if let Err(e) = self.files().blobs.delete(&key).await {
                        tracing::warn!(key = key.as_str(), error = %e, "could not delete a file");
                        deleted = false;
                    }
                }
                if deleted {
                    gone.push(record.attachment.id);
                }
            }
            let progressed = !gone.is_empty();
            swept += gone.len();
            self.storage.forget_attachments(&gone).await?;
            if !progressed {
                // The store refuses every deletion: try again next time.
                return Ok(swept);
            }
        }
    }
}

/// Files stored for an upload whose row is not written yet: deleted (on a
/// task of their own) if the upload ends any other way than
/// [`recorded`](Self::recorded).
struct Unrecorded {
    blobs: Arc<dyn BlobStore>,
    key: Option<BlobKey>,
}

impl Unrecorded {
    fn recorded(mut self) {
        self.key = None;
    }
}

impl Drop for Unrecorded {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let blobs = self.blobs.clone();
        runtime.spawn(async move {
            for key in [key.thumbnail(), key] {
                if let Err(e) = blobs.delete(&key).await {
                    tracing::warn!(key = key.as_str(), error = %e, "could not delete a file");
                }
            }
        });
    }
}

/// What an upload keeps of its bytes while they stream to the store.
#[derive(Debug, Default)]
struct Kept {
    bytes: Vec<u8>,
    /// `bytes` is the whole file so far (it stopped keeping past the
    /// thumbnail source limit, or once the head showed it is no image).
    whole: bool,
    decided: bool,
}

impl Kept {
    fn head(&self) -> &[u8] {
        &self.bytes[..self.bytes.len().min(media::SNIFF_BYTES)]
    }

    fn take(&mut self, chunk: &[u8], keep_max: usize) {
        if !self.decided && self.bytes.is_empty() {
            self.whole = true;
        }
        if self.whole && self.bytes.len() + chunk.len() <= keep_max {
            self.bytes.extend_from_slice(chunk);
        } else {
            self.whole = false;
            let room = media::SNIFF_BYTES.saturating_sub(self.bytes.len());
            self.bytes
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        // Once the head is in, only an image is worth keeping whole.
        if !self.decided && self.bytes.len() >= 64 {
            self.decided = true;
            if !media::is_image(&media::sniff(self.head())) {
                self.whole = false;
                self.bytes.truncate(media::SNIFF_BYTES);
            }
        }
    }
}
