//! The auth flows: sign-up (with optional email confirmation), password and anonymous
//! sign-in, refresh-token rotation, sign-out, the current user (with confirmed email
//! change), password recovery, email links and codes (`/otp`, `/verify`), the admin
//! operations, first-sight provisioning of users known through an external provider, and
//! the maintenance task (pruning, anonymous-user cleanup). HTTP lives in `http::auth`, SQL
//! in `store::users`, `store::email_tokens` and `store::auth_limits`.
//!
//! No answer may depend on whether an address has an account: flows that could reveal it
//! do the same work (limits counted, password hashed) and give the same answer either way,
//! and mail is sent by a background task so timing does not tell either.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    email_token::{code_hash, link_hash, EmailSecrets, TokenKind, MAX_LINK_TOKEN_LEN},
    hashing::{HashPool, HashPoolError},
    limiter::{LimitError, Limiter},
    mail::{Mail, MailKind, Mailer, TokenToStore},
    password::{PasswordError, Passwords},
    refresh::{hash_refresh_token, new_refresh_token, MAX_REFRESH_TOKEN_LEN},
    token::{TokenError, TokenKeys},
    Identity, Role,
};
use crate::{
    backoff::Backoff,
    config::{AccountsConfig, AuthConfig},
    protocol::{ApiError, ErrorCode},
    store::{
        email_tokens::TokenProof,
        users::{is_unique_violation, NewUser, Rotation, UserChanges, UserRow},
        Store, StoreError,
    },
};

/// Remembered external users; beyond this the memory is cleared (re-provisioning is an
/// idempotent insert).
const KNOWN_EXTERNAL_MAX: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("too many attempts")]
    RateLimited(Duration),
    #[error("confirm your email address first: follow the link in the mail we sent")]
    EmailNotConfirmed,
    #[error("the link or code is wrong, expired or already used")]
    VerificationFailed,
    #[error("{0} is turned off on this server")]
    SignUpDisabled(&'static str),
    #[error("email links and codes are not configured on this server (set ROWCAST_SMTP_HOST)")]
    MailNotConfigured,
    #[error("{0}")]
    InvalidField(String),
    #[error("a user with this email already exists")]
    EmailTaken,
    #[error("sign in first")]
    NotSignedIn,
    #[error("this requires the service key")]
    ServiceKeyRequired,
    #[error("no such user")]
    NoSuchUser,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Password(PasswordError),
    #[error("password hashing task failed")]
    Blocking,
}

impl From<LimitError> for AuthError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Limited(wait) => AuthError::RateLimited(wait),
            LimitError::Store(e) => AuthError::Store(e),
        }
    }
}

impl From<HashPoolError> for AuthError {
    fn from(e: HashPoolError) -> Self {
        match e {
            // The hashing pool is full: come back in a second.
            HashPoolError::Busy => AuthError::RateLimited(Duration::from_secs(1)),
            HashPoolError::Failed => AuthError::Blocking,
        }
    }
}

impl From<PasswordError> for AuthError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::TooShort(_) | PasswordError::TooLong => {
                AuthError::InvalidField(e.to_string())
            }
            other => AuthError::Password(other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials | AuthError::InvalidRefreshToken => {
                ApiError::new(ErrorCode::InvalidCredentials, e.to_string())
            }
            AuthError::RateLimited(wait) => {
                ApiError::new(ErrorCode::RateLimited, "too many attempts; retry later")
                    .with_retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
            AuthError::EmailNotConfirmed => {
                ApiError::new(ErrorCode::EmailNotConfirmed, e.to_string())
            }
            AuthError::VerificationFailed => {
                ApiError::new(ErrorCode::VerificationFailed, e.to_string())
            }
            AuthError::SignUpDisabled(_) => ApiError::new(ErrorCode::SignupDisabled, e.to_string()),
            AuthError::MailNotConfigured => ApiError::new(ErrorCode::Forbidden, e.to_string()),
            AuthError::InvalidField(m) => ApiError::new(ErrorCode::InvalidField, m),
            AuthError::EmailTaken => ApiError::new(ErrorCode::Conflict, e.to_string()),
            AuthError::NotSignedIn => ApiError::new(ErrorCode::Unauthorized, e.to_string()),
            AuthError::ServiceKeyRequired => ApiError::new(ErrorCode::Forbidden, e.to_string()),
            AuthError::NoSuchUser => ApiError::new(ErrorCode::NotFound, e.to_string()),
            AuthError::Store(e) => e.into(),
            AuthError::Token(_) | AuthError::Password(_) | AuthError::Blocking => {
                tracing::error!(error = %e, "auth failure");
                ApiError::internal()
            }
        }
    }
}

