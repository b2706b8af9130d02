//! Settings: the command line and `ROWCAST_*` / `DATABASE_URL` environment, parsed and
//! validated once at startup into a plain [`Config`] that is passed down explicitly.
//!
//! Every flag has an environment variable; a bad value stops the process with a message
//! that names the variable and what it expects.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

mod settings;
pub mod weak_secret;

pub use settings::*;

#[derive(Debug, Parser)]
#[command(
    name = "rowcast",
    version,
    about = "Realtime backend on plain Postgres"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server against DATABASE_URL (required).
    Serve(ServerArgs),
    /// Run the server for development: without DATABASE_URL, start and manage a local Postgres.
    Dev(ServerArgs),
    /// Apply migrations (the server's and the app's) and exit.
    Migrate(ServerArgs),
    /// Tell every running server on DATABASE_URL to reload its REST schema cache, and exit.
    ReloadSchema(ServerArgs),
    /// Opt tables in or out of sync (applies pending migrations first, like `migrate`).
    Sync(SyncArgs),
    /// Print a signed access token for development and admin scripts.
    Token(TokenArgs),
    /// Exit 0 if the server on ROWCAST_LISTEN answers GET /ready with 200, else 1 (for
    /// container health checks; the runtime image has no curl).
    Healthcheck(HealthcheckArgs),
}

/// `rowcast token`: kept small on purpose; it signs with the same keys the server verifies.
#[derive(Debug, Args, Clone)]
pub struct TokenArgs {
    /// The user id (`sub`, a UUID) to sign in as; a new random id when omitted.
    #[arg(long)]
    pub sub: Option<String>,

    /// The role claim: `authenticated` (a user) or `service` (bypasses row-level security).
    #[arg(long, value_enum, default_value = "authenticated")]
    pub role: TokenRole,

    /// How long the token is valid (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = duration_parser("--ttl"))]
    pub ttl: Duration,

    /// Where `dev` keeps its state, including the dev secret (DATA_DIR/jwt-secret).
    #[arg(long, env = "ROWCAST_DATA_DIR", default_value = ".rowcast")]
    pub data_dir: PathBuf,

    /// The same token settings the server reads, so that both sign alike. Without a secret,
    /// the dev secret in DATA_DIR/jwt-secret (made by `dev`).
    #[command(flatten)]
    pub jwt: JwtArgs,
}

/// The token settings, stated once: the server (`serve`, `dev`, …) and `rowcast token` both
/// flatten them, so a flag, its variable and its default cannot drift apart.
#[derive(Debug, Args, Clone)]
pub struct JwtArgs {
    /// Secret (32+ bytes) for signing HS256 access tokens. Required by `serve`; `dev`
    /// generates one in DATA_DIR/jwt-secret.
    #[arg(long, env = "ROWCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// `iss` claim of issued tokens, and the issuer accepted on verification.
    #[arg(long, env = "ROWCAST_JWT_ISSUER", default_value = "rowcast")]
    pub jwt_issuer: String,

    /// `aud` claim of issued tokens, and the audience accepted on verification.
    #[arg(long, env = "ROWCAST_JWT_AUDIENCE", default_value = "rowcast")]
    pub jwt_audience: String,

    /// Algorithm of issued access tokens: hs256 (secret), rs256 or es256 (key pair).
    #[arg(long, env = "ROWCAST_JWT_ALGORITHM", default_value = "hs256", value_parser = jwt_algorithm_parser)]
    pub jwt_algorithm: SigningAlgorithm,

    /// PEM file with the private key for rs256/es256 (PKCS#8; RSA may be PKCS#1).
    #[arg(long, env = "ROWCAST_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,
}

impl Default for JwtArgs {
    fn default() -> Self {
        JwtArgs {
            jwt_secret: None,
            jwt_issuer: "rowcast".into(),
            jwt_audience: "rowcast".into(),
            jwt_algorithm: SigningAlgorithm::Hs256,
            jwt_private_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    Authenticated,
    Service,
}

/// `rowcast healthcheck`: probes the server this container runs.
#[derive(Debug, Args, Clone)]
pub struct HealthcheckArgs {
    /// The server's listen address; an unspecified IP (0.0.0.0, ::) is probed on loopback.
    #[arg(long, env = "ROWCAST_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Longest the probe may take.
    #[arg(long, default_value = "3s", value_parser = duration_parser("--timeout"))]
    pub timeout: Duration,
}

/// Every environment variable any `rowcast` command reads, taken from the command line
/// definition itself so that docs and deployment files can be checked against it.
pub fn env_vars() -> std::collections::BTreeSet<String> {
    use clap::CommandFactory;
    let mut out = std::collections::BTreeSet::new();
    let root = Cli::command();
    for sub in root.get_subcommands() {
        for arg in sub.get_arguments() {
            if let Some(name) = arg.get_env().and_then(|e| e.to_str()) {
                out.insert(name.to_string());
            }
        }
    }
    out
}

#[derive(Debug, Args, Clone)]
pub struct SyncArgs {
    #[command(subcommand)]
    pub action: SyncAction,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What `rowcast sync` does.
#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum SyncAction {
    /// Start capturing changes of TABLE (`todos`, `public.todos`); idempotent.
    Enable { table: String },
    /// Stop capturing changes of TABLE; removes its triggers and `_v` column.
    Disable { table: String },
    /// List the synced tables.
    List,
}

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    #[command(flatten)]
    pub realtime: RealtimeArgs,
    #[command(flatten)]
    pub connections: ConnectionArgs,

    /// Postgres connection string. Required for `serve`; optional for `dev` and `migrate`
    /// (without it they use the embedded Postgres in --data-dir).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Address the HTTP server listens on.
    #[arg(long, env = "ROWCAST_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Maximum connections in the database pool (1-1000).
    #[arg(long, env = "ROWCAST_POOL_SIZE", default_value = "16", value_parser = parse_pool_size)]
    pub pool_size: usize,

    /// Longest a single SQL statement may run (e.g. 30s, 500ms).
    #[arg(long, env = "ROWCAST_STATEMENT_TIMEOUT", default_value = "30s", value_parser = duration_parser("ROWCAST_STATEMENT_TIMEOUT"))]
    pub statement_timeout: Duration,

    /// Longest to wait for a database connection (e.g. 5s).
    #[arg(long, env = "ROWCAST_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration_parser("ROWCAST_CONNECT_TIMEOUT"))]
    pub connect_timeout: Duration,

    /// PEM file of the CA certificate(s) that sign the database server's certificate, for
    /// sslmode=verify-ca/verify-full (and require/prefer, which then check the chain).
    #[arg(long, env = "ROWCAST_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,

    /// Longest graceful shutdown waits for in-flight requests before exiting.
    #[arg(long, env = "ROWCAST_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = duration_parser("ROWCAST_SHUTDOWN_TIMEOUT"))]
    pub shutdown_timeout: Duration,

    /// Directory of the app's own migrations (NNNN_name.sql), applied after the server's.
    #[arg(long, env = "ROWCAST_APP_MIGRATIONS")]
    pub app_migrations: Option<PathBuf>,

    /// Apply pending migrations when the server starts.
    #[arg(long, env = "ROWCAST_MIGRATE_ON_START", default_value = "true", value_parser = bool_parser("ROWCAST_MIGRATE_ON_START"))]
    pub migrate_on_start: bool,

    /// Where `dev` keeps its state; the embedded Postgres cluster lives in DATA_DIR/pg.
    #[arg(long, env = "ROWCAST_DATA_DIR", default_value = ".rowcast")]
    pub data_dir: PathBuf,

    /// Directory holding initdb/pg_ctl/postgres; found automatically when unset.
    #[arg(long, env = "ROWCAST_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,

    /// Log format: `json` (default for serve) or `pretty` (default for dev).
    #[arg(long, env = "ROWCAST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter in tracing's EnvFilter syntax (e.g. `info`, `rowcast=debug`).
    #[arg(long, env = "ROWCAST_LOG", default_value = "info")]
    pub log: String,

    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Longest the change reader waits before looking at the log without a notification
    /// (bounds delivery latency when NOTIFY is off or lost), 10ms-60s.
    #[arg(long, env = "ROWCAST_POLL_INTERVAL", default_value = "50ms", value_parser = bounded_duration_parser("ROWCAST_POLL_INTERVAL", Duration::from_millis(10), Duration::from_secs(60)))]
    pub poll_interval: Duration,

    /// Ring the NOTIFY doorbell (at most once per 20 ms per database, so writers are not
    /// serialized on the notify lock) and LISTEN for it: writes from psql and other services
    /// reach subscribers in milliseconds. `false` leaves only the poll interval.
    #[arg(long, env = "ROWCAST_NOTIFY", default_value = "true", action = clap::ArgAction::Set, value_parser = bool_parser("ROWCAST_NOTIFY"))]
    pub notify: bool,

    /// Keep captured changes at least this long (e.g. 7d); `0` keeps them by age forever.
    #[arg(long, env = "ROWCAST_RETENTION", default_value = "7d", value_parser = duration_parser("ROWCAST_RETENTION"))]
    pub retention: Duration,

    /// Prune the oldest captured changes beyond this many; `0` means no cap.
    #[arg(long, env = "ROWCAST_RETENTION_MAX_CHANGES", default_value = "0", value_parser = u64_parser("ROWCAST_RETENTION_MAX_CHANGES"))]
    pub retention_max_changes: u64,
    #[command(flatten)]
    pub rest: RestArgs,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Settings of the REST data API (`/rest/v1`).
#[derive(Debug, Args, Clone)]
pub struct RestArgs {
    /// Comma-separated schemas whose tables, views and functions the REST API exposes.
    #[arg(
        long = "rest-schemas",
        env = "ROWCAST_REST_SCHEMAS",
        default_value = "public"
    )]
    pub rest_schemas: String,

