//! Relational policies on the fast path: the in-memory copy of the tables their sub-selects
//! read (the *membership index*, e.g. `members`), kept at the router's log position by
//! applying each transaction's changes in log order; the routes from a row of a subscribed
//! table to the identities that may see it (`todos.list_id → members.list_id →
//! members.user_id`), which the router indexes subscriptions by; and which subscriptions a
//! change to a referenced table may move rows in or out of.
//!
//! Each instance builds its copy from the table and the change log (see
//! `Store::rows_at`), so several instances need nothing shared.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::feed::{Change, Op};
use crate::{
    policy::{CmpOp, ExistsPred, IsWhat, Lookup, Pred},
    realtime::catalog::{RefTable, VERSION_COLUMN},
};

pub type TableKey = (String, String);

/// Per referenced table, per primary key: the row before the transaction (`None`: absent).
pub type Prior = HashMap<TableKey, HashMap<String, Option<Map<String, Value>>>>;

/// One step of a route: the outer row's `outer` column equals `table.inner`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hop {
    pub outer: String,
    pub table: TableKey,
    pub inner: String,
}

/// From a row of the subscribed table, through `hops`, to the column of the last hop's
/// table that a subscription's identity is compared with (`key`), if any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub hops: Vec<Hop>,
    pub key: Option<String>,
}

/// The value a route's key column must have for a subscription (its bound `uid()` …).
pub type RouteKey = (Route, Option<String>);

/// Every chain of sub-selects in a predicate, each with the identity value its last step
/// compares with when there is one (the first such equality among its conjuncts).
pub fn routes(pred: &Pred) -> Vec<RouteKey> {
    let mut out = Vec::new();
    walk_routes(pred, &mut Vec::new(), &mut out);
    out
}

fn walk_routes(pred: &Pred, hops: &mut Vec<Hop>, out: &mut Vec<RouteKey>) {
    match pred {
        Pred::And(ps) | Pred::Or(ps) => ps.iter().for_each(|p| walk_routes(p, hops, out)),
        Pred::Exists(e) => {
            hops.push(hop(e));
            let key = conjuncts(&e.cond).iter().find_map(|c| equality(c));
            let route = Route {
                hops: hops.clone(),
                key: key.as_ref().map(|(c, _)| c.clone()),
            };
            out.push((route, key.map(|(_, v)| v)));
            walk_routes(&e.cond, hops, out);
            hops.pop();
        }
        _ => {}
    }
}

fn hop(e: &ExistsPred) -> Hop {
    Hop {
        outer: e.outer.clone(),
        table: e.table.clone(),
        inner: e.inner.clone(),
    }
}

fn conjuncts(p: &Pred) -> Vec<&Pred> {
    match p {
        Pred::And(ps) => ps.iter().collect(),
        p => vec![p],
    }
}

fn equality(p: &Pred) -> Option<(String, String)> {
    match p {
        Pred::Cmp {
            column,
            kind,
            op: CmpOp::Eq,
            value,
        } => kind.index_key(value).map(|k| (column.clone(), k)),
        Pred::Is {
            column,
            what: IsWhat::True,
        } => Some((column.clone(), "true".into())),
        _ => None,
    }
}

/// A route every visible row satisfies, for indexing a subscription: the predicate itself
/// is a keyed sub-select, or a conjunction with one (the first).
pub fn index_route(pred: &Pred) -> Option<(Route, String)> {
    let direct = |p: &Pred| -> Option<(Route, String)> {
        let Pred::Exists(_) = p else { return None };
        // The outermost chain of `p` that has a key, only through conjuncts.
        let mut hops = Vec::new();
        let mut cur = p;
        loop {
            let Pred::Exists(e) = cur else { return None };
            hops.push(hop(e));
            let cs = conjuncts(&e.cond);
            if let Some((c, v)) = cs.iter().find_map(|c| equality(c)) {
                return Some((Route { hops, key: Some(c) }, v));
            }
            cur = cs.into_iter().find(|c| matches!(c, Pred::Exists(_)))?;
        }
    };
    conjuncts(pred).into_iter().find_map(direct)
}

/// A referenced table in memory: rows by primary key, and per column the keys of the rows
/// holding each value.
#[derive(Debug)]
struct RelTable {
    info: RefTable,
    rows: HashMap<String, Map<String, Value>>,
    by_col: HashMap<String, HashMap<String, HashSet<String>>>,
}

impl RelTable {
    fn new(info: RefTable) -> RelTable {
        let by_col = info
            .kinds
            .iter()
            // The row version is never compared by a policy: not worth an index.
            .filter(|(c, k)| k.exact() && c.as_str() != VERSION_COLUMN)
            .map(|(c, _)| (c.clone(), HashMap::new()))
            .collect();
        RelTable {
            info,
            rows: HashMap::new(),
            by_col,
        }
    }

    fn pk_of(&self, row: &Map<String, Value>) -> String {
        let pk: Map<String, Value> = self
            .info
            .primary_key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        Value::Object(pk).to_string()
    }

