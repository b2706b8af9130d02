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
        parse::{parse_policy_in, referenced_tables},
        visibility::{policy_disjuncts, sub_selects_unaffected, RefRows},
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
    /// The tables the fast-path policies' sub-selects read, with what the server needs to
    /// keep them in memory (see `realtime::relation`).
    pub refs: Vec<RefTable>,
}

/// A table a relational policy reads (e.g. `members`), as the membership index keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefTable {
    pub schema: String,
    pub name: String,
    pub primary_key: Vec<String>,
    pub kinds: HashMap<String, ColumnKind>,
    /// `format_type` of each column, for casts of bound text parameters.
    pub sql_types: HashMap<String, String>,
}

impl RefTable {
    pub fn key(&self) -> (String, String) {
        (self.schema.clone(), self.name.clone())
    }
}

/// Facts about a referenced table, per role: its columns the role may read and what its
/// row-level security lets the role see, or `None` if the server may not evaluate
/// sub-selects over it for that role.
struct RefFacts {
    table: RefTable,
    per_role: [Option<(HashMap<String, ColumnKind>, RefRows)>; 3],
}

/// A table's policies that apply to SELECT (commands SELECT and ALL), with the roles they
/// apply to. A policy without USING adds nothing to reads.
const SELECT_POLICIES_SQL: &str =
    "select p.polname::text, p.polpermissive, pg_get_expr(p.polqual, p.polrelid),
            0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_anon', r, 'MEMBER')),
            0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_authenticated', r, 'MEMBER')),
            0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_service', r, 'MEMBER'))
     from pg_policy p
     where p.polrelid = $1 and p.polcmd in ('r', '*') and p.polqual is not null
     order by p.polname";

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

const COLUMNS_SQL: &str =
    "select a.attname::text, format_type(a.atttypid, a.atttypmod), ty.typname::text,
            has_column_privilege('rowcast_anon', a.attrelid, a.attnum, 'SELECT'),
            has_column_privilege('rowcast_authenticated', a.attrelid, a.attnum, 'SELECT'),
            has_column_privilege('rowcast_service', a.attrelid, a.attnum, 'SELECT'),
            coalesce(co.collisdeterministic, true)
     from pg_attribute a join pg_type ty on ty.oid = a.atttypid
     left join pg_collation co on co.oid = a.attcollation
     where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped
     order by a.attnum";

fn column_info(r: &tokio_postgres::Row) -> Result<ColumnInfo, StoreError> {
    let typname: String = r.try_get(2)?;
    let deterministic: bool = r.try_get(6)?;
    let mut kind = ColumnKind::from_typname(&typname);
    // A nondeterministic collation makes `=` on text differ from byte equality.
    if kind == ColumnKind::Text && !deterministic {
        kind = ColumnKind::Other;
    }
    Ok(ColumnInfo {
        name: r.try_get(0)?,
        sql_type: r.try_get(1)?,
        kind,
        selectable: [r.try_get(3)?, r.try_get(4)?, r.try_get(5)?],
    })
}

