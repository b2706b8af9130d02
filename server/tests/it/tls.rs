//! TLS to Postgres: a private cluster with `ssl=on`, a certificate signed by a CA this test
//! made, and a `pg_hba.conf` that admits TLS connections only. Every `sslmode` is tried
//! against it, and a whole server runs on it.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rowcast::{
    cluster::{self, EmbeddedPostgres},
    config::Config,
    store::Connector,
};

use crate::support::{self, TestApp};

/// The name in the server certificate. Tests connect to 127.0.0.1 (`hostaddr`) and pass
/// this, or another name, as the host the certificate must match.
const CERT_HOST: &str = "db.rowcast.test";
/// Trust auth ignores it; it is here to prove errors never repeat the connection string.
const PASSWORD: &str = "s3cret-never-logged";

/// A role that signs in with a password (SCRAM), for channel binding.
const SCRAM_USER: &str = "rowcast_scram";

struct TlsCluster {
    port: u16,
    /// The CA that signed the server certificate.
    ca_file: PathBuf,
    /// A CA that signed nothing the server has.
    other_ca_file: PathBuf,
    _reaper: Mutex<std::process::ChildStdin>,
}

static TLS: OnceLock<TlsCluster> = OnceLock::new();

fn tls_cluster() -> &'static TlsCluster {
    TLS.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("rowcast-test-tls-pg-")
            .tempdir()
            .expect("temp dir for the TLS cluster")
            .keep();
        cluster::prepare_parent_dir(&root).expect("make the test dir reachable");
        let data = root.join("pg");
        // Create it plainly, then turn TLS on and restart it.
        let pg = EmbeddedPostgres::start(&data, None).expect("start the TLS test cluster");
        // At once, so a failure below still leaves nothing running.
        let reaper = support::reap_on_exit(&data, &root);

        let (ca_pem, ca) = new_ca("Rowcast test CA");
        let (other_pem, _) = new_ca("Some other CA");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![CERT_HOST.to_string()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, CERT_HOST);
        let cert = params.signed_by(&key, &ca).expect("sign server cert");

        // Postgres wants its key private to the user it runs as (not us when we are root).
        let meta = std::fs::metadata(&data).expect("data dir");
        let own = |name: &str, contents: &str, mode: u32| {
            let path = data.join(name);
            std::fs::write(&path, contents).expect("write TLS file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .expect("chmod TLS file");
            std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()))
                .expect("chown TLS file");
        };
        own("server.crt", &cert.pem(), 0o644);
        own("server.key", &key.serialize_pem(), 0o600);
        own(
            "pg_hba.conf",
            &format!(
                "hostssl all {SCRAM_USER} 127.0.0.1/32 scram-sha-256\nhostssl all all 127.0.0.1/32 trust\n"
            ),
            0o600,
        );
        let mut conf =
            std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        own("postgresql.conf", &conf, 0o600);

        let ca_file = root.join("ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write CA");
        let other_ca_file = root.join("other-ca.pem");
        std::fs::write(&other_ca_file, other_pem).expect("write other CA");

        restart(&data, meta.uid(), meta.gid());
        TlsCluster {
            port: pg.port(),
            ca_file,
            other_ca_file,
            _reaper: Mutex::new(reaper),
        }
    })
}

