//! SQL of change capture: reading the change log by cursor below the snapshot-xmin
//! watermark, the retention floor and pruning, live-reader registrations, lag probes, the
//! doorbell switch, and the `rowcast.enable_sync`/`disable_sync`/`synced_tables` calls, as
//! [`Store`] methods over plain data (positions are `(xid, id)` pairs; `capture` turns
//! them into cursors). The rules these queries implement are in `capture` and
//! docs/adr/0001-change-capture.md.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use super::{cursors, Store, StoreError};

/// One row of `rowcast.change_log`, as stored.
#[derive(Debug, Clone)]
pub struct ChangeRow {
    pub xid: u64,
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub table_schema: String,
    pub table_name: String,
    /// `I`, `U`, `D` or `T`.
    pub op: String,
    pub pk: Option<Value>,
    pub version: i64,
    pub new_row: Option<Value>,
    pub old_row: Option<Value>,
}

/// One read of the log: the rows, and what the same snapshot said about the floor and
/// the watermark.
#[derive(Debug)]
pub struct Page {
    /// The retention floor `(xid, id)`: the largest position ever pruned.
    pub floor: (u64, i64),
    /// `pg_snapshot_xmin` of the statement's snapshot: every transaction below it has ended.
    pub watermark: u64,
    /// The page statement hit its limit, so there may be more below the watermark (the
    /// rest of the last transaction is in `rows` all the same).
    pub full: bool,
    pub rows: Vec<ChangeRow>,
}

fn parse_xid(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Decode(format!("not an xid8: {s:?}")))
}

macro_rules! row_columns {
    () => {
        "l.xid::text, l.id, l.created_at, l.table_schema, l.table_name, \
         l.op::text, l.pk, l.version, l.new_row, l.old_row"
    };
}

fn change_row(r: &Row, at: usize) -> Result<ChangeRow, StoreError> {
    let xid: String = r.try_get(at)?;
    Ok(ChangeRow {
        xid: parse_xid(&xid)?,
        id: r.try_get(at + 1)?,
        created_at: r.try_get(at + 2)?,
        table_schema: r.try_get(at + 3)?,
        table_name: r.try_get(at + 4)?,
        op: r.try_get(at + 5)?,
        pk: r.try_get(at + 6)?,
        version: r.try_get(at + 7)?,
        new_row: r.try_get(at + 8)?,
        old_row: r.try_get(at + 9)?,
    })
}

/// Up to `limit` changes with `after < (xid, id) <= until` whose transaction is below the
/// watermark, in log order, plus the floor and watermark seen by the same snapshot (one
/// statement, so the three agree with each other). Prepared once per pooled connection:
/// the live tail runs it on every wake-up.
async fn read_page(
    client: &deadpool_postgres::Client,
    after: (u64, i64),
    until: (u64, i64),
    limit: i64,
) -> Result<Page, StoreError> {
    let stmt = client
        .prepare_cached(concat!(
            "select f.xid::text, f.id, pg_snapshot_xmin(pg_current_snapshot())::text, ",
            row_columns!(),
            " from rowcast.change_floor f
              left join lateral (
                  select * from rowcast.change_log c
                  where (c.xid, c.id) > ($1::text::xid8, $2::int8)
                    and (c.xid, c.id) <= ($3::text::xid8, $4::int8)
                    and c.xid < pg_snapshot_xmin(pg_current_snapshot())
                  order by c.xid, c.id
                  limit $5
              ) l on true
              order by l.xid, l.id"
        ))
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &after.0.to_string(),
                &after.1,
                &until.0.to_string(),
                &until.1,
                &limit,
            ],
        )
        .await?;
    let first = rows
        .first()
        .ok_or_else(|| StoreError::Decode("rowcast.change_floor is empty".into()))?;
    let floor_xid: String = first.try_get(0)?;
    let watermark: String = first.try_get(2)?;
    let mut page = Page {
        floor: (parse_xid(&floor_xid)?, first.try_get(1)?),
        watermark: parse_xid(&watermark)?,
        full: false,
        rows: Vec::with_capacity(rows.len()),
    };
    for r in &rows {
        if r.try_get::<_, Option<String>>(3)?.is_some() {
            page.rows.push(change_row(r, 3)?);
        }
    }
    Ok(page)
}

