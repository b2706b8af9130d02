//! The REST data API's HTTP surface: `/rest/v1/{table}` (GET, HEAD, POST, PATCH, DELETE),
//! `/rest/v1/rpc/{function}` and the admin schema reload. Reads headers and body, hands
//! them to `rest` (parse, plan) and `store::rest_query` (run as the caller), and turns the
//! result or error into an HTTP response.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use sha2::{Digest, Sha256};

use super::{identity::Caller, HttpError, HttpState};
use crate::{
    auth::{Identity, Role},
    protocol::{ApiError, ErrorCode},
    rest::{
        self,
        plan::{self, Limits, WritePlan},
        query::{self, Accept},
        response::{IdempotencyKey, RestResponse},
        schema::SchemaCache,
        RestError,
    },
    store::{
        rest_query::{self, WriteError},
        rest_schema,
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

fn limits(state: &HttpState) -> Limits {
    Limits {
        max_rows: state.rest.config.max_rows,
        max_embed_depth: state.rest.config.max_embed_depth,
        allow_unfiltered_writes: state.rest.config.allow_unfiltered_writes,
    }
}

fn cache(state: &HttpState) -> Result<std::sync::Arc<SchemaCache>, HttpError> {
    state
        .rest
        .schema
        .get()
        .ok_or_else(|| HttpError(RestError::NotReady.into()))
}

fn err(e: RestError) -> HttpError {
    HttpError(e.into())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn prefer(headers: &HeaderMap) -> query::Prefer {
    query::parse_prefer(
        headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

fn accept(headers: &HeaderMap) -> Result<Accept, HttpError> {
    query::parse_accept(header_str(headers, "accept")).map_err(err)
}

fn into_response(r: RestResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut response = match r.body {
        Some(body) => (status, body).into_response(),
        None => status.into_response(),
    };
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

async fn read(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(table): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let cache = cache(&state)?;
    let schema = plan::schema_for(&cache, header_str(&headers, "accept-profile")).map_err(err)?;
    let table = plan::table(&cache, schema, &table).map_err(err)?;
    let query = query::parse_query(uri.query().unwrap_or("")).map_err(err)?;
    let range = match header_str(&headers, "range") {
        Some(r) => Some(query::parse_range(r).map_err(err)?),
        None => None,
    };
    let read_plan = plan::read(
        &cache,
        table,
        &query,
        &prefer(&headers),
        range,
        accept(&headers)?,
        limits(&state),
    )
    .map_err(err)?;
    let result = rest_query::read(&state.store, &identity, &read_plan)
        .await
        .map_err(|e| HttpError(rest::api_error_from_store(e)))?;
    match rest::response::for_read(&read_plan, result) {
        Ok(r) => Ok(into_response(r)),
        Err(e @ RestError::RangeNotSatisfiable(_, total)) => {
            let mut response = err(e).into_response();
            if let Ok(v) = HeaderValue::try_from(format!("*/{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            Ok(response)
        }
        Err(e) => Err(err(e)),
    }
}

/// The body, refused with 413 past `ROWCAST_MAX_BODY_BYTES`.
async fn body_bytes(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, HttpError> {
    let limit = state.max_body_bytes;
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(err(RestError::TooLarge(limit)));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| err(RestError::TooLarge(limit)))
}

fn idempotency_key(
    state: &HttpState,
    identity: &Identity,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, HttpError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            err(RestError::Syntax(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            ))
        })?;
    let subject = match identity.subject() {
        Some(s) if identity.role == Role::Authenticated => format!("user:{s}"),
        _ => format!("role:{}", identity.role.claim()),
    };
    let mut h = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        uri.path().as_bytes(),
        uri.query().unwrap_or("").as_bytes(),
        header_str(headers, "prefer").unwrap_or("").as_bytes(),
        header_str(headers, "accept").unwrap_or("").as_bytes(),
        header_str(headers, "content-profile")
            .unwrap_or("")
            .as_bytes(),
        body,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(Some(IdempotencyKey {
        key: key.to_string(),
        subject,
        method: match *method {
            Method::POST => "POST",
            Method::PATCH => "PATCH",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        },
        path: uri.path().to_string(),
        request_hash: hex::encode(h.finalize()),
        ttl: state.rest.config.idempotency_ttl,
    }))
}

async fn run_write(
    state: &HttpState,
    identity: &Identity,
    write_plan: WritePlan,
    key: Option<IdempotencyKey>,
    base: String,
) -> Result<Response, HttpError> {
    let response = rest_query::write(
        &state.store,
        identity,
        &write_plan,
        key.as_ref(),
        |result| {
            match &write_plan {
                WritePlan::Rpc(p) => rest::response::for_rpc(
                    p.single,
                    if p.function.returns_void {
                        None
                    } else {
                        Some(result.body)
                    },
                    result.rows,
                ),
                _ => rest::response::for_write(&write_plan, &base, result),
            }
            .map_err(ApiError::from)
        },
    )
    .await
    .map_err(|e| match e {
        WriteError::Store(e) => HttpError(rest::api_error_from_store(e)),
        WriteError::Refused(e) => HttpError(e),
    })?;
    // The write is committed: let the change reader pick it up now rather than at the next
    // poll, so subscribers see REST writes promptly.
    state.capture.wake();
    Ok(into_response(response))
}

#[derive(Clone, Copy)]
enum Kind {
    Insert,
    Put,
    Update,
    Delete,
}

#[allow(clippy::too_many_arguments)]
async fn write(
    kind: Kind,
    state: HttpState,
    identity: Identity,
    table: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let body = body_bytes(&state, &headers, body).await?;
    let cache = cache(&state)?;
    let schema = plan::schema_for(&cache, header_str(&headers, "content-profile")).map_err(err)?;
    let table_ref = plan::table(&cache, schema, &table).map_err(err)?;
    let query = query::parse_query(uri.query().unwrap_or("")).map_err(err)?;
    let prefer = prefer(&headers);
    let accept = accept(&headers)?;
    let limits = limits(&state);
    let write_plan = match kind {
        Kind::Insert => WritePlan::Insert(
            plan::insert(&cache, table_ref, &query, &prefer, accept, &body, limits).map_err(err)?,
        ),
        Kind::Put => WritePlan::Insert(
            plan::put(&cache, table_ref, &query, &prefer, accept, &body, limits).map_err(err)?,
        ),
        Kind::Update => WritePlan::Update(
            plan::update(&cache, table_ref, &query, &prefer, accept, &body, limits).map_err(err)?,
        ),
        Kind::Delete => WritePlan::Delete(
            plan::delete(&cache, table_ref, &query, &prefer, accept, limits).map_err(err)?,
        ),
    };
    let key = idempotency_key(&state, &identity, &method, &uri, &headers, &body)?;
    run_write(&state, &identity, write_plan, key, uri.path().to_string()).await
}

async fn insert(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(table): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    write(
        Kind::Insert,
        state,
        identity,
        table,
        method,
        uri,
        headers,
        body,
    )
    .await
}

async fn put(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(table): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    write(
        Kind::Put,
        state,
        identity,
        table,
        method,
        uri,
        headers,
        body,
    )
    .await
}

async fn update(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(table): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    write(
        Kind::Update,
        state,
        identity,
        table,
        method,
        uri,
        headers,
        body,
    )
    .await
}

async fn delete(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(table): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    write(
        Kind::Delete,
        state,
        identity,
        table,
        method,
        uri,
        headers,
        body,
    )
    .await
}

async fn rpc(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(function): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let body = body_bytes(&state, &headers, body).await?;
    let cache = cache(&state)?;
    let schema = plan::schema_for(&cache, header_str(&headers, "content-profile")).map_err(err)?;
    let accept = accept(&headers)?;
    let rpc_plan = plan::rpc(&cache, schema, &function, accept, &body).map_err(err)?;
    let key = idempotency_key(&state, &identity, &method, &uri, &headers, &body)?;
    run_write(
        &state,
        &identity,
        WritePlan::Rpc(rpc_plan),
        key,
        uri.path().to_string(),
    )
    .await
}

/// `GET /rest/v1/rpc/{function}?arg=value`: stable and immutable functions only.
async fn rpc_get(
    State(state): State<HttpState>,
    Caller(identity): Caller,
    Path(function): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let cache = cache(&state)?;
    let schema = plan::schema_for(&cache, header_str(&headers, "accept-profile")).map_err(err)?;
    let accept = accept(&headers)?;
    let rpc_plan =
        plan::rpc_get(&cache, schema, &function, accept, uri.query().unwrap_or("")).map_err(err)?;
    run_write(
        &state,
        &identity,
        WritePlan::Rpc(rpc_plan),
        None,
        uri.path().to_string(),
    )
    .await
}

async fn method_not_allowed() -> HttpError {
    HttpError(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    ))
}

/// `POST /rest/v1/admin/reload-schema`: reload the schema cache now (service identity only).
async fn reload_schema(
    State(state): State<HttpState>,
    Caller(identity): Caller,
) -> Result<Response, HttpError> {
    if identity.role != Role::Service {
        return Err(HttpError(ApiError::new(
            ErrorCode::Forbidden,
            "reloading the schema cache needs the service role",
        )));
    }
    rest_schema::reload(&state.store, &state.rest.config.schemas, &state.rest.schema)
        .await
        .map_err(|e| HttpError(e.into()))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"reloaded\"}",
    )
        .into_response())
}
