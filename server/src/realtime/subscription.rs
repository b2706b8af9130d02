//! One subscription's start: validate it against the catalog and the identity's access,
//! then either snapshot (rows visible to the identity, then `snapshot-end` with the
//! snapshot's cursor) or take the client's cursor, catch up from the log to the router's
//! position, and switch to live with no gap: every transaction after the snapshot/cursor
//! comes exactly once from catch-up or from the router (see `router::GoLive`).

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    Arc,
};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    evaluate::{evaluate, ItemCache, Outcome, Rel, SqlAnswers},
    feed::{Change, Cursor, TableName},
    filter::{compile_filter, pushdown},
    router::{ConnId, GoLive, Outbound},
    Realtime, SourceError, SubPlan, SNAPSHOT_CHUNK_ROWS,
};
use crate::{
    auth::Identity,
    capture::{LogId, WireCursor},
    policy::{compile::Visibility, Pred},
    protocol::{
        realtime::{changes::EncodedId, ChangeItem, ChangeOp, ServerMessage},
        ApiError, ErrorCode,
    },
    realtime::catalog::{TableCatalog, VERSION_COLUMN},
    store::{realtime::SnapshotError, SessionIdentity},
};

/// What the client asked for.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub id: String,
    pub table: String,
    pub filter: Option<Value>,
    pub columns: Option<Vec<String>>,
    pub cursor: Option<String>,
}

/// The session's view of a running subscription.
#[derive(Debug, Clone)]
pub(super) struct Handle {
    /// The router key once registered (0 before).
    pub key: Arc<AtomicU64>,
    /// Set when the subscription ended before going live (error or resync).
    pub ended: Arc<AtomicBool>,
    pub cancel: CancellationToken,
}

/// Where the task sends frames.
#[derive(Debug, Clone)]
pub(super) struct Outlet {
    pub conn: ConnId,
    pub tx: mpsc::Sender<Outbound>,
    /// Snapshot/catch-up frames may occupy at most this many queue slots.
    pub bulk: Arc<Semaphore>,
    pub lagging: CancellationToken,
}

