//! The REST API's entry point: a request (already read off HTTP as plain strings and bytes)
//! is parsed, planned against the schema cache, run as the caller through
//! `store::rest_query`, and shaped into a [`RestResponse`]. `http::rest` only translates
//! HTTP to these calls and their results back, as `http::auth` does with `auth::Service`.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{
    plan::{self, Limits, WritePlan},
    query::{self, Accept},
    response::{self, IdempotencyKey, RestResponse},
    schema::{self, SchemaCache},
    RestError, RestState,
};
use crate::{
    auth::{Identity, Role},
    protocol::{ApiError, ErrorCode},
    store::{
        rest_query::{self, WriteError},
        SessionIdentity, Store,
    },
};

/// The request headers the REST API reads, as text.
#[derive(Debug, Clone, Default)]
pub struct Headers<'a> {
    pub accept: Option<&'a str>,
    pub accept_profile: Option<&'a str>,
    pub content_profile: Option<&'a str>,
    /// Every `Prefer` header, in order.
    pub prefer: Vec<&'a str>,
    pub range: Option<&'a str>,
    /// `Idempotency-Key`: `Some(None)` when present but not visible ASCII text.
    pub idempotency_key: Option<Option<&'a str>>,
}

/// A request to the REST API: the URL path (e.g. `/rest/v1/todos`), the raw query string
/// and the headers.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub headers: Headers<'a>,
}

/// A write to a table, by HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// POST
    Insert,
    /// PUT
    Put,
    /// PATCH
    Update,
    /// DELETE
    Delete,
}

impl Write {
    fn method(self) -> &'static str {
        match self {
            Write::Insert => "POST",
            Write::Put => "PUT",
            Write::Update => "PATCH",
            Write::Delete => "DELETE",
        }
    }
}

/// A refused request: the client-facing error plus headers the response must carry (the
/// `Content-Range` of a 416).
#[derive(Debug)]
pub struct Failure {
    pub error: ApiError,
    pub headers: Vec<(String, String)>,
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure {
            error,
            headers: Vec::new(),
        }
    }
}

impl From<RestError> for Failure {
    fn from(e: RestError) -> Self {
        ApiError::from(e).into()
    }
}

/// The identity as `store` takes it on: the Postgres role and the claims.
fn session_identity(identity: &Identity) -> SessionIdentity {
    identity.into()
}

/// The REST API over one store and one schema cache. Cheap: borrow it per request.
#[derive(Clone, Copy)]
pub struct Service<'a> {
    store: &'a Store,
    state: &'a RestState,
    /// Called after every committed write, so that change capture reads it now rather than
    /// at its next poll (subscribers then see REST writes promptly).
    committed: &'a (dyn Fn() + Sync),
}

impl std::fmt::Debug for Service<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("store", self.store)
            .field("state", self.state)
            .finish_non_exhaustive()
    }
}

