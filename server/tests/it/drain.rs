//! Graceful drain of the real `rowcast serve` process on SIGTERM: in-flight requests
//! finish, new connections are refused, every WebSocket is told to reconnect elsewhere and
//! resume (and loses nothing doing so), and the process exits within
//! ROWCAST_SHUTDOWN_TIMEOUT even when a request does not finish.
//!
//! The slow request is a natural one: a REST read of a table the test holds an exclusive
//! lock on, so the request waits in Postgres (with no timeout of its own short of the
//! statement timeout) until the test lets go.

use std::{
    collections::HashMap,
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    instances::{self, Sub},
    support::{
        self,
        process::ServerProcess as Server,
        realtime::{new_uid, token_for, Client},
    },
};

/// Ready, and the REST schema cache (loaded in the background) knows the probe table.
async fn wait_ready(http: &reqwest::Client, server: &Server) {
    support::eventually(Duration::from_secs(30), "server ready", || async {
        matches!(http.get(server.url("/ready")).send().await, Ok(r) if r.status() == 200)
            && matches!(http.get(server.url(SLOW_PATH)).send().await, Ok(r) if r.status() == 200)
    })
    .await;
}

/// A fresh database with a read-only function anonymous callers may call through REST; it
/// waits for the advisory lock the test holds.
async fn database_with_probe_table() -> String {
    let db_url = support::migrated_db().await;
    let db = support::connect(&db_url).await;
    db.batch_execute(
        "create function public.drain_probe() returns int language plpgsql stable as $$
         begin perform pg_advisory_xact_lock_shared(4242); return 1; end $$;
         grant execute on function public.drain_probe() to rowcast_anon;",
    )
    .await
    .unwrap();
    db_url
}

/// The read that will wait on the lock.
const SLOW_PATH: &str = "/rest/v1/rpc/drain_probe";

/// Hold the advisory lock the probe waits for. A session-level advisory lock takes no
/// transaction id: a `LOCK TABLE … ACCESS EXCLUSIVE` in an open transaction does, and that
/// held back the change-log watermark (cluster-wide) of every other test running meanwhile.
async fn lock_probe(db_url: &str) -> tokio_postgres::Client {
    let db = support::connect(db_url).await;
    db.batch_execute("select pg_advisory_lock(4242)")
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
    lock.batch_execute("select pg_advisory_unlock(4242)")
        .await
        .unwrap();
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
    assert_eq!(body, serde_json::json!(1));

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
    assert_eq!(v["span"]["route"], "/rest/v1/rpc/{function}", "{line}");
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

/// SIGTERM with subscribed realtime clients while a writer runs: every socket gets close
/// code 1012 ("restarting: reconnect and resume"), the process exits within
/// ROWCAST_SHUTDOWN_TIMEOUT, and each client, resuming with its last cursor on another
/// instance, ends with every change written before, during and after the restart.
#[tokio::test]
async fn sigterm_closes_every_socket_with_resume_code_and_nothing_is_lost() {
    let db_url = support::migrated_db().await;
    let db = support::connect(&db_url).await;
    instances::create_synced_tables(&db).await;
    let users = vec![new_uid(), new_uid()];
    instances::insert_initial_rows(&db, &users, 3).await;
    let mut old = Server::start_with(&db_url, instances::INSTANCE_ENV);
    let new = Server::start_with(&db_url, instances::INSTANCE_ENV);
    let http = reqwest::Client::new();
    for server in [&old, &new] {
        support::eventually(Duration::from_secs(30), "instance ready", || {
            instances::ready(&http, server)
        })
        .await;
    }

    let specs: Vec<(Option<String>, Vec<Sub>)> = vec![
        (
            Some(users[0].clone()),
            vec![instances::mine(), instances::notes()],
        ),
        (
            Some(users[1].clone()),
            vec![instances::mine_small(), instances::notes_small()],
        ),
        (Some(users[0].clone()), vec![instances::mine()]),
        (None, vec![instances::notes()]),
    ];
    let token = |uid: &Option<String>| {
        uid.as_deref()
            .map(|u| token_for(u, Duration::from_secs(600)))
    };
    let mut readers = Vec::new();
    for (uid, subs) in &specs {
        let mut c = Client::connect(&old, token(uid).as_deref()).await;
        for sub in subs {
            c.subscribe(sub.id, sub.table, sub.filter.clone(), None)
                .await;
        }
        for sub in subs {
            c.until_live(sub.id).await;
        }
        // Read until the server closes the socket.
        readers.push(tokio::spawn(async move {
            while c.next_within(Duration::from_secs(30)).await.is_some() {}
            c
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn(instances::sql_writer(
        support::connect(&db_url).await,
        users.clone(),
        11,
        stop.clone(),
        written.clone(),
    ));
    let writes_reach = |n: usize| {
        let written = written.clone();
        async move {
            support::eventually(Duration::from_secs(20), "writes", || {
                let written = written.clone();
                async move { written.load(Relaxed) >= n }
            })
            .await
        }
    };
    writes_reach(40).await;

    old.sigterm();
    let signalled = Instant::now();
    let mut closed = Vec::new();
    for (i, r) in readers.into_iter().enumerate() {
        let c = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .unwrap_or_else(|_| panic!("client {i}: socket still open 10s after SIGTERM"))
            .unwrap();
        assert_eq!(
            c.closed,
            Some(1012),
            "client {i}: the close code says restart, reconnect and resume"
        );
        closed.push(c);
    }
    let (status, old) = tokio::task::spawn_blocking(move || {
        let s = old.wait_exit(Duration::from_secs(10));
        (s, old)
    })
    .await
    .unwrap();
    let exited_after = signalled.elapsed();
    let status = status.expect("the drained process exits");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exited_after < Duration::from_secs(5),
        "exit took {exited_after:?}, over ROWCAST_SHUTDOWN_TIMEOUT (5s)"
    );
    assert!(
        !old.log_text().contains("shutdown timed out"),
        "the drain finished without abandoning sessions"
    );

    // Resume on the other instance with the cursors held, while the writer goes on.
    let at_restart = written.load(Relaxed);
    let mut resumed = Vec::new();
    for (i, ((uid, subs), mut c)) in specs.iter().zip(closed).enumerate() {
        let mut r = Client::connect(&new, token(uid).as_deref()).await;
        r.views = std::mem::take(&mut c.views);
        for sub in subs {
            let cursor = r.views[sub.id].cursor.clone();
            assert!(cursor.is_some(), "client {i}: {} has a cursor", sub.id);
            r.subscribe(sub.id, sub.table, sub.filter.clone(), cursor)
                .await;
        }
        for sub in subs {
            // Asserts the cursor was accepted: no resync, no error.
            r.until_live(sub.id).await;
        }
        resumed.push(r);
    }
    writes_reach(at_restart + 40).await;
    stop.store(true, Relaxed);
    writer.await.unwrap();

    for (i, ((uid, subs), c)) in specs.iter().zip(resumed.iter_mut()).enumerate() {
        let mut want = HashMap::new();
        for sub in subs {
            want.insert(sub.id, instances::expected(&db, sub, uid.as_deref()).await);
        }
        c.until(
            &format!("client {i} equals the database"),
            Duration::from_secs(20),
            |views| want.iter().all(|(id, rows)| views[*id].visible() == *rows),
        )
        .await;
        for v in c.views.values() {
            assert!(v.resync.is_none() && v.error.is_none(), "client {i}: {v:?}");
        }
    }
}
