//! Realtime over real WebSockets against a real server and Postgres: snapshot and live
//! delivery, the snapshot hand-off and resume under concurrent writes, authorization by
//! row-level security (fast path and SQL fallback), tokens on a live socket, bad input,
//! limits, slow consumers and shutdown.

use std::{collections::HashMap, sync::atomic::Ordering::Relaxed, time::Duration};

use futures::{SinkExt, StreamExt};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rowcast::{auth::Identity, config::Config};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};

use crate::support::{
    self,
    realtime::{keys, new_uid, token_for, Client, View, Ws},
    TestApp,
};

/// A synced table `todos` with an owner-only policy given by `policy_using`.
async fn todos_app(policy_using: &str, config: impl FnOnce(&mut Config)) -> TestApp {
    let url = support::migrated_db().await;
    let mut cfg = Config::for_database(&url);
    cfg.capture.poll_interval = Duration::from_millis(20);
    config(&mut cfg);
    let app = TestApp::spawn_with(cfg).await;
    let db = app.db().await;
    db.batch_execute(&format!(
        "create table public.todos (id bigint primary key, owner uuid, title text not null default '',
                             done boolean not null default false, n int not null default 0);
         alter table public.todos enable row level security;
         create policy read_own on public.todos for select using ({policy_using});
         create policy write_own on public.todos for insert to rowcast_authenticated
           with check (owner = rowcast.uid());
         grant select, insert, update, delete on public.todos to rowcast_authenticated, rowcast_anon;
         select rowcast.enable_sync('public.todos');"
    ))
    .await
    .unwrap();
    app
}

const OWNER_ONLY: &str = "owner = rowcast.uid()";
/// Same meaning, outside the fast-path subset (a cast that changes the column's type), so it
/// is checked in SQL. (`owner = (select rowcast.uid())` is on the fast path.)
const OWNER_ONLY_SLOW: &str = "owner::text = (rowcast.claims() ->> 'sub')";

/// The rows `uid` may see, as the database says (key → row), optionally filtered.
async fn db_view(db: &tokio_postgres::Client, uid: &str, where_: &str) -> HashMap<String, Value> {
    let sql = format!(
        "select jsonb_build_object('id', id), to_jsonb(t) from todos t where owner = $1::text::uuid {where_}"
    );
    db.query(&sql, &[&uid])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, Value>(0).to_string(), r.get::<_, Value>(1)))
        .collect()
}

