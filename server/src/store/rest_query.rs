//! SQL for the REST API: turns validated plans (`rest_plan`, built by `rest::plan`) into statements and runs them
//! in one transaction as the caller, so row-level security decides.
//!
//! Identifiers come only from plan [`Ident`]s (catalog names) and are always quoted. Every
//! value, JSON key and limit is a bound parameter sent in text format, so Postgres parses it
//! with the input function of the type it infers (the column's, or the argument's); a value
//! that does not fit is a data error, never SQL. Results come back as one JSON text.

use std::time::Duration;

use bytes::BytesMut;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

use super::{
    rest_catalog::{Ident, JsonArg, Table},
    rest_plan::{
        Cast, ColRef, Cond, Conflict, CountPref, DeletePlan, Embed, Field, IdempotencyKey,
        InsertPlan, IsValue, Join, JsonStep, Node, Nulls, Operand, Operator, OrderKey, ReadPlan,
        ReadResult, Resolution, Returning, RpcPlan, StoredResponse, UpdatePlan, WritePlan,
        WriteResult,
    },
    SessionIdentity, Store, StoreError,
};

/// Prepared statements kept per pooled connection before the cache is dropped, so that
/// clients sending endless query shapes cannot grow it without bound.
const STATEMENT_CACHE_LIMIT: usize = 256;

/// A parameter in text format whose type Postgres infers from where it is used.
#[derive(Debug)]
struct TextParam(Option<String>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A statement being built: SQL text plus its parameters.
#[derive(Debug, Default)]
struct Sql {
    params: Vec<TextParam>,
    aliases: usize,
}

impl Sql {
    fn bind(&mut self, value: Option<String>) -> String {
        self.params.push(TextParam(value));
        format!("${}", self.params.len())
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("t{}", self.aliases)
    }

    fn param_refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p as &(dyn ToSql + Sync))
            .collect()
    }
}

fn ident(i: &Ident) -> String {
    super::quote_ident(i.as_str())
}

fn qualified(t: &Table) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.name))
}

fn cast_sql(c: Cast) -> &'static str {
    match c {
        Cast::Text => "text",
        Cast::Int2 => "int2",
        Cast::Int4 => "int4",
        Cast::Int8 => "int8",
        Cast::Numeric => "numeric",
        Cast::Float4 => "float4",
        Cast::Float8 => "float8",
        Cast::Bool => "bool",
        Cast::Json => "json",
        Cast::Jsonb => "jsonb",
        Cast::Date => "date",
        Cast::Time => "time",
        Cast::Timestamp => "timestamp",
        Cast::Timestamptz => "timestamptz",
        Cast::Uuid => "uuid",
    }
}

/// `alias.column` followed by its JSON steps; every key is a bound parameter, typed so that
/// Postgres picks the object-key or the array-index operator.
fn path_sql(sql: &mut Sql, alias: &str, column: &Ident, path: &[JsonStep]) -> String {
    let mut v = format!("{alias}.{}", ident(column));
    for step in path {
        let op = if step.as_text { "->>" } else { "->" };
        v = match step.index {
            Some(i) => format!("({v} {op} {}::int4)", sql.bind(Some(i.to_string()))),
            None => format!("({v} {op} {}::text)", sql.bind(Some(step.key.clone()))),
        };
    }
    v
}

fn colref_sql(sql: &mut Sql, alias: &str, c: &ColRef) -> String {
    path_sql(sql, alias, &c.column, &c.path)
}

/// The JSON object of one row of `node`, whose table is aliased `alias`.
fn object(sql: &mut Sql, node: &Node, alias: &str) -> String {
    let mut pairs = Vec::with_capacity(node.fields.len());
    // To-many spreads: each a jsonb object of arrays merged into the row's object.
    let mut merges = Vec::new();
    for f in &node.fields {
        match f {
            Field::Column {
                key,
                column,
                path,
                cast,
            } => {
                let k = sql.bind(Some(key.clone()));
                let v = path_sql(sql, alias, column, path);
                let v = match cast {
                    Some(c) => format!("({v})::{}", cast_sql(*c)),
                    None => v,
                };
                pairs.push(format!("{k}::text, {v}"));
            }
            // `rel()`: only a filter, nothing in the output.
            Field::Embed(e) if e.node.fields.is_empty() => {}
            Field::Embed(e) if e.spread && !e.to_one => merges.push(spread_many(sql, e, alias)),
            Field::Embed(e) if e.spread => spread(sql, e, alias, &mut pairs),
            Field::Embed(e) => {
                let k = sql.bind(Some(e.key.clone()));
                let v = embed(sql, e, alias);
                pairs.push(format!("{k}::text, {v}"));
            }
        }
    }
    // json_build_object takes at most 100 arguments; wider objects are merged as jsonb, as
    // are objects with to-many spreads (whose keys then come in jsonb's order).
    if !merges.is_empty() {
        let mut parts: Vec<String> = pairs
            .chunks(50)
            .map(|c| format!("jsonb_build_object({})", c.join(", ")))
            .collect();
        parts.extend(merges);
        format!("({})::json", parts.join(" || "))
    } else if pairs.len() <= 50 {
        format!("json_build_object({})", pairs.join(", "))
    } else {
        let chunks: Vec<String> = pairs
            .chunks(50)
            .map(|c| format!("jsonb_build_object({})", c.join(", ")))
            .collect();
        format!("({})::json", chunks.join(" || "))
    }
}

