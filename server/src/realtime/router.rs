//! The router: the registry of connections and subscriptions, the per-table equality index
//! that finds the subscriptions a change can concern, and delivery of pre-serialized frames
//! into each connection's bounded queue without ever waiting on a client.
//!
//! One task calls [`Router::dispatch`] for each transaction of the live tail, in log order.
//! A subscription is first *buffering* (while its snapshot or catch-up runs, live frames are
//! held, bounded) and then *live*; [`Router::go_live`] switches it atomically with respect to
//! dispatch, which is what makes the hand-off gapless.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
};

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::{
    evaluate::{evaluate_items, move_items, pk_text, ItemCache, Rel, SqlAnswers},
    feed::{Change, ChangeBatch, Cursor, TableName},
    relation::{self, Before, Prior, Relations, Route, TableKey},
    rows::{LinkValues, RowSource, RowsAt},
    RealtimeStats, SubPlan,
};
use crate::{
    policy::{compile::Visibility, ColumnKind, Pred},
    protocol::realtime::{
        changes::{changes_frame, EncodedItem},
        ServerMessage,
    },
    realtime::catalog::RefTable,
};

pub type ConnId = u64;
pub type SubKey = u64;

/// A subscription's items from one transaction, or why it must resync.
type ItemsOr = Result<Vec<EncodedItem>, &'static str>;

/// The subscriptions one table's changes may concern (index into the batch's tables).
type Candidates = Vec<(usize, Vec<(SubKey, Arc<SubPlan>)>)>;

/// A frame on its way to one client. Snapshot and catch-up frames hold a permit so that
/// they can fill at most half of the queue: live frames always find room in a healthy
/// connection.
#[derive(Debug)]
pub struct Outbound {
    pub frame: Bytes,
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Outbound {
    pub fn live(frame: Bytes) -> Outbound {
        Outbound {
            frame,
            permit: None,
        }
    }
}

/// The router's handle on a connection.
struct Conn {
    tx: mpsc::Sender<Outbound>,
    /// Cancelled when the connection's queue overflowed: the session closes with "lagging".
    lagging: CancellationToken,
    subs: HashSet<SubKey>,
}

enum State {
    Buffering {
        frames: Vec<(Cursor, Bytes, u64)>,
        overflowed: bool,
    },
    Live {
        /// Transactions at or before this were covered by snapshot/catch-up.
        floor: Cursor,
    },
}

/// Where a subscription is filed in its table's index.
enum Filed {
    /// Under `column = value` (every visible row has it).
    Eq(String, String),
    /// Under the identity value a relational route reaches (every visible row reaches it).
    Rel(Route, String),
    /// On the scan list.
    Scan,
}

struct Sub {
    conn: ConnId,
    plan: Arc<SubPlan>,
    state: State,
    filed: Filed,
    /// The relational routes whose referenced rows can move rows in or out of it.
    moves: Vec<relation::RouteKey>,
}

#[derive(Default)]
struct TableSubs {
    by_eq: HashMap<(String, String), HashSet<SubKey>>,
    /// Indexed columns with their kind and how many subscriptions use them.
    eq_columns: HashMap<String, (ColumnKind, usize)>,
    /// Relational routes → identity value → subscriptions.
    by_rel: HashMap<Route, HashMap<String, HashSet<SubKey>>>,
    scan: HashSet<SubKey>,
}

impl TableSubs {
    fn is_empty(&self) -> bool {
        self.by_eq.is_empty() && self.scan.is_empty() && self.by_rel.is_empty()
    }
}

#[derive(Default)]
struct Registry {
    conns: HashMap<ConnId, Conn>,
    subs: HashMap<SubKey, Sub>,
    tables: HashMap<TableName, TableSubs>,
    /// Relational routes → identity value (`None`: routes without one) → subscriptions
    /// whose rows a change to the route's tables may move in or out.
    movers: HashMap<Route, HashMap<Option<String>, HashSet<SubKey>>>,
    /// Tables read by sub-selects of policies checked in SQL → those subscriptions: a change
    /// there may change what they see without any change to their own table, so it makes
    /// them start over (`resync-required`).
    sql_reads: HashMap<TableKey, HashSet<SubKey>>,
    /// The last transaction whose candidates have been collected (see `register`).
    position: Cursor,
}

/// What [`Router::go_live`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum GoLive {
    /// The subscription is live.
    Done,
    /// Its buffer overflowed: catch up again from the previous position to `until`, then
    /// call `go_live` again.
    Retry { until: Cursor },
    /// The subscription or its connection is gone.
    Gone,
}