#[tokio::test]
async fn snapshot_then_live_changes_reach_matching_subscribers_only() {
    let app = todos_app(OWNER_ONLY, |_| {}).await;
    let db = app.db().await;
    let (a, b) = (new_uid(), new_uid());
    db.execute(
        "insert into todos (id, owner, title) values (1, $1::text::uuid, 'a1'), (2, $2::text::uuid, 'b2')",
        &[&a, &b],
    )
    .await
    .unwrap();

    let mut ca = Client::connect(&app, Some(&token_for(&a, Duration::from_secs(600)))).await;
    ca.subscribe("all", "todos", None, None).await;
    ca.subscribe(
        "open",
        "public.todos",
        Some(json!({"column": "done", "op": "eq", "value": false})),
        None,
    )
    .await;
    ca.until_live("all").await;
    ca.until_live("open").await;
    assert_eq!(
        ca.views["all"].visible().len(),
        1,
        "snapshot has only a's row"
    );
    assert!(ca.views["all"]
        .visible()
        .contains_key(&json!({"id": 1}).to_string()));

    // A write by the admin in plain SQL...
    db.execute(
        "insert into todos (id, owner, title) values (3, $1::text::uuid, 'a3')",
        &[&a],
    )
    .await
    .unwrap();
    // ...and one by the user through the REST API (as that user, RLS on).
    let service = keys()
        .sign(&Identity::service(), Duration::from_secs(600))
        .unwrap();
    let r = app
        .http
        .post(app.url("/rest/v1/admin/reload-schema"))
        .bearer_auth(&service)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .post(app.url("/rest/v1/todos"))
        .bearer_auth(token_for(&a, Duration::from_secs(600)))
        .json(&json!({"id": 4, "owner": a, "title": "a4 done", "done": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    // Someone else's row and a non-matching one.
    db.execute(
        "insert into todos (id, owner) values (5, $1::text::uuid)",
        &[&b],
    )
    .await
    .unwrap();
    ca.until("both writes", Duration::from_secs(20), |v| {
        v["all"].visible().len() == 3 && v["open"].visible().len() == 2
    })
    .await;
    // The done row (4) is in `all` but not in `open`.
    assert!(!ca.views["open"]
        .visible()
        .contains_key(&json!({"id": 4}).to_string()));
    // A row that starts matching arrives as an insert, one that stops as a remove.
    db.execute("update todos set done = false where id = 4", &[])
        .await
        .unwrap();
    ca.until("4 enters open", Duration::from_secs(20), |v| {
        v["open"].visible().len() == 3
    })
    .await;
    db.execute("update todos set done = true where id = 1", &[])
        .await
        .unwrap();
    ca.until("1 leaves open", Duration::from_secs(20), |v| {
        v["open"].visible().len() == 2
    })
    .await;
    let ops: Vec<String> = ca
        .log
        .iter()
        .filter(|m| m["type"] == "changes" && m["id"] == "open")
        .flat_map(|m| {
            m["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["op"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(ops.contains(&"remove".to_string()), "{ops:?}");
    ca.drain(Duration::from_millis(300)).await;
    // Never b's key.
    for m in &ca.log {
        assert!(!m.to_string().contains(&b), "a received b's data: {m}");
    }
    assert_eq!(ca.views["all"].visible(), db_view(&db, &a, "").await);
    // The numbers reach /metrics.
    let text = app.get("/metrics").await.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(-1.0)
    };
    assert_eq!(value("rowcast_ws_connections "), 1.0, "{text}");
    assert_eq!(value("rowcast_subscriptions "), 2.0, "{text}");
    assert!(value("rowcast_changes_delivered_total ") >= 4.0, "{text}");
    app.shutdown().await;
}

/// Two users under an owner-only policy: neither ever receives the other's rows, keys or
/// deletes, over snapshot, insert, update (including moving a row from A to B) and delete.
async fn two_users_never_see_each_other(policy: &str) -> TestApp {
    let app = todos_app(policy, |_| {}).await;
    let db = app.db().await;
    let (a, b) = (new_uid(), new_uid());
    db.execute(
        "insert into todos (id, owner) values (1, $1::text::uuid), (2, $2::text::uuid), (3, $2::text::uuid)",
        &[&a, &b],
    )
    .await
    .unwrap();
    let mut ca = Client::connect(&app, Some(&token_for(&a, Duration::from_secs(600)))).await;
    let mut cb = Client::connect(&app, Some(&token_for(&b, Duration::from_secs(600)))).await;
    let mut anon = Client::connect(&app, None).await;
    for c in [&mut ca, &mut cb, &mut anon] {
        c.subscribe("t", "todos", None, None).await;
        c.until_live("t").await;
    }
    assert_eq!(ca.views["t"].visible().len(), 1);
    assert_eq!(cb.views["t"].visible().len(), 2);
    assert!(anon.views["t"].rows.is_empty());

    // insert, update, move A→B, move B→A, delete, in separate and shared transactions.
    db.batch_execute(&format!(
        "insert into todos (id, owner) values (10, '{a}'), (11, '{b}');
         update todos set title = 'x' where id in (1, 2);
         update todos set owner = '{b}' where id = 10;
         begin; update todos set owner = '{a}' where id = 3; delete from todos where id = 2; commit;
         delete from todos where id = 11;"
    ))
    .await
    .unwrap();
    let (va, vb) = (db_view(&db, &a, "").await, db_view(&db, &b, "").await);
    ca.until("a converges", Duration::from_secs(20), |v| {
        v["t"].visible() == va
    })
    .await;
    cb.until("b converges", Duration::from_secs(20), |v| {
        v["t"].visible() == vb
    })
    .await;
    for c in [&mut ca, &mut cb, &mut anon] {
        c.drain(Duration::from_millis(300)).await;
    }
    // a only ever heard of keys 1, 10 (until it moved away: a remove), 3 (moved in).
    let mut ka = ca.views["t"].keys();
    ka.sort();
    let mut expect_a: Vec<String> = [1, 3, 10]
        .iter()
        .map(|i| json!({"id": i}).to_string())
        .collect();
    expect_a.sort();
    assert_eq!(ka, expect_a, "a heard of keys it could never see");
    let mut kb = cb.views["t"].keys();
    kb.sort();
    let mut expect_b: Vec<String> = [2, 3, 10, 11]
        .iter()
        .map(|i| json!({"id": i}).to_string())
        .collect();
    expect_b.sort();
    assert_eq!(kb, expect_b, "b heard of keys it could never see");
    for m in &ca.log {
        assert!(!m.to_string().contains(&b), "a received b's data: {m}");
    }
    for m in &cb.log {
        assert!(!m.to_string().contains(&a), "b received a's data: {m}");
    }
    assert!(
        anon.log
            .iter()
            .all(|m| m["type"] != "changes" && m["type"] != "snapshot"),
        "anonymous received rows: {:?}",
        anon.log
    );
    app
}

#[tokio::test]
async fn owner_only_policy_on_the_fast_path() {
    let app = two_users_never_see_each_other(OWNER_ONLY).await;
    assert_eq!(
        app.realtime().stats.sql_checks.load(Relaxed),
        0,
        "the owner-only policy should be evaluated in the server"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn owner_only_policy_outside_the_fast_path_is_checked_in_sql() {
    let app = two_users_never_see_each_other(OWNER_ONLY_SLOW).await;
    assert!(
        app.realtime().stats.sql_checks.load(Relaxed) > 0,
        "the cast policy should have been checked in SQL"
    );
    app.shutdown().await;
}

/// Writers run while clients subscribe at random moments; at the end each client's view
/// equals the filtered SELECT for its user.
async fn handoff_run(seed: u64, policy: &str) {
    let app = todos_app(policy, |_| {}).await;
    let users: Vec<String> = (0..3).map(|_| new_uid()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let db = app.db().await;
        let users = users.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed * 10 + w);
            let mut n = 0;
            while !stop.load(Relaxed) && n < 400 {
                n += 1;
                let id: i64 = rng.gen_range(0..60);
                let owner = &users[rng.gen_range(0..users.len())];
                let r = match rng.gen_range(0..4) {
                    0 | 1 => {
                        db.execute(
                            "insert into todos (id, owner, n) values ($1, $2::text::uuid, $3)
                             on conflict (id) do update set owner = excluded.owner, n = excluded.n",
                            &[&id, owner, &rng.gen_range(0..10i32)],
                        )
                        .await
                    }
                    2 => {
                        db.execute(
                            "update todos set n = n + 1, done = not done where id = $1",
                            &[&id],
                        )
                        .await
                    }
                    _ => db.execute("delete from todos where id = $1", &[&id]).await,
                };
                r.unwrap();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..4))).await;
            }
        }));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clients = Vec::new();
    for (i, u) in users.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..200))).await;
        let mut c = Client::connect(&app, Some(&token_for(u, Duration::from_secs(600)))).await;
        c.subscribe("all", "todos", None, None).await;
        c.subscribe(
            "small",
            "todos",
            Some(json!({"column": "n", "op": "lt", "value": 5})),
            None,
        )
        .await;
        clients.push((i, c));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, Relaxed);
    let db = app.db().await;
    for (i, c) in &mut clients {
        let all = db_view(&db, &users[*i], "").await;
        let small = db_view(&db, &users[*i], "and n < 5").await;
        c.until(
            &format!("seed {seed}: client {i} equals the database"),
            Duration::from_secs(30),
            |v| v["all"].visible() == all && v["small"].visible() == small,
        )
        .await;
    }
    app.shutdown().await;
}

