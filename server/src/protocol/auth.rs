//! Wire types of `/auth/v1`: request bodies and the session and user shapes, close to
//! supabase/gotrue's so that its SDK patterns carry over.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /auth/v1/signup`. Without email and password it is an anonymous sign-in. Unknown
/// fields are ignored (gotrue clients send extras such as `gotrue_meta_security`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SignUpRequest {
    pub email: Option<String>,
    pub password: Option<String>,
    /// Initial `user_metadata`.
    pub data: Option<Value>,
}

/// `POST /auth/v1/token?grant_type=password`.
#[derive(Debug, Clone, Deserialize)]
pub struct PasswordGrant {
    pub email: String,
    pub password: String,
}

/// `POST /auth/v1/token?grant_type=refresh_token`.
#[derive(Debug, Clone, Deserialize)]
pub struct RefreshGrant {
    pub refresh_token: String,
}

/// `PUT /auth/v1/user`. Unknown fields are ignored: supabase-js sends `code_challenge`,
/// `code_challenge_method` (often `null`) and `nonce` along with the attributes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UpdateUserRequest {
    pub email: Option<String>,
    pub password: Option<String>,
    /// Only accepted to be refused clearly: app metadata is set with the service key.
    pub app_metadata: Option<Value>,
    /// New `user_metadata`.
    pub data: Option<Value>,
}

/// `POST /auth/v1/admin/users` and `PUT /auth/v1/admin/users/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUserRequest {
    pub email: Option<String>,
    pub password: Option<String>,
    pub app_metadata: Option<Value>,
    pub user_metadata: Option<Value>,
}

/// A user as clients see it (never the password hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub aud: String,
    pub role: String,
    pub email: Option<String>,
    pub is_anonymous: bool,
    pub app_metadata: Value,
    pub user_metadata: Value,
    pub created_at: String,
    pub updated_at: String,
    pub last_sign_in_at: Option<String>,
    /// When the address was confirmed (by mail, or by the service); `null` until then.
    pub email_confirmed_at: Option<String>,
    /// gotrue's name for the same moment.
    pub confirmed_at: Option<String>,
    /// An email change waiting for confirmation of the new address (only in the answer to
    /// `PUT /auth/v1/user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_email: Option<String>,
}

/// A signed-in session: what sign-up, sign-in and refresh return.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds the access token is valid for.
    pub expires_in: u64,
    /// When the access token expires, in Unix seconds.
    pub expires_at: i64,
    pub refresh_token: String,
    pub user: User,
}

/// `POST /auth/v1/recover`.
#[derive(Debug, Clone, Deserialize)]
pub struct RecoverRequest {
    pub email: String,
}

/// `POST /auth/v1/resend`: mail a sign-up confirmation again (`type: signup`).
#[derive(Debug, Clone, Deserialize)]
pub struct ResendRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub email: String,
}

/// `POST /auth/v1/otp`: mail a sign-in link and code.
#[derive(Debug, Clone, Deserialize)]
pub struct OtpRequest {
    pub email: String,
    /// Create a user for an unknown address (default true, as gotrue).
    pub create_user: Option<bool>,
    /// `user_metadata` of a user created this way.
    pub data: Option<Value>,
}

/// `POST /auth/v1/verify`: either `token_hash` (the link's secret) or `email` and `token`
/// (the six-digit code), with the `type` the mail was for.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub token: Option<String>,
    pub token_hash: Option<String>,
    pub email: Option<String>,
    /// Where a link-style client should continue (echoed in `GET /verify` redirects).
    pub redirect_to: Option<String>,
}

/// The body of `/recover` and `/otp` answers: always empty, whether or not a mail went out.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {}

/// `GET /auth/v1/admin/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<User>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}