    fn remove(&mut self, pk: &str) {
        let Some(old) = self.rows.remove(pk) else {
            return;
        };
        for (col, idx) in self.by_col.iter_mut() {
            let kind = self.info.kinds[col];
            if let Some(k) = old.get(col).and_then(|v| kind.index_key(v)) {
                if let Some(set) = idx.get_mut(&k) {
                    set.remove(pk);
                    if set.is_empty() {
                        idx.remove(&k);
                    }
                }
            }
        }
    }

    fn put(&mut self, row: Map<String, Value>) {
        let pk = self.pk_of(&row);
        self.remove(&pk);
        for (col, idx) in self.by_col.iter_mut() {
            let kind = self.info.kinds[col];
            if let Some(k) = row.get(col).and_then(|v| kind.index_key(v)) {
                idx.entry(k).or_default().insert(pk.clone());
            }
        }
        self.rows.insert(pk, row);
    }

    fn any_row(
        &self,
        column: &str,
        key: &str,
        skip: Option<&HashMap<String, Option<Map<String, Value>>>>,
        f: &mut dyn FnMut(&Map<String, Value>) -> bool,
    ) -> bool {
        let skipped = |pk: &String| skip.is_some_and(|s| s.contains_key(pk));
        match self.by_col.get(column) {
            Some(idx) => idx.get(key).is_some_and(|pks| {
                pks.iter()
                    .filter(|pk| !skipped(pk))
                    .filter_map(|pk| self.rows.get(pk))
                    .any(&mut *f)
            }),
            None => {
                let kind = self.info.kinds.get(column).copied();
                self.rows
                    .iter()
                    .filter(|(pk, _)| !skipped(pk))
                    .any(|(_, r)| {
                        kind.and_then(|k| r.get(column).and_then(|v| k.index_key(v)))
                            .as_deref()
                            == Some(key)
                            && f(r)
                    })
            }
        }
    }
}

/// The membership index: every referenced table some subscription's policy reads.
#[derive(Debug, Default)]
pub struct Relations {
    tables: HashMap<TableKey, RelTable>,
}

/// The state of the referenced tables before the transaction being routed: the index (which
/// already holds the state after it) with the transaction's rows replaced by their images
/// from before it.
pub struct Before<'a> {
    pub now: &'a Relations,
    pub prior: &'a Prior,
}

impl Relations {
    pub fn has(&self, t: &TableKey) -> bool {
        self.tables.contains_key(t)
    }

    pub fn clear(&mut self) {
        self.tables.clear();
    }

    /// Rows held across all tables (for the metrics gauge).
    pub fn row_count(&self) -> usize {
        self.tables.values().map(|t| t.rows.len()).sum()
    }

    /// Replace a table's copy by `rows` (its state at the router's position).
    pub fn load(&mut self, info: RefTable, rows: Vec<Map<String, Value>>) {
        let mut t = RelTable::new(info);
        for r in rows {
            t.put(r);
        }
        self.tables.insert(t.info.key(), t);
    }

    /// Apply the changes of one transaction to the tables held, returning each changed
    /// row's state before the transaction. A truncate drops the table's copy (it is reloaded
    /// on next use) and is reported in `truncated`.
    pub fn apply(&mut self, changes: &[&Change], truncated: &mut Vec<TableKey>) -> Prior {
        let mut prior: Prior = HashMap::new();
        for c in changes {
            let key = (c.table.schema.clone(), c.table.name.clone());
            let Some(t) = self.tables.get_mut(&key) else {
                continue;
            };
            if c.op == Op::Truncate {
                self.tables.remove(&key);
                truncated.push(key);
                continue;
            }
            let pk = {
                let pk: Map<String, Value> = t
                    .info
                    .primary_key
                    .iter()
                    .map(|k| (k.clone(), c.pk.get(k).cloned().unwrap_or(Value::Null)))
                    .collect();
                Value::Object(pk).to_string()
            };
            let before = t.rows.get(&pk).cloned();
            prior
                .entry(key)
                .or_default()
                .entry(pk.clone())
                .or_insert(before);
            match (&c.op, &c.new_row) {
                (Op::Insert | Op::Update, Some(Value::Object(row))) => {
                    // An update may change the key: drop the old image's entry first.
                    if let Some(Value::Object(old)) = &c.old_row {
                        let old_pk = t.pk_of(old);
                        if old_pk != pk {
                            let before = t.rows.get(&old_pk).cloned();
                            prior
                                .entry((c.table.schema.clone(), c.table.name.clone()))
                                .or_default()
                                .entry(old_pk.clone())
                                .or_insert(before);
                            t.remove(&old_pk);
                        }
                    }
                    t.put(row.clone());
                }
                _ => t.remove(&pk),
            }
        }
        prior
    }
}

impl Lookup for Relations {
    fn any_row(
        &self,
        table: &(String, String),
        column: &str,
        key: &str,
        f: &mut dyn FnMut(&Map<String, Value>) -> bool,
    ) -> bool {
        self.tables
            .get(table)
            .is_some_and(|t| t.any_row(column, key, None, f))
    }
}

