//! API documentation generated from the code: nothing here is kept by hand
//! beyond the list of documented handlers.
//!
//! - `GET /schema/`: OpenAPI 3.1 of every HTTP call, built by utoipa from the
//!   `#[utoipa::path]` on each handler and chat-core's types (feature
//!   `schema`).
//! - `GET /schema/swagger-ui/`: Swagger UI. Its assets are compiled into the
//!   binary from a crates.io package (utoipa-swagger-ui's `vendored`
//!   feature), so the page works with no internet.
//! - `GET /schema/ws/`: JSON Schema (draft 2020-12) of every WebSocket frame,
//!   built by schemars from chat-core's frame types. One document: the
//!   definitions sit under `$defs` (`ClientFrame`, `ServerFrame` and what they
//!   use), and the root is an object with exactly one of `client` or
//!   `server`, so `{"client": frame}` validates a frame a client sends and
//!   `{"server": frame}` one the server sends.
//!
//! To document a handler: put `#[utoipa::path(...)]` on it, then list it in
//! [`ApiDoc`]'s `paths(...)`. `rooms::create` shows the whole pattern: a doc
//! comment (first line the summary), method, the path as `PROTOCOL.md`
//! writes it (trailing slash, `{id}` with a `params(...)` entry), a unique
//! `operation_id`, `tag`, `request_body`, `security(("bearer" = []))` when
//! it needs a token, and every success and every error the call can answer,
//! errors with `body = ErrorBody` and a description naming their codes (the
//! shared ones below for errors many calls have). The tests in
//! `tests/integration/docs.rs` check that each call of the contract is
//! documented and routed, that authenticated calls declare bearer security
//! and a 401, that calls with a body document 400 and 413, and that errors
//! use `ErrorBody`.

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chat_core::frame::{ClientFrame, ServerFrame};
use chat_core::{ErrorBody, ErrorCode};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_swagger_ui::Config;

use super::{
    admin, attachments, blocks, conversations, devices, health, messages, rooms, server_api, users,
};
use crate::error::ApiError;
use crate::server::AppState;

/// The security scheme handlers name in `security(("bearer" = []))` (the
/// macro takes only a literal there).
const BEARER: &str = "bearer";

// Descriptions of the errors most calls share, so that every handler words
// them the same way.
pub(super) const UNAUTHORIZED: &str =
    "`unauthorized`: the bearer token is missing, malformed or expired";
pub(super) const INVALID_BODY: &str = "`invalid_json`: the body is not JSON; `invalid_input`: a field is missing or has the wrong type";
pub(super) const PAYLOAD_TOO_LARGE: &str =
    "`payload_too_large`: the body is over the server's size limit";
pub(super) const STORAGE_UNAVAILABLE: &str =
    "`storage_unavailable`: storage cannot be reached; retry later";
pub(super) const API_KEY_REQUIRED: &str =
    "`unauthorized`: no API key, a user's token, or a revoked or unknown key";
pub(super) const ROOM_NOT_FOUND: &str = "`room_not_found`: no such room, or it is not public and the caller is neither member nor invited (answered exactly as for a room that does not exist)";

/// Where the OpenAPI document is served; Swagger UI loads it from here.
const OPENAPI_PATH: &str = "/schema/";
/// Where Swagger UI is served, with the slash its relative asset URLs need.
const SWAGGER_BASE: &str = "/schema/swagger-ui/";

const DESCRIPTION: &str = "\
The HTTP API of chat-rs. Every error has the body `{\"error\": \"<sentence>\", \"code\": \"<code>\"}` \
(plus `fields` for `invalid_input`); clients match on `code`. Paths work with and without the trailing slash. \
No text of a request (body, path or query) may hold the character U+0000: such a request gets 400 `invalid_input`. \
Authenticated calls take `Authorization: Bearer <access token>` from `POST /api/users/token/`.

**WebSocket.** Real-time messaging runs over WebSocket, authenticated by `?token=<access>` or an \
`Authorization: Bearer` header:
- `/ws/`: one socket for many rooms (`subscribe` to each).
- `/ws/chat/{room}/`: bound to one room, by name or id.
- `/ws/users/{user_id}/`: bound to the conversation with that user.

A socket lives as long as its access token (plus 5 s of leeway), then closes with 4401; \
send `{\"type\":\"auth\",\"token\"}` with a fresh access token before that to keep it open.

Every frame is one JSON text message; their JSON Schema is at [/schema/ws/](/schema/ws/) \
(`{\"client\": frame}` validates a client frame, `{\"server\": frame}` a server frame). \
`ClientFrame` and `ServerFrame` below show the same types.";

