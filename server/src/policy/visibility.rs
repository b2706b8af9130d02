//! Whether a referenced table's own row-level security can change what a policy's
//! sub-select finds. A sub-select reads the referenced table as the querying user, so its
//! result is the rows its conditions accept AND the referenced table's policies let the
//! user see. When every row the conditions accept is visible anyway, the server's full
//! in-memory copy of the referenced table gives the same answer as Postgres.
//!
//! The rule is deliberately narrow (docs/realtime.md): the sub-select has a condition
//! `t.col = X` with `X` the same for the whole query (`rowcast.uid()`, a claim, the role, a
//! literal), and one of the referenced table's permissive SELECT policies for the role is
//! `col = X` OR'ed with anything. Restrictive policies are refused by the caller.

use std::collections::HashMap;

use super::parse::{parse_policy_in, ExistsExpr, Operand, PolicyExpr};
use super::{CmpOp, ColumnKind};

/// What a role may see of a referenced table under its row-level security.
#[derive(Debug, Clone, PartialEq)]
pub enum RefRows {
    /// Every row: no row-level security, or the role bypasses it.
    All,
    /// Rows satisfying any of these (each one disjunct of a permissive policy); rows
    /// visible through other disjuncts are not known to the server.
    AnyOf(Vec<PolicyExpr>),
}

/// The top-level disjuncts of a policy of table `table` (its unqualified name) that are in
/// the fast-path subset. Disjuncts outside it (function calls, sub-selects…) are left out:
/// they can only make more rows visible, never fewer.
pub fn policy_disjuncts(
    text: &str,
    table: &str,
    columns: &HashMap<String, ColumnKind>,
) -> Vec<PolicyExpr> {
    split_or(text)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| parse_policy_in(d, table, columns, &|_, _| None))
        .collect()
}

/// Whether every sub-select in `expr` finds the same rows under its table's row-level
/// security as without it; `rows` says what the role sees of each referenced table.
pub fn sub_selects_unaffected(
    expr: &PolicyExpr,
    rows: &dyn Fn(&str, &str) -> Option<RefRows>,
) -> bool {
    match expr {
        PolicyExpr::And(ps) | PolicyExpr::Or(ps) => {
            ps.iter().all(|p| sub_selects_unaffected(p, rows))
        }
        PolicyExpr::Exists(e) => {
            let covered = match rows(&e.table.0, &e.table.1) {
                Some(RefRows::All) => true,
                Some(RefRows::AnyOf(ds)) => implies_one_of(e, &ds),
                None => false,
            };
            covered && sub_selects_unaffected(&e.cond, rows)
        }
        _ => true,
    }
}

/// Whether the sub-select's conditions include `col = X` for some disjunct `col = X`.
fn implies_one_of(e: &ExistsExpr, disjuncts: &[PolicyExpr]) -> bool {
    let conjuncts: &[PolicyExpr] = match &e.cond {
        PolicyExpr::And(ps) => ps,
        p => std::slice::from_ref(p),
    };
    conjuncts
        .iter()
        .filter_map(fixed_equality)
        .any(|c| disjuncts.iter().filter_map(fixed_equality).any(|d| d == c))
}

/// `col = X` (either way round) with `X` not a column: the same value for every row of
/// one query, in the policy and in the sub-select alike.
fn fixed_equality(p: &PolicyExpr) -> Option<(&str, &Operand)> {
    let PolicyExpr::Cmp(a, CmpOp::Eq, b) = p else {
        return None;
    };
    match (a, b) {
        (Operand::Column { .. }, Operand::Column { .. }) => None,
        (Operand::Column { name, .. }, x) | (x, Operand::Column { name, .. }) => {
            Some((name.as_str(), x))
        }
        _ => None,
    }
}