/// `...rel(a, b)`: each field of the to-one relation as a key of the parent's object, each
/// its own `limit 1` subquery (null when there is no related row, as PostgREST gives).
fn spread(sql: &mut Sql, e: &Embed, parent: &str, pairs: &mut Vec<String>) {
    let table = qualified(&e.node.table);
    for f in &e.node.fields {
        let a = sql.alias();
        let mut conds = vec![join_sql(sql, &e.join, parent, &a)];
        if let Some(w) = where_sql(sql, &e.node, &a) {
            conds.push(w);
        }
        let where_ = conds.join(" and ");
        let (key, value) = match f {
            Field::Column {
                key,
                column,
                path,
                cast,
            } => {
                let v = path_sql(sql, &a, column, path);
                let v = match cast {
                    Some(c) => format!("({v})::{}", cast_sql(*c)),
                    None => v,
                };
                (key, v)
            }
            Field::Embed(inner) if inner.node.fields.is_empty() => continue,
            Field::Embed(inner) => (&inner.key, embed(sql, inner, &a)),
        };
        let k = sql.bind(Some(key.clone()));
        pairs.push(format!(
            "{k}::text, (select {value} from {table} {a} where {where_} limit 1)"
        ));
    }
}

/// `...rel(a, b)` on a to-many relation: one jsonb object whose keys are the fields and
/// whose values are arrays of them over the related rows (`[]` when there are none). One
/// subquery yields every array, so they are correlated: the n-th elements come from the
/// same row, in the embedding's order.
fn spread_many(sql: &mut Sql, e: &Embed, parent: &str) -> String {
    let a = sql.alias();
    let mut conds = vec![join_sql(sql, &e.join, parent, &a)];
    if let Some(w) = where_sql(sql, &e.node, &a) {
        conds.push(w);
    }
    let mut columns = Vec::new();
    let mut arrays = Vec::new();
    for f in &e.node.fields {
        let (key, value) = match f {
            Field::Column {
                key,
                column,
                path,
                cast,
            } => {
                let v = path_sql(sql, &a, column, path);
                let v = match cast {
                    Some(c) => format!("({v})::{}", cast_sql(*c)),
                    None => v,
                };
                (key, v)
            }
            Field::Embed(inner) if inner.node.fields.is_empty() => continue,
            Field::Embed(inner) => (&inner.key, embed(sql, inner, &a)),
        };
        let k = sql.bind(Some(key.clone()));
        let c = format!("c{}", columns.len());
        arrays.push(format!("{k}::text, coalesce(json_agg(s{a}.{c}), '[]')"));
        columns.push(format!("{value} as {c}"));
    }
    if columns.is_empty() {
        return "'{}'::jsonb".to_string();
    }
    let order = order_sql(sql, &e.node, &a);
    let page = page_sql(sql, e.node.limit, e.node.offset);
    format!(
        "(select jsonb_build_object({}) from (select {} from {} {a} where {}{order}{page}) s{a})",
        arrays.join(", "),
        columns.join(", "),
        qualified(&e.node.table),
        conds.join(" and ")
    )
}

