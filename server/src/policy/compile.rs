//! Binding a table's row-level-security policies to one identity: the fast path turns them
//! into a [`Pred`] evaluated in the server; otherwise the combined policy expression is
//! checked in SQL (batched, see `store::realtime::visible_rows`).

use serde_json::Value;

use std::sync::Arc;

use super::{
    parse::{Operand, PolicyExpr},
    CmpOp, ColumnKind, ExistsPred, IsWhat, Pred,
};
use crate::auth::Identity;

/// One policy that applies to SELECT for the role in question.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub permissive: bool,
    /// `pg_get_expr(polqual, polrelid)`; from the catalog, never from a client.
    pub sql: String,
    /// The fast-path form, when the expression is in the subset.
    pub fast: Option<PolicyExpr>,
}

/// What a role may read of a table.
#[derive(Debug, Clone)]
pub enum Access {
    /// No SELECT privilege.
    Denied,
    /// Row-level security is off (or the role bypasses it): every row.
    AllRows,
    /// Row-level security applies with these policies (possibly none: no rows).
    Policies(Vec<Policy>),
}

/// How the server decides, per row, whether one identity may see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    /// Evaluated in the server.
    Fast(Pred),
    /// Checked in SQL with this expression over the row's columns (the combined policy).
    Sql(String),
}

impl Access {
    /// Whether every policy here takes the fast path.
    pub fn is_fast(&self) -> bool {
        match self {
            Access::Policies(ps) => ps.iter().all(|p| p.fast.is_some()),
            _ => true,
        }
    }

    /// The visibility rule for `identity`. `None` when the role has no SELECT privilege.
    pub fn visibility(&self, identity: &Identity) -> Option<Visibility> {
        match self {
            Access::Denied => None,
            Access::AllRows => Some(Visibility::Fast(Pred::Const(true))),
            Access::Policies(ps) => {
                let fast = || -> Option<Pred> {
                    let mut permissive = Vec::new();
                    let mut restrictive = Vec::new();
                    for p in ps {
                        let pred = bind(p.fast.as_ref()?, identity)?;
                        if p.permissive {
                            permissive.push(pred);
                        } else {
                            restrictive.push(pred);
                        }
                    }
                    // Postgres: at least one permissive policy must pass, and all restrictive.
                    restrictive.insert(0, Pred::or(permissive));
                    Some(Pred::and(restrictive))
                };
                Some(match fast() {
                    Some(pred) => Visibility::Fast(pred),
                    None => Visibility::Sql(combined_sql(ps)),
                })
            }
        }
    }
}

/// The tables a fast-path policy's sub-selects read, outermost first.
pub fn tables_read(expr: &PolicyExpr) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(e: &PolicyExpr, out: &mut Vec<(String, String)>) {
        match e {
            PolicyExpr::And(ps) | PolicyExpr::Or(ps) => ps.iter().for_each(|p| walk(p, out)),
            PolicyExpr::Exists(x) => {
                if !out.contains(&x.table) {
                    out.push(x.table.clone());
                }
                walk(&x.cond, out);
            }
            _ => {}
        }
    }
    walk(expr, &mut out);
    out
}

/// `(p1) OR (p2) …` AND each restrictive policy, as Postgres combines them.
fn combined_sql(ps: &[Policy]) -> String {
    let permissive: Vec<String> = ps
        .iter()
        .filter(|p| p.permissive)
        .map(|p| format!("({})", p.sql))
        .collect();
    let mut parts = vec![if permissive.is_empty() {
        "false".to_string()
    } else {
        format!("({})", permissive.join(" OR "))
    }];
    parts.extend(
        ps.iter()
            .filter(|p| !p.permissive)
            .map(|p| format!("({})", p.sql)),
    );
    parts.join(" AND ")
}

/// The value an identity-dependent operand has for `identity` (SQL null as `Null`).
fn resolve(op: &Operand, identity: &Identity) -> Option<Value> {
    let claim_text = |key: &str| match identity.claims.get(key) {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(other) => Value::String(other.to_string()),
    };
    Some(match op {
        Operand::Literal(v) => v.clone(),
        // rowcast.uid() is `nullif(claims->>'sub', '')::uuid`: as text (a cast in the
        // policy) it is the canonical lower-case form.
        Operand::Uid => match claim_text("sub") {
            Value::String(s) if s.is_empty() => Value::Null,
            Value::String(s) => match uuid::Uuid::parse_str(&s) {
                Ok(u) => Value::String(u.hyphenated().to_string()),
                // Postgres would fail the cast (an error, so no rows): nothing is visible.
                Err(_) => return None,
            },
            v => v,
        },
        Operand::Role => match claim_text("role") {
            Value::Null => Value::String("anon".into()),
            v => v,
        },
        Operand::Claim(k) => claim_text(k),
        Operand::Column { .. } => return None,
    })
}

