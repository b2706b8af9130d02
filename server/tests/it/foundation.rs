//! Health, readiness, migrations, and behaviour while the database is away.

use std::time::Duration;

use rowcast::{
    config::Config,
    store::{migrate, Store},
};
use serde_json::Value;

use crate::support::{self, proxy::Proxy, TestApp};

#[tokio::test]
async fn health_ready_and_unknown_routes() {
    let app = TestApp::spawn().await;
    let r = app.get("/health").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");

    let r = app.get("/ready").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["migrations"], "current");
    assert_eq!(body["schema_cache"], "loaded");

    let r = app.get("/no/such/route").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not-found");
    app.shutdown().await;
}

#[tokio::test]
async fn four_instances_on_one_empty_database_apply_each_migration_once() {
    let url = support::fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    // If two instances both applied 0002, `hits` would hold two rows.
    support::write_file(dir.path(), "0001_hits.sql", "create table hits (n int);");
    support::write_file(dir.path(), "0002_hit.sql", "insert into hits values (1);");

    let mut starts = Vec::new();
    for _ in 0..4 {
        let mut config = Config::for_database(&url);
        config.database.app_migrations = Some(dir.path().to_path_buf());
        starts.push(TestApp::start(config));
    }
    let apps = futures::future::join_all(starts).await;
    for app in &apps {
        app.wait_ready(Duration::from_secs(30)).await;
    }

    let db = support::connect(&url).await;
    let hits: i64 = db
        .query_one("select count(*) from hits", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        hits, 1,
        "the app migration inserting a row ran more than once"
    );
    let rows = db
        .query(
            "select source, version, count(*) from rowcast.schema_migrations group by 1, 2",
            &[],
        )
        .await
        .unwrap();
    let expected = migrate::server_migrations().len() + 2;
    assert_eq!(rows.len(), expected);
    for row in rows {
        assert_eq!(row.get::<_, i64>(2), 1);
    }
    for app in apps {
        app.shutdown().await;
    }
}

#[tokio::test]
async fn an_edited_applied_migration_is_refused() {
    let url = support::fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    support::write_file(
        dir.path(),
        "0001_todos.sql",
        "create table todos (id int primary key);",
    );
    let cfg: tokio_postgres::Config = url.parse().unwrap();
    let all = migrate::all_migrations(Some(dir.path())).unwrap();
    migrate::apply(&cfg, &all).await.unwrap();

    support::write_file(
        dir.path(),
        "0001_todos.sql",
        "create table todos (id int primary key, title text);",
    );
    let edited = migrate::all_migrations(Some(dir.path())).unwrap();
    let err = migrate::apply(&cfg, &edited).await.unwrap_err().to_string();
    assert!(err.contains("app/0001_todos.sql"), "{err}");
    assert!(err.contains("was changed after it was applied"), "{err}");

    // A server started with the edited file stays not-ready and says so.
    let mut config = Config::for_database(&url);
    config.database.app_migrations = Some(dir.path().to_path_buf());
    let app = TestApp::start(config).await;
    support::eventually(
        Duration::from_secs(30),
        "/ready reports the failed migrations",
        || async {
            app.get("/ready").await.json::<Value>().await.unwrap()["migrations"] == "failed"
        },
    )
    .await;
    let r = app.get("/ready").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not-ready");
    app.shutdown().await;
}

#[tokio::test]
async fn a_broken_migration_leaves_nothing_half_applied() {
    let url = support::fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    support::write_file(
        dir.path(),
        "0001_bad.sql",
        "create table half (id int); select no_such_function();",
    );
    let cfg: tokio_postgres::Config = url.parse().unwrap();
    let all = migrate::all_migrations(Some(dir.path())).unwrap();
    let err = migrate::apply(&cfg, &all).await.unwrap_err().to_string();
    assert!(err.contains("0001_bad.sql"), "{err}");
    let db = support::connect(&url).await;
    let half: bool = db
        .query_one("select to_regclass('public.half') is not null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!half, "the failed migration's table survived its rollback");
}

#[tokio::test]
async fn database_down_at_start_then_lost_and_recovered() {
    let url = support::migrated_db().await;
    let proxy = Proxy::start(support::proxy::target_of(&url), false).await;
    let mut config = Config::for_database(&proxy.url_through(&url));
    config.database.connect_timeout = Duration::from_secs(1);
    let app = TestApp::start(config).await;

    // Down at start: alive, not ready, and it keeps trying (a second attempt is a retry).
    support::eventually(
        Duration::from_secs(30),
        "the server retries the database",
        || async { proxy.refused() >= 2 },
    )
    .await;
    assert_eq!(app.get("/health").await.status(), 200);
    let r = app.get("/ready").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not-ready");

    proxy.set_up(true);
    app.wait_ready(Duration::from_secs(30)).await;

    // Lost while running: not ready, and storage errors map to a clear 503.
    proxy.set_up(false);
    support::eventually(Duration::from_secs(10), "/ready turns 503", || async {
        app.get("/ready").await.status() == 503
    })
    .await;
    let mut dcfg = Config::for_database(&proxy.url_through(&url)).database;
    dcfg.connect_timeout = Duration::from_secs(1);
    let store = Store::new(&proxy.url_through(&url), &dcfg).unwrap();
    let err: rowcast::protocol::ApiError =
        store.ping(Duration::from_secs(3)).await.unwrap_err().into();
    assert_eq!(err.code.as_str(), "database-unavailable");
    assert_eq!(err.code.http_status(), 503);

    // Back again: recovers by itself.
    proxy.set_up(true);
    app.wait_ready(Duration::from_secs(30)).await;
    app.shutdown().await;
}

#[tokio::test]
async fn as_identity_sets_role_and_claims_for_one_transaction_only() {
    use rowcast::auth::Identity;
    let url = support::migrated_db().await;
    let mut dcfg = Config::for_database(&url).database;
    dcfg.pool_size = 1; // one connection: the next transaction reuses the same backend.
    let store = Store::new(&url, &dcfg).unwrap();
    let uid = uuid::Uuid::new_v4();
    let who = Identity::user(
        &uid.to_string(),
        serde_json::json!({"tenant": "x'); drop table t; --"}),
    );
    let (role, seen_uid, tenant): (String, uuid::Uuid, String) = store
        .as_identity(&who, async |tx| {
            let row = tx
                .query_one(
                    "select current_user::text, rowcast.uid(), rowcast.claims() ->> 'tenant'",
                    &[],
                )
                .await?;
            Ok((row.get(0), row.get(1), row.get(2)))
        })
        .await
        .unwrap();
    assert_eq!(role, "rowcast_authenticated");
    assert_eq!(seen_uid, uid);
    assert_eq!(tenant, "x'); drop table t; --");

    // The pool's own (single) connection, not a new one: the identity must not outlive
    // the transaction on the backend the pool hands out next.
    let client = store.pool().get().await.unwrap();
    let row = client
        .query_one("select current_user::text, rowcast.uid()", &[])
        .await
        .unwrap();
    assert_ne!(row.get::<_, String>(0), "rowcast_authenticated");
    assert_eq!(
        row.get::<_, Option<uuid::Uuid>>(1),
        None,
        "identity leaked past its transaction"
    );
}