    /// Most rows one REST read returns (a larger `limit` is capped to this).
    #[arg(long = "rest-max-rows", env = "ROWCAST_REST_MAX_ROWS", default_value = "1000", value_parser = positive_parser("ROWCAST_REST_MAX_ROWS"))]
    pub rest_max_rows: u64,

    /// Deepest nesting of embedded resources in `select=` (1 = no embed inside an embed).
    #[arg(long = "rest-max-embed-depth", env = "ROWCAST_REST_MAX_EMBED_DEPTH", default_value = "4", value_parser = positive_parser("ROWCAST_REST_MAX_EMBED_DEPTH"))]
    pub rest_max_embed_depth: u64,

    /// Allow PATCH and DELETE without any filter (they then touch every row RLS allows).
    #[arg(long = "rest-allow-unfiltered-writes", env = "ROWCAST_REST_ALLOW_UNFILTERED_WRITES", default_value = "false", value_parser = bool_parser("ROWCAST_REST_ALLOW_UNFILTERED_WRITES"))]
    pub rest_allow_unfiltered_writes: bool,

    /// How long the response to a write with an `Idempotency-Key` is kept for retries.
    #[arg(long = "rest-idempotency-ttl", env = "ROWCAST_REST_IDEMPOTENCY_TTL", default_value = "24h", value_parser = duration_parser("ROWCAST_REST_IDEMPOTENCY_TTL"))]
    pub rest_idempotency_ttl: Duration,

    /// Origins browsers may call the API from (REST, auth, WebSocket): `*`, or a
    /// comma-separated list such as `https://app.example.com,http://localhost:5173`.
    /// Default: `*` in `dev`, none in `serve`.
    #[arg(long = "cors-allowed-origins", env = "ROWCAST_CORS_ALLOWED_ORIGINS")]
    pub cors_allowed_origins: Option<String>,

    /// Benchmarks only: `false` turns off the request-id/log/metrics layer, for A/B runs.
    #[arg(long = "http-observe", env = "ROWCAST_HTTP_OBSERVE", default_value = "true", action = clap::ArgAction::Set, value_parser = bool_parser("ROWCAST_HTTP_OBSERVE"))]
    pub http_observe: bool,
}

/// Auth settings beyond the token secret: key pairs, lifetimes, password rules, sign-in
/// limits and external identity providers.
#[derive(Debug, Args, Clone)]
pub struct AuthArgs {
    /// Lifetime of issued access tokens.
    #[arg(long, env = "ROWCAST_JWT_EXPIRY", default_value = "1h", value_parser = duration_parser("ROWCAST_JWT_EXPIRY"))]
    pub jwt_expiry: Duration,

    /// Lifetime of a sign-in session (its refresh tokens stop working after this).
    #[arg(long, env = "ROWCAST_SESSION_LIFETIME", default_value = "30days", value_parser = duration_parser("ROWCAST_SESSION_LIFETIME"))]
    pub session_lifetime: Duration,

    /// Shortest accepted password, in characters.
    #[arg(long, env = "ROWCAST_PASSWORD_MIN_LENGTH", default_value = "8", value_parser = u32_parser("ROWCAST_PASSWORD_MIN_LENGTH", 1, 1024))]
    pub password_min_length: u32,

    /// argon2id memory cost in KiB.
    #[arg(long, env = "ROWCAST_ARGON2_MEMORY_KIB", default_value = "19456", value_parser = u32_parser("ROWCAST_ARGON2_MEMORY_KIB", 8, 4 * 1024 * 1024))]
    pub argon2_memory_kib: u32,

    /// argon2id passes over memory.
    #[arg(long, env = "ROWCAST_ARGON2_ITERATIONS", default_value = "2", value_parser = u32_parser("ROWCAST_ARGON2_ITERATIONS", 1, 100))]
    pub argon2_iterations: u32,

    /// argon2id lanes.
    #[arg(long, env = "ROWCAST_ARGON2_PARALLELISM", default_value = "1", value_parser = u32_parser("ROWCAST_ARGON2_PARALLELISM", 1, 64))]
    pub argon2_parallelism: u32,

    /// Failed sign-ins allowed per account per window before 429.
    #[arg(long, env = "ROWCAST_SIGNIN_FAILURES_PER_ACCOUNT", default_value = "5", value_parser = u32_parser("ROWCAST_SIGNIN_FAILURES_PER_ACCOUNT", 1, 1_000_000))]
    pub signin_failures_per_account: u32,

    /// Failed sign-ins allowed per client address per window before 429.
    #[arg(long, env = "ROWCAST_SIGNIN_FAILURES_PER_ADDRESS", default_value = "30", value_parser = u32_parser("ROWCAST_SIGNIN_FAILURES_PER_ADDRESS", 1, 1_000_000))]
    pub signin_failures_per_address: u32,

    /// The window the sign-in failure limits count over.
    #[arg(long, env = "ROWCAST_SIGNIN_FAILURE_WINDOW", default_value = "15m", value_parser = duration_parser("ROWCAST_SIGNIN_FAILURE_WINDOW"))]
    pub signin_failure_window: Duration,

    /// External identity providers whose access tokens are accepted: a JSON array of
    /// `{"name", "issuer", "audience", "jwks": {...} | "jwks_file": "path"}`.
    #[arg(long, env = "ROWCAST_AUTH_PROVIDERS")]
    pub auth_providers: Option<String>,

