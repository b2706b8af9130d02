//! Scenario `yardstick`: the same load against the naive Node server in `bench/yardstick/`
//! (a row trigger NOTIFYs `row_to_json(NEW)`, `ws` broadcasts every payload to every socket)
//! and against Rowcast (defaults, anonymous subscribers of one public table), in one run, on
//! the same Postgres (one database per side and size), with the same clients and writers.
//! Per size: the yardstick's rounds, then Rowcast's; per side the medians over the rounds of
//! p50/p99 latency, server CPU per delivered message (`/proc/<pid>/stat` of the server
//! process, Node or Rowcast, the same way; its kernel part from stime), Postgres CPU and the
//! load generator's own CPU (clients and writers share the cores with the servers); then the
//! ratios Rowcast/yardstick, and Rowcast's kernel time over the yardstick's whole CPU (the
//! ratio Rowcast would have if its own code cost nothing).
//! The machine is shared, so the ratios are the result, not the absolute numbers.
//!
//! Env: `BENCH_YARD_SIZES` (subscribers x writes/s, comma-separated; default
//! `100x200,1000x20,5000x4,1000x100`), `BENCH_YARD_SECONDS` (per round, 10),
//! `BENCH_YARD_ROUNDS` (3), `BENCH_YARD_SETTLE` (seconds to wait for stragglers, 20),
//! `BENCH_YARD_BODY` (bytes of the `body` column, 16: the row's JSON image is ~64 bytes),
//! `BENCH_YARDSTICK_DIR` (the Node server; `npm ci` runs there when node_modules is
//! missing), `NODE` (the node binary).

use super::*;

/// Which server a run measures.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Yardstick,
    Rowcast,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Yardstick => "yardstick",
            Side::Rowcast => "rowcast",
        }
    }
}

/// One measured round.
struct Round {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    expected: u64,
    delivered: u64,
    frames: u64,
    msgs_per_s: f64,
    server_us_per_msg: f64,
    /// The kernel's part of `server_us_per_msg` (stime).
    server_kernel_us_per_msg: f64,
    server_cpu_s: f64,
    loadgen_cpu_s: f64,
    pg_cpu_s: f64,
}

struct Settings {
    sizes: Vec<(usize, u64)>,
    seconds: u64,
    rounds: usize,
    settle: Duration,
    body: String,
    dir: PathBuf,
    node: String,
}

