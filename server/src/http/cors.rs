//! CORS: which browser origins may call REST, auth and the WebSocket
//! (`ROWCAST_CORS_ALLOWED_ORIGINS`). Preflights are answered here, before routing; the
//! WebSocket upgrade, which browsers do not subject to CORS, is checked against the same
//! origins so that a page on another site cannot open a socket with a user's token.
//!
//! Built on `tower_http::cors` rather than by hand: it gets `Vary`, preflight detection and
//! the credentials rules right.

use std::time::Duration;

use axum::{
    extract::Request,
    http::{header, HeaderName, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
    Router,
};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

use super::HttpError;
use crate::{
    config::CorsOrigins,
    protocol::{ApiError, ErrorCode},
};

const WEBSOCKET_PATH: &str = "/realtime/v1/websocket";

/// Response headers a browser app may read (postgrest-js reads `content-range` for counts).
const EXPOSED: [&str; 7] = [
    "content-range",
    "location",
    "x-request-id",
    "retry-after",
    "preference-applied",
    "idempotent-replayed",
    "range-unit",
];

/// Wrap `router` in the CORS layer for `origins` (nothing for [`CorsOrigins::None`]).
pub fn layer<S>(router: Router<S>, origins: &CorsOrigins) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let base = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        // Request headers are not a security boundary here (the token is checked by the
        // handlers), and supabase-js adds its own (`apikey`, `x-client-info`).
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(ExposeHeaders::list(EXPOSED.map(HeaderName::from_static)))
        .max_age(Duration::from_secs(600));
    match origins {
        CorsOrigins::None => router,
        // `*` cannot go with credentials (browsers refuse it); bearer tokens need none.
        CorsOrigins::Any => router.layer(base.allow_origin(AllowOrigin::any())),
        CorsOrigins::List(list) => {
            let values: Vec<HeaderValue> = list
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect();
            let allowed = origins.clone();
            router
                .layer(axum::middleware::from_fn(move |req, next| {
                    websocket_origin(allowed.clone(), req, next)
                }))
                .layer(
                    base.allow_origin(AllowOrigin::list(values))
                        .allow_credentials(true),
                )
        }
    }
}

/// Refuse a WebSocket upgrade from a browser page whose origin is not allowed. Clients
/// that send no `Origin` (native apps, servers) are not browsers and pass.
async fn websocket_origin(origins: CorsOrigins, req: Request, next: Next) -> Response {
    if req.uri().path() == WEBSOCKET_PATH {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            if !allowed(&origins, origin) {
                return HttpError(ApiError::new(
                    ErrorCode::Forbidden,
                    "this origin may not open a WebSocket; add it to ROWCAST_CORS_ALLOWED_ORIGINS",
                ))
                .into_response();
            }
        }
    }
    next.run(req).await
}

fn allowed(origins: &CorsOrigins, origin: &HeaderValue) -> bool {
    match origins {
        CorsOrigins::Any => true,
        CorsOrigins::None => false,
        CorsOrigins::List(list) => origin
            .to_str()
            .is_ok_and(|o| list.iter().any(|a| a.eq_ignore_ascii_case(o))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_matching_is_exact_apart_from_case() {
        let list = CorsOrigins::List(vec!["https://app.example.com".into()]);
        assert!(allowed(
            &list,
            &HeaderValue::from_static("https://APP.example.com")
        ));
        assert!(!allowed(
            &list,
            &HeaderValue::from_static("https://app.example.com.evil.test")
        ));
        assert!(!allowed(&list, &HeaderValue::from_static("null")));
        assert!(allowed(
            &CorsOrigins::Any,
            &HeaderValue::from_static("null")
        ));
        assert!(!allowed(
            &CorsOrigins::None,
            &HeaderValue::from_static("https://a.test")
        ));
    }
}
