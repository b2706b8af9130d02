//! Change capture: the durable, gap-free log of every committed change to synced tables,
//! and the Rust API the rest of the server (realtime) consumes it through.
//!
//! # How it works
//! Triggers installed by `rowcast.enable_sync(table)` append one row per change to
//! `rowcast.change_log` in the writer's own transaction (migrations `0002_capture.sql` and
//! `0005_capture_safety.sql`: statement-level over transition tables, schema changes and
//! stopped capture as [`Op::Schema`] events, the coalesced doorbell). The
//! log is read in `(xid, id)` order and only below the snapshot-xmin watermark, so a
//! transaction that commits late delays delivery but is never skipped. Each row carries a
//! per-row `version` (the table's `_v` column) that follows each key's commit order;
//! consumers apply last-writer-wins by version. NOTIFY is only a doorbell. The guarantees and
//! their tests are in `docs/adr/0001-change-capture.md`.
//!
//! # API for consumers (realtime)
//! - [`Capture`]: the per-instance handle (cheap to clone). Built by `app::start` and
//!   available as `Running::capture` and `HttpState::capture`.
//! - **Live tail:** [`Capture::subscribe`] returns a [`LiveSubscription`]: the position
//!   `start` at which it begins and a receiver of [`LiveEvent`]s carrying every transaction
//!   after `start`, in log order. One reader task per instance feeds all subscribers; a
//!   receiver that lags (`RecvError::Lagged`) must catch up from its last cursor with
//!   [`Capture::changes_between`] or resubscribe.
//! - **Catch-up / resume:** [`Capture::changes_after`] / [`Capture::changes_between`] are
//!   finite streams of [`ChangeBatch`]es (one transaction each, read in pages) and fail
//!   with [`CaptureError::ResyncRequired`] when the cursor is older than the retention floor.
//! - **Gapless hand-offs:**
//!   - resume: `let sub = capture.subscribe().await;` then replay
//!     `changes_between(client_cursor, sub.start)`, then forward `sub.events` (all after
//!     `sub.start`): nothing missing, nothing twice.
//!   - snapshot: in a `REPEATABLE READ` transaction call [`snapshot_cursor`] and read the
//!     table (rows carry `_v`); then replay `changes_between(snapshot_cursor, sub.start)`
//!     (if the snapshot cursor is older) and forward live events. Changes the snapshot
//!     already contains are re-sent; their versions make re-applying them a no-op.
//! - [`Cursor`]: opaque, ordered, `Display`/`FromStr` for the wire.
//! - [`CaptureStats`]: lag and counters as atomics for logs and metrics.
//! - [`sync`]: enable/disable/list synced tables (also `rowcast sync …` and SQL).

mod change;
mod cursor;
mod health;
mod listener;
mod retention;
mod stats;
pub mod sync;
mod tail;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use change::{Change, ChangeBatch, LiveEvent, Op, TableName};
pub use cursor::{Cursor, CursorParseError, LogId, Unplaceable, WireCursor};
pub use stats::{CaptureStats, StatsSnapshot};

use crate::{
    protocol::{ApiError, ErrorCode},
    readiness::Readiness,
    store::{cursors, Store, StoreError},
};

pub use crate::config::CaptureConfig;

/// Failures of capture reads.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Changes after `cursor` were pruned (the retention floor is `floor`): the consumer
    /// must resync from a snapshot.
    #[error("cursor {cursor} is older than the retained history (floor {floor}); resync required")]
    ResyncRequired { cursor: Cursor, floor: Cursor },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log held something the server cannot understand (a bug or manual tampering).
    #[error("corrupt change log row: {0}")]
    Corrupt(String),
}

impl From<CaptureError> for ApiError {
    fn from(e: CaptureError) -> Self {
        match e {
            CaptureError::ResyncRequired { .. } => ApiError::new(
                ErrorCode::ResyncRequired,
                "the cursor is older than the retained history; resync",
            ),
            CaptureError::Store(e) => e.into(),
            CaptureError::Corrupt(msg) => {
                tracing::error!(%msg, "corrupt change log");
                ApiError::internal()
            }
        }
    }
}

