//! The REST schema cache's catalog side: reading tables, columns, keys, foreign keys and
//! functions of the exposed schemas, and the LISTEN connection on which the DDL event
//! trigger (migration 0004) rings `rowcast_rest_schema`. The notification is only a
//! doorbell: `rest::schema` reloads the whole snapshot on every wake-up (and reconnect).

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use super::{
    rest_catalog::{Column, ForeignKey, Function, FunctionArg, Ident, JsonArg, SchemaCache, Table},
    Store, StoreError,
};

/// The channel the DDL event trigger notifies.
pub const CHANNEL: &str = "rowcast_rest_schema";

const RELKINDS: &str = "('r', 'p', 'v', 'm', 'f')";

/// Read the exposed part of the catalog: relations, then their columns and primary keys,
/// then the foreign keys and functions between and in them.
pub async fn load(
    client: &tokio_postgres::Client,
    schemas: &[String],
) -> Result<SchemaCache, StoreError> {
    let mut by_oid = load_relations(client, schemas).await?;
    load_columns(client, schemas, &mut by_oid).await?;
    load_primary_keys(client, schemas, &mut by_oid).await?;
    let foreign_keys = load_foreign_keys(client, schemas).await?;
    let functions = load_functions(client, schemas).await?;
    let tables = by_oid
        .into_values()
        .map(|t| {
            (
                (t.schema.as_str().to_string(), t.name.as_str().to_string()),
                Arc::new(t),
            )
        })
        .collect();
    Ok(SchemaCache {
        schemas: schemas.to_vec(),
        tables,
        foreign_keys,
        functions,
    })
}

/// Tables, views, materialized views and foreign tables, by oid, without columns yet.
async fn load_relations(
    client: &tokio_postgres::Client,
    schemas: &[String],
) -> Result<HashMap<u32, Table>, StoreError> {
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
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get(0),
                Table {
                    schema: Ident::from_catalog(r.get(1)),
                    name: Ident::from_catalog(r.get(2)),
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                    insertable: r.get(3),
                },
            )
        })
        .collect())
}

/// Each relation's live columns, in attribute order.
async fn load_columns(
    client: &tokio_postgres::Client,
    schemas: &[String],
    by_oid: &mut HashMap<u32, Table>,
) -> Result<(), StoreError> {
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
    Ok(())
}

/// Each table's primary key columns, in key order.
async fn load_primary_keys(
    client: &tokio_postgres::Client,
    schemas: &[String],
    by_oid: &mut HashMap<u32, Table>,
) -> Result<(), StoreError> {
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
    Ok(())
}

/// Foreign keys whose both ends are in the exposed schemas, by constraint name.
async fn load_foreign_keys(
    client: &tokio_postgres::Client,
    schemas: &[String],
) -> Result<Vec<ForeignKey>, StoreError> {
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
    Ok(fks
        .into_iter()
        .map(|r| ForeignKey {
            name: Ident::from_catalog(r.get(0)),
            table: (Ident::from_catalog(r.get(1)), Ident::from_catalog(r.get(2))),
            columns: ids(r.get(3)),
            ref_table: (Ident::from_catalog(r.get(4)), Ident::from_catalog(r.get(5))),
            ref_columns: ids(r.get(6)),
        })
        .collect())
}

