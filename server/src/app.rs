//! Assembling and running the server: the store, the start-up task that connects and
//! migrates (retrying while the database is down), the HTTP listener, and graceful shutdown
//! of every spawned task.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{
        service::Auth,
        token::{SigningAlgorithm, TokenKeys},
    },
    backoff::Backoff,
    capture::Capture,
    config::{AuthConfig, Config},
    http::{self, HttpState},
    metrics::{self, Metrics},
    readiness::Readiness,
    realtime::Realtime,
    store::{migrate, Store, StoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no database configured")]
    NoDatabase,
    #[error("no token secret configured (ROWCAST_JWT_SECRET)")]
    NoTokenSecret,
    #[error("auth settings: {0}")]
    Auth(String),
}

/// A started server. Dropping it does not stop it; call [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    pub local_addr: SocketAddr,
    pub store: Store,
    /// Change capture of this instance: subscribe to the live tail, read changes by cursor.
    pub capture: Capture,
    /// The registry behind `GET /metrics` (tests read it; modules feed it).
    pub metrics: Metrics,
    /// Realtime subscriptions of this instance (its stats are read by metrics and tests).
    pub realtime: Arc<Realtime>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    shutdown_timeout: Duration,
}

impl Running {
    /// A token that is cancelled when shutdown begins; cancel it to begin shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Begin shutdown and wait for every task, bounded by the shutdown timeout.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Wait until shutdown has been requested and every task has stopped (or the
    /// shutdown timeout has passed since the request).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        if tokio::time::timeout(self.shutdown_timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?self.shutdown_timeout,
                http_requests_in_flight = self.metrics.gauge_of(metrics::HTTP_IN_FLIGHT).get(),
                "shutdown timed out; abandoning in-flight work"
            );
        }
        self.store.pool().close();
    }
}

