//! Request bodies: a JSON extractor whose failures are stable API errors (`invalid-json`,
//! `invalid-field`, `payload-too-large`) instead of axum's plain-text rejections. The size
//! limit is the router-wide `DefaultBodyLimit` set from `ROWCAST_MAX_BODY_BYTES`.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use serde::de::DeserializeOwned;

use super::HttpError;
use crate::protocol::{ApiError, ErrorCode};

/// A JSON request body deserialized into `T`.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HttpError(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the request body is larger than the server accepts",
                ))
            } else {
                HttpError(ApiError::new(
                    ErrorCode::BadRequest,
                    "the request body could not be read",
                ))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Deserialize a JSON body, telling malformed JSON from a wrong shape.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HttpError(ApiError::new(
            ErrorCode::InvalidJson,
            "a JSON body is required",
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| HttpError(json_error(&e)))
}

/// Deserialize an already-parsed JSON value into `T`.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, HttpError> {
    serde_json::from_value(value).map_err(|e| HttpError(json_error(&e)))
}

fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    // serde's messages can quote the offending value (a password, say); only the ones that
    // name a field are passed on, the rest are reduced to a position.
    let text = e.to_string();
    let named = text.starts_with("missing field") || text.starts_with("unknown field");
    let details = if named {
        text.split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string()
    } else {
        format!("at line {} column {}", e.line(), e.column())
    };
    match e.classify() {
        Category::Data => ApiError::new(
            ErrorCode::InvalidField,
            "a field is missing or has the wrong type",
        )
        .with_details(details),
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::new(ErrorCode::InvalidJson, "the body is not valid JSON")
                .with_details(details)
        }
    }
}
