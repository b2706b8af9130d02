//! Beside the live tail, never in its way: once per `lag_probe_interval` this task registers
//! how far the tail has read (so count-based retention does not prune past it), checks the
//! synced tables for schema changes and stopped capture, and probes whether the watermark
//! is held back and by whom. Each of these is a round trip, and the registration a small
//! write transaction with its commit flush: run in the reader's loop they delayed every
//! delivery that arrived meanwhile, once a second.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{Cursor, Shared};
use crate::readiness::Readiness;

pub(super) async fn run(
    shared: Arc<Shared>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let mut last_warning: Option<Instant> = None;
    let mut registered: Option<(Instant, Cursor)> = None;
    loop {
        let pause = if readiness.is_started() {
            shared.config.lag_probe_interval
        } else {
            Duration::from_millis(50)
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        if !readiness.is_started() {
            continue;
        }
        let checks = async {
            probe_lag(&shared, &mut last_warning).await;
            check_tables(&shared, &mut registered).await;
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = checks => {}
        }
    }
    // Stop holding count-based retention back (best effort: the registration expires anyway).
    if registered.is_some() {
        let leave = shared
            .store
            .unregister_reader(shared.instance, super::READER_TTL);
        let _ = tokio::time::timeout(Duration::from_secs(1), leave).await;
    }
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
        let position = *shared.position.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pos) = position {
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