/// Split an expression as `pg_get_expr` prints it into its top-level `OR` operands, or
/// `None` when the text is not one this scanner reads with certainty (backslashes, whose
/// meaning inside literals depends on settings; unbalanced quotes or parentheses).
fn split_or(text: &str) -> Option<Vec<&str>> {
    if text.contains('\\') || text.len() > 10_000 {
        return None;
    }
    let mut s = text.trim();
    // Outer parentheses around the whole expression.
    while s.starts_with('(') && matching_paren(s, 0)? == s.len() - 1 {
        s = s[1..s.len() - 1].trim();
    }
    let b = s.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
    let (mut depth, mut quote, mut start) = (0i32, None::<u8>, 0usize);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            // A doubled quote inside a quoted run is the quote itself: leaving and
            // re-entering gives the same result.
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth < 0 {
                        return None;
                    }
                }
                _ if depth == 0
                    && b[i..].len() >= 2
                    && b[i..i + 2].eq_ignore_ascii_case(b"OR")
                    && (i == 0 || !ident(b[i - 1]))
                    && !b.get(i + 2).is_some_and(|n| ident(*n)) =>
                {
                    out.push(s[start..i].trim());
                    start = i + 2;
                    i += 1;
                }
                _ => {}
            },
        }
        i += 1;
    }
    if depth != 0 || quote.is_some() {
        return None;
    }
    out.push(s[start..].trim());
    Some(out)
}

/// Index of the `)` matching the `(` at `open`, skipping quoted runs.
fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let b = s.as_bytes();
    let (mut depth, mut quote) = (0i32, None::<u8>);
    for (i, &c) in b.iter().enumerate().skip(open) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse::parse_policy_in;

    fn kinds(cols: &[(&str, ColumnKind)]) -> HashMap<String, ColumnKind> {
        cols.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    }

    fn members() -> HashMap<String, ColumnKind> {
        kinds(&[
            ("list_id", ColumnKind::Int),
            ("user_id", ColumnKind::Uuid),
            ("role", ColumnKind::Text),
        ])
    }

    #[test]
    fn splits_only_top_level_or() {
        assert_eq!(
            split_or("((user_id = rowcast.uid()) OR public.is_list_member(list_id))"),
            Some(vec![
                "(user_id = rowcast.uid())",
                "public.is_list_member(list_id)"
            ])
        );
        assert_eq!(
            split_or("((a = 1) AND ((b = 2) OR (c = 3)))"),
            Some(vec!["(a = 1) AND ((b = 2) OR (c = 3))"])
        );
        assert_eq!(
            split_or("((role = 'x OR y'::text) OR (\"or\" = 1) OR (color = 2))"),
            Some(vec![
                "(role = 'x OR y'::text)",
                "(\"or\" = 1)",
                "(color = 2)"
            ])
        );
        assert_eq!(
            split_or("(a = 'it''s') OR (b = 1)").map(|v| v.len()),
            Some(2)
        );
        assert_eq!(split_or("(a = E'\\'') OR (b = 1)"), None);
        assert_eq!(split_or("((a = 1)"), None);
    }

    fn exists_on_members(text: &str) -> PolicyExpr {
        let outer = kinds(&[("list_id", ColumnKind::Int), ("owner", ColumnKind::Uuid)]);
        let m = members();
        parse_policy_in(text, "todos", &outer, &|s, n| {
            (s == "public" && n == "members").then(|| m.clone())
        })
        .unwrap()
    }

    #[test]
    fn implied_disjunct_makes_rls_irrelevant() {
        let policy = exists_on_members("(EXISTS ( SELECT 1\n   FROM public.members m\n  WHERE ((m.list_id = todos.list_id) AND (m.user_id = ( SELECT rowcast.uid() AS uid)))))");
        let rows = |text: &str| {
            let ds = policy_disjuncts(text, "members", &members());
            move |_: &str, _: &str| Some(RefRows::AnyOf(ds.clone()))
        };
        let yes = [
            "(user_id = rowcast.uid())",
            "((user_id = rowcast.uid()) OR public.is_list_member(list_id))",
            "((list_id = 7) OR (rowcast.uid() = user_id))",
        ];
        for t in yes {
            assert!(sub_selects_unaffected(&policy, &rows(t)), "{t}");
        }
        let no = [
            "false",
            "(list_id = 7)",
            "((user_id = rowcast.uid()) AND (role = 'owner'::text))",
            "(user_id = ((rowcast.claims() ->> 'other'::text))::uuid)",
            "public.is_list_member(list_id)",
            "(user_id <> rowcast.uid())",
        ];
        for t in no {
            assert!(!sub_selects_unaffected(&policy, &rows(t)), "{t}");
        }
        assert!(sub_selects_unaffected(&policy, &|_, _| Some(RefRows::All)));
        assert!(!sub_selects_unaffected(&policy, &|_, _| None));
        // A policy without sub-selects is unaffected by anything.
        let plain = exists_on_members("(owner = rowcast.uid())");
        assert!(sub_selects_unaffected(&plain, &|_, _| None));
    }
}
