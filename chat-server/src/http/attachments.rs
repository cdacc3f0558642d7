//! Attachments: `/chat/attachments/`. The upload is the raw request body,
//! streamed; downloads stream back with ranges, validators and the headers
//! that keep a file from running as a page of this origin.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RANGE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chat_core::attachment::{Attachment, AttachmentInfo, AttachmentLink, UploadQuery, UploadUsage};
use chat_core::{AttachmentId, ErrorBody, ErrorCode, UserId};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;

use super::docs;
use super::extract::{ApiQuery, AttachmentPath, Caller, bearer};
use crate::error::{ApiError, ApiResult};
use crate::media;
use crate::server::AppState;
use crate::service::attachments::{Download, LinkProof, Variant};

/// Upload a file
///
/// The request body is the file's bytes, as they are (no multipart, no
/// base64), streamed to the file store; its `Content-Type` is ignored: the
/// server sniffs the type from the bytes. `Content-Length` when known
/// (a body over the limit is then refused before it is read), chunked
/// otherwise. The answer is the attachment, the caller's alone until a
/// message of theirs carries it (`attachments` of `POST /chat/send/` or of
/// a WebSocket `send`); an upload not sent within `--upload-grace` (a day
/// by default) is deleted. An image gets its dimensions and a thumbnail;
/// one with more pixels than the server decodes is refused.
#[utoipa::path(
    post,
    path = "/chat/attachments/",
    operation_id = "upload_attachment",
    tag = "attachments",
    params(UploadQuery),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream", description = "The file's bytes (none: an empty file)"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored", body = Attachment),
        (status = 400, description = "`invalid_input`: a bad `name`, or the body broke off", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`quota_exceeded`: the caller's uploads would go over `--upload-quota-bytes`", body = ErrorBody),
        (status = 413, description = "`file_too_large`: over `--max-upload-bytes`", body = ErrorBody),
        (status = 422, description = "`invalid_image`: an image with more pixels than the server decodes (a decompression bomb), or one that cannot be read", body = ErrorBody),
        (status = 503, description = "`files_unavailable` or `storage_unavailable`: try again later", body = ErrorBody),
    )
)]
pub(super) async fn upload(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    query: Result<ApiQuery<UploadQuery>, ApiError>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = request.into_body();
    // Refused before its body is read: read some of it anyway, so that a
    // client still writing it gets the answer rather than a broken pipe.
    let checked = match (caller, query) {
        (Ok(Caller(user)), Ok(ApiQuery(query))) => state
            .service
            .upload_allowance(user, &query.name, declared)
            .await
            .map(|allowance| (user, allowance)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let (user, allowance) = match checked {
        Ok(checked) => checked,
        Err(e) => return Err(drained(body, e).await),
    };
    let body = body.into_data_stream().map_err(std::io::Error::other);
    let attachment = state
        .service
        .upload_within(user, allowance, Box::pin(body))
        .await?;
    Ok((StatusCode::CREATED, Json(attachment)))
}

/// `error`, after reading (and dropping) up to 8 MiB of `body` for at most
/// 2 s.
async fn drained(body: Body, error: ApiError) -> ApiError {
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let mut read = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > 8 * 1024 * 1024 {
                break;
            }
        }
    })
    .await;
    error
}

/// Your upload usage
#[utoipa::path(
    get,
    path = "/chat/attachments/usage/",
    operation_id = "upload_usage",
    tag = "attachments",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Bytes used, the quota and the largest file", body = UploadUsage),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn usage(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<UploadUsage>> {
    state.service.upload_usage(user).await.map(Json)
}