pub struct Router {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    stats: Arc<RealtimeStats>,
    /// Table rows as of a position, and SQL visibility checks.
    rows: Arc<dyn RowSource>,
    /// Frames a buffering subscription may hold before it falls back to the log.
    buffer_limit: usize,
    ready: tokio::sync::watch::Sender<bool>,
    /// The membership index, at the router's position. Dispatch holds it for writing
    /// across a whole transaction; catch-up reads it.
    relations: tokio::sync::RwLock<Relations>,
    /// Referenced tables some subscription needs (loaded on first use).
    wanted: Mutex<HashMap<TableKey, RefTable>>,
    /// Set when the position jumped without dispatch (history pruned): the index is
    /// rebuilt before the next transaction.
    stale: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(rows: Arc<dyn RowSource>, stats: Arc<RealtimeStats>, buffer_limit: usize) -> Router {
        Router {
            registry: Mutex::new(Registry::default()),
            next_id: AtomicU64::new(1),
            stats,
            rows,
            buffer_limit: buffer_limit.max(1),
            ready: tokio::sync::watch::Sender::new(false),
            relations: tokio::sync::RwLock::new(Relations::default()),
            wanted: Mutex::new(HashMap::new()),
            stale: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The membership index, for catch-up (at the router's position, not the batch's).
    pub async fn relations(&self) -> tokio::sync::RwLockReadGuard<'_, Relations> {
        self.relations.read().await
    }

    /// Make sure the membership index holds `tables` (loading each at the router's
    /// position, which cannot move meanwhile: dispatch needs the same lock).
    pub async fn track(&self, tables: &[RefTable]) -> Result<(), crate::store::StoreError> {
        if tables.is_empty() {
            return Ok(());
        }
        {
            let mut w = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
            for t in tables {
                w.insert(t.key(), t.clone());
            }
        }
        let mut rel = self.relations.write().await;
        self.load_missing(&mut rel).await
    }

    async fn load_missing(&self, rel: &mut Relations) -> Result<(), crate::store::StoreError> {
        if self.stale.swap(false, Relaxed) {
            rel.clear();
        }
        let wanted: Vec<RefTable> = {
            let w = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
            w.values().filter(|t| !rel.has(&t.key())).cloned().collect()
        };
        let position = self.position();
        for t in wanted {
            let rows = self
                .rows
                .rows_at(RowsAt {
                    schema: &t.schema,
                    name: &t.name,
                    primary_key: &t.primary_key,
                    at: position,
                    only: None,
                })
                .await
                .map_err(|e| match e {
                    crate::store::realtime::RowsAtError::Store(e) => e,
                    crate::store::realtime::RowsAtError::Truncated => {
                        crate::store::StoreError::Config("truncated while loading".into())
                    }
                })?;
            tracing::info!(
                table = %format!("{}.{}", t.schema, t.name),
                rows = rows.len(),
                "membership index: loaded a table relational policies read"
            );
            rel.load(t, rows);
        }
        self.stats
            .relation_rows
            .store(rel.row_count() as u64, Relaxed);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // breaks memory safety; keep serving.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// Start routing to a connection.
    pub fn add_connection(
        &self,
        id: ConnId,
        tx: mpsc::Sender<Outbound>,
        lagging: CancellationToken,
    ) {
        self.lock().conns.insert(
            id,
            Conn {
                tx,
                lagging,
                subs: HashSet::new(),
            },
        );
    }

    /// Forget a connection and all its subscriptions.
    pub fn remove_connection(&self, id: ConnId) {
        let mut reg = self.lock();
        remove_conn(&mut reg, id, &self.stats);
    }

    /// Set the starting position of the live tail (its first subscription).
    pub fn set_position(&self, position: Cursor) {
        self.lock().position = position;
    }

    /// Move the position forward (never back) after a replay or a resync.
    pub fn advance_to(&self, position: Cursor) {
        let mut reg = self.lock();
        reg.position = reg.position.max(position);
    }

    /// The router follows the live tail: subscriptions may register.
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Wait until the router follows the live tail.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives as long as the router, which the caller holds.
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn position(&self) -> Cursor {
        self.lock().position
    }

    /// Register a subscription in the buffering state. Returns its key and the position
    /// after which every transaction will reach it through the router; everything up to
    /// that position must come from snapshot/catch-up. `None` if the connection is gone.
    pub fn register(&self, conn: ConnId, plan: Arc<SubPlan>) -> Option<(SubKey, Cursor)> {
        let key = self.next_id();
        let mut reg = self.lock();
        let position = reg.position;
        reg.conns.get_mut(&conn)?.subs.insert(key);
        let filed = choose_index(&plan);
        let table = reg.tables.entry(plan.table.clone()).or_default();
        match &filed {
            Filed::Eq(col, val) => {
                let kind = plan
                    .catalog
                    .column(col)
                    .map(|c| c.kind)
                    .unwrap_or(ColumnKind::Bool);
                table
                    .by_eq
                    .entry((col.clone(), val.clone()))
                    .or_default()
                    .insert(key);
                table.eq_columns.entry(col.clone()).or_insert((kind, 0)).1 += 1;
            }
            Filed::Rel(route, val) => {
                table
                    .by_rel
                    .entry(route.clone())
                    .or_default()
                    .entry(val.clone())
                    .or_default()
                    .insert(key);
            }
            Filed::Scan => {
                table.scan.insert(key);
            }
        }
        let moves = match &plan.visibility {
            Visibility::Fast(p) => relation::routes(p),
            Visibility::Sql(_) => Vec::new(),
        };
        for t in sql_reads(&plan) {
            reg.sql_reads.entry(t).or_default().insert(key);
        }
        for (route, k) in &moves {
            reg.movers
                .entry(route.clone())
                .or_default()
                .entry(k.clone())
                .or_default()
                .insert(key);
        }
        reg.subs.insert(
            key,
            Sub {
                conn,
                plan,
                state: State::Buffering {
                    frames: Vec::new(),
                    overflowed: false,
                },
                filed,
                moves,
            },
        );
        self.stats.subscriptions.fetch_add(1, Relaxed);
        Some((key, position))
    }

    /// Whether subscription `key` is still registered.
    pub fn contains(&self, key: SubKey) -> bool {
        self.lock().subs.contains_key(&key)
    }

    /// Remove one subscription.
    pub fn unregister(&self, key: SubKey) {
        let mut reg = self.lock();
        if let Some(sub) = remove_sub(&mut reg, key, &self.stats) {
            if let Some(c) = reg.conns.get_mut(&sub.conn) {
                c.subs.remove(&key);
            }
        }
    }

    /// Switch a buffering subscription to live once snapshot/catch-up has delivered
    /// everything up to `covered`: send `marker`, then the buffered frames after `covered`.
    pub fn go_live(&self, key: SubKey, covered: Cursor, marker: Bytes) -> GoLive {
        let mut reg = self.lock();
        let position = reg.position;
        let Some(sub) = reg.subs.get_mut(&key) else {
            return GoLive::Gone;
        };
        let conn_id = sub.conn;
        let frames = match &mut sub.state {
            State::Buffering {
                overflowed: true, ..
            } => {
                sub.state = State::Buffering {
                    frames: Vec::new(),
                    overflowed: false,
                };
                return GoLive::Retry { until: position };
            }
            State::Buffering { frames, .. } => std::mem::take(frames),
            State::Live { .. } => return GoLive::Done,
        };
        sub.state = State::Live { floor: covered };
        let Some(conn) = reg.conns.get(&conn_id) else {
            return GoLive::Gone;
        };
        let mut ok = conn.tx.try_send(Outbound::live(marker)).is_ok();
        for (cursor, frame, n) in frames {
            if ok && cursor > covered {
                ok = conn.tx.try_send(Outbound::live(frame)).is_ok();
                if ok {
                    self.stats.frames_sent.fetch_add(1, Relaxed);
                    self.stats.changes_delivered.fetch_add(n, Relaxed);
                }
            }
        }
        if !ok {
            conn.lagging.cancel();
            self.stats.lagging_closes.fetch_add(1, Relaxed);
            remove_conn(&mut reg, conn_id, &self.stats);
            return GoLive::Gone;
        }
        GoLive::Done
    }

    /// Route one transaction of the live tail to every subscription it concerns.
    ///
    /// With relational policies, the membership index is first moved to the state after the
    /// transaction (old row images are judged against the state before it, through
    /// [`Before`]), and subscriptions whose identity a referenced change concerns get the
    /// rows that moved in (`insert`) or out (`remove`), read as of this position.
    pub async fn dispatch(&self, batch: &ChangeBatch) {
        let cursor = batch.cursor();
        let mut rel = self.relations.write().await;
        self.load_index_or_resync(&mut rel).await;
        let by_table = group_by_table(batch);
        let tracked: Vec<&Change> = batch
            .changes
            .iter()
            .filter(|c| rel.has(&(c.table.schema.clone(), c.table.name.clone())))
            .collect();
        let prior = self.apply_to_index(&mut rel, &tracked);
        let rel: &Relations = &rel;
        let before = Before {
            now: rel,
            prior: &prior,
        };
        let view = Rel {
            before: if prior.is_empty() { rel } else { &before },
            after: rel,
        };
        // The referenced changes' largest version: moved rows carry at least this one.
        let floor = tracked.iter().map(|c| c.version).max().unwrap_or(0);

        let found = self.collect_candidates(batch, &by_table, &tracked, &view);
        for key in &found.sql_resync {
            self.resync(*key, "policy input changed");
        }
        if found.work.is_empty() && found.moves.is_empty() {
            return;
        }
        let moved = self.read_moved_rows(cursor, &found.moves).await;
        let mut out = self.evaluate_candidates(&by_table, found.work, &view).await;
        self.add_move_items(&mut out, &found.moves, &moved, &by_table, &view, floor);
        if !out.is_empty() {
            self.deliver(cursor, out);
            self.record_lag(batch);
        }
    }

    /// Bring the membership index up to date with the tables subscriptions need; without
    /// it relational subscriptions cannot be judged, so they resync.
    async fn load_index_or_resync(&self, rel: &mut Relations) {
        if let Err(e) = self.load_missing(rel).await {
            tracing::warn!(error = %e, "membership index load failed; resyncing relational subscriptions");
            self.resync_relational(None, "membership index unavailable");
        }
    }

    /// Apply the transaction's changes to referenced tables to the membership index;
    /// returns those rows as they were before it. A truncated referenced table resyncs the
    /// subscriptions whose policy reads it.
    fn apply_to_index(&self, rel: &mut Relations, tracked: &[&Change]) -> Prior {
        if tracked.is_empty() {
            return Prior::new();
        }
        let mut truncated = Vec::new();
        let prior = rel.apply(tracked, &mut truncated);
        for t in &truncated {
            self.resync_relational(Some(t), "truncate");
        }
        self.stats
            .relation_rows
            .store(rel.row_count() as u64, Relaxed);
        prior
    }

    /// Collect candidates under the lock, and advance the position in the same critical
    /// section: a subscription registered after this point catches this transaction up
    /// from the log; one registered before is a candidate here.
    fn collect_candidates(
        &self,
        batch: &ChangeBatch,
        by_table: &ByTable<'_>,
        tracked: &[&Change],
        view: &Rel<'_>,
    ) -> Found {
        let mut reg = self.lock();
        reg.position = batch.cursor().max(reg.position);
        let sql_resync = sql_policy_inputs_changed(&reg, batch);
        let work = table_candidates(&reg, by_table, &sql_resync, view);
        let moves = if tracked.is_empty() {
            Moves::new()
        } else {
            move_candidates(&reg, tracked, view)
        };
        Found {
            work,
            moves,
            sql_resync,
        }
    }

    /// How long the transaction took from its start (the nearest to its commit that the
    /// log knows) to its frames being queued for every subscriber.
    fn record_lag(&self, batch: &ChangeBatch) {
        let lag = (chrono::Utc::now() - batch.started_at)
            .to_std()
            .unwrap_or_default();
        self.stats
            .lag_ms
            .store(lag.as_millis().try_into().unwrap_or(u64::MAX), Relaxed);
        if let Some(h) = self.stats.delivery_lag.get() {
            h.observe(lag.as_secs_f64());
        }
    }

    /// Rows of the subscribed tables that may move, as of this position: one read per
    /// table and link column. A failed read is recorded, so its subscribers resync.
    async fn read_moved_rows(&self, cursor: Cursor, moves: &Moves) -> MovedRows {
        let mut wanted: HashMap<(TableName, String), (Arc<SubPlan>, HashSet<String>)> =
            HashMap::new();
        for ((_, col), (plan, vals)) in moves {
            wanted
                .entry((plan.table.clone(), col.clone()))
                .or_insert_with(|| (plan.clone(), HashSet::new()))
                .1
                .extend(vals.iter().cloned());
        }
        let mut moved = MovedRows::default();
        for ((table, col), (plan, vals)) in wanted {
            let sql_type = plan
                .catalog
                .column(&col)
                .map(|c| c.sql_type.clone())
                .unwrap_or_else(|| "text".into());
            let vals: Vec<String> = vals.into_iter().collect();
            self.stats.move_reads.fetch_add(1, Relaxed);
            let query = RowsAt {
                schema: &table.schema,
                name: &table.name,
                primary_key: &plan.catalog.primary_key,
                at: cursor,
                only: Some(LinkValues {
                    column: &col,
                    sql_type: &sql_type,
                    values: &vals,
                }),
            };
            match self.rows.rows_at(query).await {
                Ok(rows) => {
                    moved.rows.insert((table, col), rows);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading rows that moved failed; resyncing their subscribers");
                    moved.failed.insert((table, col));
                }
            }
        }
        moved
    }

    /// Each candidate's items for its table's changes (visibility checked in SQL, in one
    /// batch per table, for policies outside the fast path).
    async fn evaluate_candidates(
        &self,
        by_table: &ByTable<'_>,
        work: Candidates,
        view: &Rel<'_>,
    ) -> Vec<(SubKey, ItemsOr)> {
        let mut out: Vec<(SubKey, ItemsOr)> = Vec::new();
        for (ti, subs) in work {
            let changes = &by_table[ti].1;
            let answers = self.sql_answers(changes, &subs, &mut out).await;
            let mut cache = ItemCache::default();
            for (key, plan) in &subs {
                if matches!(plan.visibility, Visibility::Sql(_)) {
                    if out.iter().any(|(k, _)| k == key) {
                        continue;
                    }
                    self.stats
                        .fallback_evaluations
                        .fetch_add(changes.len() as u64, Relaxed);
                } else {
                    self.stats
                        .fast_evaluations
                        .fetch_add(changes.len() as u64, Relaxed);
                }
                let items = evaluate_items(plan, changes, &answers, view, &mut cache);
                if !matches!(&items, Ok(i) if i.is_empty()) {
                    out.push((*key, items));
                }
            }
        }
        out
    }

    /// The SQL visibility answers for the candidates whose policy is checked in SQL. If the
    /// check fails, nothing may be sent to them, and skipping silently would lose changes:
    /// they resync instead (pushed to `out`).
    async fn sql_answers(
        &self,
        changes: &[&Change],
        subs: &[(SubKey, Arc<SubPlan>)],
        out: &mut Vec<(SubKey, ItemsOr)>,
    ) -> SqlAnswers {
        let slow: Vec<&Arc<SubPlan>> = subs
            .iter()
            .map(|(_, p)| p)
            .filter(|p| matches!(p.visibility, Visibility::Sql(_)))
            .collect();
        let Some(first) = slow.first() else {
            return SqlAnswers::default();
        };
        self.stats.sql_checks.fetch_add(1, Relaxed);
        match SqlAnswers::fetch(&*self.rows, &first.catalog, changes, &slow).await {
            Ok(a) => {
                self.stats
                    .sql_statements
                    .fetch_add(a.statements as u64, Relaxed);
                a
            }
            Err(e) => {
                tracing::warn!(error = %e, "visibility check failed; resyncing its subscribers");
                for (key, plan) in subs {
                    if matches!(plan.visibility, Visibility::Sql(_)) {
                        out.push((*key, Err("visibility check failed")));
                    }
                }
                SqlAnswers::default()
            }
        }
    }

    /// The rows that moved in (`insert`) or out (`remove`) of each subscription a
    /// membership change concerns, appended to its items.
    fn add_move_items(
        &self,
        out: &mut Vec<(SubKey, ItemsOr)>,
        moves: &Moves,
        moved: &MovedRows,
        by_table: &ByTable<'_>,
        view: &Rel<'_>,
        floor: i64,
    ) {
        for ((key, col), (plan, vals)) in moves {
            let slot = (plan.table.clone(), col.clone());
            if moved.failed.contains(&slot) {
                out.push((*key, Err("visibility check failed")));
                continue;
            }
            let Some(rows) = moved.rows.get(&slot) else {
                continue;
            };
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = rows
                .iter()
                .filter(|r| {
                    r.get(col)
                        .and_then(|v| plan.catalog.column(col).and_then(|c| c.kind.index_key(v)))
                        .is_some_and(|k| vals.contains(&k))
                })
                .cloned()
                .collect();
            let changed: HashSet<String> = by_table
                .iter()
                .filter(|(t, _)| **t == plan.table)
                .flat_map(|(_, cs)| cs.iter())
                .map(|c| pk_text(&plan.catalog.primary_key, &c.pk))
                .collect();
            self.stats
                .fast_evaluations
                .fetch_add(rows.len() as u64, Relaxed);
            let items = move_items(plan, &rows, &changed, view, floor);
            if items.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(k, _)| k == key) {
                Some((_, Ok(list))) => list.extend(items),
                Some((_, Err(_))) => {}
                None => out.push((*key, Ok(items))),
            }
        }
    }

    /// Write each subscription's frame: held while it is buffering, queued when it is live
    /// (never waiting: a full queue closes that connection with "lagging"), or
    /// `resync-required` in its place.
    fn deliver(&self, cursor: Cursor, out: Vec<(SubKey, ItemsOr)>) {
        let mut reg = self.lock();
        let mut lagging: Vec<ConnId> = Vec::new();
        let mut resync: Vec<(SubKey, &str)> = Vec::new();
        for (key, outcome) in out {
            let Some(sub) = reg.subs.get_mut(&key) else {
                continue;
            };
            let items = match outcome {
                Err(reason) => {
                    resync.push((key, reason));
                    continue;
                }
                Ok(items) if items.is_empty() => continue,
                Ok(items) => items,
            };
            let n = items.len() as u64;
            let frame = changes_frame(&sub.plan.encoded_id, sub.plan.log.wire(cursor), &items);
            match &mut sub.state {
                State::Buffering { frames, overflowed } => {
                    if *overflowed {
                        continue;
                    }
                    if frames.len() >= self.buffer_limit {
                        frames.clear();
                        *overflowed = true;
                    } else {
                        frames.push((cursor, frame, n));
                    }
                }
                State::Live { floor } => {
                    if cursor <= *floor {
                        continue;
                    }
                    let conn_id = sub.conn;
                    if let Some(conn) = reg.conns.get(&conn_id) {
                        match conn.tx.try_send(Outbound::live(frame)) {
                            Ok(()) => {
                                self.stats.frames_sent.fetch_add(1, Relaxed);
                                self.stats.changes_delivered.fetch_add(n, Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                conn.lagging.cancel();
                                lagging.push(conn_id);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => lagging.push(conn_id),
                        }
                    }
                }
            }
        }
        for (key, reason) in resync {
            self.resync_locked(&mut reg, key, reason);
        }
        for conn in lagging {
            if reg.conns.contains_key(&conn) {
                tracing::info!(
                    conn,
                    "closing a realtime connection whose queue is full (lagging)"
                );
                self.stats.lagging_closes.fetch_add(1, Relaxed);
                remove_conn(&mut reg, conn, &self.stats);
            }
        }
    }

    /// Every subscription must start over (the live tail lost history).
    pub fn resync_all(&self, reason: &str) {
        // The position may now jump past transactions the index never saw.
        self.stale.store(true, Relaxed);
        let mut reg = self.lock();
        let keys: Vec<SubKey> = reg.subs.keys().copied().collect();
        for key in keys {
            self.resync_locked(&mut reg, key, reason);
        }
    }

    /// Resync every subscription whose policy reads `table` (every relational one for
    /// `None`), e.g. after that table was truncated.
    fn resync_relational(&self, table: Option<&TableKey>, reason: &str) {
        let mut reg = self.lock();
        let keys: Vec<SubKey> = reg
            .subs
            .iter()
            .filter(|(_, s)| {
                !s.moves.is_empty()
                    && table.map_or(true, |t| {
                        s.moves
                            .iter()
                            .any(|(r, _)| r.hops.iter().any(|h| &h.table == t))
                    })
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.resync_locked(&mut reg, key, reason);
        }
    }

    /// End subscription `key` with `resync-required`.
    pub fn resync(&self, key: SubKey, reason: &str) {
        let mut reg = self.lock();
        self.resync_locked(&mut reg, key, reason);
    }

    fn resync_locked(&self, reg: &mut Registry, key: SubKey, reason: &str) {
        let Some(sub) = remove_sub(reg, key, &self.stats) else {
            return;
        };
        self.stats.resyncs.fetch_add(1, Relaxed);
        if let Some(conn) = reg.conns.get_mut(&sub.conn) {
            conn.subs.remove(&key);
            let frame = ServerMessage::ResyncRequired {
                id: sub.plan.id.clone(),
                reason: reason.to_string(),
            }
            .to_json();
            if conn
                .tx
                .try_send(Outbound::live(Bytes::from(frame)))
                .is_err()
            {
                conn.lagging.cancel();
            }
        }
    }
}

/// One transaction's changes grouped by table, tables in order of first appearance.
type ByTable<'a> = Vec<(&'a TableName, Vec<&'a Change>)>;

/// (subscription, link column) → values of the link column whose rows may move.
type Moves = HashMap<(SubKey, String), (Arc<SubPlan>, HashSet<String>)>;

/// What one transaction concerns, collected under the registry lock.
struct Found {
    /// Subscriptions of each changed table the changes may reach.
    work: Candidates,
    /// Subscriptions rows may move in or out of.
    moves: Moves,
    /// Subscriptions whose SQL-checked policy reads a changed table.
    sql_resync: HashSet<SubKey>,
}

/// Rows read for the moves, per (subscribed table, link column); reads that failed.
#[derive(Default)]
struct MovedRows {
    rows: HashMap<(TableName, String), Vec<serde_json::Map<String, serde_json::Value>>>,
    failed: HashSet<(TableName, String)>,
}

fn group_by_table(batch: &ChangeBatch) -> ByTable<'_> {
    let mut by_table: ByTable<'_> = Vec::new();
    for c in &batch.changes {
        match by_table.iter_mut().find(|(t, _)| **t == c.table) {
            Some((_, list)) => list.push(c),
            None => by_table.push((&c.table, vec![c])),
        }
    }
    by_table
}

/// Subscriptions checked in SQL whose policy's sub-selects read a table this transaction
/// changed: what they see may have changed without any change to their own table.
fn sql_policy_inputs_changed(reg: &Registry, batch: &ChangeBatch) -> HashSet<SubKey> {
    let mut out = HashSet::new();
    if reg.sql_reads.is_empty() {
        return out;
    }
    for c in &batch.changes {
        let t = (c.table.schema.clone(), c.table.name.clone());
        if let Some(set) = reg.sql_reads.get(&t) {
            out.extend(set.iter().copied());
        }
    }
    out
}

/// Per changed table, the subscriptions its changes may concern: those on the scan list,
/// those filed under an equality a row image carries, and those filed under an identity a
/// row reaches through a relational route (before or after the transaction).
fn table_candidates(
    reg: &Registry,
    by_table: &ByTable<'_>,
    skip: &HashSet<SubKey>,
    view: &Rel<'_>,
) -> Candidates {
    let mut work: Candidates = Vec::new();
    for (ti, (table, changes)) in by_table.iter().enumerate() {
        let Some(ts) = reg.tables.get(*table) else {
            continue;
        };
        let mut keys: HashSet<SubKey> = ts.scan.clone();
        for c in changes {
            for row in [&c.old_row, &c.new_row].into_iter().flatten() {
                let Some(obj) = row.as_object() else { continue };
                for (col, (kind, _)) in &ts.eq_columns {
                    if let Some(k) = obj.get(col).and_then(|v| kind.index_key(v)) {
                        if let Some(set) = ts.by_eq.get(&(col.clone(), k)) {
                            keys.extend(set.iter().copied());
                        }
                    }
                }
                for (route, by_key) in &ts.by_rel {
                    for lookup in [view.before, view.after] {
                        for k in relation::row_keys(lookup, route, obj) {
                            if let Some(set) = by_key.get(&k) {
                                keys.extend(set.iter().copied());
                            }
                        }
                    }
                }
            }
        }
        let subs: Vec<(SubKey, Arc<SubPlan>)> = keys
            .into_iter()
            .filter(|k| !skip.contains(k))
            .filter_map(|k| reg.subs.get(&k).map(|s| (k, s.plan.clone())))
            .collect();
        if !subs.is_empty() {
            work.push((ti, subs));
        }
    }
    work
}

/// The subscriptions whose rows a change to a referenced table may move in or out, with
/// the link-column values of the rows to re-check.
fn move_candidates(reg: &Registry, tracked: &[&Change], view: &Rel<'_>) -> Moves {
    let mut moves = Moves::new();
    for (route, by_key) in &reg.movers {
        for (h, hop) in route.hops.iter().enumerate() {
            for c in tracked
                .iter()
                .filter(|c| c.table.schema == hop.table.0 && c.table.name == hop.table.1)
            {
                for img in [&c.old_row, &c.new_row].into_iter().flatten() {
                    let Some(img) = img.as_object() else { continue };
                    for lookup in [view.before, view.after] {
                        let (ks, vals) = relation::affected(lookup, route, h, img);
                        if vals.is_empty() {
                            continue;
                        }
                        let subs: Vec<SubKey> = match ks {
                            None => by_key
                                .get(&None)
                                .map(|s| s.iter().copied().collect())
                                .unwrap_or_default(),
                            Some(ks) => ks
                                .into_iter()
                                .filter_map(|k| by_key.get(&Some(k)))
                                .flat_map(|s| s.iter().copied())
                                .collect(),
                        };
                        for sk in subs {
                            let Some(sub) = reg.subs.get(&sk) else {
                                continue;
                            };
                            moves
                                .entry((sk, route.hops[0].outer.clone()))
                                .or_insert_with(|| (sub.plan.clone(), HashSet::new()))
                                .1
                                .extend(vals.iter().cloned());
                        }
                    }
                }
            }
        }
    }
    moves
}

/// The equality condition to file a subscription under: one that every row it can see
/// satisfies (from the visibility rule first, which is usually the most selective, e.g. the
/// owner), so a change only reaches subscriptions whose key it carries.
fn choose_index(plan: &SubPlan) -> Filed {
    let mut conjuncts: Vec<&Pred> = Vec::new();
    if let Visibility::Fast(p) = &plan.visibility {
        conjuncts.push(p);
    }
    conjuncts.push(&plan.filter);
    if let Some((c, _, v)) = conjuncts.iter().flat_map(|p| p.equalities()).next() {
        return Filed::Eq(c, v);
    }
    if let Visibility::Fast(p) = &plan.visibility {
        if let Some((route, v)) = relation::index_route(p) {
            return Filed::Rel(route, v);
        }
    }
    Filed::Scan
}

/// The tables a SQL-checked policy's sub-selects read.
pub fn sql_reads(plan: &SubPlan) -> Vec<TableKey> {
    match &plan.visibility {
        Visibility::Sql(expr) => crate::policy::parse::referenced_tables(expr),
        Visibility::Fast(_) => Vec::new(),
    }
}

fn remove_sub(reg: &mut Registry, key: SubKey, stats: &RealtimeStats) -> Option<Sub> {
    let sub = reg.subs.remove(&key)?;
    stats.subscriptions.fetch_sub(1, Relaxed);
    for t in sql_reads(&sub.plan) {
        if let Some(set) = reg.sql_reads.get_mut(&t) {
            set.remove(&key);
            if set.is_empty() {
                reg.sql_reads.remove(&t);
            }
        }
    }
    for (route, k) in &sub.moves {
        if let Some(m) = reg.movers.get_mut(route) {
            if let Some(set) = m.get_mut(k) {
                set.remove(&key);
                if set.is_empty() {
                    m.remove(k);
                }
            }
            if m.is_empty() {
                reg.movers.remove(route);
            }
        }
    }
    if let Some(table) = reg.tables.get_mut(&sub.plan.table) {
        match &sub.filed {
            Filed::Rel(route, val) => {
                if let Some(m) = table.by_rel.get_mut(route) {
                    if let Some(set) = m.get_mut(val) {
                        set.remove(&key);
                        if set.is_empty() {
                            m.remove(val);
                        }
                    }
                    if m.is_empty() {
                        table.by_rel.remove(route);
                    }
                }
            }
            Filed::Eq(col, val) => {
                let k = (col.clone(), val.clone());
                if let Some(set) = table.by_eq.get_mut(&k) {
                    set.remove(&key);
                    if set.is_empty() {
                        table.by_eq.remove(&k);
                    }
                }
                if let Some(entry) = table.eq_columns.get_mut(col) {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        table.eq_columns.remove(col);
                    }
                }
            }
            Filed::Scan => {
                table.scan.remove(&key);
            }
        }
        if table.is_empty() {
            reg.tables.remove(&sub.plan.table);
        }
    }
    Some(sub)
}

fn remove_conn(reg: &mut Registry, id: ConnId, stats: &RealtimeStats) {
    if let Some(conn) = reg.conns.remove(&id) {
        for key in conn.subs {
            remove_sub(reg, key, stats);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of the router over a fake [`RowSource`] (no Postgres): delivery of a
    //! transaction to the subscriptions its changes concern on the fast path, closing the one
    //! connection whose queue overflowed, and rows moving in and out of a subscription when a
    //! membership its policy reads changes.

    use std::{
        collections::HashMap,
        sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    };

    use bytes::Bytes;
    use futures::future::BoxFuture;
    use serde_json::{json, Map, Value};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::{ConnId, GoLive, Outbound, Router, SubKey};
    use crate::{
        auth::Identity,
        capture::LogId,
        protocol::realtime::{changes::EncodedId, ChangeItem, ChangeOp, ServerMessage},
        realtime::{
            catalog::{
                fixtures::{column, policy as policy_facts, table},
                TableCatalog, VERSION_COLUMN,
            },
            feed::{Change, ChangeBatch, Cursor, Op, TableName},
            filter::compile_filter,
            rows::{RowSource, RowsAt},
            RealtimeStats, SubPlan,
        },
        store::{
            realtime::{RowsAtError, TableFacts, VisibilityCheck},
            StoreError,
        },
    };

    const U1: &str = "00000000-0000-0000-0000-0000000000a1";
    const U2: &str = "00000000-0000-0000-0000-0000000000a2";
    const U3: &str = "00000000-0000-0000-0000-0000000000a3";
    const OWNER_RULE: &str = "(owner = rowcast.uid())";
    const MEMBER_OF_LIST: &str = "(EXISTS ( SELECT 1 FROM public.members m WHERE ((m.list_id = todos.list_id) AND (m.user_id = rowcast.uid()))))";

    fn log() -> LogId {
        LogId::new(1, 1)
    }

    /// Tables as of now (the fake ignores the position: each test sets the rows a read at that
    /// point would see), and every read made.
    #[derive(Default)]
    struct FakeRows {
        tables: Mutex<HashMap<String, Vec<Map<String, Value>>>>,
        reads: Mutex<Vec<(String, Option<Vec<String>>)>>,
    }

    impl FakeRows {
        fn set(&self, table: &str, rows: Vec<Value>) {
            let rows = rows.into_iter().map(object).collect();
            self.lock_tables().insert(table.to_string(), rows);
        }

        fn lock_tables(
            &self,
        ) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Map<String, Value>>>> {
            self.tables.lock().unwrap()
        }

        fn reads(&self) -> Vec<(String, Option<Vec<String>>)> {
            self.reads.lock().unwrap().clone()
        }
    }

    /// A JSON value as the text the router compares link values by.
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    impl RowSource for FakeRows {
        fn rows_at<'a>(
            &'a self,
            q: RowsAt<'a>,
        ) -> BoxFuture<'a, Result<Vec<Map<String, Value>>, RowsAtError>> {
            let mut values = q.only.map(|o| o.values.to_vec());
            if let Some(v) = values.as_mut() {
                v.sort();
            }
            self.reads
                .lock()
                .unwrap()
                .push((q.name.to_string(), values));
            let rows: Vec<Map<String, Value>> = self
                .lock_tables()
                .get(q.name)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| {
                    q.only.is_none_or(|o| {
                        r.get(o.column).is_some_and(|v| o.values.contains(&text(v)))
                    })
                })
                .collect();
            Box::pin(async move { Ok(rows) })
        }

        fn visible_rows<'a>(
            &'a self,
            _table: (&'a str, &'a str),
            _checks: &'a [VisibilityCheck],
        ) -> BoxFuture<'a, Result<Vec<Vec<Vec<bool>>>, StoreError>> {
            // Every policy in these tests is on the fast path.
            Box::pin(async { Err(StoreError::Config("no SQL checks in these tests".into())) })
        }
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn todos(rule: &str) -> TableFacts {
        table(
            "todos",
            vec![
                column("id", "int8"),
                column("list_id", "int8"),
                column("owner", "uuid"),
                column("done", "bool"),
                column(VERSION_COLUMN, "int8"),
            ],
            vec![policy_facts("rule", rule, true)],
        )
    }

