//! SQL of realtime subscriptions: the catalog facts of a table and of the tables its
//! policies read (columns, key, grants, row-level security, policy text), returned as plain
//! data for `realtime::catalog` to compile; the snapshot read (as the subscriber, in one
//! REPEATABLE READ READ ONLY transaction whose snapshot also yields the watermark); a
//! table's rows rolled back to a log position; and the batched visibility check for
//! policies outside the fast path.
//!
//! Identifiers in these statements come from the catalog and are quoted; policy expressions
//! come from `pg_get_expr` (written by the schema's owner), never from a client. Every
//! client value is a bound parameter.

use std::collections::HashMap;

use serde_json::Value;
use tokio_postgres::{IsolationLevel, Transaction};

use super::{quote_ident, set_identity, SessionIdentity, Store, StoreError};

/// The row-version column change capture keeps on every synced table.
pub const VERSION_COLUMN: &str = "_v";

/// The API roles, in the order of every per-role array in these facts.
pub const API_ROLES: [&str; 3] = ["rowcast_anon", "rowcast_authenticated", "rowcast_service"];

/// The most tables the policies of one table may read and still be looked up.
const MAX_REFERENCED: usize = 8;

/// One column as the catalog has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnFacts {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, used for casts of bound text parameters.
    pub sql_type: String,
    /// `pg_type.typname`.
    pub typname: String,
    /// Whether its collation compares by bytes (always true for non-text types).
    pub deterministic: bool,
    /// SELECT privilege, per API role.
    pub selectable: [bool; 3],
}

/// One policy that applies to SELECT (command SELECT or ALL) and has a USING expression.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyFacts {
    pub name: String,
    pub permissive: bool,
    /// `pg_get_expr(polqual, polrelid)` with only `pg_catalog` on the search path, so every
    /// name in it is qualified.
    pub sql: String,
    /// Whether it applies, per API role.
    pub applies: [bool; 3],
}

/// What the catalog says about one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableFacts {
    pub schema: String,
    pub name: String,
    /// An ordinary table without inheritance children (not partitioned, not a parent).
    pub plain: bool,
    /// Row-level security is enabled.
    pub rls: bool,
    /// Change capture's trigger is installed.
    pub synced: bool,
    /// Per API role: whether its reads skip row-level security (BYPASSRLS, or owning the
    /// table while security is not forced).
    pub bypass: [bool; 3],
    pub columns: Vec<ColumnFacts>,
    pub primary_key: Vec<String>,
    pub policies: Vec<PolicyFacts>,
}

/// An equality condition the snapshot query can use (and an index can serve): the column
/// (from the catalog), its SQL type (from the catalog), and the values as text parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushdown {
    pub column: String,
    pub sql_type: String,
    pub values: Vec<String>,
}

const TABLE_SQL: &str =
    "select c.oid, c.relkind in ('r', 'p'), c.relkind = 'r' and not c.relhassubclass,
            c.relrowsecurity, c.relforcerowsecurity,
            exists (select 1 from pg_trigger g
                    where g.tgrelid = c.oid and g.tgname = 'zz_rowcast_capture'),
            coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_anon'), false),
            coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_authenticated'), false),
            coalesce((select r.rolbypassrls from pg_roles r where r.rolname = 'rowcast_service'), false),
            pg_has_role('rowcast_anon', c.relowner, 'USAGE'),
            pg_has_role('rowcast_authenticated', c.relowner, 'USAGE'),
            pg_has_role('rowcast_service', c.relowner, 'USAGE')
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = $1 and c.relname = $2";

const COLUMNS_SQL: &str =
    "select a.attname::text, format_type(a.atttypid, a.atttypmod), ty.typname::text,
            coalesce(co.collisdeterministic, true),
            has_column_privilege('rowcast_anon', a.attrelid, a.attnum, 'SELECT'),
            has_column_privilege('rowcast_authenticated', a.attrelid, a.attnum, 'SELECT'),
            has_column_privilege('rowcast_service', a.attrelid, a.attnum, 'SELECT')
     from pg_attribute a join pg_type ty on ty.oid = a.atttypid
     left join pg_collation co on co.oid = a.attcollation
     where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped
     order by a.attnum";

const PRIMARY_KEY_SQL: &str = "select a.attname::text
     from pg_index i
     cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
     join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
     where i.indrelid = $1 and i.indisprimary
     order by k.ord";

