//! The one map from storage failures to client-facing errors: SQLSTATE classes and codes
//! (tokio-postgres's `SqlState` constants) to stable error codes and fixed messages.
//! Database error text never reaches a client, with one exception: the message of an app
//! function's own `raise exception` (P0001), which the app wrote for its clients.

use tokio_postgres::error::SqlState;

use super::{ApiError, ErrorCode};
use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            return ApiError::database_unavailable();
        }
        let Some(code) = e.code().cloned() else {
            tracing::error!(error = %e, "storage error");
            return ApiError::internal();
        };
        let api = |code, msg: &str| ApiError::new(code, msg);
        match code {
            c if c == SqlState::UNIQUE_VIOLATION => api(
                ErrorCode::Conflict,
                "a row with the same unique key already exists",
            ),
            c if c == SqlState::FOREIGN_KEY_VIOLATION => api(
                ErrorCode::Conflict,
                "the write breaks a foreign key (the referenced row is missing, or rows still refer to this one)",
            ),
            c if c == SqlState::NOT_NULL_VIOLATION => {
                api(ErrorCode::ConstraintViolation, "a required column is null")
            }
            c if c == SqlState::CHECK_VIOLATION || c == SqlState::EXCLUSION_VIOLATION => api(
                ErrorCode::ConstraintViolation,
                "the row breaks a check constraint",
            ),
            // Includes row-level security denials.
            c if c == SqlState::INSUFFICIENT_PRIVILEGE => api(
                ErrorCode::Forbidden,
                "the row-level security policy or table privileges do not allow this",
            ),
            c if c == SqlState::UNDEFINED_FUNCTION
                || c == SqlState::DATATYPE_MISMATCH
                || c == SqlState::CANNOT_COERCE
                || c == SqlState::AMBIGUOUS_FUNCTION =>
            {
                api(
                    ErrorCode::InvalidValue,
                    "a value or operator does not fit the column's type",
                )
            }
            c if c == SqlState::RAISE_EXCEPTION => {
                let message = e
                    .db_message()
                    .unwrap_or_else(|| "the function raised an error".into());
                api(ErrorCode::BadRequest, &message)
            }
            c if c == SqlState::INVALID_COLUMN_REFERENCE => api(
                ErrorCode::BadRequest,
                "the on_conflict columns have no unique index or constraint",
            ),
            c if c == SqlState::GENERATED_ALWAYS => api(
                ErrorCode::ConstraintViolation,
                "a generated column cannot be written",
            ),
            c if c == SqlState::UNDEFINED_TABLE => {
                api(ErrorCode::UnknownTable, "the table no longer exists")
            }
            // An unknown text search configuration (`fts(klingon)`), bound as a `regconfig`.
            c if c == SqlState::UNDEFINED_OBJECT || c == SqlState::INVALID_NAME => api(
                ErrorCode::InvalidValue,
                "no such text search configuration (language) or type",
            ),
            c if c == SqlState::UNDEFINED_COLUMN => {
                api(ErrorCode::UnknownColumn, "the column no longer exists")
            }
            c if c == SqlState::FEATURE_NOT_SUPPORTED
                || c == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE =>
            {
                api(
                    ErrorCode::BadRequest,
                    "this table or view does not support this operation",
                )
            }
            c if c == SqlState::STATEMENT_TOO_COMPLEX => {
                api(ErrorCode::BadRequest, "the request is too complex")
            }
            c if c == SqlState::T_R_SERIALIZATION_FAILURE
                || c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                api(
                    ErrorCode::Conflict,
                    "the transaction conflicted with a concurrent one; retry",
                )
            }
            // statement_timeout fired.
            c if c == SqlState::QUERY_CANCELED => {
                api(ErrorCode::Timeout, "the query took too long")
            }
            c if c == SqlState::ADMIN_SHUTDOWN
                || c == SqlState::CRASH_SHUTDOWN
                || c == SqlState::CANNOT_CONNECT_NOW =>
            {
                ApiError::database_unavailable()
            }
            // Class 22, data exception: a value that does not convert.
            c if c.code().starts_with("22") => api(
                ErrorCode::InvalidValue,
                "a value cannot be converted to the column's or argument's type",
            ),
            _ => {
                tracing::error!(error = %e, "storage error");
                ApiError::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants spell the SQLSTATEs the map was written against.
    #[test]
    fn constants_are_the_documented_codes() {
        let pairs = [
            (SqlState::UNIQUE_VIOLATION, "23505"),
            (SqlState::FOREIGN_KEY_VIOLATION, "23503"),
            (SqlState::NOT_NULL_VIOLATION, "23502"),
            (SqlState::CHECK_VIOLATION, "23514"),
            (SqlState::EXCLUSION_VIOLATION, "23P01"),
            (SqlState::INSUFFICIENT_PRIVILEGE, "42501"),
            (SqlState::UNDEFINED_FUNCTION, "42883"),
            (SqlState::DATATYPE_MISMATCH, "42804"),
            (SqlState::CANNOT_COERCE, "42846"),
            (SqlState::AMBIGUOUS_FUNCTION, "42725"),
            (SqlState::RAISE_EXCEPTION, "P0001"),
            (SqlState::INVALID_COLUMN_REFERENCE, "42P10"),
            (SqlState::GENERATED_ALWAYS, "428C9"),
            (SqlState::UNDEFINED_TABLE, "42P01"),
            (SqlState::UNDEFINED_OBJECT, "42704"),
            (SqlState::INVALID_NAME, "42602"),
            (SqlState::UNDEFINED_COLUMN, "42703"),
            (SqlState::FEATURE_NOT_SUPPORTED, "0A000"),
            (SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, "55000"),
            (SqlState::STATEMENT_TOO_COMPLEX, "54001"),
            (SqlState::T_R_SERIALIZATION_FAILURE, "40001"),
            (SqlState::T_R_DEADLOCK_DETECTED, "40P01"),
            (SqlState::QUERY_CANCELED, "57014"),
            (SqlState::ADMIN_SHUTDOWN, "57P01"),
            (SqlState::CRASH_SHUTDOWN, "57P02"),
            (SqlState::CANNOT_CONNECT_NOW, "57P03"),
        ];
        for (state, code) in pairs {
            assert_eq!(state.code(), code);
        }
    }

    #[test]
    fn failures_without_a_sqlstate_are_internal_or_unavailable() {
        let e: ApiError = StoreError::Decode("x".into()).into();
        assert_eq!(e.code, ErrorCode::Internal);
        let e: ApiError = StoreError::Unavailable("down".into()).into();
        assert_eq!(e.code, ErrorCode::DatabaseUnavailable);
    }
}