fn seeds() -> Vec<u64> {
    match std::env::var("ROWCAST_TEST_SEED") {
        Ok(s) => vec![s.parse().expect("ROWCAST_TEST_SEED is a number")],
        Err(_) => vec![1, 2],
    }
}

#[tokio::test]
async fn snapshot_hand_off_under_concurrent_writes() {
    for seed in seeds() {
        println!("seed {seed}");
        handoff_run(seed, OWNER_ONLY).await;
    }
    handoff_run(7, OWNER_ONLY_SLOW).await;
}

/// Clients drop their sockets at random points during writes and resume with their cursor;
/// at the end each view equals the database, and no change was applied out of order.
#[tokio::test]
async fn resume_after_random_disconnects_during_writes() {
    for seed in seeds() {
        println!("seed {seed}");
        let app = todos_app(OWNER_ONLY, |_| {}).await;
        let uid = new_uid();
        let token = token_for(&uid, Duration::from_secs(600));
        let db = app.db().await;
        let writer =
            {
                let db = app.db().await;
                let uid = uid.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed + 100);
                    for _ in 0..500 {
                        let id: i64 = rng.gen_range(0..40);
                        match rng.gen_range(0..3) {
                        0 => db
                            .execute(
                                "insert into todos (id, owner, n) values ($1, $2::text::uuid, 0)
                                 on conflict (id) do update set n = todos.n + 1",
                                &[&id, &uid],
                            )
                            .await
                            .unwrap(),
                        1 => db
                            .execute("update todos set n = n + 1 where id = $1", &[&id])
                            .await
                            .unwrap(),
                        _ => db.execute("delete from todos where id = $1", &[&id]).await.unwrap(),
                    };
                        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..3))).await;
                    }
                })
            };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut view = View::default();
        let mut cursor: Option<String> = None;
        let mut reconnects = 0;
        loop {
            let mut c = Client::connect(&app, Some(&token)).await;
            c.views.insert("t".into(), view.clone());
            c.subscribe("t", "todos", None, cursor.clone()).await;
            // Read a random number of messages, then drop the socket without a goodbye.
            let budget = rng.gen_range(1..40);
            for _ in 0..budget {
                match tokio::time::timeout(Duration::from_secs(1), c.next()).await {
                    Ok(Some(_)) => {}
                    _ => break,
                }
                if c.views["t"].resync.is_some() {
                    panic!("unexpected resync: {:?}", c.views["t"]);
                }
            }
            view = c.views["t"].clone();
            cursor = view.cursor.clone().or(cursor);
            reconnects += 1;
            drop(c);
            if writer.is_finished() && reconnects > 3 {
                break;
            }
        }
        writer.await.unwrap();
        let expect = db_view(&db, &uid, "").await;
        let mut c = Client::connect(&app, Some(&token)).await;
        c.views.insert("t".into(), view);
        c.subscribe("t", "todos", None, cursor).await;
        c.until(
            &format!("seed {seed}: resumed view equals the database"),
            Duration::from_secs(30),
            |v| v["t"].visible() == expect,
        )
        .await;
        assert!(reconnects > 3);
        app.shutdown().await;
    }
}

