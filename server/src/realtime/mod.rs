//! Realtime: live subscriptions over WebSockets. This module owns the subscription
//! registry and router ([`router`]), the per-connection session state machine
//! ([`session`]), the snapshot → catch-up → live hand-off of each subscription
//! ([`subscription`]), filters ([`filter`]) and the evaluation of changes against filters and
//! visibility rules ([`evaluate`]). The WebSocket transport itself is `http::realtime`; SQL
//! is in `store::realtime`, whose catalog facts [`catalog`] compiles (with `policy`) and
//! whose row reads the router takes through [`rows::RowSource`].
//!
//! Guarantees (see docs/realtime.md): a subscription sees every change after its snapshot or
//! cursor exactly in log order, grouped by transaction; nothing is skipped silently (a
//! client that cannot keep up is closed with "lagging" and resumes from its cursor); the
//! router never waits on a client or runs a query per subscriber.

pub mod catalog;
pub mod evaluate;
pub mod feed;
pub mod filter;
pub mod live;
pub mod relation;
pub mod router;
pub mod rows;
pub mod session;
mod subscription;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::stream::BoxStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::catalog::TableCatalog;
use crate::{
    auth::{service::Auth, token::TokenKeys, Identity},
    capture::LogId,
    policy::{compile::Visibility, Pred},
    protocol::{realtime::changes::EncodedId, ApiError},
    store::{Store, StoreError},
};
use feed::{ChangeBatch, Cursor, TableName};
use router::Router;

pub use crate::config::RealtimeSettings;

/// Rows per snapshot frame.
pub const SNAPSHOT_CHUNK_ROWS: usize = 500;

/// Counters and gauges for logs and the metrics endpoint; plain atomics, read lock-free.
#[derive(Debug, Default)]
pub struct RealtimeStats {
    /// Open WebSocket connections.
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    /// Connections refused because `max_connections` was reached.
    pub connections_refused: AtomicU64,
    /// Active subscriptions (buffering or live).
    pub subscriptions: AtomicU64,
    /// `changes` frames queued for clients by the router (live delivery).
    pub frames_sent: AtomicU64,
    /// Changes inside those frames (one per change per subscription).
    pub changes_delivered: AtomicU64,
    /// Changes sent during catch-up (resume and snapshot hand-off).
    pub catch_up_changes: AtomicU64,
    /// Snapshot rows sent.
    pub snapshot_rows: AtomicU64,
    /// Milliseconds from the start of the last routed transaction to its frames queued.
    pub lag_ms: AtomicU64,
    /// The same, per delivered transaction, into `/metrics` (`rowcast_delivery_lag_seconds`);
    /// set once by the app that owns the registry.
    pub delivery_lag: std::sync::OnceLock<crate::metrics::Histogram>,
    /// Connections closed because their queue overflowed.
    pub lagging_closes: AtomicU64,
    /// Connections closed because the peer stopped answering.
    pub heartbeat_closes: AtomicU64,
    /// Subscriptions ended with `resync-required`.
    pub resyncs: AtomicU64,
    /// Batched SQL visibility checks (policies outside the fast path).
    pub sql_checks: AtomicU64,
    /// Statements those checks ran (one per role and policy when identities can share a
    /// statement, else one per identity).
    pub sql_statements: AtomicU64,
    /// Change × subscription visibility decisions made in the server (fast path, including
    /// relational policies and rows re-checked after a membership change).
    pub fast_evaluations: AtomicU64,
    /// Change × subscription visibility decisions left to SQL (the fallback).
    pub fallback_evaluations: AtomicU64,
    /// Rows held by the membership index (tables relational policies read).
    pub relation_rows: AtomicU64,
    /// Reads of rows that may have moved in or out after a membership change.
    pub move_reads: AtomicU64,
    /// Error frames sent.
    pub errors: AtomicU64,
}

/// Where catch-up reads committed changes: the change log, by cursor.
pub trait ChangeSource: Send + Sync + 'static {
    /// Every committed change after `after` up to `until` (inclusive), one transaction per
    /// batch, in log order.
    fn changes_between(
        &self,
        after: Cursor,
        until: Cursor,
    ) -> BoxStream<'static, Result<ChangeBatch, SourceError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The history after the cursor was pruned.
    #[error("resync required")]
    ResyncRequired,
    #[error("change log read failed: {0}")]
    Failed(ApiError),
}

/// Everything a subscription needs to evaluate changes, fixed when it starts.
#[derive(Debug)]
pub struct SubPlan {
    /// The client's id for the subscription.
    pub id: String,
    /// `id` as a JSON string literal, ready to splice into frames.
    pub encoded_id: EncodedId,
    pub table: TableName,
    pub catalog: Arc<TableCatalog>,
    pub filter: Pred,
    pub visibility: Visibility,
    pub identity: Arc<Identity>,
    /// The columns to send; `None` means all.
    pub columns: Option<Arc<[String]>>,
    /// This database's change log, written into every cursor sent to the client.
    pub log: LogId,
}