/// A signed-in session as handed to the client.
#[derive(Debug)]
pub struct IssuedSession {
    pub access_token: String,
    pub expires_in: u64,
    pub expires_at: i64,
    pub refresh_token: String,
    pub user: UserRow,
}

/// Which sessions sign-out ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutScope {
    /// This session only.
    Local,
    /// Every session of the user.
    Global,
    /// Every session but this one.
    Others,
}

/// What an admin (or the user) changes on a user.
#[derive(Debug, Default)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub password: Option<String>,
    pub app_metadata: Option<Value>,
    pub user_metadata: Option<Value>,
}

/// What sign-up hands back: a session, or (with email confirmation on) a user who must
/// confirm their address first.
#[derive(Debug)]
pub enum SignUpOutcome {
    Session(IssuedSession),
    ConfirmationSent(UserRow),
}

/// How an emailed token is presented to `/verify`.
#[derive(Debug, Clone)]
pub enum Verification {
    /// The secret from the link (gotrue's `token_hash`).
    Link(String),
    /// The address and the six-digit code from the mail.
    Code { email: String, code: String },
}

/// What runs beside the service: the mail queue and this server's public URL for links.
#[derive(Debug, Clone)]
pub struct AuthRuntime {
    pub mailer: Mailer,
    /// Base of emailed links, e.g. `https://api.example.com` (no trailing slash).
    pub external_url: String,
}

/// The auth service: shared by every request through the HTTP state.
#[derive(Debug)]
pub struct Auth {
    store: Store,
    tokens: Arc<TokenKeys>,
    hashing: HashPool,
    limiter: Limiter,
    access_ttl: Duration,
    session_lifetime: Duration,
    accounts: AccountsConfig,
    runtime: AuthRuntime,
    known_external: Mutex<HashSet<Uuid>>,
}

impl Auth {
    pub fn new(
        store: Store,
        tokens: Arc<TokenKeys>,
        config: &AuthConfig,
        runtime: AuthRuntime,
    ) -> Result<Auth, PasswordError> {
        let passwords = Passwords::new(config.hash_params, config.password_min_length)?;
        Ok(Auth {
            limiter: Limiter::new(
                store.clone(),
                config.signin_limits,
                config.accounts.signup_limits,
            ),
            store,
            tokens,
            hashing: HashPool::new(passwords, config.accounts.hash_memory_budget_bytes),
            access_ttl: config.access_token_ttl,
            session_lifetime: config.session_lifetime,
            accounts: config.accounts.clone(),
            runtime,
            known_external: Mutex::new(HashSet::new()),
        })
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.tokens
    }

    /// How many password hashes may run at once (from the memory budget).
    pub fn hashing_slots(&self) -> usize {
        self.hashing.size()
    }

    /// Whether email confirmation is on.
    pub fn confirms_email(&self) -> bool {
        self.accounts.email_confirmation
    }