/// An attachment
///
/// Its uploader sees it while it is not sent; once sent, whoever may read
/// its message's room (a member). Anyone else gets 404, as for an id that
/// does not exist.
#[utoipa::path(
    get,
    path = "/chat/attachments/{id}/",
    operation_id = "attachment",
    tag = "attachments",
    params(("id" = i64, Path, minimum = 1, description = "The attachment's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The attachment, with its message and room once sent", body = AttachmentInfo),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = ATTACHMENT_NOT_FOUND, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn info(
    State(state): State<AppState>,
    Caller(user): Caller,
    AttachmentPath(id): AttachmentPath,
) -> ApiResult<Json<AttachmentInfo>> {
    state.service.attachment_info(user, id).await.map(Json)
}

const ATTACHMENT_NOT_FOUND: &str =
    "`attachment_not_found`: no such attachment, or the caller may not read it (the same answer)";

/// Delete an upload
///
/// An upload of yours not sent yet; its files are deleted. A sent one goes
/// with its message (`DELETE /chat/messages/{id}/`).
#[utoipa::path(
    delete,
    path = "/chat/attachments/{id}/",
    operation_id = "delete_attachment",
    tag = "attachments",
    params(("id" = i64, Path, minimum = 1, description = "The attachment's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`attachment_not_found`: no such upload of yours", body = ErrorBody),
        (status = 409, description = "`attachment_in_use`: it is sent with a message", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn delete(
    State(state): State<AppState>,
    Caller(user): Caller,
    AttachmentPath(id): AttachmentPath,
) -> ApiResult<StatusCode> {
    state.service.delete_upload(user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A link without a header
///
/// URLs that read the attachment (and its thumbnail) as the caller, with no
/// `Authorization` header, for an `<img>` tag or a download manager, until
/// they expire (5 minutes) and only while the caller may still read it.
#[utoipa::path(
    post,
    path = "/chat/attachments/{id}/link/",
    operation_id = "attachment_link",
    tag = "attachments",
    params(("id" = i64, Path, minimum = 1, description = "The attachment's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Signed URLs, relative to the server", body = AttachmentLink),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = ATTACHMENT_NOT_FOUND, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn link(
    State(state): State<AppState>,
    Caller(user): Caller,
    AttachmentPath(id): AttachmentPath,
) -> ApiResult<Json<AttachmentLink>> {
    state.service.attachment_link(user, id).await.map(Json)
}

/// A signed link's query (`POST /chat/attachments/{id}/link/` makes them).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LinkQuery {
    /// Whom the link reads as.
    #[param(value_type = Option<i64>, minimum = 1)]
    user: Option<i64>,
    /// When it stops reading (Unix seconds).
    expires: Option<i64>,
    /// Its signature.
    sig: Option<String>,
}

/// An attachment's bytes
///
/// With `Authorization: Bearer …`, or the query of a signed link. Served
/// with its sniffed `Content-Type`, `X-Content-Type-Options: nosniff`, a
/// sandboxing `Content-Security-Policy`, `Content-Disposition` (`inline`
/// only for images, audio and video), `ETag` and a long private cache
/// lifetime (an attachment never changes). `Range: bytes=a-b` (one range)
/// answers 206; `If-None-Match` with its ETag, 304.
#[utoipa::path(
    get,
    path = "/chat/attachments/{id}/content/",
    operation_id = "attachment_content",
    tag = "attachments",
    params(("id" = i64, Path, minimum = 1, description = "The attachment's id"), LinkQuery),
    security(("bearer" = []), ()),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = Vec<u8>),
        (status = 206, description = "The part of the file the `Range` asked for", content_type = "*/*", body = Vec<u8>),
        (status = 400, description = "`invalid_input`: a malformed link query", body = ErrorBody),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = ATTACHMENT_NOT_FOUND, body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorBody),
        (status = 503, description = "`files_unavailable` or `storage_unavailable`", body = ErrorBody),
    )
)]
pub(super) async fn content(
    State(state): State<AppState>,
    AttachmentPath(id): AttachmentPath,
    ApiQuery(link): ApiQuery<LinkQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    serve(&state, id, Variant::Content, link, &parts).await
}

/// An image attachment's thumbnail
///
/// As `…/content/`, for the thumbnail (JPEG, or PNG for images with
/// transparency); 404 for an attachment without one.
#[utoipa::path(
    get,
    path = "/chat/attachments/{id}/thumbnail/",
    operation_id = "attachment_thumbnail",
    tag = "attachments",
    params(("id" = i64, Path, minimum = 1, description = "The attachment's id"), LinkQuery),
    security(("bearer" = []), ()),
    responses(
        (status = 200, description = "The thumbnail", content_type = "*/*", body = Vec<u8>),
        (status = 206, description = "The part the `Range` asked for", content_type = "*/*", body = Vec<u8>),
        (status = 400, description = "`invalid_input`: a malformed link query", body = ErrorBody),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`attachment_not_found`: as for the content, or it has no thumbnail", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorBody),
        (status = 503, description = "`files_unavailable` or `storage_unavailable`", body = ErrorBody),
    )
)]
pub(super) async fn thumbnail(
    State(state): State<AppState>,
    AttachmentPath(id): AttachmentPath,
    ApiQuery(link): ApiQuery<LinkQuery>,
    parts: Parts,
) -> ApiResult<Response> {
    serve(&state, id, Variant::Thumbnail, link, &parts).await
}

