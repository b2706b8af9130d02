//! What a hostile or careless client tries against realtime, and what it must get: cursors
//! the server cannot place answered with `resync-required` (never silence), tables outside
//! the exposed schemas answered like unknown ones, errors that name what is missing without
//! echoing what was sent, and limits on slow and idle connections (issue 18).

use std::{net::SocketAddr, time::Duration};

use futures::SinkExt;
use rowcast::config::Config;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    self,
    realtime::{new_uid, token_for, Client},
    TestApp,
};

/// A synced table `todos` everyone may read.
async fn todos_app(config: impl FnOnce(&mut Config)) -> TestApp {
    let url = support::migrated_db().await;
    let mut cfg = Config::for_database(&url);
    cfg.capture.poll_interval = Duration::from_millis(20);
    config(&mut cfg);
    let app = TestApp::spawn_with(cfg).await;
    app.db()
        .await
        .batch_execute(
            "create table public.todos (id bigint primary key, title text not null default '');
             grant select, insert, update, delete on public.todos to rowcast_authenticated, rowcast_anon;
             select rowcast.enable_sync('public.todos');",
        )
        .await
        .unwrap();
    app
}

fn server_addr(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// Subscribe and return the first frame about `id`.
async fn answer(c: &mut Client, msg: Value) -> Value {
    let id = msg["id"].as_str().unwrap().to_string();
    c.send(msg).await;
    loop {
        let m = c.next().await.expect("socket stays open");
        if m["id"] == id.as_str() {
            return m;
        }
    }
}

#[tokio::test]
async fn tables_outside_the_exposed_schemas_answer_like_unknown_ones() {
    let app = todos_app(|_| {}).await;
    let db = app.db().await;
    // A real, synced table the roles may read, but in a schema REST does not expose.
    db.batch_execute(
        "create schema hidden;
         create table hidden.notes (id bigint primary key);
         grant usage on schema hidden to rowcast_anon;
         grant select on hidden.notes to rowcast_anon;
         select rowcast.enable_sync('hidden.notes');",
    )
    .await
    .unwrap();
    let mut c = Client::connect(&app, None).await;
    let mut answers = Vec::new();
    for (i, table) in [
        "pg_catalog.pg_authid",
        "pg_catalog.no_such_table",
        "rowcast.users",
        "rowcast.change_log",
        "hidden.notes",
        "hidden.made_up",
        "nowhere.made_up",
    ]
    .iter()
    .enumerate()
    {
        let m = answer(
            &mut c,
            json!({"type": "subscribe", "id": format!("s{i}"), "table": table}),
        )
        .await;
        assert_eq!(m["type"], "error", "{table}: {m}");
        // Everything but the echoed name is the same, whether the table exists or not.
        let shape = m["message"].as_str().unwrap().replace(table, "<t>");
        answers.push((m["code"].clone(), shape, m.get("hint").cloned()));
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "answers differ: {answers:?}"
    );
    assert_eq!(answers[0].0, "not-found");
    // The exposed schema still works, qualified or not.
    c.subscribe("ok", "public.todos", None, None).await;
    c.until_live("ok").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_missing_grant_on_the_version_column_is_named() {
    let app = todos_app(|_| {}).await;
    let db = app.db().await;
    db.batch_execute(
        "create table public.profiles (id bigint primary key, owner uuid, display_name text, email text);
         select rowcast.enable_sync('public.profiles');
         grant select (id, owner, display_name) on public.profiles to rowcast_authenticated;",
    )
    .await
    .unwrap();
    let uid = new_uid();
    let mut c = Client::connect(&app, Some(&token_for(&uid, Duration::from_secs(600)))).await;
    let m = answer(
        &mut c,
        json!({"type": "subscribe", "id": "p", "table": "profiles", "columns": ["id", "display_name"]}),
    )
    .await;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{m}"
    );
    let text = m.to_string();
    assert!(m["message"].as_str().unwrap().contains("`_v`"), "{m}");
    assert!(
        m["hint"]
            .as_str()
            .unwrap()
            .contains("grant select (_v) on public.profiles to rowcast_authenticated"),
        "{m}"
    );
    assert!(!text.contains("permission denied"), "{m}");
    // Granting exactly that is enough.
    db.batch_execute("grant select (_v) on public.profiles to rowcast_authenticated")
        .await
        .unwrap();
    let addr = server_addr(&app);
    support::eventually(Duration::from_secs(20), "subscription works after the grant", || {
        let token = token_for(&uid, Duration::from_secs(600));
        async move {
            let mut c = Client::connect(&addr, Some(&token)).await;
            let m = answer(
                &mut c,
                json!({"type": "subscribe", "id": "p", "table": "profiles", "columns": ["id", "display_name"]}),
            )
            .await;
            m["type"] == "snapshot-end" || m["type"] == "snapshot"
        }
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_field_errors_do_not_echo_the_value_sent() {
    let app = todos_app(|_| {}).await;
    let mut raw = Client::open(&app).await;
    raw.send(Message::text(
        r#"{"type":"hello","v":1,"token":["sekrit-token-value"]}"#,
    ))
    .await
    .unwrap();
    let mut c = Client {
        ws: raw,
        views: Default::default(),
        log: Vec::new(),
        closed: None,
    };
    let m = c.next().await.expect("an error frame before the close");
    assert_eq!(m["code"], "invalid-field", "{m}");
    assert!(!m.to_string().contains("sekrit"), "{m}");
    assert!(m["details"].as_str().unwrap().contains("expected"), "{m}");

    let mut c = Client::connect(&app, None).await;
    let m = answer(
        &mut c,
        json!({"type": "subscribe", "id": "x", "table": "todos", "columns": "sekrit-column-list"}),
    )
    .await;
    assert_eq!(m["code"], "invalid-field", "{m}");
    assert!(!m.to_string().contains("sekrit"), "{m}");
    app.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_rowcast");

#[test]
fn serve_refuses_placeholder_and_weak_secrets() {
    for secret in [
        // What docker-compose.yml used to fall back to.
        "insecure-placeholder-secret-change-me-0123456789",
        "super-secret-jwt-token-with-at-least-32-characters-long",
        "CHANGE_ME_CHANGE_ME_CHANGE_ME_CHANGE_ME",
        "0000000000000000000000000000000000000000",
        "abcdefghijklmnopqrstuvwxyz0123456789",
    ] {
        let mut child = std::process::Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
            .env("ROWCAST_LISTEN", "127.0.0.1:0")
            .env("ROWCAST_JWT_SECRET", secret)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that accepted the secret would keep running: stop it and fail.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                let _ = child.wait();
                panic!("`rowcast serve` started with the secret {secret:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{secret}: {stderr}");
        assert!(stderr.contains("ROWCAST_JWT_SECRET"), "{stderr}");
        assert!(stderr.contains("openssl rand -hex 32"), "{stderr}");
        assert!(
            !stderr.contains(secret),
            "the secret is not echoed: {stderr}"
        );
    }
}

#[tokio::test]
async fn migrate_and_sync_leave_no_secret_behind() {
    let url = support::migrated_db().await;
    let dir = tempfile::tempdir().unwrap();
    for args in [&["migrate"][..], &["sync", "list"][..]] {
        let (dir_path, url) = (dir.path().to_path_buf(), url.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(BIN)
                .args(args)
                .current_dir(dir_path)
                .env_clear()
                .env("DATABASE_URL", url)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !dir.path().join(".rowcast").exists(),
            "`rowcast {}` wrote a dev secret",
            args.join(" ")
        );
    }
}

/// Subscribe to `todos` with `cursor`; the first frame that ends catch-up: `live`,
/// `resync-required` or `error`.
async fn resume(c: &mut Client, id: &str, cursor: &str) -> Value {
    c.subscribe(id, "todos", None, Some(cursor.to_string()))
        .await;
    loop {
        let m = c.next().await.expect("socket stays open");
        if m["id"] == id
            && ["live", "resync-required", "error"].contains(&m["type"].as_str().unwrap_or(""))
        {
            return m;
        }
    }
}

#[tokio::test]
async fn cursors_the_log_cannot_place_get_resync_required() {
    let app = todos_app(|_| {}).await;
    let db = app.db().await;
    let mut c = Client::connect(&app, None).await;
    c.subscribe("t", "todos", None, None).await;
    c.until_live("t").await;
    db.execute("insert into todos (id) values (1)", &[])
        .await
        .unwrap();
    c.until("first insert", Duration::from_secs(20), |v| {
        v["t"].visible().len() == 1
    })
    .await;
    let real = c.views["t"].cursor.clone().unwrap();
    let parts: Vec<&str> = real.split(':').collect();
    assert_eq!(parts.len(), 3, "cursor carries the log id: {real}");
    let (xid, id, log) = (parts[0], parts[1], parts[2]);
    let raised_id = format!("{xid}:{}:{log}", id.parse::<i64>().unwrap() + 1_000_000);
    let far_xid = format!("99999999:0:{log}");
    let other_log = format!(
        "{xid}:{id}:{}",
        if log.starts_with('0') { "1" } else { "0" }.to_string() + &log[1..]
    );
    let cases = [
        ("99999999:0", "cursor ahead of the change log"),
        (far_xid.as_str(), "cursor ahead of the change log"),
        (
            raised_id.as_str(),
            "cursor names no position in the change log",
        ),
        (other_log.as_str(), "cursor from another database"),
    ];
    for (i, (cursor, reason)) in cases.iter().enumerate() {
        let m = resume(&mut c, &format!("bad{i}"), cursor).await;
        assert_eq!(m["type"], "resync-required", "{cursor}: {m}");
        assert_eq!(m["reason"], *reason, "{cursor}: {m}");
    }
    // The real cursor, in the new and the old format, resumes and gets later inserts.
    for (i, cursor) in [real.clone(), format!("{xid}:{id}")].iter().enumerate() {
        let sub = format!("ok{i}");
        let m = resume(&mut c, &sub, cursor).await;
        assert_eq!(m["type"], "live", "{cursor}: {m}");
    }
    db.execute("insert into todos (id) values (2)", &[])
        .await
        .unwrap();
    c.until(
        "both resumed subscriptions get the insert",
        Duration::from_secs(20),
        |v| v["ok0"].visible().len() == 1 && v["ok1"].visible().len() == 1,
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_cursor_from_another_database_gets_resync_required() {
    // Two deployments (two databases, same schema and similar history).
    let a = todos_app(|_| {}).await;
    let b = todos_app(|_| {}).await;
    let mut ca = Client::connect(&a, None).await;
    ca.subscribe("t", "todos", None, None).await;
    ca.until_live("t").await;
    let from_a = ca.views["t"].cursor.clone().unwrap();
    let mut cb = Client::connect(&b, None).await;
    let m = resume(&mut cb, "t", &from_a).await;
    assert_eq!(m["type"], "resync-required", "{m}");
    assert_eq!(m["reason"], "cursor from another database", "{m}");
    // Its own cursor works there.
    cb.subscribe("own", "todos", None, None).await;
    cb.until_live("own").await;
    let own = cb.views["own"].cursor.clone().unwrap();
    assert_eq!(resume(&mut cb, "again", &own).await["type"], "live");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_cursor_from_a_faster_instance_is_placed_and_nothing_is_lost() {
    let a = todos_app(|_| {}).await;
    // B shares the database but its tail only moves when woken: it lags behind A. (B has
    // no doorbell either; switching it off for the database leaves A on its poll.)
    let mut cfg = Config::for_database(&a.db_url);
    cfg.capture.poll_interval = Duration::from_secs(3600);
    cfg.capture.notify = false;
    let b = TestApp::spawn_with(cfg).await;
    let db = a.db().await;
    let mut ca = Client::connect(&a, None).await;
    ca.subscribe("t", "todos", None, None).await;
    ca.until_live("t").await;
    db.execute("insert into todos (id) values (1)", &[])
        .await
        .unwrap();
    ca.until("A delivers", Duration::from_secs(20), |v| {
        v["t"].visible().len() == 1
    })
    .await;
    let cursor = ca.views["t"].cursor.clone().unwrap();
    let at: rowcast::capture::Cursor = cursor.rsplit_once(':').unwrap().0.parse().unwrap();
    let b_position = b.capture().position().unwrap();
    assert!(
        b_position < at,
        "B's tail ({b_position}) must lag A's cursor ({at})"
    );

    let mut cb = Client::connect(&b, None).await;
    let m = resume(&mut cb, "t", &cursor).await;
    assert_eq!(
        m["type"], "live",
        "a cursor the database has is placed: {m}"
    );
    db.execute("insert into todos (id) values (2)", &[])
        .await
        .unwrap();
    // One wake can find row 2 still above the watermark: any transaction holding an xid
    // anywhere in the cluster holds it back, and other tests share the cluster. B's poll is
    // off, so wake it as its poll would until it delivers.
    let waker = {
        let capture = b.capture().clone();
        tokio::spawn(async move {
            loop {
                capture.wake();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    cb.until(
        "B delivers what follows the cursor",
        Duration::from_secs(20),
        |v| !v["t"].visible().is_empty(),
    )
    .await;
    waker.abort();
    // Row 1 was before the cursor: not sent again; row 2 arrived.
    assert_eq!(
        cb.views["t"].keys(),
        vec![json!({"id": 2}).to_string()],
        "{:?}",
        cb.log
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_request_head_sent_slowly_or_never_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = todos_app(|c| c.http.header_read_timeout = Duration::from_millis(300)).await;
    let addr = server_addr(&app);
    // A partial head, a connection that sends nothing at all, and an idle keep-alive one.
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A keep-alive connection that goes quiet after one whole request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    for (what, stream) in [
        ("partial head", &mut partial),
        ("nothing sent", &mut silent),
        ("idle keep-alive", &mut idle),
    ] {
        let mut got = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got)).await;
        // Closed (possibly after a 408), or reset: either way the server let go.
        assert!(
            read.is_ok(),
            "{what}: the server still holds the connection"
        );
        let text = String::from_utf8_lossy(&got);
        // (The idle one still has the rest of its first response to read.)
        assert!(
            got.is_empty() || text.starts_with("HTTP/1.1 408") || what == "idle keep-alive",
            "{what}: {text}"
        );
    }
    // Whole requests are unaffected.
    assert_eq!(app.get("/health").await.status(), 200);
    app.shutdown().await;
}

/// Open a WebSocket as if from `ip` (behind the trusted proxy); the HTTP status if refused.
async fn open_from(app: &TestApp, ip: &str) -> Result<support::realtime::Ws, (u16, Value)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/realtime/v1/websocket", app.base.replace("http", "ws"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "x-forwarded-for",
        format!("203.0.113.9, {ip}").parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = serde_json::from_slice(r.body().as_deref().unwrap_or_default())
                .unwrap_or(Value::Null);
            Err((r.status().as_u16(), body))
        }
        Err(e) => panic!("connect: {e}"),
    }
}

fn client(ws: support::realtime::Ws) -> Client {
    Client {
        ws,
        views: Default::default(),
        log: Vec::new(),
        closed: None,
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_websocket_slot() {
    let app = todos_app(|c| {
        c.http.trusted_proxy_header = Some("x-forwarded-for".into());
        c.realtime.max_connections = 50;
        c.realtime.max_connections_per_address = 40;
        c.realtime.hello_timeout = Duration::from_secs(600);
    })
    .await;
    // 50 idle sockets from one address: only its share of un-greeted sockets gets in.
    let mut idle = Vec::new();
    let mut refused = None;
    for _ in 0..50 {
        match open_from(&app, "10.0.0.1").await {
            Ok(ws) => idle.push(client(ws)),
            Err(r) => refused = Some(r),
        }
    }
    // The default share (32) of the 50 slots.
    assert_eq!(idle.len(), 32);
    assert_eq!(app.realtime().settings.max_unauthenticated_per_address, 32);
    let (status, body) = refused.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("limit-exceeded")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("`hello`"),
        "{body}"
    );
    // Everyone else still gets in.
    let mut other = client(open_from(&app, "10.0.0.2").await.unwrap());
    other.send(json!({"type": "hello", "v": 1})).await;
    assert_eq!(other.next().await.unwrap()["type"], "welcome");

    // Greeted sockets no longer count as unauthenticated, but the address's total share
    // still caps it.
    for c in &mut idle {
        c.send(json!({"type": "hello", "v": 1})).await;
        assert_eq!(c.next().await.unwrap()["type"], "welcome");
    }
    let mut more = Vec::new();
    let refused = loop {
        match open_from(&app, "10.0.0.1").await {
            Ok(ws) => more.push(ws),
            Err(r) => break r,
        }
        assert!(more.len() <= 50, "never refused");
    };
    assert_eq!(idle.len() + more.len(), 40);
    assert_eq!(refused.0, 429);
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("address has reached"),
        "{}",
        refused.1
    );
    // Closing frees the share.
    drop(more);
    drop(idle);
    support::eventually(Duration::from_secs(20), "slots freed", || async {
        open_from(&app, "10.0.0.1").await.is_ok()
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_socket_that_never_says_hello_is_closed_after_the_hello_timeout() {
    let app = todos_app(|c| c.realtime.hello_timeout = Duration::from_millis(300)).await;
    let mut greeted = Client::connect(&app, None).await;
    let mut silent = client(Client::open(&app).await);
    while silent.next().await.is_some() {}
    assert_eq!(silent.closed, Some(4003));
    // The greeted socket outlived the deadline and still works.
    greeted.send(json!({"type": "ping", "ref": "after"})).await;
    assert_eq!(greeted.next().await.unwrap()["ref"], "after");
    support::eventually(
        Duration::from_secs(20),
        "the silent socket's slot is freed",
        || async {
            app.realtime()
                .stats
                .connections
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
        },
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_embedded_postgres_log_keeps_user_data_out() {
    let root = tempfile::Builder::new()
        .prefix("rowcast-log-test-")
        .tempdir()
        .unwrap();
    rowcast::cluster::prepare_parent_dir(root.path()).unwrap();
    let data = root.path().join("pg");
    let pg = tokio::task::spawn_blocking({
        let data = data.clone();
        move || rowcast::cluster::EmbeddedPostgres::start(&data, None).unwrap()
    })
    .await
    .unwrap();
    let db = support::connect(&pg.url_for("postgres")).await;
    db.batch_execute("create table people (email text unique)")
        .await
        .unwrap();
    let email = "someone.private@example.org";
    db.execute("insert into people values ($1)", &[&email])
        .await
        .unwrap();
    let dup = db
        .execute("insert into people values ($1)", &[&email])
        .await
        .unwrap_err();
    assert_eq!(
        dup.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    // A statement with the value written into it, as an admin's psql session would send.
    let literal = db
        .batch_execute(&format!("insert into people values ('{email}')"))
        .await
        .unwrap_err();
    assert!(literal.code().is_some());
    let log_path = data.join("rowcast-postgres.log");
    // Postgres logs an error before it answers the client; the lines are there now.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.matches("duplicate key value violates unique constraint")
            .count()
            >= 2,
        "{log}"
    );
    assert!(!log.contains(email), "the log holds user data:\n{log}");
    drop(db);
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_external_providers_user_arriving_over_websocket_is_provisioned() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey failed");
    let private_pem = std::fs::read(&key).unwrap();
    let mut jwk = rowcast::auth::token::public_rsa_jwk(&private_pem).unwrap();
    jwk["kid"] = json!("k1");
    let iss = "https://securetoken.google.com/ws-only";
    let providers = json!([{
        "name": "firebase", "issuer": iss, "audience": "ws-only", "jwks": {"keys": [jwk]},
    }])
    .to_string();
    let parsed = rowcast::config::parse_providers(&providers, "rowcast").unwrap();
    let app = todos_app(|c| c.auth.providers = parsed).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |sub: &str| {
        let claims = json!({
            "iss": iss, "aud": "ws-only", "sub": sub, "iat": now, "exp": now + 600,
            "email": format!("{sub}@example.com"),
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(&private_pem).unwrap(),
        )
        .unwrap()
    };
    let db = app.db().await;
    let known = |sub: &'static str| {
        let db = &db;
        async move {
            db.query_opt(
                "select u.id from rowcast.identities i join rowcast.users u on u.id = i.user_id
                 where i.issuer = $1 and i.subject = $2",
                &[&iss, &sub],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, uuid::Uuid>(0))
        }
    };
    // First sight in `hello`, and in `auth` on a live socket.
    let mut c = Client::connect(&app, Some(&sign("ws-user-1"))).await;
    assert_eq!(
        known("ws-user-1").await,
        Some(rowcast::auth::provider::external_user_id(iss, "ws-user-1"))
    );
    c.send(json!({"type": "auth", "token": sign("ws-user-2")}))
        .await;
    assert_eq!(c.next().await.unwrap()["type"], "authenticated");
    assert_eq!(
        known("ws-user-2").await,
        Some(rowcast::auth::provider::external_user_id(iss, "ws-user-2"))
    );
    app.shutdown().await;
}