/// The facts of a table a policy's sub-select reads. Per role, it may be evaluated in the
/// server only when Postgres would read it exactly as the server's copy has it: a plain
/// table (no inheritance children, not partitioned), synced (so the server follows its
/// changes), only the columns the role may read, and no restrictive policy for the role.
/// Its permissive policies are kept so that `visibility` can tell whether they can change
/// a given sub-select's result.
async fn ref_facts_of(
    client: &tokio_postgres::Transaction<'_>,
    schema: &str,
    name: &str,
) -> Result<Option<RefFacts>, StoreError> {
    let Some(t) = client
        .query_opt(
            "select c.oid, c.relkind = 'r' and not c.relhassubclass
                        and exists (select 1 from pg_trigger g
                                    where g.tgrelid = c.oid and g.tgname = 'zz_rowcast_capture'),
                    c.relrowsecurity, c.relforcerowsecurity,
                    coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_anon'), false),
                    coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_authenticated'), false),
                    coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_service'), false),
                    pg_has_role('rowcast_anon', c.relowner, 'USAGE'),
                    pg_has_role('rowcast_authenticated', c.relowner, 'USAGE'),
                    pg_has_role('rowcast_service', c.relowner, 'USAGE')
             from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = $1 and c.relname = $2",
            &[&schema, &name],
        )
        .await?
    else {
        return Ok(None);
    };
    let oid: u32 = t.try_get(0)?;
    let eligible: bool = t.try_get(1)?;
    let rls: bool = t.try_get(2)?;
    // As for the subscribed table: bypassrls, or the owner while security is not forced.
    let force: bool = t.try_get(3)?;
    let mut bypass = [false; 3];
    for (i, b) in bypass.iter_mut().enumerate() {
        let owner: bool = t.try_get(7 + i)?;
        *b = t.try_get::<_, bool>(4 + i)? || (owner && !force);
    }
    let columns = client
        .query(COLUMNS_SQL, &[&oid])
        .await?
        .iter()
        .map(column_info)
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
    let kinds: HashMap<String, ColumnKind> =
        columns.iter().map(|c| (c.name.clone(), c.kind)).collect();
    // Per role: `None` if a restrictive policy applies (refused), else the disjuncts of
    // its permissive policies in the fast-path subset.
    let mut visible: [Option<Vec<_>>; 3] = [Some(Vec::new()), Some(Vec::new()), Some(Vec::new())];
    if rls {
        for r in client.query(SELECT_POLICIES_SQL, &[&oid]).await? {
            let permissive: bool = r.try_get(1)?;
            let sql: String = r.try_get(2)?;
            for (i, v) in visible.iter_mut().enumerate() {
                if !r.try_get::<_, bool>(3 + i)? {
                    continue;
                }
                match v {
                    Some(ds) if permissive => ds.extend(policy_disjuncts(&sql, name, &kinds)),
                    _ => *v = None,
                }
            }
        }
    }
    let per_role = [0, 1, 2].map(|i| {
        let rows = if !rls || bypass[i] {
            RefRows::All
        } else {
            RefRows::AnyOf(visible[i].take()?)
        };
        (eligible && !primary_key.is_empty()).then(|| {
            let cols = columns
                .iter()
                .filter(|c| c.selectable[i])
                .map(|c| (c.name.clone(), c.kind))
                .collect::<HashMap<_, _>>();
            (cols, rows)
        })
    });
    Ok(Some(RefFacts {
        table: RefTable {
            schema: schema.to_string(),
            name: name.to_string(),
            primary_key,
            kinds: columns.iter().map(|c| (c.name.clone(), c.kind)).collect(),
            sql_types: columns
                .iter()
                .map(|c| (c.name.clone(), c.sql_type.clone()))
                .collect(),
        },
        per_role,
    }))
}

