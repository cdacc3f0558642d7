//! Reports, "log out everywhere", and the server admins' calls.

use chat_core::UserId;
use chat_core::admin::{Report, ReportRequest, ReportsQuery, ReportsResponse, ResolveRequest};

use crate::client::Req;
use crate::{ChatClient, ClientError};

impl ChatClient {
    /// Reports a message (of a room you are in) or a user
    /// (`POST /chat/reports/`).
    ///
    /// ```no_run
    /// use chat_client::{MessageId, ReportRequest};
    ///
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let report = ReportRequest {
    ///     message_id: Some(MessageId(42)),
    ///     user_id: None,
    ///     reason: "insults".to_owned(),
    /// };
    /// client.report(&report).await?;
    /// # Ok(()) }
    /// ```
    pub async fn report(&self, report: &ReportRequest) -> Result<Report, ClientError> {
        self.call(Req::post("chat/reports/").json(report)?).await
    }

    /// Revokes every token of this user, this client's included
    /// (`POST /api/users/logout-all/`): every session logs in again, open
    /// connections close.
    pub async fn logout_everywhere(&self) -> Result<(), ClientError> {
        self.call_empty(Req::post("api/users/logout-all/")).await
    }

    /// Server admins: a page of reports (`GET /admin/reports/`).
    pub async fn admin_reports(
        &self,
        query: &ReportsQuery,
    ) -> Result<ReportsResponse, ClientError> {
        self.call(
            Req::get("admin/reports/")
                .query("status", query.status.clone())
                .query("before", query.before)
                .query("limit", query.limit),
        )
        .await
    }

    /// Server admins: one report, with the reported text as it was
    /// (`GET /admin/reports/{id}/`).
    pub async fn admin_report(&self, id: i64) -> Result<Report, ClientError> {
        self.call(Req::get(format!("admin/reports/{id}/"))).await
    }

    /// Server admins: resolves a report (`POST /admin/reports/{id}/resolve/`).
    pub async fn resolve_report(&self, id: i64, resolution: &str) -> Result<Report, ClientError> {
        let body = ResolveRequest {
            resolution: resolution.to_owned(),
        };
        self.call(Req::post(format!("admin/reports/{id}/resolve/")).json(&body)?)
            .await
    }

    /// Server admins: deactivates an account (every token of theirs stops
    /// working at once) or reactivates it.
    pub async fn set_user_active(&self, user: UserId, active: bool) -> Result<(), ClientError> {
        let action = if active { "reactivate" } else { "deactivate" };
        self.call_empty(Req::post(format!("admin/users/{user}/{action}/")))
            .await
    }
}
