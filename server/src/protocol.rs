//! Wire types shared by every client-facing surface: the error body and its stable codes.
//!
//! HTTP bodies, WebSocket frames and the TypeScript SDK all use the codes below, so a code,
//! once published, never changes meaning. `docs/protocol.md` mirrors this file; a test keeps
//! the two in step.

use serde::{Deserialize, Serialize};

pub mod auth;
pub mod realtime;
mod sqlstate;

/// Every error a client can see, by stable kebab-case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The request is malformed (query string, headers, or body shape).
    BadRequest,
    /// The body is not valid JSON.
    InvalidJson,
    /// A required field is missing or has the wrong type.
    InvalidField,
    /// No route, table, column or row by that name.
    NotFound,
    /// Missing, malformed, forged or expired credentials.
    Unauthorized,
    /// The identity is valid but may not do this.
    Forbidden,
    /// The write conflicts with existing data (unique or foreign key).
    Conflict,
    /// The body or frame is larger than the configured limit.
    PayloadTooLarge,
    /// Too many attempts; retry after the time in `Retry-After`.
    RateLimited,
    /// The database cannot be reached right now; retry later.
    DatabaseUnavailable,
    /// The server is starting or its schema is not current yet.
    NotReady,
    /// The query took longer than the configured statement timeout.
    Timeout,
    /// Something failed inside the server; the details are in the server log.
    Internal,
    /// The response cannot be given in the requested form (e.g. a single object was asked for and 0 or 2+ rows matched).
    NotAcceptable,
    /// No table or view by that name in the exposed schemas.
    UnknownTable,
    /// No column by that name on the table.
    UnknownColumn,
    /// No function by that name with those argument names in the exposed schemas.
    UnknownFunction,
    /// No foreign key relates the two tables of an embedding.
    UnknownRelationship,
    /// More than one foreign key relates the two tables; name one with `!hint`.
    AmbiguousRelationship,
    /// A value cannot be converted to the column's or argument's type.
    InvalidValue,
    /// The write breaks a not-null or check constraint.
    ConstraintViolation,
    /// PATCH or DELETE without any filter, which the server is configured to refuse.
    FilterRequired,
    /// The Idempotency-Key was already used for a different request.
    IdempotencyKeyReused,
    /// The route exists but not for this HTTP method.
    MethodNotAllowed,
    /// The cursor is older than the retained change history: resync from a snapshot.
    ResyncRequired,
    /// Sign-in refused: wrong email or password, or a spent/revoked refresh token.
    InvalidCredentials,
    /// The access token of a live connection expired; deliveries stopped until `auth`.
    TokenExpired,
    /// A configured limit was reached (connections, subscriptions, snapshot rows).
    LimitExceeded,
    /// Password sign-in refused until the address is confirmed (email confirmation is on).
    EmailNotConfirmed,
    /// An emailed link or code is wrong, expired or already used.
    VerificationFailed,
    /// This way of signing up (email, or anonymous) is turned off on the server.
    SignupDisabled,
    /// The requested offset is past the last row (with `Prefer: count`), as PostgREST's 416.
    RangeNotSatisfiable,
}