impl<'a> Service<'a> {
    pub fn new(
        store: &'a Store,
        state: &'a RestState,
        committed: &'a (dyn Fn() + Sync),
    ) -> Service<'a> {
        Service {
            store,
            state,
            committed,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_rows: self.state.config.max_rows,
            max_embed_depth: self.state.config.max_embed_depth,
            allow_unfiltered_writes: self.state.config.allow_unfiltered_writes,
        }
    }

    fn cache(&self) -> Result<Arc<SchemaCache>, RestError> {
        self.state.schema.get().ok_or(RestError::NotReady)
    }

    /// `GET`/`HEAD /rest/v1/{table}`.
    pub async fn read(
        &self,
        identity: &Identity,
        table: &str,
        req: &Request<'_>,
    ) -> Result<RestResponse, Failure> {
        let cache = self.cache()?;
        let schema = plan::schema_for(&cache, req.headers.accept_profile)?;
        let table = plan::table(&cache, schema, table)?;
        let query = query::parse_query(req.query)?;
        let range = match req.headers.range {
            Some(r) => Some(query::parse_range(r)?),
            None => None,
        };
        let read_plan = plan::read(
            &cache,
            table,
            &query,
            &prefer(&req.headers),
            range,
            accept(&req.headers)?,
            self.limits(),
        )?;
        let result = rest_query::read(self.store, &session_identity(identity), &read_plan)
            .await
            .map_err(ApiError::from)?;
        match response::for_read(&read_plan, result) {
            Ok(r) => Ok(r),
            Err(e @ RestError::RangeNotSatisfiable(_, total)) => Err(Failure {
                error: e.into(),
                headers: vec![("content-range".into(), format!("*/{total}"))],
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// `POST`, `PUT`, `PATCH`, `DELETE /rest/v1/{table}`.
    pub async fn write(
        &self,
        kind: Write,
        identity: &Identity,
        table: &str,
        req: &Request<'_>,
        body: &[u8],
    ) -> Result<RestResponse, Failure> {
        let cache = self.cache()?;
        let schema = plan::schema_for(&cache, req.headers.content_profile)?;
        let table_ref = plan::table(&cache, schema, table)?;
        let query = query::parse_query(req.query)?;
        let prefer = prefer(&req.headers);
        let accept = accept(&req.headers)?;
        let limits = self.limits();
        let write_plan = match kind {
            Write::Insert => WritePlan::Insert(plan::insert(
                &cache, table_ref, &query, &prefer, accept, body, limits,
            )?),
            Write::Put => WritePlan::Insert(plan::put(
                &cache, table_ref, &query, &prefer, accept, body, limits,
            )?),
            Write::Update => WritePlan::Update(plan::update(
                &cache, table_ref, &query, &prefer, accept, body, limits,
            )?),
            Write::Delete => WritePlan::Delete(plan::delete(
                &cache, table_ref, &query, &prefer, accept, limits,
            )?),
        };
        let key = self.idempotency_key(identity, kind.method(), req, body)?;
        self.run_write(identity, write_plan, key, req.path).await
    }

    /// `POST /rest/v1/rpc/{function}`.
    pub async fn rpc(
        &self,
        identity: &Identity,
        function: &str,
        req: &Request<'_>,
        body: &[u8],
    ) -> Result<RestResponse, Failure> {
        let cache = self.cache()?;
        let schema = plan::schema_for(&cache, req.headers.content_profile)?;
        let accept = accept(&req.headers)?;
        let rpc_plan = plan::rpc(&cache, schema, function, accept, body)?;
        let key = self.idempotency_key(identity, "POST", req, body)?;
        self.run_write(identity, WritePlan::Rpc(rpc_plan), key, req.path)
            .await
    }

    /// `GET /rest/v1/rpc/{function}?arg=value`: stable and immutable functions only.
    pub async fn rpc_get(
        &self,
        identity: &Identity,
        function: &str,
        req: &Request<'_>,
    ) -> Result<RestResponse, Failure> {
        let cache = self.cache()?;
        let schema = plan::schema_for(&cache, req.headers.accept_profile)?;
        let accept = accept(&req.headers)?;
        let rpc_plan = plan::rpc_get(&cache, schema, function, accept, req.query, self.limits())?;
        self.run_write(identity, WritePlan::Rpc(rpc_plan), None, req.path)
            .await
    }

    /// `POST /rest/v1/admin/reload-schema`: reload the schema cache now (service only).
    pub async fn reload_schema(&self, identity: &Identity) -> Result<(), Failure> {
        if identity.role != Role::Service {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "reloading the schema cache needs the service role",
            )
            .into());
        }
        schema::reload(self.store, &self.state.config.schemas, &self.state.schema)
            .await
            .map_err(|e| Failure::from(ApiError::from(e)))
    }

    async fn run_write(
        &self,
        identity: &Identity,
        write_plan: WritePlan,
        key: Option<IdempotencyKey>,
        base: &str,
    ) -> Result<RestResponse, Failure> {
        let response = rest_query::write(
            self.store,
            &session_identity(identity),
            &write_plan,
            key.as_ref(),
            |result| match &write_plan {
                WritePlan::Rpc(p) => response::for_rpc(
                    p.single,
                    if p.function.returns_void {
                        None
                    } else {
                        Some(result.body)
                    },
                    result.rows,
                ),
                _ => response::for_write(&write_plan, base, result),
            },
        )
        .await
        .map_err(|e| -> Failure {
            match e {
                WriteError::Store(e) => ApiError::from(e).into(),
                WriteError::KeyReused => ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was already used for a different request",
                )
                .into(),
                WriteError::Refused(e) => e.into(),
            }
        })?;
        (self.committed)();
        Ok(response)
    }

    fn idempotency_key(
        &self,
        identity: &Identity,
        method: &'static str,
        req: &Request<'_>,
        body: &[u8],
    ) -> Result<Option<IdempotencyKey>, RestError> {
        let Some(value) = req.headers.idempotency_key else {
            return Ok(None);
        };
        let key = value
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                RestError::Syntax(
                    "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                )
            })?;
        let subject = match identity.subject() {
            Some(s) if identity.role == Role::Authenticated => format!("user:{s}"),
            _ => format!("role:{}", identity.role.claim()),
        };
        let mut h = Sha256::new();
        for part in [
            method.as_bytes(),
            req.path.as_bytes(),
            req.query.as_bytes(),
            req.headers.prefer.first().copied().unwrap_or("").as_bytes(),
            req.headers.accept.unwrap_or("").as_bytes(),
            req.headers.content_profile.unwrap_or("").as_bytes(),
            body,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Ok(Some(IdempotencyKey {
            key: key.to_string(),
            subject,
            method,
            path: req.path.to_string(),
            request_hash: hex::encode(h.finalize()),
            ttl: self.state.config.idempotency_ttl,
        }))
    }
}

fn prefer(headers: &Headers<'_>) -> query::Prefer {
    query::parse_prefer(headers.prefer.iter().copied())
}

fn accept(headers: &Headers<'_>) -> Result<Accept, RestError> {
    query::parse_accept(headers.accept)
}