impl Outlet {
    /// Queue a snapshot/catch-up frame, waiting for a bulk slot. `false` if the connection
    /// is gone or the subscription was cancelled.
    async fn send_bulk(&self, frame: Bytes, cancel: &CancellationToken) -> bool {
        let permit = tokio::select! {
            p = self.bulk.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return false },
            _ = cancel.cancelled() => return false,
            _ = self.lagging.cancelled() => return false,
        };
        match self.tx.try_send(Outbound {
            frame,
            permit: Some(permit),
        }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagging.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn send_now(&self, msg: &ServerMessage) {
        if self
            .tx
            .try_send(Outbound::live(Bytes::from(msg.to_json())))
            .is_err()
        {
            self.lagging.cancel();
        }
    }
}

/// Start a subscription task on the realtime task tracker.
pub(super) fn spawn(
    rt: Arc<Realtime>,
    outlet: Outlet,
    identity: Arc<Identity>,
    req: Request,
) -> Handle {
    let handle = Handle {
        key: Arc::new(AtomicU64::new(0)),
        ended: Arc::new(AtomicBool::new(false)),
        cancel: CancellationToken::new(),
    };
    let h = handle.clone();
    let tasks = rt.tasks.clone();
    tasks.spawn(async move {
        let id = req.id.clone();
        let shutdown = rt.shutdown.clone();
        let result = tokio::select! {
            r = run(&rt, &outlet, identity, req, &h) => r,
            _ = h.cancel.cancelled() => Ok(()),
            _ = shutdown.cancelled() => Ok(()),
        };
        if let Err(end) = result {
            h.ended.store(true, Relaxed);
            let key = h.key.load(Relaxed);
            if key != 0 {
                rt.router.unregister(key);
            }
            let msg = match end {
                End::Error(e) => {
                    rt.stats.errors.fetch_add(1, Relaxed);
                    ServerMessage::Error {
                        id: Some(id),
                        error: e,
                    }
                }
                End::Resync(reason) => {
                    rt.stats.resyncs.fetch_add(1, Relaxed);
                    ServerMessage::ResyncRequired { id, reason }
                }
                End::Gone => return,
            };
            outlet.send_now(&msg);
        } else if h.cancel.is_cancelled() || rt.shutdown.is_cancelled() {
            let key = h.key.load(Relaxed);
            if key != 0 {
                rt.router.unregister(key);
            }
        }
    });
    handle
}

enum End {
    Error(ApiError),
    Resync(String),
    Gone,
}

impl From<ApiError> for End {
    fn from(e: ApiError) -> Self {
        End::Error(e)
    }
}

fn not_found(what: String) -> End {
    End::Error(ApiError::new(ErrorCode::NotFound, what))
}

fn forbidden(what: String) -> End {
    End::Error(ApiError::new(ErrorCode::Forbidden, what))
}

/// The columns a predicate reads.
fn pred_columns(p: &Pred, out: &mut Vec<String>) {
    match p {
        Pred::Const(_) | Pred::Exists(_) => {}
        Pred::Cmp { column, .. } | Pred::In { column, .. } | Pred::Is { column, .. } => {
            if !out.contains(column) {
                out.push(column.clone());
            }
        }
        Pred::And(ps) | Pred::Or(ps) => ps.iter().for_each(|p| pred_columns(p, out)),
    }
}

/// A subscription's start, step by step: everything is validated before any data is read.
async fn run(
    rt: &Arc<Realtime>,
    outlet: &Outlet,
    identity: Arc<Identity>,
    req: Request,
    handle: &Handle,
) -> Result<(), End> {
    let table = resolve_table(rt, &req.table)?;
    // Held through snapshot and catch-up (released before going live).
    let _reading = rt
        .reads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| End::Gone)?;
    let catalog = load_catalog(rt, &table).await?;
    let visibility = check_access(&catalog, &identity, &table.shown)?;
    let filter = compile_filter(req.filter.as_ref(), &catalog)?;
    let columns = check_columns(&catalog, &identity, &filter, &req.columns, &table)?;
    let cursor = parse_cursor(req.cursor.as_deref())?;
    let log = rt.log_id().await.map_err(ApiError::from)?;
    let start = match cursor {
        Some(wire) => Some(place(rt, log, wire).await?),
        None => None,
    };
    let plan = Arc::new(SubPlan {
        id: req.id.clone(),
        encoded_id: EncodedId::new(&req.id),
        table: table.name,
        catalog,
        filter,
        visibility,
        identity,
        columns: columns.sent,
        log,
    });
    track_referenced_tables(rt, &plan).await?;
    let from = match start {
        Some(c) => c,
        None => send_snapshot(rt, outlet, &plan, &columns.needed, handle).await?,
    };
    register_and_go_live(rt, outlet, &plan, from, handle).await
}

/// The subscribed table as the client named it, resolved against the exposed schemas.
struct Target {
    name: TableName,
    /// The client's name, shortened for messages.
    shown: String,
}

fn resolve_table(rt: &Realtime, table: &str) -> Result<Target, End> {
    let (schema, name) = match table.split_once('.') {
        Some((s, n)) => (s.to_string(), n.to_string()),
        None => (rt.default_schema().to_string(), table.to_string()),
    };
    if schema.is_empty() || name.is_empty() || table.len() > 128 {
        return Err(not_found("no such table".into()));
    }
    let shown: String = table.chars().take(64).collect();
    // Outside the exposed schemas every name is unknown, whether or not it exists
    // (`pg_catalog.pg_authid` answers like a made-up name): the catalog is not probed.
    if !rt.settings.schemas.contains(&schema) {
        return Err(not_found(format!("no table `{shown}`")));
    }
    Ok(Target {
        name: TableName { schema, name },
        shown,
    })
}

async fn load_catalog(rt: &Realtime, table: &Target) -> Result<Arc<TableCatalog>, End> {
    rt.catalog(&table.name.schema, &table.name.name)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| not_found(format!("no table `{}`", table.shown)))
}