impl Lookup for Before<'_> {
    fn any_row(
        &self,
        table: &(String, String),
        column: &str,
        key: &str,
        f: &mut dyn FnMut(&Map<String, Value>) -> bool,
    ) -> bool {
        let Some(t) = self.now.tables.get(table) else {
            return false;
        };
        let prior = self.prior.get(table);
        if t.any_row(column, key, prior, f) {
            return true;
        }
        let kind = t.info.kinds.get(column).copied();
        prior.is_some_and(|p| {
            p.values().flatten().any(|r| {
                kind.and_then(|k| r.get(column).and_then(|v| k.index_key(v)))
                    .as_deref()
                    == Some(key)
                    && f(r)
            })
        })
    }
}

/// The index key of `column` in a row image (none for null or unindexable values). Row
/// images come from Postgres, so uuids are already in canonical form and this equals
/// `ColumnKind::index_key` for every indexable kind.
pub fn key_of(
    _rows: &dyn Lookup,
    _t: &TableKey,
    row: &Map<String, Value>,
    column: &str,
) -> Option<String> {
    match row.get(column)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_i64().map(|i| i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// From values of `hops[from].outer`, the key values of the route at its last hop: walk
/// down through the referenced tables as `rows` has them.
pub fn keys_down(
    rows: &dyn Lookup,
    route: &Route,
    from: usize,
    start: HashSet<String>,
) -> HashSet<String> {
    let Some(key_col) = &route.key else {
        return HashSet::new();
    };
    let mut vals = start;
    for (i, hop) in route.hops.iter().enumerate().skip(from) {
        let last = i + 1 == route.hops.len();
        let next_col = if last {
            key_col.clone()
        } else {
            route.hops[i + 1].outer.clone()
        };
        let mut next = HashSet::new();
        for v in &vals {
            rows.any_row(&hop.table, &hop.inner, v, &mut |r| {
                if let Some(k) = key_of(rows, &hop.table, r, &next_col) {
                    next.insert(k);
                }
                false
            });
        }
        vals = next;
        if vals.is_empty() {
            break;
        }
    }
    vals
}

/// The routing keys (identity values) a row of the subscribed table reaches.
pub fn row_keys(rows: &dyn Lookup, route: &Route, row: &Map<String, Value>) -> HashSet<String> {
    let Some(first) = route.hops.first() else {
        return HashSet::new();
    };
    let Some(v) = key_of(rows, &first.table, row, &first.outer) else {
        return HashSet::new();
    };
    keys_down(rows, route, 0, HashSet::from([v]))
}

/// What a changed row `row` of the table at `hops[h]` means for a route: the identity
/// values whose visibility may change (`None`: any identity, the route has no key), and
/// the values of the subscribed table's link column whose rows may move.
pub fn affected(
    rows: &dyn Lookup,
    route: &Route,
    h: usize,
    row: &Map<String, Value>,
) -> (Option<HashSet<String>>, HashSet<String>) {
    let hop = &route.hops[h];
    let keys = route.key.as_ref().map(|key_col| {
        if h + 1 == route.hops.len() {
            key_of(rows, &hop.table, row, key_col).into_iter().collect()
        } else {
            let next = &route.hops[h + 1];
            match key_of(rows, &hop.table, row, &next.outer) {
                Some(v) => keys_down(rows, route, h + 1, HashSet::from([v])),
                None => HashSet::new(),
            }
        }
    });
    // Up: the values of the link column of each level above, to the subscribed table's.
    let mut vals: HashSet<String> = key_of(rows, &hop.table, row, &hop.inner)
        .into_iter()
        .collect();
    for i in (0..h).rev() {
        let parent = &route.hops[i];
        let link = &route.hops[i + 1].outer;
        let mut next = HashSet::new();
        for v in &vals {
            rows.any_row(&parent.table, link, v, &mut |r| {
                if let Some(k) = key_of(rows, &parent.table, r, &parent.inner) {
                    next.insert(k);
                }
                false
            });
        }
        vals = next;
    }
    (keys, vals)
}

/// Whether a change to a referenced table may change what a subscription with these routes
/// sees (conservative: any change to a table above the identity's step counts). Catch-up
/// judges old transactions against the index at the router's position, so such a change in
/// a replayed range makes the subscription start over instead.
pub fn concerns(routes: &[RouteKey], change: &Change) -> bool {
    let table = (change.table.schema.clone(), change.table.name.clone());
    routes.iter().any(|(route, key)| {
        route.hops.iter().enumerate().any(|(h, hop)| {
            if hop.table != table {
                return false;
            }
            match (h + 1 == route.hops.len(), &route.key, key) {
                (true, Some(col), Some(k)) => [&change.old_row, &change.new_row]
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .any(|img| key_of(&NoLookup, &table, img, col).as_deref() == Some(k)),
                _ => true,
            }
        })
    })
}

struct NoLookup;

impl Lookup for NoLookup {
    fn any_row(
        &self,
        _: &(String, String),
        _: &str,
        _: &str,
        _: &mut dyn FnMut(&Map<String, Value>) -> bool,
    ) -> bool {
        false
    }
}