/// Plain functions (not procedures, aggregates or trigger functions), grouped by name
/// (overloads share one entry).
async fn load_functions(
    client: &tokio_postgres::Client,
    schemas: &[String],
) -> Result<HashMap<(String, String), Vec<Arc<Function>>>, StoreError> {
    let procs = client
        .query(
            "select n.nspname::text, p.proname::text, p.proretset, p.prorettype = 'void'::regtype, \
               coalesce(p.proargnames, '{}')::text[], coalesce(p.proargmodes::text[], '{}'), \
               p.pronargs::int4, p.pronargdefaults::int4, p.provolatile <> 'v', \
               case when p.pronargs = 1 and coalesce(p.proargnames[1], '') = '' \
                 then case p.proargtypes[0] when 'json'::regtype then 'json' \
                   when 'jsonb'::regtype then 'jsonb' end end, \
               coalesce(rel.names, outs.names, '{}'), coalesce(rel.types, outs.types, '{}') \
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
               left join lateral (select array_agg(a.attname::text order by a.attnum) names, \
                   array_agg(format_type(a.atttypid, a.atttypmod) order by a.attnum) types \
                 from pg_type t join pg_attribute a on a.attrelid = t.typrelid \
                 where t.oid = p.prorettype and t.typrelid <> 0 \
                   and a.attnum > 0 and not a.attisdropped) rel on rel.names is not null \
               left join lateral (select array_agg(x.name order by x.ord) names, \
                   array_agg(format_type(p.proallargtypes[x.ord], null) order by x.ord) types \
                 from unnest(p.proargnames, p.proargmodes::text[]) with ordinality x(name, mode, ord) \
                 where x.mode in ('o', 'b', 't') and x.name is not null) outs on true \
             where n.nspname = any($1) and p.prokind = 'f' \
               and p.prorettype not in ('trigger'::regtype, 'event_trigger'::regtype)",
            &[&schemas],
        )
        .await?;
    let mut functions: HashMap<(String, String), Vec<Arc<Function>>> = HashMap::new();
    for r in procs {
        let args = function_args(r.get(4), r.get(5), r.get(6), r.get(7));
        let has_unnamed_args = args.iter().any(|a| a.name.as_str().is_empty());
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
                result_columns: result_columns(r.get(10), r.get(11)),
            }));
    }
    Ok(functions)
}

/// A function's input arguments (`in`, `inout`, `variadic`) from `proargnames`,
/// `proargmodes` (empty when every argument is `in`), `pronargs` and `pronargdefaults`:
/// the defaults are the last ones.
fn function_args(
    names: Vec<String>,
    modes: Vec<String>,
    nargs: i32,
    ndefaults: i32,
) -> Vec<FunctionArg> {
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
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, n)| FunctionArg {
            name: Ident::from_catalog(n),
            has_default: i >= first_default,
        })
        .collect()
}

/// The columns of a function's result rows, from their names and `format_type` texts.
fn result_columns(names: Vec<String>, types: Vec<String>) -> Vec<Column> {
    names
        .into_iter()
        .zip(types)
        .map(|(name, type_name)| Column {
            name: Ident::from_catalog(name),
            type_name,
            nullable: true,
            has_default: false,
        })
        .collect()
}

/// Forget the pooled connections' prepared statements: their parameter types were inferred
/// from the catalog before a reload.
pub fn forget_prepared_statements(store: &Store) {
    store.pool().manager().statement_caches.clear();
}

/// Read the catalog now on a pooled connection (the admin call).
pub async fn load_pooled(store: &Store, schemas: &[String]) -> Result<SchemaCache, StoreError> {
    let client = store.client().await?;
    load(&client, schemas).await
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

/// A dedicated connection that LISTENs on [`CHANNEL`]; it also reads the catalog and prunes
/// idempotency keys, so a doorbell and the reload it causes share one connection.
pub struct CatalogListener {
    listener: super::listen::Listener,
}

impl CatalogListener {
    /// Open the connection. The returned future drives it (and forwards notifications);
    /// the caller spawns it before using the listener, and it ends when the listener is
    /// dropped or the connection fails.
    pub async fn connect(
        store: &Store,
    ) -> Result<
        (
            CatalogListener,
            impl Future<Output = Result<(), StoreError>> + Send + 'static,
        ),
        StoreError,
    > {
        let (listener, driver) = super::listen::Listener::connect(store.pg_config()).await?;
        Ok((CatalogListener { listener }, driver))
    }

    /// Start listening for the DDL doorbell.
    pub async fn listen(&self) -> Result<(), StoreError> {
        self.listener.listen(CHANNEL).await
    }

    /// Read the exposed part of the catalog on this connection.
    pub async fn load(&self, schemas: &[String]) -> Result<SchemaCache, StoreError> {
        load(self.listener.client(), schemas).await
    }

    /// Wait for the next doorbell; an error when the connection is gone.
    pub async fn next_doorbell(&mut self) -> Result<(), StoreError> {
        self.listener
            .next()
            .await
            .ok_or_else(|| StoreError::Unavailable("listener connection closed".into()))
    }

    /// Forget the doorbells already received (one reload covers them all).
    pub fn drain_doorbells(&mut self) {
        self.listener.drain();
    }

    /// Delete stored idempotent responses older than `ttl`.
    pub async fn prune_idempotency(&self, ttl: Duration) -> Result<u64, StoreError> {
        super::rest_query::prune_idempotency(self.listener.client(), ttl).await
    }
}
