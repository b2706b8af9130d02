//! The `rowcast` binary with its embedded Postgres: starts, answers /ready, stops its
//! Postgres on SIGTERM, keeps data across restarts, and recovers from a crash.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_dev(data_dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .arg("dev")
        .env_remove("DATABASE_URL")
        .env("ROWCAST_DATA_DIR", data_dir)
        .env("ROWCAST_LISTEN", format!("127.0.0.1:{port}"))
        .env("ROWCAST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rowcast dev")
}

async fn wait_ready(port: u16, child: &mut Child) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
        {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "rowcast dev exited early"
        );
        assert!(
            Instant::now() < deadline,
            "rowcast dev not ready within 60s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "rowcast did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn postmaster(data_dir: &Path) -> Option<(String, u16)> {
    let pid_file = std::fs::read_to_string(data_dir.join("pg/postmaster.pid")).ok()?;
    let lines: Vec<&str> = pid_file.lines().collect();
    Some((
        lines.first()?.trim().to_string(),
        lines.get(3)?.trim().parse().ok()?,
    ))
}

fn process_alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[tokio::test]
async fn dev_starts_embedded_postgres_stops_it_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    rowcast::cluster::prepare_parent_dir(dir.path()).unwrap();
    let port = free_port();

    let mut dev = spawn_dev(dir.path(), port);
    wait_ready(port, &mut dev).await;
    let (pg_pid, pg_port) = postmaster(dir.path()).expect("postmaster.pid while running");
    let db = support::connect(&format!("postgres://rowcast@127.0.0.1:{pg_port}/rowcast")).await;
    db.batch_execute("create table kept (v text); insert into kept values ('still here')")
        .await
        .unwrap();
    let in_public: bool = db
        .query_one("select to_regclass('public.kept') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        in_public,
        "an unqualified table must land in public, not in schema rowcast"
    );
    drop(db);

    signal(&dev, "-TERM");
    let status = wait_exit(&mut dev).await;
    assert!(status.success(), "rowcast dev exited with {status}");
    assert!(
        !process_alive(&pg_pid),
        "Postgres {pg_pid} still running after SIGTERM"
    );
    assert!(
        postmaster(dir.path()).is_none(),
        "postmaster.pid left behind"
    );

    // A crash of the previous run: rowcast killed outright, its Postgres left running.
    let mut dev = spawn_dev(dir.path(), port);
    wait_ready(port, &mut dev).await;
    let (orphan, _) = postmaster(dir.path()).unwrap();
    signal(&dev, "-KILL");
    wait_exit(&mut dev).await;
    assert!(
        process_alive(&orphan),
        "expected the orphaned Postgres to survive SIGKILL"
    );

    let mut dev = spawn_dev(dir.path(), port);
    wait_ready(port, &mut dev).await;
    let (_, pg_port) = postmaster(dir.path()).unwrap();
    let db = support::connect(&format!("postgres://rowcast@127.0.0.1:{pg_port}/rowcast")).await;
    let v: String = db
        .query_one("select v from kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "still here");
    drop(db);
    let (pid, _) = postmaster(dir.path()).unwrap();
    signal(&dev, "-TERM");
    assert!(wait_exit(&mut dev).await.success());
    assert!(!process_alive(&pid));
    assert!(!process_alive(&orphan));

    // A stale postmaster.pid naming a dead process is not a dead end.
    std::fs::write(
        dir.path().join("pg/postmaster.pid"),
        "999999\n/nonexistent\n0\n5432\n",
    )
    .unwrap();
    let mut dev = spawn_dev(dir.path(), port);
    wait_ready(port, &mut dev).await;
    let (pid, _) = postmaster(dir.path()).unwrap();
    signal(&dev, "-TERM");
    assert!(wait_exit(&mut dev).await.success());
    assert!(!process_alive(&pid));
}

#[tokio::test]
async fn a_wrong_setting_stops_the_process_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .args(["serve"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));

    let out = Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .args(["serve"])
        .env("DATABASE_URL", "postgres://localhost/x")
        .env("ROWCAST_POOL_SIZE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ROWCAST_POOL_SIZE"));

    // A malformed DATABASE_URL is named, and its password never echoed.
    let out = Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .args(["serve"])
        .env("DATABASE_URL", "postgres://u:s3cret@h:notaport/x")
        .env(
            "ROWCAST_JWT_SECRET",
            "9f2c4e7a1b3d5f6e8a0c2e4f6a8b0d1c3e5f7a9b",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
