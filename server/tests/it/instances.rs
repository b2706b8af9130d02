//! Several `rowcast serve` processes on one database: migrations applied once by whichever
//! instance gets there (one killed mid-migration), and realtime clients that move between
//! three instances while writers run, through one instance killed with SIGKILL and another
//! drained by SIGTERM, every client ending with the database's state. Also the tables and
//! writers the drain test shares.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::{
    self,
    process::ServerProcess,
    realtime::{new_uid, token_for, Client, View},
};

/// `/ready` says 200 (database up, schema current, REST schema cache loaded).
pub async fn ready(http: &reqwest::Client, server: &ServerProcess) -> bool {
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

/// Settings of the instances in the realtime tests: a small pool each (three instances and
/// the rest of the suite share one Postgres) and a short poll, as notifications are off.
pub const INSTANCE_ENV: &[(&str, &str)] = &[
    ("ROWCAST_SHUTDOWN_TIMEOUT", "5s"),
    ("ROWCAST_POOL_SIZE", "4"),
    ("ROWCAST_POLL_INTERVAL", "20ms"),
];

/// Two synced tables: `todos` under an owner-only policy (for reads and writes, so REST
/// writes as a user work), and `notes`, public (no row-level security), readable by all.
pub async fn create_synced_tables(db: &tokio_postgres::Client) {
    db.batch_execute(
        "create table public.todos (id bigint primary key, owner uuid not null,
                                    n int not null default 0, title text not null default '');
         alter table public.todos enable row level security;
         create policy read_own on public.todos for select using (owner = rowcast.uid());
         create policy insert_own on public.todos for insert to rowcast_authenticated
           with check (owner = rowcast.uid());
         create policy update_own on public.todos for update to rowcast_authenticated
           using (owner = rowcast.uid()) with check (owner = rowcast.uid());
         create policy delete_own on public.todos for delete to rowcast_authenticated
           using (owner = rowcast.uid());
         grant select, insert, update, delete on public.todos to rowcast_authenticated;
         create table public.notes (id bigint primary key, n int not null default 0,
                                    body text not null default '');
         grant select on public.notes to rowcast_anon, rowcast_authenticated;
         select rowcast.enable_sync('public.todos');
         select rowcast.enable_sync('public.notes');",
    )
    .await
    .unwrap();
}

/// Rows in both tables before any client connects, so snapshots have something in them.
pub async fn insert_initial_rows(db: &tokio_postgres::Client, users: &[String], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for id in 0..20i64 {
        let owner = &users[rng.gen_range(0..users.len())];
        db.execute(
            "insert into todos (id, owner, n) values ($1, $2::text::uuid, $3)",
            &[&id, owner, &rng.gen_range(0..10i32)],
        )
        .await
        .unwrap();
        db.execute(
            "insert into notes (id, n, body) values ($1, $2, 'first')",
            &[&id, &rng.gen_range(0..10i32)],
        )
        .await
        .unwrap();
    }
}

/// One subscription a client keeps, and the SQL that says what it must end up holding.
#[derive(Debug, Clone)]
pub struct Sub {
    pub id: &'static str,
    pub table: &'static str,
    pub filter: Option<Value>,
    /// Condition on `t` (a row of `table`) the view must equal; `$1` is the user's id.
    pub expect_where: &'static str,
}

pub fn mine() -> Sub {
    Sub {
        id: "mine",
        table: "todos",
        filter: None,
        expect_where: "owner = $1::text::uuid",
    }
}

pub fn mine_small() -> Sub {
    Sub {
        id: "mine-small",
        table: "todos",
        filter: Some(json!({"column": "n", "op": "lt", "value": 5})),
        expect_where: "owner = $1::text::uuid and n < 5",
    }
}

pub fn notes() -> Sub {
    Sub {
        id: "notes",
        table: "notes",
        filter: None,
        expect_where: "true",
    }
}

pub fn notes_small() -> Sub {
    Sub {
        id: "notes-small",
        table: "notes",
        filter: Some(json!({"column": "n", "op": "lt", "value": 5})),
        expect_where: "n < 5",
    }
}