/// Start the server described by `config`: bind the listener, then connect and migrate in
/// the background so that `/health` answers at once and `/ready` tells when it is usable.
pub async fn start(config: Config) -> Result<Running, AppError> {
    let url = config.database.url.clone().ok_or(AppError::NoDatabase)?;
    let store = Store::new(&url, &config.database)?;
    let migrations = Arc::new(migrate::all_migrations(
        config.database.app_migrations.as_deref(),
    )?);
    let readiness = Arc::new(Readiness::default());
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| AppError::Listen {
            addr: config.http.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| AppError::Listen {
        addr: config.http.listen,
        source,
    })?;

    tasks.spawn(startup(
        store.clone(),
        migrations.clone(),
        config.database.migrate_on_start,
        readiness.clone(),
        shutdown.clone(),
    ));

    let capture = Capture::new(store.clone(), config.capture.clone());
    capture.spawn(&tasks, &shutdown, readiness.clone());

    let tokens = Arc::new(token_keys(&config.auth)?);
    // Auth mail (sent by its own task) and the maintenance task; links use this
    // server's public URL.
    let mailer = crate::auth::mail::Mailer::start(
        &config.auth.accounts.mail,
        store.clone(),
        &tasks,
        shutdown.clone(),
    )
    .map_err(|e| AppError::Auth(e.to_string()))?;
    let external_url = config
        .auth
        .accounts
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{local_addr}"));
    let auth = Arc::new(
        Auth::new(
            store.clone(),
            tokens.clone(),
            &config.auth,
            crate::auth::service::AuthRuntime {
                mailer,
                external_url,
            },
        )
        .map_err(|e| AppError::Auth(e.to_string()))?,
    );
    auth.spawn_maintenance(&tasks, shutdown.clone());
    let metrics = Metrics::new();
    register_process_metrics(&metrics, &store);
    let rest = crate::rest::RestState {
        config: config.rest.clone(),
        schema: Default::default(),
    };
    crate::rest::schema::Reloader {
        store: store.clone(),
        schemas: config.rest.schemas.clone(),
        handle: rest.schema.clone(),
        readiness: readiness.clone(),
        idempotency_ttl: config.rest.idempotency_ttl,
    }
    .spawn(&tasks, shutdown.clone());
    register_capture_metrics(&metrics, &capture);
    let realtime = Arc::new(Realtime::new(
        crate::realtime::RealtimeSettings {
            schemas: config.rest.schemas.clone(),
            ..config.realtime.clone()
        },
        store.clone(),
        Arc::new(capture.clone()),
        tokens.clone(),
        auth.clone(),
        rest.schema.generation(),
        tasks.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::realtime::live::follow(
        realtime.clone(),
        capture.clone(),
    ));
    register_realtime_metrics(&metrics, &realtime);
    let router = http::router(HttpState {
        store: store.clone(),
        readiness,
        migrations,
        tokens,
        rest,
        capture: capture.clone(),
        auth,
        max_body_bytes: config.http.max_body_bytes,
        trusted_proxy_header: config
            .http
            .trusted_proxy_header
            .as_deref()
            .and_then(http::header_name),
        metrics: metrics.clone(),
        realtime: realtime.clone(),
    });
    let token = shutdown.clone();
    let header_read_timeout = config.http.header_read_timeout;
    tasks.spawn(async move {
        // On shutdown the server stops accepting (the listener is dropped, so new
        // connections are refused), lets in-flight requests finish and closes idle
        // keep-alive connections. Handlers get the client address as connect info (sign-in
        // and WebSocket per-address limits).
        http::serve::serve(listener, router, header_read_timeout, token).await;
    });
    tracing::info!(%local_addr, "listening");

    Ok(Running {
        local_addr,
        store,
        capture,
        metrics,
        realtime,
        shutdown,
        tasks,
        shutdown_timeout: config.http.shutdown_timeout,
    })
}

/// The keys that sign our tokens and verify bearer tokens, from validated settings.
pub fn token_keys(config: &AuthConfig) -> Result<TokenKeys, AppError> {
    let keys = match (config.algorithm, &config.private_key_pem) {
        (SigningAlgorithm::Hs256, _) => {
            let secret = config
                .jwt_secret
                .as_deref()
                .ok_or(AppError::NoTokenSecret)?;
            TokenKeys::hs256(secret.as_bytes(), &config.issuer, &config.audience)
        }
        (alg, Some(pem)) => TokenKeys::asymmetric(alg, pem, &config.issuer, &config.audience)
            .map_err(|e| AppError::Auth(format!("ROWCAST_JWT_PRIVATE_KEY_FILE: {e}")))?,
        (_, None) => {
            return Err(AppError::Auth(
                "ROWCAST_JWT_PRIVATE_KEY_FILE is required for rs256/es256".into(),
            ))
        }
    };
    let providers = crate::auth::provider::from_config(&config.providers)
        .map_err(|e| AppError::Auth(format!("ROWCAST_AUTH_PROVIDERS: {e}")))?;
    Ok(keys.with_providers(providers))
}

/// Capture keeps its own atomics (`CaptureStats`); the registry samples them at each scrape.
fn register_capture_metrics(m: &Metrics, capture: &Capture) {
    use crate::capture::CaptureStats;
    use std::sync::atomic::Ordering::Relaxed;
    let c = capture.clone();
    m.counter_fn(
        metrics::CHANGES_READ.name,
        metrics::CHANGES_READ.help,
        move || c.stats().changes_published.load(Relaxed) as f64,
    );
    type Sample = fn(&CaptureStats) -> f64;
    let gauges: [(metrics::Spec, Sample); 5] = [
        (metrics::CAPTURE_OLDEST_UNDELIVERED, |s| {
            s.oldest_undelivered_ms.load(Relaxed) as f64 / 1000.0
        }),
        (metrics::CHANGE_LOG_ROWS, |s| {
            s.log_rows.load(Relaxed) as f64
        }),
        (metrics::CHANGE_LOG_FLOOR, |s| {
            s.floor_id.load(Relaxed) as f64
        }),
        (metrics::CAPTURE_BLOCKING_PID, |s| {
            s.blocking_pid.load(Relaxed) as f64
        }),
        (metrics::CAPTURE_BROKEN_TABLES, |s| {
            s.broken_tables.load(Relaxed) as f64
        }),
    ];
    for (spec, read) in gauges {
        let c = capture.clone();
        m.gauge_fn(spec.name, spec.help, move || read(c.stats()));
    }
}

/// Metrics about this process that are known from the start: the build and the pool.
fn register_process_metrics(m: &Metrics, store: &Store) {
    m.gauge_with(
        metrics::BUILD_INFO.name,
        metrics::BUILD_INFO.help,
        &[("version", env!("CARGO_PKG_VERSION"))],
    )
    .set(1);
    let pool = store.pool().clone();
    m.gauge_fn(metrics::POOL_MAX.name, metrics::POOL_MAX.help, {
        let pool = pool.clone();
        move || pool.status().max_size as f64
    });
    m.gauge_fn(metrics::POOL_SIZE.name, metrics::POOL_SIZE.help, {
        let pool = pool.clone();
        move || pool.status().size as f64
    });
    m.gauge_fn(metrics::POOL_IDLE.name, metrics::POOL_IDLE.help, {
        let pool = pool.clone();
        move || pool.status().available as f64
    });
    m.gauge_fn(
        metrics::POOL_WAITING.name,
        metrics::POOL_WAITING.help,
        move || pool.status().waiting as f64,
    );
}

impl From<&crate::config::DatabaseConfig> for crate::store::PoolSettings {
    fn from(c: &crate::config::DatabaseConfig) -> Self {
        crate::store::PoolSettings {
            pool_size: c.pool_size,
            statement_timeout: c.statement_timeout,
            connect_timeout: c.connect_timeout,
            ca_file: c.ca_file.clone(),
        }
    }
}

/// Connect and (optionally) migrate, retrying with capped exponential backoff until it
/// works or shutdown begins.
async fn startup(
    store: Store,
    migrations: Arc<Vec<migrate::Migration>>,
    migrate_on_start: bool,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let attempt = async {
            if migrate_on_start {
                migrate::apply(store.pg_config(), &migrations).await?;
            } else {
                store.ping(Duration::from_secs(5)).await?;
            }
            Ok::<_, StoreError>(())
        };
        match attempt.await {
            Ok(()) => {
                readiness.mark_started();
                tracing::info!("database connected and schema current");
                return;
            }
            Err(e @ StoreError::Migration { .. }) => {
                // Retrying cannot fix an edited or broken migration; stay not-ready and say why.
                tracing::error!(error = %e, "migrations failed; the server stays not-ready");
                readiness.mark_failed();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "database not available yet; retrying");
            }
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Realtime's numbers on `/metrics`, read from its atomics at each scrape.
fn register_realtime_metrics(m: &Metrics, realtime: &Arc<Realtime>) {
    // Set once here, where the registry is built; a second app would have its own stats.
    let _ = realtime.stats.delivery_lag.set(m.delivery_lag());
    let s = realtime.stats.clone();
    m.gauge_fn(
        metrics::WS_CONNECTIONS.name,
        metrics::WS_CONNECTIONS.help,
        move || s.connections.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    let s = realtime.stats.clone();
    m.gauge_fn(
        metrics::SUBSCRIPTIONS.name,
        metrics::SUBSCRIPTIONS.help,
        move || s.subscriptions.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    let s = realtime.stats.clone();
    m.counter_fn(
        metrics::CHANGES_DELIVERED.name,
        metrics::CHANGES_DELIVERED.help,
        move || {
            (s.changes_delivered
                .load(std::sync::atomic::Ordering::Relaxed)
                + s.catch_up_changes
                    .load(std::sync::atomic::Ordering::Relaxed)) as f64
        },
    );
    register_authorization_metrics(m, realtime);
}

/// Where realtime visibility is decided (fast path vs SQL fallback) and the membership
/// index's size.
fn register_authorization_metrics(m: &Metrics, realtime: &Arc<Realtime>) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = realtime.stats.clone();
    m.counter_fn(
        metrics::REALTIME_FAST_EVALUATIONS.name,
        metrics::REALTIME_FAST_EVALUATIONS.help,
        move || s.fast_evaluations.load(Relaxed) as f64,
    );
    let s = realtime.stats.clone();
    m.counter_fn(
        metrics::REALTIME_FALLBACK_EVALUATIONS.name,
        metrics::REALTIME_FALLBACK_EVALUATIONS.help,
        move || s.fallback_evaluations.load(Relaxed) as f64,
    );
    let s = realtime.stats.clone();
    m.gauge_fn(
        metrics::REALTIME_MEMBERSHIP_ROWS.name,
        metrics::REALTIME_MEMBERSHIP_ROWS.help,
        move || s.relation_rows.load(Relaxed) as f64,
    );
}
