//! The `rowcast` command: parses settings once, sets up logging, and runs `serve`, `dev`,
//! `migrate` or `sync` (plus the small `token`, `healthcheck` and `gen types` helpers).

use std::process::ExitCode;

use clap::Parser;
use rowcast::{
    app,
    auth::{
        token::{SigningAlgorithm, TokenKeys},
        Identity,
    },
    capture,
    cluster::EmbeddedPostgres,
    config::{
        Cli, Command, Config, HealthcheckArgs, LogFormat, Mode, SyncAction, TokenArgs, TokenRole,
    },
    http::probe,
    store::{migrate, Store},
};

fn main() -> ExitCode {
    // `rowcast gen types` has its own small parser (server/src/typegen.rs).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "gen") {
        return rowcast::typegen::cli(args);
    }
    let cli = Cli::parse();
    let sync_action = match &cli.command {
        Command::Sync(s) => Some(s.action.clone()),
        _ => None,
    };
    let cli = match cli.command {
        Command::Token(args) => return token(args),
        Command::Healthcheck(args) => return healthcheck(args),
        command => Cli { command },
    };
    let mut config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rowcast: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(url) = &config.database.url {
        // The parser's errors never echo the string, which may hold a password.
        if let Err(e) = rowcast::store::connect::parse_url(url) {
            eprintln!("rowcast: invalid setting DATABASE_URL: {e}");
            return ExitCode::from(2);
        }
    }
    let _log = init_logging(&config);
    // Only `dev` runs a server without a configured secret; `migrate`, `sync` and
    // `reload-schema` sign nothing and must not leave a secret file behind.
    if config.auth.jwt_secret.is_none()
        && config.auth.algorithm == SigningAlgorithm::Hs256
        && config.mode == Mode::Dev
    {
        match dev_jwt_secret(&config.embedded.data_dir) {
            Ok(secret) => config.auth.jwt_secret = Some(secret),
            Err(e) => {
                eprintln!(
                    "rowcast: cannot keep the dev token secret in {}: {e}",
                    config.embedded.data_dir.display()
                );
                return ExitCode::from(1);
            }
        }
    }

    // Postgres is started before the runtime so that it is also stopped after it.
    let embedded = if config.database.url.is_none() {
        tracing::info!(data_dir = %config.embedded.data_dir.display(), "starting embedded Postgres");
        match EmbeddedPostgres::start(
            &config.embedded.data_dir.join("pg"),
            config.embedded.pg_bindir.as_deref(),
        ) {
            Ok(pg) => {
                tracing::info!(port = pg.port(), "embedded Postgres is running");
                config.database.url = Some(pg.database_url());
                Some(pg)
            }
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("rowcast: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };

    let code = match tokio::runtime::Runtime::new() {
        Ok(rt) => {
            let code = rt.block_on(run(config, sync_action));
            // Work abandoned by a timed-out drain must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
        Err(e) => {
            eprintln!("rowcast: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    };

    if let Some(pg) = embedded {
        tracing::info!("stopping embedded Postgres");
        if let Err(e) = pg.stop() {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    }
    code
}

async fn run(config: Config, sync_action: Option<SyncAction>) -> ExitCode {
    match config.mode {
        Mode::Sync => match sync_action {
            Some(action) => sync(&config, action).await,
            None => ExitCode::from(2),
        },
        Mode::Migrate => {
            let url = config.database.url.clone().unwrap_or_default();
            let result = async {
                let store = Store::new(&url, &config.database)?;
                let all = migrate::all_migrations(config.database.app_migrations.as_deref())?;
                migrate::apply(store.pg_config(), &all).await
            }
            .await;
            match result {
                Ok(applied) => {
                    tracing::info!(count = applied.len(), "migrations applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("rowcast: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Mode::ReloadSchema => {
            let url = config.database.url.clone().unwrap_or_default();
            let result = async {
                let store = Store::new(&url, &config.database)?;
                rowcast::store::rest_schema::notify_reload(store.pg_config()).await
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!("asked running servers to reload the REST schema cache");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("rowcast: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Mode::Serve | Mode::Dev => {
            let running = match app::start(config).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("rowcast: {e}");
                    return ExitCode::from(1);
                }
            };
            let token = running.shutdown_token();
            tokio::spawn(async move {
                app::shutdown_signal().await;
                tracing::info!("shutdown requested");
                token.cancel();
            });
            running.wait().await;
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
    }
}

/// `rowcast sync enable|disable|list`: migrate (so the capture functions exist), then do it.
async fn sync(config: &Config, action: SyncAction) -> ExitCode {
    let url = config.database.url.clone().unwrap_or_default();
    let result = async {
        let store = Store::new(&url, &config.database).map_err(capture::sync::SyncError::Store)?;
        let all = migrate::all_migrations(config.database.app_migrations.as_deref())
            .map_err(capture::sync::SyncError::Store)?;
        migrate::apply(store.pg_config(), &all)
            .await
            .map_err(capture::sync::SyncError::Store)?;
        match &action {
            SyncAction::Enable { table } => {
                capture::sync::enable(&store, table).await?;
                println!("sync enabled on {table}");
            }
            SyncAction::Disable { table } => {
                capture::sync::disable(&store, table).await?;
                println!("sync disabled on {table}");
            }
            SyncAction::List => {
                for t in capture::sync::list(&store).await? {
                    // A table capture does not fully work on says why (it is also logged
                    // by the server and counted in rowcast_capture_broken_tables).
                    let status = if t.status == "ok" {
                        String::new()
                    } else {
                        format!("\tCAPTURE NOT WORKING: {}", t.status)
                    };
                    println!(
                        "{}.{}\tprimary key ({})\tsince {}{status}",
                        t.schema,
                        t.name,
                        t.primary_key.join(", "),
                        t.enabled_at.to_rfc3339()
                    );
                }
            }
        }
        Ok::<_, capture::sync::SyncError>(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rowcast: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs go through `tracing-appender`'s non-blocking writer (one writer thread behind a
/// bounded queue that drops lines rather than block when full), so a slow stderr never
/// stalls a request; the returned guard flushes it when `main` returns.
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(16_384)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
    guard
}

/// `dev`'s token secret: generated once and kept in the data directory, so tokens survive
/// restarts. (`serve` requires ROWCAST_JWT_SECRET instead.)
fn dev_jwt_secret(data_dir: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("jwt-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if s.trim().len() >= 32 {
            return Ok(s.trim().to_string());
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut f, secret.as_bytes())?;
    Ok(secret)
}

/// `rowcast token`: print a signed access token (stdout) for a user id or the service role.
fn token(args: TokenArgs) -> ExitCode {
    let secret = match args.jwt.jwt_secret.filter(|s| !s.is_empty()) {
        Some(s) => s,
        // A key pair needs no secret.
        None if args.jwt.jwt_algorithm != SigningAlgorithm::Hs256 => String::new(),
        None => match std::fs::read_to_string(args.data_dir.join("jwt-secret")) {
            Ok(s) if s.trim().len() >= 32 => s.trim().to_string(),
            _ => {
                eprintln!(
                    "rowcast: no ROWCAST_JWT_SECRET and no dev secret in {}; run `rowcast dev` once or set ROWCAST_JWT_SECRET",
                    args.data_dir.join("jwt-secret").display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let identity = match args.role {
        TokenRole::Service => Identity::service(),
        TokenRole::Authenticated => {
            let sub = match args.sub.as_deref().map(uuid::Uuid::parse_str) {
                Some(Ok(id)) => id,
                Some(Err(_)) => {
                    eprintln!("rowcast: --sub expects a user id (UUID)");
                    return ExitCode::from(2);
                }
                None => uuid::Uuid::new_v4(),
            };
            eprintln!("token for user {sub}");
            Identity::user(&sub.to_string(), serde_json::json!({}))
        }
    };
    let keys = match (args.jwt.jwt_algorithm, &args.jwt.jwt_private_key_file) {
        (SigningAlgorithm::Hs256, _) => TokenKeys::hs256(
            secret.as_bytes(),
            &args.jwt.jwt_issuer,
            &args.jwt.jwt_audience,
        ),
        (alg, Some(path)) => {
            let signed = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    TokenKeys::asymmetric(alg, &pem, &args.jwt.jwt_issuer, &args.jwt.jwt_audience)
                        .map_err(|e| e.to_string())
                });
            match signed {
                Ok(keys) => keys,
                Err(e) => {
                    eprintln!(
                        "rowcast: ROWCAST_JWT_PRIVATE_KEY_FILE {}: {e}",
                        path.display()
                    );
                    return ExitCode::from(2);
                }
            }
        }
        (_, None) => {
            eprintln!("rowcast: rs256/es256 need ROWCAST_JWT_PRIVATE_KEY_FILE");
            return ExitCode::from(2);
        }
    };
    match keys.sign(&identity, args.ttl) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rowcast: {e}");
            ExitCode::from(1)
        }
    }
}

/// `rowcast healthcheck`: exit 0 when this server's `/ready` answers 200.
fn healthcheck(args: HealthcheckArgs) -> ExitCode {
    match probe::ready(args.listen, args.timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rowcast healthcheck: {e}");
            ExitCode::from(1)
        }
    }
}
