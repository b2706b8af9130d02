//! Limits on failed sign-ins, per account and per client address, so that guessing
//! passwords is slow. Counts live in this instance's memory: with several instances behind a
//! load balancer each enforces its own limits (documented in docs/auth.md).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The limits (settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failed sign-ins allowed per account in one window.
    pub per_account: u32,
    /// Failed sign-ins allowed per client address in one window.
    pub per_address: u32,
    pub window: Duration,
}

/// Above this many tracked keys, expired ones are swept on the next failure.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Fixed-window counters of failed sign-ins.
#[derive(Debug)]
pub struct SignInLimiter {
    limits: Limits,
    windows: Mutex<HashMap<Key, Window>>,
}

impl SignInLimiter {
    pub fn new(limits: Limits) -> SignInLimiter {
        SignInLimiter {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when the account or the address has used up its failures for now.
    pub fn check(&self, account: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let windows = self.lock();
        let mut wait = Duration::ZERO;
        for (key, limit) in self.keys(account, address) {
            if let Some(w) = windows.get(&key) {
                let elapsed = now.saturating_duration_since(w.started);
                if elapsed < self.limits.window && w.failures >= limit {
                    wait = wait.max(self.limits.window - elapsed);
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Count one failed sign-in against the account and the address.
    pub fn record_failure(&self, account: &str, address: IpAddr, now: Instant) {
        let mut windows = self.lock();
        if windows.len() >= SWEEP_AT {
            let window = self.limits.window;
            windows.retain(|_, w| now.saturating_duration_since(w.started) < window);
        }
        for (key, _) in self.keys(account, address) {
            let w = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.saturating_duration_since(w.started) >= self.limits.window {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        }
    }

    /// A successful sign-in clears the account's failures (not the address's).
    pub fn record_success(&self, account: &str) {
        self.lock().remove(&Key::Account(normalize(account)));
    }

    fn keys(&self, account: &str, address: IpAddr) -> [(Key, u32); 2] {
        [
            (Key::Account(normalize(account)), self.limits.per_account),
            (Key::Address(address), self.limits.per_address),
        ]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Window>> {
        // A panic while holding the lock leaves plain counters behind; keep using them.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn normalize(account: &str) -> String {
    account.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_account_and_per_address_then_recovers() {
        let limiter = SignInLimiter::new(Limits {
            per_account: 2,
            per_address: 3,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.check("x@y.z", a, t0).is_ok());
        limiter.record_failure("x@y.z", a, t0);
        limiter.record_failure("X@Y.Z", b, t0);
        // The account is locked from every address, case-insensitively.
        let wait = limiter.check("x@Y.z", a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        assert!(limiter.check("other@y.z", a, t0).is_ok());
        // The address a has one failure; two more on other accounts lock it.
        limiter.record_failure("p@y.z", a, t0);
        limiter.record_failure("q@y.z", a, t0);
        assert!(limiter.check("fresh@y.z", a, t0).is_err());
        assert!(limiter.check("fresh@y.z", b, t0).is_ok());
        // After the window everything is allowed again.
        let later = t0 + Duration::from_secs(61);
        assert!(limiter.check("x@y.z", a, later).is_ok());
        limiter.record_success("x@y.z");
    }
}
