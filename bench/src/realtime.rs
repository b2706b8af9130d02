//! `rowcast-bench-realtime`: load generator for the realtime endpoint. Starts its own
//! Postgres and the release `rowcast` server as a separate process (so its memory and CPU can
//! be read from /proc), opens WebSocket clients on loopback, writes stamped rows, and reports
//! commit-to-client latency (the writer stamps each row with the wall clock; clients are on
//! the same machine and clock), delivered messages per second, loss, server memory per
//! connection and server CPU per delivered message.
//!
//! Scenarios (`BENCH_SCENARIOS=owner,fanout,idle,public`; sizes from env, see `Sizes`):
//! - owner:  N connections, each subscribed to its own rows under an owner-only policy;
//!   W writes/s spread over the users for S seconds.
//! - fanout: N subscribers of a public table; single writes fanned out to all.
//! - idle:   server RSS per idle subscribed connection.
//! - public: M subscribers of a public table; P writes/s for S seconds.
//! - members: U users in lists of 10 (each in 1–3 lists), each subscribed to `todos` under
//!   `exists (select 1 from members m where m.list_id = todos.list_id and m.user_id =
//!   rowcast.uid())`; T todo writes/s into random lists plus C membership changes/s (other
//!   users joining and leaving lists) for S seconds. Reports Postgres CPU (postmaster and
//!   backends) next to the server's; compare with `owner` at the same sizes
//!   (`BENCH_OWNER_CONNS`, `BENCH_OWNER_RATE`), whose report carries Postgres CPU too.
//! - yardstick: the same public-table load against a naive Node server (bench/yardstick)
//!   and against Rowcast in one run, side by side, with ratios; see `yardstick.rs`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

#[path = "realtime/yardstick.rs"]
mod yardstick;

use futures::{SinkExt, StreamExt};
use rowcast::{
    auth::{token::TokenKeys, Identity},
    cluster::{self, EmbeddedPostgres},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;
use tokio_tungstenite::tungstenite::Message;

type Error = Box<dyn std::error::Error + Send + Sync>;

// A fixed random secret (the server refuses guessable ones such as runs of characters).
const SECRET: &str = "1116bca840f96997f8c672aae926076e781c874c7d747342847b6153ca5f8e34";

struct Sizes {
    owner_conns: usize,
    owner_rate: u64,
    fanout_conns: usize,
    fanout_writes: usize,
    idle_conns: usize,
    public_conns: usize,
    public_rate: u64,
    seconds: u64,
    members_users: usize,
    members_rate: u64,
    members_churn: u64,
}

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn main() -> Result<(), Error> {
    let sizes = Sizes {
        owner_conns: env("BENCH_OWNER_CONNS", 10_000) as usize,
        owner_rate: env("BENCH_OWNER_RATE", 1_000),
        fanout_conns: env("BENCH_FANOUT_CONNS", 10_000) as usize,
        fanout_writes: env("BENCH_FANOUT_WRITES", 10) as usize,
        idle_conns: env("BENCH_IDLE_CONNS", 10_000) as usize,
        public_conns: env("BENCH_PUBLIC_CONNS", 1_000) as usize,
        public_rate: env("BENCH_PUBLIC_RATE", 100),
        seconds: env("BENCH_SECONDS", 30),
        members_users: env("BENCH_MEMBERS_USERS", 10_000) as usize,
        members_rate: env("BENCH_MEMBERS_RATE", 1_000),
        members_churn: env("BENCH_MEMBERS_CHURN", 10),
    };
    let scenarios =
        std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| "idle,fanout,owner,public".into());
    let server_bin = std::env::var("ROWCAST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/rowcast"));
    let root = tempfile::Builder::new()
        .prefix("rowcast-bench-rt-")
        .tempdir()?;
    cluster::prepare_parent_dir(root.path())?;
    let pg = EmbeddedPostgres::start(&root.path().join("pg"), None)?;
    let result = tokio::runtime::Runtime::new()?.block_on(async {
        let mut out = Vec::new();
        for s in scenarios.split(',') {
            let r = run_scenario(s.trim(), &pg, &server_bin, &sizes).await?;
            println!("{r}");
            out.push(r);
        }
        Ok::<_, Error>(out)
    });
    pg.stop()?;
    result.map(|_| ())
}

