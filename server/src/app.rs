//! Assembling and running the server: the store, the start-up task that connects and
//! migrates (retrying while the database is down), the HTTP listener, and graceful shutdown
//! of every spawned task.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::token::TokenKeys,
    config::Config,
    http::{self, HttpState},
    readiness::Readiness,
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
}

/// A started server. Dropping it does not stop it; call [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    pub local_addr: SocketAddr,
    pub store: Store,
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

    let secret = config
        .auth
        .jwt_secret
        .as_deref()
        .ok_or(AppError::NoTokenSecret)?;
    let tokens = Arc::new(TokenKeys::hs256(
        secret.as_bytes(),
        &config.auth.issuer,
        &config.auth.audience,
    ));
    let rest = crate::rest::RestState {
        config: config.rest.clone(),
        schema: Default::default(),
    };
    crate::store::rest_schema::Listener {
        store: store.clone(),
        schemas: config.rest.schemas.clone(),
        handle: rest.schema.clone(),
        readiness: readiness.clone(),
        idempotency_ttl: config.rest.idempotency_ttl,
    }
    .spawn(&tasks, shutdown.clone());
    let router = http::router(HttpState {
        store: store.clone(),
        readiness,
        migrations,
        tokens,
        rest,
    });
    let token = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%local_addr, "listening");

    Ok(Running {
        local_addr,
        store,
        shutdown,
        tasks,
        shutdown_timeout: config.http.shutdown_timeout,
    })
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
    let mut delay = Duration::from_millis(200);
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
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "database not available yet");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
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
