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