/// The server as a child process.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    async fn start(bin: &Path, url: &str) -> Result<Server, Error> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let child = Command::new(bin)
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("ROWCAST_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROWCAST_JWT_SECRET", SECRET)
            .env("ROWCAST_WS_MAX_CONNECTIONS", "50000")
            // Every client of the load generator comes from 127.0.0.1: the per-address
            // admission limits (500 sockets, 32 before `hello`) are for untrusted clients.
            .env("ROWCAST_WS_MAX_CONNECTIONS_PER_ADDRESS", "1000000")
            .env("ROWCAST_WS_MAX_UNAUTHENTICATED_PER_ADDRESS", "1000000")
            .env("ROWCAST_POOL_SIZE", "16")
            .env("ROWCAST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Server { child, port }.ready().await
    }

    /// Waits until `GET /ready` answers 200 (the process is killed on failure, by `Drop`).
    async fn ready(self) -> Result<Server, Error> {
        let s = self;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if s.http_get("/ready")
                .await
                .is_ok_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err("server not ready within 60s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn http_get(&self, path: &str) -> Result<String, Error> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    fn proc_stat(&self) -> (u64, u64) {
        // (RSS KiB, utime+stime ticks)
        let pid = self.child.id();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
            })
            .unwrap_or(0);
        let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1;
                let f: Vec<&str> = after.split_whitespace().collect();
                // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        (rss, ticks)
    }

    /// System (kernel) CPU ticks of the server alone: the part of `proc_stat`'s ticks spent
    /// in the kernel on its behalf (socket sends, wake-ups).
    fn kernel_ticks(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(12)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// CPU ticks (user + system, including reaped children) of the Postgres cluster: the
/// postmaster and every process it started.
fn pg_ticks(data_dir: &Path) -> u64 {
    let Some(pm) = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0;
    };
    let mut total = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        // After the comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
        let ppid: u32 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        if pid != pm && ppid != pm {
            continue;
        }
        total += (11..=14)
            .filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
            .sum::<u64>();
    }
    total
}

fn ticks_per_sec() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on Linux.
    100.0
}

/// Latencies and counts collected by clients.
#[derive(Default)]
struct Collector {
    latencies_us: Mutex<Vec<i64>>,
    delivered: AtomicU64,
    /// Frames that carried rows (the yardstick scenario: rows per frame).
    frames: AtomicU64,
    connected: AtomicU64,
    live: AtomicU64,
    closed: AtomicU64,
}

/// One client: hello, subscribe, then record the `sent_us` stamp of every delivered row.
async fn client(
    port: u16,
    token: Option<String>,
    filter: Option<String>,
    table: &'static str,
    c: Arc<Collector>,
    stop: tokio_util::sync::CancellationToken,
) {
    let url = format!("ws://127.0.0.1:{port}/realtime/v1/websocket");
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        c.closed.fetch_add(1, Relaxed);
        return;
    };
    c.connected.fetch_add(1, Relaxed);
    let hello = match token {
        Some(t) => format!(r#"{{"type":"hello","v":1,"token":"{t}"}}"#),
        None => r#"{"type":"hello","v":1}"#.to_string(),
    };
    let sub = match filter {
        Some(f) => format!(r#"{{"type":"subscribe","id":"s","table":"{table}","filter":{f}}}"#),
        None => format!(r#"{{"type":"subscribe","id":"s","table":"{table}"}}"#),
    };
    if ws.send(Message::text(hello)).await.is_err() || ws.send(Message::text(sub)).await.is_err() {
        c.closed.fetch_add(1, Relaxed);
        return;
    }
    let mut local = Vec::new();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = stop.cancelled() => break,
        };
        let Some(Ok(msg)) = msg else {
            c.closed.fetch_add(1, Relaxed);
            break;
        };
        let Message::Text(t) = msg else { continue };
        let t = t.as_str();
        let now = now_us();
        if t.starts_with(r#"{"type":"changes""#) {
            let mut rest = t;
            while let Some(i) = rest.find(r#""sent_us":"#) {
                rest = &rest[i + 10..];
                let end = rest
                    .find(|ch: char| !ch.is_ascii_digit())
                    .unwrap_or(rest.len());
                if let Ok(sent) = rest[..end].parse::<i64>() {
                    local.push(now - sent);
                    c.delivered.fetch_add(1, Relaxed);
                }
            }
            if local.len() >= 256 {
                c.latencies_us
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .append(&mut local);
            }
        } else if t.starts_with(r#"{"type":"live""#) {
            c.live.fetch_add(1, Relaxed);
        } else if t.starts_with(r#"{"type":"error""#) || t.starts_with(r#"{"type":"resync"#) {
            eprintln!("client: {t}");
            c.closed.fetch_add(1, Relaxed);
        }
    }
    c.latencies_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(&mut local);
}

