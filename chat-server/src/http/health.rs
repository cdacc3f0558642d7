//! `GET /healthz`: storage and broker state.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_core::api::{ComponentState, Health};

use crate::server::AppState;

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
