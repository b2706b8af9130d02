//! The REST schema cache's catalog side: reading tables, columns, keys, foreign keys and
//! functions of the exposed schemas, and the task that reloads them when the DDL event
//! trigger (migration 0004) rings `rowcast_rest_schema`. The notification is only a
//! doorbell: every wake-up (and every reconnect) reloads the whole snapshot.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::StreamExt;
use tokio_postgres::AsyncMessage;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Store, StoreError};
use crate::{
    readiness::Readiness,
    rest::schema::{
        Column, ForeignKey, Function, FunctionArg, Ident, JsonArg, SchemaCache, SchemaHandle, Table,
    },
};

/// The channel the DDL event trigger notifies.
pub const CHANNEL: &str = "rowcast_rest_schema";

const RELKINDS: &str = "('r', 'p', 'v', 'm', 'f')";

/// Read the exposed part of the catalog.
pub async fn load(
    client: &tokio_postgres::Client,
    schemas: &[String],
) -> Result<SchemaCache, StoreError> {
    let rows = client
        .query(
            &format!(
                "select c.oid, n.nspname::text, c.relname::text, \
                   c.relkind in ('r', 'p') or (c.relkind in ('v', 'f') \
                     and (pg_relation_is_updatable(c.oid::regclass, true) & 8) = 8) \
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                 where n.nspname = any($1) and c.relkind in {RELKINDS}"
            ),
            &[&schemas],
        )
        .await?;
    let mut by_oid: HashMap<u32, Table> = HashMap::new();
    for r in rows {
        by_oid.insert(
            r.get(0),
            Table {
                schema: Ident::from_catalog(r.get(1)),
                name: Ident::from_catalog(r.get(2)),
                columns: Vec::new(),
                primary_key: Vec::new(),
                insertable: r.get(3),
            },
        );
    }
    let cols = client
        .query(
            &format!(
                "select a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), \
                   not a.attnotnull, a.atthasdef or a.attidentity <> '' or a.attgenerated <> '' \
                 from pg_attribute a join pg_class c on c.oid = a.attrelid \
                   join pg_namespace n on n.oid = c.relnamespace \
                 where n.nspname = any($1) and c.relkind in {RELKINDS} \
                   and a.attnum > 0 and not a.attisdropped \
                 order by a.attrelid, a.attnum"
            ),
            &[&schemas],
        )
        .await?;
    for r in cols {
        let oid: u32 = r.get(0);
        if let Some(t) = by_oid.get_mut(&oid) {
            t.columns.push(Column {
                name: Ident::from_catalog(r.get(1)),
                type_name: r.get(2),
                nullable: r.get(3),
                has_default: r.get(4),
            });
        }
    }
    let pks = client
        .query(
            "select con.conrelid, array(select a.attname::text \
                 from unnest(con.conkey) with ordinality k(attnum, ord) \
                 join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum \
                 order by k.ord) \
             from pg_constraint con join pg_class c on c.oid = con.conrelid \
               join pg_namespace n on n.oid = c.relnamespace \
             where con.contype = 'p' and n.nspname = any($1)",
            &[&schemas],
        )
        .await?;
    for r in pks {
        let oid: u32 = r.get(0);
        if let Some(t) = by_oid.get_mut(&oid) {
            let names: Vec<String> = r.get(1);
            t.primary_key = names.into_iter().map(Ident::from_catalog).collect();
        }
    }
    let fks = client
        .query(
            "select con.conname::text, n1.nspname::text, c1.relname::text, \
               array(select a.attname::text from unnest(con.conkey) with ordinality k(attnum, ord) \
                 join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum order by k.ord), \
               n2.nspname::text, c2.relname::text, \
               array(select a.attname::text from unnest(con.confkey) with ordinality k(attnum, ord) \
                 join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum order by k.ord) \
             from pg_constraint con \
               join pg_class c1 on c1.oid = con.conrelid join pg_namespace n1 on n1.oid = c1.relnamespace \
               join pg_class c2 on c2.oid = con.confrelid join pg_namespace n2 on n2.oid = c2.relnamespace \
             where con.contype = 'f' and n1.nspname = any($1) and n2.nspname = any($1) \
             order by con.conname",
            &[&schemas],
        )
        .await?;
    let ids = |v: Vec<String>| v.into_iter().map(Ident::from_catalog).collect::<Vec<_>>();
    let foreign_keys = fks
        .into_iter()
        .map(|r| ForeignKey {
            name: Ident::from_catalog(r.get(0)),
            table: (Ident::from_catalog(r.get(1)), Ident::from_catalog(r.get(2))),
            columns: ids(r.get(3)),
            ref_table: (Ident::from_catalog(r.get(4)), Ident::from_catalog(r.get(5))),
            ref_columns: ids(r.get(6)),
        })
        .collect();
    let procs = client
        .query(
            "select n.nspname::text, p.proname::text, p.proretset, p.prorettype = 'void'::regtype, \
               coalesce(p.proargnames, '{}')::text[], coalesce(p.proargmodes::text[], '{}'), \
               p.pronargs::int4, p.pronargdefaults::int4, p.provolatile <> 'v', \
               case when p.pronargs = 1 and coalesce(p.proargnames[1], '') = '' \
                 then case p.proargtypes[0] when 'json'::regtype then 'json' \
                   when 'jsonb'::regtype then 'jsonb' end end \
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
             where n.nspname = any($1) and p.prokind = 'f' \
               and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)",
            &[&schemas],
        )
        .await?;
    let mut functions: HashMap<(String, String), Vec<Arc<Function>>> = HashMap::new();
    for r in procs {
        let names: Vec<String> = r.get(4);
        let modes: Vec<String> = r.get(5);
        let nargs: i32 = r.get(6);
        let ndefaults: i32 = r.get(7);
        let mut inputs: Vec<String> = Vec::new();
        if modes.is_empty() {
            for i in 0..nargs as usize {
                inputs.push(names.get(i).cloned().unwrap_or_default());
            }
        } else {
            for (i, m) in modes.iter().enumerate() {
                if matches!(m.as_str(), "i" | "b" | "v") {
                    inputs.push(names.get(i).cloned().unwrap_or_default());
                }
            }
        }
        let first_default = inputs.len().saturating_sub(ndefaults.max(0) as usize);
        let has_unnamed_args = inputs.iter().any(String::is_empty);
        let args = inputs
            .into_iter()
            .enumerate()
            .map(|(i, n)| FunctionArg {
                name: Ident::from_catalog(n),
                has_default: i >= first_default,
            })
            .collect();
        let schema: String = r.get(0);
        let name: String = r.get(1);
        functions
            .entry((schema.clone(), name.clone()))
            .or_default()
            .push(Arc::new(Function {
                schema: Ident::from_catalog(schema),
                name: Ident::from_catalog(name),
                args,
                has_unnamed_args,
                returns_set: r.get(2),
                returns_void: r.get(3),
                read_only: r.get(8),
                json_arg: match r.get::<_, Option<String>>(9).as_deref() {
                    Some("json") => Some(JsonArg::Json),
                    Some("jsonb") => Some(JsonArg::Jsonb),
                    _ => None,
                },
            }));
    }
    let mut tables = HashMap::new();
    for (_, t) in by_oid {
        tables.insert(
            (t.schema.as_str().to_string(), t.name.as_str().to_string()),
            Arc::new(t),
        );
    }
    Ok(SchemaCache {
        schemas: schemas.to_vec(),
        tables,
        foreign_keys,
        functions,
    })
}