    /// Header a trusted reverse proxy sets to the client's address (e.g. x-forwarded-for,
    /// x-real-ip); its last address is used for per-address limits. Unset: the TCP peer.
    #[arg(long, env = "ROWCAST_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<String>,

    /// Largest accepted request body in bytes.
    #[arg(long, env = "ROWCAST_MAX_BODY_BYTES", default_value = "1048576", value_parser = u32_parser("ROWCAST_MAX_BODY_BYTES", 1024, 1024 * 1024 * 1024))]
    pub max_body_bytes: u32,

    #[command(flatten)]
    pub accounts: AccountArgs,
}

impl Default for AuthArgs {
    fn default() -> Self {
        AuthArgs {
            jwt_expiry: Duration::from_secs(3600),
            session_lifetime: Duration::from_secs(30 * 24 * 3600),
            password_min_length: 8,
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            signin_failures_per_account: 5,
            signin_failures_per_address: 30,
            signin_failure_window: Duration::from_secs(15 * 60),
            auth_providers: None,
            trusted_proxy_header: None,
            max_body_bytes: 1024 * 1024,
            accounts: AccountArgs::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// What the process was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Dev,
    Migrate,
    ReloadSchema,
    Sync,
}

/// Realtime (WebSocket) limits and timings; see docs/operations.md.
#[derive(Debug, Args, Clone)]
pub struct RealtimeArgs {
    /// Largest WebSocket message a client may send (bytes, 1 KiB-16 MiB).
    #[arg(long, env = "ROWCAST_WS_MAX_MESSAGE_BYTES", default_value = "65536", value_parser = usize_parser("ROWCAST_WS_MAX_MESSAGE_BYTES", 1024, 16 << 20))]
    pub ws_max_message_bytes: usize,
    /// Subscriptions per WebSocket connection (1-10000).
    #[arg(long, env = "ROWCAST_WS_MAX_SUBSCRIPTIONS", default_value = "100", value_parser = usize_parser("ROWCAST_WS_MAX_SUBSCRIPTIONS", 1, 10_000))]
    pub ws_max_subscriptions: usize,
    /// WebSocket connections per server (1-1000000).
    #[arg(long, env = "ROWCAST_WS_MAX_CONNECTIONS", default_value = "20000", value_parser = usize_parser("ROWCAST_WS_MAX_CONNECTIONS", 1, 1_000_000))]
    pub ws_max_connections: usize,
    /// Rows one subscription's snapshot may have (1-100000000).
    #[arg(long, env = "ROWCAST_WS_SNAPSHOT_MAX_ROWS", default_value = "100000", value_parser = usize_parser("ROWCAST_WS_SNAPSHOT_MAX_ROWS", 1, 100_000_000))]
    pub ws_snapshot_max_rows: usize,
    /// Outgoing frames queued per connection before it is closed as lagging (4-65536).
    #[arg(long, env = "ROWCAST_WS_QUEUE_LEN", default_value = "1024", value_parser = usize_parser("ROWCAST_WS_QUEUE_LEN", 4, 65_536))]
    pub ws_queue_len: usize,
    /// How often the server pings each connection.
    #[arg(long, env = "ROWCAST_WS_HEARTBEAT_INTERVAL", default_value = "20s", value_parser = duration_parser("ROWCAST_WS_HEARTBEAT_INTERVAL"))]
    pub ws_heartbeat_interval: Duration,
    /// A connection from which nothing arrived for this long is closed.
    #[arg(long, env = "ROWCAST_WS_HEARTBEAT_TIMEOUT", default_value = "60s", value_parser = duration_parser("ROWCAST_WS_HEARTBEAT_TIMEOUT"))]
    pub ws_heartbeat_timeout: Duration,
}

impl Default for RealtimeArgs {
    fn default() -> Self {
        let d = RealtimeSettings::default();
        RealtimeArgs {
            ws_max_message_bytes: d.max_message_bytes,
            ws_max_subscriptions: d.max_subscriptions,
            ws_max_connections: d.max_connections,
            ws_snapshot_max_rows: d.snapshot_max_rows,
            ws_queue_len: d.queue_len,
            ws_heartbeat_interval: d.heartbeat_interval,
            ws_heartbeat_timeout: d.heartbeat_timeout,
        }
    }
}

impl RealtimeArgs {
    pub fn settings(&self) -> RealtimeSettings {
        RealtimeSettings {
            max_message_bytes: self.ws_max_message_bytes,
            max_subscriptions: self.ws_max_subscriptions,
            max_connections: self.ws_max_connections,
            snapshot_max_rows: self.ws_snapshot_max_rows,
            queue_len: self.ws_queue_len,
            heartbeat_interval: self.ws_heartbeat_interval.max(Duration::from_millis(10)),
            // A timeout shorter than the interval would close healthy idle connections.
            heartbeat_timeout: self.ws_heartbeat_timeout.max(self.ws_heartbeat_interval),
            ..RealtimeSettings::default()
        }
    }
}

/// Limits on slow and idle connections, so that one client address cannot hold the
/// server's capacity; see docs/operations.md.
#[derive(Debug, Args, Clone)]
pub struct ConnectionArgs {
    /// Longest a client may take to send a request's headers; slower connections are closed.
    #[arg(long, env = "ROWCAST_HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration_parser("ROWCAST_HTTP_HEADER_READ_TIMEOUT"))]
    pub http_header_read_timeout: Duration,
    /// Longest a WebSocket may stay open without sending `hello` (closed with 4003).
    #[arg(long, env = "ROWCAST_WS_HELLO_TIMEOUT", default_value = "5s", value_parser = duration_parser("ROWCAST_WS_HELLO_TIMEOUT"))]
    pub ws_hello_timeout: Duration,
    /// WebSocket connections one client address may hold (1-1000000).
    #[arg(long, env = "ROWCAST_WS_MAX_CONNECTIONS_PER_ADDRESS", default_value = "500", value_parser = usize_parser("ROWCAST_WS_MAX_CONNECTIONS_PER_ADDRESS", 1, 1_000_000))]
    pub ws_max_connections_per_address: usize,
    /// WebSocket connections one client address may hold before their `hello` (1-1000000).
    #[arg(long, env = "ROWCAST_WS_MAX_UNAUTHENTICATED_PER_ADDRESS", default_value = "32", value_parser = usize_parser("ROWCAST_WS_MAX_UNAUTHENTICATED_PER_ADDRESS", 1, 1_000_000))]
    pub ws_max_unauthenticated_per_address: usize,
}

impl Default for ConnectionArgs {
    fn default() -> Self {
        let d = RealtimeSettings::default();
        ConnectionArgs {
            http_header_read_timeout: Duration::from_secs(10),
            ws_hello_timeout: d.hello_timeout,
            ws_max_connections_per_address: d.max_connections_per_address,
            ws_max_unauthenticated_per_address: d.max_unauthenticated_per_address,
        }
    }
}

impl ConnectionArgs {
    /// The realtime part of these limits, added to `settings`.
    fn apply(&self, settings: RealtimeSettings) -> RealtimeSettings {
        RealtimeSettings {
            hello_timeout: self.ws_hello_timeout.max(Duration::from_millis(10)),
            max_connections_per_address: self.ws_max_connections_per_address,
            max_unauthenticated_per_address: self.ws_max_unauthenticated_per_address,
            ..settings
        }
    }
}

/// A clap value parser for a whole number in `min..=max` that names its variable on error.
pub fn usize_parser(
    setting: &'static str,
    min: usize,
    max: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{setting} expects a whole number from {min} to {max}"
        )),
    }
}

