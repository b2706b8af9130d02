//! Feeding the router from the live tail: one task per instance follows change capture's
//! broadcast in log order. If it falls behind the broadcast (`Lagged`), it subscribes again
//! and replays the gap from the log, so the router never misses a transaction; if history
//! it still needed was pruned, every subscription is told to resync.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use super::{feed::LiveEvent, Realtime};
use crate::capture::{Capture, CaptureError, Op};

pub async fn follow(rt: Arc<Realtime>, capture: Capture) {
    let shutdown = rt.shutdown.clone();
    let mut started = false;
    'subscribe: loop {
        let sub = tokio::select! {
            s = capture.subscribe() => s,
            _ = shutdown.cancelled() => return,
        };
        if !started {
            rt.router.set_position(sub.start);
            rt.router.set_ready();
            started = true;
        } else {
            let pos = rt.router.position();
            if pos < sub.start {
                let mut replay = capture.changes_between(pos, sub.start);
                loop {
                    let next = tokio::select! {
                        b = replay.next() => b,
                        _ = shutdown.cancelled() => return,
                    };
                    match next {
                        None => break,
                        Some(Ok(batch)) => rt.router.dispatch(&batch).await,
                        Some(Err(CaptureError::ResyncRequired { .. })) => {
                            rt.router.resync_all("history pruned");
                            break;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "realtime replay after lag failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                _ = shutdown.cancelled() => return,
                            }
                            continue 'subscribe;
                        }
                    }
                }
            }
            rt.router.advance_to(sub.start);
        }
        let mut events = sub.events;
        loop {
            let ev = tokio::select! {
                e = events.recv() => e,
                _ = shutdown.cancelled() => return,
            };
            match ev {
                Ok(LiveEvent::Batch(batch)) => {
                    // A schema change: subscriptions that restart after it must see the
                    // table's new shape, not a cached one.
                    for c in batch.changes.iter().filter(|c| c.op == Op::Schema) {
                        rt.forget_catalog(&c.table);
                    }
                    rt.router.dispatch(&batch).await;
                    // The tail publishes a page of transactions at once; let connection
                    // tasks drain between them so a burst is not mistaken for a slow client.
                    tokio::task::yield_now().await;
                }
                Ok(LiveEvent::ResyncRequired { floor }) => {
                    rt.router.resync_all("history pruned");
                    rt.router.advance_to(floor);
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "realtime router lagged behind the live tail; replaying from the log"
                    );
                    continue 'subscribe;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}
