//! `rowcast-bench capture`: what change capture costs writers and how fast changes reach the
//! reader. Starts its own Postgres (fsync on), so numbers from one run are comparable with
//! each other; report ratios and medians, this machine is noisy.
//!
//! 1. Throughput of single-row INSERT transactions (pgbench) into a plain table, a synced
//!    table with the NOTIFY doorbell off, with the default (coalesced) doorbell, and with a
//!    NOTIFY per writing transaction (migration 0002's doorbell, for comparison), at 1, 8 and
//!    32 writers, interleaved over several rounds; the median of each is reported with its
//!    ratio to the plain table, and the doorbell's cost over capture alone.
//! 2. Backend CPU per single-row INSERT transaction (one pgbench client, synchronous_commit
//!    off so the commit's flush is not in it): what the postmaster's reaped backends spent,
//!    read from /proc (Linux), for a plain table and a synced one with the doorbell off and
//!    on. Throughput at several writers mixes this with WAL flushes; this is the CPU alone.
//! 3. Bulk statements (10,000 rows), with two tables that split capture's cost into parts.
//!    Only when asked (`BENCH_PARTS=…,rowparts`): the same split for single-row INSERT
//!    throughput at 8 and 32 writers, from a bare second row up to capture.
//! 4. Commit-to-reader latency at a steady 1,000 changes/s from plain SQL writers through
//!    the live tail: the default configuration, a 200 ms poll, and NOTIFY off (p50, p99).
//! 5. Only when asked (`BENCH_PARTS=…,logical`; it restarts the cluster with
//!    `wal_level = logical`): logical decoding of the plain table's inserts through a
//!    `pgoutput` slot against trigger capture, with and without their readers.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rowcast::{
    capture::{Capture, CaptureConfig, LiveEvent, LiveSubscription},
    cluster::{self, EmbeddedPostgres},
    config::Config,
    readiness::Readiness,
    store::{migrate, Store},
};
use tokio_postgres::NoTls;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Settings {
    seconds: u64,
    rounds: usize,
    clients: Vec<u32>,
    latency_seconds: u64,
    /// Which parts run (`BENCH_PARTS`, comma-separated: cpu, throughput, rowparts, bulk,
    /// latency, logical; cpu, throughput, bulk and latency by default).
    parts: Vec<String>,
    /// Where to write each delivered change's commit time and latency (`BENCH_LATENCY_TRACE`),
    /// to see when in a run the tail happens.
    trace: Option<PathBuf>,
}

fn settings() -> Settings {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    Settings {
        seconds: env("BENCH_SECONDS", 5),
        rounds: env("BENCH_ROUNDS", 3) as usize,
        clients: vec![1, 8, 32],
        latency_seconds: env("BENCH_LATENCY_SECONDS", 10),
        parts: std::env::var("BENCH_PARTS")
            .unwrap_or_else(|_| "cpu,throughput,bulk,latency".into())
            .split(',')
            .map(|p| p.trim().to_string())
            .collect(),
        trace: std::env::var_os("BENCH_LATENCY_TRACE").map(PathBuf::from),
    }
}

fn main() -> Result<(), Error> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "capture".into());
    if what != "capture" {
        return Err(format!("unknown benchmark {what:?}; available: capture").into());
    }
    let s = settings();
    let root = tempfile::Builder::new()
        .prefix("rowcast-bench-")
        .tempdir()?;
    cluster::prepare_parent_dir(root.path())?;
    let pg = EmbeddedPostgres::start(&root.path().join("pg"), None)?;
    let bindir = cluster::find_bindir(None)?;
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(run(&pg, &bindir, &s));
    if result.is_err() || !s.parts.iter().any(|p| p == "logical") {
        pg.stop()?;
        return result;
    }
    // Logical decoding needs `wal_level = logical`, a restart; it runs last so the other
    // parts keep the default WAL level.
    rt.block_on(async {
        let (db, conn) = tokio_postgres::connect(&pg.database_url(), NoTls).await?;
        tokio::spawn(conn);
        db.batch_execute("alter system set wal_level = logical")
            .await?;
        Ok::<_, Error>(())
    })?;
    pg.stop()?;
    let pg = EmbeddedPostgres::start(&root.path().join("pg"), None)?;
    let result = rt.block_on(logical(&pg, &bindir, &s));
    pg.stop()?;
    result
}