/// `pg_ctl restart`, as the user that owns the cluster: it keeps the port and options of
/// the last start and returns once the server accepts connections.
fn restart(data: &Path, uid: u32, gid: u32) {
    let bindir = cluster::find_bindir(None).expect("Postgres binaries");
    let log = data.join("rowcast-postgres.log");
    let mut cmd = std::process::Command::new(bindir.join("pg_ctl"));
    cmd.args(["restart", "-m", "fast", "-w", "-t", "60", "-D"])
        .arg(data)
        .arg("-l")
        .arg(&log)
        .current_dir(data.parent().expect("data dir has a parent"));
    if uid != own_uid() {
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, gid);
    }
    let out = cmd.output().expect("run pg_ctl restart");
    assert!(
        out.status.success(),
        "pg_ctl restart: {} {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Our own uid, read from a file we just made (std has no getuid).
fn own_uid() -> u32 {
    let probe = tempfile::NamedTempFile::new().expect("probe file");
    std::fs::metadata(probe.path())
        .expect("probe metadata")
        .uid()
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A URL for `db` on the TLS cluster, connecting to 127.0.0.1 while naming `host`.
fn url(host: &str, db: &str, params: &str) -> String {
    let port = tls_cluster().port;
    format!(
        "postgres://{}:{PASSWORD}@{host}:{port}/{db}?hostaddr=127.0.0.1&{params}",
        rowcast::cluster::EMBEDDED_USER
    )
}

/// Connect with `url` and `ca_file`; on success, whether this session is encrypted.
async fn try_connect(url: &str, ca_file: Option<&Path>) -> Result<bool, String> {
    let connector = Connector::new(url, ca_file).map_err(|e| e.to_string())?;
    let (client, conn) = connector
        .connect()
        .await
        .map_err(|e| rowcast::store::connect::describe(&e))?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

fn refused(result: Result<bool, String>, says: &str) {
    let e = result.expect_err("the connection should have been refused");
    assert!(e.contains(says), "expected {says:?} in: {e}");
    assert!(!e.contains(PASSWORD), "the error repeats the password: {e}");
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let c = tls_cluster();
    let ca = Some(c.ca_file.as_path());
    let full = "sslmode=verify-full";
    assert_eq!(
        try_connect(&url(CERT_HOST, "postgres", full), ca).await,
        Ok(true)
    );
    refused(
        try_connect(&url("other.rowcast.test", "postgres", full), ca).await,
        "host name mismatch",
    );
    refused(
        try_connect(&url(CERT_HOST, "postgres", full), Some(&c.other_ca_file)).await,
        "certificate unknown",
    );
    // The CA file can also come as libpq's sslrootcert.
    let in_url = format!("{full}&sslrootcert={}", c.ca_file.display());
    assert_eq!(
        try_connect(&url(CERT_HOST, "postgres", &in_url), None).await,
        Ok(true)
    );
    // And with neither, the system store (if the machine has one) does not know our CA.
    let e = try_connect(&url(CERT_HOST, "postgres", full), None)
        .await
        .expect_err("the system store does not hold the test CA");
    assert!(
        e.contains("certificate unknown") || e.contains("no system CA certificates"),
        "{e}"
    );
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let c = tls_cluster();
    let ca = Some(c.ca_file.as_path());
    let mode = "sslmode=verify-ca";
    assert_eq!(
        try_connect(&url("other.rowcast.test", "postgres", mode), ca).await,
        Ok(true)
    );
    refused(
        try_connect(&url(CERT_HOST, "postgres", mode), Some(&c.other_ca_file)).await,
        "certificate unknown",
    );
}

#[tokio::test]
async fn require_encrypts_and_checks_the_chain_only_with_a_ca_file() {
    let c = tls_cluster();
    let mode = "sslmode=require";
    // No CA file: encrypted, nothing verified (libpq's meaning).
    assert_eq!(
        try_connect(&url("other.rowcast.test", "postgres", mode), None).await,
        Ok(true)
    );
    // With one, libpq's require behaves as verify-ca.
    assert_eq!(
        try_connect(
            &url("other.rowcast.test", "postgres", mode),
            Some(&c.ca_file)
        )
        .await,
        Ok(true)
    );
    refused(
        try_connect(&url(CERT_HOST, "postgres", mode), Some(&c.other_ca_file)).await,
        "certificate unknown",
    );
    // prefer takes TLS when the server offers it.
    assert_eq!(
        try_connect(&url(CERT_HOST, "postgres", "sslmode=prefer"), None).await,
        Ok(true)
    );
}

#[tokio::test]
async fn a_password_sign_in_binds_to_the_tls_channel() {
    let c = tls_cluster();
    let admin = Connector::new(&url(CERT_HOST, "postgres", "sslmode=require"), None).unwrap();
    let (admin, conn) = admin.connect().await.unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!(
            "drop role if exists {SCRAM_USER}; create role {SCRAM_USER} login password 'pw-{PASSWORD}'"
        ))
        .await
        .unwrap();
    let port = c.port;
    let signed_in = |password: &str| {
        format!(
            "postgres://{SCRAM_USER}:{password}@{CERT_HOST}:{port}/postgres?hostaddr=127.0.0.1\
             &sslmode=verify-full&channel_binding=require"
        )
    };
    let ca = Some(c.ca_file.as_path());
    // channel_binding=require fails unless SCRAM bound itself to this TLS session.
    assert_eq!(
        try_connect(&signed_in(&format!("pw-{PASSWORD}")), ca).await,
        Ok(true)
    );
    refused(
        try_connect(&signed_in("wrong"), ca).await,
        "password authentication failed",
    );
}

#[tokio::test]
async fn disable_is_refused_by_a_tls_only_server() {
    tls_cluster();
    let e = try_connect(&url(CERT_HOST, "postgres", "sslmode=disable"), None)
        .await
        .expect_err("pg_hba.conf admits TLS only");
    assert!(e.contains("no encryption"), "{e}");
}

#[tokio::test]
async fn prefer_falls_back_to_plain_and_require_does_not() {
    // The shared test cluster runs without TLS.
    let db = support::url_for("postgres");
    assert_eq!(
        try_connect(&format!("{db}?sslmode=prefer"), None).await,
        Ok(false)
    );
    assert_eq!(
        try_connect(&db, None).await,
        Ok(false),
        "prefer is the default"
    );
    refused(
        try_connect(&format!("{db}?sslmode=require"), None).await,
        "server does not support TLS",
    );
}

#[tokio::test]
async fn a_server_on_a_tls_database_is_ready_and_every_connection_is_encrypted() {
    let c = tls_cluster();
    let admin = Connector::new(&url(CERT_HOST, "postgres", "sslmode=require"), None).unwrap();
    let (admin, conn) = admin.connect().await.unwrap();
    tokio::spawn(conn);
    let db = format!("rowcast_tls_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("create database \"{db}\""))
        .await
        .unwrap();

    // Migrations, the pool and both LISTEN connections: pg_hba.conf would refuse any of
    // them without TLS, and /ready needs all of them.
    let mut config = Config::for_database(&url(CERT_HOST, &db, "sslmode=verify-full"));
    config.database.ca_file = Some(c.ca_file.clone());
    config.capture.notify = true;
    let app = TestApp::spawn_with(config).await;
    assert_eq!(app.get("/ready").await.status(), 200);

    let backends = || async {
        admin
            .query(
                "select a.application_name, s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid)
                 where a.datname = $1 and a.application_name like 'rowcast%'",
                &[&db],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
            .collect::<Vec<_>>()
    };
    support::eventually(
        Duration::from_secs(30),
        "the capture listener connects",
        || async {
            backends()
                .await
                .iter()
                .any(|(name, _)| name == "rowcast-listen")
        },
    )
    .await;
    let all = backends().await;
    assert!(all.len() >= 2, "{all:?}");
    assert!(
        all.iter().all(|(_, ssl)| *ssl),
        "unencrypted backends: {all:?}"
    );
    app.shutdown().await;
}

#[test]
fn migrate_names_a_certificate_problem_without_the_url() {
    let c = tls_cluster();
    let out = std::process::Command::new(support::process::BIN)
        .arg("migrate")
        .env_clear()
        .env(
            "DATABASE_URL",
            url("other.rowcast.test", "postgres", "sslmode=verify-full"),
        )
        .env("ROWCAST_DATABASE_CA_FILE", &c.ca_file)
        .output()
        .expect("run rowcast migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("host name mismatch"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

#[tokio::test]
async fn serve_logs_a_certificate_problem_without_the_url_and_stays_not_ready() {
    let c = tls_cluster();
    let ca = c.ca_file.display().to_string();
    let server = support::process::ServerProcess::start_with(
        &url("other.rowcast.test", "postgres", "sslmode=verify-full"),
        &[("ROWCAST_DATABASE_CA_FILE", ca.as_str())],
    );
    support::eventually(
        Duration::from_secs(30),
        "the TLS failure is logged",
        || async { server.log_text().contains("host name mismatch") },
    )
    .await;
    let ready = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        !server.log_text().contains(PASSWORD),
        "{}",
        server.log_text()
    );
}

#[test]
fn a_missing_ca_file_stops_start_up_naming_the_setting() {
    let out = std::process::Command::new(support::process::BIN)
        .arg("migrate")
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://u:s3cret@127.0.0.1:1/db?sslmode=verify-full",
        )
        .env("ROWCAST_DATABASE_CA_FILE", "/nonexistent/ca.pem")
        .output()
        .expect("run rowcast migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ROWCAST_DATABASE_CA_FILE"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