#[tokio::test]
async fn bad_input_gets_error_frames_and_the_socket_stays_open() {
    let app = todos_app(OWNER_ONLY, |c| c.realtime.max_message_bytes = 4096).await;
    let uid = new_uid();
    let mut c = Client::connect(&app, Some(&token_for(&uid, Duration::from_secs(600)))).await;
    let mut other = Client::connect(&app, Some(&token_for(&uid, Duration::from_secs(600)))).await;
    other.subscribe("o", "todos", None, None).await;
    other.until_live("o").await;

    let cases: Vec<(Message, &str, Option<&str>)> = vec![
        (Message::text("{not json"), "invalid-json", None),
        (Message::text("[1,2]"), "bad-request", None),
        (
            Message::text(r#"{"type":"launch","id":"x"}"#),
            "bad-request",
            Some("x"),
        ),
        (
            Message::text(r#"{"type":"subscribe","id":"s1"}"#),
            "invalid-field",
            Some("s1"),
        ),
        (
            Message::text(r#"{"type":"subscribe","id":"s2","table":"nope"}"#),
            "not-found",
            Some("s2"),
        ),
        (
            Message::text(
                r#"{"type":"subscribe","id":"s3","table":"todos","filter":{"column":"nope","op":"eq","value":1}}"#,
            ),
            "not-found",
            Some("s3"),
        ),
        (
            Message::text(
                r#"{"type":"subscribe","id":"s4","table":"todos","filter":{"column":"n","op":"like","value":1}}"#,
            ),
            "invalid-field",
            Some("s4"),
        ),
        (
            Message::text(
                r#"{"type":"subscribe","id":"s5","table":"todos","filter":{"column":"n","op":"eq","value":"abc"}}"#,
            ),
            "invalid-field",
            Some("s5"),
        ),
        (
            Message::text(
                r#"{"type":"subscribe","id":"s6","table":"todos","columns":["id","secret"]}"#,
            ),
            "not-found",
            Some("s6"),
        ),
        (
            Message::text(r#"{"type":"subscribe","id":"s7","table":"todos","cursor":"garbage"}"#),
            "invalid-field",
            Some("s7"),
        ),
        (
            Message::text(r#"{"type":"subscribe","id":"s8","table":"pg_catalog.pg_authid"}"#),
            "not-found",
            Some("s8"),
        ),
        (Message::binary(vec![1u8, 2, 3]), "bad-request", None),
        (
            Message::text(format!(r#"{{"type":"ping","ref":"{}"}}"#, "x".repeat(5000))),
            "payload-too-large",
            None,
        ),
        (
            Message::text(r#"{"type":"unsubscribe","id":"never"}"#),
            "not-found",
            Some("never"),
        ),
    ];
    for (frame, code, id) in cases {
        c.ws.send(frame).await.unwrap();
        let m = c.next().await.expect("socket stays open");
        assert_eq!(m["type"], "error", "{m}");
        assert_eq!(m["code"], code, "{m}");
        assert_eq!(m["id"].as_str(), id, "{m}");
    }
    // A reused id while the first is active.
    c.subscribe("dup", "todos", None, None).await;
    c.until_live("dup").await;
    c.send(json!({"type": "subscribe", "id": "dup", "table": "todos"}))
        .await;
    let m = c.next().await.unwrap();
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str(), m["id"].as_str()),
        (Some("error"), Some("conflict"), Some("dup"))
    );
    // Still fully working.
    c.send(json!({"type": "ping", "ref": "r1"})).await;
    let m = c.next().await.unwrap();
    assert_eq!(m, json!({"type": "pong", "ref": "r1"}));
    // A frame longer than the server's 2 KiB read buffer (it is small to keep idle sockets
    // cheap) but under the limit is read whole, across several socket reads.
    let long = "r".repeat(3500);
    c.send(json!({"type": "ping", "ref": long})).await;
    let m = c.next().await.unwrap();
    assert_eq!(m, json!({"type": "pong", "ref": long}));
    // The other client was untouched.
    let db = app.db().await;
    db.execute(
        "insert into todos (id, owner) values (1, $1::text::uuid)",
        &[&uid],
    )
    .await
    .unwrap();
    other
        .until("other still receives", Duration::from_secs(20), |v| {
            v["o"].visible().len() == 1
        })
        .await;
    // Far over the limit: the server closes with 1009 without reading the rest of the
    // frame, so the client sees that code or (more often) a reset; either way it ends.
    c.ws.send(Message::text("x".repeat(20_000))).await.ok();
    while c.next().await.is_some() {}
    assert!(matches!(c.closed, None | Some(1009)), "{:?}", c.closed);
    other.send(json!({"type": "ping", "ref": "still"})).await;
    let m = other.next().await.unwrap();
    assert_eq!(m["ref"], "still");

    // Before hello: anything else closes with 4003; a bad token in hello with 4001.
    let mut raw = Client::open(&app).await;
    raw.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(close_code(&mut raw).await, Some(4003));
    let mut raw = Client::open(&app).await;
    raw.send(Message::text(r#"{"type":"hello","v":1,"token":"forged"}"#))
        .await
        .unwrap();
    assert_eq!(close_code(&mut raw).await, Some(4001));
    let mut raw = Client::open(&app).await;
    raw.send(Message::text(r#"{"type":"hello","v":99}"#))
        .await
        .unwrap();
    assert_eq!(close_code(&mut raw).await, Some(4002));
    app.shutdown().await;
}

/// Read until the close frame; its code.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .ok()??
        {
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn limits_on_subscriptions_connections_and_snapshot_rows() {
    let app = todos_app("true", |c| {
        c.realtime.max_subscriptions = 2;
        c.realtime.max_connections = 3;
        c.realtime.snapshot_max_rows = 5;
    })
    .await;
    let db = app.db().await;
    db.execute(
        "insert into todos (id) select g from generate_series(1, 10) g",
        &[],
    )
    .await
    .unwrap();
    let mut c = Client::connect(&app, None).await;
    c.subscribe(
        "a",
        "todos",
        Some(json!({"column": "id", "op": "lte", "value": 3})),
        None,
    )
    .await;
    c.until_live("a").await;
    c.subscribe("big", "todos", None, None).await;
    c.until("snapshot limit", Duration::from_secs(20), |v| {
        v["big"].error.is_some()
    })
    .await;
    assert_eq!(
        c.views["big"].error.as_ref().unwrap()["code"],
        "limit-exceeded"
    );
    c.subscribe(
        "b",
        "todos",
        Some(json!({"column": "id", "op": "eq", "value": 1})),
        None,
    )
    .await;
    c.until_live("b").await;
    c.send(json!({"type": "subscribe", "id": "c", "table": "todos"}))
        .await;
    let m = c.next().await.unwrap();
    assert_eq!(
        (m["code"].as_str(), m["id"].as_str()),
        (Some("limit-exceeded"), Some("c"))
    );

    let _c2 = Client::connect(&app, None).await;
    let _c3 = Client::connect(&app, None).await;
    let url = format!("{}/realtime/v1/websocket", app.base.replace("http", "ws"));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["code"], "limit-exceeded");
        }
        other => panic!("a fourth connection was not refused: {other:?}"),
    }
    app.shutdown().await;
}

#[tokio::test]
async fn tokens_on_a_live_socket_refresh_and_expiry() {
    let app = todos_app(OWNER_ONLY, |_| {}).await;
    let db = app.db().await;
    let (a, b) = (new_uid(), new_uid());
    let mut c = Client::connect(&app, Some(&token_for(&a, Duration::from_secs(3)))).await;
    c.subscribe("t", "todos", None, None).await;
    c.until_live("t").await;
    // A fresh token for the same user: subscriptions continue.
    c.send(json!({"type": "auth", "token": token_for(&a, Duration::from_secs(600))}))
        .await;
    let m = c.next().await.unwrap();
    assert_eq!(m["type"], "authenticated", "{m}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    db.execute(
        "insert into todos (id, owner) values (1, $1::text::uuid)",
        &[&a],
    )
    .await
    .unwrap();
    c.until(
        "delivery after the first token's expiry",
        Duration::from_secs(20),
        |v| v["t"].visible().len() == 1,
    )
    .await;
    assert!(c.log.iter().all(|m| m["type"] != "error"), "{:?}", c.log);
    // A token for someone else: the subscription must start over.
    c.send(json!({"type": "auth", "token": token_for(&b, Duration::from_secs(600))}))
        .await;
    c.until(
        "resync after identity change",
        Duration::from_secs(20),
        |v| v["t"].resync.is_some(),
    )
    .await;

    // Expiry without refresh: deliveries stop and the client is told why.
    let mut e = Client::connect(&app, Some(&token_for(&a, Duration::from_secs(2)))).await;
    e.subscribe("t", "todos", None, None).await;
    e.until_live("t").await;
    let m = e.next_within(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("token-expired")),
        "{m}"
    );
    db.execute(
        "insert into todos (id, owner) values (2, $1::text::uuid)",
        &[&a],
    )
    .await
    .unwrap();
    e.drain(Duration::from_millis(1500)).await;
    assert!(
        !e.views["t"]
            .visible()
            .contains_key(&json!({"id": 2}).to_string()),
        "delivered after the token expired"
    );
    // A refresh and a resume from the cursor gets what was missed.
    let cursor = e.views["t"].cursor.clone();
    e.send(json!({"type": "auth", "token": token_for(&a, Duration::from_secs(600))}))
        .await;
    e.subscribe("t", "todos", None, cursor).await;
    e.until("resumed after refresh", Duration::from_secs(20), |v| {
        v["t"].visible().contains_key(&json!({"id": 2}).to_string())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_slow_consumer_is_closed_while_a_fast_one_keeps_receiving() {
    let app = todos_app("true", |c| c.realtime.queue_len = 64).await;
    let db = app.db().await;
    let mut fast = Client::connect(&app, None).await;
    fast.subscribe("t", "todos", None, None).await;
    fast.until_live("t").await;
    let mut slow = Client::connect(&app, None).await;
    slow.subscribe("t", "todos", None, None).await;
    slow.until_live("t").await;
    // Big rows so the slow client's TCP buffers fill and frames back up in its queue,
    // while the fast client reads as they come.
    let writer = tokio::spawn(async move {
        let payload = "p".repeat(64 * 1024);
        for i in 0..400i64 {
            db.execute(
                "insert into todos (id, title) values ($1, $2)",
                &[&i, &payload],
            )
            .await
            .unwrap();
        }
    });
    fast.until("fast gets every row", Duration::from_secs(60), |v| {
        v["t"].visible().len() == 400
    })
    .await;
    writer.await.unwrap();
    // The slow one was closed with "lagging" (after whatever was already in flight).
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(30), slow.ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(f))) => break f.map(|f| f.code),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(code, Some(CloseCode::from(4008)));
    assert!(app.realtime().stats.lagging_closes.load(Relaxed) >= 1);
    app.shutdown().await;
}

#[tokio::test]
async fn truncate_and_pruned_history_require_resync_and_shutdown_says_reconnect() {
    let app = todos_app("true", |c| {
        c.capture.retention = None;
        c.capture.retention_max_changes = Some(1);
    })
    .await;
    let db = app.db().await;
    let mut c = Client::connect(&app, None).await;
    c.subscribe("t", "todos", None, None).await;
    c.until_live("t").await;
    let old = c.views["t"].cursor.clone();
    db.execute("insert into todos (id) values (1), (2)", &[])
        .await
        .unwrap();
    c.until("insert", Duration::from_secs(20), |v| {
        v["t"].visible().len() == 2
    })
    .await;
    db.execute("truncate todos", &[]).await.unwrap();
    c.until("resync after truncate", Duration::from_secs(20), |v| {
        v["t"].resync.is_some()
    })
    .await;
    assert_eq!(c.views["t"].resync.as_deref(), Some("truncate"));
    // Resubscribing with the id again works (the old subscription ended).
    for i in 3..6i64 {
        db.execute("insert into todos (id) values ($1)", &[&i])
            .await
            .unwrap();
    }
    support::eventually(Duration::from_secs(20), "prune", || {
        let cap = app.capture().clone();
        async move { cap.prune_now().await.unwrap_or(0) > 0 }
    })
    .await;
    c.subscribe("t", "todos", None, old).await;
    c.until("resync for a pruned cursor", Duration::from_secs(20), |v| {
        v["t"].resync.is_some()
    })
    .await;
    c.subscribe("t2", "todos", None, None).await;
    c.until_live("t2").await;
    assert_eq!(c.views["t2"].visible().len(), 3);

    app.shutdown().await;
    while c.next().await.is_some() {}
    assert_eq!(
        c.closed,
        Some(1012),
        "shutdown tells clients to reconnect and resume"
    );
}

#[tokio::test]
async fn dead_connections_are_closed_after_the_heartbeat_timeout() {
    let app = todos_app("true", |c| {
        c.realtime.heartbeat_interval = Duration::from_millis(200);
        c.realtime.heartbeat_timeout = Duration::from_millis(800);
    })
    .await;
    // A raw TCP client that completes the handshake and then never reads or answers pings.
    let mut c = Client::connect(&app, None).await;
    c.subscribe("t", "todos", None, None).await;
    c.until_live("t").await;
    assert_eq!(app.realtime().stats.connections.load(Relaxed), 1);
    // Stop reading: pings go unanswered (tungstenite answers only while we poll), so the
    // server closes the socket once the timeout passes.
    support::eventually(Duration::from_secs(10), "connection cleaned up", || async {
        app.realtime().stats.connections.load(Relaxed) == 0
            && app.realtime().stats.subscriptions.load(Relaxed) == 0
    })
    .await;
    assert!(app.realtime().stats.heartbeat_closes.load(Relaxed) >= 1);
    app.shutdown().await;
}

/// `/metrics` has the commit-to-queued lag of live deliveries
/// (`rowcast_delivery_lag_seconds`), observed once per delivered transaction.
#[tokio::test]
async fn live_deliveries_feed_the_delivery_lag_histogram() {
    let app = todos_app("true", |_| {}).await;
    let count = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("rowcast_delivery_lag_seconds_count "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let before = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(count(&before), Some(0.0), "{before}");
    let mut c = Client::connect(&app, None).await;
    c.subscribe("t", "todos", None, None).await;
    c.until_live("t").await;
    let db = app.db().await;
    // Two transactions.
    db.execute("insert into todos (id) values (1)", &[])
        .await
        .unwrap();
    db.execute("insert into todos (id) values (2)", &[])
        .await
        .unwrap();
    c.until("both rows live", Duration::from_secs(20), |v| {
        v["t"].visible().len() == 2
    })
    .await;
    support::eventually(Duration::from_secs(10), "two lag observations", || async {
        let m = app.get("/metrics").await.text().await.unwrap();
        count(&m) == Some(2.0)
    })
    .await;
    app.shutdown().await;
}