/// The token secret [`Config::for_database`] uses; tests sign tokens with it. It is public
/// (it is in the source): never deploy with it.
pub const TEST_JWT_SECRET: &str =
    "74444ac9006be180b022a2b9d786e6c48348c2e0ad9163a697f214407df3cf8b";

/// Validated settings, built once in `main` and passed explicitly from there on.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub realtime: RealtimeSettings,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub embedded: EmbeddedConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub capture: CaptureConfig,
    pub rest: RestConfig,
}

/// Validated settings of the REST data API.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Exposed schemas, in order; the first is the default profile.
    pub schemas: Vec<String>,
    pub max_rows: u64,
    pub max_embed_depth: usize,
    pub allow_unfiltered_writes: bool,
    pub idempotency_ttl: Duration,
    /// Which browser origins get CORS headers (`ROWCAST_CORS_ALLOWED_ORIGINS`).
    pub cors: CorsOrigins,
    /// Whether the request-id/log/metrics layer runs (`ROWCAST_HTTP_OBSERVE`, benches only).
    pub observe: bool,
}

/// The origins allowed to call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: browsers on other origins cannot call the API.
    None,
    /// `*`: any origin, without credentials (browsers refuse `*` with credentials).
    Any,
    /// Exactly these origins (`scheme://host[:port]`), echoed back, with credentials.
    List(Vec<String>),
}

#[cfg(test)]
mod cors_tests {
    use super::*;

    #[test]
    fn cors_origins_default_by_mode_and_validate() {
        assert_eq!(
            CorsOrigins::parse(None, Mode::Dev).unwrap(),
            CorsOrigins::Any
        );
        assert_eq!(
            CorsOrigins::parse(None, Mode::Serve).unwrap(),
            CorsOrigins::None
        );
        assert_eq!(
            CorsOrigins::parse(Some(""), Mode::Dev).unwrap(),
            CorsOrigins::None
        );
        assert_eq!(
            CorsOrigins::parse(Some("*"), Mode::Serve).unwrap(),
            CorsOrigins::Any
        );
        assert_eq!(
            CorsOrigins::parse(
                Some("https://A.example.com, http://localhost:5173"),
                Mode::Serve
            )
            .unwrap(),
            CorsOrigins::List(vec![
                "https://a.example.com".into(),
                "http://localhost:5173".into()
            ])
        );
        let dev = |args: &[&str]| {
            let mut all = vec!["rowcast", "dev"];
            all.extend_from_slice(args);
            use clap::Parser;
            Config::from_cli(Cli::try_parse_from(all).expect("parses")).expect("valid")
        };
        assert_eq!(dev(&[]).rest.cors, CorsOrigins::Any);
        assert!(dev(&[]).rest.observe);
        assert!(!dev(&["--http-observe", "false"]).rest.observe);
        assert_eq!(
            dev(&["--cors-allowed-origins", "http://localhost:5173"])
                .rest
                .cors,
            CorsOrigins::List(vec!["http://localhost:5173".into()])
        );
        assert!(CorsOrigins::parse(Some("example.com"), Mode::Serve).is_err());
        assert!(CorsOrigins::parse(Some("https://a.test/path"), Mode::Serve).is_err());
    }
}

impl CorsOrigins {
    fn parse(value: Option<&str>, mode: Mode) -> Result<CorsOrigins, ConfigError> {
        let Some(value) = value.map(str::trim) else {
            return Ok(if mode == Mode::Dev {
                CorsOrigins::Any
            } else {
                CorsOrigins::None
            });
        };
        if value.is_empty() {
            return Ok(CorsOrigins::None);
        }
        if value == "*" {
            return Ok(CorsOrigins::Any);
        }
        let bad = || {
            ConfigError {
            setting: "ROWCAST_CORS_ALLOWED_ORIGINS",
            expected: "`*` or comma-separated origins such as https://app.example.com,http://localhost:5173".into(),
        }
        };
        let mut origins = Vec::new();
        for o in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .ok_or_else(bad)?;
            if rest.is_empty()
                || !rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            {
                return Err(bad());
            }
            origins.push(o.to_ascii_lowercase());
        }
        Ok(CorsOrigins::List(origins))
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `None` means "use the embedded cluster" (only allowed in dev and migrate).
    pub url: Option<String>,
    pub pool_size: usize,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    pub app_migrations: Option<PathBuf>,
    pub migrate_on_start: bool,
    /// `ROWCAST_DATABASE_CA_FILE`: trusted CAs for TLS to Postgres (see `store::connect`).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub shutdown_timeout: Duration,
    /// Largest accepted request body; larger ones get `payload-too-large`.
    pub max_body_bytes: usize,
    /// Lower-cased name of the header a trusted proxy puts the client address in.
    pub trusted_proxy_header: Option<String>,
    /// Connections that do not finish sending a request's headers within this are closed.
    pub header_read_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub pg_bindir: Option<PathBuf>,
}