/// The rest of one transaction's changes after `after_id` (the transaction is known to have
/// ended, so no watermark is needed).
async fn read_rest_of_transaction(
    client: &deadpool_postgres::Client,
    xid: u64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<ChangeRow>, StoreError> {
    let stmt = client
        .prepare_cached(concat!(
            "select ",
            row_columns!(),
            " from rowcast.change_log l
              where l.xid = $1::text::xid8 and l.id > $2 order by l.id limit $3"
        ))
        .await?;
    let rows = client
        .query(&stmt, &[&xid.to_string(), &after_id, &limit])
        .await?;
    rows.iter().map(|r| change_row(r, 0)).collect()
}

/// What the live tail's first read found: the watermark it starts from, and whether the
/// doorbell switch worked (a failure is not fatal: only the owner of `rowcast.change_log`
/// may switch it, and the poll interval bounds latency without it).
#[derive(Debug)]
pub struct TailStart {
    pub doorbell: Result<(), StoreError>,
    /// `pg_snapshot_xmin` right after the switch.
    pub watermark: u64,
}

impl Store {
    /// One read of the log for a reader at `after`: up to `limit` changes in
    /// `(after, until]` below the watermark, with the floor and watermark of the same
    /// snapshot (one statement, so the three agree), on one pooled connection: the page, then, when the page is full, the rest of its last transaction
    /// so a transaction is never split across reads. Nothing more is read when the floor
    /// is past `after`: the reader must resync and the rows are moot.
    pub async fn read_changes(
        &self,
        after: (u64, i64),
        until: (u64, i64),
        limit: i64,
    ) -> Result<Page, StoreError> {
        let client = self.client().await?;
        let mut page = read_page(&client, after, until, limit).await?;
        if page.floor > after {
            return Ok(page);
        }
        page.full = page.rows.len() as i64 >= limit;
        if page.full {
            if let Some(last) = page.rows.last() {
                let (xid, mut last_id) = (last.xid, last.id);
                loop {
                    let more = read_rest_of_transaction(&client, xid, last_id, limit).await?;
                    let n = more.len() as i64;
                    if let Some(l) = more.last() {
                        last_id = l.id;
                    }
                    page.rows.extend(more);
                    if n < limit {
                        break;
                    }
                }
            }
        }
        Ok(page)
    }

    /// Start the live tail: apply the doorbell setting `doorbell_on` in a transaction of its
    /// own (see [`set_doorbell`]), then read the watermark, on one connection.
    pub async fn start_tail(&self, doorbell_on: bool) -> Result<TailStart, StoreError> {
        let mut client = self.client().await?;
        let doorbell = async {
            let tx = client.transaction().await?;
            set_doorbell(&tx, doorbell_on).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        let watermark = cursors::snapshot_xmin(&**client).await?;
        Ok(TailStart {
            doorbell,
            watermark,
        })
    }

    /// The retention floor.
    pub async fn change_floor(&self) -> Result<(u64, i64), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("select xid::text, id from rowcast.change_floor", &[])
            .await?;
        Ok((parse_xid(&row.try_get::<_, String>(0)?)?, row.try_get(1)?))
    }

    /// The change log's approximate row count (planner statistics, so it costs no scan) and
    /// the id of the retention floor.
    pub async fn change_log_size(&self) -> Result<(i64, i64), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "select greatest(c.reltuples, 0)::int8, f.id
                 from pg_class c, rowcast.change_floor f
                 where c.oid = 'rowcast.change_log'::regclass",
                &[],
            )
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Delete up to `batch` of the oldest changes (in log order, below the watermark) that
    /// are older than `max_age` or beyond the newest `max_changes`, and raise the floor to
    /// the largest position deleted, in one statement (one short transaction; writers never
    /// wait on it: it touches only rows no writer will touch again).
    ///
    /// Count-based pruning never goes past `cap` (this instance's live position) nor past
    /// any other live reader registered in `rowcast.live_readers` within the last
    /// `reader_ttl` (`instance` is this one's registration, superseded by `cap`): a prune
    /// must not overtake a connected instance's live tail (age-based retention may, after
    /// the retention period: a reader that far behind resyncs by design).
    pub async fn prune_changes(
        &self,
        max_age: Option<Duration>,
        max_changes: Option<u64>,
        batch: i64,
        cap: (u64, i64),
        reader_ttl: Duration,
        instance: uuid::Uuid,
    ) -> Result<Pruned, StoreError> {
        let secs = max_age.map(|d| d.as_secs_f64());
        let keep = max_changes.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let client = self.client().await?;
        let row = client
            .query_one(
                "with head as (
                     select xid, id, created_at from rowcast.change_log
                     where xid < pg_snapshot_xmin(pg_current_snapshot())
                     order by xid, id limit $1
                 ), victims as (
                     select xid, id from head
                     where ($2::float8 is not null and created_at < now() - make_interval(secs => $2::float8))
                        or ($3::int8 is not null and id <= (select last_value from rowcast.change_log_id_seq) - $3::int8
                            and (xid, id) <= ($4::text::xid8, $5::int8)
                            and not exists (
                                select 1 from rowcast.live_readers r
                                where r.seen_at > now() - make_interval(secs => $6::float8)
                                  and r.instance <> $7
                                  and (r.xid, r.id) < (head.xid, head.id)))
                 ), gone as (
                     delete from rowcast.change_log l using victims v
                     where l.xid = v.xid and l.id = v.id
                     returning l.xid, l.id
                 ), top as (
                     select xid, id from gone order by xid desc, id desc limit 1
                 ), raised as (
                     update rowcast.change_floor f set xid = top.xid, id = top.id
                     from top where (top.xid, top.id) > (f.xid, f.id)
                     returning 1
                 )
                 select (select count(*) from gone), (select count(*) from raised)",
                &[
                    &batch,
                    &secs,
                    &keep,
                    &cap.0.to_string(),
                    &cap.1,
                    &reader_ttl.as_secs_f64(),
                    &instance,
                ],
            )
            .await?;
        let deleted: i64 = row.try_get(0)?;
        Ok(Pruned {
            deleted: deleted.max(0) as u64,
        })
    }

    /// Record how far instance `instance`'s live tail has read (see
    /// [`Store::prune_changes`]).
    pub async fn register_reader(
        &self,
        instance: uuid::Uuid,
        position: (u64, i64),
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "insert into rowcast.live_readers (instance, xid, id, seen_at)
                 values ($1, $2::text::xid8, $3, now())
                 on conflict (instance) do update
                 set xid = excluded.xid, id = excluded.id, seen_at = excluded.seen_at",
                &[&instance, &position.0.to_string(), &position.1],
            )
            .await?;
        Ok(())
    }

    /// Remove instance `instance`'s registration (on shutdown), and any not seen for `ttl`.
    pub async fn unregister_reader(
        &self,
        instance: uuid::Uuid,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "delete from rowcast.live_readers
                 where instance = $1 or seen_at < now() - make_interval(secs => $2::float8)",
                &[&instance, &ttl.as_secs_f64()],
            )
            .await?;
        Ok(())
    }

    /// `rowcast.check_synced()`: log an S event for each synced table whose shape or
    /// capture state changed without the event trigger seeing it, and return them.
    /// Read-only (takes no row lock, so no xid) when nothing changed, which is the normal
    /// case.
    pub async fn check_synced(&self) -> Result<Vec<SyncEvent>, StoreError> {
        let client = self.client().await?;
        let changed: bool = client
            .query_one(
                "select exists (select 1 from rowcast.synced y
                                where exists (select 1 from pg_class c where c.oid = y.rel)
                                  and (y.shape is distinct from rowcast.table_shape(y.rel)
                                       or y.status is distinct from rowcast.capture_status(y.rel)))",
                &[],
            )
            .await?
            .try_get(0)?;
        if !changed {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                "select table_schema, table_name, event, status from rowcast.check_synced()",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SyncEvent {
                    schema: r.try_get(0)?,
                    name: r.try_get(1)?,
                    event: r.try_get(2)?,
                    status: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// How many synced tables capture does not fully work on (status other than `ok`).
    pub async fn broken_synced(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "select count(*) from rowcast.synced_tables() where status <> 'ok'",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Why delivery may be behind (see [`LagProbe`]).
    pub async fn lag_probe(&self) -> Result<LagProbe, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "select
                     (select extract(epoch from clock_timestamp() - min(created_at))::float8
                      from rowcast.change_log
                      where xid >= pg_snapshot_xmin(pg_current_snapshot())),
                     b.pid,
                     extract(epoch from clock_timestamp() - b.xact_start)::float8,
                     b.datname::text
                 from (select 1) one
                 left join lateral (
                     select pid, xact_start, datname from pg_stat_activity
                     where backend_xid is not null
                     order by age(backend_xid) desc limit 1
                 ) b on true",
                &[],
            )
            .await?;
        let secs = |v: Option<f64>| v.map(|s| Duration::from_secs_f64(s.max(0.0)));
        Ok(LagProbe {
            held_age: secs(row.try_get(0)?),
            oldest_xid_pid: row.try_get(1)?,
            oldest_xid_age: secs(row.try_get(2)?),
            oldest_xid_database: row.try_get(3)?,
        })
    }

    /// `rowcast.enable_sync(table)`. `table` is an identifier as an admin typed it
    /// (`todos`, `public.todos`, `"My Table"`); Postgres resolves it against the catalog.
    pub async fn enable_sync(&self, table: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("select rowcast.enable_sync($1::text::regclass)", &[&table])
            .await?;
        Ok(())
    }

    /// `rowcast.disable_sync(table)`.
    pub async fn disable_sync(&self, table: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("select rowcast.disable_sync($1::text::regclass)", &[&table])
            .await?;
        Ok(())
    }

    /// `rowcast.synced_tables()`.
    pub async fn synced_tables(&self) -> Result<Vec<SyncedTableRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "select table_schema, table_name, primary_key, enabled_at, status from rowcast.synced_tables()",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SyncedTableRow {
                    schema: r.try_get(0)?,
                    name: r.try_get(1)?,
                    primary_key: r.try_get(2)?,
                    enabled_at: r.try_get(3)?,
                    status: r.try_get(4)?,
                })
            })
            .collect()
    }
}

