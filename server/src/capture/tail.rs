//! The live tail: one reader task per instance that follows the log from the watermark at
//! start-up and publishes each transaction to subscribers, woken by the doorbell, by
//! [`super::Capture::wake`], or by the poll interval, whichever comes first. It also probes
//! whether the watermark is held back and reports who holds it.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{read_batches, CaptureError, Cursor, LiveEvent, Shared};
use crate::{backoff::Backoff, readiness::Readiness};

pub(super) async fn run(
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    follow(&shared, &readiness, &shutdown).await;
    // Stop holding count-based retention back (best effort: the registration expires anyway).
    let leave = shared
        .store
        .unregister_reader(shared.instance, super::READER_TTL);
    let _ = tokio::time::timeout(Duration::from_secs(1), leave).await;
}

async fn follow(shared: &Arc<Shared>, readiness: &Readiness, shutdown: &CancellationToken) {
    let shared = shared.clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut last_probe: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    let mut registered: Option<(Instant, Cursor)> = None;
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
                if !backoff.wait(shutdown).await {
                    return;
                }
                continue;
            }
        }
        if last_probe.map_or(true, |t| t.elapsed() >= shared.config.lag_probe_interval) {
            last_probe = Some(Instant::now());
            probe_lag(&shared, &mut last_warning).await;
            check_tables(&shared, &mut registered).await;
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

/// How often an idle reader refreshes its registration (well within `READER_TTL`).
const REFRESH: Duration = Duration::from_secs(20);

/// Register how far this reader has read (retention will not prune past it), and check the
/// synced tables: log an S event for a schema or capture-state change the event trigger did
/// not see (no superuser at migration time), and count the tables capture is broken on.
async fn check_tables(shared: &Shared, registered: &mut Option<(Instant, Cursor)>) {
    let checked = async {
        // About once a second and only when it moved: each registration is a small write
        // transaction (an xid that briefly holds every reader's watermark).
        if let Some(pos) = current(shared) {
            let due = registered.map_or(true, |(at, p)| {
                at.elapsed() >= Duration::from_secs(1) && (p != pos || at.elapsed() >= REFRESH)
            });
            if due {
                shared
                    .store
                    .register_reader(shared.instance, (pos.xid(), pos.id()))
                    .await?;
                *registered = Some((Instant::now(), pos));
            }
        }
        let events = shared.store.check_synced().await?;
        let broken = shared.store.broken_synced().await?;
        Ok::<_, crate::store::StoreError>((events, broken))
    };
    match checked.await {
        Ok((events, broken)) => {
            for e in &events {
                shared.stats.schema_events.fetch_add(1, Relaxed);
                tracing::warn!(
                    table = %format!("{}.{}", e.schema, e.name),
                    event = %e.event,
                    status = %e.status,
                    "synced table changed outside rowcast; its subscribers resync"
                );
            }
            let before = shared.stats.broken_tables.swap(broken, Relaxed);
            if broken > 0 && before != broken {
                tracing::error!(
                    tables = broken,
                    "change capture is not working on some synced tables (triggers disabled or \
                     missing, key or _v dropped): their writes are not delivered; see `rowcast sync list`"
                );
            }
        }
        Err(e) => tracing::debug!(error = %e, "synced table check failed"),
    }
}

async fn probe_lag(shared: &Shared, last_warning: &mut Option<Instant>) {
    match shared.store.lag_probe().await {
        Ok(p) => {
            let held = p.held_age.map(|d| d.as_millis() as u64).unwrap_or(0);
            shared.stats.oldest_undelivered_ms.store(held, Relaxed);
            let pid = if held > 0 {
                p.oldest_xid_pid.unwrap_or(0)
            } else {
                0
            };
            shared.stats.blocking_pid.store(pid as i64, Relaxed);
            if held >= 5_000
                && last_warning.map_or(true, |t| t.elapsed() >= Duration::from_secs(10))
            {
                *last_warning = Some(Instant::now());
                tracing::warn!(
                    oldest_undelivered_ms = held,
                    blocking_pid = p.oldest_xid_pid,
                    blocking_database = p.oldest_xid_database.as_deref(),
                    blocking_xact_age_ms = p.oldest_xid_age.map(|d| d.as_millis() as u64),
                    "change delivery is held back by an open transaction (or a prepared one if no pid); \
                     changes are delayed, not lost"
                );
            }
        }
        Err(e) => tracing::debug!(error = %e, "lag probe failed"),
    }
}
