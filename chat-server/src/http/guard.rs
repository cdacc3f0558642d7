//! Refusals decided from the request line and headers alone, before a
//! handler runs or a byte of the body is read.

use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chat_core::ErrorCode;

use crate::error::ApiError;

/// A declared body over the limit is refused at once (413), instead of
/// being read up to the limit from a client that may never send it; a NUL
/// in the path or query (`%00`) is refused (400) as in any JSON text.
pub(crate) async fn guard(State(max_body): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // An upload streams past the request limit, under a limit of its own
    // that its handler enforces as bytes arrive.
    let upload = req.method() == axum::http::Method::POST
        && req.uri().path().trim_end_matches('/') == "/chat/attachments";
    if !upload && declared.is_some_and(|n| n > max_body as u64) {
        return ApiError::new(ErrorCode::PayloadTooLarge).into_response();
    }
    let uri = req.uri();
    if chat_core::text::uri_has_nul(uri.path())
        || uri.query().is_some_and(chat_core::text::uri_has_nul)
    {
        return ApiError::with_message(ErrorCode::InvalidInput, chat_core::text::NUL_REFUSED)
            .into_response();
    }
    next.run(req).await
}
