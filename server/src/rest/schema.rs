//! The schema cache: the tables, views, columns, keys, foreign keys and functions of the
//! exposed schemas, as read from the catalog (by `store::rest_schema`). Every identifier the
//! REST layer puts into SQL comes from here, so anything a client names is checked against
//! it first. Swapped whole on reload; readers hold an `Arc` to one consistent snapshot.
//! [`Reloader`] keeps it current (the DDL doorbell, reconnects) and publishes the catalog
//! generation.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    backoff::Backoff,
    readiness::Readiness,
    store::{
        rest_schema::{self, CatalogListener},
        Store, StoreError,
    },
};

pub use crate::store::rest_catalog::{
    Column, ForeignKey, Function, FunctionArg, Ident, JsonArg, SchemaCache, Table,
};

/// Where the current snapshot lives; cheap to clone and share.
///
/// Loads can overlap (the listener and an admin call); each takes a ticket before reading
/// the catalog, and a snapshot only replaces one from an older ticket, so a slow load that
/// began before some DDL never overwrites a newer snapshot taken after it.
#[derive(Debug, Clone)]
pub struct SchemaHandle {
    current: Arc<RwLock<(u64, Option<Arc<SchemaCache>>)>>,
    tickets: Arc<AtomicU64>,
    /// The catalog generation: bumped each time a snapshot is installed.
    generation: Arc<watch::Sender<u64>>,
}

impl Default for SchemaHandle {
    fn default() -> Self {
        SchemaHandle {
            current: Arc::default(),
            tickets: Arc::default(),
            generation: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl SchemaHandle {
    /// The current snapshot, or `None` before the first load.
    pub fn get(&self) -> Option<Arc<SchemaCache>> {
        match self.current.read() {
            Ok(g) => g.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Take a ticket before reading the catalog.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Install `cache`, read under `ticket`, unless a newer load already landed.
    pub fn set(&self, ticket: u64, cache: SchemaCache) {
        let installed = {
            let mut g = match self.current.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if ticket > g.0 {
                *g = (ticket, Some(Arc::new(cache)));
                true
            } else {
                false
            }
        };
        if installed {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// The catalog generation: `0` before the first load, bumped after every successful
    /// (re)load, whatever rang it (the DDL doorbell, a reconnect, the admin call). Other
    /// catalog caches watch it to invalidate with the REST cache.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// Reload the cache now on a pooled connection (the admin call).
pub async fn reload(
    store: &Store,
    schemas: &[String],
    handle: &SchemaHandle,
) -> Result<(), StoreError> {
    let ticket = handle.ticket();
    let cache = rest_schema::load_pooled(store, schemas).await?;
    tracing::info!(
        tables = cache.tables.len(),
        functions = cache.functions.len(),
        "REST schema cache reloaded on request"
    );
    handle.set(ticket, cache);
    Ok(())
}

/// Keeps the schema cache current: waits for migrations, then on one LISTEN connection
/// loads the catalog and reloads it on every doorbell, reconnecting with backoff. It also
/// prunes expired idempotency keys.
#[derive(Debug, Clone)]
pub struct Reloader {
    pub store: Store,
    pub schemas: Vec<String>,
    pub handle: SchemaHandle,
    pub readiness: Arc<Readiness>,
    pub idempotency_ttl: Duration,
}

impl Reloader {
    /// The catalog generation this reloader bumps (see [`SchemaHandle::generation`]).
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.handle.generation()
    }

    /// Spawn the reloader on `tasks`; it stops when `shutdown` is cancelled.
    pub fn spawn(self, tasks: &TaskTracker, shutdown: CancellationToken) {
        let tracker = tasks.clone();
        tasks.spawn(async move { self.run(tracker, shutdown).await });
    }

    async fn run(self, tasks: TaskTracker, shutdown: CancellationToken) {
        // The first load waits for migrations, so the cache sees the app's tables.
        while !self.readiness.is_started() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.session(&tasks, &shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "schema listener lost its connection; retrying");
                }
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }

    /// Load on `listener` and install the snapshot.
    async fn load(&self, listener: &CatalogListener) -> Result<(), StoreError> {
        let ticket = self.handle.ticket();
        let cache = listener.load(&self.schemas).await?;
        self.handle.set(ticket, cache);
        rest_schema::forget_prepared_statements(&self.store);
        Ok(())
    }

    /// One connection's life: LISTEN, load, reload on each doorbell. `Ok` means shutdown.
    async fn session(
        &self,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        let (mut listener, driver) = CatalogListener::connect(&self.store).await?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = driver => {}
            }
        });
        listener.listen().await?;
        self.load(&listener).await?;
        tracing::info!("REST schema cache loaded");
        let mut prune = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = listener.next_doorbell() => {
                    m?;
                    // DDL comes in bursts (a migration); one reload covers them all.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    listener.drain_doorbells();
                    self.load(&listener).await?;
                    tracing::info!("REST schema cache reloaded");
                }
                _ = prune.tick() => {
                    match listener.prune_idempotency(self.idempotency_ttl).await {
                        Ok(n) if n > 0 => tracing::debug!(deleted = n, "pruned idempotency keys"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_bumps_on_each_install_and_not_for_a_stale_load() {
        let handle = SchemaHandle::default();
        let generation = handle.generation();
        assert_eq!(*generation.borrow(), 0);
        assert!(handle.get().is_none());
        let slow = handle.ticket();
        let fast = handle.ticket();
        handle.set(fast, SchemaCache::default());
        assert_eq!(*generation.borrow(), 1);
        // The slow load began before the fast one: it neither replaces it nor bumps.
        handle.set(slow, SchemaCache::default());
        assert_eq!(*generation.borrow(), 1);
        let next = handle.ticket();
        handle.set(next, SchemaCache::default());
        assert_eq!(*generation.borrow(), 2);
        assert!(handle.get().is_some());
    }
}
