//! SQL of realtime subscriptions: reading a table's columns, key, grants and row-level
//! security policies from the catalog; the snapshot read (as the subscriber, in one
//! REPEATABLE READ READ ONLY transaction whose snapshot also yields the watermark cursor);
//! and the batched visibility check for policies outside the fast path.
//!
//! Identifiers in these statements come from the catalog and are quoted; policy expressions
//! come from `pg_get_expr` (written by the schema's owner), never from a client. Every
//! client value is a bound parameter.

use std::{collections::HashMap, sync::Arc};

use serde_json::Value;
use tokio_postgres::IsolationLevel;

use super::{Store, StoreError};
use crate::{
    auth::{Identity, Role},
    policy::{
        compile::{Access, Policy},
        parse::parse_policy,
        ColumnKind,
    },
    realtime::{feed::Cursor, filter::Pushdown},
};

/// The row-version column change capture keeps on every synced table.
pub const VERSION_COLUMN: &str = "_v";

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, used for casts of bound text parameters.
    pub sql_type: String,
    pub kind: ColumnKind,
    /// SELECT privilege for anon, authenticated, service.
    selectable: [bool; 3],
}

/// What realtime needs to know about one table.
#[derive(Debug, Clone)]
pub struct TableCatalog {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
    /// Whether change capture is enabled on the table.
    pub synced: bool,
    access: [Access; 3],
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Anon => 0,
        Role::Authenticated => 1,
        Role::Service => 2,
    }
}

const ROLES: [Role; 3] = [Role::Anon, Role::Authenticated, Role::Service];

impl TableCatalog {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `schema.table` for messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The quoted identifier for SQL.
    fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn access(&self, role: Role) -> &Access {
        &self.access[role_index(role)]
    }

    pub fn can_select(&self, role: Role, column: &str) -> bool {
        self.column(column)
            .is_some_and(|c| c.selectable[role_index(role)])
    }
}

/// Quote an identifier that came from the catalog.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Why a snapshot stopped.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The consumer of the chunks went away.
    #[error("stopped")]
    Stopped,
}

