//! Row predicates evaluated in the server: the compiled form of subscription filters and of
//! the row-level-security policies that take the fast path. A [`Pred`] is evaluated against
//! a row as captured (its JSON image), with the same answer Postgres would give for the
//! column types the fast path admits.
//!
//! `parse` reads policy expressions as Postgres prints them (`pg_get_expr`) and `compile`
//! binds them to one identity; policies outside the subset are checked in SQL instead.
//! `visibility` decides when a referenced table's own row-level security cannot change a
//! sub-select's result.

pub mod compile;
pub mod parse;
pub mod visibility;

use std::{cmp::Ordering, sync::Arc};

use serde_json::{Map, Value};

/// How values of a column compare. Anything not listed is `Other` (equality of the JSON
/// image only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    Int,
    Float,
    Text,
    Uuid,
    Bool,
    Time,
    Other,
}

impl ColumnKind {
    /// Kind of a column from its type name in `pg_type` (`typname`).
    pub fn from_typname(t: &str) -> ColumnKind {
        match t {
            "int2" | "int4" | "int8" => ColumnKind::Int,
            "float4" | "float8" | "numeric" => ColumnKind::Float,
            "text" | "varchar" | "name" => ColumnKind::Text,
            "uuid" => ColumnKind::Uuid,
            "bool" => ColumnKind::Bool,
            "timestamptz" | "timestamp" | "date" => ColumnKind::Time,
            _ => ColumnKind::Other,
        }
    }

    /// Kinds whose comparisons in Rust agree exactly with Postgres (no collation, no
    /// time-zone or precision questions): the fast path uses only these.
    pub fn exact(self) -> bool {
        matches!(
            self,
            ColumnKind::Int | ColumnKind::Text | ColumnKind::Uuid | ColumnKind::Bool
        )
    }

    /// Whether `<`, `>` are meaningful for filters on this kind.
    pub fn ordered(self) -> bool {
        !matches!(self, ColumnKind::Other | ColumnKind::Bool)
    }