fn pct(v: &mut [i64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

async fn wait_for(what: &str, timeout: Duration, f: impl Fn() -> bool) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn run_scenario(
    name: &str,
    pg: &EmbeddedPostgres,
    bin: &Path,
    z: &Sizes,
) -> Result<String, Error> {
    if name == "yardstick" {
        return yardstick::run(pg, bin).await;
    }
    let admin = pg.database_url();
    let (a, conn) = tokio_postgres::connect(&admin, NoTls).await?;
    tokio::spawn(conn);
    let dbname = format!("bench_rt_{}", name);
    a.batch_execute(&format!("drop database if exists {dbname}"))
        .await?;
    a.batch_execute(&format!("create database {dbname}"))
        .await?;
    let url = pg.url_for(&dbname);
    let server = Server::start(bin, &url).await?;
    let (db, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute(
        "create table public.owned (id bigserial primary key, owner uuid not null, sent_us bigint not null, body text not null default '');
         alter table public.owned enable row level security;
         create policy own on public.owned for select using (owner = rowcast.uid());
         grant select on public.owned to rowcast_authenticated;
         select rowcast.enable_sync('public.owned');
         create table public.feed (id bigserial primary key, sent_us bigint not null, body text not null default '');
         grant select on public.feed to rowcast_anon, rowcast_authenticated;
         select rowcast.enable_sync('public.feed');",
    )
    .await?;
    let keys = TokenKeys::hs256(SECRET.as_bytes(), "rowcast", "rowcast");
    let c = Arc::new(Collector::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let (rss0, _) = server.proc_stat();
    let (conns, table, owner) = match name {
        "owner" => (z.owner_conns, "owned", true),
        "fanout" => (z.fanout_conns, "feed", false),
        "idle" => (z.idle_conns, "feed", false),
        "public" => (z.public_conns, "feed", false),
        "members" => return run_members(pg, server, &url, db, z).await,
        other => return Err(format!("unknown scenario {other}").into()),
    };
    let users: Vec<String> = (0..conns)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let started = Instant::now();
    for (i, u) in users.iter().enumerate() {
        let token = owner.then(|| {
            keys.sign(
                &Identity::user(u, serde_json::json!({})),
                Duration::from_secs(3600),
            )
            .unwrap_or_default()
        });
        tokio::spawn(client(
            server.port,
            token,
            None,
            table,
            c.clone(),
            stop.clone(),
        ));
        // Pace connection starts (the accept backlog is finite).
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    wait_for("all subscriptions live", Duration::from_secs(300), || {
        c.live.load(Relaxed) + c.closed.load(Relaxed) >= conns as u64
    })
    .await?;
    let setup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, ticks1) = server.proc_stat();
    let per_conn_kib = (rss1.saturating_sub(rss0)) as f64 / conns.max(1) as f64;
    let mut report = format!(
        "scenario {name}: {conns} connections ({} live, {} failed) in {:.1}s; server RSS {} MiB -> {} MiB, {:.1} KiB per connection",
        c.live.load(Relaxed),
        c.closed.load(Relaxed),
        setup.as_secs_f64(),
        rss0 / 1024,
        rss1 / 1024,
        per_conn_kib
    );
    if name == "idle" {
        stop.cancel();
        return Ok(report);
    }
    // Writes.
    let (_planned, secs, rate) = match name {
        "fanout" => (z.fanout_writes as u64, 0, 0),
        "owner" => (z.owner_rate * z.seconds, z.seconds, z.owner_rate),
        _ => (z.public_rate * z.seconds, z.seconds, z.public_rate),
    };
    let written = Arc::new(AtomicU64::new(0));
    let pg0 = pg_ticks(pg.data_dir());
    let t0 = Instant::now();
    if name == "fanout" {
        for _ in 0..z.fanout_writes {
            db.execute(
                "insert into public.feed (sent_us) values ($1)",
                &[&now_us()],
            )
            .await?;
            written.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    } else {
        // Several writer connections, each paced to its share of the rate.
        let writers = 8u64;
        let mut handles = Vec::new();
        for w in 0..writers {
            let (wdb, wconn) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(wconn);
            let users = users.clone();
            let written = written.clone();
            let per = rate as f64 / writers as f64;
            handles.push(tokio::spawn(async move {
                let total = (per * secs as f64) as u64;
                let start = Instant::now();
                for i in 0..total {
                    let due = start + Duration::from_secs_f64(i as f64 / per);
                    tokio::time::sleep_until(due.into()).await;
                    let r = if owner {
                        let u = &users[((w * 7919 + i * 104_729) as usize) % users.len()];
                        wdb.execute(
                            "insert into public.owned (owner, sent_us) values ($1::text::uuid, $2)",
                            &[u, &now_us()],
                        )
                        .await
                    } else {
                        wdb.execute(
                            "insert into public.feed (sent_us) values ($1)",
                            &[&now_us()],
                        )
                        .await
                    };
                    if r.is_err() {
                        return;
                    }
                    written.fetch_add(1, Relaxed);
                }
            }));
        }
        for h in handles {
            h.await?;
        }
    }
    let write_time = t0.elapsed();
    let writes = written.load(Relaxed);
    let expected = if owner {
        writes
    } else {
        writes * c.live.load(Relaxed)
    };
    // Let deliveries settle.
    let settle = Instant::now();
    while c.delivered.load(Relaxed) < expected && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = t0.elapsed();
    let (rss2, ticks2) = server.proc_stat();
    let pg_cpu_s = pg_ticks(pg.data_dir()).saturating_sub(pg0) as f64 / ticks_per_sec();
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = c.delivered.load(Relaxed);
    let mut lat = std::mem::take(&mut *c.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
    let cpu_s = (ticks2 - ticks1) as f64 / ticks_per_sec();
    report.push_str(&format!(
        "\n  writes {writes} in {:.1}s; delivered {delivered} of {expected} expected (loss {}), {:.0} msgs/s over {:.1}s; latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms; server CPU {:.2}s = {:.2} µs per delivered message; RSS at end {} MiB; disconnected clients {}",
        write_time.as_secs_f64(),
        expected.saturating_sub(delivered),
        delivered as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        cpu_s,
        cpu_s * 1e6 / delivered.max(1) as f64,
        rss2 / 1024,
        c.closed.load(Relaxed),
    ));
    report.push_str(&format!("; Postgres CPU {pg_cpu_s:.2}s"));
    Ok(report)
}

/// Counts for the `members` scenario: only todo inserts into a client's own (never
/// changing) lists are counted and timed; rows that move in or out with the churn are
/// received but not counted.
#[derive(Default)]
struct MemberCollector {
    latencies_us: Mutex<Vec<i64>>,
    delivered: AtomicU64,
    moved: AtomicU64,
    live: AtomicU64,
    closed: AtomicU64,
}

async fn member_client(
    port: u16,
    token: String,
    lists: Vec<i64>,
    c: Arc<MemberCollector>,
    stop: tokio_util::sync::CancellationToken,
) {
    let url = format!("ws://127.0.0.1:{port}/realtime/v1/websocket");
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        c.closed.fetch_add(1, Relaxed);
        return;
    };
    let hello = format!(r#"{{"type":"hello","v":1,"token":"{token}"}}"#);
    let sub = r#"{"type":"subscribe","id":"s","table":"todos"}"#.to_string();
    if ws.send(Message::text(hello)).await.is_err() || ws.send(Message::text(sub)).await.is_err() {
        c.closed.fetch_add(1, Relaxed);
        return;
    }
    let mut local = Vec::new();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = stop.cancelled() => break,
        };
        let Some(Ok(msg)) = msg else {
            c.closed.fetch_add(1, Relaxed);
            break;
        };
        let Message::Text(t) = msg else { continue };
        let t = t.as_str();
        let now = now_us();
        if t.starts_with(r#"{"type":"changes""#) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(t) else {
                continue;
            };
            for item in v["changes"].as_array().into_iter().flatten() {
                let list = item["row"]["list_id"].as_i64();
                match (item["op"].as_str(), list) {
                    (Some("insert"), Some(l)) if lists.contains(&l) => {
                        if let Some(sent) = item["row"]["sent_us"].as_i64() {
                            local.push(now - sent);
                            c.delivered.fetch_add(1, Relaxed);
                        }
                    }
                    _ => {
                        c.moved.fetch_add(1, Relaxed);
                    }
                }
            }
        } else if t.starts_with(r#"{"type":"live""#) {
            c.live.fetch_add(1, Relaxed);
        } else if t.starts_with(r#"{"type":"error""#) || t.starts_with(r#"{"type":"resync"#) {
            eprintln!("client: {t}");
            c.closed.fetch_add(1, Relaxed);
        }
    }
    c.latencies_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(&mut local);
}

async fn run_members(
    pg: &EmbeddedPostgres,
    server: Server,
    url: &str,
    db: tokio_postgres::Client,
    z: &Sizes,
) -> Result<String, Error> {
    db.batch_execute(
        "create table public.members (list_id bigint not null, user_id uuid not null, primary key (list_id, user_id));
         create table public.todos (id bigserial primary key, list_id bigint not null, sent_us bigint not null, body text not null default '');
         alter table public.todos enable row level security;
         create policy by_membership on public.todos for select
           using (exists (select 1 from public.members m where m.list_id = todos.list_id and m.user_id = rowcast.uid()));
         grant select on public.todos, public.members to rowcast_authenticated;
         select rowcast.enable_sync('public.members');
         select rowcast.enable_sync('public.todos');",
    )
    .await?;
    let n = z.members_users;
    let users: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    // Each user in 1–3 lists; slots shuffled deterministically into lists of 10.
    let mut slots: Vec<usize> = Vec::new();
    for u in 0..n {
        for _ in 0..(1 + (u * 7 + 3) % 3) {
            slots.push(u);
        }
    }
    let len = slots.len();
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by_key(|i| (i.wrapping_mul(2_654_435_761)) % len.max(1));
    let mut lists_of: Vec<Vec<i64>> = vec![Vec::new(); n];
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (pos, i) in order.iter().enumerate() {
        let list = (pos / 10) as i64;
        let u = slots[*i];
        if members.len() <= list as usize {
            members.push(Vec::new());
        }
        if !lists_of[u].contains(&list) {
            lists_of[u].push(list);
            members[list as usize].push(u);
        }
    }
    let list_count = members.len() as i64;
    for chunk in members.iter().enumerate().collect::<Vec<_>>().chunks(200) {
        let mut ls: Vec<i64> = Vec::new();
        let mut us: Vec<String> = Vec::new();
        for (l, ms) in chunk {
            for u in ms.iter() {
                ls.push(*l as i64);
                us.push(users[*u].clone());
            }
        }
        db.execute(
            "insert into public.members (list_id, user_id)
             select * from unnest($1::int8[], $2::text[]::uuid[])",
            &[&ls, &us],
        )
        .await?;
    }
    let keys = TokenKeys::hs256(SECRET.as_bytes(), "rowcast", "rowcast");
    let c = Arc::new(MemberCollector::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let (rss0, _) = server.proc_stat();
    let started = Instant::now();
    let sign = |u: &String| {
        keys.sign(
            &Identity::user(u, serde_json::json!({})),
            Duration::from_secs(3600),
        )
        .unwrap_or_default()
    };
    // One subscription first: it loads the membership index, whose memory is the RSS
    // growth it causes (less one connection).
    tokio::spawn(member_client(
        server.port,
        sign(&users[0]),
        lists_of[0].clone(),
        c.clone(),
        stop.clone(),
    ));
    wait_for("the first subscription", Duration::from_secs(120), || {
        c.live.load(Relaxed) + c.closed.load(Relaxed) >= 1
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_index, _) = server.proc_stat();
    for (i, u) in users.iter().enumerate().skip(1) {
        let token = sign(u);
        tokio::spawn(member_client(
            server.port,
            token,
            lists_of[i].clone(),
            c.clone(),
            stop.clone(),
        ));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    wait_for("all subscriptions live", Duration::from_secs(300), || {
        c.live.load(Relaxed) + c.closed.load(Relaxed) >= n as u64
    })
    .await?;
    let setup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, ticks1) = server.proc_stat();
    let index_rows = server
        .http_get("/metrics")
        .await
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("rowcast_realtime_membership_index_rows "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(-1.0);
    let index_kib = rss_index.saturating_sub(rss0);
    let mut report = format!(
        "scenario members: {n} users in {list_count} lists of <= 10 ({} memberships; index holds {index_rows} rows; loading it grew RSS by {index_kib} KiB = {:.0} bytes per row), {} live, {} failed in {:.1}s; server RSS {} MiB -> {} MiB",
        slots.len(),
        index_kib as f64 * 1024.0 / index_rows.max(1.0),
        c.live.load(Relaxed),
        c.closed.load(Relaxed),
        setup.as_secs_f64(),
        rss0 / 1024,
        rss1 / 1024,
    );
    let expected = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let pg0 = pg_ticks(pg.data_dir());
    let t0 = Instant::now();
    let members = Arc::new(members);
    let writers = 8u64;
    let mut handles = Vec::new();
    for w in 0..writers {
        let (wdb, wconn) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(wconn);
        let (members, expected, written) = (members.clone(), expected.clone(), written.clone());
        let per = z.members_rate as f64 / writers as f64;
        let secs = z.seconds;
        handles.push(tokio::spawn(async move {
            let total = (per * secs as f64) as u64;
            let start = Instant::now();
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / per);
                tokio::time::sleep_until(due.into()).await;
                let list = ((w * 7919 + i * 104_729) % list_count as u64) as i64;
                if wdb
                    .execute(
                        "insert into public.todos (list_id, sent_us) values ($1, $2)",
                        &[&list, &now_us()],
                    )
                    .await
                    .is_err()
                {
                    return;
                }
                written.fetch_add(1, Relaxed);
                expected.fetch_add(members[list as usize].len() as u64, Relaxed);
            }
        }));
    }
    // Membership churn: a user joins a list that is not one of theirs, and leaves it later.
    let churn = {
        let (cdb, cconn) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(cconn);
        let users = users.clone();
        let lists_of = lists_of.clone();
        let rate = z.members_churn.max(1) as f64;
        let secs = z.seconds;
        tokio::spawn(async move {
            let total = (rate * secs as f64) as u64;
            let start = Instant::now();
            let mut joined: std::collections::VecDeque<(i64, String)> = Default::default();
            let mut changes = 0u64;
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let r = if i % 2 == 1 && !joined.is_empty() {
                    let (l, u) = joined.pop_front().unwrap_or_default();
                    cdb.execute(
                        "delete from public.members where list_id = $1 and user_id = $2::text::uuid",
                        &[&l, &u],
                    )
                    .await
                } else {
                    let ui = ((i * 6_700_417) % users.len() as u64) as usize;
                    let u = users[ui].clone();
                    let mut l = ((i * 15_485_863 + 1) % list_count as u64) as i64;
                    // Never one of the user's own lists: those deliveries are counted.
                    while lists_of[ui].contains(&l)
                        || joined.iter().any(|(jl, ju)| *jl == l && *ju == u)
                    {
                        l = (l + 1) % list_count;
                    }
                    joined.push_back((l, u.clone()));
                    cdb.execute(
                        "insert into public.members (list_id, user_id) values ($1, $2::text::uuid) on conflict do nothing",
                        &[&l, &u],
                    )
                    .await
                };
                if r.is_ok() {
                    changes += 1;
                }
            }
            changes
        })
    };
    for h in handles {
        h.await?;
    }
    let churned = churn.await?;
    let write_time = t0.elapsed();
    let writes = written.load(Relaxed);
    let expected = expected.load(Relaxed);
    let settle = Instant::now();
    while c.delivered.load(Relaxed) < expected && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = t0.elapsed();
    let (rss2, ticks2) = server.proc_stat();
    let pg_cpu_s = pg_ticks(pg.data_dir()).saturating_sub(pg0) as f64 / ticks_per_sec();
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = c.delivered.load(Relaxed);
    let mut lat = std::mem::take(&mut *c.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
    let cpu_s = (ticks2 - ticks1) as f64 / ticks_per_sec();
    report.push_str(&format!(
        "\n  todo writes {writes} + membership changes {churned} in {:.1}s; delivered {delivered} of {expected} expected (loss {}), moved-in/out items {}, {:.0} msgs/s over {:.1}s; latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms; server CPU {:.2}s = {:.2} µs per delivered message; Postgres CPU {pg_cpu_s:.2}s; RSS at end {} MiB; disconnected clients {}",
        write_time.as_secs_f64(),
        expected.saturating_sub(delivered),
        c.moved.load(Relaxed),
        delivered as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        cpu_s,
        cpu_s * 1e6 / delivered.max(1) as f64,
        rss2 / 1024,
        c.closed.load(Relaxed),
    ));
    Ok(report)
}
