//! Push devices: register this device's push token so that messages reach
//! it while the app has no socket open (the server notifies its push
//! gateway).

use chat_core::push::{Device, RegisterDeviceRequest};

use crate::client::Req;
use crate::{ChatClient, ClientError};

impl ChatClient {
    /// Registers a push token (`POST /api/push/devices/`): `platform` as
    /// your gateway names it (`fcm`, `apns`…), the token, and your app's
    /// id. Registering the same token again (another user on the device)
    /// moves it to this user.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient, fcm_token: String) -> Result<(), chat_client::ClientError> {
    /// let device = client.register_device("fcm", &fcm_token, "com.example.chat").await?;
    /// println!("registered as device {}", device.id);
    /// # Ok(()) }
    /// ```
    pub async fn register_device(
        &self,
        platform: &str,
        token: &str,
        app_id: &str,
    ) -> Result<Device, ClientError> {
        let request = RegisterDeviceRequest {
            platform: platform.to_owned(),
            token: token.to_owned(),
            app_id: app_id.to_owned(),
        };
        self.call(Req::post("api/push/devices/").json(&request)?)
            .await
    }

    /// Your registered devices (`GET /api/push/devices/`), oldest first.
    pub async fn devices(&self) -> Result<Vec<Device>, ClientError> {
        self.call(Req::get("api/push/devices/")).await
    }

    /// Unregisters one of your devices (`DELETE /api/push/devices/{id}/`),
    /// e.g. at log-out; `NotFound` if it is not yours.
    pub async fn unregister_device(&self, id: i64) -> Result<(), ClientError> {
        self.call_empty(Req::delete(format!("api/push/devices/{id}/")))
            .await
    }
}
