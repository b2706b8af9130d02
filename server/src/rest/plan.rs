//! Validation: a parsed request plus the schema cache become a plan in which every table,
//! column, foreign key and function is a catalog [`Ident`]. Anything unknown is refused here,
//! before any SQL exists. Values stay values; the storage layer binds them as parameters.

use std::sync::Arc;

use serde_json::Value;

use super::{
    query::{
        parse_query, Accept, Condition, IsValue, Operand, Operator, OrderTarget, Prefer, Query,
        Resolution, ReturnPref, SelectItem,
    },
    schema::{ForeignKey, Function, Ident, JsonArg, SchemaCache, Table},
    RestError,
};

/// Limits that shape plans (from `RestConfig`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: u64,
    pub max_embed_depth: usize,
    pub allow_unfiltered_writes: bool,
}

pub use crate::store::rest_plan::{
    ColRef, Cond, Conflict, DeletePlan, Embed, Field, InsertPlan, Join, JsonStep, Node, Order,
    OrderKey, ReadPlan, Returning, RpcPlan, UpdatePlan, Via, WritePlan,
};

/// Pick the schema for a request: the `Accept-Profile`/`Content-Profile` header if given
/// (it must be exposed), else the first exposed schema.
pub fn schema_for<'a>(cache: &'a SchemaCache, profile: Option<&str>) -> Result<&'a str, RestError> {
    match profile {
        None => cache
            .schemas
            .first()
            .map(String::as_str)
            .ok_or(RestError::NotReady),
        Some(p) => cache
            .schemas
            .iter()
            .find(|s| s.as_str() == p)
            .map(String::as_str)
            .ok_or_else(|| {
                RestError::NotAcceptable("that schema is not exposed".into())
                    .hint("set ROWCAST_REST_SCHEMAS to expose it")
            }),
    }
}

pub fn table<'a>(
    cache: &'a SchemaCache,
    schema: &str,
    name: &str,
) -> Result<&'a Arc<Table>, RestError> {
    cache
        .table(schema, name)
        .ok_or_else(|| RestError::UnknownTable(format!("no table or view `{name}`")))
}

fn column(table: &Table, name: &str) -> Result<Ident, RestError> {
    table.column(name).map(|c| c.name.clone()).ok_or_else(|| {
        RestError::UnknownColumn(format!("no column `{name}` on `{}`", table.name.as_str()))
    })
}

/// Split `meta->a->>b` into the column and its JSON steps, resolving the column.
fn column_ref(table: &Table, raw: &str) -> Result<ColRef, RestError> {
    let mut parts = raw.split("->");
    let name = parts.next().unwrap_or_default();
    let col = table.column(name).ok_or_else(|| {
        RestError::UnknownColumn(format!("no column `{name}` on `{}`", table.name.as_str()))
    })?;
    let mut path = Vec::new();
    for part in parts {
        let (as_text, key) = match part.strip_prefix('>') {
            Some(k) => (true, k),
            None => (false, part),
        };
        if key.is_empty() {
            return Err(RestError::Syntax(format!("empty JSON key in `{raw}`")));
        }
        path.push(JsonStep {
            key: key.to_string(),
            index: key.parse::<i64>().ok(),
            as_text,
        });
    }
    Ok(ColRef {
        column: col.name.clone(),
        tsvector: path.is_empty() && col.type_name == "tsvector",
        path,
    })
}

/// Most filter values one request may carry. Each is a bound parameter, and Postgres takes
/// at most 65,535 per statement; a request past this is refused as too large instead.
pub const MAX_FILTER_VALUES: usize = 5000;

fn values_in(c: &Cond) -> usize {
    match c {
        Cond::Pred {
            operand, column, ..
        } => {
            column.path.len()
                + match operand {
                    Operand::List(l) => l.len(),
                    Operand::Quantified { values, .. } => values.len(),
                    Operand::Search { .. } => 2,
                    _ => 1,
                }
        }
        Cond::And { items, .. } | Cond::Or { items, .. } => items.iter().map(values_in).sum(),
        Cond::Exists { .. } => 0,
    }
}

fn values_in_node(n: &Node) -> usize {
    n.condition.iter().map(values_in).sum::<usize>()
        + n.fields
            .iter()
            .map(|f| match f {
                // An `!inner` embedding's filters are bound twice.
                Field::Embed(e) => values_in_node(&e.node) * if e.inner { 2 } else { 1 } + 1,
                Field::Column { path, .. } => 1 + path.len(),
            })
            .sum::<usize>()
}

