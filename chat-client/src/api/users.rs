//! Users and tokens: `/api/users/…`.

use std::time::SystemTime;

use chat_core::api::{RefreshRequest, RegisterRequest, TokenRequest, TokenResponse};
use chat_core::user::{BlockedResponse, BlockedUser};
use chat_core::{User, UserId};

use crate::client::Req;
use crate::{ChatClient, ClientError, Tokens};

impl ChatClient {
    /// Creates an account (`POST /api/users/register/`). Does not log in.
    ///
    /// Errors: [`InvalidInput`](crate::ErrorKind::InvalidInput) with
    /// `invalid_input` (and [`fields`](ClientError::fields)) for a bad
    /// username, email or password; [`Conflict`](crate::ErrorKind::Conflict)
    /// with `username_taken` / `email_taken`.
    ///
    /// ```no_run
    /// use chat_client::{ChatClient, RegisterRequest};
    ///
    /// # async fn demo(client: ChatClient) -> Result<(), chat_client::ClientError> {
    /// let user = client
    ///     .register(RegisterRequest {
    ///         username: "alice".into(),
    ///         email: "alice@example.com".into(),
    ///         password: "correct horse battery staple".into(),
    ///         display_name: Some("Alice".into()),
    ///     })
    ///     .await?;
    /// println!("registered with id {}", user.id);
    /// # Ok(()) }
    /// ```
    pub async fn register(&self, request: RegisterRequest) -> Result<User, ClientError> {
        self.call(Req::post("api/users/register/").public().json(&request)?)
            .await
    }

    /// Logs in by username (`POST /api/users/token/`) and keeps the session
    /// in the client; returns it too, to persist.
    ///
    /// Errors: [`Unauthorized`](crate::ErrorKind::Unauthorized) with
    /// `invalid_credentials` for a wrong username or password.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let tokens = client.login("alice", "correct horse battery staple").await?;
    /// # let _ = tokens;
    /// # Ok(()) }
    /// ```
    pub async fn login(&self, username: &str, password: &str) -> Result<Tokens, ClientError> {
        self.token(TokenRequest {
            username: Some(username.to_owned()),
            email: None,
            password: password.to_owned(),
        })
        .await
    }

    /// Logs in by email; otherwise like [`login`](Self::login).
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// client.login_with_email("alice@example.com", "correct horse battery staple").await?;
    /// # Ok(()) }
    /// ```
    pub async fn login_with_email(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Tokens, ClientError> {
        self.token(TokenRequest {
            username: None,
            email: Some(email.to_owned()),
            password: password.to_owned(),
        })
        .await
    }

    async fn token(&self, request: TokenRequest) -> Result<Tokens, ClientError> {
        let now = SystemTime::now();
        let answer: TokenResponse = self
            .call(Req::post("api/users/token/").public().json(&request)?)
            .await?;
        let tokens = Tokens::from_response(answer, now);
        self.set_tokens(Some(tokens.clone()));
        Ok(tokens)
    }

    /// Spends the refresh token for a new pair now
    /// (`POST /api/users/token/refresh/`). Calls do this by themselves when
    /// needed; this is for an application that wants to control when.
    ///
    /// Errors: [`NotLoggedIn`](ClientError::NotLoggedIn) without a session;
    /// [`Unauthorized`](crate::ErrorKind::Unauthorized) with `invalid_token`
    /// for a refresh token that is expired, spent or logged out.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let fresh = client.refresh().await?;
    /// # let _ = fresh;
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&self) -> Result<Tokens, ClientError> {
        self.refresh_after(None).await
    }

    /// Ends the session on the server (`POST /api/users/logout/`: its refresh
    /// token stops working) and forgets it locally. Without a session it does
    /// nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// client.logout().await?;
    /// assert!(!client.is_logged_in());
    /// # Ok(()) }
    /// ```
    pub async fn logout(&self) -> Result<(), ClientError> {
        // Under the refresh lock: a refresh in flight would otherwise spend
        // the token being logged out and leave its successor alive.
        let _flight = self.auth().refresh_lock.lock().await;
        let Some(tokens) = self.tokens() else {
            return Ok(());
        };
        let req = Req::post("api/users/logout/")
            .public()
            .json(&RefreshRequest {
                refresh: tokens.refresh,
            })?;
        self.call_empty(req).await?;
        self.set_tokens(None);
        Ok(())
    }

    /// The logged-in user, email included (`GET /api/users/me/`).
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let me = client.me().await?;
    /// println!("{} <{}>", me.username, me.email.unwrap_or_default());
    /// # Ok(()) }
    /// ```
    pub async fn me(&self) -> Result<User, ClientError> {
        self.call(Req::get("api/users/me/")).await
    }

    /// Blocks a user (`POST /api/users/{id}/block/`): they can no longer
    /// open a conversation with you nor send in yours.
    pub async fn block(&self, user: UserId) -> Result<(), ClientError> {
        self.call_empty(Req::post(format!("api/users/{user}/block/")))
            .await
    }

    /// Lifts a block (`DELETE /api/users/{id}/block/`).
    pub async fn unblock(&self, user: UserId) -> Result<(), ClientError> {
        self.call_empty(Req::delete(format!("api/users/{user}/block/")))
            .await
    }

    /// The users you blocked, the newest block first
    /// (`GET /api/users/blocked/`).
    pub async fn blocked(&self) -> Result<Vec<BlockedUser>, ClientError> {
        let answer: BlockedResponse = self.call(Req::get("api/users/blocked/")).await?;
        Ok(answer.blocked)
    }

    /// One page of users ordered by id (`GET /api/users/`): those with an id
    /// above `after` (the last id of the previous page), at most `limit`
    /// (1..=200, server default 50). Others' emails are not shown.
    ///
    /// ```no_run
    /// # async fn demo(client: chat_client::ChatClient) -> Result<(), chat_client::ClientError> {
    /// let mut after = None;
    /// loop {
    ///     let page = client.users(after, Some(100)).await?;
    ///     let Some(last) = page.last() else { break };
    ///     after = Some(last.id);
    ///     for user in &page {
    ///         println!("{}", user.username);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn users(
        &self,
        after: Option<UserId>,
        limit: Option<u32>,
    ) -> Result<Vec<User>, ClientError> {
        self.call(
            Req::get("api/users/")
                .query("after", after)
                .query("limit", limit),
        )
        .await
    }
}
