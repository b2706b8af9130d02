//! The REST data API's HTTP surface: `/rest/v1/{table}` (GET, HEAD, POST, PUT, PATCH,
//! DELETE), `/rest/v1/rpc/{function}` and the admin schema reload. Handlers only translate
//! between HTTP and `rest::Service`: headers and body in, a `RestResponse` (or a refusal
//! with its headers) out.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};

use super::{identity::Caller, HttpError, HttpState};
use crate::{
    protocol::{ApiError, ErrorCode},
    rest::{
        response::RestResponse,
        service::{Failure, Headers, Request, Service, Write},
        RestError,
    },
};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/rest/v1/admin/reload-schema",
            post(reload_schema).fallback(method_not_allowed),
        )
        .route(
            "/rest/v1/rpc/{function}",
            post(rpc).get(rpc_get).fallback(method_not_allowed),
        )
        .route(
            "/rest/v1/{table}",
            axum::routing::get(read)
                .post(insert)
                .put(put)
                .patch(update)
                .delete(delete)
                .fallback(method_not_allowed),
        )
}

/// The REST service over this server's store and schema cache; committed writes wake
/// change capture.
fn service<'a>(state: &'a HttpState, wake: &'a (dyn Fn() + Sync)) -> Service<'a> {
    Service::new(&state.store, &state.rest, wake)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn request<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Request<'a> {
    Request {
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: Headers {
            accept: header_str(headers, "accept"),
            accept_profile: header_str(headers, "accept-profile"),
            content_profile: header_str(headers, "content-profile"),
            prefer: headers
                .get_all("prefer")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
            range: header_str(headers, "range"),
            idempotency_key: headers.get("idempotency-key").map(|v| v.to_str().ok()),
        },
    }
}

fn with_headers(mut response: Response, headers: Vec<(String, String)>) -> Response {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

fn into_response(result: Result<RestResponse, Failure>) -> Response {
    match result {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
            let response = match r.body {
                Some(body) => (status, body).into_response(),
                None => status.into_response(),
            };
            with_headers(response, r.headers)
        }
        Err(f) => with_headers(HttpError(f.error).into_response(), f.headers),
    }
}

/// The body, refused with 413 past `ROWCAST_MAX_BODY_BYTES`.
async fn body_bytes(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, HttpError> {
    let limit = state.max_body_bytes;
    let too_large = || HttpError(RestError::TooLarge(limit).into());
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

async fn read(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(table): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let req = request(&uri, &headers);
    let wake = || state.capture.wake();
    into_response(service(&state, &wake).read(&identity, &table, &req).await)
}

async fn write(
    kind: Write,
    state: HttpState,
    Caller(identity): Caller,
    table: String,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let body = body_bytes(&state, &headers, body).await?;
    let req = request(&uri, &headers);
    let wake = || state.capture.wake();
    let result = service(&state, &wake)
        .write(kind, &identity, &table, &req, &body)
        .await;
    Ok(into_response(result))
}

async fn insert(
    State(state): State<HttpState>,
    caller: Caller,
    Path(table): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    write(Write::Insert, state, caller, table, uri, headers, body).await
}

async fn put(
    State(state): State<HttpState>,
    caller: Caller,
    Path(table): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    write(Write::Put, state, caller, table, uri, headers, body).await
}

async fn update(
    State(state): State<HttpState>,
    caller: Caller,
    Path(table): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    write(Write::Update, state, caller, table, uri, headers, body).await
}

async fn delete(
    State(state): State<HttpState>,
    caller: Caller,
    Path(table): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    write(Write::Delete, state, caller, table, uri, headers, body).await
}

async fn rpc(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(function): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let body = body_bytes(&state, &headers, body).await?;
    let req = request(&uri, &headers);
    let wake = || state.capture.wake();
    let result = service(&state, &wake)
        .rpc(&identity, &function, &req, &body)
        .await;
    if result.is_ok() {
        state.capture.wake();
    }
    Ok(into_response(result))
}

async fn rpc_get(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(function): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let req = request(&uri, &headers);
    let wake = || state.capture.wake();
    into_response(
        service(&state, &wake)
            .rpc_get(&identity, &function, &req)
            .await,
    )
}

async fn method_not_allowed() -> HttpError {
    HttpError(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    ))
}

async fn reload_schema(State(state): State<HttpState>, Caller(identity): Caller) -> Response {
    let wake = || state.capture.wake();
    match service(&state, &wake).reload_schema(&identity).await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"status\":\"reloaded\"}",
        )
            .into_response(),
        Err(f) => into_response(Err(f)),
    }
}