/// The condition relating a `child` row to its `parent` row: the foreign key's equalities,
/// or (many-to-many) a matching row of the junction table.
fn join_sql(sql: &mut Sql, join: &Join, parent: &str, child: &str) -> String {
    let eq = |pairs: &[(Ident, Ident)], left: &str, right: &str| {
        pairs
            .iter()
            .map(|(l, r)| format!("{left}.{} = {right}.{}", ident(l), ident(r)))
            .collect::<Vec<_>>()
    };
    match &join.via {
        None => join
            .pairs
            .iter()
            .map(|(p, c)| format!("{child}.{} = {parent}.{}", ident(c), ident(p)))
            .collect::<Vec<_>>()
            .join(" and "),
        Some(via) => {
            let j = sql.alias();
            let mut on = eq(&via.parent, parent, &j);
            on.extend(eq(&via.child, child, &j));
            format!(
                "exists (select 1 from {} {j} where {})",
                qualified(&via.junction),
                on.join(" and ")
            )
        }
    }
}

/// `exists (...)` for a row of the embedding `e` related to the parent row `parent`,
/// within the embedding's own filters.
fn related_exists(sql: &mut Sql, e: &Embed, parent: &str) -> String {
    let a = sql.alias();
    let mut conds = vec![join_sql(sql, &e.join, parent, &a)];
    if let Some(w) = where_sql(sql, &e.node, &a) {
        conds.push(w);
    }
    format!(
        "exists (select 1 from {} {a} where {})",
        qualified(&e.node.table),
        conds.join(" and ")
    )
}

fn embed(sql: &mut Sql, e: &Embed, parent: &str) -> String {
    let a = sql.alias();
    let mut conds = vec![join_sql(sql, &e.join, parent, &a)];
    if let Some(w) = where_sql(sql, &e.node, &a) {
        conds.push(w);
    }
    let obj = object(sql, &e.node, &a);
    let table = qualified(&e.node.table);
    let where_ = conds.join(" and ");
    if e.to_one {
        format!("(select {obj} from {table} {a} where {where_} limit 1)")
    } else {
        let order = order_sql(sql, &e.node, &a);
        let page = page_sql(sql, e.node.limit, e.node.offset);
        format!(
            "(select coalesce(json_agg(s{a}.r), '[]') from (select {obj} as r from {table} {a} where {where_}{order}{page}) s{a})"
        )
    }
}

/// The conditions of `node` (and its `!inner` embeddings), or `None` for no filter.
fn where_sql(sql: &mut Sql, node: &Node, alias: &str) -> Option<String> {
    let mut parts: Vec<String> = node
        .condition
        .iter()
        .map(|c| cond_sql(sql, c, alias, Some(node)))
        .collect();
    for f in &node.fields {
        if let Field::Embed(e) = f {
            if e.inner {
                parts.push(related_exists(sql, e, alias));
            }
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(" and "))
    }
}

/// `node` is the read node the condition belongs to (for `rel=is.null`); writes have none.
fn cond_sql(sql: &mut Sql, cond: &Cond, alias: &str, node: Option<&Node>) -> String {
    match cond {
        Cond::Exists { key, present } => {
            let embed = node.and_then(|n| {
                n.fields.iter().find_map(|f| match f {
                    Field::Embed(e) if &e.key == key => Some(e),
                    _ => None,
                })
            });
            match embed {
                Some(e) => {
                    let exists = related_exists(sql, e, alias);
                    if *present {
                        format!("({exists})")
                    } else {
                        format!("not ({exists})")
                    }
                }
                // The plan only makes these for embeddings of the node.
                None => "false".to_string(),
            }
        }
        Cond::Pred {
            column,
            negated,
            op,
            operand,
        } => {
            let col = colref_sql(sql, alias, column);
            let expr = match (op, operand) {
                (_, Operand::Search { language, query }) => {
                    let lang = language.clone().map(|l| sql.bind(Some(l)));
                    let q = sql.bind(Some(query.clone()));
                    let func = match op {
                        Operator::Plfts => "plainto_tsquery",
                        Operator::Phfts => "phraseto_tsquery",
                        Operator::Wfts => "websearch_to_tsquery",
                        _ => "to_tsquery",
                    };
                    let (tsquery, vector) = match &lang {
                        Some(l) => (
                            format!("{func}({l}::regconfig, {q}::text)"),
                            format!("to_tsvector({l}::regconfig, {col}::text)"),
                        ),
                        None => (
                            format!("{func}({q}::text)"),
                            format!("to_tsvector({col}::text)"),
                        ),
                    };
                    let vector = if column.tsvector { col.clone() } else { vector };
                    format!("{vector} @@ {tsquery}")
                }
                (op, Operand::Quantified { all, values }) => {
                    if values.is_empty() {
                        // `any` of nothing is false, `all` of nothing is true.
                        if *all { "true" } else { "false" }.to_string()
                    } else {
                        // One comparison per value (each parameter typed by the column),
                        // rather than an array whose element type Postgres cannot infer.
                        let parts: Vec<String> = values
                            .iter()
                            .map(|v| {
                                let p = sql.bind(Some(v.clone()));
                                compare(*op, &col, &p)
                            })
                            .collect();
                        parts.join(if *all { " and " } else { " or " })
                    }
                }
                (Operator::Is, Operand::Is(v)) => match v {
                    IsValue::Null => format!("{col} is null"),
                    IsValue::NotNull => format!("{col} is not null"),
                    IsValue::True => format!("{col} is true"),
                    IsValue::False => format!("{col} is false"),
                    IsValue::Unknown => format!("{col} is unknown"),
                },
                (Operator::In, Operand::List(items)) => {
                    if items.is_empty() {
                        "false".to_string()
                    } else {
                        let ps: Vec<String> =
                            items.iter().map(|v| sql.bind(Some(v.clone()))).collect();
                        format!("{col} in ({})", ps.join(", "))
                    }
                }
                (op, Operand::Value(v)) => {
                    let p = sql.bind(Some(v.clone()));
                    compare(*op, &col, &p)
                }
                _ => "false".to_string(),
            };
            if *negated {
                format!("not ({expr})")
            } else {
                format!("({expr})")
            }
        }
        Cond::And { negated, items } | Cond::Or { negated, items } => {
            let glue = if matches!(cond, Cond::And { .. }) {
                " and "
            } else {
                " or "
            };
            let inner: Vec<String> = items
                .iter()
                .map(|c| cond_sql(sql, c, alias, node))
                .collect();
            let expr = format!("({})", inner.join(glue));
            if *negated {
                format!("not {expr}")
            } else {
                expr
            }
        }
    }
}