/// A policy without USING adds nothing to reads, so only those with one are listed.
const SELECT_POLICIES_SQL: &str =
    "select p.polname::text, p.polpermissive, pg_get_expr(p.polqual, p.polrelid),
            0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_anon', r, 'MEMBER')),
            0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_authenticated', r, 'MEMBER')),
            0::oid = any(p.polroles) or exists (select 1 from unnest(p.polroles) r where pg_has_role('rowcast_service', r, 'MEMBER'))
     from pg_policy p
     where p.polrelid = $1 and p.polcmd in ('r', '*') and p.polqual is not null
     order by p.polname";

fn three(r: &tokio_postgres::Row, first: usize) -> Result<[bool; 3], StoreError> {
    Ok([
        r.try_get(first)?,
        r.try_get(first + 1)?,
        r.try_get(first + 2)?,
    ])
}

/// The facts of `schema.name` (any relation kind; `None` if there is none), read in `tx`.
async fn table_facts(
    tx: &Transaction<'_>,
    schema: &str,
    name: &str,
) -> Result<Option<(bool, TableFacts)>, StoreError> {
    let Some(t) = tx.query_opt(TABLE_SQL, &[&schema, &name]).await? else {
        return Ok(None);
    };
    let oid: u32 = t.try_get(0)?;
    let table_like: bool = t.try_get(1)?;
    let force: bool = t.try_get(4)?;
    let bypassrls = three(&t, 6)?;
    let owner = three(&t, 9)?;
    // A table's owner is not subject to its row-level security unless it is forced.
    let bypass = [0, 1, 2].map(|i| bypassrls[i] || (owner[i] && !force));
    let columns = tx
        .query(COLUMNS_SQL, &[&oid])
        .await?
        .iter()
        .map(|r| {
            Ok(ColumnFacts {
                name: r.try_get(0)?,
                sql_type: r.try_get(1)?,
                typname: r.try_get(2)?,
                deterministic: r.try_get(3)?,
                selectable: three(r, 4)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let primary_key = tx
        .query(PRIMARY_KEY_SQL, &[&oid])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    let policies = tx
        .query(SELECT_POLICIES_SQL, &[&oid])
        .await?
        .iter()
        .map(|r| {
            Ok(PolicyFacts {
                name: r.try_get(0)?,
                permissive: r.try_get(1)?,
                sql: r.try_get(2)?,
                applies: three(r, 3)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some((
        table_like,
        TableFacts {
            schema: schema.to_string(),
            name: name.to_string(),
            plain: t.try_get(2)?,
            rls: t.try_get(3)?,
            synced: t.try_get(5)?,
            bypass,
            columns,
            primary_key,
            policies,
        },
    )))
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

/// Why a snapshot stopped.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The consumer of the chunks went away.
    #[error("stopped")]
    Stopped,
}

/// `"schema"."name"` for SQL.
fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

impl Store {
    /// The facts of table `schema.name` (`None` if there is no such table or partitioned
    /// table) and of the tables its policies read, as named by `referenced` from a
    /// policy's text (at most [`MAX_REFERENCED`]; names that are not relations are left
    /// out). One transaction, so the facts agree with each other.
    pub async fn realtime_tables(
        &self,
        schema: &str,
        name: &str,
        referenced: &(dyn Fn(&str) -> Vec<(String, String)> + Sync),
    ) -> Result<Option<(TableFacts, Vec<TableFacts>)>, StoreError> {
        let mut conn = self.client().await?;
        let tx = conn.transaction().await?;
        // With only pg_catalog on the search path, pg_get_expr qualifies every name
        // (rowcast.uid(), public.f()), so the text means the same in any session.
        tx.execute("select set_config('search_path', 'pg_catalog', true)", &[])
            .await?;
        let Some((true, main)) = table_facts(&tx, schema, name).await? else {
            return Ok(None);
        };
        let mut refs: Vec<TableFacts> = Vec::new();
        let mut looked_up: Vec<(String, String)> = Vec::new();
        for p in &main.policies {
            for key in referenced(&p.sql) {
                if looked_up.contains(&key) || looked_up.len() >= MAX_REFERENCED {
                    continue;
                }
                if let Some((_, f)) = table_facts(&tx, &key.0, &key.1).await? {
                    refs.push(f);
                }
                looked_up.push(key);
            }
        }
        tx.commit().await?;
        Ok(Some((main, refs)))
    }

    /// Read the rows of `schema.name` that `identity` may see and that satisfy `pushdown`,
    /// as JSON objects of `columns`, in chunks of `chunk_rows` sent to `chunks`. Runs in
    /// one REPEATABLE READ READ ONLY transaction as the identity (so row-level security
    /// applies exactly as for REST). Returns that snapshot's xmin: every transaction with a
    /// smaller id is in the snapshot, so replaying the log from it covers every
    /// transaction the snapshot did not see.
    #[allow(clippy::too_many_arguments)]
    pub async fn snapshot(
        &self,
        identity: &SessionIdentity,
        (schema, name): (&str, &str),
        columns: &[String],
        pushdown: &[Pushdown],
        chunk_rows: usize,
        chunks: tokio::sync::mpsc::Sender<Vec<Value>>,
    ) -> Result<u64, SnapshotError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(StoreError::from)?;
        // The first statement fixes the transaction's snapshot (REPEATABLE READ keeps it);
        // its xmin is the watermark.
        set_identity(&tx, identity).await?;
        let row = tx
            .query_one("select pg_snapshot_xmin(pg_current_snapshot())::text", &[])
            .await
            .map_err(StoreError::from)?;
        let xmin: String = row.try_get(0).map_err(StoreError::from)?;
        let xmin: u64 = xmin
            .parse()
            .map_err(|_| StoreError::Config(format!("unexpected xmin {xmin:?}")))?;

        let select: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
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
            qualified(schema, name),
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
        Ok(xmin)
    }

    /// For policies outside the fast path: which of `rows` (row images as captured) each
    /// identity may see under `expr` (the combined policy expression of `schema.name` for that
    /// identity's role). One transaction for the whole batch. A check whose expression reads
    /// the identity only through `rowcast.uid()`, `rowcast.claims()` and `rowcast.role()`
    /// (see [`identity_free`]) evaluates all its identities (one role) in one statement,
    /// with those calls replaced by the identity's claims from a bound array; any other
    /// check runs one statement per identity, with that identity's role and claims set
    /// transaction-locally. Answers: per check, per identity, per row.
    pub async fn visible_rows(
        &self,
        (schema, name): (&str, &str),
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
            set_identity(&tx, first).await?;
            if batched {
                let expr = identity_free(&check.expr).unwrap_or_default();
                let claims: Vec<String> = check
                    .identities
                    .iter()
                    .map(|i| i.claims.to_string())
                    .collect();
                let sql = format!(
                    "select __rowcast_id.__rowcast_n, __rowcast_e.__rowcast_i
                     from (select __rowcast_u.n as __rowcast_n, __rowcast_u.t::jsonb as __rowcast_c
                           from unnest($2::text[]) with ordinality as __rowcast_u(t, n)) as __rowcast_id
                     cross join jsonb_array_elements($1::jsonb) with ordinality as __rowcast_e(__rowcast_r, __rowcast_i)
                     cross join lateral jsonb_populate_record(null::{}, __rowcast_e.__rowcast_r) as {}
                     where {}",
                    qualified(schema, name),
                    quote_ident(name),
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
                qualified(schema, name),
                quote_ident(name),
                check.expr
            );
            for (n, identity) in check.identities.iter().enumerate() {
                if n > 0 {
                    set_identity(&tx, identity).await?;
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
    /// The rows of `schema.name` as they were at log position `(xid, id)` (where the router
    /// has reached), optionally only those whose `column` is one of `values`: the table read
    /// now, rolled back with the change log. For every key changed after that position
    /// (in the same snapshot), its state there is the old image of its first later change (by
    /// version; absent for an insert). Read as the server's own role with row security
    /// off, so a policy on the table fails loudly instead of hiding rows.
    pub async fn rows_at(
        &self,
        schema: &str,
        name: &str,
        primary_key: &[String],
        (xid, id): (u64, i64),
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
        let table = qualified(schema, name);
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
                        &[&schema, &name, &xid.to_string(), &id],
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
                        &[&schema, &name, &xid.to_string(), &id, &column, &values],
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
    pub identities: Vec<SessionIdentity>,
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
