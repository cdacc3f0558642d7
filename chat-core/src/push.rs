//! Push notifications: the devices a user registers, to be told of
//! messages while they have no socket open.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// `POST /api/push/devices/`: a device's push token for the caller. The
/// same `(app_id, token)` registered again moves to the caller (the device
/// changed hands) and keeps its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct RegisterDeviceRequest {
    /// What the gateway delivers through, as the app names it (`fcm`,
    /// `apns`, `webpush`…): 1 to 32 characters, no control characters.
    #[cfg_attr(
        feature = "schema",
        schema(min_length = 1, max_length = 32, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")
    )]
    pub platform: String,
    /// The push token (the Matrix gateway's `pushkey`): 1 to 4,096
    /// characters, no control characters.
    #[cfg_attr(
        feature = "schema",
        schema(
            min_length = 1,
            max_length = 4096,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub token: String,
    /// The app the token belongs to (the Matrix gateway's `app_id`, e.g.
    /// `com.example.chat.ios`): 1 to 128 characters, no control characters.
    #[cfg_attr(
        feature = "schema",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub app_id: String,
}

/// A registered device (its token is not shown back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema, schemars::JsonSchema))]
pub struct Device {
    /// The id to unregister it with.
    pub id: i64,
    /// As registered.
    pub platform: String,
    /// As registered.
    pub app_id: String,
    /// When it was (last) registered.
    pub created_at: Timestamp,
}
