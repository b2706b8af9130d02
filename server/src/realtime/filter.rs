//! Subscription filters: the JSON form clients send (the REST grammar's operators `eq, neq,
//! gt, gte, lt, lte, in, is` combined with `and`/`or`), validated against the table's
//! columns into a [`Pred`], plus the equality conditions pushed down into the snapshot query.

use serde_json::Value;

use crate::{
    policy::{CmpOp, ColumnKind, IsWhat, Pred},
    protocol::{ApiError, ErrorCode},
    realtime::catalog::TableCatalog,
};

/// Bounds that keep one filter cheap to evaluate for every change.
const MAX_NODES: usize = 64;
const MAX_DEPTH: usize = 8;
const MAX_IN_VALUES: usize = 1000;

pub use crate::store::realtime::Pushdown;

/// Parse and validate a filter. `None` (no filter) matches every row.
pub fn compile_filter(filter: Option<&Value>, table: &TableCatalog) -> Result<Pred, ApiError> {
    let Some(f) = filter else {
        return Ok(Pred::Const(true));
    };
    if f.is_null() {
        return Ok(Pred::Const(true));
    }
    let mut nodes = 0;
    node(f, table, 0, &mut nodes)
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, message).with_hint(
        r#"a filter is {"column":"c","op":"eq","value":1}, {"and":[…]} or {"or":[…]}; ops: eq, neq, gt, gte, lt, lte, in, is"#,
    )
}

fn node(
    f: &Value,
    table: &TableCatalog,
    depth: usize,
    nodes: &mut usize,
) -> Result<Pred, ApiError> {
    *nodes += 1;
    if *nodes > MAX_NODES || depth > MAX_DEPTH {
        return Err(bad(format!(
            "the filter is too large (at most {MAX_NODES} conditions, nested {MAX_DEPTH} deep)"
        )));
    }
    let obj = f
        .as_object()
        .ok_or_else(|| bad("a filter must be an object"))?;
    for (key, combine) in [("and", true), ("or", false)] {
        if let Some(list) = obj.get(key) {
            if obj.len() != 1 {
                return Err(bad(format!("`{key}` must be the only key of its object")));
            }
            let list = list
                .as_array()
                .ok_or_else(|| bad(format!("`{key}` takes an array of filters")))?;
            let parts = list
                .iter()
                .map(|p| node(p, table, depth + 1, nodes))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if combine {
                Pred::and(parts)
            } else {
                Pred::or(parts)
            });
        }
    }
    for key in obj.keys() {
        if !["column", "op", "value"].contains(&key.as_str()) {
            return Err(bad(format!("unknown filter key `{}`", truncate(key))));
        }
    }
    let column = obj
        .get("column")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a condition needs a string `column`"))?;
    let col = table.column(column).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no column `{}` in {}", truncate(column), table.qualified()),
        )
    })?;
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a condition needs a string `op`"))?;
    let value = obj.get("value").unwrap_or(&Value::Null);
    let kind = col.kind;
    let cmp = match op {
        "eq" => Some(CmpOp::Eq),
        "neq" => Some(CmpOp::Neq),
        "gt" => Some(CmpOp::Gt),
        "gte" => Some(CmpOp::Gte),
        "lt" => Some(CmpOp::Lt),
        "lte" => Some(CmpOp::Lte),
        _ => None,
    };
    let coerce = |v: &Value| {
        kind.coerce(v).ok_or_else(|| {
            bad(format!(
                "the value for `{}` does not fit its type {}",
                col.name, col.sql_type
            ))
        })
    };
    if let Some(cmp) = cmp {
        if !matches!(cmp, CmpOp::Eq | CmpOp::Neq) && !kind.ordered() {
            return Err(bad(format!(
                "`{op}` is not supported on `{}` (type {})",
                col.name, col.sql_type
            )));
        }
        if value.is_array() || value.is_object() {
            return Err(bad(format!("`{op}` takes a single value")));
        }
        return Ok(Pred::Cmp {
            column: col.name.clone(),
            kind,
            op: cmp,
            value: coerce(value)?,
        });
    }
    match op {
        "in" => {
            let list = value
                .as_array()
                .ok_or_else(|| bad("`in` takes an array of values"))?;
            if list.len() > MAX_IN_VALUES {
                return Err(bad(format!("`in` takes at most {MAX_IN_VALUES} values")));
            }
            Ok(Pred::In {
                column: col.name.clone(),
                kind,
                values: list.iter().map(coerce).collect::<Result<_, _>>()?,
            })
        }
        "is" => {
            let what = match value {
                Value::Null => IsWhat::Null,
                Value::Bool(true) => IsWhat::True,
                Value::Bool(false) => IsWhat::False,
                Value::String(s) if s == "null" => IsWhat::Null,
                Value::String(s) if s == "not_null" => IsWhat::NotNull,
                Value::String(s) if s == "true" => IsWhat::True,
                Value::String(s) if s == "false" => IsWhat::False,
                _ => return Err(bad("`is` takes null, true, false or \"not_null\"")),
            };
            if matches!(what, IsWhat::True | IsWhat::False) && kind != ColumnKind::Bool {
                return Err(bad(format!(
                    "`is true/false` needs a boolean column, not `{}`",
                    col.name
                )));
            }
            Ok(Pred::Is {
                column: col.name.clone(),
                what,
            })
        }
        other => Err(bad(format!("unknown operator `{}`", truncate(other)))),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The top-level equality conditions of a filter that the snapshot query can apply in SQL,
/// on kinds whose SQL equality is exactly the server's.
pub fn pushdown(pred: &Pred, table: &TableCatalog) -> Vec<Pushdown> {
    let conjuncts: &[Pred] = match pred {
        Pred::And(ps) => ps,
        p => std::slice::from_ref(p),
    };
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    for p in conjuncts {
        let (column, kind, values) = match p {
            Pred::Cmp {
                column,
                kind,
                op: CmpOp::Eq,
                value,
            } => (column, kind, vec![value]),
            Pred::In {
                column,
                kind,
                values,
            } if !values.is_empty() => (column, kind, values.iter().collect()),
            _ => continue,
        };
        if !kind.exact() {
            continue;
        }
        let (Some(col), Some(values)) = (
            table.column(column),
            values.into_iter().map(text).collect::<Option<Vec<_>>>(),
        ) else {
            continue;
        };
        out.push(Pushdown {
            column: col.name.clone(),
            sql_type: col.sql_type.clone(),
            values,
        });
    }
    out
}