#[derive(Clone)]
pub struct AuthConfig {
    /// `None` only before `main` has loaded or generated the dev secret.
    pub jwt_secret: Option<String>,
    pub issuer: String,
    pub audience: String,
    pub algorithm: SigningAlgorithm,
    /// The PEM private key for rs256/es256, read (and checked) at start-up.
    pub private_key_pem: Option<Vec<u8>>,
    pub access_token_ttl: Duration,
    pub session_lifetime: Duration,
    pub password_min_length: usize,
    pub hash_params: HashParams,
    pub signin_limits: Limits,
    /// External providers as configured; `auth` turns their JWKS into verifying keys.
    pub providers: Vec<ProviderConfig>,
    /// Sign-up controls, email flows, mail and hashing limits.
    pub accounts: AccountsConfig,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithm", &self.algorithm)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

/// A setting that failed validation: which one, and what it expects.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {expected}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub expected: String,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let (mode, args) =
            match cli.command {
                Command::Serve(a) => (Mode::Serve, a),
                Command::Dev(a) => (Mode::Dev, a),
                Command::Migrate(a) => (Mode::Migrate, a),
                Command::ReloadSchema(a) => (Mode::ReloadSchema, a),
                Command::Sync(a) => (Mode::Sync, a.server),
                Command::Token(_) | Command::Healthcheck(_) => return Err(ConfigError {
                    setting: "command",
                    expected:
                        "serve, dev, migrate or reload-schema (token and healthcheck run without a server config)"
                            .into(),
                }),
            };
        Config::from_args(mode, args)
    }

    pub fn from_args(mode: Mode, args: ServerArgs) -> Result<Config, ConfigError> {
        let url = args.database_url.filter(|u| !u.trim().is_empty());
        // The URL's syntax is checked by `store::connect` when `main` builds the connector
        // (still before anything starts); this module does not know the parser.
        if url.is_none() && (mode == Mode::Serve || mode == Mode::ReloadSchema) {
            return Err(ConfigError {
                setting: "DATABASE_URL",
                expected: "a Postgres connection string (required by `serve`; use `rowcast dev` for an embedded database)".into(),
            });
        }
        if let Some(file) = &args.database_ca_file {
            if !file.is_file() {
                return Err(ConfigError {
                    setting: "ROWCAST_DATABASE_CA_FILE",
                    expected: format!("an existing PEM file (got {})", file.display()),
                });
            }
        }
        if let Some(dir) = &args.app_migrations {
            if !dir.is_dir() {
                return Err(ConfigError {
                    setting: "ROWCAST_APP_MIGRATIONS",
                    expected: format!("an existing directory (got {})", dir.display()),
                });
            }
        }
        let format = args.log_format.unwrap_or(match mode {
            Mode::Serve => LogFormat::Json,
            Mode::Dev | Mode::Migrate | Mode::ReloadSchema | Mode::Sync => LogFormat::Pretty,
        });
        if tracing_subscriber::EnvFilter::try_new(&args.log).is_err() {
            return Err(ConfigError {
                setting: "ROWCAST_LOG",
                expected: "a tracing filter such as `info` or `rowcast=debug,info`".into(),
            });
        }
        let jwt_secret = args.jwt.jwt_secret.clone().filter(|s| !s.is_empty());
        match &jwt_secret {
            Some(s) if s.len() < 32 => {
                return Err(ConfigError {
                    setting: "ROWCAST_JWT_SECRET",
                    expected: "at least 32 bytes of secret (e.g. `openssl rand -hex 32`)".into(),
                })
            }
            // Refused wherever the server signs tokens with it (see `auth::weak_secret`).
            Some(s) if matches!(mode, Mode::Serve | Mode::Dev) => {
                if let Some(why) = weak_secret::weakness(s) {
                    return Err(ConfigError {
                        setting: "ROWCAST_JWT_SECRET",
                        expected: format!(
                            "a random secret (this one is refused: {why}); generate one with `openssl rand -hex 32`"
                        ),
                    });
                }
            }
            None if mode == Mode::Serve && args.jwt.jwt_algorithm == SigningAlgorithm::Hs256 => {
                return Err(ConfigError {
                    setting: "ROWCAST_JWT_SECRET",
                    expected:
                        "a secret of at least 32 bytes for signing tokens (required by `serve`)"
                            .into(),
                })
            }
            _ => {}
        }
        let rest = RestConfig::from_args(&args.rest, mode)?;
        let trusted_proxy_header = match args.auth.trusted_proxy_header.as_deref().map(str::trim) {
            None | Some("") => None,
            // An RFC 9110 token: what the HTTP layer accepts as a header name.
            Some(h)
                if h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) =>
            {
                Some(h.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(ConfigError {
                    setting: "ROWCAST_TRUSTED_PROXY_HEADER",
                    expected: "an HTTP header name such as x-forwarded-for".into(),
                })
            }
        };
        let mut auth = auth_config(&args.auth, &args.jwt, mode, jwt_secret)?;
        if auth.accounts.outbox_default {
            auth.accounts.mail.delivery = MailDelivery::Outbox(args.data_dir.join("outbox"));
        }
        Ok(Config {
            rest,
            mode,
            realtime: args.connections.apply(args.realtime.settings()),
            database: DatabaseConfig {
                url,
                pool_size: args.pool_size,
                statement_timeout: args.statement_timeout,
                connect_timeout: args.connect_timeout,
                app_migrations: args.app_migrations,
                migrate_on_start: args.migrate_on_start,
                ca_file: args.database_ca_file,
            },
            http: HttpConfig {
                listen: args.listen,
                shutdown_timeout: args.shutdown_timeout,
                max_body_bytes: args.auth.max_body_bytes as usize,
                trusted_proxy_header,
                header_read_timeout: args
                    .connections
                    .http_header_read_timeout
                    .max(Duration::from_millis(10)),
            },
            embedded: EmbeddedConfig {
                data_dir: args.data_dir,
                pg_bindir: args.pg_bindir,
            },
            log: LogConfig {
                format,
                filter: args.log,
            },
            auth,
            capture: CaptureConfig {
                poll_interval: args.poll_interval,
                notify: args.notify,
                retention: (!args.retention.is_zero()).then_some(args.retention),
                retention_max_changes: (args.retention_max_changes > 0)
                    .then_some(args.retention_max_changes),
                ..CaptureConfig::default()
            },
        })
    }

    /// Defaults as `rowcast serve` would have them, against `database_url`, listening on an
    /// ephemeral loopback port. Used by tests and embedders.
    pub fn for_database(database_url: &str) -> Config {
        let args = ServerArgs {
            realtime: RealtimeArgs::default(),
            connections: ConnectionArgs::default(),
            database_url: Some(database_url.to_string()),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            database_ca_file: None,
            shutdown_timeout: Duration::from_secs(10),
            app_migrations: None,
            migrate_on_start: true,
            data_dir: PathBuf::from(".rowcast"),
            pg_bindir: None,
            log_format: None,
            log: "info".into(),
            jwt: JwtArgs {
                jwt_secret: Some(TEST_JWT_SECRET.into()),
                ..JwtArgs::default()
            },
            rest: RestArgs {
                rest_schemas: "public".into(),
                rest_max_rows: 1000,
                rest_max_embed_depth: 4,
                rest_allow_unfiltered_writes: false,
                rest_idempotency_ttl: Duration::from_secs(24 * 3600),
                cors_allowed_origins: None,
                http_observe: true,
            },
            poll_interval: Duration::from_millis(50),
            notify: true,
            retention: Duration::from_secs(7 * 24 * 3600),
            retention_max_changes: 0,
            auth: AuthArgs::default(),
        };
        match Config::from_args(Mode::Serve, args) {
            Ok(c) => c,
            Err(e) => panic!("Config::for_database needs a valid connection string: {e}"),
        }
    }
}

impl RestConfig {
    fn from_args(args: &RestArgs, mode: Mode) -> Result<RestConfig, ConfigError> {
        let schemas: Vec<String> = args
            .rest_schemas
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if schemas.is_empty() {
            return Err(ConfigError {
                setting: "ROWCAST_REST_SCHEMAS",
                expected: "one or more schema names separated by commas, e.g. `public`".into(),
            });
        }
        let too_big = |setting: &'static str| ConfigError {
            setting,
            expected: "a smaller whole number".into(),
        };
        Ok(RestConfig {
            schemas,
            max_rows: args.rest_max_rows,
            max_embed_depth: usize::try_from(args.rest_max_embed_depth)
                .map_err(|_| too_big("ROWCAST_REST_MAX_EMBED_DEPTH"))?,
            allow_unfiltered_writes: args.rest_allow_unfiltered_writes,
            idempotency_ttl: args.rest_idempotency_ttl,
            cors: CorsOrigins::parse(args.cors_allowed_origins.as_deref(), mode)?,
            observe: args.http_observe,
        })
    }
}

/// A clap value parser for a whole number of at least 1 that names its variable on error.
pub fn positive_parser(
    setting: &'static str,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{setting} expects a whole number of at least 1")),
    }
}

/// The auth part of [`Config`]: reads and checks the key file and the providers.
fn auth_config(
    args: &AuthArgs,
    jwt: &JwtArgs,
    mode: Mode,
    jwt_secret: Option<String>,
) -> Result<AuthConfig, ConfigError> {
    let (issuer, audience) = (jwt.jwt_issuer.clone(), jwt.jwt_audience.clone());
    let private_key_pem =
        match (jwt.jwt_algorithm, &jwt.jwt_private_key_file) {
            (SigningAlgorithm::Hs256, _) => None,
            (_, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| ConfigError {
                    setting: "ROWCAST_JWT_PRIVATE_KEY_FILE",
                    expected: format!("a readable PEM private key file ({}: {e})", path.display()),
                })?;
                // Whether the key matches the algorithm is checked when `auth` builds its
                // keys at start-up (`app::start`), before anything is served.
                Some(pem)
            }
            (_, None) if mode == Mode::Migrate => None,
            (_, None) => return Err(ConfigError {
                setting: "ROWCAST_JWT_PRIVATE_KEY_FILE",
                expected:
                    "a PEM private key file (required when ROWCAST_JWT_ALGORITHM is rs256 or es256)"
                        .into(),
            }),
        };
    let providers = match &args.auth_providers {
        Some(json) if !json.trim().is_empty() => parse_providers(json, &issuer)?,
        _ => Vec::new(),
    };
    Ok(AuthConfig {
        jwt_secret,
        issuer,
        audience,
        algorithm: jwt.jwt_algorithm,
        private_key_pem,
        access_token_ttl: args.jwt_expiry,
        session_lifetime: args.session_lifetime,
        password_min_length: args.password_min_length as usize,
        hash_params: HashParams {
            memory_kib: args.argon2_memory_kib,
            iterations: args.argon2_iterations,
            parallelism: args.argon2_parallelism,
        },
        signin_limits: Limits {
            per_account: args.signin_failures_per_account,
            per_address: args.signin_failures_per_address,
            window: args.signin_failure_window,
        },
        providers,
        accounts: accounts_config(&args.accounts, mode)?,
    })
}