fn check_size(n: usize) -> Result<(), RestError> {
    if n > MAX_FILTER_VALUES {
        return Err(RestError::Syntax(format!(
            "the request has more than {MAX_FILTER_VALUES} filter values and selected fields"
        )));
    }
    Ok(())
}

/// Plan a GET.
pub fn read(
    cache: &SchemaCache,
    table: &Arc<Table>,
    query: &Query,
    prefer: &Prefer,
    range: Option<(u64, Option<u64>)>,
    accept: Accept,
    limits: Limits,
) -> Result<ReadPlan, RestError> {
    let mut node = build_node(cache, table, query.select.as_deref(), 1, limits)?;
    apply_scoped(cache, &mut node, query)?;
    if let Some((first, last)) = range {
        node.offset = node.offset.max(first);
        if let Some(last) = last {
            let n = last - first + 1;
            node.limit = Some(node.limit.map_or(n, |l| l.min(n)));
        }
    }
    node.limit = Some(
        node.limit
            .map_or(limits.max_rows, |l| l.min(limits.max_rows)),
    );
    check_size(values_in_node(&node))?;
    Ok(ReadPlan {
        node,
        count: prefer.count,
        single: accept == Accept::SingleObject,
        max_rows: limits.max_rows,
    })
}

fn build_node(
    cache: &SchemaCache,
    table: &Arc<Table>,
    select: Option<&[SelectItem]>,
    depth: usize,
    limits: Limits,
) -> Result<Node, RestError> {
    let star = [SelectItem::Star];
    let items = select.unwrap_or(&star);
    let mut fields = Vec::new();
    for item in items {
        match item {
            SelectItem::Star => {
                for c in &table.columns {
                    fields.push(Field::Column {
                        key: c.name.as_str().to_string(),
                        column: c.name.clone(),
                        path: Vec::new(),
                        cast: None,
                    });
                }
            }
            SelectItem::Column { alias, name, cast } => {
                let r = column_ref(table, name)?;
                // As PostgREST: a JSON path's key is its last step unless aliased.
                let key = match (alias, r.path.last()) {
                    (Some(a), _) => a.clone(),
                    (None, Some(step)) => step.key.clone(),
                    (None, None) => name.clone(),
                };
                fields.push(Field::Column {
                    key,
                    column: r.column,
                    path: r.path,
                    cast: *cast,
                });
            }
            SelectItem::Embed {
                alias,
                target,
                hint,
                inner,
                spread,
                items,
            } => {
                if depth > limits.max_embed_depth {
                    return Err(RestError::Syntax(format!(
                        "embedding nested deeper than {} levels",
                        limits.max_embed_depth
                    ))
                    .hint("raise ROWCAST_REST_MAX_EMBED_DEPTH or split the request"));
                }
                let (child, join, to_one) = relationship(cache, table, target, hint.as_deref())?;
                let node = build_node(cache, &child, Some(items), depth + 1, limits)?;
                if *spread
                    && node
                        .fields
                        .iter()
                        .any(|f| matches!(f, Field::Embed(e) if e.spread))
                {
                    return Err(RestError::Syntax(
                        "a spread inside a spread is not supported".into(),
                    ));
                }
                fields.push(Field::Embed(Box::new(Embed {
                    key: alias.clone().unwrap_or_else(|| target.clone()),
                    target: target.clone(),
                    join,
                    to_one,
                    inner: *inner,
                    spread: *spread,
                    node,
                })));
            }
        }
    }
    Ok(Node {
        table: table.clone(),
        fields,
        condition: Vec::new(),
        order: Vec::new(),
        limit: None,
        offset: 0,
    })
}

fn same(a: &(Ident, Ident), t: &Table) -> bool {
    a.0 == t.schema && a.1 == t.name
}

/// One way `parent` and a target can be related.
struct Candidate {
    table: Arc<Table>,
    join: Join,
    to_one: bool,
    /// For `details` of an ambiguity: PostgREST's cardinality and relationship text.
    cardinality: &'static str,
    relationship: String,
}

fn fk_text(fk: &ForeignKey) -> String {
    let cols = |c: &[Ident]| c.iter().map(Ident::as_str).collect::<Vec<_>>().join(", ");
    format!(
        "{} using {}({}) and {}({})",
        fk.name.as_str(),
        fk.table.1.as_str(),
        cols(&fk.columns),
        fk.ref_table.1.as_str(),
        cols(&fk.ref_columns)
    )
}