/// Who reads: the signed link's user if the query carries a signature,
/// else the bearer token's.
async fn reader(
    state: &AppState,
    id: AttachmentId,
    link: &LinkQuery,
    parts: &Parts,
) -> ApiResult<UserId> {
    match (&link.sig, link.user, link.expires) {
        (Some(signature), Some(user), Some(expires)) if user > 0 => state.service.link_reader(
            id,
            LinkProof {
                user: UserId::from(user),
                expires,
                signature,
            },
        ),
        (None, None, None) => {
            let token = bearer(parts).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized))?;
            let access = state
                .service
                .authenticate(token, ErrorCode::Unauthorized)
                .await?;
            Ok(access.user)
        }
        // Part of a link: a broken one, which reads nothing.
        _ => Err(ApiError::new(ErrorCode::AttachmentNotFound)),
    }
}

async fn serve(
    state: &AppState,
    id: AttachmentId,
    variant: Variant,
    link: LinkQuery,
    parts: &Parts,
) -> ApiResult<Response> {
    let user = reader(state, id, &link, parts).await?;
    let etag = match variant {
        Variant::Content => format!("\"a{id}\""),
        Variant::Thumbnail => format!("\"a{id}t\""),
    };
    // The access rule first: a 304 tells that the caller may read it.
    let range = match parts.headers.get(RANGE) {
        Some(value) if !matches_etag(&parts.headers, &etag) => Some(value.clone()),
        _ => None,
    };
    if matches_etag(&parts.headers, &etag) {
        let record = state.service.readable_attachment(user, id).await?;
        if variant == Variant::Thumbnail && record.attachment.thumbnail.is_none() {
            return Err(ApiError::new(ErrorCode::AttachmentNotFound));
        }
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        common_headers(response.headers_mut(), &etag);
        return Ok(response);
    }
    let download = match range {
        None => state.service.download(user, id, variant, None).await?,
        Some(range) => {
            // The size is needed to read `bytes=-500` or `bytes=100-`: the
            // record first, then the range.
            let record = state.service.readable_attachment(user, id).await?;
            let size = match variant {
                Variant::Content => record.attachment.size,
                Variant::Thumbnail => {
                    record
                        .attachment
                        .thumbnail
                        .as_ref()
                        .ok_or_else(|| ApiError::new(ErrorCode::AttachmentNotFound))?
                        .size
                }
            };
            let wanted = parse_range(&range, size)?;
            state.service.download(user, id, variant, wanted).await?
        }
    };
    Ok(respond(download, &etag))
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag)
        })
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n`: one range, as `start..end`. Several
/// ranges, a unit we do not serve, or a malformed range are ignored (the
/// whole file, as RFC 9110 says); one that misses the file entirely is 416.
fn parse_range(value: &HeaderValue, size: u64) -> ApiResult<Option<std::ops::Range<u64>>> {
    let Some(spec) = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || ApiError::new(ErrorCode::RangeNotSatisfiable);
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last n bytes.
        (true, false) => {
            let Some(n) = number(last) else {
                return Ok(None);
            };
            let n = n.min(size);
            size - n..size
        }
        (false, true) => match number(first) {
            Some(start) => start..size,
            None => return Ok(None),
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if end >= start => start..end.saturating_add(1).min(size),
            _ => return Ok(None),
        },
        (true, true) => return Ok(None),
    };
    if range.start >= range.end {
        return Err(unsatisfiable());
    }
    Ok(Some(range))
}

fn common_headers(headers: &mut HeaderMap, etag: &str) {
    // Never changes under its id; private: only whoever may read it.
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, value);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A file opened on this origin runs nothing and loads nothing.
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'; media-src 'self'"),
    );
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

fn respond(download: Download, etag: &str) -> Response {
    let Download {
        attachment,
        variant,
        content_type,
        blob,
    } = download;
    let partial = blob.range.start != 0 || blob.range.end != blob.size;
    let mut response = Response::new(Body::from_stream(blob.body));
    *response.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let headers = response.headers_mut();
    common_headers(headers, etag);
    headers.insert(
        CONTENT_LENGTH,
        HeaderValue::from(blob.range.end - blob.range.start),
    );
    if partial
        && let Ok(value) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            blob.range.start,
            blob.range.end - 1,
            blob.size
        ))
    {
        headers.insert(CONTENT_RANGE, value);
    }
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    let name = match variant {
        Variant::Content => attachment.name.clone(),
        Variant::Thumbnail => format!("thumbnail-{}", attachment.name),
    };
    if let Ok(value) = HeaderValue::from_str(&media::content_disposition(&name, &content_type)) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    response
}
