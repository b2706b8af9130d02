//! Graceful drain of the real `rowcast serve` process on SIGTERM: in-flight requests
//! finish, new connections are refused, and the process exits within
//! ROWCAST_SHUTDOWN_TIMEOUT even when a request does not finish.
//!
//! The slow request is a natural one: a REST read of a table the test holds an exclusive
//! lock on, so the request waits in Postgres (with no timeout of its own short of the
//! statement timeout) until the test lets go.

use std::{
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::support::{self, process::ServerProcess as Server};

/// Ready, and the REST schema cache (loaded in the background) knows the probe table.
async fn wait_ready(http: &reqwest::Client, server: &Server) {
    support::eventually(Duration::from_secs(30), "server ready", || async {
        matches!(http.get(server.url("/ready")).send().await, Ok(r) if r.status() == 200)
            && matches!(http.get(server.url(SLOW_PATH)).send().await, Ok(r) if r.status() == 200)
    })
    .await;
}

/// A fresh database with a table anonymous callers may read through REST.
async fn database_with_probe_table() -> String {
    let db_url = support::migrated_db().await;
    let db = support::connect(&db_url).await;
    db.batch_execute(
        "create table public.drain_probe (id int primary key);
         insert into public.drain_probe values (1);
         grant select on public.drain_probe to rowcast_anon;",
    )
    .await
    .unwrap();
    db_url
}

/// The read that will wait on the lock.
const SLOW_PATH: &str = "/rest/v1/drain_probe";

/// Hold an exclusive lock on the probe table, in an open transaction.
async fn lock_probe(db_url: &str) -> tokio_postgres::Client {
    let db = support::connect(db_url).await;
    db.batch_execute("begin; lock table public.drain_probe in access exclusive mode")
        .await
        .unwrap();
    db
}

/// Wait until a server connection is blocked on our lock: the request is in flight.
async fn wait_blocked(db: &tokio_postgres::Client) {
    support::eventually(
        Duration::from_secs(30),
        "request waiting on the lock",
        || async {
            let n: i64 = db
                .query_one(
                    "select count(*) from pg_stat_activity
                 where datname = current_database() and application_name = 'rowcast'
                   and wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            n > 0
        },
    )
    .await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_refuses_new_connections() {
    let db_url = database_with_probe_table().await;
    let mut server = Server::start(&db_url, "20s");
    let http = reqwest::Client::new();
    wait_ready(&http, &server).await;

    let lock = lock_probe(&db_url).await;
    let in_flight = tokio::spawn({
        let http = http.clone();
        let url = server.url(SLOW_PATH);
        async move {
            http.get(url)
                .header("x-request-id", "drain-test-request")
                .send()
                .await
        }
    });
    wait_blocked(&lock).await;

    server.sigterm();
    let signalled = Instant::now();
    // New connections are refused once the drain has begun…
    let addr = server.addr;
    let refused = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(refused, "new connections were still accepted after SIGTERM");
    // …while the process keeps running for the request it is serving.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the process exited with a request in flight"
    );

    // Let the request finish: it gets its full answer.
    lock.batch_execute("commit").await.unwrap();
    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-request-id"],
        "drain-test-request",
        "the request id is echoed"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!([{ "id": 1 }]));

    let status = tokio::task::spawn_blocking(move || {
        let s = server.wait_exit(Duration::from_secs(10));
        (s, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    let status = status.expect("process exits after draining");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(15));

    // The JSON request log carries the request id in the request's span.
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("drain-test-request"))
        .unwrap_or_else(|| panic!("request id not logged:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["span"]["request_id"], "drain-test-request", "{line}");
    assert_eq!(v["span"]["route"], "/rest/v1/{table}", "{line}");
}

#[tokio::test]
async fn drain_gives_up_on_requests_after_the_shutdown_timeout() {
    let db_url = database_with_probe_table().await;
    let mut server = Server::start(&db_url, "200ms");
    let http = reqwest::Client::new();
    wait_ready(&http, &server).await;

    // This request would take the readiness probe's full 2 s timeout.
    let lock = lock_probe(&db_url).await;
    let in_flight = tokio::spawn({
        let http = http.clone();
        let url = server.url(SLOW_PATH);
        async move { http.get(url).send().await }
    });
    wait_blocked(&lock).await;

    server.sigterm();
    let signalled = Instant::now();
    let (status, server) = tokio::task::spawn_blocking(move || {
        let s = server.wait_exit(Duration::from_secs(10));
        (s, server)
    })
    .await
    .unwrap();
    let exited_after = signalled.elapsed();
    let status = status.expect("process exits");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exited_after < Duration::from_millis(1500),
        "exit took {exited_after:?} with a 200ms shutdown timeout"
    );
    // The abandoned request saw its connection close rather than an answer.
    assert!(in_flight.await.unwrap().is_err());
    // The log says what was abandoned (stderr is read by a thread: give it a moment).
    support::eventually(Duration::from_secs(5), "timeout logged", || async {
        server.log_text().contains("shutdown timed out")
    })
    .await;
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("shutdown timed out"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["http_requests_in_flight"], 1, "{line}");
    lock.batch_execute("rollback").await.unwrap();
}