    /// The value in canonical JSON form for this kind, or `None` if it cannot be one
    /// (e.g. `"abc"` for an integer column). Strings holding numbers/booleans are accepted
    /// because claims and SQL literals arrive as text.
    pub fn coerce(self, v: &Value) -> Option<Value> {
        match (self, v) {
            (_, Value::Null) => None,
            (ColumnKind::Int, Value::Number(n)) => n.as_i64().map(Value::from),
            (ColumnKind::Int, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
            (ColumnKind::Float, Value::Number(n)) => Some(Value::Number(n.clone())),
            (ColumnKind::Float, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            (ColumnKind::Text, Value::String(s)) => Some(Value::String(s.clone())),
            (ColumnKind::Uuid, Value::String(s)) => uuid::Uuid::parse_str(s)
                .ok()
                .map(|u| Value::String(u.hyphenated().to_string())),
            (ColumnKind::Bool, Value::Bool(b)) => Some(Value::Bool(*b)),
            (ColumnKind::Bool, Value::String(s)) => match s.as_str() {
                "true" | "t" => Some(Value::Bool(true)),
                "false" | "f" => Some(Value::Bool(false)),
                _ => None,
            },
            (ColumnKind::Time, Value::String(s)) => time_key(s).map(|_| Value::String(s.clone())),
            (ColumnKind::Other, v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Compare a row value with a (coerced) operand; `None` when either is null or they are
    /// not comparable (SQL's unknown, which filters treat as false).
    pub fn compare(self, row: &Value, operand: &Value) -> Option<Ordering> {
        match self {
            ColumnKind::Int | ColumnKind::Float => {
                let (a, b) = (row.as_number()?, operand.as_number()?);
                match (a.as_i64(), b.as_i64()) {
                    (Some(x), Some(y)) => Some(x.cmp(&y)),
                    _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
                }
            }
            ColumnKind::Text => Some(row.as_str()?.cmp(operand.as_str()?)),
            ColumnKind::Uuid => {
                let a = uuid::Uuid::parse_str(row.as_str()?).ok()?;
                let b = uuid::Uuid::parse_str(operand.as_str()?).ok()?;
                Some(a.cmp(&b))
            }
            ColumnKind::Bool => Some(row.as_bool()?.cmp(&operand.as_bool()?)),
            ColumnKind::Time => {
                let a = time_key(row.as_str()?)?;
                let b = time_key(operand.as_str()?)?;
                a.partial_cmp(&b)
            }
            ColumnKind::Other => {
                if row.is_null() || operand.is_null() {
                    None
                } else if row == operand {
                    Some(Ordering::Equal)
                } else {
                    // Only eq/neq are allowed on these; any non-equal answer will do.
                    Some(Ordering::Greater)
                }
            }
        }
    }

    /// The key under which a row value is indexed for equality lookups, or `None` for kinds
    /// that are not indexed.
    pub fn index_key(self, v: &Value) -> Option<String> {
        match (self, v) {
            (ColumnKind::Int, Value::Number(n)) => n.as_i64().map(|i| i.to_string()),
            (ColumnKind::Text, Value::String(s)) => Some(s.clone()),
            (ColumnKind::Uuid, Value::String(s)) => uuid::Uuid::parse_str(s)
                .ok()
                .map(|u| u.hyphenated().to_string()),
            (ColumnKind::Bool, Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A comparable instant for the JSON text of timestamptz/timestamp/date values: seconds
/// since the epoch (a naive timestamp is read as UTC, consistently on both sides).
fn time_key(s: &str) -> Option<f64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9);
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        let t = t.and_utc();
        return Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp() as f64);
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl CmpOp {
    fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Neq => o != Ordering::Equal,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Gte => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Lte => o != Ordering::Greater,
        }
    }
}

/// What `is` tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsWhat {
    Null,
    NotNull,
    True,
    False,
}

/// A predicate over one row, with every identity-dependent part already bound.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    Const(bool),
    Cmp {
        column: String,
        kind: ColumnKind,
        op: CmpOp,
        value: Value,
    },
    In {
        column: String,
        kind: ColumnKind,
        values: Vec<Value>,
    },
    Is {
        column: String,
        what: IsWhat,
    },
    And(Vec<Pred>),
    Or(Vec<Pred>),
    /// `exists (select 1 from table t where t.inner = outer.outer and cond(t))`: true when a
    /// row of `table` (as the server's in-memory copy has it, see [`Lookup`]) links to this
    /// row and satisfies `cond`. The `col IN (select …)` form compiles to this too.
    Exists(Arc<ExistsPred>),
}

/// One semi-join step of a relational policy (see [`Pred::Exists`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ExistsPred {
    /// The referenced table (`schema`, `name`).
    pub table: (String, String),
    /// Its column equal to the outer row's `outer` column.
    pub inner: String,
    /// The kind both link columns share.
    pub kind: ColumnKind,
    pub outer: String,
    /// The rest of the sub-select's condition, over the referenced table's row.
    pub cond: Pred,
}

/// Rows of referenced tables, for evaluating [`Pred::Exists`].
pub trait Lookup: Sync {
    /// Call `f` for each row of `table` whose `column` has index key `key`, until `f`
    /// returns true; whether it did.
    fn any_row(
        &self,
        table: &(String, String),
        column: &str,
        key: &str,
        f: &mut dyn FnMut(&Map<String, Value>) -> bool,
    ) -> bool;
}

/// No referenced rows: every `Exists` is false (used where no index applies).
pub struct NoRows;

impl Lookup for NoRows {
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

impl Pred {
    /// Evaluate against a row image. Missing columns count as null. `Exists` is false.
    pub fn eval(&self, row: &Map<String, Value>) -> bool {
        self.eval_with(row, &NoRows)
    }

    /// Whether any part of this predicate reads another table.
    pub fn is_relational(&self) -> bool {
        match self {
            Pred::Exists(_) => true,
            Pred::And(ps) | Pred::Or(ps) => ps.iter().any(Pred::is_relational),
            _ => false,
        }
    }

    /// Evaluate against a row image, with `rows` answering `Exists`.
    pub fn eval_with(&self, row: &Map<String, Value>, rows: &dyn Lookup) -> bool {
        match self {
            Pred::Const(b) => *b,
            Pred::Cmp {
                column,
                kind,
                op,
                value,
            } => row
                .get(column)
                .and_then(|v| kind.compare(v, value))
                .is_some_and(|o| op.holds(o)),
            Pred::In {
                column,
                kind,
                values,
            } => row.get(column).is_some_and(|v| {
                values
                    .iter()
                    .any(|x| kind.compare(v, x) == Some(Ordering::Equal))
            }),
            Pred::Is { column, what } => {
                let v = row.get(column).unwrap_or(&Value::Null);
                match what {
                    IsWhat::Null => v.is_null(),
                    IsWhat::NotNull => !v.is_null(),
                    IsWhat::True => v.as_bool() == Some(true),
                    IsWhat::False => v.as_bool() == Some(false),
                }
            }
            Pred::And(ps) => ps.iter().all(|p| p.eval_with(row, rows)),
            Pred::Or(ps) => ps.iter().any(|p| p.eval_with(row, rows)),
            Pred::Exists(e) => {
                // A null link matches nothing, as `=` in SQL.
                let Some(key) = row.get(&e.outer).and_then(|v| e.kind.index_key(v)) else {
                    return false;
                };
                rows.any_row(&e.table, &e.inner, &key, &mut |t| {
                    // The inner column compares equal by construction of the index key.
                    e.cond.eval_with(t, rows)
                })
            }
        }
    }

    /// Conjunction with constant folding.
    pub fn and(preds: Vec<Pred>) -> Pred {
        let mut out = Vec::new();
        for p in preds {
            match p {
                Pred::Const(true) => {}
                Pred::Const(false) => return Pred::Const(false),
                Pred::And(inner) => out.extend(inner),
                p => out.push(p),
            }
        }
        match out.len() {
            0 => Pred::Const(true),
            1 => out.pop().unwrap_or(Pred::Const(true)),
            _ => Pred::And(out),
        }
    }

    /// Disjunction with constant folding.
    pub fn or(preds: Vec<Pred>) -> Pred {
        let mut out = Vec::new();
        for p in preds {
            match p {
                Pred::Const(false) => {}
                Pred::Const(true) => return Pred::Const(true),
                Pred::Or(inner) => out.extend(inner),
                p => out.push(p),
            }
        }
        match out.len() {
            0 => Pred::Const(false),
            1 => out.pop().unwrap_or(Pred::Const(false)),
            _ => Pred::Or(out),
        }
    }

    /// The equality conditions that every matching row satisfies (top-level conjuncts of
    /// the form `column = value` on an indexable kind): the router indexes subscriptions by
    /// one of them.
    pub fn equalities(&self) -> Vec<(String, ColumnKind, String)> {
        let mut out = Vec::new();
        let conjuncts: &[Pred] = match self {
            Pred::And(ps) => ps,
            p => std::slice::from_ref(p),
        };
        for p in conjuncts {
            match p {
                Pred::Cmp {
                    column,
                    kind,
                    op: CmpOp::Eq,
                    value,
                } => {
                    if let Some(k) = kind.index_key(value) {
                        out.push((column.clone(), *kind, k));
                    }
                }
                Pred::Is {
                    column,
                    what: IsWhat::True,
                } => out.push((column.clone(), ColumnKind::Bool, "true".into())),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn comparisons_follow_sql_null_and_type_rules() {
        let p = Pred::Cmp {
            column: "n".into(),
            kind: ColumnKind::Int,
            op: CmpOp::Gt,
            value: json!(5),
        };
        assert!(p.eval(&row(json!({"n": 6}))));
        assert!(!p.eval(&row(json!({"n": 5}))));
        assert!(!p.eval(&row(json!({"n": null}))));
        assert!(!p.eval(&row(json!({}))));
        let neq = Pred::Cmp {
            column: "n".into(),
            kind: ColumnKind::Int,
            op: CmpOp::Neq,
            value: json!(5),
        };
        assert!(!neq.eval(&row(json!({"n": null}))), "null <> 5 is unknown");
        let u = Pred::Cmp {
            column: "o".into(),
            kind: ColumnKind::Uuid,
            op: CmpOp::Eq,
            value: ColumnKind::Uuid
                .coerce(&json!("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"))
                .unwrap(),
        };
        assert!(u.eval(&row(json!({"o": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}))));
        let t = Pred::Cmp {
            column: "at".into(),
            kind: ColumnKind::Time,
            op: CmpOp::Lt,
            value: json!("2024-01-01T01:00:00+01:00"),
        };
        assert!(!t.eval(&row(json!({"at": "2024-01-01T00:00:00+00:00"}))));
        assert!(t.eval(&row(json!({"at": "2023-12-31T23:59:59+00:00"}))));
        let i = Pred::In {
            column: "s".into(),
            kind: ColumnKind::Text,
            values: vec![json!("a"), json!("b")],
        };
        assert!(i.eval(&row(json!({"s": "b"}))));
        assert!(!i.eval(&row(json!({"s": "c"}))));
    }
}
