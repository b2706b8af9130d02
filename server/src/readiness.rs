//! Readiness: whether this instance can serve requests (database reachable, schema current),
//! as reported by `GET /ready` and used by the start-up retry loop.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::store::{migrate::Migration, Store};

/// Shared between the start-up task and `/ready`.
#[derive(Debug, Default)]
pub struct Readiness {
    started: AtomicBool,
    /// Start-up gave up: a migration was edited after it was applied, or failed.
    failed: AtomicBool,
}

/// The outcome of one readiness check.
#[derive(Debug, Clone)]
pub struct ReadinessReport {
    pub ready: bool,
    /// `ok`, `unreachable`, or `starting`.
    pub database: &'static str,
    /// `current`, `pending`, `failed`, or `unknown`.
    pub migrations: &'static str,
}

impl Readiness {
    /// Called once the start-up task has connected and migrated.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    /// Called when start-up stops retrying because the migrations cannot apply.
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    pub async fn check(
        &self,
        store: &Store,
        migrations: &[Migration],
        timeout: Duration,
    ) -> ReadinessReport {
        if self.failed.load(Ordering::SeqCst) {
            return ReadinessReport {
                ready: false,
                database: "ok",
                migrations: "failed",
            };
        }
        if !self.is_started() {
            return ReadinessReport {
                ready: false,
                database: "starting",
                migrations: "unknown",
            };
        }
        match tokio::time::timeout(timeout, store.migrations_current(migrations)).await {
            Ok(Ok(true)) => ReadinessReport {
                ready: true,
                database: "ok",
                migrations: "current",
            },
            Ok(Ok(false)) => ReadinessReport {
                ready: false,
                database: "ok",
                migrations: "pending",
            },
            Ok(Err(_)) | Err(_) => ReadinessReport {
                ready: false,
                database: "unreachable",
                migrations: "unknown",
            },
        }
    }
}