fn settings() -> Result<Settings, Error> {
    let sizes = std::env::var("BENCH_YARD_SIZES")
        .unwrap_or_else(|_| "100x200,1000x20,5000x4,1000x100".into())
        .split(',')
        .map(|s| {
            let (n, w) = s.trim().split_once('x').ok_or("BENCH_YARD_SIZES: NxW")?;
            Ok((n.parse()?, w.parse()?))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Settings {
        sizes,
        seconds: env("BENCH_YARD_SECONDS", 10),
        rounds: env("BENCH_YARD_ROUNDS", 3).max(1) as usize,
        settle: Duration::from_secs(env("BENCH_YARD_SETTLE", 20)),
        body: "x".repeat(env("BENCH_YARD_BODY", 16) as usize),
        dir: std::env::var("BENCH_YARDSTICK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("yardstick")),
        node: std::env::var("NODE").unwrap_or_else(|_| "node".into()),
    })
}

/// `npm ci` in the yardstick's directory unless its node_modules matches the lock file.
fn install(dir: &Path) -> Result<(), Error> {
    let lock = std::fs::read(dir.join("package-lock.json"))?;
    let stamp = dir.join("node_modules/.rowcast-installed-lock");
    if std::fs::read(&stamp).is_ok_and(|s| s == lock) {
        return Ok(());
    }
    let ok = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()?
        .success();
    if !ok {
        return Err(format!("npm ci failed in {}", dir.display()).into());
    }
    std::fs::write(stamp, lock)?;
    Ok(())
}

/// User + system CPU ticks of this process (the clients and the writers).
fn own_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

pub(super) async fn run(pg: &EmbeddedPostgres, bin: &Path) -> Result<String, Error> {
    let z = settings()?;
    install(&z.dir)?;
    let (admin, conn) = tokio_postgres::connect(&pg.database_url(), NoTls).await?;
    tokio::spawn(conn);
    let mut out = String::new();
    for &(conns, rate) in &z.sizes {
        let mut sides = Vec::new();
        for side in [Side::Yardstick, Side::Rowcast] {
            let rounds = run_side(side, pg, &admin, bin, &z, conns, rate).await?;
            for (i, r) in rounds.iter().enumerate() {
                eprintln!(
                    "  {} {conns}x{rate} round {}: delivered {}/{} in {} frames, p50 {:.1} p99 {:.1} max {:.1} ms, {:.0} msgs/s, server {:.2} s = {:.2} µs/msg (kernel {:.2}), load generator {:.2} s, Postgres {:.2} s",
                    side.name(),
                    i + 1,
                    r.delivered,
                    r.expected,
                    r.frames,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.msgs_per_s,
                    r.server_cpu_s,
                    r.server_us_per_msg,
                    r.server_kernel_us_per_msg,
                    r.loadgen_cpu_s,
                    r.pg_cpu_s,
                );
            }
            sides.push(rounds);
        }
        out.push_str(&report(conns, rate, &z, &sides[0], &sides[1]));
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn report(conns: usize, rate: u64, z: &Settings, y: &[Round], r: &[Round]) -> String {
    let m = |rs: &[Round], f: fn(&Round) -> f64| median(rs.iter().map(f).collect());
    let line = |name: &str, rs: &[Round]| {
        let expected: u64 = rs.iter().map(|r| r.expected).sum();
        let delivered: u64 = rs.iter().map(|r| r.delivered).sum();
        let frames: u64 = rs.iter().map(|r| r.frames).sum();
        format!(
            "\n  {name:<9}  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms  loss {:>6} of {:>8}  {:>5.2} rows/frame  {:>7.0} msgs/s  server {:>6.2} µs/msg ({:.2} s, kernel {:.2} µs/msg)  load generator {:.2} s  Postgres {:.2} s  p99 by round {}",
            m(rs, |r| r.p50_ms),
            m(rs, |r| r.p99_ms),
            m(rs, |r| r.max_ms),
            expected.saturating_sub(delivered),
            expected,
            delivered as f64 / frames.max(1) as f64,
            m(rs, |r| r.msgs_per_s),
            m(rs, |r| r.server_us_per_msg),
            m(rs, |r| r.server_cpu_s),
            m(rs, |r| r.server_kernel_us_per_msg),
            m(rs, |r| r.loadgen_cpu_s),
            m(rs, |r| r.pg_cpu_s),
            rs.iter()
                .map(|r| format!("{:.1}", r.p99_ms))
                .collect::<Vec<_>>()
                .join("/"),
        )
    };
    let ratio = |f: fn(&Round) -> f64| m(r, f) / m(y, f);
    let cpu = ratio(|r| r.server_us_per_msg);
    let p99 = ratio(|r| r.p99_ms);
    // What the CPU ratio would be if Rowcast's own (user-space) CPU cost nothing: the floor
    // its kernel sends alone put under the ratio.
    let kernel_floor = m(r, |r| r.server_kernel_us_per_msg) / m(y, |r| r.server_us_per_msg);
    let user = ratio(|r| r.server_us_per_msg - r.server_kernel_us_per_msg);
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    format!(
        "scenario yardstick: {conns} subscribers x {rate} writes/s, {} x {} s rounds (medians){}{}\n  rowcast/yardstick: p50 {:.2}x, p99 {p99:.2}x, server CPU per delivery {cpu:.2}x (user space {user:.2}x; Rowcast's kernel time alone {kernel_floor:.2}x), Postgres CPU {:.2}x (targets: CPU <= 0.5x {}, p99 <= 1x {})\n",
        z.rounds,
        z.seconds,
        line("yardstick", y),
        line("rowcast", r),
        ratio(|r| r.p50_ms),
        ratio(|r| r.pg_cpu_s),
        mark(cpu <= 0.5),
        mark(p99 <= 1.0),
    )
}

/// Starts one side on its own database, opens the subscribers, and runs the rounds.
async fn run_side(
    side: Side,
    pg: &EmbeddedPostgres,
    admin: &tokio_postgres::Client,
    bin: &Path,
    z: &Settings,
    conns: usize,
    rate: u64,
) -> Result<Vec<Round>, Error> {
    let dbname = format!("bench_yard_{}_{conns}_{rate}", side.name());
    admin
        .batch_execute(&format!("drop database if exists {dbname}"))
        .await?;
    admin
        .batch_execute(&format!("create database {dbname}"))
        .await?;
    let url = pg.url_for(&dbname);
    let (db, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute(
        "create table public.feed (id bigserial primary key, sent_us bigint not null, body text not null default '')",
    )
    .await?;
    let server = match side {
        Side::Rowcast => {
            // Rowcast's own schema comes with `serve` (migrations on start).
            let s = Server::start(bin, &url).await?;
            db.batch_execute(
                "grant select on public.feed to rowcast_anon, rowcast_authenticated;
                 select rowcast.enable_sync('public.feed');",
            )
            .await?;
            s
        }
        Side::Yardstick => start_yardstick(z, &url).await?,
    };
    let c = Arc::new(Collector::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let mut buffers = Vec::with_capacity(conns);
    for i in 0..conns {
        let buf = Arc::new(Mutex::new(Vec::new()));
        buffers.push(buf.clone());
        tokio::spawn(subscriber(side, server.port, buf, c.clone(), stop.clone()));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    wait_for("all subscriptions live", Duration::from_secs(300), || {
        c.live.load(Relaxed) + c.closed.load(Relaxed) >= conns as u64
    })
    .await?;
    let live = c.live.load(Relaxed);
    if live < conns as u64 {
        eprintln!(
            "  {} {conns}x{rate}: only {live} of {conns} subscribers live",
            side.name()
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rounds = Vec::new();
    for _ in 0..z.rounds {
        rounds.push(round(&server, pg, &url, z, rate, &c, &buffers).await?);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    drop(server);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(rounds)
}

async fn start_yardstick(z: &Settings, url: &str) -> Result<Server, Error> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let child = Command::new(&z.node)
        .arg(z.dir.join("server.js"))
        .env("DATABASE_URL", url)
        .env("PORT", port.to_string())
        .env("YARDSTICK_TABLE", "public.feed")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Server { child, port }.ready().await
}

/// One round: W writes/s for S seconds from 8 paced writers, then up to `settle` for the
/// deliveries still in flight; CPU is read around the whole of it.
async fn round(
    server: &Server,
    pg: &EmbeddedPostgres,
    url: &str,
    z: &Settings,
    rate: u64,
    c: &Arc<Collector>,
    buffers: &[Arc<Mutex<Vec<i64>>>],
) -> Result<Round, Error> {
    for b in buffers {
        b.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
    let live = c.live.load(Relaxed) - c.closed.load(Relaxed).min(c.live.load(Relaxed));
    let writers = 8u64.min(rate.max(1));
    let mut dbs = Vec::new();
    for _ in 0..writers {
        let (wdb, wconn) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(wconn);
        dbs.push(wdb);
    }
    let delivered0 = c.delivered.load(Relaxed);
    let frames0 = c.frames.load(Relaxed);
    let (_, server0) = server.proc_stat();
    let kernel0 = server.kernel_ticks();
    let own0 = own_ticks();
    let pg0 = pg_ticks(pg.data_dir());
    let written = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for wdb in dbs {
        let written = written.clone();
        let per = rate as f64 / writers as f64;
        let total = (per * z.seconds as f64) as u64;
        let body = z.body.clone();
        handles.push(tokio::spawn(async move {
            let start = Instant::now();
            for i in 0..total {
                tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / per)).into())
                    .await;
                if wdb
                    .execute(
                        "insert into public.feed (sent_us, body) values ($1, $2)",
                        &[&now_us(), &body],
                    )
                    .await
                    .is_err()
                {
                    return;
                }
                written.fetch_add(1, Relaxed);
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    let expected = written.load(Relaxed) * live;
    let settle = Instant::now();
    while c.delivered.load(Relaxed) - delivered0 < expected && settle.elapsed() < z.settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed();
    let (_, server1) = server.proc_stat();
    let kernel1 = server.kernel_ticks();
    let own1 = own_ticks();
    let pg1 = pg_ticks(pg.data_dir());
    let delivered = c.delivered.load(Relaxed) - delivered0;
    let mut lat = Vec::with_capacity(delivered as usize);
    for b in buffers {
        lat.append(&mut b.lock().unwrap_or_else(|p| p.into_inner()));
    }
    let server_cpu_s = server1.saturating_sub(server0) as f64 / ticks_per_sec();
    Ok(Round {
        p50_ms: pct(&mut lat, 0.5),
        p99_ms: pct(&mut lat, 0.99),
        max_ms: pct(&mut lat, 1.0),
        expected,
        delivered,
        frames: c.frames.load(Relaxed) - frames0,
        msgs_per_s: delivered as f64 / elapsed.as_secs_f64(),
        server_us_per_msg: server_cpu_s * 1e6 / delivered.max(1) as f64,
        server_kernel_us_per_msg: kernel1.saturating_sub(kernel0) as f64 / ticks_per_sec() * 1e6
            / delivered.max(1) as f64,
        server_cpu_s,
        loadgen_cpu_s: own1.saturating_sub(own0) as f64 / ticks_per_sec(),
        pg_cpu_s: pg1.saturating_sub(pg0) as f64 / ticks_per_sec(),
    })
}

/// A subscriber of either side: Rowcast's `hello` + `subscribe` (anonymous), or the
/// yardstick's bare socket, whose every text message is one row. Latencies go to `buf`,
/// which the round drains.
async fn subscriber(
    side: Side,
    port: u16,
    buf: Arc<Mutex<Vec<i64>>>,
    c: Arc<Collector>,
    stop: tokio_util::sync::CancellationToken,
) {
    let url = match side {
        Side::Rowcast => format!("ws://127.0.0.1:{port}/realtime/v1/websocket"),
        Side::Yardstick => format!("ws://127.0.0.1:{port}/"),
    };
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        c.closed.fetch_add(1, Relaxed);
        return;
    };
    c.connected.fetch_add(1, Relaxed);
    match side {
        Side::Rowcast => {
            let hello = r#"{"type":"hello","v":1}"#;
            let sub = r#"{"type":"subscribe","id":"s","table":"feed"}"#;
            if ws.send(Message::text(hello)).await.is_err()
                || ws.send(Message::text(sub)).await.is_err()
            {
                c.closed.fetch_add(1, Relaxed);
                return;
            }
        }
        // The server adds the socket to its broadcast set before the handshake completes.
        Side::Yardstick => {
            c.live.fetch_add(1, Relaxed);
        }
    }
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
        let rows = match side {
            Side::Yardstick => true,
            Side::Rowcast if t.starts_with(r#"{"type":"changes""#) => true,
            Side::Rowcast => {
                if t.starts_with(r#"{"type":"live""#) {
                    c.live.fetch_add(1, Relaxed);
                } else if t.starts_with(r#"{"type":"error""#) || t.starts_with(r#"{"type":"resync"#)
                {
                    eprintln!("client: {t}");
                    c.closed.fetch_add(1, Relaxed);
                }
                false
            }
        };
        if !rows {
            continue;
        }
        c.frames.fetch_add(1, Relaxed);
        let mut rest = t;
        let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = rest.find(r#""sent_us":"#) {
            rest = &rest[i + 10..];
            let end = rest
                .find(|ch: char| !ch.is_ascii_digit())
                .unwrap_or(rest.len());
            if let Ok(sent) = rest[..end].parse::<i64>() {
                b.push(now - sent);
                c.delivered.fetch_add(1, Relaxed);
            }
        }
    }
}
