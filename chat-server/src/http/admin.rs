//! Reports (`POST /chat/reports/`), "log out everywhere", and the server
//! admins' calls under `/admin/`: reports, deactivation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chat_core::admin::{Report, ReportRequest, ReportsQuery, ReportsResponse, ResolveRequest};
use chat_core::{ErrorBody, UserId};

use super::docs;
use super::extract::{ApiJson, ApiQuery, Caller, ReportPath, UserPath};
use crate::error::ApiResult;
use crate::server::AppState;

/// Report a message or a user
///
/// A message of a room you are a member of (its text is kept with the
/// report for server admins, even if its sender deletes it), or a user.
#[utoipa::path(
    post,
    path = "/chat/reports/",
    operation_id = "report",
    tag = "admin",
    request_body = ReportRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Filed", body = Report),
        (status = 400, description = "`invalid_input`: not exactly one of `message_id` and `user_id`, a reason of 0 or more than 1,000 characters, yourself", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 404, description = "`message_not_found` (also for a room you are not in); `user_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn report(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(req): ApiJson<ReportRequest>,
) -> ApiResult<impl IntoResponse> {
    let report = state.service.report(user, req).await?;
    Ok((StatusCode::CREATED, Json(report)))
}

/// Log out everywhere
///
/// Every access and refresh token of yours stops working at once (this one
/// too), and your sockets close with 4403.
#[utoipa::path(
    post,
    path = "/api/users/logout-all/",
    operation_id = "logout_all",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn logout_all(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<StatusCode> {
    state.service.logout_everywhere(user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List reports
///
/// Server admins only, newest first: `status` open (default), resolved or
/// all; page with `before` = the last id.
#[utoipa::path(
    get,
    path = "/admin/reports/",
    operation_id = "admin_reports",
    tag = "admin",
    params(ReportsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of reports", body = ReportsResponse),
        (status = 400, description = "`invalid_input`: a bad `status` or `limit`", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_admin`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn reports(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(query): ApiQuery<ReportsQuery>,
) -> ApiResult<Json<ReportsResponse>> {
    state.service.reports(user, query).await.map(Json)
}

/// Inspect a report
///
/// With the reported message's text as it was when reported, and whether
/// its sender deleted it since.
#[utoipa::path(
    get,
    path = "/admin/reports/{id}/",
    operation_id = "admin_report",
    tag = "admin",
    params(("id" = i64, Path, description = "The report's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The report", body = Report),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_admin`", body = ErrorBody),
        (status = 404, description = "`report_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn report_detail(
    State(state): State<AppState>,
    Caller(user): Caller,
    ReportPath(id): ReportPath,
) -> ApiResult<Json<Report>> {
    state.service.report_detail(user, id).await.map(Json)
}

/// Resolve a report
#[utoipa::path(
    post,
    path = "/admin/reports/{id}/resolve/",
    operation_id = "admin_resolve_report",
    tag = "admin",
    params(("id" = i64, Path, description = "The report's id")),
    request_body = ResolveRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The report, resolved (a second resolution keeps the first)", body = Report),
        (status = 400, description = "`invalid_input`: a resolution of 0 or more than 1,000 characters", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_admin`", body = ErrorBody),
        (status = 404, description = "`report_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn resolve(
    State(state): State<AppState>,
    Caller(user): Caller,
    ReportPath(id): ReportPath,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> ApiResult<Json<Report>> {
    state
        .service
        .resolve_report(user, id, &req.resolution)
        .await
        .map(Json)
}

/// Deactivate an account
///
/// Server admins only. Every token of the user stops working at once (403
/// `account_deactivated`), their sockets close with 4403, and they cannot
/// log in until reactivated.
#[utoipa::path(
    post,
    path = "/admin/users/{id}/deactivate/",
    operation_id = "admin_deactivate",
    tag = "admin",
    params(("id" = UserId, Path, description = "The user")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deactivated"),
        (status = 400, description = "`invalid_input`: yourself", body = ErrorBody),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_admin`", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn deactivate(
    State(state): State<AppState>,
    Caller(admin): Caller,
    UserPath(user): UserPath,
) -> ApiResult<StatusCode> {
    state.service.set_active(admin, user, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reactivate an account
#[utoipa::path(
    post,
    path = "/admin/users/{id}/reactivate/",
    operation_id = "admin_reactivate",
    tag = "admin",
    params(("id" = UserId, Path, description = "The user")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Active; they log in again"),
        (status = 401, description = docs::UNAUTHORIZED, body = ErrorBody),
        (status = 403, description = "`not_admin`", body = ErrorBody),
        (status = 404, description = "`user_not_found`", body = ErrorBody),
        (status = 503, description = docs::STORAGE_UNAVAILABLE, body = ErrorBody),
    )
)]
pub(super) async fn reactivate(
    State(state): State<AppState>,
    Caller(admin): Caller,
    UserPath(user): UserPath,
) -> ApiResult<StatusCode> {
    state.service.set_active(admin, user, true).await?;
    Ok(StatusCode::NO_CONTENT)
}
