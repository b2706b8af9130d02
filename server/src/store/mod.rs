//! The storage layer: the connection pool, migrations, and every SQL statement the server
//! runs. Nothing outside `store` writes SQL.

pub mod auth_limits;
pub mod changes;
pub mod connect;
pub mod cursors;
pub mod email_tokens;
pub mod embedded;
pub mod listen;
pub mod migrate;
pub mod realtime;
pub mod rest_catalog;
pub mod rest_plan;
pub mod rest_query;
pub mod rest_schema;
pub mod session_identity;
pub mod typegen;
pub mod users;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::{error::SqlState, Transaction};

pub use connect::Connector;
pub use session_identity::SessionIdentity;

/// Failures of the storage layer. Database error text stays in here and in logs; clients
/// see what [`StoreError::failure`] classifies, mapped to an error code by `protocol`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("migration {name}: {reason}")]
    Migration { name: String, reason: String },
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("unexpected data from the database: {0}")]
    Decode(String),
}

impl StoreError {
    /// The SQLSTATE of a database error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        self.code().map(SqlState::code)
    }

    /// The SQLSTATE as tokio-postgres's constant, for matching (`protocol::sqlstate`).
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            StoreError::Db(e) => e.code(),
            _ => None,
        }
    }

    /// The database's own message, for the few errors whose text is meant for clients
    /// (an app function's `raise exception`).
    pub fn db_message(&self) -> Option<String> {
        match self {
            StoreError::Db(e) => e.as_db_error().map(|d| d.message().to_string()),
            _ => None,
        }
    }

    /// True when the failure is about reaching the database rather than the statement.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Db(e) => e.is_closed() || e.code().is_none() && e.as_db_error().is_none(),
            _ => false,
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            // Failing to connect (TLS, refused, authentication) has no SQLSTATE to map;
            // keep the reason, which tokio-postgres's own text leaves out.
            PoolError::Backend(e) if e.code().is_none() && e.as_db_error().is_none() => {
                StoreError::Unavailable(connect::describe(&e))
            }
            PoolError::Backend(e) => StoreError::Db(e),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// How the pool connects: what `Store::new` needs of the settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub pool_size: usize,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    /// Trusted CAs for TLS to Postgres (see `connect`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// The pool plus what every query needs. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    pg_config: Connector,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Store {
    /// Build the pool. No connection is made until first use, so this succeeds while the
    /// database is down.
    pub fn new(url: &str, settings: impl Into<PoolSettings>) -> Result<Store, StoreError> {
        let settings = settings.into();
        let mut pg_config = Connector::new(url, settings.ca_file.as_deref())?;
        pg_config.connect_timeout(settings.connect_timeout);
        pg_config.application_name("rowcast");
        // JIT off: every statement the server runs is OLTP-sized, but the planner's
        // estimates for the change log's range reads grow with the log, and past
        // `jit_above_cost` each execution of the live tail's read (hundreds a second when
        // hot) compiled LLVM code for tens of milliseconds (docs/benchmarks.md, capture run 9).
        pg_config.options(format!(
            "-c statement_timeout={} -c jit=off",
            settings.statement_timeout.as_millis()
        ));
        let manager = Manager::from_config(
            pg_config.config().clone(),
            pg_config.tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store { pool, pg_config })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How to open a dedicated (non-pooled) connection, e.g. the LISTEN connection: the
    /// pool's settings and TLS policy.
    pub fn pg_config(&self) -> &Connector {
        &self.pg_config
    }

    /// A pooled connection, for `store`'s own statements only: every statement the server
    /// runs goes through a `Store` method, so the SQL and how it is batched into
    /// transactions (the consistency callers rely on) stay in one layer.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// A round trip to the database, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let fut = async {
            let client = self.client().await?;
            client.simple_query("select 1").await?;
            Ok::<_, StoreError>(())
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| StoreError::Unavailable("ping timed out".into()))?
    }

    /// Run `f` in one transaction as `identity`: the Postgres role and the verified claims
    /// are set transaction-locally (`set_config(…, true)`), so row-level security sees the
    /// caller and a pooled connection never carries an identity past the transaction.
    ///
    /// The transaction commits when `f` returns `Ok` and rolls back otherwise.
    pub async fn as_identity<T>(
        &self,
        identity: impl Into<SessionIdentity>,
        f: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let identity = identity.into();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        set_identity(&tx, &identity).await?;
        let out = f(&tx).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// Make the rest of transaction `tx` run as `identity`: role and verified claims set
/// transaction-locally, so row-level security sees the caller.
pub async fn set_identity(
    tx: &Transaction<'_>,
    identity: &SessionIdentity,
) -> Result<(), StoreError> {
    let claims = identity.claims.to_string();
    tx.execute(SET_IDENTITY, &[&identity.role, &claims]).await?;
    Ok(())
}

/// Quote an identifier (one that came from the catalog, or was validated against it).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The statement that takes on an identity: `$1` the role, `$2` the claims JSON.
pub const SET_IDENTITY: &str =
    "select set_config('role', $1, true), set_config('rowcast.claims', $2, true)";