    fn members() -> TableFacts {
        table(
            "members",
            vec![
                column("id", "int8"),
                column("list_id", "int8"),
                column("user_id", "uuid"),
            ],
            vec![policy_facts("rule", "(user_id = rowcast.uid())", true)],
        )
    }

    /// A subscription of `user` to `todos`, with its visibility rule bound and its filter
    /// compiled as `subscribe` does.
    fn plan(
        id: &str,
        catalog: &Arc<TableCatalog>,
        user: &str,
        filter: Option<Value>,
    ) -> Arc<SubPlan> {
        let identity = Arc::new(Identity::user(user, json!({})));
        let visibility = catalog
            .access(identity.role)
            .visibility(&identity)
            .expect("the role reads todos");
        assert!(
            matches!(visibility, crate::policy::compile::Visibility::Fast(_)),
            "the rule takes the fast path"
        );
        Arc::new(SubPlan {
            id: id.into(),
            encoded_id: EncodedId::new(id),
            table: TableName {
                schema: "public".into(),
                name: "todos".into(),
            },
            catalog: catalog.clone(),
            filter: compile_filter(filter.as_ref(), catalog).expect("a valid filter"),
            visibility,
            identity,
            columns: None,
            log: log(),
        })
    }

    /// A connection as the session holds it: its queue and its "lagging" signal.
    struct Client {
        conn: ConnId,
        rx: mpsc::Receiver<Outbound>,
        lagging: CancellationToken,
    }

