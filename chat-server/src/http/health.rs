//! `GET /healthz`: storage and broker state.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_core::api::{ComponentState, Health};

use crate::server::AppState;

/// Health
///
/// The state of storage and broker. No token needed.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses(
        (status = 200, description = "Storage and broker are up", body = Health),
        (status = 503, description = "Storage or broker is down (`status` is `degraded`)", body = Health),
    )
)]
pub(super) async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let storage = match state.service.storage().ping().await {
        Ok(()) => ComponentState::Ok,
        Err(e) => {
            tracing::warn!(error = %e, "health check: storage unavailable");
            ComponentState::Unavailable
        }
    };
    let broker = state.service.hub().broker().state();
    let healthy = storage == ComponentState::Ok && broker == ComponentState::Ok;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if healthy { "ok" } else { "degraded" }.to_owned(),
        storage,
        broker,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    (status, Json(body))
}