fn direct(fk: &ForeignKey, child: &Arc<Table>, forward: bool) -> Candidate {
    if forward {
        Candidate {
            table: child.clone(),
            join: Join {
                pairs: fk
                    .columns
                    .iter()
                    .cloned()
                    .zip(fk.ref_columns.iter().cloned())
                    .collect(),
                via: None,
            },
            to_one: true,
            cardinality: "many-to-one",
            relationship: fk_text(fk),
        }
    } else {
        let one_to_one = !child.primary_key.is_empty() && fk.columns == child.primary_key;
        Candidate {
            table: child.clone(),
            join: Join {
                pairs: fk
                    .ref_columns
                    .iter()
                    .cloned()
                    .zip(fk.columns.iter().cloned())
                    .collect(),
                via: None,
            },
            to_one: one_to_one,
            cardinality: if one_to_one {
                "one-to-one"
            } else {
                "one-to-many"
            },
            relationship: fk_text(fk),
        }
    }
}

/// Find the foreign key (or junction table) that relates `parent` and the table (or FK
/// column) `target`.
fn relationship(
    cache: &SchemaCache,
    parent: &Arc<Table>,
    target: &str,
    hint: Option<&str>,
) -> Result<(Arc<Table>, Join, bool), RestError> {
    let matches_hint = |fk: &ForeignKey| match hint {
        None => true,
        Some(h) => fk.name.as_str() == h || fk.columns.iter().any(|c| c.as_str() == h),
    };
    let child = cache
        .table(parent.schema.as_str(), target)
        .or_else(|| cache.schemas.iter().find_map(|s| cache.table(s, target)))
        .cloned();
    let mut candidates: Vec<Candidate> = Vec::new();
    match &child {
        Some(child) => {
            for fk in &cache.foreign_keys {
                if !matches_hint(fk) {
                    continue;
                }
                if same(&fk.table, parent) && same(&fk.ref_table, child) {
                    candidates.push(direct(fk, child, true));
                }
                if same(&fk.table, child) && same(&fk.ref_table, parent) {
                    candidates.push(direct(fk, child, false));
                }
            }
            candidates.extend(many_to_many(cache, parent, child, hint));
        }
        None => {
            // `author_id(name)`: embed along the foreign key on that column.
            for fk in &cache.foreign_keys {
                if same(&fk.table, parent)
                    && fk.columns.len() == 1
                    && fk.columns[0].as_str() == target
                    && matches_hint(fk)
                {
                    if let Some(t) = cache.table(fk.ref_table.0.as_str(), fk.ref_table.1.as_str()) {
                        candidates.push(direct(fk, t, true));
                    }
                }
            }
            if candidates.is_empty() {
                return Err(RestError::UnknownTable(format!(
                    "no table or view `{target}` to embed"
                )));
            }
        }
    }
    match candidates.len() {
        0 => Err(RestError::UnknownRelationship(format!(
            "no foreign key relates `{}` and `{target}`",
            parent.name.as_str()
        ))),
        1 => {
            let c = candidates.remove(0);
            Ok((c.table, c.join, c.to_one))
        }
        _ => {
            let names: Vec<String> = candidates
                .iter()
                .map(|c| {
                    c.relationship
                        .split(' ')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            // As PostgREST's `details`: one entry per candidate relationship, as JSON.
            let details: Vec<Value> = candidates
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "cardinality": c.cardinality,
                        "embedding": format!("{} with {}", parent.name.as_str(), c.table.name.as_str()),
                        "relationship": c.relationship,
                    })
                })
                .collect();
            Err(RestError::AmbiguousRelationship(format!(
                "more than one relationship links `{}` and `{target}`",
                parent.name.as_str()
            ))
            .details(Value::Array(details).to_string())
            .hint(format!(
                "name one as `{target}!<foreign key, column or junction table>(...)`; candidates: {}",
                names.join(", ")
            )))
        }
    }
}