/// Bind one fast-path policy to an identity. `None` if it turns out not to be bindable
/// (e.g. compares two columns), in which case SQL decides.
fn bind(expr: &PolicyExpr, identity: &Identity) -> Option<Pred> {
    Some(match expr {
        PolicyExpr::Const(b) => Pred::Const(*b),
        PolicyExpr::Exists(e) => match bind(&e.cond, identity)? {
            Pred::Const(false) => Pred::Const(false),
            cond => Pred::Exists(Arc::new(ExistsPred {
                table: e.table.clone(),
                inner: e.inner.clone(),
                kind: e.kind,
                outer: e.outer.clone(),
                cond,
            })),
        },
        PolicyExpr::BoolColumn(c) => Pred::Is {
            column: c.clone(),
            what: IsWhat::True,
        },
        PolicyExpr::And(ps) => Pred::and(
            ps.iter()
                .map(|p| bind(p, identity))
                .collect::<Option<_>>()?,
        ),
        PolicyExpr::Or(ps) => Pred::or(
            ps.iter()
                .map(|p| bind(p, identity))
                .collect::<Option<_>>()?,
        ),
        PolicyExpr::Cmp(a, op, b) => match (a, b) {
            (Operand::Column { .. }, Operand::Column { .. }) => return None,
            (Operand::Column { name, kind }, other) | (other, Operand::Column { name, kind }) => {
                let v = resolve(other, identity)?;
                match kind.coerce(&v) {
                    Some(value) => Pred::Cmp {
                        column: name.clone(),
                        kind: *kind,
                        op: *op,
                        value,
                    },
                    // Null (or a value that does not fit the column): unknown, so false.
                    None => Pred::Const(false),
                }
            }
            (x, y) => {
                let kind = if matches!(x, Operand::Uid) || matches!(y, Operand::Uid) {
                    ColumnKind::Uuid
                } else {
                    ColumnKind::Text
                };
                let (x, y) = (resolve(x, identity)?, resolve(y, identity)?);
                let (Some(x), Some(y)) = (kind.coerce(&x), kind.coerce(&y)) else {
                    return Some(Pred::Const(false));
                };
                let equal = kind.compare(&x, &y) == Some(std::cmp::Ordering::Equal);
                Pred::Const(match op {
                    CmpOp::Eq => equal,
                    CmpOp::Neq => !equal,
                    _ => return None,
                })
            }
        },
        PolicyExpr::In(a, items) => {
            let Operand::Column { name, kind } = a else {
                return None;
            };
            let mut values = Vec::new();
            for i in items {
                if matches!(i, Operand::Column { .. }) {
                    return None;
                }
                if let Some(v) = kind.coerce(&resolve(i, identity)?) {
                    values.push(v);
                }
            }
            Pred::In {
                column: name.clone(),
                kind: *kind,
                values,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::policy::parse::parse_policy;
    use serde_json::json;

    fn cols() -> HashMap<String, ColumnKind> {
        [
            ("owner", ColumnKind::Uuid),
            ("team", ColumnKind::Text),
            ("public", ColumnKind::Bool),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn policy(sql: &str, permissive: bool) -> Policy {
        Policy {
            name: "p".into(),
            permissive,
            sql: sql.into(),
            fast: parse_policy(sql, &cols()),
        }
    }

    #[test]
    fn owner_only_binds_to_the_subject_and_indexes_by_it() {
        let uid = "8c0c8a58-3f0b-4c5f-9b7e-6f1e2f0b9a11";
        let access = Access::Policies(vec![policy("(owner = rowcast.uid())", true)]);
        let Some(Visibility::Fast(pred)) = access.visibility(&Identity::user(uid, json!({})))
        else {
            panic!("owner-only should take the fast path");
        };
        assert!(pred.eval(json!({"owner": uid}).as_object().unwrap()));
        assert!(!pred.eval(
            json!({"owner": "00000000-0000-0000-0000-000000000000"})
                .as_object()
                .unwrap()
        ));
        assert_eq!(
            pred.equalities(),
            vec![("owner".to_string(), ColumnKind::Uuid, uid.to_string())]
        );
        // Anonymous: uid() is null, so nothing.
        let Some(Visibility::Fast(anon)) = access.visibility(&Identity::anonymous()) else {
            panic!()
        };
        assert_eq!(anon, Pred::Const(false));
    }

    #[test]
    fn permissive_or_restrictive_and_fallback() {
        let uid = "8c0c8a58-3f0b-4c5f-9b7e-6f1e2f0b9a11";
        let who = Identity::user(uid, json!({"team": "red"}));
        let access = Access::Policies(vec![
            policy("(owner = rowcast.uid())", true),
            policy("public", true),
            policy("(team = (rowcast.claims() ->> 'team'::text))", false),
        ]);
        let Some(Visibility::Fast(pred)) = access.visibility(&who) else {
            panic!()
        };
        let row = |o: &str, p: bool, t: &str| json!({"owner": o, "public": p, "team": t});
        let other = "00000000-0000-0000-0000-000000000000";
        assert!(pred.eval(row(uid, false, "red").as_object().unwrap()));
        assert!(pred.eval(row(other, true, "red").as_object().unwrap()));
        assert!(!pred.eval(row(other, true, "blue").as_object().unwrap()));
        assert!(!pred.eval(row(other, false, "red").as_object().unwrap()));

        let none = Access::Policies(vec![]);
        assert_eq!(
            none.visibility(&who),
            Some(Visibility::Fast(Pred::Const(false)))
        );
        let slow = Access::Policies(vec![
            policy("(lower(team) = 'red'::text)", true),
            policy("public", false),
        ]);
        assert_eq!(
            slow.visibility(&who),
            Some(Visibility::Sql(
                "(((lower(team) = 'red'::text))) AND (public)".into()
            ))
        );
        assert!(!slow.is_fast());
    }
}
