//! Attachments: files uploaded with `POST /chat/attachments/` and carried by
//! messages.
//!
//! An upload answers an [`Attachment`] that belongs to its uploader alone
//! until a message of theirs names its id (`attachments` of a send); from
//! then on whoever may read that message's room may read the file. Bytes are
//! never in JSON: they are uploaded as the raw request body and downloaded
//! from `GET /chat/attachments/{id}/content/` (and `…/thumbnail/`).

use serde::{Deserialize, Serialize};

use crate::{AttachmentId, MessageId, RoomId, Timestamp};

/// The most attachments one message carries.
pub const MAX_ATTACHMENTS: usize = 10;

/// An uploaded file, as messages and the attachments API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Attachment {
    pub id: AttachmentId,
    /// The file's name as uploaded, made safe: its last path component,
    /// without control characters, at most 255 bytes.
    pub name: String,
    /// Bytes.
    #[cfg_attr(feature = "schema", schema(value_type = i64, minimum = 0))]
    pub size: u64,
    /// Sniffed by the server from the bytes (the uploader's claim is
    /// ignored): `image/png`, `application/pdf`, `text/plain;
    /// charset=utf-8`, `application/octet-stream`…
    pub content_type: String,
    /// Pixels, for an image whose header the server could read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// A small copy of an image (at most 320 pixels on its long side), at
    /// `GET /chat/attachments/{id}/thumbnail/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<Thumbnail>,
    pub created_at: Timestamp,
}

/// An image attachment's thumbnail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Thumbnail {
    pub width: u32,
    pub height: u32,
    /// `image/jpeg`, or `image/png` for images with transparency.
    pub content_type: String,
    #[cfg_attr(feature = "schema", schema(value_type = i64, minimum = 0))]
    pub size: u64,
}

/// `GET /chat/attachments/{id}/`: an attachment and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct AttachmentInfo {
    #[serde(flatten)]
    pub attachment: Attachment,
    /// The message carrying it; absent while it is an upload not yet sent
    /// (only its uploader sees it then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomId>,
}

/// Query of `POST /chat/attachments/`: the body is the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "schema", into_params(parameter_in = Query))]
pub struct UploadQuery {
    /// The file's name (1 to 1,000 characters; stored made safe, see
    /// [`Attachment::name`]).
    #[cfg_attr(feature = "schema", param(min_length = 1, max_length = 1000))]
    pub name: String,
}

/// `GET /chat/attachments/usage/`: what the caller may still upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct UploadUsage {
    /// Bytes of the caller's uploads the server keeps (sent or not).
    #[cfg_attr(feature = "schema", schema(value_type = i64, minimum = 0))]
    pub used: u64,
    /// The most bytes a user's uploads may add up to.
    #[cfg_attr(feature = "schema", schema(value_type = i64, minimum = 0))]
    pub quota: u64,
    /// The largest file the server takes.
    #[cfg_attr(feature = "schema", schema(value_type = i64, minimum = 0))]
    pub max_file: u64,
}

/// `POST /chat/attachments/{id}/link/`: short-lived URLs that read the file
/// without an `Authorization` header (for an `<img>` tag or a download
/// manager). They carry the caller's right to read: whoever holds one reads
/// the file until it expires, if the caller still may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct AttachmentLink {
    /// Path and query of the content, relative to the server's base URL.
    pub url: String,
    /// Of the thumbnail, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
    pub expires_at: Timestamp,
}