/// A live subscription to the reader's stream.
#[derive(Debug)]
pub struct LiveSubscription {
    /// Every event on `events` is after this position; everything up to it was already
    /// published before the subscription began (replay it with `changes_between`).
    pub start: Cursor,
    pub events: broadcast::Receiver<LiveEvent>,
}

struct Shared {
    store: Store,
    config: CaptureConfig,
    sender: broadcast::Sender<LiveEvent>,
    /// The reader's position; `None` until it has read the watermark once. Publishing and
    /// subscribing both hold this lock, which is what makes `LiveSubscription::start` exact.
    position: Mutex<Option<Cursor>>,
    initialized: watch::Sender<bool>,
    wake: Notify,
    stats: CaptureStats,
    /// This instance's id in `rowcast.live_readers` (see retention).
    instance: uuid::Uuid,
    /// Until when the reader polls at [`HOT_POLL`] because the doorbell rang (see
    /// [`listener`]).
    hot_until: Mutex<Option<std::time::Instant>>,
}

/// How often the reader looks at the log while writes are arriving (after a doorbell). The
/// doorbell trigger rings at most once per 20 ms per database (migration 0005), so writers
/// that commit right after a ring are picked up by these reads rather than by their own bell.
pub const HOT_POLL: Duration = Duration::from_millis(5);
/// How long after a doorbell the reader keeps polling at [`HOT_POLL`]; comfortably longer
/// than the trigger's 20 ms ring interval plus a commit's flush, so a steady stream of
/// writes keeps it hot without every transaction notifying.
pub const HOT_WINDOW: Duration = Duration::from_millis(100);
/// A live reader not heard of for this long no longer holds count-based retention back.
pub const READER_TTL: Duration = Duration::from_secs(60);

/// The capture handle of one server instance. Cheap to clone.
#[derive(Clone)]
pub struct Capture {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("position", &self.position())
            .finish()
    }
}

impl Shared {
    /// The doorbell rang: read now and keep reading every [`HOT_POLL`] for [`HOT_WINDOW`].
    fn ring(&self) {
        let until = std::time::Instant::now() + HOT_WINDOW;
        *self.hot_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
        self.wake.notify_one();
    }

    /// How long the reader may wait before its next look at the log.
    fn next_wait(&self) -> Duration {
        let base = self.config.poll_interval;
        let hot = *self.hot_until.lock().unwrap_or_else(|p| p.into_inner());
        match hot {
            Some(t) if t > std::time::Instant::now() => base.min(HOT_POLL),
            _ => base,
        }
    }
}

impl Capture {
    /// A handle reading through `store`. No task runs until [`Capture::spawn`].
    pub fn new(store: Store, config: CaptureConfig) -> Capture {
        let (sender, _) = broadcast::channel(config.live_capacity.max(1));
        let (initialized, _) = watch::channel(false);
        Capture {
            shared: Arc::new(Shared {
                store,
                config,
                sender,
                position: Mutex::new(None),
                initialized,
                wake: Notify::new(),
                stats: CaptureStats::default(),
                instance: uuid::Uuid::new_v4(),
                hot_until: Mutex::new(None),
            }),
        }
    }