/// `ROWCAST_AUTH_PROVIDERS`: a JSON array of providers, each with inline `jwks` or a
/// `jwks_file`.
pub fn parse_providers(json: &str, own_issuer: &str) -> Result<Vec<ProviderConfig>, ConfigError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: String,
        issuer: String,
        audience: String,
        jwks: Option<serde_json::Value>,
        jwks_file: Option<PathBuf>,
    }
    let bad = |expected: String| ConfigError {
        setting: "ROWCAST_AUTH_PROVIDERS",
        expected,
    };
    let entries: Vec<Entry> = serde_json::from_str(json).map_err(|e| {
        bad(format!(
            "a JSON array of {{\"name\", \"issuer\", \"audience\", \"jwks\" or \"jwks_file\"}} ({e})"
        ))
    })?;
    let mut providers: Vec<ProviderConfig> = Vec::new();
    for entry in entries {
        let jwks = match (entry.jwks, entry.jwks_file) {
            (Some(jwks), None) => jwks,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    bad(format!(
                        "provider {}: cannot read {} ({e})",
                        entry.name,
                        path.display()
                    ))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    bad(format!(
                        "provider {}: {} is not JSON ({e})",
                        entry.name,
                        path.display()
                    ))
                })?
            }
            _ => {
                return Err(bad(format!(
                    "provider {}: exactly one of jwks or jwks_file",
                    entry.name
                )))
            }
        };
        if entry.issuer == own_issuer || providers.iter().any(|p| p.issuer == entry.issuer) {
            return Err(bad(format!(
                "provider {}: issuer {} is already used (each issuer once, not ROWCAST_JWT_ISSUER)",
                entry.name, entry.issuer
            )));
        }
        providers.push(ProviderConfig {
            name: entry.name,
            issuer: entry.issuer,
            audience: entry.audience,
            jwks,
        });
    }
    Ok(providers)
}

fn jwt_algorithm_parser(s: &str) -> Result<SigningAlgorithm, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "hs256" => Ok(SigningAlgorithm::Hs256),
        "rs256" => Ok(SigningAlgorithm::Rs256),
        "es256" => Ok(SigningAlgorithm::Es256),
        _ => Err("ROWCAST_JWT_ALGORITHM expects hs256, rs256 or es256".into()),
    }
}

/// A clap value parser for a whole number in `min..=max` that names its variable on error.
pub fn u32_parser(
    setting: &'static str,
    min: u32,
    max: u32,
) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{setting} expects a whole number from {min} to {max}"
        )),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "ROWCAST_LISTEN expects host:port with an IP address, e.g. 127.0.0.1:8080 or 0.0.0.0:8080".to_string())
}

fn parse_pool_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err("ROWCAST_POOL_SIZE expects a whole number from 1 to 1000".into()),
    }
}

/// A clap value parser for a duration like `30s` or `250ms` that names its variable on error.
pub fn duration_parser(
    setting: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        humantime::parse_duration(s.trim())
            .map_err(|_| format!("{setting} expects a duration such as 30s, 500ms or 2m"))
    }
}

/// A clap value parser for a duration within `[min, max]` that names its variable on error.
pub fn bounded_duration_parser(
    setting: &'static str,
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |s: &str| match humantime::parse_duration(s.trim()) {
        Ok(d) if d >= min && d <= max => Ok(d),
        _ => Err(format!(
            "{setting} expects a duration from {} to {}, such as 200ms",
            humantime::format_duration(min),
            humantime::format_duration(max)
        )),
    }
}

/// A clap value parser for a whole number that names its variable on error.
pub fn u64_parser(
    setting: &'static str,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("{setting} expects a whole number (0 or more)"))
    }
}

/// A clap value parser for booleans that names its variable on error.
pub fn bool_parser(
    setting: &'static str,
) -> impl Fn(&str) -> Result<bool, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{setting} expects true or false")),
    }
}

// ---- Accounts: sign-up controls, email flows, mail, hashing limits -----------------------