impl Store {
    /// The catalog facts about `schema.name`, or `None` if there is no such table.
    pub async fn table_catalog(
        &self,
        schema: &str,
        name: &str,
    ) -> Result<Option<TableCatalog>, StoreError> {
        let mut conn = self.client().await?;
        // With only pg_catalog on the search path, pg_get_expr qualifies every name
        // (rowcast.uid(), public.f()), so the text means the same in any session.
        let client = conn.transaction().await?;
        client
            .execute("select set_config('search_path', 'pg_catalog', true)", &[])
            .await?;
        let Some(t) = client
            .query_opt(
                "select c.oid, c.relrowsecurity,
                        exists (select 1 from pg_trigger g
                                where g.tgrelid = c.oid and g.tgname = 'zz_rowcast_capture'),
                        coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_anon'), false),
                        coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_authenticated'), false),
                        coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_service'), false)
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = $1 and c.relname = $2 and c.relkind in ('r', 'p')",
                &[&schema, &name],
            )
            .await?
        else {
            return Ok(None);
        };
        let oid: u32 = t.try_get(0)?;
        let rls: bool = t.try_get(1)?;
        let synced: bool = t.try_get(2)?;
        let bypass: [bool; 3] = [t.try_get(3)?, t.try_get(4)?, t.try_get(5)?];

        let columns = client
            .query(
                "select a.attname::text, format_type(a.atttypid, a.atttypmod), ty.typname::text,
                        has_column_privilege('rowcast_anon', a.attrelid, a.attnum, 'SELECT'),
                        has_column_privilege('rowcast_authenticated', a.attrelid, a.attnum, 'SELECT'),
                        has_column_privilege('rowcast_service', a.attrelid, a.attnum, 'SELECT')
                 from pg_attribute a join pg_type ty on ty.oid = a.atttypid
                 where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped
                 order by a.attnum",
                &[&oid],
            )
            .await?
            .iter()
            .map(|r| {
                let typname: String = r.try_get(2)?;
                Ok(ColumnInfo {
                    name: r.try_get(0)?,
                    sql_type: r.try_get(1)?,
                    kind: ColumnKind::from_typname(&typname),
                    selectable: [r.try_get(3)?, r.try_get(4)?, r.try_get(5)?],
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let primary_key = client
            .query(
                "select a.attname::text
                 from pg_index i
                 cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
                 join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                 where i.indrelid = $1 and i.indisprimary
                 order by k.ord",
                &[&oid],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;

        // Policies that apply to SELECT (commands SELECT and ALL), with the roles they
        // apply to. A policy without USING adds nothing to reads.
        let policies = client
            .query(
                "select p.polname::text, p.polpermissive, pg_get_expr(p.polqual, p.polrelid),
                        0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_anon', r, 'MEMBER')),
                        0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_authenticated', r, 'MEMBER')),
                        0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_service', r, 'MEMBER'))
                 from pg_policy p
                 where p.polrelid = $1 and p.polcmd in ('r', '*') and p.polqual is not null
                 order by p.polname",
                &[&oid],
            )
            .await?;
        let kinds: HashMap<String, ColumnKind> =
            columns.iter().map(|c| (c.name.clone(), c.kind)).collect();
        let mut per_role: [Vec<Policy>; 3] = Default::default();
        for r in &policies {
            let sql: String = r.try_get(2)?;
            let policy = Policy {
                name: r.try_get(0)?,
                permissive: r.try_get(1)?,
                fast: parse_policy(&sql, &kinds),
                sql,
            };
            for (i, list) in per_role.iter_mut().enumerate() {
                if r.try_get::<_, bool>(3 + i)? {
                    list.push(policy.clone());
                }
            }
        }
        let access = ROLES.map(|role| {
            let i = role_index(role);
            if !columns.iter().any(|c| c.selectable[i]) {
                Access::Denied
            } else if !rls || bypass[i] {
                Access::AllRows
            } else {
                Access::Policies(std::mem::take(&mut per_role[i]))
            }
        });
        client.commit().await?;
        Ok(Some(TableCatalog {
            schema: schema.to_string(),
            name: name.to_string(),
            columns,
            primary_key,
            synced,
            access,
        }))
    }

    /// Read the rows of `table` that `identity` may see and that satisfy `pushdown`, as
    /// JSON objects of `columns` (plus the version column), in chunks of `chunk_rows`
    /// sent to `chunks`. Runs in one REPEATABLE READ READ ONLY transaction as the
    /// identity (so row-level security applies exactly as for REST); the returned cursor is
    /// that snapshot's watermark, so replaying the log after it covers every transaction the
    /// snapshot did not see.
    pub async fn snapshot(
        &self,
        identity: &Identity,
        table: &TableCatalog,
        columns: &[String],
        pushdown: &[Pushdown],
        chunk_rows: usize,
        chunks: tokio::sync::mpsc::Sender<Vec<Value>>,
    ) -> Result<Cursor, SnapshotError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(StoreError::from)?;
        // The first statement fixes the transaction's snapshot; its xmin is the cursor.
        let row = tx
            .query_one(
                "select set_config('role', $1, true), set_config('rowcast.claims', $2, true),
                        pg_snapshot_xmin(pg_current_snapshot())::text",
                &[&identity.role.pg_role(), &identity.claims_json()],
            )
            .await
            .map_err(StoreError::from)?;
        let xmin: String = row.try_get(2).map_err(StoreError::from)?;
        let xmin: u64 = xmin
            .parse()
            .map_err(|_| StoreError::Config(format!("unexpected xmin {xmin:?}")))?;

        let mut select: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        if table.column(VERSION_COLUMN).is_some() && !columns.iter().any(|c| c == VERSION_COLUMN) {
            select.push(quote_ident(VERSION_COLUMN));
        }
        let mut conditions = Vec::new();
        let mut params: Vec<Vec<String>> = Vec::new();
        for p in pushdown {
            params.push(p.values.clone());
            conditions.push(format!(
                "t.{} = any(${}::text[]::{}[])",
                quote_ident(&p.column),
                params.len(),
                p.sql_type
            ));
        }
        let sql = format!(
            "select to_jsonb(s) from (select {} from {} t{}{}) s",
            select.join(", "),
            table.sql_name(),
            if conditions.is_empty() { "" } else { " where " },
            conditions.join(" and ")
        );
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let portal = tx.bind(&sql, &refs).await.map_err(StoreError::from)?;
        loop {
            let rows = tx
                .query_portal(&portal, chunk_rows.clamp(1, i32::MAX as usize) as i32)
                .await
                .map_err(StoreError::from)?;
            let n = rows.len();
            let chunk = rows
                .iter()
                .map(|r| r.try_get::<_, Value>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::from)?;
            if n > 0 && chunks.send(chunk).await.is_err() {
                return Err(SnapshotError::Stopped);
            }
            if n < chunk_rows {
                break;
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Cursor::before_xid(xmin))
    }

    /// For policies outside the fast path: which of `rows` (row images as captured) each
    /// identity may see under `expr` (the combined policy expression of `table` for that
    /// identity's role). One transaction for the whole batch; one statement per distinct
    /// identity, each evaluating every row at once, so the cost per change batch grows with
    /// the distinct identities involved, never with subscribers × changes.
    pub async fn visible_rows(
        &self,
        table: &TableCatalog,
        checks: &[VisibilityCheck],
    ) -> Result<Vec<Vec<bool>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let mut out = Vec::with_capacity(checks.len());
        for check in checks {
            tx.execute(
                "select set_config('role', $1, true), set_config('rowcast.claims', $2, true)",
                &[
                    &check.identity.role.pg_role(),
                    &check.identity.claims_json(),
                ],
            )
            .await?;
            let sql = format!(
                "select __rowcast_e.__rowcast_i
                 from jsonb_array_elements($1::jsonb) with ordinality as __rowcast_e(__rowcast_r, __rowcast_i)
                 cross join lateral jsonb_populate_record(null::{}, __rowcast_e.__rowcast_r) as {}
                 where {}",
                table.sql_name(),
                quote_ident(&table.name),
                check.expr
            );
            let rows = Value::Array(check.rows.clone());
            let visible = tx.query(&sql, &[&rows]).await?;
            let mut flags = vec![false; check.rows.len()];
            for r in visible {
                let i: i64 = r.try_get(0)?;
                if let Some(f) = usize::try_from(i - 1).ok().and_then(|i| flags.get_mut(i)) {
                    *f = true;
                }
            }
            out.push(flags);
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// One identity's rows to check against its combined policy expression.
#[derive(Debug, Clone)]
pub struct VisibilityCheck {
    pub identity: Arc<Identity>,
    pub expr: String,
    pub rows: Vec<Value>,
}