/// Many-to-many through a junction table, as PostgREST detects it: a table with one foreign
/// key to `parent` and one to `child`, both within its primary key. The hint, if any, names
/// the junction table or one of its two foreign keys.
fn many_to_many(
    cache: &SchemaCache,
    parent: &Arc<Table>,
    child: &Arc<Table>,
    hint: Option<&str>,
) -> Vec<Candidate> {
    let in_pk = |j: &Table, fk: &ForeignKey| {
        !j.primary_key.is_empty() && fk.columns.iter().all(|c| j.primary_key.contains(c))
    };
    let mut out = Vec::new();
    for to_parent in &cache.foreign_keys {
        if !same(&to_parent.ref_table, parent) {
            continue;
        }
        let Some(junction) = cache.table(to_parent.table.0.as_str(), to_parent.table.1.as_str())
        else {
            continue;
        };
        if Arc::ptr_eq(junction, parent)
            || Arc::ptr_eq(junction, child)
            || !in_pk(junction, to_parent)
        {
            continue;
        }
        for to_child in &cache.foreign_keys {
            if std::ptr::eq(to_child, to_parent)
                || !same(&to_child.table, junction)
                || !same(&to_child.ref_table, child)
                || !in_pk(junction, to_child)
            {
                continue;
            }
            let hinted = match hint {
                None => true,
                Some(h) => {
                    junction.name.as_str() == h
                        || to_parent.name.as_str() == h
                        || to_child.name.as_str() == h
                }
            };
            if !hinted {
                continue;
            }
            let cols = |c: &[Ident]| c.iter().map(Ident::as_str).collect::<Vec<_>>().join(", ");
            out.push(Candidate {
                table: child.clone(),
                join: Join {
                    pairs: Vec::new(),
                    via: Some(Via {
                        junction: junction.clone(),
                        parent: to_parent
                            .ref_columns
                            .iter()
                            .cloned()
                            .zip(to_parent.columns.iter().cloned())
                            .collect(),
                        child: to_child
                            .ref_columns
                            .iter()
                            .cloned()
                            .zip(to_child.columns.iter().cloned())
                            .collect(),
                    }),
                },
                to_one: false,
                cardinality: "many-to-many",
                relationship: format!(
                    "{} using {}({}) and {}({})",
                    junction.name.as_str(),
                    to_parent.name.as_str(),
                    cols(&to_parent.columns),
                    to_child.name.as_str(),
                    cols(&to_child.columns)
                ),
            });
        }
    }
    out
}

fn node_at<'a>(node: &'a mut Node, path: &[String]) -> Result<&'a mut Node, RestError> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(node);
    };
    let pos = node
        .fields
        .iter()
        .position(|f| matches!(f, Field::Embed(e) if &e.key == first))
        .or_else(|| {
            node.fields
                .iter()
                .position(|f| matches!(f, Field::Embed(e) if &e.target == first))
        })
        .ok_or_else(|| {
            RestError::Syntax(format!("`{first}` is not embedded in `select`"))
                .hint("filters, order and limits on a related table need it in select=, e.g. select=*,comments(*)")
        })?;
    match &mut node.fields[pos] {
        Field::Embed(e) => node_at(&mut e.node, rest),
        Field::Column { .. } => Err(RestError::Syntax("not an embedding".into())),
    }
}

fn apply_scoped(cache: &SchemaCache, root: &mut Node, query: &Query) -> Result<(), RestError> {
    for c in &query.conditions {
        let node = node_at(root, &c.path)?;
        let cond = resolve_condition(&node.table, Some(&*node), &c.item)?;
        node.condition.push(cond);
    }
    for o in &query.order {
        let node = node_at(root, &o.path)?;
        for term in &o.item {
            let key = match &term.target {
                OrderTarget::Column(name) => OrderKey::Column(column_ref(&node.table, name)?),
                OrderTarget::Related {
                    relation,
                    column: col,
                } => {
                    let embedded = node.fields.iter().find_map(|f| match f {
                        Field::Embed(e) if (&e.key == relation || &e.target == relation) => {
                            Some((e.node.table.clone(), e.join.clone(), e.to_one))
                        }
                        _ => None,
                    });
                    let (table, join, to_one) = match embedded {
                        Some(x) => x,
                        None => relationship(cache, &node.table, relation, None)?,
                    };
                    if !to_one {
                        return Err(RestError::Syntax(format!(
                            "can only order by a column of a to-one relation; `{relation}` is to-many"
                        ))
                        .hint(format!("order inside the embedding with `{relation}.order=...`")));
                    }
                    let column = column(&table, col)?;
                    OrderKey::Related {
                        table,
                        join,
                        column,
                    }
                }
            };
            node.order.push(Order {
                key,
                descending: term.descending,
                nulls: term.nulls,
            });
        }
    }
    for l in &query.limit {
        node_at(root, &l.path)?.limit = Some(l.item);
    }
    for o in &query.offset {
        node_at(root, &o.path)?.offset = o.item;
    }
    Ok(())
}

/// `rel=is.null` / `rel=not.is.null` where `rel` is an embedding of `node` (and not one
/// of its columns): a filter on whether related rows exist.
fn embed_presence(node: &Node, cond: &Condition) -> Option<Cond> {
    let Condition::Pred(p) = cond else {
        return None;
    };
    let Operand::Is(v @ (IsValue::Null | IsValue::NotNull)) = p.operand else {
        return None;
    };
    if node.table.column(&p.column).is_some() {
        return None;
    }
    let key = node.fields.iter().find_map(|f| match f {
        Field::Embed(e) if e.key == p.column || e.target == p.column => Some(e.key.clone()),
        _ => None,
    })?;
    Some(Cond::Exists {
        key,
        present: (v == IsValue::NotNull) != p.negated,
    })
}

