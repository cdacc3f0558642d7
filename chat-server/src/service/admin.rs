//! Reports, and what server admins do: list, inspect and resolve reports;
//! deactivate and reactivate accounts.

use chat_core::admin::{Report, ReportRequest, ReportsQuery, ReportsResponse};
use chat_core::{ErrorCode, Timestamp, UserId};

use super::ChatService;
use super::accounts::{Accounts, Revoked};
use crate::error::{ApiError, ApiResult};
use crate::storage::{MemberState, NewReport, ReportRecord, ReportStatus};

/// The longest reason or resolution, in characters.
pub(crate) const MAX_REPORT_TEXT: usize = 1_000;
const DEFAULT_REPORTS_PAGE: u32 = 50;
const MAX_REPORTS_PAGE: u32 = 100;

impl ChatService {
    /// `POST /chat/reports/`: a message of a room the caller is a member of
    /// (its body is kept with the report), or a user.
    pub(crate) async fn report(&self, user: UserId, req: ReportRequest) -> ApiResult<Report> {
        check_text("reason", &req.reason)?;
        let (reported, message, room, body) = match (req.message_id, req.user_id) {
            (Some(id), None) => {
                let not_found = || ApiError::new(ErrorCode::MessageNotFound);
                let message = self.storage.message(id).await?.ok_or_else(not_found)?;
                // Only what the caller may read: a member of its room.
                if self.storage.membership(message.room, user).await? != Some(MemberState::Member) {
                    return Err(not_found());
                }
                (
                    message.sender,
                    Some(id),
                    Some(message.room),
                    Some(message.body),
                )
            }
            (None, Some(other)) => {
                if other == user {
                    return Err(ApiError::invalid_field(
                        "user_id",
                        "you cannot report yourself",
                    ));
                }
                if self.storage.user(other).await?.is_none() {
                    return Err(ApiError::new(ErrorCode::UserNotFound));
                }
                (other, None, None, None)
            }
            _ => {
                return Err(ApiError::invalid_field(
                    "message_id",
                    "give exactly one of message_id and user_id",
                ));
            }
        };
        let id = self
            .storage
            .create_report(NewReport {
                reporter: user,
                user: reported,
                message,
                room,
                reason: req.reason.trim().to_owned(),
                message_body: body,
                created_at: Timestamp::now(),
            })
            .await?;
        tracing::info!(report = id, reporter = %user, user = %reported, "report filed");
        let record = self
            .storage
            .report(id)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::ReportNotFound))?;
        // The reporter gets it back without the kept body.
        Ok(Report {
            message_body: None,
            ..report_to_wire(record)
        })
    }

    /// Refuses anyone but a server admin (read from storage, uncached:
    /// `chat-server admin grant` writes it directly).
    async fn require_admin(&self, user: UserId) -> ApiResult<()> {
        match self.storage.user(user).await? {
            Some(u) if u.is_admin => Ok(()),
            _ => Err(ApiError::new(ErrorCode::NotAdmin)),
        }
    }

    /// `GET /admin/reports/`.
    pub(crate) async fn reports(
        &self,
        admin: UserId,
        query: ReportsQuery,
    ) -> ApiResult<ReportsResponse> {
        self.require_admin(admin).await?;
        let status = match query.status.as_deref().unwrap_or("open") {
            "open" => ReportStatus::Open,
            "resolved" => ReportStatus::Resolved,
            "all" => ReportStatus::All,
            _ => {
                return Err(ApiError::invalid_field("status", "open, resolved or all"));
            }
        };
        let limit = query.limit.unwrap_or(DEFAULT_REPORTS_PAGE);
        if !(1..=MAX_REPORTS_PAGE).contains(&limit) {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be 1..={MAX_REPORTS_PAGE}"),
            ));
        }
        let mut found = self
            .storage
            .reports(status, query.before, limit + 1)
            .await?;
        let has_more = found.len() > limit as usize;
        found.truncate(limit as usize);
        Ok(ReportsResponse {
            reports: found.into_iter().map(report_to_wire).collect(),
            has_more,
        })
    }

    /// `GET /admin/reports/{id}/`, with the reported message as it was.
    pub(crate) async fn report_detail(&self, admin: UserId, id: i64) -> ApiResult<Report> {
        self.require_admin(admin).await?;
        self.storage
            .report(id)
            .await?
            .map(report_to_wire)
            .ok_or_else(|| ApiError::new(ErrorCode::ReportNotFound))
    }

    /// `POST /admin/reports/{id}/resolve/`: the report, resolved (one
    /// resolved already keeps its first resolution).
    pub(crate) async fn resolve_report(
        &self,
        admin: UserId,
        id: i64,
        resolution: &str,
    ) -> ApiResult<Report> {
        self.require_admin(admin).await?;
        check_text("resolution", resolution)?;
        self.storage
            .resolve_report(id, admin, resolution.trim(), Timestamp::now())
            .await?;
        self.report_detail(admin, id).await
    }

    /// `POST /admin/users/{id}/deactivate/` (`deactivate`) and
    /// `…/reactivate/`: a deactivated user's tokens all stop working at
    /// once and their sockets close with 4403; reactivated, they log in
    /// again.
    pub(crate) async fn set_active(
        &self,
        admin: UserId,
        user: UserId,
        active: bool,
    ) -> ApiResult<()> {
        self.require_admin(admin).await?;
        if user == admin && !active {
            return Err(ApiError::invalid_field(
                "id",
                "you cannot deactivate yourself",
            ));
        }
        let at = (!active).then(Timestamp::now);
        let version = self
            .storage
            .set_deactivated(user, at)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::UserNotFound))?;
        tracing::info!(%user, by = %admin, active, "account changed");
        self.accounts.forget(user);
        Accounts::publish(&self.hub, Revoked { user, version });
        Ok(())
    }
}

fn check_text(field: &str, text: &str) -> ApiResult<()> {
    let len = text.trim().chars().count();
    if len == 0 || len > MAX_REPORT_TEXT {
        return Err(ApiError::invalid_field(
            field,
            format!("1 to {MAX_REPORT_TEXT} characters"),
        ));
    }
    Ok(())
}

fn report_to_wire(r: ReportRecord) -> Report {
    Report {
        id: r.id,
        reporter: r.reporter,
        user_id: r.user,
        message_id: r.message,
        room: r.room,
        reason: r.reason,
        created_at: r.created_at,
        message_body: r.message_body,
        message_deleted: r.message_deleted,
        resolved_at: r.resolved_at,
        resolved_by: r.resolved_by,
        resolution: r.resolution,
    }
}
