//! The doorbell listener: one dedicated (non-pooled) connection per instance that LISTENs on
//! `rowcast_changes` and wakes the reader. A notification lost while it is down loses
//! nothing: after every (re)LISTEN it wakes the reader once to catch up from the log.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::{
    backoff::Backoff,
    store::{listen::Listener, Connector, StoreError},
};

/// The channel the doorbell trigger notifies (see migration 0002).
pub(super) const CHANNEL: &str = "rowcast_changes";
/// `application_name` of the listener's backend, so operators (and tests) can find it.
pub(super) const APPLICATION_NAME: &str = "rowcast-listen";

pub(super) async fn run(
    shared: Arc<Shared>,
    mut pg_config: Connector,
    shutdown: CancellationToken,
) {
    pg_config.application_name(APPLICATION_NAME);
    pg_config.keepalives(true);
    pg_config.keepalives_idle(Duration::from_secs(30));
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        let started = Instant::now();
        match listen(&shared, &pg_config, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                // A connection that lived a while was healthy: start the delays over.
                if started.elapsed() > Duration::from_secs(30) {
                    backoff.reset();
                }
                tracing::warn!(error = %e, "LISTEN connection lost; the poll interval covers until it is back");
            }
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// One connection's life. `Ok` only on shutdown.
async fn listen(
    shared: &Shared,
    pg_config: &Connector,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let (mut listener, driver) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        c = Listener::connect(pg_config) => c?,
    };
    // The driver is polled here rather than spawned, so it ends with this function.
    tokio::pin!(driver);
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = listener.listen(CHANNEL) => r?,
        r = &mut driver => return Err(ended(r)),
    }
    shared.stats.listener_connects.fetch_add(1, Relaxed);
    tracing::info!("listening for change notifications");
    // Anything committed while we were not listening is in the log: catch up once.
    shared.wake.notify_one();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            d = listener.next() => match d {
                Some(()) => {
                    shared.stats.notifications.fetch_add(1, Relaxed);
                    shared.ring();
                }
                None => return Err(ended((&mut driver).await)),
            },
            r = &mut driver => return Err(ended(r)),
        }
    }
}

/// The error a connection's driver ended with (it only ends on its own when the connection
/// is lost).
fn ended(r: Result<(), StoreError>) -> StoreError {
    r.err()
        .unwrap_or_else(|| StoreError::Unavailable("the server closed the connection".into()))
}