/// Resolve a filter against `table`. With `node` (a read), `rel=is.null` on one of its
/// embeddings, at any depth of `and(...)`/`or(...)`, is a filter on related rows.
fn resolve_condition(
    table: &Table,
    node: Option<&Node>,
    cond: &Condition,
) -> Result<Cond, RestError> {
    if let Some(presence) = node.and_then(|n| embed_presence(n, cond)) {
        return Ok(presence);
    }
    Ok(match cond {
        Condition::Pred(p) => {
            if p.op == Operator::In && matches!(&p.operand, Operand::List(l) if l.len() > 1000) {
                return Err(RestError::Syntax(
                    "`in` lists hold at most 1000 values".into(),
                ));
            }
            Cond::Pred {
                column: column_ref(table, &p.column)?,
                negated: p.negated,
                op: p.op,
                operand: p.operand.clone(),
            }
        }
        Condition::And { negated, items } => Cond::And {
            negated: *negated,
            items: items
                .iter()
                .map(|i| resolve_condition(table, node, i))
                .collect::<Result<_, _>>()?,
        },
        Condition::Or { negated, items } => Cond::Or {
            negated: *negated,
            items: items
                .iter()
                .map(|i| resolve_condition(table, node, i))
                .collect::<Result<_, _>>()?,
        },
    })
}

/// Only top-level filters apply to PATCH and DELETE.
fn write_conditions(
    table: &Arc<Table>,
    query: &Query,
    limits: Limits,
) -> Result<Vec<Cond>, RestError> {
    if query.conditions.iter().any(|c| !c.path.is_empty()) || !query.order.is_empty() {
        return Err(RestError::Syntax(
            "PATCH and DELETE take filters on the table itself only".into(),
        ));
    }
    if !query.has_root_filter() && !limits.allow_unfiltered_writes {
        return Err(RestError::FilterRequired);
    }
    let conds: Vec<Cond> = query
        .conditions
        .iter()
        .map(|c| resolve_condition(table, None, &c.item))
        .collect::<Result<_, _>>()?;
    check_size(conds.iter().map(values_in).sum())?;
    Ok(conds)
}

fn returning(
    cache: &SchemaCache,
    table: &Arc<Table>,
    query: &Query,
    prefer: &Prefer,
    limits: Limits,
) -> Result<Returning, RestError> {
    match prefer.return_ {
        Some(ReturnPref::Representation) => {
            let node = build_node(cache, table, query.select.as_deref(), 1, limits)?;
            Ok(Returning::Rows(node))
        }
        Some(ReturnPref::HeadersOnly) => Ok(Returning::Keys(table.primary_key.clone())),
        Some(ReturnPref::Minimal) | None => Ok(Returning::Minimal),
    }
}

/// Plan a POST: one object or an array of objects, inserted in one statement.
pub fn insert(
    cache: &SchemaCache,
    table: &Arc<Table>,
    query: &Query,
    prefer: &Prefer,
    accept: Accept,
    body: &[u8],
    limits: Limits,
) -> Result<InsertPlan, RestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| RestError::InvalidJson("the body is not valid JSON".into()))?;
    let rows = match value {
        Value::Array(rows) => rows,
        obj @ Value::Object(_) => vec![obj],
        _ => {
            return Err(RestError::InvalidBody(
                "the body must be a JSON object or an array of objects".into(),
            ))
        }
    };
    let mut names: Vec<String> = Vec::new();
    for row in &rows {
        let Value::Object(map) = row else {
            return Err(RestError::InvalidBody(
                "every element of the array must be an object".into(),
            ));
        };
        for k in map.keys() {
            if !names.iter().any(|n| n == k) {
                names.push(k.clone());
            }
        }
    }
    if let Some(cols) = &query.columns {
        names = cols.clone();
    }
    let columns = names
        .iter()
        .map(|n| column(table, n))
        .collect::<Result<Vec<_>, _>>()?;
    let groups = if prefer.missing_default {
        group_by_keys(&rows, &names, &columns)
    } else {
        Vec::new()
    };
    let conflict = match prefer.resolution {
        None => None,
        Some(resolution) => {
            let columns_on = match &query.on_conflict {
                Some(cols) => cols
                    .iter()
                    .map(|n| column(table, n))
                    .collect::<Result<Vec<_>, _>>()?,
                None if !table.primary_key.is_empty() => table.primary_key.clone(),
                None => {
                    return Err(RestError::Syntax(
                        "upsert needs `on_conflict=` on a table without a primary key".into(),
                    ))
                }
            };
            Some(Conflict {
                columns: columns_on,
                resolution,
                update: columns.clone(),
            })
        }
    };
    if conflict.is_none() {
        // Without `Prefer: resolution=` an `on_conflict` has no effect, but its names are
        // still checked so a typo is not silently ignored.
        for n in query.on_conflict.iter().flatten() {
            column(table, n)?;
        }
    }
    let mut plan = insert_with(
        cache, table, query, prefer, accept, rows, columns, conflict, limits,
    )?;
    plan.groups = groups;
    Ok(plan)
}

