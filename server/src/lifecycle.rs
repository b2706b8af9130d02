//! The server's lifecycle as long-lived work sees it: the drain that begins on SIGTERM and
//! the tasks shutdown waits for.
//!
//! Drain, in order (see docs/operations.md, "Shutdown and drain"):
//! 1. the shutdown token is cancelled: the HTTP listener stops accepting (new connections are
//!    refused, so a load balancer sends clients elsewhere, and health checks fail);
//! 2. in-flight HTTP requests finish; idle keep-alive connections are closed;
//! 3. every long-lived session spawned through [`Lifecycle::spawn`] sees
//!    [`Lifecycle::draining`] resolve and ends itself (a WebSocket session sends its
//!    "reconnect elsewhere and resume" close code);
//! 4. shutdown waits for all of it, at most ROWCAST_SHUTDOWN_TIMEOUT, then the process exits.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};

/// A handle on the app's shutdown token and task tracker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Lifecycle {
    pub fn new(shutdown: CancellationToken, tasks: TaskTracker) -> Lifecycle {
        Lifecycle { shutdown, tasks }
    }

    /// Spawn a task that graceful shutdown waits for (bounded). The task must watch
    /// [`Lifecycle::draining`] and finish promptly once it resolves.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Resolves when the drain begins.
    pub fn draining(&self) -> WaitForCancellationFutureOwned {
        self.shutdown.clone().cancelled_owned()
    }

    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The tracker itself, for a module that spawns its own tasks (e.g. a realtime router
    /// built from a `TaskTracker` and a `CancellationToken`).
    pub fn tracker(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// The token itself, for code that selects on it in a loop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Duration,
    };

    use super::*;

    /// A session spawned through the lifecycle hears the drain and shutdown waits for its
    /// goodbye, as a WebSocket session's close frame will need.
    #[tokio::test]
    async fn shutdown_waits_for_sessions_to_say_goodbye() {
        let (token, tasks) = (CancellationToken::new(), TaskTracker::new());
        let lifecycle = Lifecycle::new(token.clone(), tasks.clone());
        let said_goodbye = Arc::new(AtomicBool::new(false));
        let flag = said_goodbye.clone();
        let draining = lifecycle.draining();
        lifecycle.spawn(async move {
            draining.await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        assert!(!lifecycle.is_draining());
        token.cancel();
        assert!(lifecycle.is_draining());
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .unwrap();
        assert!(said_goodbye.load(Ordering::SeqCst));
    }
}
