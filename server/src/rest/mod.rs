//! The REST data API: PostgREST's URL grammar over the tables, views and functions of the
//! exposed schemas, executed as the caller so that row-level security decides.
//!
//! Layers: [`query`] parses the request into a typed AST (no SQL, no catalog), [`schema`]
//! is the catalog snapshot names are resolved against (and the reloader that keeps it
//! current), [`plan`] validates the AST into a plan whose identifiers all come from that
//! snapshot (the plan types are `store::rest_plan`'s plain data), `store::rest_query` turns
//! a plan into SQL, and [`response`] shapes its plain results into responses. [`Service`]
//! is the entry point; `http::rest` only translates HTTP to it.

pub mod plan;
pub mod query;
pub mod response;
pub mod schema;
pub mod service;

pub use service::Service;

use crate::{
    config::RestConfig,
    protocol::{ApiError, ErrorCode},
};

/// What the REST handlers share: the settings and the schema cache.
#[derive(Debug, Clone)]
pub struct RestState {
    pub config: RestConfig,
    pub schema: schema::SchemaHandle,
}

/// Why a REST request was refused before (or instead of) running SQL.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnknownTable(String),
    #[error("{0}")]
    UnknownColumn(String),
    #[error("{0}")]
    UnknownFunction(String),
    #[error("{0}")]
    UnknownRelationship(String),
    #[error("{0}")]
    AmbiguousRelationship(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("PATCH and DELETE need at least one filter")]
    FilterRequired,
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the schema cache is not loaded yet")]
    NotReady,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0} ({1})")]
    WithHint(Box<RestError>, String),
    /// `details` for the client, e.g. the candidate relationships of an ambiguous embedding.
    #[error("{0}")]
    WithDetails(Box<RestError>, String),
    /// An offset past the last row of a counted read (PostgREST's 416).
    #[error("{0}")]
    RangeNotSatisfiable(String, u64),
}

impl RestError {
    /// Attach a hint telling the developer how to fix the request.
    pub fn hint(self, hint: impl Into<String>) -> RestError {
        RestError::WithHint(Box::new(self), hint.into())
    }

    /// Attach details (which the client may parse, e.g. the candidates of an ambiguity).
    pub fn details(self, details: impl Into<String>) -> RestError {
        RestError::WithDetails(Box::new(self), details.into())
    }
}

impl From<RestError> for ApiError {
    fn from(e: RestError) -> ApiError {
        let (code, message) = match e {
            RestError::WithHint(inner, hint) => {
                return ApiError::from(*inner).with_hint(hint);
            }
            RestError::WithDetails(inner, details) => {
                return ApiError::from(*inner).with_details(details);
            }
            RestError::RangeNotSatisfiable(m, _) => (ErrorCode::RangeNotSatisfiable, m),
            RestError::Syntax(m) => (ErrorCode::BadRequest, m),
            RestError::NotAcceptable(m) => (ErrorCode::NotAcceptable, m),
            RestError::UnknownTable(m) => (ErrorCode::UnknownTable, m),
            RestError::UnknownColumn(m) => (ErrorCode::UnknownColumn, m),
            RestError::UnknownFunction(m) => (ErrorCode::UnknownFunction, m),
            RestError::UnknownRelationship(m) => (ErrorCode::UnknownRelationship, m),
            RestError::AmbiguousRelationship(m) => (ErrorCode::AmbiguousRelationship, m),
            RestError::InvalidBody(m) => (ErrorCode::InvalidField, m),
            RestError::InvalidJson(m) => (ErrorCode::InvalidJson, m),
            e @ RestError::FilterRequired => {
                return ApiError::new(ErrorCode::FilterRequired, e.to_string()).with_hint(
                    "add a filter such as `?id=eq.1`; to touch every row, set ROWCAST_REST_ALLOW_UNFILTERED_WRITES",
                )
            }
            e @ RestError::TooLarge(_) => (ErrorCode::PayloadTooLarge, e.to_string()),
            e @ RestError::NotReady => {
                return ApiError::new(ErrorCode::NotReady, e.to_string()).with_retry_after(1)
            }
            RestError::Forbidden(m) => (ErrorCode::Forbidden, m),
            RestError::IdempotencyKeyReused(m) => (ErrorCode::IdempotencyKeyReused, m),
            RestError::MethodNotAllowed(m) => (ErrorCode::MethodNotAllowed, m),
        };
        ApiError::new(code, message)
    }
}

/// Map a failed statement to the client-facing error by SQLSTATE. Database error text never
/// reaches the client (it can name hidden columns, constraints or values); the only
/// exception is an app function's own `raise exception` message, which its author wrote
/// for clients.
pub fn api_error_from_store(e: crate::store::StoreError) -> ApiError {
    let Some(state) = e.sqlstate().map(str::to_string) else {
        return e.into();
    };
    let api = |code, msg: &str| ApiError::new(code, msg);
    match state.as_str() {
        "23505" => api(ErrorCode::Conflict, "a row with the same unique key already exists"),
        "23503" => api(
            ErrorCode::Conflict,
            "the write breaks a foreign key (the referenced row is missing, or rows still refer to this one)",
        ),
        "23502" => api(ErrorCode::ConstraintViolation, "a required column is null"),
        "23514" | "23P01" => api(ErrorCode::ConstraintViolation, "the row breaks a check constraint"),
        "42501" => api(
            ErrorCode::Forbidden,
            "the row-level security policy or table privileges do not allow this",
        ),
        "42883" | "42804" | "42846" | "42725" => api(
            ErrorCode::InvalidValue,
            "a value or operator does not fit the column's type",
        ),
        "P0001" => {
            let message = e.db_message().unwrap_or_else(|| "the function raised an error".into());
            api(ErrorCode::BadRequest, &message)
        }
        "42P10" => api(
            ErrorCode::BadRequest,
            "the on_conflict columns have no unique index or constraint",
        ),
        "428C9" => api(
            ErrorCode::ConstraintViolation,
            "a generated column cannot be written",
        ),
        "42P01" => api(ErrorCode::UnknownTable, "the table no longer exists"),
        // An unknown text search configuration (`fts(klingon)`), bound as a `regconfig`.
        "42704" | "42602" => api(
            ErrorCode::InvalidValue,
            "no such text search configuration (language) or type",
        ),
        "42703" => api(ErrorCode::UnknownColumn, "the column no longer exists"),
        "0A000" | "55000" => api(
            ErrorCode::BadRequest,
            "this table or view does not support this operation",
        ),
        "54001" => api(ErrorCode::BadRequest, "the request is too complex"),
        "40001" | "40P01" => api(
            ErrorCode::Conflict,
            "the transaction conflicted with a concurrent one; retry",
        ),
        s if s.starts_with("22") => api(
            ErrorCode::InvalidValue,
            "a value cannot be converted to the column's or argument's type",
        ),
        _ => e.into(),
    }
}
