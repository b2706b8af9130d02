//! The one retry delay of the server: capped exponential backoff with jitter, used by every
//! loop that reconnects or retries against Postgres (startup, the LISTEN connection, the
//! change-log tail, the REST schema reloader).
//!
//! Jitter matters because many instances lose the database at the same moment (a failover,
//! a restart) and would otherwise come back in lockstep.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Delays of `initial`, `2 × initial`, … up to `max`, each drawn uniformly from
/// `[delay / 2, delay]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the one after it doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// After a success: the next failure waits the initial delay again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Wait the next delay, or less if shutdown begins. Returns `false` on shutdown, so a
    /// loop can write `if !backoff.wait(&shutdown).await { return; }`.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let bases = [100u64, 200, 350, 350];
        for base in bases {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_false_as_soon_as_shutdown_begins() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let token = CancellationToken::new();
        let waiter = {
            let token = token.clone();
            tokio::spawn(async move { b.wait(&token).await })
        };
        tokio::task::yield_now().await;
        token.cancel();
        assert!(!waiter.await.expect("waiter"));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_true_after_the_delay() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let token = CancellationToken::new();
        let start = tokio::time::Instant::now();
        assert!(b.wait(&token).await);
        assert!(start.elapsed() >= Duration::from_millis(500));
    }
}