/// Settings of account sign-up and the email flows (confirmation, recovery, magic link,
/// email change), the mail they send, and the password-hashing memory budget.
#[derive(Debug, Args, Clone)]
pub struct AccountArgs {
    /// Memory all concurrent password hashes together may use, in MiB; beyond it hashing
    /// requests queue briefly, then get 429 (the number of concurrent hashes is this divided
    /// by ROWCAST_ARGON2_MEMORY_KIB, at least 1).
    #[arg(long, env = "ROWCAST_PASSWORD_HASH_MEMORY_BUDGET_MIB", default_value = "128", value_parser = u32_parser("ROWCAST_PASSWORD_HASH_MEMORY_BUDGET_MIB", 1, 1024 * 1024))]
    pub password_hash_memory_budget_mib: u32,
    /// Allow sign-up with email (and password, or by email link/code).
    #[arg(long, env = "ROWCAST_AUTH_EMAIL_SIGNUP", default_value = "true", action = clap::ArgAction::Set, value_parser = bool_parser("ROWCAST_AUTH_EMAIL_SIGNUP"))]
    pub auth_email_signup: bool,
    /// Allow anonymous sign-in (`POST /auth/v1/signup` without email and password).
    #[arg(long, env = "ROWCAST_AUTH_ANONYMOUS_SIGNIN", default_value = "true", action = clap::ArgAction::Set, value_parser = bool_parser("ROWCAST_AUTH_ANONYMOUS_SIGNIN"))]
    pub auth_anonymous_signin: bool,
    /// New addresses must be confirmed by mail before password sign-in, and an email change
    /// takes effect only once the new address is confirmed. Needs mail (SMTP, or `dev`).
    #[arg(long, env = "ROWCAST_AUTH_EMAIL_CONFIRMATION", default_value = "false", action = clap::ArgAction::Set, value_parser = bool_parser("ROWCAST_AUTH_EMAIL_CONFIRMATION"))]
    pub auth_email_confirmation: bool,
    /// Email sign-ups per client address per hour.
    #[arg(long, env = "ROWCAST_AUTH_SIGNUPS_PER_ADDRESS", default_value = "30", value_parser = u32_parser("ROWCAST_AUTH_SIGNUPS_PER_ADDRESS", 1, 1_000_000))]
    pub auth_signups_per_address: u32,
    /// Anonymous sign-ins per client address per hour.
    #[arg(long, env = "ROWCAST_AUTH_ANONYMOUS_PER_ADDRESS", default_value = "30", value_parser = u32_parser("ROWCAST_AUTH_ANONYMOUS_PER_ADDRESS", 1, 1_000_000))]
    pub auth_anonymous_per_address: u32,
    /// Auth mails per recipient address per hour, and per account per hour.
    #[arg(long, env = "ROWCAST_AUTH_MAILS_PER_RECIPIENT", default_value = "5", value_parser = u32_parser("ROWCAST_AUTH_MAILS_PER_RECIPIENT", 1, 1_000_000))]
    pub auth_mails_per_recipient: u32,
    /// Mail-sending requests (recover, otp, sign-up, email change) per client address per hour.
    #[arg(long, env = "ROWCAST_AUTH_MAIL_REQUESTS_PER_ADDRESS", default_value = "30", value_parser = u32_parser("ROWCAST_AUTH_MAIL_REQUESTS_PER_ADDRESS", 1, 1_000_000))]
    pub auth_mail_requests_per_address: u32,
    /// Delete anonymous users with no sign-in or refresh for this long (e.g. 30d); `0` (the
    /// default) keeps them.
    #[arg(long, env = "ROWCAST_AUTH_ANONYMOUS_CLEANUP_AFTER", default_value = "0", value_parser = duration_parser("ROWCAST_AUTH_ANONYMOUS_CLEANUP_AFTER"))]
    pub auth_anonymous_cleanup_after: Duration,
    /// Lifetime of emailed links and codes (1m-24h).
    #[arg(long, env = "ROWCAST_AUTH_EMAIL_TOKEN_TTL", default_value = "15m", value_parser = bounded_duration_parser("ROWCAST_AUTH_EMAIL_TOKEN_TTL", Duration::from_secs(60), Duration::from_secs(24 * 3600)))]
    pub auth_email_token_ttl: Duration,
    /// This server's public base URL, used in emailed links (default: http:// and the
    /// listen address).
    #[arg(long, env = "ROWCAST_AUTH_EXTERNAL_URL")]
    pub auth_external_url: Option<String>,
    /// The app's URL: where emailed links lead after verification by default.
    #[arg(long, env = "ROWCAST_AUTH_SITE_URL")]
    pub auth_site_url: Option<String>,
    /// Further allowed `redirect_to` URL prefixes, comma-separated (the site URL's origin is
    /// always allowed).
    #[arg(long, env = "ROWCAST_AUTH_REDIRECT_URLS")]
    pub auth_redirect_urls: Option<String>,
    /// Folder with mail template files (confirmation.txt, recovery.txt, magic_link.txt,
    /// email_change.txt) overriding the built-in ones.
    #[arg(long, env = "ROWCAST_AUTH_MAIL_TEMPLATES")]
    pub auth_mail_templates: Option<PathBuf>,
    /// `dev` without SMTP: folder the mails are written to (default DATA_DIR/outbox).
    #[arg(long, env = "ROWCAST_AUTH_OUTBOX")]
    pub auth_outbox: Option<PathBuf>,
    /// SMTP server for auth mail; unset: no mail (`dev` writes to the outbox).
    #[arg(long, env = "ROWCAST_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port.
    #[arg(long, env = "ROWCAST_SMTP_PORT", default_value = "587", value_parser = u32_parser("ROWCAST_SMTP_PORT", 1, 65535))]
    pub smtp_port: u32,
    /// SMTP transport security: starttls, tls (implicit, port 465) or none.
    #[arg(long, env = "ROWCAST_SMTP_TLS", value_enum, default_value = "starttls")]
    pub smtp_tls: SmtpTls,
    /// SMTP user name.
    #[arg(long, env = "ROWCAST_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP password (never logged).
    #[arg(long, env = "ROWCAST_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// Sender of auth mail, e.g. `App <no-reply@example.com>`.
    #[arg(
        long,
        env = "ROWCAST_SMTP_FROM",
        default_value = "Rowcast <no-reply@localhost>"
    )]
    pub smtp_from: String,
}

impl Default for AccountArgs {
    fn default() -> Self {
        AccountArgs {
            password_hash_memory_budget_mib: 128,
            auth_email_signup: true,
            auth_anonymous_signin: true,
            auth_email_confirmation: false,
            auth_signups_per_address: 30,
            auth_anonymous_per_address: 30,
            auth_mails_per_recipient: 5,
            auth_mail_requests_per_address: 30,
            auth_anonymous_cleanup_after: Duration::ZERO,
            auth_email_token_ttl: Duration::from_secs(15 * 60),
            auth_external_url: None,
            auth_site_url: None,
            auth_redirect_urls: None,
            auth_mail_templates: None,
            auth_outbox: None,
            smtp_host: None,
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_username: None,
            smtp_password: None,
            smtp_from: "Rowcast <no-reply@localhost>".into(),
        }
    }
}

/// Validated [`AccountArgs`].
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub hash_memory_budget_bytes: usize,
    pub email_signup: bool,
    pub anonymous_signin: bool,
    pub email_confirmation: bool,
    pub signup_limits: SignUpLimits,
    pub anonymous_cleanup_after: Option<Duration>,
    pub email_token_ttl: Duration,
    /// `None`: derived from the listen address at start-up.
    pub external_url: Option<String>,
    pub site_url: Option<String>,
    pub redirect_urls: Vec<String>,
    pub mail: MailConfig,
    /// `dev`'s default outbox is DATA_DIR/outbox, filled in by `main` (like the dev secret).
    pub outbox_default: bool,
}