/// What `sub` of user `uid` (None: anonymous) must hold, as the database says: key → row.
pub async fn expected(
    db: &tokio_postgres::Client,
    sub: &Sub,
    uid: Option<&str>,
) -> HashMap<String, Value> {
    let sql = format!(
        "select jsonb_build_object('id', id), to_jsonb(t) from {} t where {}",
        sub.table, sub.expect_where
    );
    let rows = if sub.expect_where.contains("$1") {
        let uid = uid.expect("a user's subscription");
        db.query(&sql, &[&uid]).await.unwrap()
    } else {
        db.query(&sql, &[]).await.unwrap()
    };
    rows.iter()
        .map(|r| (r.get::<_, Value>(0).to_string(), r.get::<_, Value>(1)))
        .collect()
}

/// Writes in plain SQL, as an admin in psql would, until `stop`: inserts, updates that move
/// rows between users and in and out of the `n < 5` filters, deletes, and multi-row
/// transactions over both tables. Counts committed transactions in `count`.
pub async fn sql_writer(
    mut db: tokio_postgres::Client,
    users: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Relaxed) {
        let id: i64 = rng.gen_range(0..40);
        let owner = &users[rng.gen_range(0..users.len())];
        let n: i32 = rng.gen_range(0..10);
        match rng.gen_range(0..7) {
            0 | 1 => {
                db.execute(
                    "insert into todos (id, owner, n) values ($1, $2::text::uuid, $3)
                     on conflict (id) do update set owner = excluded.owner, n = excluded.n",
                    &[&id, owner, &n],
                )
                .await
                .unwrap();
            }
            2 => {
                db.execute(
                    "update todos set n = (n + 3) % 10, title = title || 'x' where id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            }
            3 => {
                db.execute("delete from todos where id = $1", &[&id])
                    .await
                    .unwrap();
            }
            4 => {
                db.execute(
                    "insert into notes (id, n) values ($1, $2)
                     on conflict (id) do update set n = excluded.n, body = notes.body || 'y'",
                    &[&id, &n],
                )
                .await
                .unwrap();
            }
            5 => {
                db.execute("delete from notes where id = $1", &[&id])
                    .await
                    .unwrap();
            }
            _ => {
                // One transaction over both tables and several rows: its changes arrive
                // together.
                let tx = db.transaction().await.unwrap();
                tx.execute(
                    "update notes set n = (n + 1) % 10 where id % 7 = $1",
                    &[&(id % 7)],
                )
                .await
                .unwrap();
                tx.execute(
                    "update todos set owner = $2::text::uuid where id % 5 = $1",
                    &[&(id % 5), owner],
                )
                .await
                .unwrap();
                tx.execute("delete from todos where id = $1", &[&((id + 17) % 40)])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
        count.fetch_add(1, Relaxed);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..6))).await;
    }
}

/// Where an instance of the fleet is in its life.
const NOT_STARTED: u8 = 0;
const UP: u8 = 1;
/// SIGTERM sent: it refuses new connections and closes its sockets with 1012.
const DRAINING: u8 = 2;
/// SIGKILL sent: its sockets just drop.
const KILLED: u8 = 3;

/// Instances the clients may use (slots filled as instances start), the state of each,
/// and how many clients each holds.
struct Fleet {
    addrs: Vec<OnceLock<SocketAddr>>,
    state: Vec<AtomicU8>,
    connected: Vec<AtomicUsize>,
}