/// Why [`Store::rows_at`] could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RowsAtError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The table was truncated after the cursor: its earlier state is not in the log.
    #[error("truncated after the cursor")]
    Truncated,
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
                        coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_service'), false),
                        c.relforcerowsecurity,
                        pg_has_role('rowcast_anon', c.relowner, 'USAGE'),
                        pg_has_role('rowcast_authenticated', c.relowner, 'USAGE'),
                        pg_has_role('rowcast_service', c.relowner, 'USAGE')
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
        let mut bypass: [bool; 3] = [t.try_get(3)?, t.try_get(4)?, t.try_get(5)?];
        // A table's owner is not subject to its row-level security unless it is forced.
        let force: bool = t.try_get(6)?;
        for (i, b) in bypass.iter_mut().enumerate() {
            let owner: bool = t.try_get(7 + i)?;
            *b |= owner && !force;
        }

        let columns = client
            .query(COLUMNS_SQL, &[&oid])
            .await?
            .iter()
            .map(column_info)
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

        let policies = client.query(SELECT_POLICIES_SQL, &[&oid]).await?;
        let kinds: HashMap<String, ColumnKind> =
            columns.iter().map(|c| (c.name.clone(), c.kind)).collect();
        // The tables sub-selects read, and whether each role's reads of them can be
        // evaluated in the server.
        let mut ref_facts: HashMap<(String, String), RefFacts> = HashMap::new();
        for r in &policies {
            let sql: String = r.try_get(2)?;
            for (rs, rn) in referenced_tables(&sql) {
                if ref_facts.contains_key(&(rs.clone(), rn.clone())) || ref_facts.len() >= 8 {
                    continue;
                }
                if let Some(f) = ref_facts_of(&client, &rs, &rn).await? {
                    ref_facts.insert((rs, rn), f);
                }
            }
        }
        let mut per_role: [Vec<Policy>; 3] = Default::default();
        let mut used_refs: Vec<(String, String)> = Vec::new();
        for r in &policies {
            let sql: String = r.try_get(2)?;
            for (i, list) in per_role.iter_mut().enumerate() {
                if !r.try_get::<_, bool>(3 + i)? {
                    continue;
                }
                let resolve = |s: &str, n: &str| {
                    ref_facts
                        .get(&(s.to_string(), n.to_string()))
                        .and_then(|f| f.per_role[i].as_ref().map(|(cols, _)| cols.clone()))
                };
                // A sub-select over a table with row-level security stays in the server
                // only where that security cannot change its result.
                let rows = |s: &str, n: &str| {
                    ref_facts
                        .get(&(s.to_string(), n.to_string()))
                        .and_then(|f| f.per_role[i].as_ref().map(|(_, rows)| rows.clone()))
                };
                let fast = parse_policy_in(&sql, name, &kinds, &resolve)
                    .filter(|f| sub_selects_unaffected(f, &rows));
                if let Some(f) = &fast {
                    for t in crate::policy::compile::tables_read(f) {
                        if !used_refs.contains(&t) {
                            used_refs.push(t);
                        }
                    }
                }
                list.push(Policy {
                    name: r.try_get(0)?,
                    permissive: r.try_get(1)?,
                    sql: sql.clone(),
                    fast,
                });
            }
        }
        let refs: Vec<RefTable> = used_refs
            .iter()
            .filter_map(|k| ref_facts.get(k).map(|f| f.table.clone()))
            .collect();
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
            refs,
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
    /// identity's role). One transaction for the whole batch. A check whose expression reads
    /// the identity only through `rowcast.uid()`, `rowcast.claims()` and `rowcast.role()`
    /// (see [`identity_free`]) evaluates all its identities (one role) in one statement,
    /// with those calls replaced by the identity's claims from a bound array; any other
    /// check runs one statement per identity, with that identity's role and claims set
    /// transaction-locally. Answers: per check, per identity, per row.
    pub async fn visible_rows(
        &self,
        table: &TableCatalog,
        checks: &[VisibilityCheck],
    ) -> Result<Vec<Vec<Vec<bool>>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let mut out = Vec::with_capacity(checks.len());
        for check in checks {
            let rows = Value::Array(check.rows.clone());
            let Some(first) = check.identities.first() else {
                out.push(Vec::new());
                continue;
            };
            let mut per_identity = vec![vec![false; check.rows.len()]; check.identities.len()];
            let batched = check.identities.len() > 1 && identity_free(&check.expr).is_some();
            tx.execute(
                "select set_config('role', $1, true), set_config('rowcast.claims', $2, true)",
                &[&first.role.pg_role(), &first.claims_json()],
            )
            .await?;
            if batched {
                let expr = identity_free(&check.expr).unwrap_or_default();
                let claims: Vec<String> =
                    check.identities.iter().map(|i| i.claims_json()).collect();
                let sql = format!(
                    "select __rowcast_id.__rowcast_n, __rowcast_e.__rowcast_i
                     from (select __rowcast_u.n as __rowcast_n, __rowcast_u.t::jsonb as __rowcast_c
                           from unnest($2::text[]) with ordinality as __rowcast_u(t, n)) as __rowcast_id
                     cross join jsonb_array_elements($1::jsonb) with ordinality as __rowcast_e(__rowcast_r, __rowcast_i)
                     cross join lateral jsonb_populate_record(null::{}, __rowcast_e.__rowcast_r) as {}
                     where {}",
                    table.sql_name(),
                    quote_ident(&table.name),
                    expr
                );
                for r in tx.query(&sql, &[&rows, &claims]).await? {
                    let n: i64 = r.try_get(0)?;
                    let i: i64 = r.try_get(1)?;
                    if let Some(f) = usize::try_from(n - 1)
                        .ok()
                        .and_then(|n| per_identity.get_mut(n))
                        .and_then(|v| usize::try_from(i - 1).ok().and_then(|i| v.get_mut(i)))
                    {
                        *f = true;
                    }
                }
                out.push(per_identity);
                continue;
            }
            let sql = format!(
                "select __rowcast_e.__rowcast_i
                 from jsonb_array_elements($1::jsonb) with ordinality as __rowcast_e(__rowcast_r, __rowcast_i)
                 cross join lateral jsonb_populate_record(null::{}, __rowcast_e.__rowcast_r) as {}
                 where {}",
                table.sql_name(),
                quote_ident(&table.name),
                check.expr
            );
            for (n, identity) in check.identities.iter().enumerate() {
                if n > 0 {
                    tx.execute(
                        "select set_config('role', $1, true), set_config('rowcast.claims', $2, true)",
                        &[&identity.role.pg_role(), &identity.claims_json()],
                    )
                    .await?;
                }
                for r in tx.query(&sql, &[&rows]).await? {
                    let i: i64 = r.try_get(0)?;
                    if let Some(f) = usize::try_from(i - 1)
                        .ok()
                        .and_then(|i| per_identity[n].get_mut(i))
                    {
                        *f = true;
                    }
                }
            }
            out.push(per_identity);
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// Functions a policy may call and still be evaluated for many identities in one
/// statement: built-ins that read no settings (and SQL keywords that look like calls).
const IDENTITY_FREE_CALLS: &[&str] = &[
    "any",
    "all",
    "and",
    "or",
    "not",
    "in",
    "is",
    "lower",
    "upper",
    "length",
    "char_length",
    "btrim",
    "ltrim",
    "rtrim",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "abs",
    "substr",
    "substring",
    "position",
    "date_trunc",
    "array",
    "like",
    "ilike",
    "then",
    "else",
    "when",
];

/// `expr` with `rowcast.uid()`, `rowcast.claims()` and `rowcast.role()` replaced by the same
/// values computed from the batched identity's claims (`__rowcast_id.__rowcast_c`), or
/// `None` when the expression may read the identity some other way: a sub-select (the
/// tables it reads may have policies of their own), any other function call, or
/// `current_setting`. String literals and quoted identifiers are copied untouched.
pub fn identity_free(expr: &str) -> Option<String> {
    let b = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() + 64);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            let start = i;
            i += 1;
            loop {
                match b.get(i) {
                    None => return None,
                    Some(&q) if q == c && b.get(i + 1) == Some(&c) => i += 2,
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push_str(&expr[start..i]);
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            let word = expr[start..i].to_ascii_lowercase();
            if word == "select" || word == "from" || word.contains("current_setting") {
                return None;
            }
            let mut j = i;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            if b.get(j) == Some(&b'(') {
                let call = |k: &str| expr[j..].starts_with("()").then(|| (j + 2, k.to_string()));
                let replaced = match word.as_str() {
                    "rowcast.claims" => call("(__rowcast_id.__rowcast_c)"),
                    "rowcast.uid" => call("(nullif(__rowcast_id.__rowcast_c ->> 'sub', ''))::uuid"),
                    "rowcast.role" => call("coalesce(__rowcast_id.__rowcast_c ->> 'role', 'anon')"),
                    w if IDENTITY_FREE_CALLS.contains(&w) => None,
                    _ => return None,
                };
                if let Some((end, text)) = replaced {
                    out.push('(');
                    out.push_str(&text);
                    out.push(')');
                    i = end;
                    continue;
                }
            }
            out.push_str(&expr[start..i]);
            continue;
        }
        if c >= 0x80 {
            // Non-ASCII outside a literal: not worth the risk.
            return None;
        }
        out.push(c as char);
        i += 1;
    }
    Some(out)
}