/// `col op param` for the operators that take one value.
fn compare(op: Operator, col: &str, p: &str) -> String {
    match op {
        Operator::Eq => format!("{col} = {p}"),
        Operator::Neq => format!("{col} <> {p}"),
        Operator::Gt => format!("{col} > {p}"),
        Operator::Gte => format!("{col} >= {p}"),
        Operator::Lt => format!("{col} < {p}"),
        Operator::Lte => format!("{col} <= {p}"),
        Operator::Like => format!("{col}::text like {p}"),
        Operator::Ilike => format!("{col}::text ilike {p}"),
        Operator::Match => format!("{col}::text ~ {p}"),
        Operator::Imatch => format!("{col}::text ~* {p}"),
        Operator::Contains => format!("{col} @> {p}"),
        Operator::ContainedIn => format!("{col} <@ {p}"),
        Operator::Overlaps => format!("{col} && {p}"),
        Operator::IsDistinct => format!("{col} is distinct from {p}"),
        // The parser pairs `in` with a list, `is` with a keyword and the full-text
        // operators with a search.
        Operator::In
        | Operator::Is
        | Operator::Fts
        | Operator::Plfts
        | Operator::Phfts
        | Operator::Wfts => "false".to_string(),
    }
}

fn order_sql(sql: &mut Sql, node: &Node, alias: &str) -> String {
    if node.order.is_empty() {
        return String::new();
    }
    let terms: Vec<String> = node
        .order
        .iter()
        .map(|o| {
            let key = match &o.key {
                OrderKey::Column(c) => colref_sql(sql, alias, c),
                OrderKey::Related {
                    table,
                    join,
                    column,
                } => {
                    let a = sql.alias();
                    let on = join
                        .pairs
                        .iter()
                        .map(|(p, c)| format!("{a}.{} = {alias}.{}", ident(c), ident(p)))
                        .collect::<Vec<_>>()
                        .join(" and ");
                    format!(
                        "(select {a}.{} from {} {a} where {on} limit 1)",
                        ident(column),
                        qualified(table)
                    )
                }
            };
            let dir = if o.descending { " desc" } else { " asc" };
            let nulls = match o.nulls {
                Some(Nulls::First) => " nulls first",
                Some(Nulls::Last) => " nulls last",
                None => "",
            };
            format!("{key}{dir}{nulls}")
        })
        .collect();
    format!(" order by {}", terms.join(", "))
}

fn page_sql(sql: &mut Sql, limit: Option<u64>, offset: u64) -> String {
    let mut s = String::new();
    if let Some(l) = limit {
        s.push_str(&format!(" limit {}::int8", sql.bind(Some(l.to_string()))));
    }
    if offset > 0 {
        s.push_str(&format!(
            " offset {}::int8",
            sql.bind(Some(offset.to_string()))
        ));
    }
    s
}