impl Fleet {
    fn new(slots: usize) -> Fleet {
        Fleet {
            addrs: (0..slots).map(|_| OnceLock::new()).collect(),
            state: (0..slots).map(|_| AtomicU8::new(NOT_STARTED)).collect(),
            connected: (0..slots).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    fn up(&self, k: usize, addr: SocketAddr) {
        self.addrs[k].set(addr).unwrap();
        self.state[k].store(UP, Relaxed);
    }

    fn addr(&self, k: usize) -> SocketAddr {
        *self.addrs[k].get().unwrap()
    }

    fn is_up(&self, k: usize) -> bool {
        self.state[k].load(Relaxed) == UP
    }

    /// The instance that is up and holds the most clients, among `among`.
    fn busiest(&self, among: impl Iterator<Item = usize>) -> usize {
        among
            .filter(|&k| self.is_up(k))
            .max_by_key(|&k| self.connected[k].load(Relaxed))
            .unwrap()
    }

    /// A random instance that is up, other than `last` when there is another.
    fn pick(&self, rng: &mut StdRng, last: Option<usize>) -> usize {
        let live: Vec<usize> = (0..self.addrs.len()).filter(|&k| self.is_up(k)).collect();
        let others: Vec<usize> = live.iter().copied().filter(|&k| Some(k) != last).collect();
        let from = if others.is_empty() { &live } else { &others };
        from[rng.gen_range(0..from.len())]
    }
}

/// Writes through REST as the users (owner-only policy), each to a random live instance,
/// until `stop`. Requests to an instance that dies under them fail; that is fine. Returns
/// the number of successful writes.
async fn rest_writer(
    fleet: Arc<Fleet>,
    users: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> usize {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let tokens: Vec<String> = users
        .iter()
        .map(|u| token_for(u, Duration::from_secs(600)))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ok = 0;
    while !stop.load(Relaxed) {
        let u = rng.gen_range(0..users.len());
        // Each user writes its own key range, which the SQL writer leaves alone.
        let id = 1000 + 100 * u as i64 + rng.gen_range(0..15);
        let base = format!(
            "http://{}/rest/v1/todos",
            fleet.addr(fleet.pick(&mut rng, None))
        );
        let request = match rng.gen_range(0..3) {
            0 => http
                .post(&base)
                .json(&json!({"id": id, "owner": users[u], "n": rng.gen_range(0..10)})),
            1 => http
                .patch(format!("{base}?id=eq.{id}"))
                .json(&json!({"n": rng.gen_range(0..10), "title": "rest"})),
            _ => http.delete(format!("{base}?id=eq.{id}")),
        };
        if let Ok(r) = request.bearer_auth(&tokens[u]).send().await {
            if r.status().is_success() {
                ok += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(3..12))).await;
    }
    ok
}

/// A client of the several-instances test and what it holds between sessions.
struct Roamer {
    name: String,
    uid: Option<String>,
    subs: Vec<Sub>,
    views: HashMap<String, View>,
    /// The instance of each session, in order.
    sessions: Vec<usize>,
    /// Sessions that ended because their instance was killed.
    lost_to_kill: usize,
    /// Sessions the server ended with 1012 because its instance was draining.
    drained: usize,
}

impl Roamer {
    fn token(&self) -> Option<String> {
        self.uid
            .as_deref()
            .map(|u| token_for(u, Duration::from_secs(600)))
    }

    /// Subscribe everything on `c`: from the cursor held, or (none yet) from a fresh
    /// snapshot that replaces whatever part of an earlier snapshot arrived.
    async fn subscribe_all(&self, c: &mut Client) -> bool {
        for sub in &self.subs {
            let cursor = c.views.get(sub.id).and_then(|v| v.cursor.clone());
            if cursor.is_none() {
                c.views.remove(sub.id);
            }
            if !c
                .try_subscribe(sub.id, sub.table, sub.filter.clone(), cursor)
                .await
            {
                return false;
            }
        }
        true
    }

    fn check(&self, views: &HashMap<String, View>, seed: u64) {
        for (id, v) in views {
            assert!(
                v.resync.is_none() && v.error.is_none(),
                "seed {seed}: {} subscription {id} failed: {v:?}",
                self.name
            );
        }
    }
}

/// Until `stop`: connect to a live instance (a different one each time), resume every
/// subscription from its cursor, read for a random while, leave (politely or by dropping
/// the socket), and go on elsewhere.
async fn roam(mut r: Roamer, fleet: Arc<Fleet>, seed: u64, stop: Arc<AtomicBool>) -> Roamer {
    let mut rng = StdRng::seed_from_u64(seed);
    let token = r.token();
    let mut last = None;
    while !stop.load(Relaxed) {
        let k = fleet.pick(&mut rng, last);
        let mut c = match Client::try_connect(&fleet.addr(k), token.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    !fleet.is_up(k),
                    "seed {seed}: {} cannot connect to live instance {k}: {e}",
                    r.name
                );
                continue;
            }
        };
        fleet.connected[k].fetch_add(1, Relaxed);
        last = Some(k);
        r.sessions.push(k);
        c.views = std::mem::take(&mut r.views);
        let mut ended = !r.subscribe_all(&mut c).await;
        let until = Instant::now() + Duration::from_millis(rng.gen_range(150..1200));
        while !ended && !stop.load(Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, c.next_within(Duration::from_secs(60))).await {
                Err(_) | Ok(Some(_)) => {}
                Ok(None) => ended = true,
            }
            r.check(&c.views, seed);
        }
        fleet.connected[k].fetch_sub(1, Relaxed);
        if ended {
            match fleet.state[k].load(Relaxed) {
                KILLED => r.lost_to_kill += 1,
                DRAINING => {
                    assert_eq!(
                        c.closed,
                        Some(1012),
                        "seed {seed}: a draining instance closed {}'s socket",
                        r.name
                    );
                    r.drained += 1;
                }
                _ => panic!(
                    "seed {seed}: live instance {k} closed {}'s socket (code {:?})",
                    r.name, c.closed
                ),
            }
        } else if rng.gen_bool(0.5) {
            let _ = c.ws.close(None).await;
        }
        r.views = std::mem::take(&mut c.views);
    }
    r
}