/// The identity's visibility rule for the table, once it is known that the role may read
/// it, that it is synced, and that the row version is readable.
fn check_access(
    catalog: &TableCatalog,
    identity: &Identity,
    shown: &str,
) -> Result<Visibility, End> {
    let role = identity.role;
    let visibility = catalog
        .access(role)
        .visibility(identity)
        .ok_or_else(|| forbidden(format!("the {} role may not read `{shown}`", role.claim())))?;
    if !catalog.synced {
        return Err(End::Error(
            ApiError::new(ErrorCode::BadRequest, format!("`{shown}` is not synced"))
                .with_hint("an admin enables it with: select rowcast.enable_sync('schema.table')"),
        ));
    }
    // Every snapshot row carries its version; without SELECT on it Postgres would only say
    // "permission denied", so say what is missing and how to grant it.
    if catalog.column(VERSION_COLUMN).is_some() && !catalog.can_select(role, VERSION_COLUMN) {
        return Err(End::Error(
            ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "the {} role may not read column `{VERSION_COLUMN}` of `{shown}`, which realtime needs (the row version)",
                    role.claim()
                ),
            )
            .with_hint(format!(
                "an admin grants it with: grant select ({VERSION_COLUMN}) on {} to {}",
                catalog.qualified(),
                role.pg_role()
            )),
        ));
    }
    Ok(visibility)
}

/// The columns a subscription sends and reads.
struct Columns {
    /// The columns to send (`None`: all).
    sent: Option<Arc<[String]>>,
    /// Every column it reads: key, filter, requested.
    needed: Vec<String>,
}

/// The subscription's [`Columns`], each checked against the role's column grants.
fn check_columns(
    catalog: &TableCatalog,
    identity: &Identity,
    filter: &Pred,
    requested: &Option<Vec<String>>,
    table: &Target,
) -> Result<Columns, End> {
    let role = identity.role;
    let shown = &table.shown;
    let mut needed: Vec<String> = catalog.primary_key.clone();
    pred_columns(filter, &mut needed);
    let columns: Option<Arc<[String]>> = match requested {
        None => {
            for c in &catalog.columns {
                if !catalog.can_select(role, &c.name) {
                    return Err(forbidden(format!(
                        "the {} role may not read every column of `{shown}`; list the columns you need",
                        role.claim()
                    )));
                }
            }
            None
        }
        Some(list) => {
            if list.is_empty() || list.len() > catalog.columns.len() {
                return Err(End::Error(ApiError::new(
                    ErrorCode::InvalidField,
                    "`columns` must list between one and all of the table's columns",
                )));
            }
            for c in list {
                if catalog.column(c).is_none() {
                    let c: String = c.chars().take(64).collect();
                    return Err(not_found(format!("no column `{c}` in `{shown}`")));
                }
                if !needed.contains(c) {
                    needed.push(c.clone());
                }
            }
            Some(list.clone().into())
        }
    };
    for c in &needed {
        if !catalog.can_select(role, c) {
            return Err(forbidden(format!(
                "the {} role may not read column `{c}` of `{shown}`",
                role.claim()
            )));
        }
    }
    Ok(Columns {
        sent: columns,
        needed,
    })
}

/// The client's cursor, if it sent one and it is one this server's format issued.
fn parse_cursor(cursor: Option<&str>) -> Result<Option<WireCursor>, End> {
    let Some(c) = cursor else {
        return Ok(None);
    };
    c.parse::<WireCursor>().map(Some).map_err(|_| {
        End::Error(
            ApiError::new(
                ErrorCode::InvalidField,
                "`cursor` is not a cursor this server issued",
            )
            .with_hint("omit the cursor to start from a snapshot"),
        )
    })
}

/// Relational policies: the membership index must hold the tables they read before the
/// router evaluates anything for this subscription.
async fn track_referenced_tables(rt: &Realtime, plan: &SubPlan) -> Result<(), End> {
    if matches!(&plan.visibility, Visibility::Fast(p) if p.is_relational()) {
        // Loaded at the router's position, so the router must be following the tail.
        rt.router.wait_ready().await;
        rt.router
            .track(&plan.catalog.refs)
            .await
            .map_err(|e| End::Error(e.into()))?;
    }
    Ok(())
}

