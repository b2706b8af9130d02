//! Several `rowcast serve` processes on one database. (The realtime half — clients moving
//! between instances while writers run — arrives with the WebSocket layer.)

use std::time::Duration;

use crate::support::{self, process::ServerProcess};

async fn ready(http: &reqwest::Client, server: &ServerProcess) -> bool {
    matches!(http.get(server.url("/ready")).send().await, Ok(r) if r.status() == 200)
}

/// An instance killed (SIGKILL) while it holds the migration lock mid-migration leaves no
/// half-applied migration behind, and the other instances finish the job and serve.
#[tokio::test]
async fn an_instance_killed_mid_migration_leaves_the_others_to_finish() {
    let url = support::fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    // The sleep keeps the first instance inside this migration long enough to kill it there.
    support::write_file(
        dir.path(),
        "0001_hits.sql",
        "create table hits (n int); insert into hits values (1); select pg_sleep(2);",
    );
    let migrations = dir.path().to_str().unwrap().to_string();
    let env = [
        ("ROWCAST_APP_MIGRATIONS", migrations.as_str()),
        ("ROWCAST_SHUTDOWN_TIMEOUT", "5s"),
    ];

    let mut first = ServerProcess::start_with(&url, &env);
    let db = support::connect(&url).await;
    support::eventually(
        Duration::from_secs(30),
        "first instance inside the slow migration",
        || async {
            let n: i64 = db
                .query_one(
                    "select count(*) from pg_stat_activity
                 where datname = current_database() and query like '%pg_sleep(2)%'
                   and pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            n > 0
        },
    )
    .await;

    first.sigkill();
    let status = tokio::task::spawn_blocking(move || first.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("killed instance exits");
    assert!(!status.success());
    // Killed inside the migration: nothing of it is visible.
    let table: Option<String> = db
        .query_one("select to_regclass('public.hits')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        table, None,
        "the migration had already committed; kill it sooner"
    );

    let others = [
        ServerProcess::start_with(&url, &env),
        ServerProcess::start_with(&url, &env),
    ];
    let http = reqwest::Client::new();
    for server in &others {
        support::eventually(Duration::from_secs(60), "surviving instance ready", || {
            ready(&http, server)
        })
        .await;
    }

    // Applied exactly once: the killed instance's transaction was rolled back whole.
    let hits: i64 = db
        .query_one("select count(*) from hits", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hits, 1);
    let recorded: i64 = db
        .query_one(
            "select count(*) from rowcast.schema_migrations where source = 'app'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 1);
    for server in &others {
        assert_eq!(
            http.get(server.url("/health"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}