impl Store {
    /// The rows of `schema.name` as they were at `cursor` (the log position the router has
    /// reached), optionally only those whose `column` is one of `values`: the table read
    /// now, rolled back with the change log. For every key changed after `cursor` (in the
    /// same snapshot), its state at `cursor` is the old image of its first later change (by
    /// version; absent for an insert). Read as the server's own role with row security
    /// off, so a policy on the table fails loudly instead of hiding rows.
    pub async fn rows_at(
        &self,
        schema: &str,
        name: &str,
        primary_key: &[String],
        cursor: Cursor,
        only: Option<(&str, &str, &[String])>,
    ) -> Result<Vec<serde_json::Map<String, Value>>, RowsAtError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(StoreError::from)?;
        tx.execute("select set_config('row_security', 'off', true)", &[])
            .await
            .map_err(StoreError::from)?;
        let table = format!("{}.{}", quote_ident(schema), quote_ident(name));
        let (rows, log) = match only {
            None => {
                let rows = tx
                    .query(&format!("select to_jsonb(t) from {table} t"), &[])
                    .await
                    .map_err(StoreError::from)?;
                let log = tx
                    .query(
                        "select pk, op::text, old_row from rowcast.change_log
                         where table_schema = $1 and table_name = $2
                           and (xid, id) > ($3::text::xid8, $4::int8)
                         order by version",
                        &[&schema, &name, &cursor.xid().to_string(), &cursor.id()],
                    )
                    .await
                    .map_err(StoreError::from)?;
                (rows, log)
            }
            Some((column, sql_type, values)) => {
                let values: Vec<String> = values.to_vec();
                let rows = tx
                    .query(
                        &format!(
                            "select to_jsonb(t) from {table} t where t.{} = any($1::text[]::{sql_type}[])",
                            quote_ident(column)
                        ),
                        &[&values],
                    )
                    .await
                    .map_err(StoreError::from)?;
                let log = tx
                    .query(
                        "select pk, op::text, old_row from rowcast.change_log
                         where table_schema = $1 and table_name = $2
                           and (xid, id) > ($3::text::xid8, $4::int8)
                           and (op = 'T' or old_row ->> $5 = any($6) or new_row ->> $5 = any($6))
                         order by version",
                        &[
                            &schema,
                            &name,
                            &cursor.xid().to_string(),
                            &cursor.id(),
                            &column,
                            &values,
                        ],
                    )
                    .await
                    .map_err(StoreError::from)?;
                (rows, log)
            }
        };
        tx.commit().await.map_err(StoreError::from)?;
        let key_of = |row: &serde_json::Map<String, Value>| -> String {
            let pk: serde_json::Map<String, Value> = primary_key
                .iter()
                .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
                .collect();
            Value::Object(pk).to_string()
        };
        let mut state: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();
        for r in &rows {
            if let Value::Object(row) = r.try_get::<_, Value>(0).map_err(StoreError::from)? {
                state.insert(key_of(&row), row);
            }
        }
        let mut rolled: std::collections::HashSet<String> = Default::default();
        for r in &log {
            let op: String = r.try_get(1).map_err(StoreError::from)?;
            if op == "T" {
                return Err(RowsAtError::Truncated);
            }
            let pk: Value = r.try_get(0).map_err(StoreError::from)?;
            let Value::Object(pk) = pk else { continue };
            // The same key text as `key_of` (columns in primary-key order).
            let row: serde_json::Map<String, Value> = primary_key
                .iter()
                .map(|k| (k.clone(), pk.get(k).cloned().unwrap_or(Value::Null)))
                .collect();
            let key = Value::Object(row).to_string();
            if !rolled.insert(key.clone()) {
                continue;
            }
            match r.try_get::<_, Option<Value>>(2).map_err(StoreError::from)? {
                Some(Value::Object(old)) if op != "I" => {
                    state.insert(key, old);
                }
                _ => {
                    state.remove(&key);
                }
            }
        }
        let mut out: Vec<_> = state.into_values().collect();
        if let Some((column, _, values)) = only {
            // Rolled-back images may have had another value.
            out.retain(|r| {
                r.get(column)
                    .map(|v| match v {
                        Value::String(s) => values.contains(s),
                        v => values.contains(&v.to_string()),
                    })
                    .unwrap_or(false)
            });
        }
        Ok(out)
    }
}