    fn connect(router: &Router, queue: usize) -> Client {
        let conn = router.next_id();
        let (tx, rx) = mpsc::channel(queue);
        let lagging = CancellationToken::new();
        router.add_connection(conn, tx, lagging.clone());
        Client { conn, rx, lagging }
    }

    /// Register `plan` and switch it to live at the router's position (nothing to catch up).
    fn subscribe(router: &Router, client: &Client, plan: &Arc<SubPlan>) -> SubKey {
        let (key, position) = router
            .register(client.conn, plan.clone())
            .expect("the connection is registered");
        let marker = Bytes::from(
            ServerMessage::Live {
                id: plan.id.clone(),
                cursor: log().wire(position).to_string(),
            }
            .to_json(),
        );
        assert_eq!(router.go_live(key, position, marker), GoLive::Done);
        key
    }

    /// What the client has been sent so far.
    fn received(client: &mut Client) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Ok(o) = client.rx.try_recv() {
            let text = std::str::from_utf8(&o.frame).expect("frames are UTF-8");
            out.push(serde_json::from_str(text).expect("frames parse as server messages"));
        }
        out
    }

    /// Drop the `live` marker each subscription starts with.
    fn skip_live(client: &mut Client) {
        for m in received(client) {
            assert!(matches!(m, ServerMessage::Live { .. }), "{m:?}");
        }
    }

    fn router(rows: Arc<FakeRows>) -> (Router, Arc<RealtimeStats>) {
        let stats = Arc::new(RealtimeStats::default());
        let router = Router::new(rows, stats.clone(), 8);
        router.set_position(Cursor::new(1, 0));
        router.set_ready();
        (router, stats)
    }

    fn change(table: &str, op: Op, old: Option<Value>, new: Option<Value>, version: i64) -> Change {
        let image = new.as_ref().or(old.as_ref()).expect("an image");
        Change {
            table: TableName {
                schema: "public".into(),
                name: table.into(),
            },
            op,
            pk: object(json!({ "id": image["id"] })),
            version,
            new_row: new,
            old_row: old,
            cursor: Cursor::START,
        }
    }

    /// One transaction with id `xid`, its changes at consecutive positions.
    fn batch(xid: u64, changes: Vec<Change>) -> ChangeBatch {
        let changes = changes
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c.cursor = Cursor::new(xid, i as i64 + 1);
                c
            })
            .collect();
        ChangeBatch {
            xid,
            started_at: chrono::Utc::now(),
            changes,
        }
    }

    fn todo(id: i64, list: i64, owner: &str, done: bool, v: i64) -> Value {
        json!({ "id": id, "list_id": list, "owner": owner, "done": done, "_v": v })
    }

    fn item(op: ChangeOp, id: i64, v: i64, row: Option<Value>) -> ChangeItem {
        ChangeItem {
            op,
            pk: json!({ "id": id }),
            v,
            row,
        }
    }

    fn changes(id: &str, b: &ChangeBatch, items: Vec<ChangeItem>) -> ServerMessage {
        ServerMessage::Changes {
            id: id.into(),
            cursor: log().wire(b.cursor()).to_string(),
            changes: items,
        }
    }

    #[tokio::test]
    async fn a_transaction_reaches_each_subscription_as_its_filter_and_owner_rule_see_it() {
        let rows = Arc::new(FakeRows::default());
        let (router, stats) = router(rows.clone());
        let catalog = Arc::new(TableCatalog::build(todos(OWNER_RULE), vec![]));
        let mut c1 = connect(&router, 16);
        let mut c2 = connect(&router, 16);
        let open = plan(
            "open",
            &catalog,
            U1,
            Some(json!({ "column": "done", "op": "eq", "value": false })),
        );
        let finished = plan(
            "finished",
            &catalog,
            U1,
            Some(json!({ "column": "done", "op": "eq", "value": true })),
        );
        let all = plan("all", &catalog, U2, None);
        subscribe(&router, &c1, &open);
        subscribe(&router, &c1, &finished);
        subscribe(&router, &c2, &all);
        skip_live(&mut c1);
        skip_live(&mut c2);

        let new1 = todo(1, 1, U1, false, 10);
        let new2 = todo(2, 1, U2, false, 11);
        let (old3, new3) = (todo(3, 1, U1, false, 5), todo(3, 1, U1, true, 12));
        let old4 = todo(4, 1, U2, true, 6);
        let b = batch(
            10,
            vec![
                change("todos", Op::Insert, None, Some(new1.clone()), 10),
                change("todos", Op::Insert, None, Some(new2.clone()), 11),
                change("todos", Op::Update, Some(old3), Some(new3.clone()), 12),
                change("todos", Op::Delete, Some(old4), None, 13),
                // Nobody subscribed sees another user's rows.
                change(
                    "todos",
                    Op::Insert,
                    None,
                    Some(todo(5, 1, U3, false, 14)),
                    14,
                ),
            ],
        );
        router.dispatch(&b).await;

        let mut got = received(&mut c1);
        got.sort_by_key(|m| format!("{m:?}"));
        assert_eq!(
            got,
            [
                changes(
                    "finished",
                    &b,
                    vec![item(ChangeOp::Insert, 3, 12, Some(new3))]
                ),
                changes(
                    "open",
                    &b,
                    vec![
                        item(ChangeOp::Insert, 1, 10, Some(new1)),
                        item(ChangeOp::Remove, 3, 12, None),
                    ]
                ),
            ]
        );
        assert_eq!(
            received(&mut c2),
            [changes(
                "all",
                &b,
                vec![
                    item(ChangeOp::Insert, 2, 11, Some(new2)),
                    item(ChangeOp::Delete, 4, 13, None),
                ]
            )]
        );
        assert_eq!(stats.frames_sent.load(Relaxed), 3);
        assert_eq!(stats.changes_delivered.load(Relaxed), 5);
        assert_eq!(stats.sql_checks.load(Relaxed), 0);
        assert!(rows.reads().is_empty(), "the fast path reads nothing");

        // The owner index: a transaction touching only another user's rows concerns no
        // subscription, so none is even evaluated.
        let evaluated = stats.fast_evaluations.load(Relaxed);
        let other = batch(
            11,
            vec![change(
                "todos",
                Op::Insert,
                None,
                Some(todo(6, 1, U3, false, 15)),
                15,
            )],
        );
        router.dispatch(&other).await;
        assert_eq!(stats.fast_evaluations.load(Relaxed), evaluated);
        assert!(received(&mut c1).is_empty());
        assert!(received(&mut c2).is_empty());
    }

    #[tokio::test]
    async fn a_connection_whose_queue_overflows_is_closed_as_lagging_while_others_still_receive() {
        let (router, stats) = router(Arc::new(FakeRows::default()));
        let catalog = Arc::new(TableCatalog::build(todos(OWNER_RULE), vec![]));
        // Room for the `live` marker only, which the slow client never reads.
        let mut slow = connect(&router, 1);
        let mut fast = connect(&router, 16);
        let slow_key = subscribe(&router, &slow, &plan("s", &catalog, U1, None));
        let fast_key = subscribe(&router, &fast, &plan("f", &catalog, U1, None));
        skip_live(&mut fast);

        for xid in [10, 11] {
            let row = todo(xid as i64, 1, U1, false, xid as i64);
            let b = batch(
                xid,
                vec![change(
                    "todos",
                    Op::Insert,
                    None,
                    Some(row.clone()),
                    xid as i64,
                )],
            );
            router.dispatch(&b).await;
            assert_eq!(
                received(&mut fast),
                [changes(
                    "f",
                    &b,
                    vec![item(ChangeOp::Insert, xid as i64, xid as i64, Some(row))]
                )],
                "transaction {xid}"
            );
        }
        assert!(
            slow.lagging.is_cancelled(),
            "the slow connection is told to close as lagging"
        );
        assert!(!fast.lagging.is_cancelled());
        assert!(!router.contains(slow_key), "its subscriptions are gone");
        assert!(router.contains(fast_key));
        assert_eq!(stats.lagging_closes.load(Relaxed), 1);
        // It holds what it had; nothing was dropped silently in between: it resumes from there.
        assert!(matches!(
            received(&mut slow)[..],
            [ServerMessage::Live { .. }]
        ));
    }

    #[tokio::test]
    async fn rows_move_in_and_out_when_a_membership_changes() {
        let rows = Arc::new(FakeRows::default());
        rows.set(
            "members",
            vec![json!({ "id": 1, "list_id": 1, "user_id": U1 })],
        );
        let (router, stats) = router(rows.clone());
        let catalog = Arc::new(TableCatalog::build(todos(MEMBER_OF_LIST), vec![members()]));
        assert_eq!(catalog.refs.len(), 1, "members is mirrored");
        router.track(&catalog.refs).await.expect("the index loads");
        assert_eq!(rows.reads(), [("members".to_string(), None)]);
        assert_eq!(stats.relation_rows.load(Relaxed), 1);

        let mut u1 = connect(&router, 16);
        let mut u2 = connect(&router, 16);
        subscribe(&router, &u1, &plan("mine", &catalog, U1, None));
        subscribe(&router, &u2, &plan("theirs", &catalog, U2, None));
        skip_live(&mut u1);
        skip_live(&mut u2);

        // The rows of list 2 as of the join (the move read), one with a version older than the
        // membership change.
        let in_list2 = todo(20, 2, U3, false, 4);
        rows.set("todos", vec![todo(10, 1, U3, false, 3), in_list2.clone()]);
        let joined = batch(
            10,
            vec![change(
                "members",
                Op::Insert,
                None,
                Some(json!({ "id": 2, "list_id": 2, "user_id": U1 })),
                7,
            )],
        );
        router.dispatch(&joined).await;
        assert_eq!(
            received(&mut u1),
            // Versioned at least as the membership change, so it is not taken for an older state.
            [changes(
                "mine",
                &joined,
                vec![item(ChangeOp::Insert, 20, 7, Some(in_list2))]
            )]
        );
        assert!(
            received(&mut u2).is_empty(),
            "another user's membership moves nothing for u2"
        );
        assert_eq!(
            rows.reads().last(),
            Some(&("todos".to_string(), Some(vec!["2".to_string()])))
        );

        // Now a member of list 2: its changes reach u1 through the index.
        let edited = todo(20, 2, U3, true, 8);
        let edit = batch(
            11,
            vec![change(
                "todos",
                Op::Update,
                Some(todo(20, 2, U3, false, 4)),
                Some(edited.clone()),
                8,
            )],
        );
        router.dispatch(&edit).await;
        assert_eq!(
            received(&mut u1),
            [changes(
                "mine",
                &edit,
                vec![item(ChangeOp::Update, 20, 8, Some(edited))]
            )]
        );

        // Leaving list 1 removes its rows (they still exist: `remove`, not `delete`).
        let left = batch(
            12,
            vec![change(
                "members",
                Op::Delete,
                Some(json!({ "id": 1, "list_id": 1, "user_id": U1 })),
                None,
                9,
            )],
        );
        router.dispatch(&left).await;
        assert_eq!(
            received(&mut u1),
            [changes(
                "mine",
                &left,
                vec![item(ChangeOp::Remove, 10, 9, None)]
            )]
        );
        assert_eq!(stats.relation_rows.load(Relaxed), 1);

        // And list 1's changes no longer reach u1.
        let later = batch(
            13,
            vec![change(
                "todos",
                Op::Insert,
                None,
                Some(todo(11, 1, U3, false, 10)),
                10,
            )],
        );
        router.dispatch(&later).await;
        assert!(received(&mut u1).is_empty());
        assert!(received(&mut u2).is_empty());
    }
}