async fn run(pg: &EmbeddedPostgres, bindir: &std::path::Path, s: &Settings) -> Result<(), Error> {
    let url = pg.database_url();
    let store = Store::new(&url, &Config::for_database(&url).database)?;
    migrate::apply(store.pg_config(), &migrate::server_migrations()).await?;
    let (db, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute(
        "create table public.bench_plain (id bigserial primary key, body text not null);
         create table public.bench_synced (id bigserial primary key, body text not null);
         select rowcast.enable_sync('public.bench_synced');
         -- For comparison only: the doorbell of migration 0002, one NOTIFY per writing
         -- transaction (the default since 0005 rings at most once per 20 ms).
         create table public.bench_rowlevel (id bigserial primary key, body text not null);
         select rowcast.enable_sync('public.bench_rowlevel');
         -- For comparison only: migration 0002's per-row capture trigger (one PL/pgSQL call
         -- and one log INSERT per row) in place of the statement-level ones.
         drop trigger zz_rowcast_capture on public.bench_rowlevel;
         drop trigger zz_rowcast_capture_update on public.bench_rowlevel;
         drop trigger zz_rowcast_capture_delete on public.bench_rowlevel;
         create trigger zz_rowcast_capture after insert or update or delete on public.bench_rowlevel
           for each row execute function rowcast.capture_row('id');
         alter table public.bench_rowlevel enable always trigger zz_rowcast_capture;
         create function public.bench_ring_every() returns trigger language plpgsql as $$
         begin perform pg_notify('rowcast_changes', ''); return null; end $$;
         create trigger bench_ring_every after insert on rowcast.change_log
           for each statement execute function public.bench_ring_every();
         alter table rowcast.change_log disable trigger bench_ring_every;",
    )
    .await?;

    let part = |p: &str| s.parts.iter().any(|x| x == p);
    if part("cpu") {
        cpu(&db, bindir, pg, s.rounds).await?;
    }
    if part("throughput") {
        println!("# capture write throughput (single-row INSERT transactions, pgbench, {}s x {} rounds, fsync on)", s.seconds, s.rounds);
        println!("writers | plain tps | capture, NOTIFY off | capture, doorbell (default) | doorbell vs capture alone | capture, NOTIFY per commit (0002) | per-row AFTER trigger, NOTIFY off");
        println!("---|---|---|---|---|---|---");
        for &c in &s.clients {
            let mut results: HashMap<&str, Vec<f64>> = HashMap::new();
            for _ in 0..s.rounds {
                for (name, table, doorbell) in [
                    ("plain", "bench_plain", Doorbell::Off),
                    ("off", "bench_synced", Doorbell::Off),
                    ("on", "bench_synced", Doorbell::Coalesced),
                    ("every", "bench_synced", Doorbell::EveryCommit),
                    ("rowlevel", "bench_rowlevel", Doorbell::Off),
                ] {
                    set_doorbell(&db, doorbell).await?;
                    db.batch_execute("checkpoint").await?;
                    let tps = pgbench(bindir, pg, table, c, s.seconds)?;
                    results.entry(name).or_default().push(tps);
                }
            }
            let plain = median(&results["plain"]);
            let off = median(&results["off"]);
            let on = median(&results["on"]);
            let every = median(&results["every"]);
            let rowlevel = median(&results["rowlevel"]);
            println!(
            "{c} | {plain:.0} | {off:.0} ({:.0}%) | {on:.0} ({:.0}%) | {:.1}% | {every:.0} ({:.0}%) | {rowlevel:.0} ({:.0}%)",
            100.0 * off / plain,
            100.0 * on / plain,
            100.0 * (off - on) / off,
            100.0 * every / plain,
            100.0 * rowlevel / plain
        );
        }
    }
    if part("rowparts") {
        row_parts(&db, bindir, pg, s).await?;
    }
    set_doorbell(&db, Doorbell::Off).await?;

    if part("bulk") {
        bulk(&db, s.rounds).await?;
    }
    if !part("latency") {
        return Ok(());
    }
    if std::env::var_os("BENCH_VACUUM_FIRST").is_some() {
        let t = Instant::now();
        db.batch_execute("vacuum analyze").await?;
        println!(
            "(vacuum analyze before the latency part: {:.1}s)",
            t.elapsed().as_secs_f64()
        );
    }

    println!();
    println!(
        "# commit-to-reader latency at 1,000 changes/s ({}s)",
        s.latency_seconds
    );
    println!("doorbell | poll interval | delivered | p50 ms | p99 ms | max ms");
    println!("---|---|---|---|---|---");
    // The first row is the default configuration (doorbell on, 50 ms poll).
    for (notify, poll_ms) in [(true, 50), (true, 200), (false, 50)] {
        let trace = s.trace.as_ref().map(|t| {
            t.with_extension(format!(
                "{}-{poll_ms}ms.csv",
                if notify { "on" } else { "off" }
            ))
        });
        let (n, p50, p99, max) =
            latency(&url, &store, notify, poll_ms, s.latency_seconds, trace).await?;
        println!(
            "{} | {poll_ms}ms | {n} | {p50:.1} | {p99:.1} | {max:.1}",
            if notify { "on" } else { "off" }
        );
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Doorbell {
    Off,
    /// Migration 0005's trigger: at most one NOTIFY per 20 ms.
    Coalesced,
    /// One NOTIFY per writing transaction, as migration 0002 had it.
    EveryCommit,
}

async fn set_doorbell(db: &tokio_postgres::Client, d: Doorbell) -> Result<(), Error> {
    let (coalesced, every) = match d {
        Doorbell::Off => (false, false),
        Doorbell::Coalesced => (true, false),
        Doorbell::EveryCommit => (false, true),
    };
    let sw = |on: bool, name: &str| {
        if on {
            format!("alter table rowcast.change_log enable always trigger {name};")
        } else {
            format!("alter table rowcast.change_log disable trigger {name};")
        }
    };
    db.batch_execute(&format!(
        "{}{}",
        sw(coalesced, "rowcast_doorbell"),
        sw(every, "bench_ring_every")
    ))
    .await?;
    Ok(())
}

/// A pgbench script of one single-row INSERT into `table` (100-byte body), in a temporary
/// directory that lives as long as the returned handle.
fn insert_script(table: &str) -> Result<(tempfile::TempDir, PathBuf), Error> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        format!("insert into public.{table} (body) values (repeat('x', 100));\n"),
    )?;
    Ok((dir, script))
}