/// Send the rows the subscription sees now, then `snapshot-end`; returns the snapshot's
/// cursor (changes after it follow).
async fn send_snapshot(
    rt: &Realtime,
    outlet: &Outlet,
    plan: &SubPlan,
    needed: &[String],
    handle: &Handle,
) -> Result<Cursor, End> {
    let catalog = &plan.catalog;
    let mut select_cols: Vec<String> = match &plan.columns {
        None => catalog.columns.iter().map(|c| c.name.clone()).collect(),
        Some(_) => needed.to_vec(),
    };
    // The version orders the snapshot's rows against the live changes after it.
    if catalog.column(VERSION_COLUMN).is_some() && !select_cols.iter().any(|c| c == VERSION_COLUMN)
    {
        select_cols.push(VERSION_COLUMN.to_string());
    }
    let pushed = pushdown(&plan.filter, catalog);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Vec<Value>>(1);
    let session_identity = SessionIdentity::from(&*plan.identity);
    let read = rt.store.snapshot(
        &session_identity,
        catalog.table(),
        &select_cols,
        &pushed,
        SNAPSHOT_CHUNK_ROWS,
        chunk_tx,
    );
    let forward = forward_snapshot(rt, outlet, plan, chunk_rx, handle);
    let (read, forwarded) = tokio::join!(read, forward);
    forwarded?;
    let cursor = read.map(Cursor::before_xid).map_err(|e| match e {
        SnapshotError::Store(e) => End::Error(e.into()),
        SnapshotError::Stopped => End::Gone,
    })?;
    let end = ServerMessage::SnapshotEnd {
        id: plan.id.clone(),
        cursor: plan.log.wire(cursor).to_string(),
    };
    if !outlet
        .send_bulk(Bytes::from(end.to_json()), &handle.cancel)
        .await
    {
        return Err(End::Gone);
    }
    Ok(cursor)
}

/// Send the snapshot's chunks as `snapshot` frames, as they are read, up to the row limit.
/// Returning early drops `chunks`, which stops the read.
async fn forward_snapshot(
    rt: &Realtime,
    outlet: &Outlet,
    plan: &SubPlan,
    mut chunks: mpsc::Receiver<Vec<Value>>,
    handle: &Handle,
) -> Result<(), End> {
    let max_rows = rt.settings.snapshot_max_rows;
    let mut sent = 0usize;
    while let Some(rows) = chunks.recv().await {
        let items = snapshot_items(plan, rows);
        if items.is_empty() {
            continue;
        }
        sent += items.len();
        if sent > max_rows {
            return Err(End::Error(
                ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!("the snapshot has more than {max_rows} rows"),
                )
                .with_hint("narrow the filter"),
            ));
        }
        rt.stats
            .snapshot_rows
            .fetch_add(items.len() as u64, Relaxed);
        let msg = ServerMessage::Snapshot {
            id: plan.id.clone(),
            rows: items,
        };
        if !outlet
            .send_bulk(Bytes::from(msg.to_json()), &handle.cancel)
            .await
        {
            return Err(End::Gone);
        }
    }
    Ok(())
}

/// Register with the router (everything after its position reaches us through it), catch
/// up from `from` to that position, and switch to live; again from where catch-up ended
/// if the router's buffer overflowed meanwhile.
async fn register_and_go_live(
    rt: &Arc<Realtime>,
    outlet: &Outlet,
    plan: &Arc<SubPlan>,
    mut from: Cursor,
    handle: &Handle,
) -> Result<(), End> {
    rt.router.wait_ready().await;
    let (key, mut until) = rt
        .router
        .register(outlet.conn, plan.clone())
        .ok_or(End::Gone)?;
    handle.key.store(key, Relaxed);
    if handle.cancel.is_cancelled() {
        rt.router.unregister(key);
        return Ok(());
    }
    loop {
        if from < until {
            catch_up(rt, outlet, plan, from, until, &handle.cancel).await?;
        }
        let covered = from.max(until);
        let marker = ServerMessage::Live {
            id: plan.id.clone(),
            cursor: plan.log.wire(covered).to_string(),
        };
        match rt
            .router
            .go_live(key, covered, Bytes::from(marker.to_json()))
        {
            GoLive::Done => return Ok(()),
            GoLive::Gone => return Err(End::Gone),
            GoLive::Retry { until: next } => {
                from = covered;
                until = next;
            }
        }
    }
}

