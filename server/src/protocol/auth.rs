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

/// `PUT /auth/v1/user`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub email: Option<String>,
    pub password: Option<String>,
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

/// `GET /auth/v1/admin/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<User>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}
