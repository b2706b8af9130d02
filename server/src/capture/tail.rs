//! The live tail: one reader task per instance that follows the log from the watermark at
//! start-up and publishes each transaction to subscribers, woken by the doorbell, by
//! [`super::Capture::wake`], or by the poll interval, whichever comes first. It does nothing
//! else: diagnostics and the reader's registration run beside it ([`super::health`]), so no
//! probe or registration write ever delays a delivery.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{read_batches, CaptureError, Cursor, LiveEvent, Shared};
use crate::{backoff::Backoff, readiness::Readiness};

pub(super) async fn run(
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if !readiness.is_started() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        }
        match catch_up(&shared).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                shared.stats.read_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "change log read failed; retrying");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        }
        let wait = shared.next_wait();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Read and publish everything below the watermark.
async fn catch_up(shared: &Shared) -> Result<(), CaptureError> {
    let mut pos = match current(shared) {
        Some(p) => p,
        None => initialize(shared).await?,
    };
    loop {
        shared.stats.reads.fetch_add(1, Relaxed);
        let read =
            match read_batches(&shared.store, pos, Cursor::END, shared.config.page_size).await {
                Ok(r) => r,
                Err(CaptureError::ResyncRequired { floor, .. }) => {
                    tracing::error!(
                        position = %pos, %floor,
                        "the reader fell behind retention; subscribers must resync"
                    );
                    shared.stats.reader_resyncs.fetch_add(1, Relaxed);
                    let mut p = lock(shared);
                    *p = Some(floor);
                    let _ = shared.sender.send(LiveEvent::ResyncRequired { floor });
                    pos = floor;
                    continue;
                }
                Err(e) => return Err(e),
            };
        let now = chrono::Utc::now();
        for batch in read.batches {
            let n = batch.changes.len() as u64;
            let delay = (now - batch.started_at).num_milliseconds().max(0) as u64;
            let cursor = batch.cursor();
            {
                let mut p = lock(shared);
                *p = Some(cursor);
                // No receivers is fine: nobody is listening yet.
                let _ = shared.sender.send(LiveEvent::Batch(Arc::new(batch)));
            }
            shared.stats.batches_published.fetch_add(1, Relaxed);
            shared.stats.changes_published.fetch_add(n, Relaxed);
            shared.stats.last_delivery_ms.store(delay, Relaxed);
        }
        {
            let mut p = lock(shared);
            if p.map_or(true, |c| c < read.position) {
                *p = Some(read.position);
            }
        }
        pos = read.position;
        if !read.more {
            return Ok(());
        }
    }
}

/// First read after start: apply the doorbell setting and start "live from now".
async fn initialize(shared: &Shared) -> Result<Cursor, CaptureError> {
    let started = shared.store.start_tail(shared.config.notify).await?;
    if let Err(e) = started.doorbell {
        // Only the owner of rowcast.change_log may switch it; capture still works (the poll
        // interval bounds latency), so say so and carry on.
        tracing::warn!(error = %e, notify = shared.config.notify, "cannot switch the NOTIFY doorbell");
    }
    let start = Cursor::before_xid(started.watermark);
    {
        let mut p = lock(shared);
        *p = Some(start);
    }
    shared.initialized.send_replace(true);
    tracing::info!(position = %start, notify = shared.config.notify, "change capture reader started");
    Ok(start)
}

fn current(shared: &Shared) -> Option<Cursor> {
    *lock(shared)
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Option<Cursor>> {
    shared.position.lock().unwrap_or_else(|p| p.into_inner())
}