/// The realtime service of one server instance. Cheap to share (`Arc`).
pub struct Realtime {
    pub settings: RealtimeSettings,
    pub stats: Arc<RealtimeStats>,
    pub router: Arc<Router>,
    pub store: Store,
    pub source: Arc<dyn ChangeSource>,
    pub tokens: Arc<TokenKeys>,
    /// Provisions an external provider's user on first sight (as REST does).
    pub auth: Arc<Auth>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    catalog_cache: Mutex<CatalogCache>,
    /// The schema-cache generation, bumped by every reload (the DDL doorbell, or
    /// `reload-schema`): cached catalog facts read under an older generation are stale.
    catalog_generation: tokio::sync::watch::Receiver<u64>,
    /// This database's change-log id, read once (see [`Realtime::log_id`]).
    log_id: tokio::sync::OnceCell<LogId>,
    /// Open connections per client address (see [`Realtime::admit`]).
    addresses: Arc<Mutex<AddressCounts>>,
    /// Per table, the evaluation path last logged for it (logged again only when it changes).
    paths_logged: Mutex<HashMap<(String, String), String>>,
    /// Snapshots and catch-ups running at once: a storm of subscribes (every client
    /// reconnecting after a restart) queues here instead of timing out on the pool.
    pub reads: Arc<tokio::sync::Semaphore>,
}

/// (schema, table) → the generation and time it was read under, and what.
type CatalogCache = HashMap<(String, String), (u64, Instant, Arc<TableCatalog>)>;

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How long a table's catalog facts are reused at most. The rule is the schema generation
/// (a policy, grant or column change rings the DDL doorbell, which reloads the schema and
/// bumps it); this bound is the safety net for a database where the event trigger could
/// not be installed and nobody ran `reload-schema`.
const CATALOG_TTL: Duration = Duration::from_secs(30);

/// Holds one slot of `max_connections` (and of its address's share) until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    stats: Arc<RealtimeStats>,
    addresses: Arc<Mutex<AddressCounts>>,
    address: IpAddr,
    /// Whether `hello` was accepted (the socket no longer counts as unauthenticated).
    greeted: bool,
}

