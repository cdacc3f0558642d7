//! Push devices: what a user registers to be notified while away (see
//! [`super::push`] for the notifying).

use chat_core::push::{Device, RegisterDeviceRequest};
use chat_core::{ErrorCode, Timestamp, UserId};

use super::ChatService;
use crate::error::{ApiError, ApiResult};
use crate::storage::DeviceRecord;

fn fits(field: &'static str, value: &str, max: usize) -> ApiResult<()> {
    let len = value.chars().count();
    if len == 0 || len > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            format!("1 to {max} characters without control characters"),
        ));
    }
    Ok(())
}

fn to_wire(d: DeviceRecord) -> Device {
    Device {
        id: d.id,
        platform: d.platform,
        app_id: d.app_id,
        created_at: d.created_at,
    }
}

impl ChatService {
    /// `POST /api/push/devices/`.
    pub(crate) async fn register_device(
        &self,
        user: UserId,
        req: RegisterDeviceRequest,
    ) -> ApiResult<Device> {
        fits("platform", &req.platform, 32)?;
        fits("token", &req.token, 4_096)?;
        fits("app_id", &req.app_id, 128)?;
        let record = self
            .storage
            .register_device(
                user,
                &req.platform,
                &req.token,
                &req.app_id,
                Timestamp::now(),
            )
            .await?;
        Ok(to_wire(record))
    }

    /// `GET /api/push/devices/`: the caller's.
    pub(crate) async fn devices(&self, user: UserId) -> ApiResult<Vec<Device>> {
        Ok(self
            .storage
            .devices(&[user])
            .await?
            .into_iter()
            .map(to_wire)
            .collect())
    }

    /// `DELETE /api/push/devices/{id}/`: one of the caller's.
    pub(crate) async fn delete_device(&self, user: UserId, id: i64) -> ApiResult<()> {
        if self.storage.delete_device(user, id).await? {
            Ok(())
        } else {
            Err(ApiError::with_message(
                ErrorCode::NotFound,
                "No such device of yours",
            ))
        }
    }
}