    /// Start this instance's background tasks on `tasks`: the reader (live tail), its health
    /// checks and registration, the LISTEN connection (when NOTIFY is on) and retention. They wait until `readiness`
    /// says the schema is current, and stop when `shutdown` is cancelled.
    pub fn spawn(
        &self,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
        readiness: Arc<Readiness>,
    ) {
        let s = &self.shared;
        tasks.spawn(tail::run(s.clone(), readiness.clone(), shutdown.clone()));
        tasks.spawn(health::run(s.clone(), readiness.clone(), shutdown.clone()));
        if s.config.notify {
            tasks.spawn(listener::run(
                s.clone(),
                s.store.pg_config().clone(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(retention::run(s.clone(), readiness, shutdown.clone()));
    }

    /// Subscribe to the live tail. Waits until the reader has its first position (right
    /// after start-up, once the database is reachable).
    pub async fn subscribe(&self) -> LiveSubscription {
        let mut init = self.shared.initialized.subscribe();
        loop {
            {
                let pos = self
                    .shared
                    .position
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if let Some(start) = *pos {
                    return LiveSubscription {
                        start,
                        events: self.shared.sender.subscribe(),
                    };
                }
            }
            if init.changed().await.is_err() {
                // The sender lives in `shared`, which we hold; unreachable in practice.
                tokio::task::yield_now().await;
            }
        }
    }

    /// The reader's current position, if it has started.
    pub fn position(&self) -> Option<Cursor> {
        *self
            .shared
            .position
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Wake the reader now (e.g. right after this instance committed a write), instead of
    /// waiting for NOTIFY or the poll interval.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Lag and counters.
    pub fn stats(&self) -> &CaptureStats {
        &self.shared.stats
    }

    /// Every committed change after `after`, up to the current watermark, as transaction-sized
    /// batches in log order. The stream ends when it has caught up. Fails with
    /// [`CaptureError::ResyncRequired`] if `after` is older than the retention floor.
    pub fn changes_after(
        &self,
        after: Cursor,
    ) -> impl Stream<Item = Result<ChangeBatch, CaptureError>> + Send + 'static {
        self.changes_between(after, Cursor::END)
    }

    /// Like [`Capture::changes_after`] but stops at `until` (inclusive), which must be a batch
    /// boundary such as [`LiveSubscription::start`] or a batch's [`ChangeBatch::cursor`].
    pub fn changes_between(
        &self,
        after: Cursor,
        until: Cursor,
    ) -> impl Stream<Item = Result<ChangeBatch, CaptureError>> + Send + 'static {
        let store = self.shared.store.clone();
        let page = self.shared.config.page_size;
        futures::stream::try_unfold(Some(after), move |state| {
            let store = store.clone();
            async move {
                let Some(pos) = state else {
                    return Ok::<_, CaptureError>(None);
                };
                if pos >= until {
                    return Ok(None);
                }
                let read = read_batches(&store, pos, until, page).await?;
                let next = read.more.then_some(read.position);
                Ok(Some((read.batches, next)))
            }
        })
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// The current watermark as a cursor: every change before it has committed and is
    /// readable; nothing can still appear before it.
    pub async fn watermark(&self) -> Result<Cursor, CaptureError> {
        Ok(Cursor::before_xid(self.shared.store.watermark().await?))
    }

    /// The retention floor: cursors below it get [`CaptureError::ResyncRequired`].
    pub async fn floor(&self) -> Result<Cursor, CaptureError> {
        let (x, i) = self.shared.store.change_floor().await?;
        Ok(Cursor::new(x, i))
    }

    /// Run retention once now (the background task does this every retention interval);
    /// returns how many changes were pruned.
    pub async fn prune_now(&self) -> Result<u64, CaptureError> {
        retention::prune_all(&self.shared).await
    }
}

/// The cursor of a snapshot: call inside a `REPEATABLE READ` transaction; replaying
/// changes after it covers every transaction the snapshot cannot see.
pub async fn snapshot_cursor(tx: &tokio_postgres::Transaction<'_>) -> Result<Cursor, CaptureError> {
    Ok(Cursor::before_xid(cursors::snapshot_watermark(tx).await?))
}

/// One page of the log read as whole transactions.
struct Read {
    batches: Vec<ChangeBatch>,
    /// Where the next read starts.
    position: Cursor,
    /// Whether there may be more below the watermark right now.
    more: bool,
}

async fn read_batches(
    store: &Store,
    after: Cursor,
    until: Cursor,
    page_size: i64,
) -> Result<Read, CaptureError> {
    let page = store
        .read_changes(
            (after.xid(), after.id()),
            (until.xid(), until.id()),
            page_size,
        )
        .await?;
    let floor = Cursor::new(page.floor.0, page.floor.1);
    if floor > after {
        return Err(CaptureError::ResyncRequired {
            cursor: after,
            floor,
        });
    }
    // A full page may end inside a transaction: the store read the rest of it, so no
    // transaction is split across reads.
    let full = page.full;
    let batches = change::group(page.rows)?;
    let mut position = batches.last().map(|b| b.cursor()).unwrap_or(after);
    if !full {
        // Everything in (after, until] below the watermark has been read.
        let caught_up = Cursor::before_xid(page.watermark).min(until);
        position = position.max(caught_up);
    }
    Ok(Read {
        batches,
        position,
        more: full,
    })
}
