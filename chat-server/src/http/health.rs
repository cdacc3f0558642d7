//! `GET /healthz`: storage and broker state.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_core::api::{ComponentState, Health};

use crate::server::AppState;

/// The longest a health check waits for storage.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

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
    // Within a second, whatever storage does: a probe that waits is a
    // probe that times out, and the answer is the same.
    let ping = tokio::time::timeout(PING_TIMEOUT, state.service.storage().ping()).await;
    let storage = match ping {
        Ok(Ok(())) => ComponentState::Ok,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: storage unavailable");
            ComponentState::Unavailable
        }
        Err(_) => {
            tracing::warn!("health check: storage did not answer within {PING_TIMEOUT:?}");
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