/// Swap in a new snapshot and forget the pooled connections' prepared statements: their
/// parameter types were inferred from the old column types.
fn install(store: &Store, handle: &SchemaHandle, ticket: u64, cache: SchemaCache) {
    handle.set(ticket, cache);
    store.pool().manager().statement_caches.clear();
}

/// Reload the cache now on a pooled connection (the admin call).
pub async fn reload(
    store: &Store,
    schemas: &[String],
    handle: &SchemaHandle,
) -> Result<(), StoreError> {
    let client = store.client().await?;
    let ticket = handle.ticket();
    let cache = load(&client, schemas).await?;
    tracing::info!(
        tables = cache.tables.len(),
        functions = cache.functions.len(),
        "REST schema cache reloaded on request"
    );
    handle.set(ticket, cache);
    Ok(())
}

/// Ask every running instance on the database at `pg_config` to reload its schema cache
/// (`rowcast reload-schema`).
pub async fn notify_reload(pg_config: &super::Connector) -> Result<(), StoreError> {
    let (client, connection) = pg_config
        .connect()
        .await
        .map_err(|e| StoreError::Unavailable(super::connect::describe(&e)))?;
    let driver = tokio::spawn(connection);
    let result = client
        .execute("select pg_notify($1, '')", &[&CHANNEL])
        .await;
    drop(client);
    let _ = driver.await;
    result?;
    Ok(())
}

/// What the schema listener needs.
#[derive(Debug, Clone)]
pub struct Listener {
    pub store: Store,
    pub schemas: Vec<String>,
    pub handle: SchemaHandle,
    pub readiness: Arc<Readiness>,
    pub idempotency_ttl: Duration,
}

impl Listener {
    /// Spawn the listener on `tasks`; it stops when `shutdown` is cancelled.
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
        let mut delay = Duration::from_millis(200);
        loop {
            match self.session(&tasks, &shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "schema listener lost its connection");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// One connection's life: LISTEN, load, reload on each doorbell. `Ok` means shutdown.
    async fn session(
        &self,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        let (client, mut connection) = self
            .store
            .pg_config()
            .connect()
            .await
            .map_err(|e| StoreError::Unavailable(super::connect::describe(&e)))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    m = messages.next() => match m {
                        Some(Ok(AsyncMessage::Notification(_))) => {
                            if tx.send(()).is_err() {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    }
                }
            }
        });
        client.batch_execute(&format!("listen {CHANNEL}")).await?;
        let ticket = self.handle.ticket();
        install(
            &self.store,
            &self.handle,
            ticket,
            load(&client, &self.schemas).await?,
        );
        tracing::info!("REST schema cache loaded");
        let mut prune = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                m = rx.recv() => {
                    if m.is_none() {
                        return Err(StoreError::Unavailable("listener connection closed".into()));
                    }
                    // DDL comes in bursts (a migration); one reload covers them all.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    while rx.try_recv().is_ok() {}
                    let ticket = self.handle.ticket();
                    install(&self.store, &self.handle, ticket, load(&client, &self.schemas).await?);
                    tracing::info!("REST schema cache reloaded");
                }
                _ = prune.tick() => {
                    match super::rest_query::prune_idempotency(&client, self.idempotency_ttl).await {
                        Ok(n) if n > 0 => tracing::debug!(deleted = n, "pruned idempotency keys"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed"),
                    }
                }
            }
        }
    }
}