/// Rows grouped by which of `names` they carry (first-seen order), as JSON array texts.
fn group_by_keys(rows: &[Value], names: &[String], columns: &[Ident]) -> Vec<(Vec<Ident>, String)> {
    let mut groups: Vec<(Vec<bool>, Vec<Value>)> = Vec::new();
    for row in rows {
        let present: Vec<bool> = names
            .iter()
            .map(|n| row.as_object().is_some_and(|m| m.contains_key(n)))
            .collect();
        match groups.iter_mut().find(|(p, _)| *p == present) {
            Some((_, g)) => g.push(row.clone()),
            None => groups.push((present, vec![row.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(present, rows)| {
            let cols = columns
                .iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(c, _)| c.clone())
                .collect();
            (cols, Value::Array(rows).to_string())
        })
        .collect()
}

/// Plan a PUT: upsert of exactly one row, addressed by `eq` filters on every primary key
/// column, which the body must repeat (as PostgREST requires).
pub fn put(
    cache: &SchemaCache,
    table: &Arc<Table>,
    query: &Query,
    prefer: &Prefer,
    accept: Accept,
    body: &[u8],
    limits: Limits,
) -> Result<InsertPlan, RestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| RestError::InvalidJson("the body is not valid JSON".into()))?;
    let row = match value {
        Value::Array(mut rows) if rows.len() == 1 => rows.remove(0),
        obj @ Value::Object(_) => obj,
        _ => {
            return Err(RestError::InvalidBody(
                "the body of a PUT must be one JSON object".into(),
            ))
        }
    };
    let Value::Object(map) = &row else {
        return Err(RestError::InvalidBody(
            "the body of a PUT must be one JSON object".into(),
        ));
    };
    if table.primary_key.is_empty() {
        return Err(RestError::MethodNotAllowed(format!(
            "PUT needs a primary key, and `{}` has none",
            table.name.as_str()
        )));
    }
    let mut filters: Vec<(&str, &str)> = Vec::new();
    for c in &query.conditions {
        match &c.item {
            Condition::Pred(p) if c.path.is_empty() && p.op == Operator::Eq && !p.negated => {
                if let Operand::Value(v) = &p.operand {
                    filters.push((p.column.as_str(), v.as_str()));
                    continue;
                }
                return Err(put_filters());
            }
            _ => return Err(put_filters()),
        }
    }
    let keyed = table.primary_key.len() == filters.len()
        && table
            .primary_key
            .iter()
            .all(|k| filters.iter().any(|(c, _)| *c == k.as_str()));
    if !keyed {
        return Err(put_filters());
    }
    for (c, v) in &filters {
        let body_value = match map.get(*c) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        if body_value.as_deref() != Some(*v) {
            return Err(RestError::InvalidBody(format!(
                "the body's `{c}` must repeat the filter's value"
            )));
        }
    }
    let columns = map
        .keys()
        .map(|n| column(table, n))
        .collect::<Result<Vec<_>, _>>()?;
    let conflict = Conflict {
        columns: table.primary_key.clone(),
        resolution: Resolution::MergeDuplicates,
        update: columns.clone(),
    };
    let query = Query {
        conditions: Vec::new(),
        ..query.clone()
    };
    let mut plan = insert_with(
        cache,
        table,
        &query,
        prefer,
        accept,
        vec![row],
        columns,
        Some(conflict),
        limits,
    )?;
    plan.put = true;
    Ok(plan)
}

fn put_filters() -> RestError {
    RestError::Syntax("PUT takes `eq` filters on every primary key column, and nothing else".into())
        .hint("e.g. PUT /rest/v1/items?id=eq.7 with the whole row, id included, as the body")
}

#[allow(clippy::too_many_arguments)]
fn insert_with(
    cache: &SchemaCache,
    table: &Arc<Table>,
    query: &Query,
    prefer: &Prefer,
    accept: Accept,
    rows: Vec<Value>,
    columns: Vec<Ident>,
    conflict: Option<Conflict>,
    limits: Limits,
) -> Result<InsertPlan, RestError> {
    if columns.is_empty() && rows.len() > 1 {
        return Err(RestError::InvalidBody(
            "inserting several rows needs at least one column".into(),
        ));
    }
    if !table.insertable {
        return Err(RestError::Forbidden(format!(
            "`{}` does not accept inserts",
            table.name.as_str()
        )));
    }
    let row_count = rows.len();
    Ok(InsertPlan {
        table: table.clone(),
        columns,
        rows: Value::Array(rows).to_string(),
        row_count,
        conflict,
        returning: returning(cache, table, query, prefer, limits)?,
        single: accept == Accept::SingleObject,
        groups: Vec::new(),
        put: false,
    })
}

/// Plan a PATCH.
pub fn update(
    cache: &SchemaCache,
    table: &Arc<Table>,
    query: &Query,
    prefer: &Prefer,
    accept: Accept,
    body: &[u8],
    limits: Limits,
) -> Result<UpdatePlan, RestError> {
    let condition = write_conditions(table, query, limits)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| RestError::InvalidJson("the body is not valid JSON".into()))?;
    let Value::Object(map) = &value else {
        return Err(RestError::InvalidBody(
            "the body of a PATCH must be a JSON object".into(),
        ));
    };
    let columns = map
        .keys()
        .map(|k| column(table, k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UpdatePlan {
        table: table.clone(),
        columns,
        values: value.to_string(),
        condition,
        returning: returning(cache, table, query, prefer, limits)?,
        single: accept == Accept::SingleObject,
    })
}

/// Plan a DELETE.
pub fn delete(
    cache: &SchemaCache,
    table: &Arc<Table>,
    query: &Query,
    prefer: &Prefer,
    accept: Accept,
    limits: Limits,
) -> Result<DeletePlan, RestError> {
    let condition = write_conditions(table, query, limits)?;
    Ok(DeletePlan {
        table: table.clone(),
        condition,
        returning: returning(cache, table, query, prefer, limits)?,
        single: accept == Accept::SingleObject,
    })
}

/// Plan `POST /rpc/{function}`: the function is found by name and the names of the
/// arguments in the body.
pub fn rpc(
    cache: &SchemaCache,
    schema: &str,
    name: &str,
    accept: Accept,
    body: &[u8],
) -> Result<RpcPlan, RestError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body)
            .map_err(|_| RestError::InvalidJson("the body is not valid JSON".into()))?
    };
    // As PostgREST: a function whose only argument is an unnamed json/jsonb gets the body.
    let json_fns: Vec<&Arc<Function>> = cache
        .functions(schema, name)
        .iter()
        .filter(|f| f.json_arg.is_some())
        .collect();
    if let [f] = json_fns.as_slice() {
        let kind = f.json_arg.unwrap_or(JsonArg::Json);
        return Ok(RpcPlan {
            function: (*f).clone(),
            args: Vec::new(),
            body_arg: Some((kind, value.to_string())),
            single: accept == Accept::SingleObject,
            read: None,
        });
    }
    let Value::Object(map) = value else {
        return Err(RestError::InvalidBody(
            "the body of an rpc call must be a JSON object of named arguments".into(),
        ));
    };
    rpc_named(cache, schema, name, accept, map)
}