impl ErrorCode {
    /// Every code, in declaration order (used to check `docs/protocol.md`).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidField,
        ErrorCode::NotFound,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::NotReady,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::NotAcceptable,
        ErrorCode::UnknownTable,
        ErrorCode::UnknownColumn,
        ErrorCode::UnknownFunction,
        ErrorCode::UnknownRelationship,
        ErrorCode::AmbiguousRelationship,
        ErrorCode::InvalidValue,
        ErrorCode::ConstraintViolation,
        ErrorCode::FilterRequired,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ResyncRequired,
        ErrorCode::InvalidCredentials,
        ErrorCode::TokenExpired,
        ErrorCode::LimitExceeded,
        ErrorCode::EmailNotConfirmed,
        ErrorCode::VerificationFailed,
        ErrorCode::SignupDisabled,
        ErrorCode::RangeNotSatisfiable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::InvalidJson => "invalid-json",
            ErrorCode::InvalidField => "invalid-field",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload-too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::DatabaseUnavailable => "database-unavailable",
            ErrorCode::NotReady => "not-ready",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::NotAcceptable => "not-acceptable",
            ErrorCode::UnknownTable => "unknown-table",
            ErrorCode::UnknownColumn => "unknown-column",
            ErrorCode::UnknownFunction => "unknown-function",
            ErrorCode::UnknownRelationship => "unknown-relationship",
            ErrorCode::AmbiguousRelationship => "ambiguous-relationship",
            ErrorCode::InvalidValue => "invalid-value",
            ErrorCode::ConstraintViolation => "constraint-violation",
            ErrorCode::FilterRequired => "filter-required",
            ErrorCode::IdempotencyKeyReused => "idempotency-key-reused",
            ErrorCode::MethodNotAllowed => "method-not-allowed",
            ErrorCode::ResyncRequired => "resync-required",
            ErrorCode::InvalidCredentials => "invalid-credentials",
            ErrorCode::TokenExpired => "token-expired",
            ErrorCode::LimitExceeded => "limit-exceeded",
            ErrorCode::EmailNotConfirmed => "email-not-confirmed",
            ErrorCode::VerificationFailed => "verification-failed",
            ErrorCode::SignupDisabled => "signup-disabled",
            ErrorCode::RangeNotSatisfiable => "range-not-satisfiable",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidJson | ErrorCode::InvalidField => 400,
            ErrorCode::InvalidCredentials => 400,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::LimitExceeded => 429,
            ErrorCode::Internal => 500,
            ErrorCode::DatabaseUnavailable | ErrorCode::NotReady => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::NotAcceptable => 406,
            ErrorCode::UnknownTable => 404,
            // PostgREST's statuses, which postgrest-js and apps branch on.
            ErrorCode::UnknownColumn => 400,
            ErrorCode::UnknownFunction => 404,
            ErrorCode::UnknownRelationship => 400,
            ErrorCode::AmbiguousRelationship => 300,
            ErrorCode::InvalidValue => 400,
            ErrorCode::ConstraintViolation => 400,
            ErrorCode::FilterRequired => 400,
            ErrorCode::IdempotencyKeyReused => 422,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::ResyncRequired => 410,
            ErrorCode::EmailNotConfirmed => 400,
            ErrorCode::VerificationFailed => 403,
            ErrorCode::SignupDisabled => 403,
            ErrorCode::RangeNotSatisfiable => 416,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of `GET /ready` (and `GET /health`'s `status`), for load balancers and
/// operators. Mirrored in docs/operations.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyBody {
    /// `ready` or `not-ready`.
    pub status: String,
    /// `ok`, `unreachable`, or `starting`.
    pub database: String,
    /// `current`, `pending`, `failed` (an edited or broken migration: see the log), or
    /// `unknown`.
    pub migrations: String,
    /// `loaded` or `loading`.
    pub schema_cache: String,
    /// `not-ready` when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// The one client-facing error. Its JSON form is the HTTP error body and the payload of a
/// WebSocket `error` frame. `message` is written for the developer using the API; it never
/// carries database error text or secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Seconds a client should wait before retrying (rate limits, start-up).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: None,
            hint: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn internal() -> Self {
        ApiError::new(
            ErrorCode::Internal,
            "internal error; the server log has the details",
        )
    }

    pub fn database_unavailable() -> Self {
        ApiError::new(
            ErrorCode::DatabaseUnavailable,
            "the database is unavailable; retry shortly",
        )
        .with_retry_after(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).expect("serializes");
            assert_eq!(json, serde_json::Value::String(code.as_str().to_string()));
        }
    }

    #[test]
    fn protocol_doc_lists_every_error_code() {
        let doc = include_str!("../../docs/protocol.md");
        for code in ErrorCode::ALL {
            assert!(
                doc.contains(&format!("`{}`", code.as_str())),
                "docs/protocol.md does not document error code `{}`",
                code.as_str()
            );
        }
    }
}