    /// Sign up with email and password. Without email confirmation this signs the new user
    /// in; with it, a confirmation mail goes out and the user is handed back unsigned-in.
    /// An address that already has an account gets the same answer as a new one when
    /// confirmation is on (a look-alike user; no second account); with confirmation off
    /// the request is treated as a password sign-in (limits and all), see docs/auth.md.
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        user_metadata: Option<Value>,
        client: IpAddr,
        redirect_to: Option<&str>,
    ) -> Result<SignUpOutcome, AuthError> {
        if !self.accounts.email_signup {
            return Err(AuthError::SignUpDisabled("email sign-up"));
        }
        let email = valid_email(email)?;
        let metadata = object_or_none(user_metadata, "data")?;
        self.hashing.passwords().check_policy(password)?;
        self.limiter.email_sign_up(client).await?;
        let confirm = self.accounts.email_confirmation;
        if confirm {
            self.limiter.mail(&email, None, client).await?;
        }
        let hash = self.hash(password).await?;
        let created = self
            .store
            .create_user(&NewUser {
                email: Some(&email),
                password_hash: Some(&hash),
                user_metadata: metadata.as_ref(),
                email_confirmed: !confirm,
                ..Default::default()
            })
            .await;
        match created {
            Ok(user) if confirm => {
                self.send_token(&user, TokenKind::Signup, &email, redirect_to)
                    .await?;
                Ok(SignUpOutcome::ConfirmationSent(user))
            }
            Ok(user) => Ok(SignUpOutcome::Session(self.start_session(user).await?)),
            Err(e) if is_unique_violation(&e) && confirm => {
                // Resend the confirmation to an unconfirmed account; a confirmed one gets
                // nothing. Either way the answer looks like a new user's.
                if let Some((user, _)) = self.store.user_by_email(&email).await? {
                    if user.email_confirmed_at.is_none() {
                        self.send_token(&user, TokenKind::Signup, &email, redirect_to)
                            .await?;
                    }
                }
                Ok(SignUpOutcome::ConfirmationSent(look_alike_user(
                    &email,
                    metadata.unwrap_or_else(|| json!({})),
                )))
            }
            Err(e) if is_unique_violation(&e) => Ok(SignUpOutcome::Session(
                self.sign_in_password(&email, password, client).await?,
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Anonymous sign-in: a real user without email or password, upgradable later.
    pub async fn sign_in_anonymous(
        &self,
        user_metadata: Option<Value>,
        client: IpAddr,
    ) -> Result<IssuedSession, AuthError> {
        if !self.accounts.anonymous_signin {
            return Err(AuthError::SignUpDisabled("anonymous sign-in"));
        }
        let metadata = object_or_none(user_metadata, "data")?;
        self.limiter.anonymous_sign_up(client).await?;
        let user = self
            .store
            .create_user(&NewUser {
                is_anonymous: true,
                user_metadata: metadata.as_ref(),
                ..Default::default()
            })
            .await?;
        self.start_session(user).await
    }

    /// Password sign-in. An unknown email and a wrong password fail alike, after the same
    /// work. Each attempt first reserves a slot on the account's and the address's limits
    /// (one atomic statement, shared by every instance), so once a limit is reached no
    /// further password is checked, however many arrive at once; a right password gives its
    /// slots back.
    pub async fn sign_in_password(
        &self,
        email: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<IssuedSession, AuthError> {
        let email = email.trim();
        let reservation = self.limiter.sign_in(email, client).await?;
        let found = if email.len() <= 254 {
            self.store.user_by_email(email).await?
        } else {
            None
        };
        let stored = found.as_ref().and_then(|(_, hash)| hash.clone());
        let password = password.to_string();
        let ok = match self
            .hashing
            .run(move |p, memory| p.verify(&password, stored.as_deref(), memory))
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                // The password was not checked: the attempt does not count.
                self.limiter.release(reservation).await?;
                return Err(e.into());
            }
        };
        match found {
            Some((user, _)) if ok => {
                self.limiter.release(reservation).await?;
                if self.accounts.email_confirmation && user.email_confirmed_at.is_none() {
                    return Err(AuthError::EmailNotConfirmed);
                }
                self.start_session(user).await
            }
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// `POST /recover`: mail a recovery link and code if the address has an account. The
    /// answer is the same either way.
    pub async fn recover(
        &self,
        email: &str,
        client: IpAddr,
        redirect_to: Option<&str>,
    ) -> Result<(), AuthError> {
        self.require_mail()?;
        let email = valid_email(email)?;
        self.limiter.mail(&email, None, client).await?;
        if let Some((user, _)) = self.store.user_by_email(&email).await? {
            self.send_token(&user, TokenKind::Recovery, &email, redirect_to)
                .await?;
        }
        Ok(())
    }

    /// `POST /resend` with `type: signup`: mail the confirmation again to an address whose
    /// account is not confirmed yet. The answer is the same for every address.
    pub async fn resend_confirmation(
        &self,
        email: &str,
        client: IpAddr,
        redirect_to: Option<&str>,
    ) -> Result<(), AuthError> {
        self.require_mail()?;
        let email = valid_email(email)?;
        self.limiter.mail(&email, None, client).await?;
        if let Some((user, _)) = self.store.user_by_email(&email).await? {
            if user.email_confirmed_at.is_none() {
                self.send_token(&user, TokenKind::Signup, &email, redirect_to)
                    .await?;
            }
        }
        Ok(())
    }

    /// `POST /otp`: mail a sign-in link and code. An unknown address gets a new
    /// (unconfirmed, password-less) user when `create_user` and email sign-up allow it;
    /// otherwise nothing is sent. The answer is the same either way.
    pub async fn send_magic_link(
        &self,
        email: &str,
        create_user: bool,
        user_metadata: Option<Value>,
        client: IpAddr,
        redirect_to: Option<&str>,
    ) -> Result<(), AuthError> {
        self.require_mail()?;
        let email = valid_email(email)?;
        let metadata = object_or_none(user_metadata, "data")?;
        let creates = create_user && self.accounts.email_signup;
        if creates {
            self.limiter.email_sign_up(client).await?;
        }
        self.limiter.mail(&email, None, client).await?;
        let user = match self.store.user_by_email(&email).await? {
            Some((user, _)) => Some(user),
            None if creates => {
                let created = self
                    .store
                    .create_user(&NewUser {
                        email: Some(&email),
                        user_metadata: metadata.as_ref(),
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(u) => Some(u),
                    // Created concurrently by another request: use that one.
                    Err(e) if is_unique_violation(&e) => {
                        self.store.user_by_email(&email).await?.map(|(u, _)| u)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        if let Some(user) = user {
            self.send_token(&user, TokenKind::MagicLink, &email, redirect_to)
                .await?;
        }
        Ok(())
    }

    /// `/verify`: spend an emailed token of one of `kinds` and sign the user in. Confirms
    /// the address; a recovery also ends every other session of the user; an email change
    /// takes effect. Wrong codes count against the address's limit like failed sign-ins.
    pub async fn verify(
        &self,
        kinds: &[TokenKind],
        proof: Verification,
        client: IpAddr,
    ) -> Result<(IssuedSession, TokenKind), AuthError> {
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let spent = match &proof {
            Verification::Link(secret) => {
                if secret.is_empty() || secret.len() > MAX_LINK_TOKEN_LEN {
                    return Err(AuthError::VerificationFailed);
                }
                let hash = link_hash(secret);
                self.store
                    .spend_email_token(TokenProof::Link(&hash), &names)
                    .await?
            }
            Verification::Code { email, code } => {
                let email = valid_email(email)?;
                if code.trim().is_empty() || code.len() > 16 {
                    return Err(AuthError::VerificationFailed);
                }
                let reservation = self.limiter.code(&email, client).await?;
                let hash = code_hash(&email, code);
                let spent = self
                    .store
                    .spend_email_token(TokenProof::Code(&hash), &names)
                    .await?;
                if spent.is_some() {
                    self.limiter.release(reservation).await?;
                }
                spent
            }
        };
        let spent = spent.ok_or(AuthError::VerificationFailed)?;
        let kind = TokenKind::parse(&spent.kind).ok_or(AuthError::VerificationFailed)?;
        let user = match kind {
            TokenKind::Signup | TokenKind::MagicLink | TokenKind::Recovery => self
                .store
                .confirm_email(spent.user_id, &spent.email)
                .await?
                .ok_or(AuthError::VerificationFailed)?,
            TokenKind::EmailChange => self
                .store
                .update_user(
                    spent.user_id,
                    &UserChanges {
                        email: Some(&spent.email),
                        email_confirmed: true,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        // Taken since the mail went out.
                        AuthError::VerificationFailed
                    } else {
                        AuthError::Store(e)
                    }
                })?
                .ok_or(AuthError::VerificationFailed)?,
        };
        if kind == TokenKind::Recovery {
            // Whoever else holds a session may be the reason for the recovery.
            self.store.revoke_sessions(user.id, None).await?;
        }
        Ok((self.start_session(user).await?, kind))
    }

    /// Where an emailed link leads after verification: `requested` when it is the site's
    /// origin or an allowed prefix, else the site URL (then this server's URL).
    pub fn redirect_target(&self, requested: Option<&str>) -> String {
        let fallback = || {
            self.accounts
                .site_url
                .clone()
                .unwrap_or_else(|| self.runtime.external_url.clone())
        };
        let Some(url) = requested.map(str::trim).filter(|u| !u.is_empty()) else {
            return fallback();
        };
        let mut allowed: Vec<String> = self.accounts.redirect_urls.clone();
        if let Some(site) = &self.accounts.site_url {
            allowed.push(origin_of(site).to_string());
        }
        allowed.push(origin_of(&self.runtime.external_url).to_string());
        let ok = allowed.iter().any(|prefix| {
            url.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#']))
        }) && !url.contains(char::is_whitespace);
        if ok {
            url.to_string()
        } else {
            fallback()
        }
    }

    /// Exchange a refresh token for a new access token and refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<IssuedSession, AuthError> {
        if refresh_token.is_empty() || refresh_token.len() > MAX_REFRESH_TOKEN_LEN {
            return Err(AuthError::InvalidRefreshToken);
        }
        let next = new_refresh_token();
        let rotation = self
            .store
            .rotate_refresh_token(
                &hash_refresh_token(refresh_token),
                &hash_refresh_token(&next),
            )
            .await?;
        match rotation {
            Rotation::Rotated { session_id, user } => self.issue(user, session_id, next),
            Rotation::Invalid => Err(AuthError::InvalidRefreshToken),
            Rotation::Reused { session_id } => {
                tracing::warn!(%session_id, "refresh token reused; session revoked");
                Err(AuthError::InvalidRefreshToken)
            }
        }
    }

    /// Sign out: revoke the caller's session(s). Access tokens already issued stay valid
    /// until they expire.
    pub async fn logout(&self, who: &Identity, scope: LogoutScope) -> Result<(), AuthError> {
        let user_id = user_id(who)?;
        let session = session_id(who);
        match (scope, session) {
            (LogoutScope::Local, Some(sid)) => self.store.revoke_session(user_id, sid).await?,
            (LogoutScope::Local, None) => {}
            (LogoutScope::Global, _) => self.store.revoke_sessions(user_id, None).await?,
            (LogoutScope::Others, keep) => self.store.revoke_sessions(user_id, keep).await?,
        }
        Ok(())
    }

    /// The signed-in caller's user.
    pub async fn current_user(&self, who: &Identity) -> Result<UserRow, AuthError> {
        let id = user_id(who)?;
        self.store
            .user_by_id(id)
            .await?
            .ok_or(AuthError::NoSuchUser)
    }

    /// The caller changes their email, password or user metadata. An anonymous user who
    /// ends up with both an email and a password is upgraded to a regular one. A new
    /// password ends the user's other sessions. With email confirmation on, a new email
    /// takes effect only when the link or code mailed to it is used; the answer (the user
    /// and the pending address) is the same whether or not the address has an account.
    /// Email changes are rate-limited per account and per client address.
    pub async fn update_current_user(
        &self,
        who: &Identity,
        mut update: UserUpdate,
        client: IpAddr,
        redirect_to: Option<&str>,
    ) -> Result<(UserRow, Option<String>), AuthError> {
        let id = user_id(who)?;
        if update.app_metadata.is_some() {
            return Err(AuthError::InvalidField(
                "app_metadata can only be set with the service key".into(),
            ));
        }
        let mut pending = None;
        if let Some(email) = update.email.as_deref() {
            let email = valid_email(email)?;
            if let Some(p) = &update.password {
                self.hashing.passwords().check_policy(p)?;
            }
            let current = self
                .store
                .user_by_id(id)
                .await?
                .ok_or(AuthError::NoSuchUser)?;
            if current.email.as_deref() == Some(email.as_str()) {
                update.email = None;
            } else {
                self.limiter.mail(&email, Some(id), client).await?;
                if self.accounts.email_confirmation {
                    update.email = None;
                    if self.store.user_by_email(&email).await?.is_none() {
                        self.send_token(&current, TokenKind::EmailChange, &email, redirect_to)
                            .await?;
                    }
                    pending = Some(email);
                }
            }
        }
        let new_password = update.password.is_some();
        let user = self
            .apply_update(id, update, !self.accounts.email_confirmation)
            .await?;
        if new_password {
            self.store.revoke_sessions(id, session_id(who)).await?;
        }
        Ok((user, pending))
    }

    /// Run the maintenance task until shutdown: prune spent tokens and finished limit
    /// windows, and (when configured) delete anonymous users idle for the set time.
    pub fn spawn_maintenance(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let auth = self.clone();
        let every = auth
            .accounts
            .anonymous_cleanup_after
            .map(|d| d / 4)
            .unwrap_or(Duration::from_secs(600))
            .clamp(Duration::from_secs(1), Duration::from_secs(600));
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first pass runs at start-up, when the database may not be migrated yet:
            // a failed pass is retried with backoff rather than a whole period later.
            let mut retry = Backoff::new(Duration::from_secs(1), every);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let mut failures = 0u32;
                while let Err(e) = auth.maintain().await {
                    failures += 1;
                    // Quiet while start-up migrates; loud when it keeps failing.
                    if failures >= 5 {
                        tracing::warn!(error = %e, "auth maintenance keeps failing; retrying");
                    } else {
                        tracing::debug!(error = %e, "auth maintenance failed; retrying");
                    }
                    if !retry.wait(&shutdown).await {
                        return;
                    }
                }
                retry.reset();
            }
        });
    }

    /// One maintenance pass. Returns how many anonymous users were deleted.
    pub async fn maintain(&self) -> Result<u64, StoreError> {
        self.store.prune_auth_limits().await?;
        self.store.prune_email_tokens().await?;
        let Some(idle) = self.accounts.anonymous_cleanup_after else {
            return Ok(0);
        };
        let mut deleted = 0;
        loop {
            let ids = self.store.idle_anonymous_users(idle, 500).await?;
            let batch = ids.len();
            let mut progress = false;
            for id in ids {
                match self.store.delete_user(id).await {
                    Ok(true) => {
                        deleted += 1;
                        progress = true;
                        self.known().remove(&id);
                    }
                    Ok(false) => {}
                    // Rows of app tables reference the user without `on delete cascade`:
                    // keep the user.
                    Err(e) if e.sqlstate() == Some("23503") => {}
                    Err(e) => return Err(e),
                }
            }
            if batch < 500 || !progress {
                break;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "deleted idle anonymous users");
        }
        Ok(deleted)
    }

    /// Ensure the user behind a verified external-provider identity exists (created on
    /// first sight). A no-op for other identities.
    pub async fn ensure_external_user(&self, who: &Identity) -> Result<(), AuthError> {
        let (Some(issuer), Some(subject)) = (
            who.claims.get("provider_iss").and_then(Value::as_str),
            who.claims.get("provider_sub").and_then(Value::as_str),
        ) else {
            return Ok(());
        };
        let id = user_id(who)?;
        if self.known().contains(&id) {
            return Ok(());
        }
        let email = who
            .claims
            .get("email")
            .and_then(Value::as_str)
            .and_then(|e| valid_email(e).ok());
        self.store
            .ensure_external_user(id, issuer, subject, email.as_deref())
            .await?;
        let mut known = self.known();
        if known.len() >= KNOWN_EXTERNAL_MAX {
            known.clear();
        }
        known.insert(id);
        Ok(())
    }

    // ---- Admin (service key) -------------------------------------------------------------

    pub async fn admin_list(
        &self,
        who: &Identity,
        page: i64,
        per_page: i64,
    ) -> Result<(Vec<UserRow>, i64), AuthError> {
        require_service(who)?;
        let per_page = per_page.clamp(1, 1000);
        let offset = (page.max(1) - 1).saturating_mul(per_page);
        Ok(self.store.list_users(per_page, offset).await?)
    }

    pub async fn admin_get(&self, who: &Identity, id: Uuid) -> Result<UserRow, AuthError> {
        require_service(who)?;
        self.store
            .user_by_id(id)
            .await?
            .ok_or(AuthError::NoSuchUser)
    }

    pub async fn admin_create(
        &self,
        who: &Identity,
        user: UserUpdate,
    ) -> Result<UserRow, AuthError> {
        require_service(who)?;
        let email = valid_email(
            user.email
                .as_deref()
                .ok_or_else(|| AuthError::InvalidField("email is required".into()))?,
        )?;
        let hash = match &user.password {
            Some(p) => Some(self.hash(p).await?),
            None => None,
        };
        let app = object_or_none(user.app_metadata, "app_metadata")?;
        let meta = object_or_none(user.user_metadata, "user_metadata")?;
        self.store
            .create_user(&NewUser {
                email: Some(&email),
                password_hash: hash.as_deref(),
                app_metadata: app.as_ref(),
                user_metadata: meta.as_ref(),
                // The service vouches for the address.
                email_confirmed: true,
                ..Default::default()
            })
            .await
            .map_err(email_conflict)
    }

    /// Change a user; a new password also ends every session of the user.
    pub async fn admin_update(
        &self,
        who: &Identity,
        id: Uuid,
        update: UserUpdate,
    ) -> Result<UserRow, AuthError> {
        require_service(who)?;
        let resets_password = update.password.is_some();
        let user = self.apply_update(id, update, true).await?;
        if resets_password {
            self.store.revoke_sessions(id, None).await?;
        }
        Ok(user)
    }

    pub async fn admin_delete(&self, who: &Identity, id: Uuid) -> Result<(), AuthError> {
        require_service(who)?;
        if self.store.delete_user(id).await? {
            self.known().remove(&id);
            Ok(())
        } else {
            Err(AuthError::NoSuchUser)
        }
    }

    // ---- Internals -----------------------------------------------------------------------

    async fn apply_update(
        &self,
        id: Uuid,
        update: UserUpdate,
        email_confirmed: bool,
    ) -> Result<UserRow, AuthError> {
        let email = update.email.as_deref().map(valid_email).transpose()?;
        let hash = match &update.password {
            Some(p) => Some(self.hash(p).await?),
            None => None,
        };
        let app = object_or_none(update.app_metadata, "app_metadata")?;
        let meta = object_or_none(update.user_metadata, "data")?;
        self.store
            .update_user(
                id,
                &UserChanges {
                    email: email.as_deref(),
                    password_hash: hash.as_deref(),
                    app_metadata: app.as_ref(),
                    user_metadata: meta.as_ref(),
                    email_confirmed,
                },
            )
            .await
            .map_err(email_conflict)?
            .ok_or(AuthError::NoSuchUser)
    }

    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        self.hashing.passwords().check_policy(password)?;
        let password = password.to_string();
        Ok(self
            .hashing
            .run(move |p, memory| p.hash(&password, memory))
            .await??)
    }

    fn require_mail(&self) -> Result<(), AuthError> {
        if self.runtime.mailer.enabled() {
            Ok(())
        } else {
            Err(AuthError::MailNotConfigured)
        }
    }

    /// Make a token of `kind` for `user` and queue its mail to `to`; the sending task stores
    /// the token (see `auth::mail`), so this costs the request no database work.
    async fn send_token(
        &self,
        user: &UserRow,
        kind: TokenKind,
        to: &str,
        redirect_to: Option<&str>,
    ) -> Result<(), AuthError> {
        if !self.runtime.mailer.enabled() {
            return Ok(());
        }
        let secrets = EmailSecrets::new();
        let expires_at = Utc::now()
            + chrono::Duration::from_std(self.accounts.email_token_ttl)
                .unwrap_or_else(|_| chrono::Duration::minutes(15));
        let token = TokenToStore {
            link_hash: link_hash(&secrets.link),
            code_hash: code_hash(to, &secrets.code),
            kind: kind.as_str(),
            user_id: user.id,
            email: to.to_string(),
            expires_at,
        };
        let redirect = self.redirect_target(redirect_to);
        let link = format!(
            "{}/auth/v1/verify?token={}&type={}&redirect_to={}",
            self.runtime.external_url,
            secrets.link,
            kind.as_str(),
            form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
        );
        let mail_kind = match kind {
            TokenKind::Signup => MailKind::Confirmation,
            TokenKind::Recovery => MailKind::Recovery,
            TokenKind::MagicLink => MailKind::MagicLink,
            TokenKind::EmailChange => MailKind::EmailChange,
        };
        self.runtime.mailer.send(Mail {
            kind: mail_kind,
            to: to.to_string(),
            token: Some(token),
            values: vec![
                ("ConfirmationURL", link),
                ("Token", secrets.code),
                ("TokenHash", secrets.link),
                (
                    "Email",
                    user.email.clone().unwrap_or_else(|| to.to_string()),
                ),
                ("NewEmail", to.to_string()),
                (
                    "SiteURL",
                    self.accounts
                        .site_url
                        .clone()
                        .unwrap_or_else(|| self.runtime.external_url.clone()),
                ),
            ],
        });
        Ok(())
    }

    async fn start_session(&self, user: UserRow) -> Result<IssuedSession, AuthError> {
        let session_id = Uuid::new_v4();
        let refresh = new_refresh_token();
        let expires_at = Utc::now()
            + chrono::Duration::from_std(self.session_lifetime)
                .unwrap_or_else(|_| chrono::Duration::days(30));
        self.store
            .create_session(
                user.id,
                session_id,
                &hash_refresh_token(&refresh),
                expires_at,
            )
            .await?;
        self.issue(user, session_id, refresh)
    }

    fn issue(
        &self,
        user: UserRow,
        session_id: Uuid,
        refresh_token: String,
    ) -> Result<IssuedSession, AuthError> {
        let identity = Identity::user(
            &user.id.to_string(),
            json!({
                "session_id": session_id.to_string(),
                "email": user.email,
                "is_anonymous": user.is_anonymous,
                "app_metadata": user.app_metadata,
                "user_metadata": user.user_metadata,
            }),
        );
        let access_token = self.tokens.sign(&identity, self.access_ttl)?;
        let expires_in = self.access_ttl.as_secs();
        Ok(IssuedSession {
            access_token,
            expires_in,
            expires_at: Utc::now().timestamp() + expires_in as i64,
            refresh_token,
            user,
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.known_external
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The session id claim of a signed-in caller.
fn session_id(who: &Identity) -> Option<Uuid> {
    who.claims
        .get("session_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find(['/', '?', '#']) {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// What sign-up answers for an address that already has an account (confirmation on):
/// shaped like a new, unconfirmed user, with nothing of the real account.
fn look_alike_user(email: &str, user_metadata: Value) -> UserRow {
    let now = Utc::now();
    UserRow {
        id: Uuid::new_v4(),
        email: Some(email.to_string()),
        is_anonymous: false,
        app_metadata: json!({}),
        user_metadata,
        created_at: now,
        updated_at: now,
        last_sign_in_at: None,
        email_confirmed_at: None,
    }
}

fn require_service(who: &Identity) -> Result<(), AuthError> {
    match who.role {
        Role::Service => Ok(()),
        Role::Anon => Err(AuthError::NotSignedIn),
        Role::Authenticated => Err(AuthError::ServiceKeyRequired),
    }
}

/// The signed-in user's id; anonymous and service callers have none.
fn user_id(who: &Identity) -> Result<Uuid, AuthError> {
    if who.role != Role::Authenticated {
        return Err(AuthError::NotSignedIn);
    }
    who.subject()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(AuthError::NotSignedIn)
}

/// A plausible email, trimmed and lower-cased (emails are unique regardless of case).
fn valid_email(email: &str) -> Result<String, AuthError> {
    let email = email.trim();
    let invalid = || AuthError::InvalidField("email is not a valid address".into());
    if email.len() < 3
        || email.len() > 254
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid());
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email.to_lowercase())
        }
        _ => Err(invalid()),
    }
}

fn object_or_none(value: Option<Value>, field: &str) -> Result<Option<Value>, AuthError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(AuthError::InvalidField(format!(
            "{field} must be a JSON object"
        ))),
    }
}

fn email_conflict(e: StoreError) -> AuthError {
    if is_unique_violation(&e) {
        AuthError::EmailTaken
    } else {
        AuthError::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_cut_at_the_path() {
        assert_eq!(
            origin_of("https://app.example.com/cb?x=1"),
            "https://app.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:3000"), "http://127.0.0.1:3000");
        assert_eq!(origin_of("http://h:1#frag"), "http://h:1");
    }

    #[test]
    fn emails_are_checked_and_normalized() {
        assert_eq!(valid_email(" A@B.io ").unwrap(), "a@b.io");
        for bad in ["", "ab", "@b.io", "a@", "a b@c.io", "a@b@c", "a\n@b.io"] {
            assert!(valid_email(bad).is_err(), "{bad:?} accepted");
        }
    }
}