/// Plan `GET /rpc/{function}?arg=value`: only stable and immutable functions, with named
/// arguments from the query string (as text; Postgres converts them to the argument types).
/// Other parameters (`select`, `order`, `limit`, `offset` and filters) apply to the rows a
/// set-returning function gives, as on a table; a name that is an argument of the function
/// is an argument.
pub fn rpc_get(
    cache: &SchemaCache,
    schema: &str,
    name: &str,
    accept: Accept,
    raw_query: &str,
    limits: Limits,
) -> Result<RpcPlan, RestError> {
    let arg_names: Vec<&str> = cache
        .functions(schema, name)
        .iter()
        .flat_map(|f| f.args.iter().map(|a| a.name.as_str()))
        .collect();
    let mut map = serde_json::Map::new();
    let mut shaping = form_urlencoded::Serializer::new(String::new());
    let mut extras: Vec<(String, String)> = Vec::new();
    let mut reserved_given = false;
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        let reserved = matches!(k.as_ref(), "select" | "order" | "limit" | "offset");
        if reserved || !arg_names.contains(&k.as_ref()) {
            reserved_given |= reserved;
            shaping.append_pair(&k, &v);
            extras.push((k.to_string(), v.to_string()));
            continue;
        }
        if map
            .insert(k.to_string(), Value::String(v.to_string()))
            .is_some()
        {
            return Err(RestError::Syntax(format!(
                "argument `{k}` given more than once"
            )));
        }
    }
    let gives_rows = cache
        .functions(schema, name)
        .iter()
        .any(|f| f.returns_set && !f.result_columns.is_empty());
    let mut shaped = !extras.is_empty();
    if shaped && !reserved_given && !gives_rows {
        // Names that are no argument, on a function without result rows to filter: a call
        // with unknown arguments, refused as such.
        for (k, v) in extras {
            map.insert(k, Value::String(v));
        }
        shaped = false;
    }
    let mut plan = rpc_named(cache, schema, name, accept, map)?;
    if !plan.function.read_only {
        return Err(RestError::MethodNotAllowed(format!(
            "`{name}` is volatile (it may write); call it with POST"
        )));
    }
    if shaped {
        let query = parse_query(&shaping.finish())?;
        plan.read = Some(result_node(cache, &plan.function, &query, limits)?);
    }
    Ok(plan)
}