/// What one pruning round did.
#[derive(Debug, Clone, Copy)]
pub struct Pruned {
    pub deleted: u64,
}

/// A synced table whose shape or capture state changed since it was last checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEvent {
    pub schema: String,
    pub name: String,
    /// `column-added`, `column-dropped`, `column-changed`, `primary-key-changed`,
    /// `table-renamed`, `capture-stopped`, `capture-resumed`.
    pub event: String,
    /// `ok` or why capture does not work (see `rowcast.capture_status`).
    pub status: String,
}

/// Why delivery may be behind: the age of the oldest committed change still held back by the
/// watermark, and the backend holding the oldest transaction id in the cluster.
#[derive(Debug, Clone)]
pub struct LagProbe {
    pub held_age: Option<Duration>,
    pub oldest_xid_pid: Option<i32>,
    pub oldest_xid_age: Option<Duration>,
    pub oldest_xid_database: Option<String>,
}

/// A synced table as `rowcast.synced_tables()` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedTableRow {
    pub schema: String,
    pub name: String,
    pub primary_key: Vec<String>,
    pub enabled_at: DateTime<Utc>,
    /// `ok`, or why capture does not work on the table (see `rowcast.capture_status`).
    pub status: String,
}

/// Turn the NOTIFY doorbell trigger on or off. Only alters the table when the state
/// differs, so a normal start takes no lock on the log. Call it in a transaction: the
/// ALTER gives up after 2 s (`lock_timeout`) rather than queue every writer behind it while
/// a long transaction holds the log.
async fn set_doorbell(tx: &tokio_postgres::Transaction<'_>, on: bool) -> Result<(), StoreError> {
    let client = tx;
    let row = client
        .query_one(
            "select tgenabled::text from pg_trigger
             where tgrelid = 'rowcast.change_log'::regclass and tgname = 'rowcast_doorbell'",
            &[],
        )
        .await?;
    let state: String = row.try_get(0)?;
    let is_on = state == "A";
    if is_on != on {
        let sql = if on {
            "alter table rowcast.change_log enable always trigger rowcast_doorbell"
        } else {
            "alter table rowcast.change_log disable trigger rowcast_doorbell"
        };
        client
            .batch_execute("set local lock_timeout = '2s'")
            .await?;
        client.batch_execute(sql).await?;
    }
    Ok(())
}
