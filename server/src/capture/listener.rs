//! The doorbell listener: one dedicated (non-pooled) connection per instance that LISTENs on
//! `rowcast_changes` and wakes the reader. A notification lost while it is down loses
//! nothing: after every (re)LISTEN it wakes the reader once to catch up from the log.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use futures::StreamExt;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::backoff::Backoff;

#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error("{}", crate::store::connect::describe(.0))]
    Pg(#[from] tokio_postgres::Error),
    #[error("the server closed the connection")]
    Closed,
}

/// The channel the doorbell trigger notifies (see migration 0002).
pub const CHANNEL: &str = "rowcast_changes";
/// `application_name` of the listener's backend, so operators (and tests) can find it.
pub const APPLICATION_NAME: &str = "rowcast-listen";

pub(super) async fn run(
    shared: Arc<Shared>,
    mut pg_config: crate::store::Connector,
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
    pg_config: &crate::store::Connector,
    shutdown: &CancellationToken,
) -> Result<(), ListenError> {
    let (client, mut connection) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        c = pg_config.connect() => c?,
    };
    // The connection must be polled for the client's LISTEN to complete, and polling it
    // through poll_message is what surfaces notifications.
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    {
        let sql = format!("listen {CHANNEL}");
        let listen = client.batch_execute(&sql);
        tokio::pin!(listen);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = &mut listen => { r?; break; }
                m = messages.next() => match m {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(ListenError::Closed),
                },
            }
        }
    }
    shared.stats.listener_connects.fetch_add(1, Relaxed);
    tracing::info!("listening for change notifications");
    // Anything committed while we were not listening is in the log: catch up once.
    shared.wake.notify_one();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = messages.next() => match m {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    shared.stats.notifications.fetch_add(1, Relaxed);
                    shared.ring();
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ListenError::Closed),
            },
        }
    }
}