/// The read node over a set-returning function's result rows: `select`, filters, `order`
/// and the page, checked against the result columns. Embedding is not offered there.
fn result_node(
    cache: &SchemaCache,
    function: &Arc<Function>,
    query: &Query,
    limits: Limits,
) -> Result<Node, RestError> {
    if !function.returns_set || function.result_columns.is_empty() {
        return Err(RestError::Syntax(format!(
            "`select`, `order`, limits and filters apply to functions returning rows; `{}` returns a single value",
            function.name.as_str()
        )));
    }
    fn has_embed(items: &[SelectItem]) -> bool {
        items.iter().any(|i| matches!(i, SelectItem::Embed { .. }))
    }
    if query.select.as_deref().is_some_and(has_embed)
        || query.conditions.iter().any(|c| !c.path.is_empty())
        || query.order.iter().any(|o| !o.path.is_empty())
        || query.limit.iter().any(|l| !l.path.is_empty())
        || query.offset.iter().any(|o| !o.path.is_empty())
    {
        return Err(RestError::Syntax(
            "embedding is not supported on a function's result".into(),
        ));
    }
    // The result rows, under the function's own name: never named in SQL, only resolved
    // against.
    let rows = Arc::new(Table {
        schema: function.schema.clone(),
        name: function.name.clone(),
        columns: function.result_columns.clone(),
        primary_key: Vec::new(),
        insertable: false,
    });
    let mut node = build_node(cache, &rows, query.select.as_deref(), 1, limits)?;
    apply_scoped(cache, &mut node, query)?;
    if node
        .order
        .iter()
        .any(|o| matches!(o.key, OrderKey::Related { .. }))
    {
        return Err(RestError::Syntax(
            "embedding is not supported on a function's result".into(),
        ));
    }
    node.limit = Some(
        node.limit
            .map_or(limits.max_rows, |l| l.min(limits.max_rows)),
    );
    check_size(values_in_node(&node))?;
    Ok(node)
}

fn rpc_named(
    cache: &SchemaCache,
    schema: &str,
    name: &str,
    accept: Accept,
    map: serde_json::Map<String, Value>,
) -> Result<RpcPlan, RestError> {
    let unknown = || {
        RestError::UnknownFunction(format!(
            "no function `{name}` with arguments ({})",
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    };
    let candidates: Vec<&Arc<Function>> = cache
        .functions(schema, name)
        .iter()
        .filter(|f| !f.has_unnamed_args)
        .filter(|f| {
            map.keys()
                .all(|k| f.args.iter().any(|a| a.name.as_str() == k))
                && f.args
                    .iter()
                    .all(|a| a.has_default || map.contains_key(a.name.as_str()))
        })
        .collect();
    let function = match candidates.as_slice() {
        [] => return Err(unknown()),
        [f] => (*f).clone(),
        _ => {
            return Err(RestError::AmbiguousRelationship(format!(
                "more than one function `{name}` takes these arguments"
            )))
        }
    };
    let args = function
        .args
        .iter()
        .filter_map(|a| {
            map.get(a.name.as_str()).map(|v| {
                let text = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                (a.name.clone(), text)
            })
        })
        .collect();
    Ok(RpcPlan {
        function,
        args,
        body_arg: None,
        single: accept == Accept::SingleObject,
        read: None,
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