fn pgbench(
    bindir: &std::path::Path,
    pg: &EmbeddedPostgres,
    table: &str,
    clients: u32,
    seconds: u64,
) -> Result<f64, Error> {
    let (_dir, script) = insert_script(table)?;
    let out = Command::new(bindir.join("pgbench"))
        .args(["-n", "-M", "prepared", "-f"])
        .arg(&script)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(4).to_string(),
        ])
        .args(["-T", &seconds.to_string()])
        .arg(pg.database_url())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {text}").into())
}

/// Backend CPU per single-row INSERT transaction: plain, captured with the doorbell off,
/// captured with the default doorbell; medians of `rounds`, interleaved.
async fn cpu(
    db: &tokio_postgres::Client,
    bindir: &std::path::Path,
    pg: &EmbeddedPostgres,
    rounds: usize,
) -> Result<(), Error> {
    const TRANSACTIONS: u32 = 20_000;
    println!("# backend CPU per single-row INSERT transaction (1 client, synchronous_commit off, {TRANSACTIONS} transactions x {rounds} rounds, median)");
    println!("plain µs | capture, NOTIFY off µs | capture, doorbell (default) µs");
    println!("---|---|---");
    let mut results: HashMap<&str, Vec<f64>> = HashMap::new();
    for _ in 0..rounds {
        for (name, table, doorbell) in [
            ("plain", "bench_plain", Doorbell::Off),
            ("off", "bench_synced", Doorbell::Off),
            ("on", "bench_synced", Doorbell::Coalesced),
        ] {
            set_doorbell(db, doorbell).await?;
            let us = backend_cpu_per_transaction(bindir, pg, table, TRANSACTIONS)?;
            results.entry(name).or_default().push(us);
        }
    }
    set_doorbell(db, Doorbell::Off).await?;
    let plain = median(&results["plain"]);
    let off = median(&results["off"]);
    let on = median(&results["on"]);
    println!(
        "{plain:.0} | {off:.0} ({:.2}x) | {on:.0} ({:.2}x)",
        off / plain,
        on / plain
    );
    println!();
    Ok(())
}

