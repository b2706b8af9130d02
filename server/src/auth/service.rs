//! The auth flows: sign-up, password and anonymous sign-in, refresh-token rotation, sign-out,
//! the current user, the admin operations, and first-sight provisioning of users known
//! through an external provider. HTTP lives in `http::auth`, SQL in `store::users`.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    limiter::SignInLimiter,
    password::{PasswordError, Passwords},
    refresh::{hash_refresh_token, new_refresh_token, MAX_REFRESH_TOKEN_LEN},
    token::{TokenError, TokenKeys},
    Identity, Role,
};
use crate::{
    config::AuthConfig,
    protocol::{ApiError, ErrorCode},
    store::{
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
    #[error("too many failed sign-ins")]
    RateLimited(Duration),
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
            AuthError::RateLimited(wait) => ApiError::new(
                ErrorCode::RateLimited,
                "too many failed sign-ins; retry later",
            )
            .with_retry_after(wait.as_secs().max(1)),
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

/// The auth service: shared by every request through the HTTP state.
#[derive(Debug)]
pub struct Auth {
    store: Store,
    tokens: Arc<TokenKeys>,
    passwords: Arc<Passwords>,
    limiter: SignInLimiter,
    access_ttl: Duration,
    session_lifetime: Duration,
    known_external: Mutex<HashSet<Uuid>>,
}

impl Auth {
    pub fn new(
        store: Store,
        tokens: Arc<TokenKeys>,
        config: &AuthConfig,
    ) -> Result<Auth, PasswordError> {
        Ok(Auth {
            store,
            tokens,
            passwords: Arc::new(Passwords::new(
                config.hash_params,
                config.password_min_length,
            )?),
            limiter: SignInLimiter::new(config.signin_limits),
            access_ttl: config.access_token_ttl,
            session_lifetime: config.session_lifetime,
            known_external: Mutex::new(HashSet::new()),
        })
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.tokens
    }

    /// Sign up with email and password; signs the new user in.
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        user_metadata: Option<Value>,
    ) -> Result<IssuedSession, AuthError> {
        let email = valid_email(email)?;
        let metadata = object_or_none(user_metadata, "data")?;
        let hash = self.hash(password).await?;
        let user = self
            .store
            .create_user(&NewUser {
                email: Some(&email),
                password_hash: Some(&hash),
                user_metadata: metadata.as_ref(),
                ..Default::default()
            })
            .await
            .map_err(email_conflict)?;
        self.start_session(user).await
    }

    /// Anonymous sign-in: a real user without email or password, upgradable later.
    pub async fn sign_in_anonymous(
        &self,
        user_metadata: Option<Value>,
    ) -> Result<IssuedSession, AuthError> {
        let metadata = object_or_none(user_metadata, "data")?;
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
    /// work; failures count against the account and the client address.
    pub async fn sign_in_password(
        &self,
        email: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<IssuedSession, AuthError> {
        let email = email.trim();
        let now = Instant::now();
        self.limiter
            .check(email, client, now)
            .map_err(AuthError::RateLimited)?;
        let found = if email.len() <= 254 {
            self.store.user_by_email(email).await?
        } else {
            None
        };
        let stored = found.as_ref().and_then(|(_, hash)| hash.clone());
        let passwords = self.passwords.clone();
        let password = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || passwords.verify(&password, stored.as_deref()))
                .await
                .map_err(|_| AuthError::Blocking)?;
        match found {
            Some((user, _)) if ok => {
                self.limiter.record_success(email);
                self.start_session(user).await
            }
            _ => {
                self.limiter.record_failure(email, client, now);
                Err(AuthError::InvalidCredentials)
            }
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
        let session = who
            .claims
            .get("session_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
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
    /// ends up with both an email and a password is upgraded to a regular one.
    pub async fn update_current_user(
        &self,
        who: &Identity,
        update: UserUpdate,
    ) -> Result<UserRow, AuthError> {
        let id = user_id(who)?;
        if update.app_metadata.is_some() {
            return Err(AuthError::InvalidField(
                "app_metadata can only be set with the service key".into(),
            ));
        }
        self.apply_update(id, update).await
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
        let user = self.apply_update(id, update).await?;
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

    async fn apply_update(&self, id: Uuid, update: UserUpdate) -> Result<UserRow, AuthError> {
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
                },
            )
            .await
            .map_err(email_conflict)?
            .ok_or(AuthError::NoSuchUser)
    }

    async fn hash(&self, password: &str) -> Result<String, AuthError> {
        self.passwords.check_policy(password)?;
        let passwords = self.passwords.clone();
        let password = password.to_string();
        Ok(
            tokio::task::spawn_blocking(move || passwords.hash(&password))
                .await
                .map_err(|_| AuthError::Blocking)??,
        )
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
    fn emails_are_checked_and_normalized() {
        assert_eq!(valid_email(" A@B.io ").unwrap(), "a@b.io");
        for bad in ["", "ab", "@b.io", "a@", "a b@c.io", "a@b@c", "a\n@b.io"] {
            assert!(valid_email(bad).is_err(), "{bad:?} accepted");
        }
    }
}