fn accounts_config(args: &AccountArgs, mode: Mode) -> Result<AccountsConfig, ConfigError> {
    use {MailConfig, MailDelivery, SmtpConfig};
    let url = |setting: &'static str, v: &Option<String>| -> Result<Option<String>, ConfigError> {
        match v.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(u)
                if (u.starts_with("http://") || u.starts_with("https://"))
                    && !u.contains(char::is_whitespace) =>
            {
                Ok(Some(u.trim_end_matches('/').to_string()))
            }
            Some(_) => Err(ConfigError {
                setting,
                expected: "an http:// or https:// URL".into(),
            }),
        }
    };
    let external_url = url("ROWCAST_AUTH_EXTERNAL_URL", &args.auth_external_url)?;
    let site_url = url("ROWCAST_AUTH_SITE_URL", &args.auth_site_url)?;
    let mut redirect_urls = Vec::new();
    for u in args.auth_redirect_urls.iter().flat_map(|s| s.split(',')) {
        if let Some(u) = url("ROWCAST_AUTH_REDIRECT_URLS", &Some(u.to_string()))? {
            redirect_urls.push(u);
        }
    }
    let host = args
        .smtp_host
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty());
    let (delivery, outbox_default) = match (host, &args.auth_outbox) {
        (Some(host), _) => (
            MailDelivery::Smtp(SmtpConfig {
                host: host.to_string(),
                port: u16::try_from(args.smtp_port).map_err(|_| ConfigError {
                    setting: "ROWCAST_SMTP_PORT",
                    expected: "a port from 1 to 65535".into(),
                })?,
                tls: args.smtp_tls,
                username: args.smtp_username.clone().filter(|u| !u.is_empty()),
                password: args.smtp_password.clone().filter(|p| !p.is_empty()),
            }),
            false,
        ),
        (None, Some(dir)) if mode == Mode::Dev => (MailDelivery::Outbox(dir.clone()), false),
        (None, None) if mode == Mode::Dev => (MailDelivery::Disabled, true),
        (None, _) => (MailDelivery::Disabled, false),
    };
    if args.auth_email_confirmation && matches!(delivery, MailDelivery::Disabled) && !outbox_default
    {
        return Err(ConfigError {
            setting: "ROWCAST_AUTH_EMAIL_CONFIRMATION",
            expected: "mail to be configured (set ROWCAST_SMTP_HOST) when confirmation is on"
                .into(),
        });
    }
    if args.smtp_from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(ConfigError {
            setting: "ROWCAST_SMTP_FROM",
            expected: "a mailbox such as `App <no-reply@example.com>`".into(),
        });
    }
    Ok(AccountsConfig {
        hash_memory_budget_bytes: args.password_hash_memory_budget_mib as usize * 1024 * 1024,
        email_signup: args.auth_email_signup,
        anonymous_signin: args.auth_anonymous_signin,
        email_confirmation: args.auth_email_confirmation,
        signup_limits: SignUpLimits {
            email_per_address: args.auth_signups_per_address,
            anonymous_per_address: args.auth_anonymous_per_address,
            mail_per_recipient: args.auth_mails_per_recipient,
            mail_per_address: args.auth_mail_requests_per_address,
        },
        anonymous_cleanup_after: (!args.auth_anonymous_cleanup_after.is_zero())
            .then_some(args.auth_anonymous_cleanup_after),
        email_token_ttl: args.auth_email_token_ttl,
        external_url,
        site_url,
        redirect_urls,
        mail: MailConfig {
            delivery,
            from: args.smtp_from.clone(),
            templates: args.auth_mail_templates.clone(),
        },
        outbox_default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        Config::from_cli(cli).map_err(|e| e.to_string())
    }

    #[test]
    fn serve_requires_database_url() {
        let err = parse(&["rowcast", "serve", "--database-url", ""]).unwrap_err();
        assert!(err.contains("DATABASE_URL"), "{err}");
        let err = parse(&[
            "rowcast",
            "serve",
            "--database-url",
            "postgres://h/db",
            "--jwt-secret",
            "",
        ])
        .unwrap_err();
        assert!(err.contains("ROWCAST_JWT_SECRET"), "{err}");
        let err = parse(&[
            "rowcast",
            "serve",
            "--database-url",
            "",
            "--jwt-secret",
            "short",
        ])
        .unwrap_err();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = parse(&["rowcast", "dev", "--pool-size", "0"]).unwrap_err();
        assert!(err.contains("ROWCAST_POOL_SIZE"), "{err}");
        let err = parse(&["rowcast", "dev", "--statement-timeout", "soon"]).unwrap_err();
        assert!(err.contains("ROWCAST_STATEMENT_TIMEOUT"), "{err}");
        let err = parse(&["rowcast", "dev", "--listen", "localhost"]).unwrap_err();
        assert!(err.contains("ROWCAST_LISTEN"), "{err}");
    }

    #[test]
    fn capture_settings_are_validated() {
        let err = parse(&["rowcast", "dev", "--poll-interval", "1ms"]).unwrap_err();
        assert!(err.contains("ROWCAST_POLL_INTERVAL"), "{err}");
        let err = parse(&["rowcast", "dev", "--notify", "maybe"]).unwrap_err();
        assert!(err.contains("ROWCAST_NOTIFY"), "{err}");
        let err = parse(&["rowcast", "dev", "--retention", "forever"]).unwrap_err();
        assert!(err.contains("ROWCAST_RETENTION"), "{err}");
        let err = parse(&["rowcast", "dev", "--retention-max-changes=-5"]).unwrap_err();
        assert!(err.contains("ROWCAST_RETENTION_MAX_CHANGES"), "{err}");
        let c = parse(&["rowcast", "dev", "--retention", "0", "--notify", "off"]).expect("valid");
        assert_eq!(c.capture.retention, None);
        assert!(!c.capture.notify);
        let c = parse(&["rowcast", "sync", "enable", "public.todos"]).expect("valid");
        assert_eq!(c.mode, Mode::Sync);
    }

    #[test]
    fn auth_settings_are_validated() {
        let base = ["rowcast", "serve", "--database-url", "postgres://h/db"];
        let with = |extra: &[&str]| {
            let mut args = base.to_vec();
            args.extend_from_slice(extra);
            parse(&args)
        };
        // A key pair needs its key file, and then no secret.
        let err = with(&["--jwt-algorithm", "rs256"]).unwrap_err();
        assert!(err.contains("ROWCAST_JWT_PRIVATE_KEY_FILE"), "{err}");
        let err = with(&[
            "--jwt-algorithm",
            "rs256",
            "--jwt-private-key-file",
            "/nonexistent.pem",
        ])
        .unwrap_err();
        assert!(err.contains("ROWCAST_JWT_PRIVATE_KEY_FILE"), "{err}");
        let err = with(&["--jwt-algorithm", "none"]).unwrap_err();
        assert!(err.contains("ROWCAST_JWT_ALGORITHM"), "{err}");
        let secret = ["--jwt-secret", TEST_JWT_SECRET];
        let err = with(&[&secret[..], &["--auth-providers", "{not json"]].concat()).unwrap_err();
        assert!(err.contains("ROWCAST_AUTH_PROVIDERS"), "{err}");
        // (A JWKS with no usable key is refused when `auth` builds the keys: see
        // `auth::provider`'s tests and `app::token_keys`.)
        let err = with(&[&secret[..], &["--password-min-length", "0"]].concat()).unwrap_err();
        assert!(err.contains("ROWCAST_PASSWORD_MIN_LENGTH"), "{err}");
        let c = with(&secret).expect("defaults parse");
        assert_eq!(c.auth.access_token_ttl, Duration::from_secs(3600));
        assert_eq!(c.http.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn account_settings_are_validated() {
        use MailDelivery;
        let secret = ["--jwt-secret", TEST_JWT_SECRET];
        let serve = |extra: &[&str]| {
            let mut args = vec!["rowcast", "serve", "--database-url", "postgres://h/db"];
            args.extend_from_slice(&secret);
            args.extend_from_slice(extra);
            parse(&args)
        };
        // Confirmation needs mail; serve has none without SMTP.
        let err = serve(&["--auth-email-confirmation", "true"]).unwrap_err();
        assert!(err.contains("ROWCAST_AUTH_EMAIL_CONFIRMATION"), "{err}");
        let c = serve(&[
            "--smtp-host",
            "smtp.example.com",
            "--smtp-password",
            "pw",
            "--auth-email-confirmation",
            "true",
        ])
        .expect("confirmation with SMTP");
        assert!(matches!(
            c.auth.accounts.mail.delivery,
            MailDelivery::Smtp(_)
        ));
        assert!(
            !format!("{c:?}").contains("\"pw\""),
            "the SMTP password is in Debug output"
        );
        let c = serve(&[]).expect("defaults parse");
        assert!(matches!(
            c.auth.accounts.mail.delivery,
            MailDelivery::Disabled
        ));
        assert_eq!(c.auth.accounts.hash_memory_budget_bytes, 128 << 20);
        assert_eq!(c.auth.accounts.anonymous_cleanup_after, None);
        for (flag, value, setting) in [
            ("--auth-site-url", "ftp://x", "ROWCAST_AUTH_SITE_URL"),
            ("--smtp-from", "not a mailbox", "ROWCAST_SMTP_FROM"),
            (
                "--auth-email-token-ttl",
                "1s",
                "ROWCAST_AUTH_EMAIL_TOKEN_TTL",
            ),
        ] {
            let err = serve(&[flag, value]).unwrap_err();
            assert!(err.contains(setting), "{err}");
        }
        // dev without SMTP writes mail to DATA_DIR/outbox.
        let c = parse(&["rowcast", "dev", "--data-dir", "/tmp/rc"]).expect("dev parses");
        match &c.auth.accounts.mail.delivery {
            MailDelivery::Outbox(dir) => assert_eq!(dir, &PathBuf::from("/tmp/rc/outbox")),
            other => panic!("dev mail goes to {other:?}"),
        }
    }

    #[test]
    fn dev_defaults_are_valid() {
        let c = parse(&["rowcast", "dev"]).expect("defaults parse");
        assert_eq!(c.mode, Mode::Dev);
        assert_eq!(c.log.format, LogFormat::Pretty);
        assert_eq!(c.database.statement_timeout, Duration::from_secs(30));
    }
}