/// CPU the backends spent per transaction over `transactions` single-row INSERTs from one
/// pgbench client: the growth of the postmaster's reaped-children CPU time
/// (`/proc/<pid>/stat`), which includes the backend once pgbench disconnects.
fn backend_cpu_per_transaction(
    bindir: &std::path::Path,
    pg: &EmbeddedPostgres,
    table: &str,
    transactions: u32,
) -> Result<f64, Error> {
    let pid_file = std::fs::read_to_string(pg.data_dir().join("postmaster.pid"))?;
    let pid = pid_file
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let ticks_per_s = clock_ticks_per_second()?;
    let children_ticks = || proc_ticks(&pid, ProcTicks::ReapedChildren);
    let (_dir, script) = insert_script(table)?;
    let before = children_ticks()?;
    let out = Command::new(bindir.join("pgbench"))
        .env("PGOPTIONS", "-c synchronous_commit=off")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            "1",
            "-t",
            &transactions.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(pg.database_url())
        .output()?;
    if !out.status.success() {
        return Err(format!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    // The postmaster adds a backend's time when it reaps it, just after pgbench exits.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = children_ticks()?;
    while after == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = children_ticks()?;
    }
    Ok((after - before) / ticks_per_s * 1e6 / f64::from(transactions))
}

/// Kernel clock ticks per second (the unit of CPU times in `/proc/<pid>/stat`).
fn clock_ticks_per_second() -> Result<f64, Error> {
    Ok(
        String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
            .trim()
            .parse()?,
    )
}

enum ProcTicks {
    /// The process's own user + system time.
    Own,
    /// What the process's reaped children spent.
    ReapedChildren,
}

/// CPU time of process `pid` in clock ticks, from `/proc/<pid>/stat` (Linux).
fn proc_ticks(pid: &str, which: ProcTicks) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces;
    // utime, stime, cutime and cstime are fields 14 to 17 of the whole line.
    let rest = stat.rsplit_once(')').ok_or("unreadable /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (u, s) = match which {
        ProcTicks::Own => (f.get(11), f.get(12)),
        ProcTicks::ReapedChildren => (f.get(13), f.get(14)),
    };
    match (u, s) {
        (Some(u), Some(s)) => Ok(u.parse::<f64>()? + s.parse::<f64>()?),
        _ => Err("short /proc stat".into()),
    }
}

/// Two tables that split bulk capture's cost into its parts (created by [`bulk`]). Neither is
/// synced, and neither is anything rowcast installs:
/// - `bench_images`: the version column and BEFORE UPDATE trigger of a synced table, and
///   statement-level AFTER triggers that only build the JSON image of every transition-table
///   row (old and new for an UPDATE) and write nothing: what capture costs before its log.
/// - `bench_static`: the same, writing the log rows capture writes (key object, version,
///   images; one row per changed row), from triggers written for this one table: static
///   column references, an UPDATE's old and new rows paired by joining on `id`, no key
///   changes handled. What one log row per changed row costs without the generic machinery.
const BULK_PARTS_SQL: &str = "
create table if not exists public.bench_images (id bigserial primary key, body text not null,
  _v bigint default nextval('rowcast.row_version_seq'));
create or replace function public.bench_images_capture() returns trigger language plpgsql as $$
begin
  if tg_op = 'UPDATE' then
    perform count(*) from (select to_jsonb(r) as j from rowcast_old r) x where j is not null;
  end if;
  perform count(*) from (select to_jsonb(r) as j from rowcast_new r) x where j is not null;
  return null;
end $$;
create or replace trigger zz_version before update on public.bench_images
  for each row execute function rowcast.bump_version();
create or replace trigger zz_capture after insert on public.bench_images
  referencing new table as rowcast_new for each statement execute function public.bench_images_capture();
create or replace trigger zz_capture_update after update on public.bench_images
  referencing old table as rowcast_old new table as rowcast_new
  for each statement execute function public.bench_images_capture();

create table if not exists public.bench_static (id bigserial primary key, body text not null,
  _v bigint default nextval('rowcast.row_version_seq'));
create or replace function public.bench_static_insert() returns trigger language plpgsql as $$
begin
  insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row)
  select 'public', 'bench_static', 'I', jsonb_build_object('id', n.id),
         nextval('rowcast.row_version_seq'), to_jsonb(n)
  from rowcast_new n;
  return null;
end $$;
create or replace function public.bench_static_update() returns trigger language plpgsql as $$
begin
  insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row, old_row)
  select 'public', 'bench_static', 'U', jsonb_build_object('id', n.id), n._v, to_jsonb(n), to_jsonb(o)
  from rowcast_new n join rowcast_old o using (id);
  return null;
