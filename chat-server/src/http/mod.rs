//! The HTTP API: the router and one file per resource. Handlers only
//! extract, call the service, and wrap the answer; rules live in
//! [`crate::service`].

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use chat_core::ErrorCode;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::server::AppState;

mod admin;
mod attachments;
mod blocks;
mod conversations;
mod devices;
mod docs;
pub(crate) mod extract;
mod guard;
mod health;
mod messages;
pub(crate) mod origin;
pub(crate) mod proxies;
mod rooms;
mod server_api;
mod users;

/// Every route of the contract, without trailing slashes (the server strips
/// them before routing, so both forms work).
pub(crate) fn router(state: AppState) -> Router {
    let max_body = state.limits.max_request_bytes;
    let cors = cors(state.limits.allowed_origins.as_deref());
    Router::new()
        .route("/api/users/register", post(users::register))
        .route("/api/users/token", post(users::token))
        .route("/api/users/token/refresh", post(users::refresh))
        .route("/api/users/logout", post(users::logout))
        .route("/api/users", get(users::list))
        .route("/api/users/me", get(users::me))
        .route("/api/users/blocked", get(blocks::blocked))
        .route("/api/users/logout-all", post(admin::logout_all))
        .route("/chat/reports", post(admin::report))
        .route("/admin/reports", get(admin::reports))
        .route("/admin/reports/{id}", get(admin::report_detail))
        .route("/admin/reports/{id}/resolve", post(admin::resolve))
        .route("/admin/users/{id}/deactivate", post(admin::deactivate))
        .route("/admin/users/{id}/reactivate", post(admin::reactivate))
        .route(
            "/api/users/{id}/block",
            post(blocks::block).delete(blocks::unblock),
        )
        .route("/chat/create-room", post(rooms::create))
        .route("/chat/join-room", post(rooms::join))
        .route("/chat/rooms", get(rooms::list))
        .route(
            "/chat/rooms/{id}",
            get(rooms::detail)
                .patch(rooms::update)
                .delete(rooms::delete),
        )
        .route("/chat/directory", get(rooms::directory))
        .route("/chat/rooms/{id}/invite", post(rooms::invite))
        .route("/chat/rooms/{id}/leave", post(rooms::leave))
        .route("/chat/rooms/{id}/moderate", post(rooms::moderate))
        .route("/chat/rooms/{id}/bans", get(rooms::bans))
        .route("/chat/rooms/{id}/online", get(rooms::online))
        .route("/chat/rooms/{id}/events", get(messages::timeline))
        .route("/chat/history", get(messages::history))
        .route("/chat/send", post(messages::send))
        .route("/chat/attachments", post(attachments::upload))
        .route("/chat/attachments/usage", get(attachments::usage))
        .route(
            "/chat/attachments/{id}",
            get(attachments::info).delete(attachments::delete),
        )
        .route("/chat/attachments/{id}/content", get(attachments::content))
        .route(
            "/chat/attachments/{id}/thumbnail",
            get(attachments::thumbnail),
        )
        .route("/chat/attachments/{id}/link", post(attachments::link))
        .route("/chat/search", get(messages::search))
        .route(
            "/chat/messages/{id}",
            patch(messages::edit).delete(messages::delete),
        )
        .route(
            "/chat/messages/{id}/pin",
            put(messages::pin).delete(messages::unpin),
        )
        .route("/chat/rooms/{id}/pins", get(messages::pins))
        .route("/chat/messages/{id}/thread", get(messages::thread))
        .route(
            "/chat/messages/{id}/reactions/{key}",
            put(messages::react).delete(messages::unreact),
        )
        .route("/api/chats/conversations", get(conversations::list))
        .route(
            "/api/chats/conversations/create",
            post(conversations::create),
        )
        .route("/api/chats/conversations/{id}", get(conversations::detail))
        .route("/api/chats/unread-count", get(conversations::unread_count))
        .route("/server/users/{external_id}", put(server_api::upsert_user))
        .route(
            "/server/users/{external_id}/tokens",
            post(server_api::mint_tokens),
        )
        .route("/server/rooms", post(server_api::create_room))
        .route(
            "/server/rooms/{id}/members",
            put(server_api::set_members).post(server_api::change_members),
        )
        .route("/server/rooms/{id}/messages", post(server_api::send))
        .route("/server/rooms/{id}/events", get(server_api::events))
        .route(
            "/api/push/devices",
            post(devices::register).get(devices::list),
        )
        .route("/api/push/devices/{id}", delete(devices::delete))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(crate::metrics::render))
        .merge(crate::ws::routes())
        .merge(docs::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(crate::metrics::track_http))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(max_body, guard::guard))
        .layer(cors)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::new(ErrorCode::NotFound).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(ErrorCode::MethodNotAllowed).into_response()
}

/// CORS for browsers on other origins: any origin by default, else the
/// allow-list (a refused origin gets no `Access-Control-Allow-Origin`, so
/// the browser withholds the answer).
fn cors(allowed: Option<&[String]>) -> CorsLayer {
    let origin = match allowed {
        None => AllowOrigin::from(Any),
        Some(list) => {
            let list = list.to_vec();
            AllowOrigin::predicate(move |o: &HeaderValue, _| origin::allowed(Some(&list), o))
        }
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::RANGE])
        .expose_headers([
            header::CONTENT_DISPOSITION,
            header::CONTENT_RANGE,
            header::ETAG,
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(3600))
}