#[derive(OpenApi)]
#[openapi(
    info(title = "chat-rs", description = DESCRIPTION),
    paths(
        users::register,
        users::token,
        users::refresh,
        users::logout,
        users::list,
        users::me,
        blocks::block,
        blocks::unblock,
        blocks::blocked,
        admin::logout_all,
        admin::report,
        admin::reports,
        admin::report_detail,
        admin::resolve,
        admin::deactivate,
        admin::reactivate,
        rooms::create,
        rooms::join,
        rooms::list,
        rooms::detail,
        rooms::invite,
        rooms::leave,
        rooms::delete,
        rooms::moderate,
        rooms::bans,
        rooms::online,
        rooms::update,
        rooms::directory,
        messages::history,
        messages::timeline,
        messages::send,
        messages::edit,
        messages::delete,
        messages::react,
        messages::unreact,
        messages::pin,
        messages::unpin,
        messages::pins,
        messages::thread,
        messages::search,
        conversations::list,
        conversations::detail,
        conversations::create,
        conversations::unread_count,
        attachments::upload,
        attachments::usage,
        attachments::info,
        attachments::delete,
        attachments::link,
        attachments::content,
        attachments::thumbnail,
        devices::register,
        devices::list,
        devices::delete,
        server_api::upsert_user,
        server_api::mint_tokens,
        server_api::create_room,
        server_api::set_members,
        server_api::change_members,
        server_api::send,
        server_api::events,
        health::healthz,
        crate::metrics::render,
    ),
    // Types that no call mentions but clients need: the WebSocket frames.
    components(schemas(ErrorBody, ErrorCode, ClientFrame, ServerFrame)),
    modifiers(&BearerScheme),
    tags(
        (name = "users", description = "Accounts and JWT tokens"),
        (name = "rooms", description = "Group rooms: public, private and game"),
        (name = "moderation", description = "Roles, kicks, bans and mutes in group rooms"),
        (name = "admin", description = "Reports, and what server admins do with them and with accounts"),
        (name = "messages", description = "History and sending over HTTP (WebSocket is the real-time path)"),
        (name = "conversations", description = "One-to-one conversations: rooms of type `direct`"),
        (name = "attachments", description = "Files sent with messages: uploaded as the raw body, read by whoever may read the message's room"),
        (name = "push", description = "Push devices: notified of messages while their user has no socket in the room"),
        (name = "server", description = "The server API, for a host's backend with an API key (`chat-server api-key create NAME`): users by the host's id, their tokens, rooms and members, sending as users and bots"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub(super) struct ApiDoc;

/// Declares the `bearer` scheme that `security(("bearer" = []))` names; the
/// derive has no syntax for schemes.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `access` token of `POST /api/users/token/` or `/api/users/token/refresh/`",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("chat_key_…")
                    .description(Some(
                        "An API key of the server API, made by `chat-server api-key create NAME`",
                    ))
                    .build(),
            ),
        );
    }
}

// Built once: the documents never change while the server runs.
static OPENAPI: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);
static FRAME_SCHEMA: LazyLock<serde_json::Value> = LazyLock::new(frame_schema);
// The validator is off because by default the page shows a badge fetched
// from swagger.io's online validator, which sends it the document's URL and
// fails offline.
static SWAGGER_CONFIG: LazyLock<Arc<Config<'static>>> =
    LazyLock::new(|| Arc::new(Config::new([OPENAPI_PATH]).validator_url("none")));

/// `/schema`, `/schema/swagger-ui` and its assets, `/schema/ws`.
///
/// The server trims trailing slashes before routing, so `/schema/swagger-ui/`
/// arrives here as `/schema/swagger-ui`. utoipa-swagger-ui's own router
/// answers that path with a redirect to the slash form, which would loop;
/// and the page's asset URLs are relative (`./swagger-ui.css`), which break
/// when a browser shows the page without the slash. So the page is served at
/// both forms with a `<base href="/schema/swagger-ui/">`, and the assets
/// under `/schema/swagger-ui/{file}`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/schema", get(openapi))
        .route("/schema/ws", get(frames))
        .route("/schema/swagger-ui", get(swagger_page))
        .route("/schema/swagger-ui/{*file}", get(swagger_asset))
}

async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(&*OPENAPI)
}

async fn frames() -> Json<&'static serde_json::Value> {
    Json(&*FRAME_SCHEMA)
}

async fn swagger_page() -> Response {
    swagger_file("index.html")
}

async fn swagger_asset(Path(file): Path<String>) -> Response {
    swagger_file(&file)
}

fn swagger_file(path: &str) -> Response {
    let file = match utoipa_swagger_ui::serve(path, SWAGGER_CONFIG.clone()) {
        Ok(Some(file)) => file,
        Ok(None) => return ApiError::new(ErrorCode::NotFound).into_response(),
        Err(e) => {
            tracing::error!(error = %e, path, "cannot serve a Swagger UI file");
            return ApiError::new(ErrorCode::Internal).into_response();
        }
    };
    let body = if path == "index.html" {
        let html = String::from_utf8_lossy(&file.bytes);
        html.replacen(
            "<head>",
            &format!("<head>\n    <base href=\"{SWAGGER_BASE}\">"),
            1,
        )
        .into_bytes()
    } else {
        file.bytes.into_owned()
    };
    let mut response = ([(header::CONTENT_TYPE, file.content_type)], body).into_response();
    if file.gzpipped {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// The frame schema document described in the module doc.
fn frame_schema() -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let client = generator.subschema_for::<ClientFrame>();
    let server = generator.subschema_for::<ServerFrame>();
    let defs = generator.take_definitions(true);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "chat-rs WebSocket frames",
        "description": "Every frame is one JSON text message. Validate a frame a client sends as \
            {\"client\": frame} and one the server sends as {\"server\": frame}, or use \
            #/$defs/ClientFrame and #/$defs/ServerFrame directly. Endpoints: /ws/ (many rooms), \
            /ws/chat/{room}/ and /ws/users/{user_id}/ (bound to one room).",
        "type": "object",
        "properties": {
            "client": client,
            "server": server,
        },
        "additionalProperties": false,
        "minProperties": 1,
        "maxProperties": 1,
        "$defs": defs,
    })
}