end $$;
create or replace trigger zz_version before update on public.bench_static
  for each row execute function rowcast.bump_version();
create or replace trigger zz_capture after insert on public.bench_static
  referencing new table as rowcast_new for each statement execute function public.bench_static_insert();
create or replace trigger zz_capture_update after update on public.bench_static
  referencing old table as rowcast_old new table as rowcast_new
  for each statement execute function public.bench_static_update();
";

/// Tables that split a captured single-row INSERT's cost into parts, for the `rowparts`
/// part (besides `bench_plain`, `bench_static` of [`BULK_PARTS_SQL`] and `bench_synced`):
/// - `bench_second_row`: a per-row trigger writes one `bigint` into an unindexed table;
///   what any second row in the writer's transaction costs.
/// - `bench_skeleton`: a static statement-level trigger writes the log row capture writes,
///   without the key object and the image (both null): the log's own row, identity,
///   `(xid, id)` index entry, version and doorbell.
const ROW_PARTS_SQL: &str = "
create table if not exists public.bench_second_row_log (x bigint);
create table if not exists public.bench_second_row (id bigserial primary key, body text not null);
create or replace function public.bench_second_row_capture() returns trigger language plpgsql as $$
begin
  insert into public.bench_second_row_log values (1);
  return null;
end $$;
create or replace trigger zz_capture after insert on public.bench_second_row
  for each row execute function public.bench_second_row_capture();

create table if not exists public.bench_skeleton (id bigserial primary key, body text not null,
  _v bigint default nextval('rowcast.row_version_seq'));
create or replace function public.bench_skeleton_insert() returns trigger language plpgsql as $$
begin
  insert into rowcast.change_log (table_schema, table_name, op, pk, version, new_row)
  select 'public', 'bench_skeleton', 'I', null, nextval('rowcast.row_version_seq'), null
  from rowcast_new n;
  return null;
end $$;
create or replace trigger zz_capture after insert on public.bench_skeleton
  referencing new table as rowcast_new for each statement execute function public.bench_skeleton_insert();
";

/// Single-row INSERT throughput at 8 and 32 writers, from a bare second row up to capture,
/// every variant with the default doorbell on (it fires on any log insert), interleaved per
/// round; medians and their ratio to the plain table.
async fn row_parts(
    db: &tokio_postgres::Client,
    bindir: &std::path::Path,
    pg: &EmbeddedPostgres,
    s: &Settings,
) -> Result<(), Error> {
    db.batch_execute(BULK_PARTS_SQL).await?;
    db.batch_execute(ROW_PARTS_SQL).await?;
    set_doorbell(db, Doorbell::Coalesced).await?;
    println!();
    println!("# single-row INSERT capture split into parts (pgbench, {}s x {} rounds, fsync on, doorbell on, median tps)", s.seconds, s.rounds);
    println!("writers | plain | second row (per-row trigger, unindexed) | log row, no key or image (static) | log row with key and image (static) | capture");
    println!("---|---|---|---|---|---");
    let tables = [
        "bench_plain",
        "bench_second_row",
        "bench_skeleton",
        "bench_static",
        "bench_synced",
    ];
    for c in [8, 32] {
        let mut results: HashMap<&str, Vec<f64>> = HashMap::new();
        for _ in 0..s.rounds {
            for t in tables {
                db.batch_execute("checkpoint").await?;
                let tps = pgbench(bindir, pg, t, c, s.seconds)?;
                results.entry(t).or_default().push(tps);
            }
        }
        let plain = median(&results["bench_plain"]);
        let cell = |t: &str| {
            let v = median(&results[t]);
            format!("{v:.0} ({:.0}%)", 100.0 * v / plain)
        };
        println!(
            "{c} | {plain:.0} | {} | {} | {} | {}",
            cell("bench_second_row"),
            cell("bench_skeleton"),
            cell("bench_static"),
            cell("bench_synced")
        );
    }
    // The skeleton's log rows have no key, which a reader rejects as a corrupt log; the
    // latency part's live tail reads this log next.
    db.batch_execute("delete from rowcast.change_log where table_name = 'bench_skeleton'")
        .await?;
    Ok(())
}

