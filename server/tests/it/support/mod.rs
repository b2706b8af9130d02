//! Test harness: one private Postgres cluster per test run (or the server at DATABASE_URL),
//! one fresh database per test, and the real server started in-process on port 0.

// Helpers are shared by test modules; not every module uses each one.
#![allow(dead_code)]

pub mod process;
pub mod proxy;
pub mod realtime;
pub mod smtp;

use std::{
    io::Write,
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use rowcast::{
    app::{self, Running},
    cluster::{self, EmbeddedPostgres},
    config::Config,
    store::migrate,
};
use tokio_postgres::NoTls;

struct Cluster {
    /// Connection string of a maintenance database (`postgres`) on the test server.
    admin_url: String,
    /// Keeps the reaper's stdin open; when this process exits the pipe closes and the reaper
    /// stops Postgres and removes its directory, however the process ended.
    _reaper: Option<Mutex<std::process::ChildStdin>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.trim().is_empty() {
                return Cluster {
                    admin_url: url,
                    _reaper: None,
                };
            }
        }
        let root = tempfile::Builder::new()
            .prefix("rowcast-test-pg-")
            .tempdir()
            .expect("create temp dir for the test cluster")
            .keep();
        cluster::prepare_parent_dir(&root).expect("make the test dir reachable");
        let data = root.join("pg");
        let pg = EmbeddedPostgres::start(&data, None).expect("start the test Postgres cluster");
        let stdin = reap_on_exit(&data, &root);
        Cluster {
            admin_url: pg.url_for("postgres"),
            _reaper: Some(Mutex::new(stdin)),
        }
    })
}

/// Stop the cluster in `data` and remove `root` when this process exits, however it ends:
/// the returned pipe closes then, and the reaper (which must outlive us) does the rest.
pub fn reap_on_exit(data: &std::path::Path, root: &std::path::Path) -> std::process::ChildStdin {
    let script = format!(
        r#"cat >/dev/null
pid=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null)
if [ -n "$pid" ]; then
  kill -INT "$pid" 2>/dev/null
  for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
fi
rm -rf '{root}'"#,
        data = data.display(),
        root = root.display()
    );
    // Deliberately never waited on: it must outlive this process to clean up after it.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the cluster reaper");
    child.stdin.take().expect("reaper stdin")
}

/// Connection string for `db` on the test server.
pub fn url_for(db: &str) -> String {
    let mut cfg: tokio_postgres::Config = cluster().admin_url.parse().expect("valid admin url");
    cfg.dbname(db);
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or("postgres");
    let password = cfg
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    format!(
        "postgres://{user}{password}@{}:{port}/{db}",
        hosts.first().map(String::as_str).unwrap_or("127.0.0.1")
    )
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

async fn admin() -> tokio_postgres::Client {
    connect(&cluster().admin_url).await
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// CREATE DATABASE, retrying while the template is still briefly in use.
async fn create_database(name: &str, template: &str) {
    let admin = admin().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin
            .batch_execute(&format!(
                "create database \"{name}\" template \"{template}\""
            ))
            .await
        {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline && e.code().map(|c| c.code()) == Some("55006") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("create database {name}: {e:?}"),
        }
    }
}

/// A database nobody has touched (no Rowcast schema).
pub async fn fresh_db() -> String {
    let name = unique_name("rowcast_test");
    create_database(&name, "template0").await;
    url_for(&name)
}

/// A database with every server migration applied, copied from a shared template.
pub async fn migrated_db() -> String {
    let template = TEMPLATE
        .get_or_init(|| async {
            let migrations = migrate::server_migrations();
            let digest: String = migrations.iter().map(|m| m.checksum.as_str()).collect();
            let name = format!("rowcast_tpl_{}", &sha_hex(&digest)[..16]);
            let admin = admin().await;
            // Another test process against the same DATABASE_URL may build it concurrently.
            admin
                .execute("select pg_advisory_lock(727272)", &[])
                .await
                .expect("template lock");
            let exists = admin
                .query_opt("select 1 from pg_database where datname = $1", &[&name])
                .await
                .expect("look up template")
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                let _ = admin
                    .batch_execute(&format!("drop database if exists \"{building}\""))
                    .await;
                admin
                    .batch_execute(&format!(
                        "create database \"{building}\" template template0"
                    ))
                    .await
                    .expect("create template database");
                let cfg: tokio_postgres::Config = url_for(&building).parse().expect("template url");
                migrate::apply(&cfg, &migrations)
                    .await
                    .expect("migrate the template database");
                admin
                    .batch_execute(&format!(
                        "alter database \"{building}\" rename to \"{name}\""
                    ))
                    .await
                    .expect("publish template");
            }
            admin
                .execute("select pg_advisory_unlock(727272)", &[])
                .await
                .expect("template unlock");
            name
        })
        .await;
    let name = unique_name("rowcast_test");
    create_database(&name, template).await;
    url_for(&name)
}

fn sha_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A running server and what tests need to talk to it.
pub struct TestApp {
    pub base: String,
    pub db_url: String,
    pub http: reqwest::Client,
    running: Option<Running>,
}

impl TestApp {
    /// Start the server on a fresh migrated database and wait until it is ready.
    pub async fn spawn() -> TestApp {
        let db_url = migrated_db().await;
        TestApp::spawn_with(Config::for_database(&db_url)).await
    }

    /// Start the server with `config` and wait until `/ready` says 200.
    pub async fn spawn_with(config: Config) -> TestApp {
        let app = TestApp::start(config).await;
        app.wait_ready(Duration::from_secs(30)).await;
        app
    }

    /// Start the server with `config` without waiting for readiness.
    pub async fn start(config: Config) -> TestApp {
        let db_url = config.database.url.clone().unwrap_or_default();
        let running = app::start(config).await.expect("start the server");
        TestApp {
            base: format!("http://{}", running.local_addr),
            db_url,
            http: reqwest::Client::new(),
            running: Some(running),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("HTTP request")
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http.get(self.url("/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server not ready within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running server's change capture handle.
    pub fn capture(&self) -> &rowcast::capture::Capture {
        &self.running.as_ref().expect("server running").capture
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        connect(&self.db_url).await
    }

    /// The running server's realtime service (stats, settings).
    pub fn realtime(&self) -> &std::sync::Arc<rowcast::realtime::Realtime> {
        &self.running.as_ref().expect("server running").realtime
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown_token().cancel();
        }
    }
}

/// Write `contents` to `dir/name`.
pub fn write_file(dir: &std::path::Path, name: &str, contents: &str) {
    let mut f = std::fs::File::create(dir.join(name)).expect("create file");
    f.write_all(contents.as_bytes()).expect("write file");
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
