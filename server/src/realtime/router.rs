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
    evaluate::{evaluate, ItemCache, Outcome, SqlAnswers},
    feed::{Change, ChangeBatch, Cursor, TableName},
    RealtimeStats, SubPlan,
};
use crate::{
    policy::{compile::Visibility, ColumnKind, Pred},
    protocol::realtime::ServerMessage,
    store::Store,
};

pub type ConnId = u64;
pub type SubKey = u64;

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

struct Sub {
    conn: ConnId,
    plan: Arc<SubPlan>,
    state: State,
    /// The equality index entry it is filed under, or `None` for the table's scan list.
    indexed: Option<(String, String)>,
}

#[derive(Default)]
struct TableSubs {
    by_eq: HashMap<(String, String), HashSet<SubKey>>,
    /// Indexed columns with their kind and how many subscriptions use them.
    eq_columns: HashMap<String, (ColumnKind, usize)>,
    scan: HashSet<SubKey>,
}

impl TableSubs {
    fn is_empty(&self) -> bool {
        self.by_eq.is_empty() && self.scan.is_empty()
    }
}

#[derive(Default)]
struct Registry {
    conns: HashMap<ConnId, Conn>,
    subs: HashMap<SubKey, Sub>,
    tables: HashMap<TableName, TableSubs>,
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
    store: Store,
    /// Frames a buffering subscription may hold before it falls back to the log.
    buffer_limit: usize,
    ready: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(store: Store, stats: Arc<RealtimeStats>, buffer_limit: usize) -> Router {
        Router {
            registry: Mutex::new(Registry::default()),
            next_id: AtomicU64::new(1),
            stats,
            store,
            buffer_limit: buffer_limit.max(1),
            ready: tokio::sync::watch::Sender::new(false),
        }
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
        let indexed = choose_index(&plan);
        let table = reg.tables.entry(plan.table.clone()).or_default();
        match &indexed {
            Some((col, kind, val)) => {
                table
                    .by_eq
                    .entry((col.clone(), val.clone()))
                    .or_default()
                    .insert(key);
                table.eq_columns.entry(col.clone()).or_insert((*kind, 0)).1 += 1;
            }
            None => {
                table.scan.insert(key);
            }
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
                indexed: indexed.map(|(c, _, v)| (c, v)),
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
    pub async fn dispatch(&self, batch: &ChangeBatch) {
        let cursor = batch.cursor();
        let mut by_table: Vec<(&TableName, Vec<&Change>)> = Vec::new();
        for c in &batch.changes {
            match by_table.iter_mut().find(|(t, _)| **t == c.table) {
                Some((_, list)) => list.push(c),
                None => by_table.push((&c.table, vec![c])),
            }
        }
        // Collect candidates under the lock, and advance the position in the same critical
        // section: a subscription registered after this point catches this transaction up
        // from the log; one registered before is a candidate here.
        let mut work: Candidates = Vec::new();
        {
            let mut reg = self.lock();
            reg.position = cursor.max(reg.position);
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
                    }
                }
                let subs: Vec<(SubKey, Arc<SubPlan>)> = keys
                    .into_iter()
                    .filter_map(|k| reg.subs.get(&k).map(|s| (k, s.plan.clone())))
                    .collect();
                if !subs.is_empty() {
                    work.push((ti, subs));
                }
            }
        }
        if work.is_empty() {
            return;
        }
        let lag_ms = (chrono::Utc::now() - batch.started_at)
            .num_milliseconds()
            .max(0) as u64;
        self.stats.lag_ms.store(lag_ms, Relaxed);

        let mut out: Vec<(SubKey, Outcome)> = Vec::new();
        for (ti, subs) in work {
            let changes = &by_table[ti].1;
            let slow: Vec<&Arc<SubPlan>> = subs
                .iter()
                .map(|(_, p)| p)
                .filter(|p| matches!(p.visibility, Visibility::Sql(_)))
                .collect();
            let answers = match slow.first() {
                None => SqlAnswers::default(),
                Some(first) => {
                    self.stats.sql_checks.fetch_add(1, Relaxed);
                    match SqlAnswers::fetch(&self.store, &first.catalog, changes, &slow).await {
                        Ok(a) => a,
                        Err(e) => {
                            // Without an answer nothing may be sent to these subscribers, and
                            // skipping silently would lose changes: they resync instead.
                            tracing::warn!(error = %e, "visibility check failed; resyncing its subscribers");
                            for (key, plan) in &subs {
                                if matches!(plan.visibility, Visibility::Sql(_)) {
                                    out.push((*key, Outcome::Resync("visibility check failed")));
                                }
                            }
                            SqlAnswers::default()
                        }
                    }
                }
            };
            let mut cache = ItemCache::default();
            for (key, plan) in &subs {
                if matches!(plan.visibility, Visibility::Sql(_))
                    && out.iter().any(|(k, _)| k == key)
                {
                    continue;
                }
                let outcome = evaluate(plan, changes, &answers, cursor, &mut cache);
                if !matches!(outcome, Outcome::Nothing) {
                    out.push((*key, outcome));
                }
            }
        }
        if out.is_empty() {
            return;
        }
        let mut reg = self.lock();
        let mut lagging: Vec<ConnId> = Vec::new();
        let mut resync: Vec<(SubKey, &str)> = Vec::new();
        for (key, outcome) in out {
            let Some(sub) = reg.subs.get_mut(&key) else {
                continue;
            };
            let frame = match outcome {
                Outcome::Nothing => continue,
                Outcome::Resync(reason) => {
                    resync.push((key, reason));
                    continue;
                }
                Outcome::Frame(f, n) => (f, n as u64),
            };
            let (frame, n) = frame;
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
        let mut reg = self.lock();
        let keys: Vec<SubKey> = reg.subs.keys().copied().collect();
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

/// The equality condition to file a subscription under: one that every row it can see
/// satisfies (from the visibility rule first, which is usually the most selective, e.g. the
/// owner), so a change only reaches subscriptions whose key it carries.
fn choose_index(plan: &SubPlan) -> Option<(String, ColumnKind, String)> {
    let mut conjuncts: Vec<&Pred> = Vec::new();
    if let Visibility::Fast(p) = &plan.visibility {
        conjuncts.push(p);
    }
    conjuncts.push(&plan.filter);
    conjuncts.into_iter().flat_map(|p| p.equalities()).next()
}

fn remove_sub(reg: &mut Registry, key: SubKey, stats: &RealtimeStats) -> Option<Sub> {
    let sub = reg.subs.remove(&key)?;
    stats.subscriptions.fetch_sub(1, Relaxed);
    if let Some(table) = reg.tables.get_mut(&sub.plan.table) {
        match &sub.indexed {
            Some((col, val)) => {
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
            None => {
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
