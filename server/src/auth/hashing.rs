//! The password-hashing pool: bounds how many argon2 hashes run at once so that their memory
//! stays within a budget whatever clients send. Each running hash holds a permit and one of
//! a fixed set of memory areas (allocated once, reused, never returned to the allocator, so
//! glibc's arenas cannot keep growing); hashing runs on the blocking thread pool. Requests
//! beyond the permits wait in a short queue; beyond that, or after waiting too long, they
//! are refused (`rate-limited` with `Retry-After`).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use argon2::Block;
use tokio::sync::Semaphore;

use super::password::Passwords;

/// Requests allowed to wait for a permit, per permit.
const QUEUE_PER_PERMIT: usize = 4;
/// Longest a request waits for a permit before it is refused.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Why a hash did not run.
#[derive(Debug, thiserror::Error)]
pub enum HashPoolError {
    #[error("too many password hashes in progress")]
    Busy,
    #[error("the password hashing task failed")]
    Failed,
}

#[derive(Debug)]
pub struct HashPool {
    passwords: Arc<Passwords>,
    permits: Arc<Semaphore>,
    size: usize,
    waiting: AtomicUsize,
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl HashPool {
    /// A pool running at most `budget_bytes / memory per hash` hashes at once (at least one).
    pub fn new(passwords: Passwords, budget_bytes: usize) -> HashPool {
        let size = (budget_bytes / passwords.memory_bytes().max(1)).max(1);
        HashPool {
            passwords: Arc::new(passwords),
            permits: Arc::new(Semaphore::new(size)),
            size,
            waiting: AtomicUsize::new(0),
            memory: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// How many hashes may run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// Run `work` with the passwords and a memory area, on a blocking thread, once a permit
    /// is free.
    pub async fn run<T, F>(&self, work: F) -> Result<T, HashPoolError>
    where
        T: Send + 'static,
        F: FnOnce(&Passwords, &mut Vec<Block>) -> T + Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.size * QUEUE_PER_PERMIT {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(HashPoolError::Busy);
                }
                let waited =
                    tokio::time::timeout(MAX_WAIT, self.permits.clone().acquire_owned()).await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                match waited {
                    Ok(Ok(p)) => p,
                    _ => return Err(HashPoolError::Busy),
                }
            }
        };
        let passwords = self.passwords.clone();
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // With a permit there are at most `size` areas in use, so the set never grows
            // past `size`.
            let mut memory = lock(&pool).pop().unwrap_or_else(|| passwords.new_memory());
            let out = work(&passwords, &mut memory);
            lock(&pool).push(memory);
            out
        })
        .await
        .map_err(|_| HashPoolError::Failed)
    }
}

fn lock(pool: &Mutex<Vec<Vec<Block>>>) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
    // A panic while holding the lock leaves plain buffers behind; keep using them.
    pool.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::HashParams;

    fn pool(budget_kib: usize) -> HashPool {
        let params = HashParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        HashPool::new(Passwords::new(params, 8).unwrap(), budget_kib * 1024)
    }

    #[test]
    fn size_comes_from_the_budget() {
        assert_eq!(pool(4096).size(), 4);
        assert_eq!(
            pool(100).size(),
            1,
            "a budget below one hash still allows one"
        );
    }

    #[tokio::test]
    async fn hashes_beyond_the_queue_are_refused_and_memory_is_reused() {
        let pool = Arc::new(pool(2048));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        // Occupy both permits until released.
        let mut running = Vec::new();
        for _ in 0..2 {
            let (pool, gate) = (pool.clone(), gate.clone());
            let (started, is_started) = tokio::sync::oneshot::channel();
            running.push(tokio::spawn(async move {
                pool.run(move |_, _| {
                    let _ = started.send(());
                    let _ = lock_gate(&gate).recv();
                })
                .await
            }));
            is_started.await.unwrap();
        }
        // The queue takes 2 × 4 waiters; the next is refused at once.
        let mut queued = Vec::new();
        for _ in 0..8 {
            let pool = pool.clone();
            queued.push(tokio::spawn(async move {
                pool.run(|p, m| p.hash("correct horse", m).is_ok()).await
            }));
        }
        while pool.waiting.load(Ordering::Acquire) < 8 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            pool.run(|_, _| ()).await,
            Err(HashPoolError::Busy)
        ));
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        for r in running {
            r.await.unwrap().unwrap();
        }
        for q in queued {
            assert!(q.await.unwrap().unwrap());
        }
        assert!(
            lock(&pool.memory).len() <= 2,
            "more memory areas than permits"
        );
    }

    fn lock_gate(
        gate: &Mutex<std::sync::mpsc::Receiver<()>>,
    ) -> std::sync::MutexGuard<'_, std::sync::mpsc::Receiver<()>> {
        gate.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
