//! Retention: prunes the oldest changes by age and/or count in small batches (short
//! statements that touch only rows no writer touches again, so writers never wait), and
//! records the largest pruned position as the floor below which cursors must resync.
//! Count-based pruning stops at the slowest connected live reader (this instance's position
//! and every instance's registration in `rowcast.live_readers`), so a burst of writes cannot
//! make a prune overtake a reader and push its subscribers into a resync.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{CaptureError, Cursor, Shared, READER_TTL};
use crate::readiness::Readiness;

const BATCH: i64 = 1000;

pub(super) async fn run(
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let prunes = shared.config.retention.is_some() || shared.config.retention_max_changes.is_some();
    let mut first = true;
    loop {
        let pause = if first {
            Duration::from_millis(200)
        } else {
            shared.config.retention_interval
        };
        first = false;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        if !readiness.is_started() {
            first = true;
            continue;
        }
        sample_size(&shared).await;
        if !prunes {
            continue;
        }
        let pruning = prune_all(&shared);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = pruning => match r {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "change log retention"),
                Err(e) => tracing::warn!(error = %e, "change log retention failed; will retry"),
            },
        }
    }
}

/// Refresh the log-size and floor numbers behind `/metrics`; failures only skip a sample.
async fn sample_size(shared: &Shared) {
    if let Ok((rows, floor)) = shared.store.change_log_size().await {
        shared.stats.log_rows.store(rows, Relaxed);
        shared.stats.floor_id.store(floor, Relaxed);
    }
}

/// Prune in batches until nothing more qualifies.
pub(super) async fn prune_all(shared: &Shared) -> Result<u64, CaptureError> {
    let mut total = 0;
    loop {
        // Never past what this instance's live tail has read (other instances are covered
        // by their registrations in rowcast.live_readers).
        let cap =
            (*shared.position.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or(Cursor::END);
        let pruned = shared
            .store
            .prune_changes(
                shared.config.retention,
                shared.config.retention_max_changes,
                BATCH,
                (cap.xid(), cap.id()),
                READER_TTL,
                shared.instance,
            )
            .await?;
        total += pruned.deleted;
        shared.stats.pruned.fetch_add(pruned.deleted, Relaxed);
        if pruned.deleted < BATCH as u64 {
            return Ok(total);
        }
        // Leave room for other work between batches.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