/// The SQL of a read: the page as one JSON array, its row count, and (if asked) the exact
/// total. Returns the statement and the number of leading parameters the filter uses.
fn read_sql(sql: &mut Sql, plan: &ReadPlan, exact: bool, role: &str) -> (String, String) {
    let node = &plan.node;
    let table = qualified(&node.table);
    let where_ = where_sql(sql, node, "t0").unwrap_or_else(|| "true".into());
    let obj = object(sql, node, "t0");
    let order = order_sql(sql, node, "t0");
    let page = page_sql(sql, node.limit, node.offset);
    let total = if exact {
        format!(", (select count(*) from {table} t0 where {where_})::int8")
    } else {
        ", null::int8".to_string()
    };
    let guard = sql.bind(Some(role.to_string()));
    let text = format!(
        "select coalesce(json_agg(s0.r), '[]')::text, count(*)::int8{total} \
         from (select {obj} as r from {table} t0 where {where_}{order}{page}) s0 \
         where current_user = {guard}::name"
    );
    let count = format!("select 1 from {table} t0 where {where_}");
    (text, count)
}

/// Start a transaction on `client` and make it the caller's (see `Store::as_identity`).
async fn begin<'a>(
    client: &'a mut deadpool_postgres::Object,
    identity: &SessionIdentity,
    read_only: bool,
) -> Result<deadpool_postgres::Transaction<'a>, StoreError> {
    let set = client.prepare_cached(super::SET_IDENTITY).await?;
    let tx = client
        .build_transaction()
        .read_only(read_only)
        .start()
        .await?;
    tx.execute(&set, &[&identity.role, &identity.claims.to_string()])
        .await?;
    Ok(tx)
}

fn trim_statement_cache(client: &deadpool_postgres::Object) {
    if client.statement_cache.size() > STATEMENT_CACHE_LIMIT {
        client.statement_cache.clear();
    }
}

