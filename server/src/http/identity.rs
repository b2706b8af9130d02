//! Who is calling: the `Authorization: Bearer` token turned into a verified [`Identity`]
//! for handlers, as an axum extractor.

use axum::{extract::FromRequestParts, http::request::Parts};

use super::{HttpError, HttpState};
use crate::{
    auth::Identity,
    protocol::{ApiError, ErrorCode},
};

/// The verified identity of the request: anonymous without a token, 401 with a bad one.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

impl FromRequestParts<HttpState> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &HttpState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(Caller(Identity::anonymous()));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        let identity = state.tokens.verify(token).map_err(|_| unauthorized())?;
        // A user known through an external provider gets their row on first sight, so app
        // tables can reference rowcast.users(id) for them too.
        state
            .auth
            .ensure_external_user(&identity)
            .await
            .map_err(|e| HttpError(e.into()))?;
        Ok(Caller(identity))
    }
}

fn unauthorized() -> HttpError {
    HttpError(ApiError::new(
        ErrorCode::Unauthorized,
        "invalid or expired token",
    ))
}