fn test_seed() -> u64 {
    match std::env::var("ROWCAST_TEST_SEED") {
        Ok(s) => s.parse().expect("ROWCAST_TEST_SEED is a number"),
        Err(_) => 1,
    }
}

/// Three instances on one database; clients (three users under an owner-only policy, and
/// anonymous ones on a public table) move between them while SQL and REST writers run. One
/// instance is killed with SIGKILL (its clients resume elsewhere), a replacement starts, and
/// another gets SIGTERM as in a rolling restart (its clients get 1012 and move). At the end
/// every client's view, applied by row version, equals the filtered SELECT for its user.
#[tokio::test]
async fn clients_move_between_three_instances_through_a_kill_and_a_rolling_restart() {
    let seed = test_seed();
    println!("seed {seed} (rerun with ROWCAST_TEST_SEED={seed})");
    let db_url = support::migrated_db().await;
    let db = support::connect(&db_url).await;
    create_synced_tables(&db).await;
    let users: Vec<String> = (0..3).map(|_| new_uid()).collect();
    insert_initial_rows(&db, &users, seed).await;

    // Three instances, and a fourth slot for the one that replaces the killed instance.
    let fleet = Arc::new(Fleet::new(4));
    let mut servers: Vec<Option<ServerProcess>> = Vec::new();
    for _ in 0..3 {
        servers.push(Some(start_instance(&db_url).await));
    }
    let http = reqwest::Client::new();
    for (k, server) in servers.iter().enumerate() {
        let server = server.as_ref().unwrap();
        support::eventually(Duration::from_secs(60), "instance ready", || {
            ready(&http, server)
        })
        .await;
        fleet.up(k, server.addr);
    }

    let user = |i: usize| Some(users[i].clone());
    let clients = [
        (user(0), vec![mine(), notes()]),
        (user(0), vec![mine_small()]),
        (user(1), vec![mine(), notes_small()]),
        (user(1), vec![mine()]),
        (user(2), vec![mine(), mine_small()]),
        (user(2), vec![notes()]),
        (None, vec![notes()]),
        (None, vec![notes_small()]),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let mut roamers = Vec::new();
    for (i, (uid, subs)) in clients.into_iter().enumerate() {
        let r = Roamer {
            name: format!("client {i}"),
            uid,
            subs,
            views: HashMap::new(),
            sessions: Vec::new(),
            lost_to_kill: 0,
            drained: 0,
        };
        roamers.push(tokio::spawn(roam(
            r,
            fleet.clone(),
            seed * 100 + i as u64,
            stop.clone(),
        )));
    }
    let written = Arc::new(AtomicUsize::new(0));
    let mut sql_writers = Vec::new();
    for w in 0..2u64 {
        sql_writers.push(tokio::spawn(sql_writer(
            support::connect(&db_url).await,
            users.clone(),
            seed * 1000 + w,
            stop.clone(),
            written.clone(),
        )));
    }
    let rest = tokio::spawn(rest_writer(
        fleet.clone(),
        users.clone(),
        seed * 1000 + 7,
        stop.clone(),
    ));

    let mut rng = StdRng::seed_from_u64(seed);
    tokio::time::sleep(Duration::from_millis(rng.gen_range(1500..2500))).await;
    // A crash: SIGKILL the instance holding the most clients. Its sockets just drop.
    let victim = fleet.busiest(0..3);
    let held = fleet.connected[victim].load(Relaxed);
    fleet.state[victim].store(KILLED, Relaxed);
    servers[victim].as_mut().unwrap().sigkill();
    println!("killed instance {victim} holding {held} clients");
    // The orchestrator starts a replacement; clients find it once it is ready.
    let replacement = start_instance(&db_url).await;
    support::eventually(Duration::from_secs(60), "replacement ready", || {
        ready(&http, &replacement)
    })
    .await;
    fleet.up(3, replacement.addr);
    servers.push(Some(replacement));
    tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2000))).await;
    // A rolling restart: SIGTERM the busiest original survivor. Its clients get 1012 and
    // move; it exits within its shutdown timeout.
    let drained = fleet.busiest((0..3).filter(|&k| k != victim));
    let held = fleet.connected[drained].load(Relaxed);
    fleet.state[drained].store(DRAINING, Relaxed);
    let mut draining = servers[drained].take().unwrap();
    draining.sigterm();
    println!("draining instance {drained} holding {held} clients");
    let signalled = Instant::now();
    let status = tokio::task::spawn_blocking(move || draining.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the drained instance exits");
    assert!(status.success(), "drained instance: {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "drain took {:?}, over ROWCAST_SHUTDOWN_TIMEOUT",
        signalled.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2000))).await;
    stop.store(true, Relaxed);

    for w in sql_writers {
        w.await.unwrap();
    }
    let rest_writes = rest.await.unwrap();
    let mut finished = Vec::new();
    for r in roamers {
        finished.push(r.await.unwrap());
    }
    let sql_writes = written.load(Relaxed);
    println!("{sql_writes} SQL transactions, {rest_writes} REST writes");
    assert!(sql_writes > 100, "the SQL writers barely ran");
    assert!(rest_writes > 20, "the REST writes barely ran");
    let lost: usize = finished.iter().map(|r| r.lost_to_kill).sum();
    assert!(
        lost >= 1,
        "seed {seed}: no client was on the killed instance"
    );
    let told: usize = finished.iter().map(|r| r.drained).sum();
    assert!(
        told >= 1,
        "seed {seed}: no client was on the drained instance"
    );
    for r in &finished {
        let used: HashSet<usize> = r.sessions.iter().copied().collect();
        assert!(
            used.len() >= 2,
            "seed {seed}: {} never moved ({:?})",
            r.name,
            r.sessions
        );
    }

    // Each client resumes once more on a survivor and must reach the database's state.
    let survivor = (0..4).find(|&k| fleet.is_up(k)).unwrap();
    for mut r in finished {
        let mut want = HashMap::new();
        for sub in &r.subs {
            want.insert(sub.id, expected(&db, sub, r.uid.as_deref()).await);
        }
        let mut c = Client::connect(&fleet.addr(survivor), r.token().as_deref()).await;
        c.views = std::mem::take(&mut r.views);
        assert!(r.subscribe_all(&mut c).await);
        c.until(
            &format!("seed {seed}: {} equals the database", r.name),
            Duration::from_secs(20),
            |views| {
                want.iter().all(|(id, rows)| {
                    views.get(*id).is_some_and(|v| {
                        v.live && v.visible() == *rows || v.resync.is_some() || v.error.is_some()
                    })
                })
            },
        )
        .await;
        r.check(&c.views, seed);
    }
    for (k, server) in servers.iter().enumerate() {
        if let (true, Some(server)) = (fleet.is_up(k), server) {
            assert!(ready(&http, server).await, "survivor {k} still ready");
        }
    }
}

/// `rowcast serve` with [`INSTANCE_ENV`], started off the runtime's thread (starting waits
/// for the process to log its address).
async fn start_instance(db_url: &str) -> ServerProcess {
    let db_url = db_url.to_string();
    tokio::task::spawn_blocking(move || ServerProcess::start_with(&db_url, INSTANCE_ENV))
        .await
        .unwrap()
}