/// Run a read as `identity`.
///
/// The common case is pipelined: `begin read only`, the identity, the query and `commit`
/// go out together in one round trip. Postgres runs them in order, so the query is planned
/// under the caller's role and claims; as a second line of defence the query also checks
/// `current_user`, so were it ever to run before the identity it would return nothing.
pub async fn read(
    store: &Store,
    identity: &SessionIdentity,
    plan: &ReadPlan,
) -> Result<ReadResult, StoreError> {
    let mut sql = Sql::default();
    let exact = plan.count == Some(CountPref::Exact);
    let (text, count_text) = read_sql(&mut sql, plan, exact, &identity.role);
    let mut client = store.client().await?;
    trim_statement_cache(&client);
    if matches!(plan.count, None | Some(CountPref::Exact)) {
        let set = client.prepare_cached(super::SET_IDENTITY).await?;
        let stmt = client.prepare_cached(&text).await?;
        let params = sql.param_refs();
        let claims = identity.claims.to_string();
        let identity_params: [&(dyn ToSql + Sync); 2] = [&identity.role, &claims];
        let (_, _, row, _) = tokio::try_join!(
            client.batch_execute("begin read only"),
            client.execute(&set, &identity_params),
            client.query_one(&stmt, &params),
            client.batch_execute("commit"),
        )?;
        return Ok(ReadResult {
            body: row.get(0),
            rows: row.get(1),
            total: row.get(2),
        });
    }
    let tx = begin(&mut client, identity, true).await?;
    let stmt = tx.prepare_cached(&text).await?;
    let row = tx.query_one(&stmt, &sql.param_refs()).await?;
    let mut total: Option<i64> = row.get(2);
    if matches!(plan.count, Some(CountPref::Planned | CountPref::Estimated)) {
        // Only the filter's parameters appear in the count query; they are numbered first.
        let filter_params = count_params(&count_text);
        let params = &sql.param_refs()[..filter_params.min(sql.params.len())];
        let explain = format!("explain (format json) {count_text}");
        let plan_row = tx.query_one(&explain, params).await?;
        let json: serde_json::Value = plan_row.get(0);
        let estimate = json[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as i64;
        total = Some(estimate);
        if plan.count == Some(CountPref::Estimated) && estimate <= plan.max_rows as i64 {
            let exact = tx
                .query_one(&format!("select count(*) from ({count_text}) c"), params)
                .await?;
            total = Some(exact.get(0));
        }
    }
    tx.commit().await?;
    Ok(ReadResult {
        body: row.get(0),
        rows: row.get(1),
        total,
    })
}

/// The highest `$n` in `text`.
fn count_params(text: &str) -> usize {
    let mut max = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            if let Ok(n) = text[i + 1..j].parse::<usize>() {
                max = max.max(n);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    max
}

fn returning_select(sql: &mut Sql, returning: &Returning) -> String {
    match returning {
        Returning::Minimal => "select '[]'::text, count(*)::int8 from w t0".to_string(),
        Returning::Keys(keys) => {
            let pairs: Vec<String> = keys
                .iter()
                .map(|k| {
                    let p = sql.bind(Some(k.as_str().to_string()));
                    format!("{p}::text, t0.{}", ident(k))
                })
                .collect();
            format!(
                "select coalesce(json_agg(json_build_object({})), '[]')::text, count(*)::int8 from w t0",
                pairs.join(", ")
            )
        }
        Returning::Rows(node) => {
            let obj = object(sql, node, "t0");
            format!("select coalesce(json_agg({obj}), '[]')::text, count(*)::int8 from w t0")
        }
    }
}

/// The common table expressions of an insert, ending in `w` (the inserted rows).
fn insert_sql(sql: &mut Sql, plan: &InsertPlan) -> String {
    if plan.groups.is_empty() {
        let s = insert_one(
            sql,
            plan,
            &plan.columns,
            &plan.rows,
            plan.columns.is_empty() && plan.row_count <= 1,
        );
        return format!("w as ({s})");
    }
    // `missing=default`: one insert per set of given columns, so each leaves the others to
    // their defaults.
    let mut ctes = Vec::new();
    let mut names = Vec::new();
    for (i, (columns, rows)) in plan.groups.iter().enumerate() {
        let s = insert_one(sql, plan, columns, rows, false);
        ctes.push(format!("w{i} as ({s})"));
        names.push(format!("select * from w{i}"));
    }
    format!("{}, w as ({})", ctes.join(", "), names.join(" union all "))
}

fn insert_one(
    sql: &mut Sql,
    plan: &InsertPlan,
    columns: &[Ident],
    rows: &str,
    default_values: bool,
) -> String {
    let table = qualified(&plan.table);
    let mut s = if default_values {
        format!("insert into {table} as t0 default values")
    } else if columns.is_empty() {
        // Rows that give no column: one row of defaults each.
        let rows = sql.bind(Some(rows.to_string()));
        format!("insert into {table} as t0 select from json_array_elements({rows}::json)")
    } else {
        let cols = columns.iter().map(ident).collect::<Vec<_>>().join(", ");
        let rows = sql.bind(Some(rows.to_string()));
        format!(
            "insert into {table} as t0 ({cols}) select {cols} from json_populate_recordset(null::{table}, {rows}::json)"
        )
    };
    if let Some(Conflict {
        columns: on,
        resolution,
        update,
    }) = &plan.conflict
    {
        let on = on.iter().map(ident).collect::<Vec<_>>().join(", ");
        // With groups, each insert updates only the columns its rows give.
        let update: Vec<&Ident> = update.iter().filter(|c| columns.contains(c)).collect();
        if *resolution == Resolution::IgnoreDuplicates || update.is_empty() {
            s.push_str(&format!(" on conflict ({on}) do nothing"));
        } else {
            let set = update
                .iter()
                .map(|c| format!("{} = excluded.{}", ident(c), ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            s.push_str(&format!(" on conflict ({on}) do update set {set}"));
        }
    }
    s.push_str(&returning_list(&plan.returning));
    s
}

/// The `returning` clause of a write: only the columns the response needs. A role with
/// column-level grants may lack SELECT on other columns, and `returning *` would then refuse
/// the whole write (the row count comes from `returning 1`).
fn returning_list(returning: &Returning) -> String {
    let mut cols: Vec<&Ident> = Vec::new();
    match returning {
        Returning::Minimal => {}
        Returning::Keys(keys) => cols.extend(keys.iter()),
        Returning::Rows(node) => node_columns(node, &mut cols),
    }
    if cols.is_empty() {
        return " returning 1".to_string();
    }
    let list: Vec<String> = cols.iter().map(|c| format!("t0.{}", ident(c))).collect();
    format!(" returning {}", list.join(", "))
}

/// The columns of `node`'s own table that its fields and embeddings refer to.
fn node_columns<'a>(node: &'a Node, out: &mut Vec<&'a Ident>) {
    let add = |c: &'a Ident, out: &mut Vec<&'a Ident>| {
        if !out.contains(&c) {
            out.push(c);
        }
    };
    for f in &node.fields {
        match f {
            Field::Column { column, .. } => add(column, out),
            Field::Embed(e) => {
                for parent in e.join.parent_columns() {
                    add(parent, out);
                }
            }
        }
    }
}

fn update_sql(sql: &mut Sql, plan: &UpdatePlan) -> String {
    let table = qualified(&plan.table);
    let where_ = conds(sql, &plan.condition);
    let values = sql.bind(Some(plan.values.clone()));
    let set = plan
        .columns
        .iter()
        .map(|c| format!("{} = v.{}", ident(c), ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "update {table} as t0 set {set} from json_populate_record(null::{table}, {values}::json) as v where {where_}{}",
        returning_list(&plan.returning)
    )
}

fn delete_sql(sql: &mut Sql, plan: &DeletePlan) -> String {
    let where_ = conds(sql, &plan.condition);
    format!(
        "delete from {} as t0 where {where_}{}",
        qualified(&plan.table),
        returning_list(&plan.returning)
    )
}

fn conds(sql: &mut Sql, c: &[Cond]) -> String {
    if c.is_empty() {
        return "true".into();
    }
    c.iter()
        .map(|c| cond_sql(sql, c, "t0", None))
        .collect::<Vec<_>>()
        .join(" and ")
}

fn rpc_sql(sql: &mut Sql, plan: &RpcPlan) -> String {
    let f = &plan.function;
    let mut args: Vec<String> = plan
        .args
        .iter()
        .map(|(name, value)| format!("{} => {}", ident(name), sql.bind(value.clone())))
        .collect();
    if let Some((kind, body)) = &plan.body_arg {
        let ty = match kind {
            JsonArg::Json => "json",
            JsonArg::Jsonb => "jsonb",
        };
        args.push(format!("{}::{ty}", sql.bind(Some(body.clone()))));
    }
    let call = format!(
        "{}.{}({})",
        ident(&f.schema),
        ident(&f.name),
        args.join(", ")
    );
    if f.returns_void {
        format!("select null::text, 0::int8 from (select {call}) c")
    } else if let Some(node) = &plan.read {
        // Result rows shaped like a read: the function's rows stand in for a table.
        let where_ = where_sql(sql, node, "t0").unwrap_or_else(|| "true".into());
        let obj = object(sql, node, "t0");
        let order = order_sql(sql, node, "t0");
        let page = page_sql(sql, node.limit, node.offset);
        format!(
            "select coalesce(json_agg(s0.r), '[]')::text, count(*)::int8 \
             from (select {obj} as r from {call} t0 where {where_}{order}{page}) s0"
        )
    } else if f.returns_set {
        format!("select coalesce(json_agg(r), '[]')::text, count(*)::int8 from {call} r")
    } else {
        format!("select to_json({call})::text, 1::int8")
    }
}

/// Why a write did not produce a response. `E` is the caller's refusal (from `respond`).
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The idempotency key was already used for a different request.
    #[error("this Idempotency-Key was already used for a different request")]
    KeyReused,
    /// Refused after running (e.g. a single object was asked for and two rows changed);
    /// the transaction was rolled back.
    #[error("the write was refused after running")]
    Refused(E),
}

impl<E> From<tokio_postgres::Error> for WriteError<E> {
    fn from(e: tokio_postgres::Error) -> Self {
        WriteError::Store(StoreError::Db(e))
    }
}

/// Run a write as `identity` in one transaction. `respond` shapes the result; if it refuses,
/// the write is rolled back. With an idempotency key, the response is stored in the same
/// transaction, and a retry (even a concurrent one) gets the stored response instead of
/// applying the write again.
pub async fn write<E>(
    store: &Store,
    identity: &SessionIdentity,
    plan: &WritePlan,
    idempotency: Option<&IdempotencyKey>,
    respond: impl FnOnce(WriteResult) -> Result<StoredResponse, E>,
) -> Result<StoredResponse, WriteError<E>> {
    let mut sql = Sql::default();
    let text = match plan {
        WritePlan::Insert(p) => {
            let ctes = insert_sql(&mut sql, p);
            let r = returning_select(&mut sql, &p.returning);
            format!("with {ctes} {r}")
        }
        WritePlan::Update(p) if p.columns.is_empty() => {
            // Nothing to set: nothing changes, as in PostgREST.
            "select '[]'::text, 0::int8".to_string()
        }
        WritePlan::Update(p) => {
            let s = update_sql(&mut sql, p);
            let r = returning_select(&mut sql, &p.returning);
            format!("with w as ({s}) {r}")
        }
        WritePlan::Delete(p) => {
            let s = delete_sql(&mut sql, p);
            let r = returning_select(&mut sql, &p.returning);
            format!("with w as ({s}) {r}")
        }
        WritePlan::Rpc(p) => rpc_sql(&mut sql, p),
    };
    let mut client = store.client().await?;
    trim_statement_cache(&client);
    let set = client.prepare_cached(super::SET_IDENTITY).await?;
    let tx = client.build_transaction().start().await?;
    if let Some(key) = idempotency {
        // Claimed as the server's own role, before the caller's identity is taken on.
        if let Some(stored) = claim(&tx, key).await? {
            tx.commit().await?;
            return stored.ok_or(WriteError::KeyReused);
        }
    }
    tx.execute(&set, &[&identity.role, &identity.claims.to_string()])
        .await?;
    let stmt = tx.prepare_cached(&text).await?;
    let row = tx.query_one(&stmt, &sql.param_refs()).await?;
    let result = WriteResult {
        body: row.get::<_, Option<String>>(0).unwrap_or_default(),
        rows: row.get(1),
    };
    let result = match plan {
        WritePlan::Rpc(p) if p.function.returns_void => WriteResult {
            body: String::new(),
            rows: 0,
        },
        _ => result,
    };
    let response = respond(result).map_err(WriteError::Refused)?;
    if let Some(key) = idempotency {
        tx.batch_execute("set local role none").await?;
        store_response(&tx, key, &response).await?;
    }
    tx.commit().await?;
    Ok(response)
}

/// Take the key (`None`), or find the response stored under it (`Some(None)` when the key
/// was used for a different request). Waits for a concurrent request with the same key to
/// finish (the unique index makes the second insert wait).
async fn claim(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &IdempotencyKey,
) -> Result<Option<Option<StoredResponse>>, StoreError> {
    let ttl = key.ttl.as_secs_f64();
    tx.execute(
        "delete from rowcast.rest_idempotency \
         where key = $1 and subject = $2 and method = $3 and path = $4 \
           and created_at < now() - make_interval(secs => $5)",
        &[&key.key, &key.subject, &key.method, &key.path, &ttl],
    )
    .await?;
    let claimed = tx
        .query_opt(
            "insert into rowcast.rest_idempotency (key, subject, method, path, request_hash) \
             values ($1, $2, $3, $4, $5) \
             on conflict (key, subject, method, path) do nothing returning 1",
            &[
                &key.key,
                &key.subject,
                &key.method,
                &key.path,
                &key.request_hash,
            ],
        )
        .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let row = tx
        .query_one(
            "select request_hash, status, headers, body from rowcast.rest_idempotency \
             where key = $1 and subject = $2 and method = $3 and path = $4",
            &[&key.key, &key.subject, &key.method, &key.path],
        )
        .await?;
    let hash: String = row.get(0);
    if hash != key.request_hash {
        return Ok(Some(None));
    }
    let status: Option<i16> = row.get(1);
    let headers: Option<serde_json::Value> = row.get(2);
    let body: Option<String> = row.get(3);
    let headers: Vec<(String, String)> = headers
        .and_then(|h| serde_json::from_value(h).ok())
        .unwrap_or_default();
    let mut headers = headers;
    headers.push(("idempotent-replayed".into(), "true".into()));
    Ok(Some(Some(StoredResponse {
        status: status.map_or(200, |s| s as u16),
        headers,
        body,
    })))
}

async fn store_response(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &IdempotencyKey,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    let headers = serde_json::to_value(&response.headers).unwrap_or_default();
    let status = response.status as i16;
    tx.execute(
        "update rowcast.rest_idempotency set status = $5, headers = $6, body = $7 \
         where key = $1 and subject = $2 and method = $3 and path = $4",
        &[
            &key.key,
            &key.subject,
            &key.method,
            &key.path,
            &status,
            &headers,
            &response.body,
        ],
    )
    .await?;
    Ok(())
}

/// Delete stored idempotent responses older than `ttl`.
pub async fn prune_idempotency(
    client: &tokio_postgres::Client,
    ttl: Duration,
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "delete from rowcast.rest_idempotency where created_at < now() - make_interval(secs => $1)",
            &[&ttl.as_secs_f64()],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(ident(&Ident::from_catalog("a\"b".into())), "\"a\"\"b\"");
        assert_eq!(count_params("select $1, $12 where $3"), 12);
    }
}
