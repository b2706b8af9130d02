//! The HTTP surface: the axum router, health and readiness, and the mapping of the
//! client-facing [`ApiError`] onto HTTP responses. Only this layer (and the WebSocket layer)
//! knows axum types.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

pub mod auth;
pub mod body;
pub mod cors;
pub mod identity;
pub mod observe;
pub mod probe;
pub mod realtime;
pub mod rest;
pub mod serve;

use crate::{
    auth::{service::Auth, token::TokenKeys},
    capture::Capture,
    metrics::Metrics,
    protocol::{ApiError, ErrorCode, ReadyBody},
    readiness::Readiness,
    store::{migrate::Migration, Store, StoreError},
};

/// What every handler can reach.
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub readiness: Arc<Readiness>,
    pub migrations: Arc<Vec<Migration>>,
    pub tokens: Arc<TokenKeys>,
    pub rest: crate::rest::RestState,
    /// Change capture: the live tail and reads by cursor (see `capture`).
    pub capture: Capture,
    /// Sign-up, sign-in, sessions and users (`/auth/v1`).
    pub auth: Arc<Auth>,
    /// Largest accepted request body (`ROWCAST_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Header holding the client address when behind a trusted proxy
    /// (`ROWCAST_TRUSTED_PROXY_HEADER`); otherwise the TCP peer is the client.
    pub trusted_proxy_header: Option<axum::http::HeaderName>,
    /// Counters and gauges for `GET /metrics`; see `metrics` for the names others feed.
    pub metrics: Metrics,
    /// Live subscriptions over WebSockets (see `realtime`).
    pub realtime: Arc<crate::realtime::Realtime>,
}

/// A header name from settings (`config` checked it is a token; this never fails then).
pub fn header_name(name: &str) -> Option<axum::http::HeaderName> {
    axum::http::HeaderName::from_bytes(name.as_bytes()).ok()
}

pub fn router(state: HttpState) -> Router {
    let routes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(rest::routes())
        .route("/metrics", get(metrics))
        .merge(auth::routes())
        .route("/realtime/v1/websocket", get(realtime::websocket))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body_bytes));
    // Add routes above: the layers wrap only what is already there.
    let routes = cors::layer(routes, &state.rest.config.cors);
    if state.rest.config.observe {
        observe::layer(routes, state.metrics.clone()).with_state(state)
    } else {
        routes.with_state(state)
    }
}

/// The client's address: the TCP peer, or, behind a trusted proxy
/// (`ROWCAST_TRUSTED_PROXY_HEADER`), the last address in the proxy's header (the one the
/// proxy itself added; earlier ones are client-supplied). The same rule as the sign-in
/// limits (`http::auth`) use.
pub fn client_address(state: &HttpState, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    state
        .trusted_proxy_header
        .as_ref()
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer.ip())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<HttpState>) -> Response {
    let report = state
        .readiness
        .check(&state.store, &state.migrations, Duration::from_secs(2))
        .await;
    // The REST schema cache loads in the background once the database is up; until it has,
    // every table would look unknown, so the instance is not ready for traffic.
    let schema_loaded = state.rest.schema.get().is_some();
    let ready = report.ready && schema_loaded;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = ReadyBody {
        status: if ready { "ready" } else { "not-ready" }.into(),
        database: report.database.into(),
        migrations: report.migrations.into(),
        schema_cache: if schema_loaded { "loaded" } else { "loading" }.into(),
        code: (!ready).then_some(ErrorCode::NotReady),
    };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition of everything registered in [`Metrics`].
async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> HttpError {
    HttpError(ApiError::new(ErrorCode::NotFound, "no such route"))
}

/// An [`ApiError`] on its way out as an HTTP response.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        HttpError(e.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.0.retry_after;
        let mut response = (status, Json(self.0)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