/// A 10,000-row `INSERT … SELECT` and a 10,000-row `UPDATE`, timed on a plain table, the
/// two tables of [`BULK_PARTS_SQL`], a synced table (statement-level capture) and a synced
/// table with 0002's per-row trigger; medians of `rounds`, each on a freshly emptied table
/// after a checkpoint. The UPDATE runs twice: the first pays a full-page image in the WAL
/// for every page it touches first after the checkpoint, the second does not.
async fn bulk(db: &tokio_postgres::Client, rounds: usize) -> Result<(), Error> {
    db.batch_execute(BULK_PARTS_SQL).await?;
    println!();
    println!("# bulk statements, 10,000 rows ({rounds} rounds, median ms)");
    println!("statement | plain | images only, no log | log rows, static triggers | capture (statement-level) | capture (per-row AFTER trigger)");
    println!("---|---|---|---|---|---");
    let tables = [
        "bench_plain",
        "bench_images",
        "bench_static",
        "bench_synced",
        "bench_rowlevel",
    ];
    let mut times: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    for _ in 0..rounds {
        for t in tables {
            db.batch_execute(&format!("truncate public.{t}; checkpoint"))
                .await?;
            for (name, sql) in [
                (
                    "insert",
                    format!("insert into public.{t} (body) select repeat('x', 100) from generate_series(1, 10000)"),
                ),
                ("update", format!("update public.{t} set body = body || 'y'")),
                // The same rows again: every page is dirty already, so no full-page
                // images, which is how a table updated in place over time is written.
                ("update again", format!("update public.{t} set body = body || 'z'")),
            ] {
                let started = Instant::now();
                db.batch_execute(&sql).await?;
                times
                    .entry((name, t))
                    .or_default()
                    .push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    for name in ["insert", "update", "update again"] {
        let plain = median(&times[&(name, "bench_plain")]);
        let images = median(&times[&(name, "bench_images")]);
        let logged = median(&times[&(name, "bench_static")]);
        let stmt = median(&times[&(name, "bench_synced")]);
        let row = median(&times[&(name, "bench_rowlevel")]);
        println!(
            "{name} | {plain:.0} | {images:.0} ({:.1}x) | {logged:.0} ({:.1}x) | {stmt:.0} ({:.1}x) | {row:.0} ({:.1}x)",
            images / plain,
            logged / plain,
            stmt / plain,
            row / plain
        );
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Insert 1,000 rows/s (one per transaction, 8 connections) and time each from its commit
/// returning to the live tail delivering it.
async fn latency(
    url: &str,
    store: &Store,
    notify: bool,
    poll_ms: u64,
    seconds: u64,
    trace: Option<PathBuf>,
) -> Result<(usize, f64, f64, f64), Error> {
    let (tasks, shutdown, mut sub) = spawn_live_tail(
        store,
        CaptureConfig {
            notify,
            poll_interval: Duration::from_millis(poll_ms),
            live_capacity: 1 << 16,
            ..CaptureConfig::default()
        },
    )
    .await;
    // Let the listener connect before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let received: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let rx = received.clone();
    let consumer = tokio::spawn(async move {
        while let Ok(ev) = sub.events.recv().await {
            if let LiveEvent::Batch(b) = ev {
                let now = Instant::now();
                let mut map = rx.lock().unwrap_or_else(|p| p.into_inner());
                for c in &b.changes {
                    if let Some(id) = c.pk.get("id").and_then(|v| v.as_i64()) {
                        map.insert(id, now);
                    }
                }
            }
        }
    });

    let committed: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let writers = 8u32;
    let per_writer = Duration::from_micros(1_000_000 * writers as u64 / 1000);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for _ in 0..writers {
        let (db, conn) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(conn);
        let committed = committed.clone();
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_writer);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < until {
                tick.tick().await;
                let row = db
                    .query_one(
                        "insert into public.bench_synced (body) values ('latency') returning id",
                        &[],
                    )
                    .await;
                let now = Instant::now();
                if let Ok(row) = row {
                    let id: i64 = row.get(0);
                    committed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, now);
                }
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    consumer.abort();

    let committed = committed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let received = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(path) = trace {
        // One line per delivered change: commit time since the first commit, and latency.
        let first = committed.values().min().copied();
        let mut rows: Vec<(f64, f64)> = committed
            .iter()
            .filter_map(|(id, c)| {
                let r = received.get(id)?;
                let at = c.saturating_duration_since(first?).as_secs_f64() * 1000.0;
                Some((at, r.saturating_duration_since(*c).as_secs_f64() * 1000.0))
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let text: String = rows
            .iter()
            .map(|(at, ms)| format!("{at:.2},{ms:.2}\n"))
            .collect();
        std::fs::write(&path, format!("commit_ms,latency_ms\n{text}"))?;
    }
    let mut ms: Vec<f64> = committed
        .iter()
        .filter_map(|(id, c)| {
            received
                .get(id)
                .map(|r| r.saturating_duration_since(*c).as_secs_f64() * 1000.0)
        })
        .collect();
    if ms.len() < committed.len() {
        return Err(format!(
            "only {} of {} committed changes were delivered",
            ms.len(),
            committed.len()
        )
        .into());
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p) as usize];
    Ok((ms.len(), pct(0.5), pct(0.99), pct(1.0)))
}

/// Logical decoding as the source instead of the capture triggers, measured to see whether
/// it changes the picture (ADR 0001): single-row INSERT throughput into the plain table with
/// no slot, and while a decoder drains a `pgoutput` slot, against trigger capture (default
/// doorbell) without and with its live reader; one cluster with `wal_level = logical`,
/// interleaved rounds, medians.
async fn logical(
    pg: &EmbeddedPostgres,
    bindir: &std::path::Path,
    s: &Settings,
) -> Result<(), Error> {
    let url = pg.database_url();
    let (db, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    let level: String = db.query_one("show wal_level", &[]).await?.get(0);
    if level != "logical" {
        return Err(format!("wal_level is {level} after the restart, not logical").into());
    }
    db.batch_execute("create publication rowcast_bench for table public.bench_plain")
        .await?;
    let store = Store::new(&url, &Config::for_database(&url).database)?;
    println!();
    println!("# logical decoding vs trigger capture (single-row INSERT transactions, wal_level = logical, pgbench, {}s x {} rounds, fsync on, median)", s.seconds, s.rounds);
    println!(
        "(tps median, then the median and range of each round's ratio to that round's plain run)"
    );
    println!("writers | plain tps | plain, pgoutput slot streamed (pg_recvlogical) | walsender µs per change | capture, doorbell | capture, doorbell, live reader");
    println!("---|---|---|---|---|---");
    for &c in &s.clients {
        let mut tps: HashMap<&str, Vec<f64>> = HashMap::new();
        let mut per_change = Vec::new();
        for _ in 0..s.rounds {
            for name in ["plain", "decoded", "capture", "reader"] {
                db.batch_execute("checkpoint").await?;
                let run = |table: &str| {
                    tokio::task::block_in_place(|| pgbench(bindir, pg, table, c, s.seconds))
                };
                let t = match name {
                    "plain" => run("bench_plain")?,
                    "decoded" => {
                        let (slots, conn) = tokio_postgres::connect(&url, NoTls).await?;
                        tokio::spawn(conn);
                        let decoder = Decoder::start(bindir, pg, slots).await?;
                        let t = run("bench_plain")?;
                        let d = decoder.finish().await?;
                        if d.changes == 0 {
                            return Err("no inserts were decoded".into());
                        }
                        per_change.push(d.cpu_seconds * 1e6 / d.changes as f64);
                        t
                    }
                    "capture" => {
                        set_doorbell(&db, Doorbell::Coalesced).await?;
                        run("bench_synced")?
                    }
                    _ => {
                        set_doorbell(&db, Doorbell::Coalesced).await?;
                        let reader = LiveReader::start(&store).await;
                        let t = run("bench_synced")?;
                        reader.stop().await;
                        t
                    }
                };
                set_doorbell(&db, Doorbell::Off).await?;
                tps.entry(name).or_default().push(t);
            }
        }
        let plain = median(&tps["plain"]);
        // This machine's throughput drifts between rounds: each variant's ratio is taken to
        // the plain run of its own round, and the median and range of those are reported.
        let pct = |name: &str| {
            let ratios: Vec<f64> = tps[name]
                .iter()
                .zip(&tps["plain"])
                .map(|(t, p)| 100.0 * t / p)
                .collect();
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
            format!(
                "{:.0} ({:.0}%, {lo:.0}–{hi:.0})",
                median(&tps[name]),
                median(&ratios)
            )
        };
        println!(
            "{c} | {plain:.0} | {} | {:.0} | {} | {}",
            pct("decoded"),
            median(&per_change),
            pct("capture"),
            pct("reader"),
        );
    }
    Ok(())
}

/// `pg_recvlogical` streaming the logical slot `rowcast_bench` (`pgoutput`, the output plugin
/// of built-in logical replication) over the replication protocol, as a replication-source
/// reader would; what it spends is measured on the walsender backend that decodes.
struct Decoder {
    child: std::process::Child,
    db: tokio_postgres::Client,
    walsender: String,
    ticks_before: f64,
    rows_before: i64,
}

struct Decoded {
    changes: u64,
    cpu_seconds: f64,
}

impl Decoder {
    async fn start(
        bindir: &std::path::Path,
        pg: &EmbeddedPostgres,
        db: tokio_postgres::Client,
    ) -> Result<Decoder, Error> {
        db.batch_execute("select pg_create_logical_replication_slot('rowcast_bench', 'pgoutput')")
            .await?;
        let rows_before = inserted(&db).await?;
        let child = Command::new(bindir.join("pg_recvlogical"))
            .arg("-d")
            .arg(pg.database_url())
            .args(["--slot", "rowcast_bench", "--start", "-f", "/dev/null"])
            .args([
                "-o",
                "proto_version=1",
                "-o",
                "publication_names=rowcast_bench",
            ])
            // Report progress every second, never fsync /dev/null.
            .args(["-s", "1", "-F", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let walsender = loop {
            let pid: Option<i32> = db
                .query_one(
                    "select active_pid from pg_replication_slots where slot_name = 'rowcast_bench'",
                    &[],
                )
                .await?
                .get(0);
            match pid {
                Some(pid) => break pid.to_string(),
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                None => return Err("pg_recvlogical did not attach to the slot".into()),
            }
        };
        let ticks_before = proc_ticks(&walsender, ProcTicks::Own)?;
        Ok(Decoder {
            child,
            db,
            walsender,
            ticks_before,
            rows_before,
        })
    }

    /// Once the writers are done: wait until the slot has confirmed everything written,
    /// then stop the stream and drop the slot.
    async fn finish(mut self) -> Result<Decoded, Error> {
        let end: String = self
            .db
            .query_one("select pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done: bool = self
                .db
                .query_one(
                    "select coalesce(confirmed_flush_lsn >= $1::text::pg_lsn, false)                      from pg_replication_slots where slot_name = 'rowcast_bench'",
                    &[&end],
                )
                .await?
                .get(0);
            if done {
                break;
            }
            if Instant::now() > deadline {
                return Err("the decoder did not catch up within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ticks = proc_ticks(&self.walsender, ProcTicks::Own)? - self.ticks_before;
        let changes = (inserted(&self.db).await? - self.rows_before).max(0) as u64;
        self.child.kill()?;
        self.child.wait()?;
        // The walsender ends shortly after its client; the slot can be dropped once it has.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = self
            .db
            .batch_execute("select pg_drop_replication_slot('rowcast_bench')")
            .await
        {
            if Instant::now() > deadline {
                return Err(e.into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Decoded {
            changes,
            cpu_seconds: ticks / clock_ticks_per_second()?,
        })
    }
}

/// How many rows have been inserted into the plain table (its key sequence).
async fn inserted(db: &tokio_postgres::Client) -> Result<i64, Error> {
    Ok(db
        .query_one("select last_value from public.bench_plain_id_seq", &[])
        .await?
        .get(0))
}

/// The server's live tail (default doorbell on) reading the log while the writers write,
/// its batches drained by one subscriber.
struct LiveReader {
    tasks: TaskTracker,
    shutdown: CancellationToken,
    consumer: tokio::task::JoinHandle<()>,
}

impl LiveReader {
    async fn start(store: &Store) -> LiveReader {
        let (tasks, shutdown, mut sub) = spawn_live_tail(store, CaptureConfig::default()).await;
        let consumer = tokio::spawn(async move { while sub.events.recv().await.is_ok() {} });
        LiveReader {
            tasks,
            shutdown,
            consumer,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.consumer.abort();
    }
}

/// Start a live tail on `store` as the server does, with one subscription to it.
async fn spawn_live_tail(
    store: &Store,
    config: CaptureConfig,
) -> (TaskTracker, CancellationToken, LiveSubscription) {
    let capture = Capture::new(store.clone(), config);
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let readiness = Arc::new(Readiness::default());
    readiness.mark_started();
    capture.spawn(&tasks, &shutdown, readiness);
    let sub = capture.subscribe().await;
    (tasks, shutdown, sub)
}
