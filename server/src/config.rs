//! Settings: the command line and `ROWCAST_*` / `DATABASE_URL` environment, parsed and
//! validated once at startup into a plain [`Config`] that is passed down explicitly.
//!
//! Every flag has an environment variable; a bad value stops the process with a message
//! that names the variable and what it expects.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

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
}

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
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

    #[command(flatten)]
    pub rest: RestArgs,
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

    /// Largest request body the REST API accepts (bytes; e.g. 1048576).
    #[arg(long = "rest-max-body-bytes", env = "ROWCAST_REST_MAX_BODY_BYTES", default_value = "1048576", value_parser = positive_parser("ROWCAST_REST_MAX_BODY_BYTES"))]
    pub rest_max_body_bytes: u64,

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
}

/// The token secret [`Config::for_database`] uses; tests sign tokens with it.
pub const TEST_JWT_SECRET: &str = "rowcast-test-secret-not-for-production-use";

/// Validated settings, built once in `main` and passed explicitly from there on.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub embedded: EmbeddedConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub rest: RestConfig,
}

/// Validated settings of the REST data API.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Exposed schemas, in order; the first is the default profile.
    pub schemas: Vec<String>,
    pub max_body_bytes: usize,
    pub max_rows: u64,
    pub max_embed_depth: usize,
    pub allow_unfiltered_writes: bool,
    pub idempotency_ttl: Duration,
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
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub shutdown_timeout: Duration,
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
            .finish()
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
        let (mode, args) = match cli.command {
            Command::Serve(a) => (Mode::Serve, a),
            Command::Dev(a) => (Mode::Dev, a),
            Command::Migrate(a) => (Mode::Migrate, a),
            Command::ReloadSchema(a) => (Mode::ReloadSchema, a),
        };
        Config::from_args(mode, args)
    }

    pub fn from_args(mode: Mode, args: ServerArgs) -> Result<Config, ConfigError> {
        let url = args.database_url.filter(|u| !u.trim().is_empty());
        if let Some(url) = &url {
            // The error text of the parser can echo the string, which may hold a password.
            tokio_postgres::Config::from_str(url).map_err(|_| ConfigError {
                setting: "DATABASE_URL",
                expected:
                    "a Postgres connection string such as postgres://user:password@host:5432/dbname"
                        .into(),
            })?;
        } else if mode == Mode::Serve || mode == Mode::ReloadSchema {
            return Err(ConfigError {
                setting: "DATABASE_URL",
                expected: "a Postgres connection string (required by `serve`; use `rowcast dev` for an embedded database)".into(),
            });
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
            Mode::Dev | Mode::Migrate | Mode::ReloadSchema => LogFormat::Pretty,
        });
        if tracing_subscriber::EnvFilter::try_new(&args.log).is_err() {
            return Err(ConfigError {
                setting: "ROWCAST_LOG",
                expected: "a tracing filter such as `info` or `rowcast=debug,info`".into(),
            });
        }
        let jwt_secret = args.jwt_secret.filter(|s| !s.is_empty());
        match &jwt_secret {
            Some(s) if s.len() < 32 => {
                return Err(ConfigError {
                    setting: "ROWCAST_JWT_SECRET",
                    expected: "at least 32 bytes of secret (e.g. `openssl rand -hex 32`)".into(),
                })
            }
            None if mode == Mode::Serve => {
                return Err(ConfigError {
                    setting: "ROWCAST_JWT_SECRET",
                    expected:
                        "a secret of at least 32 bytes for signing tokens (required by `serve`)"
                            .into(),
                })
            }
            _ => {}
        }
        let rest = RestConfig::from_args(&args.rest)?;
        Ok(Config {
            rest,
            mode,
            database: DatabaseConfig {
                url,
                pool_size: args.pool_size,
                statement_timeout: args.statement_timeout,
                connect_timeout: args.connect_timeout,
                app_migrations: args.app_migrations,
                migrate_on_start: args.migrate_on_start,
            },
            http: HttpConfig {
                listen: args.listen,
                shutdown_timeout: args.shutdown_timeout,
            },
            embedded: EmbeddedConfig {
                data_dir: args.data_dir,
                pg_bindir: args.pg_bindir,
            },
            log: LogConfig {
                format,
                filter: args.log,
            },
            auth: AuthConfig {
                jwt_secret,
                issuer: args.jwt_issuer,
                audience: args.jwt_audience,
            },
        })
    }

    /// Defaults as `rowcast serve` would have them, against `database_url`, listening on an
    /// ephemeral loopback port. Used by tests and embedders.
    pub fn for_database(database_url: &str) -> Config {
        let args = ServerArgs {
            database_url: Some(database_url.to_string()),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            app_migrations: None,
            migrate_on_start: true,
            data_dir: PathBuf::from(".rowcast"),
            pg_bindir: None,
            log_format: None,
            log: "info".into(),
            jwt_secret: Some(TEST_JWT_SECRET.into()),
            jwt_issuer: "rowcast".into(),
            jwt_audience: "rowcast".into(),
            rest: RestArgs {
                rest_schemas: "public".into(),
                rest_max_body_bytes: 1024 * 1024,
                rest_max_rows: 1000,
                rest_max_embed_depth: 4,
                rest_allow_unfiltered_writes: false,
                rest_idempotency_ttl: Duration::from_secs(24 * 3600),
            },
        };
        match Config::from_args(Mode::Serve, args) {
            Ok(c) => c,
            Err(e) => panic!("Config::for_database needs a valid connection string: {e}"),
        }
    }
}

impl RestConfig {
    fn from_args(args: &RestArgs) -> Result<RestConfig, ConfigError> {
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
            max_body_bytes: usize::try_from(args.rest_max_body_bytes)
                .map_err(|_| too_big("ROWCAST_REST_MAX_BODY_BYTES"))?,
            max_rows: args.rest_max_rows,
            max_embed_depth: usize::try_from(args.rest_max_embed_depth)
                .map_err(|_| too_big("ROWCAST_REST_MAX_EMBED_DEPTH"))?,
            allow_unfiltered_writes: args.rest_allow_unfiltered_writes,
            idempotency_ttl: args.rest_idempotency_ttl,
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
    fn bad_database_url_does_not_echo_it() {
        let err = parse(&[
            "rowcast",
            "serve",
            "--database-url",
            "postgres://u:s3cret@h:notaport/x",
        ])
        .unwrap_err();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn dev_defaults_are_valid() {
        let c = parse(&["rowcast", "dev"]).expect("defaults parse");
        assert_eq!(c.mode, Mode::Dev);
        assert_eq!(c.log.format, LogFormat::Pretty);
        assert_eq!(c.database.statement_timeout, Duration::from_secs(30));
    }
}