/// Where a client's cursor is in this database's log, or `resync-required` when it cannot
/// be placed (another database's, ahead of the log, or a position the log never had).
/// "Ahead" is judged against the database's watermark, not this instance's tail: a cursor
/// another, faster instance issued is placed, and the router's `Live` floor holds back what
/// it already covers until this instance's tail passes it.
async fn place(rt: &Realtime, log: LogId, wire: WireCursor) -> Result<Cursor, End> {
    let at = wire.at;
    let p = rt
        .store
        .place_cursor(at.xid(), at.id())
        .await
        .map_err(|e| End::Error(e.into()))?;
    wire.place(
        log,
        p.watermark_xid,
        Cursor::new(p.floor.0, p.floor.1),
        p.exists,
    )
    .map_err(|why| End::Resync(why.to_string()))
}

/// Send every change in `(from, until]` that the subscription sees.
async fn catch_up(
    rt: &Realtime,
    outlet: &Outlet,
    plan: &Arc<SubPlan>,
    from: Cursor,
    until: Cursor,
    cancel: &CancellationToken,
) -> Result<(), End> {
    let mut stream = rt.source.changes_between(from, until);
    while let Some(batch) = stream.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(SourceError::ResyncRequired) => {
                return Err(End::Resync("cursor older than retained history".into()))
            }
            Err(SourceError::Failed(e)) => return Err(End::Error(e)),
        };
        let routes = match &plan.visibility {
            Visibility::Fast(p) => super::relation::routes(p),
            Visibility::Sql(_) => Vec::new(),
        };
        let sql_reads = super::router::sql_reads(plan);
        if batch.changes.iter().any(|c| {
            super::relation::concerns(&routes, c)
                || sql_reads
                    .iter()
                    .any(|(s, n)| c.table.schema == *s && c.table.name == *n)
        }) {
            // The index is at the router's position, not this transaction's: what moved in
            // or out here cannot be replayed exactly, so the client starts over.
            return Err(End::Resync("membership changed".into()));
        }
        let changes: Vec<&Change> = batch
            .changes
            .iter()
            .filter(|c| c.table == plan.table)
            .collect();
        if changes.is_empty() {
            continue;
        }
        let answers = if matches!(plan.visibility, Visibility::Sql(_)) {
            rt.stats.sql_checks.fetch_add(1, Relaxed);
            SqlAnswers::fetch(&rt.store, &plan.catalog, &changes, &[plan])
                .await
                .map_err(|e| End::Error(e.into()))?
        } else {
            SqlAnswers::default()
        };
        let counter = match plan.visibility {
            Visibility::Fast(_) => &rt.stats.fast_evaluations,
            Visibility::Sql(_) => &rt.stats.fallback_evaluations,
        };
        counter.fetch_add(changes.len() as u64, Relaxed);
        let relations = rt.router.relations().await;
        let rel = Rel {
            before: &*relations,
            after: &*relations,
        };
        let outcome = evaluate(
            plan,
            &changes,
            &answers,
            &rel,
            batch.cursor(),
            &mut ItemCache::default(),
        );
        drop(relations);
        match outcome {
            Outcome::Nothing => {}
            Outcome::Resync(reason) => return Err(End::Resync(reason.into())),
            Outcome::Frame(f, n) => {
                if !outlet.send_bulk(f, cancel).await {
                    return Err(End::Gone);
                }
                rt.stats.catch_up_changes.fetch_add(n as u64, Relaxed);
            }
        }
    }
    Ok(())
}

/// Snapshot rows as items: filtered (the pushdown covers only part of the filter),
/// keyed and versioned, projected to the requested columns.
fn snapshot_items(plan: &SubPlan, rows: Vec<Value>) -> Vec<ChangeItem> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Value::Object(row) = row else { continue };
        if !plan.filter.eval(&row) {
            continue;
        }
        let pk: Map<String, Value> = plan
            .catalog
            .primary_key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        let v = row.get(VERSION_COLUMN).and_then(Value::as_i64).unwrap_or(0);
        let row = match &plan.columns {
            None => row,
            Some(cols) => cols
                .iter()
                .map(|c| (c.clone(), row.get(c).cloned().unwrap_or(Value::Null)))
                .collect(),
        };
        out.push(ChangeItem {
            op: ChangeOp::Insert,
            pk: Value::Object(pk),
            v,
            row: Some(Value::Object(row)),
        });
    }
    out
}
