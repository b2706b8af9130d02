//! Capture's numbers for logs and the metrics endpoint: plain atomics the reader, listener
//! and retention tasks update and anyone can read without locking.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Counters and gauges of one instance's capture tasks.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Age in milliseconds of the oldest committed change the reader cannot deliver yet
    /// because an older transaction is still open (0 when nothing is held back).
    pub oldest_undelivered_ms: AtomicU64,
    /// The backend holding the watermark back (pg_stat_activity.pid), or 0.
    pub blocking_pid: AtomicI64,
    /// Milliseconds from the start of the last delivered transaction to its delivery.
    pub last_delivery_ms: AtomicU64,
    pub batches_published: AtomicU64,
    pub changes_published: AtomicU64,
    /// Reads of the log (polls, wake-ups and continuation pages).
    pub reads: AtomicU64,
    pub read_errors: AtomicU64,
    pub notifications: AtomicU64,
    /// Successful LISTENs (1 + reconnects).
    pub listener_connects: AtomicU64,
    pub pruned: AtomicU64,
    /// Times the reader itself found its position below the retention floor.
    pub reader_resyncs: AtomicU64,
    /// Approximate rows in the change log, sampled by the retention task.
    pub log_rows: AtomicI64,
    /// Id of the retention floor (the largest pruned position), sampled with `log_rows`.
    pub floor_id: AtomicI64,
    /// Synced tables capture does not fully work on (triggers disabled or missing, key or
    /// `_v` gone), sampled by the reader's periodic check.
    pub broken_tables: AtomicI64,
    /// Schema or capture-state changes this instance's check logged itself (the event
    /// trigger logs most of them in the DDL's own transaction).
    pub schema_events: AtomicU64,
}

/// A plain copy of [`CaptureStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub oldest_undelivered_ms: u64,
    pub blocking_pid: Option<i32>,
    pub last_delivery_ms: u64,
    pub batches_published: u64,
    pub changes_published: u64,
    pub reads: u64,
    pub read_errors: u64,
    pub notifications: u64,
    pub listener_connects: u64,
    pub pruned: u64,
    pub reader_resyncs: u64,
}

impl CaptureStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let pid = self.blocking_pid.load(Relaxed);
        StatsSnapshot {
            oldest_undelivered_ms: self.oldest_undelivered_ms.load(Relaxed),
            blocking_pid: (pid > 0).then_some(pid as i32),
            last_delivery_ms: self.last_delivery_ms.load(Relaxed),
            batches_published: self.batches_published.load(Relaxed),
            changes_published: self.changes_published.load(Relaxed),
            reads: self.reads.load(Relaxed),
            read_errors: self.read_errors.load(Relaxed),
            notifications: self.notifications.load(Relaxed),
            listener_connects: self.listener_connects.load(Relaxed),
            pruned: self.pruned.load(Relaxed),
            reader_resyncs: self.reader_resyncs.load(Relaxed),
        }
    }
}