impl ConnectionSlot {
    /// `hello` was accepted: release the address's unauthenticated slot.
    pub fn mark_greeted(&mut self) {
        if !self.greeted {
            self.greeted = true;
            let mut counts = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = counts.get_mut(&self.address) {
                c.unauthenticated = c.unauthenticated.saturating_sub(1);
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Relaxed);
        let mut counts = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = counts.get_mut(&self.address) {
            c.connections = c.connections.saturating_sub(1);
            if !self.greeted {
                c.unauthenticated = c.unauthenticated.saturating_sub(1);
            }
            if c.connections == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Open connections per client address: all of them, and those still before `hello`.
#[derive(Debug, Default, Clone, Copy)]
struct PerAddress {
    connections: usize,
    unauthenticated: usize,
}

type AddressCounts = HashMap<IpAddr, PerAddress>;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    ServerFull,
    /// This address holds `max_connections_per_address`.
    AddressFull,
    /// This address holds `max_unauthenticated_per_address` sockets that have not sent `hello`.
    TooManyUnauthenticated,
}

impl Realtime {
    #[allow(clippy::too_many_arguments)] // each is one service the app hands over, once
    pub fn new(
        settings: RealtimeSettings,
        store: Store,
        source: Arc<dyn ChangeSource>,
        tokens: Arc<TokenKeys>,
        auth: Arc<Auth>,
        catalog_generation: tokio::sync::watch::Receiver<u64>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Realtime {
        let stats = Arc::new(RealtimeStats::default());
        let reads = Arc::new(tokio::sync::Semaphore::new(
            (store.pool().status().max_size / 2).max(1),
        ));
        // A buffering subscription may hold up to half a queue of frames; beyond that it
        // falls back to the log (bounded memory whatever the snapshot takes).
        let router = Arc::new(Router::new(
            Arc::new(store.clone()),
            stats.clone(),
            (settings.queue_len / 2).max(1),
        ));
        Realtime {
            settings,
            stats,
            router,
            store,
            source,
            tokens,
            auth,
            tasks,
            shutdown,
            catalog_cache: Mutex::new(HashMap::new()),
            catalog_generation,
            log_id: tokio::sync::OnceCell::new(),
            addresses: Arc::new(Mutex::new(HashMap::new())),
            paths_logged: Mutex::new(HashMap::new()),
            reads,
        }
    }

    /// The id of this database's change log, written into every cursor and checked on
    /// every cursor a client resumes from. Read from the database once.
    pub async fn log_id(&self) -> Result<LogId, StoreError> {
        self.log_id
            .get_or_try_init(|| async {
                let (system, oid) = self.store.log_identity().await?;
                if system.is_none() {
                    tracing::warn!(
                        "pg_control_system() is not permitted for this role; cursors identify \
                         the database by its oid only"
                    );
                }
                Ok(LogId::new(system.unwrap_or(0), oid))
            })
            .await
            .copied()
    }

    /// Where an unqualified table name is looked up: the first exposed schema.
    pub fn default_schema(&self) -> &str {
        self.settings
            .schemas
            .first()
            .map(String::as_str)
            .unwrap_or("public")
    }

    /// Take a connection slot for a client at `address`, unless the server, the address's
    /// share, or the address's share of sockets still waiting for `hello` is full. The
    /// per-address shares keep one address from taking the whole capacity.
    pub fn admit(&self, address: IpAddr) -> Result<ConnectionSlot, Refused> {
        let mut counts = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let mine = counts.get(&address).copied().unwrap_or_default();
        let refused = if mine.connections >= self.settings.max_connections_per_address {
            Some(Refused::AddressFull)
        } else if mine.unauthenticated >= self.settings.max_unauthenticated_per_address {
            Some(Refused::TooManyUnauthenticated)
        } else if self.stats.connections.load(Relaxed) as usize >= self.settings.max_connections {
            Some(Refused::ServerFull)
        } else {
            None
        };
        if let Some(r) = refused {
            self.stats.connections_refused.fetch_add(1, Relaxed);
            return Err(r);
        }
        // Counted under the address lock, so concurrent admissions cannot overshoot.
        self.stats.connections.fetch_add(1, Relaxed);
        self.stats.connections_total.fetch_add(1, Relaxed);
        let entry = counts.entry(address).or_default();
        entry.connections += 1;
        entry.unauthenticated += 1;
        Ok(ConnectionSlot {
            stats: self.stats.clone(),
            addresses: self.addresses.clone(),
            address,
            greeted: false,
        })
    }

    /// Forget the cached catalog facts of `table` (its shape changed: an S event).
    pub fn forget_catalog(&self, table: &crate::capture::TableName) {
        let mut cache = self.catalog_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(&(table.schema.clone(), table.name.clone()));
    }

    /// Log, once per table (and again when it changes), whether its policies are evaluated
    /// in the server or in SQL, per role.
    fn log_path(&self, c: &TableCatalog) {
        use crate::auth::Role;
        use crate::policy::compile::Access;
        let describe = |role: Role| match c.access(role) {
            Access::Denied => "no access",
            Access::AllRows => "all rows",
            Access::Policies(ps) if ps.iter().all(|p| p.fast.is_some()) => {
                if ps.iter().any(|p| {
                    matches!(p.fast, Some(crate::policy::parse::PolicyExpr::Exists(_)))
                        || p.sql.contains("EXISTS")
                        || p.sql.contains(" IN ( SELECT")
                }) {
                    "fast path (relational)"
                } else {
                    "fast path"
                }
            }
            Access::Policies(_) => "SQL fallback",
        };
        let path = format!(
            "anon: {}, authenticated: {}, service: {}",
            describe(Role::Anon),
            describe(Role::Authenticated),
            describe(Role::Service)
        );
        let key = (c.schema.clone(), c.name.clone());
        let mut logged = self.paths_logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.get(&key) != Some(&path) {
            tracing::info!(table = %c.qualified(), path = %path, "realtime authorization path");
            logged.insert(key, path);
        }
    }

    /// The catalog facts of a table, cached until the schema generation moves on.
    pub async fn catalog(
        &self,
        schema: &str,
        name: &str,
    ) -> Result<Option<Arc<TableCatalog>>, StoreError> {
        let key = (schema.to_string(), name.to_string());
        // Read before the catalog: a reload that lands during the read leaves the entry
        // marked with the older generation, so the next subscribe reads again.
        let generation = *self.catalog_generation.borrow();
        {
            let cache = self.catalog_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((g, at, c)) = cache.get(&key) {
                if *g == generation && at.elapsed() < CATALOG_TTL {
                    return Ok(Some(c.clone()));
                }
            }
        }
        let referenced = |sql: &str| crate::policy::parse::referenced_tables(sql);
        let Some((facts, refs)) = self
            .store
            .realtime_tables(schema, name, &referenced)
            .await?
        else {
            return Ok(None);
        };
        let c = Arc::new(TableCatalog::build(facts, refs));
        self.log_path(&c);
        let mut cache = self.catalog_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 1000 {
            cache.clear();
        }
        cache.retain(|_, (g, _, _)| *g == generation);
        cache.insert(key, (generation, Instant::now(), c.clone()));
        Ok(Some(c))
    }
}