/// Identities of one role, and the rows to check against their combined policy expression.
#[derive(Debug, Clone)]
pub struct VisibilityCheck {
    pub identities: Vec<Arc<Identity>>,
    pub expr: String,
    pub rows: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::identity_free;

    #[test]
    fn identity_calls_are_substituted_only_where_that_is_exact() {
        let e = identity_free("((owner = rowcast.uid()) AND (title ~~ 'rowcast.uid()%'::text))")
            .unwrap();
        assert!(e.contains("__rowcast_id.__rowcast_c ->> 'sub'"), "{e}");
        assert!(e.contains("'rowcast.uid()%'"), "literals stay: {e}");
        assert!(!e.contains("owner = rowcast.uid()"), "{e}");
        let e = identity_free("(lower(team) = (rowcast.claims() ->> 'team'::text))").unwrap();
        assert!(e.contains("lower(team) = "), "{e}");
        assert!(e.contains("(__rowcast_id.__rowcast_c)) ->> 'team'"), "{e}");
        for text in [
            "(EXISTS ( SELECT 1 FROM public.members m WHERE (m.user_id = rowcast.uid())))",
            "(public.is_member(list_id))",
            "(owner = (current_setting('rowcast.claims'::text))::uuid)",
            "(x = 'unterminated)",
        ] {
            assert_eq!(identity_free(text), None, "{text}");
        }
    }
}
