//! Reading a row-level-security policy expression as Postgres prints it
//! (`pg_get_expr(polqual, polrelid)`) into a [`PolicyExpr`] the server can evaluate, when it
//! is in the fast-path subset (docs/realtime.md). Anything outside the subset is `None`,
//! and that policy is checked in SQL instead; the parser never guesses.

use std::collections::HashMap;

use serde_json::Value;

use super::{CmpOp, ColumnKind};

/// A value inside a policy, before it is bound to an identity.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Column {
        name: String,
        kind: ColumnKind,
    },
    /// A SQL literal as JSON (strings stay strings until coerced to the column's kind).
    Literal(Value),
    /// `rowcast.uid()`
    Uid,
    /// `rowcast.role()`
    Role,
    /// `rowcast.claims() ->> 'key'`
    Claim(String),
}

/// A policy expression in the fast-path subset.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyExpr {
    Const(bool),
    /// A boolean column used as the condition.
    BoolColumn(String),
    Cmp(Operand, CmpOp, Operand),
    In(Operand, Vec<Operand>),
    And(Vec<PolicyExpr>),
    Or(Vec<PolicyExpr>),
    /// `exists (select … from table t where t.inner = outer.outer and cond)`, or
    /// `outer IN (select t.inner from table t where cond)`.
    Exists(Box<ExistsExpr>),
}

/// A sub-select over another table, linked to the enclosing row by one equality.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistsExpr {
    /// (`schema`, `table`) as the catalog names it.
    pub table: (String, String),
    pub inner: String,
    pub kind: ColumnKind,
    pub outer: String,
    /// The rest of the sub-select's condition, over the referenced table's columns.
    pub cond: PolicyExpr,
}

/// The column kinds of a table a policy's sub-select reads, or `None` when that table may
/// not be evaluated in the server for the role in question (row-level security on it, not
/// synced, no SELECT privilege, inheritance children…): then the policy falls back to SQL.
pub type RefTables<'a> = dyn Fn(&str, &str) -> Option<HashMap<String, ColumnKind>> + 'a;

/// The `schema.table` names after `FROM`/`JOIN` in a policy expression: the tables it reads
/// besides its own (for loading their catalog facts before [`parse_policy_in`]).
pub fn referenced_tables(text: &str) -> Vec<(String, String)> {
    // Leniently: operators outside the fast-path subset (`~~`, `>`…) are skipped, since
    // this also serves policies checked in SQL.
    let Some(tokens) = tokenize_with(text, true) else {
        return Vec::new();
    };
    let word = |t: Option<&Tok>| match t {
        Some(Tok::Ident(w)) | Some(Tok::Quoted(w)) => Some(w.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let is_from = matches!(t, Tok::Ident(w) if w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("JOIN"));
        if !is_from {
            continue;
        }
        if let (Some(schema), Some(Tok::Dot), Some(name)) = (
            word(tokens.get(i + 1)),
            tokens.get(i + 2),
            word(tokens.get(i + 3)),
        ) {
            if !out.contains(&(schema.clone(), name.clone())) {
                out.push((schema, name));
            }
        }
    }
    out
}

/// Parse `text` for a table whose columns have the given kinds. `None` means "not in the
/// fast-path subset".
pub fn parse_policy(text: &str, columns: &HashMap<String, ColumnKind>) -> Option<PolicyExpr> {
    parse_policy_in(text, "", columns, &|_, _| None)
}

/// Parse a policy of table `table` (its unqualified name, which sub-selects use to refer to
/// its row), resolving the tables its sub-selects read with `refs`.
pub fn parse_policy_in(
    text: &str,
    table: &str,
    columns: &HashMap<String, ColumnKind>,
    refs: &RefTables<'_>,
) -> Option<PolicyExpr> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, at: 0 };
    let node = p.or()?;
    if p.at != p.tokens.len() {
        return None;
    }
    let scopes = vec![Scope {
        names: vec![table.to_string()],
        cols: columns.clone(),
    }];
    Conv { refs }.to_bool(&node, &scopes)
}

/// A table in scope while converting: the names it may be qualified with and its columns.
struct Scope {
    names: Vec<String>,
    cols: HashMap<String, ColumnKind>,
}

/// A sub-select as parsed: `SELECT target FROM schema.table alias WHERE cond`.
#[derive(Debug, Clone, PartialEq)]
struct SubSelect {
    target: Option<Node>,
    from: Option<(String, String, Option<String>)>,
    cond: Option<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Str(String),
    Num(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Eq,
    Neq,
    Cast,
    Arrow2,
    Minus,
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    tokenize_with(s, false)
}

/// `lenient`: skip characters outside the subset's tokens instead of failing.
fn tokenize_with(s: &str, lenient: bool) -> Option<Vec<Tok>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    // Bounds keep the recursive parser's depth small whatever the catalog holds.
    if s.len() > 10_000 {
        return None;
    }
    let mut depth = 0usize;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\n' | b'\t' | b'\r' => i += 1,
            b'(' => {
                depth += 1;
                if depth > 64 {
                    return None;
                }
                out.push(Tok::LParen);
                i += 1
            }
            b')' => {
                depth = depth.saturating_sub(1);
                out.push(Tok::RParen);
                i += 1
            }
            b'[' => {
                out.push(Tok::LBracket);
                i += 1
            }
            b']' => {
                out.push(Tok::RBracket);
                i += 1
            }
            b',' => {
                out.push(Tok::Comma);
                i += 1
            }
            b'.' => {
                out.push(Tok::Dot);
                i += 1
            }
            b'=' => {
                out.push(Tok::Eq);
                i += 1
            }
            b'<' if b.get(i + 1) == Some(&b'>') => {
                out.push(Tok::Neq);
                i += 2
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                out.push(Tok::Cast);
                i += 2
            }
            b'-' if b.get(i + 1) == Some(&b'>') && b.get(i + 2) == Some(&b'>') => {
                out.push(Tok::Arrow2);
                i += 3
            }
            b'-' => {
                out.push(Tok::Minus);
                i += 1
            }
            b'\'' => {
                let mut v = Vec::new();
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\'' if b.get(i + 1) == Some(&b'\'') => {
                            v.push(b'\'');
                            i += 2
                        }
                        b'\'' => {
                            i += 1;
                            break;
                        }
                        ch => {
                            v.push(*ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(String::from_utf8(v).ok()?));
            }
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                loop {
                    match b.get(i)? {
                        b'"' if b.get(i + 1) == Some(&b'"') => {
                            v.push(b'"');
                            i += 2
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        ch => {
                            v.push(*ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Quoted(String::from_utf8(v).ok()?));
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Tok::Num(s[start..i].to_string()));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$')
                {
                    i += 1;
                }
                out.push(Tok::Ident(s[start..i].to_string()));
            }
            _ if lenient => i += 1,
            _ => return None,
        }
    }
    Some(out)
}

/// The syntax tree of the subset, before validation against the table.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Or(Vec<Node>),
    And(Vec<Node>),
    Cmp(Box<Node>, CmpOp, Box<Node>),
    Any(Box<Node>, Vec<Node>),
    Array(Vec<Node>),
    Ident(String),
    Literal(Value),
    Call(String, String),
    Arrow(Box<Node>, Box<Node>),
    Cast(Box<Node>, String),
    /// `alias.column`
    QIdent(String, String),
    Exists(Box<SubSelect>),
    InSelect(Box<Node>, Box<SubSelect>),
    /// `( SELECT expr )` without FROM: the wrapped-call form `(select rowcast.uid())`.
    Scalar(Box<Node>),
}

struct Parser {
    tokens: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, t: Tok) -> Option<()> {
        (self.next()? == t).then_some(())
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(k))
    }

    fn or(&mut self) -> Option<Node> {
        let mut parts = vec![self.and()?];
        while self.keyword("OR") {
            self.at += 1;
            parts.push(self.and()?);
        }
        Some(if parts.len() == 1 {
            parts.pop()?
        } else {
            Node::Or(parts)
        })
    }

    fn and(&mut self) -> Option<Node> {
        let mut parts = vec![self.cmp()?];
        while self.keyword("AND") {
            self.at += 1;
            parts.push(self.cmp()?);
        }
        Some(if parts.len() == 1 {
            parts.pop()?
        } else {
            Node::And(parts)
        })
    }

    fn cmp(&mut self) -> Option<Node> {
        let left = self.arrow()?;
        if self.keyword("IN") {
            self.at += 1;
            self.expect(Tok::LParen)?;
            if !self.keyword("SELECT") {
                return None;
            }
            self.at += 1;
            let sub = self.subselect()?;
            self.expect(Tok::RParen)?;
            return Some(Node::InSelect(Box::new(left), Box::new(sub)));
        }
        let op = match self.peek() {
            Some(Tok::Eq) => CmpOp::Eq,
            Some(Tok::Neq) => CmpOp::Neq,
            _ => return Some(left),
        };
        self.at += 1;
        if op == CmpOp::Eq && self.keyword("ANY") {
            self.at += 1;
            self.expect(Tok::LParen)?;
            let arr = self.arrow()?;
            self.expect(Tok::RParen)?;
            let items = match strip_casts(arr) {
                Node::Array(items) => items,
                _ => return None,
            };
            return Some(Node::Any(Box::new(left), items));
        }
        let right = self.arrow()?;
        Some(Node::Cmp(Box::new(left), op, Box::new(right)))
    }

    fn arrow(&mut self) -> Option<Node> {
        let left = self.cast()?;
        if self.peek() == Some(&Tok::Arrow2) {
            self.at += 1;
            let right = self.cast()?;
            return Some(Node::Arrow(Box::new(left), Box::new(right)));
        }
        Some(left)
    }

    fn cast(&mut self) -> Option<Node> {
        let mut node = self.primary()?;
        while self.peek() == Some(&Tok::Cast) {
            self.at += 1;
            let mut words = Vec::new();
            while let Some(Tok::Ident(w)) = self.peek() {
                if ["AND", "OR", "ANY"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
                {
                    break;
                }
                words.push(w.to_ascii_lowercase());
                self.at += 1;
            }
            if words.is_empty() {
                return None;
            }
            if self.peek() == Some(&Tok::LParen) {
                // A type modifier such as varchar(20).
                self.at += 1;
                while !matches!(self.peek(), Some(Tok::RParen) | None) {
                    self.at += 1;
                }
                self.expect(Tok::RParen)?;
            }
            if self.peek() == Some(&Tok::LBracket) {
                // An array type (text[]).
                self.at += 1;
                self.expect(Tok::RBracket)?;
                words.push("[]".into());
            }
            node = Node::Cast(Box::new(node), words.join(" "));
        }
        Some(node)
    }

    /// After `SELECT`: the target, an optional `FROM schema.table [alias]` (no joins) and an
    /// optional `WHERE`; stops before the closing parenthesis.
    fn subselect(&mut self) -> Option<SubSelect> {
        let target = if self.keyword("FROM") || self.peek() == Some(&Tok::RParen) {
            None
        } else {
            let t = self.arrow()?;
            if self.keyword("AS") {
                self.at += 1;
                self.next()?;
            }
            Some(t)
        };
        let mut from = None;
        if self.keyword("FROM") {
            self.at += 1;
            let schema = match self.next()? {
                Tok::Ident(s) | Tok::Quoted(s) => s,
                _ => return None,
            };
            self.expect(Tok::Dot)?;
            let table = match self.next()? {
                Tok::Ident(s) | Tok::Quoted(s) => s,
                _ => return None,
            };
            let alias = match self.peek() {
                Some(Tok::Ident(a)) if !a.eq_ignore_ascii_case("WHERE") => {
                    let a = a.clone();
                    self.at += 1;
                    Some(a)
                }
                Some(Tok::Quoted(a)) => {
                    let a = a.clone();
                    self.at += 1;
                    Some(a)
                }
                _ => None,
            };
            from = Some((schema, table, alias));
        }
        let mut cond = None;
        if self.keyword("WHERE") {
            self.at += 1;
            cond = Some(self.or()?);
        }
        Some(SubSelect { target, from, cond })
    }

    fn primary(&mut self) -> Option<Node> {
        match self.next()? {
            Tok::LParen => {
                if self.keyword("SELECT") {
                    self.at += 1;
                    let sub = self.subselect()?;
                    self.expect(Tok::RParen)?;
                    return match sub {
                        SubSelect {
                            target: Some(t),
                            from: None,
                            cond: None,
                        } => Some(Node::Scalar(Box::new(t))),
                        _ => None,
                    };
                }
                let n = self.or()?;
                self.expect(Tok::RParen)?;
                Some(n)
            }
            Tok::Str(s) => Some(Node::Literal(Value::String(s))),
            Tok::Num(n) => number(&n).map(Node::Literal),
            Tok::Minus => match self.next()? {
                Tok::Num(n) => number(&format!("-{n}")).map(Node::Literal),
                _ => None,
            },
            Tok::Quoted(q) => {
                if self.peek() == Some(&Tok::Dot) {
                    self.at += 1;
                    return match self.next()? {
                        Tok::Ident(n) | Tok::Quoted(n) => Some(Node::QIdent(q, n)),
                        _ => None,
                    };
                }
                Some(Node::Ident(q))
            }
            Tok::Ident(w) => {
                let lower = w.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => return Some(Node::Literal(Value::Bool(true))),
                    "false" => return Some(Node::Literal(Value::Bool(false))),
                    "null" => return Some(Node::Literal(Value::Null)),
                    "array" => {
                        self.expect(Tok::LBracket)?;
                        let mut items = Vec::new();
                        if self.peek() != Some(&Tok::RBracket) {
                            loop {
                                items.push(self.arrow()?);
                                if self.peek() == Some(&Tok::Comma) {
                                    self.at += 1;
                                } else {
                                    break;
                                }
                            }
                        }
                        self.expect(Tok::RBracket)?;
                        return Some(Node::Array(items));
                    }
                    "exists" => {
                        self.expect(Tok::LParen)?;
                        if !self.keyword("SELECT") {
                            return None;
                        }
                        self.at += 1;
                        let sub = self.subselect()?;
                        self.expect(Tok::RParen)?;
                        return Some(Node::Exists(Box::new(sub)));
                    }
                    // Keywords that start constructs outside the subset (CASE, NOT…).
                    "case" | "not" | "select" | "and" | "or" | "any" | "is" | "in" | "from"
                    | "where" => return None,
                    _ => {}
                }
                if self.peek() == Some(&Tok::Dot) {
                    self.at += 1;
                    let name = match self.next()? {
                        Tok::Ident(n) | Tok::Quoted(n) => n,
                        _ => return None,
                    };
                    if self.peek() != Some(&Tok::LParen) {
                        // A qualified column: alias.column.
                        return Some(Node::QIdent(w, name));
                    }
                    // Only schema-qualified zero-argument calls: rowcast.uid() etc.
                    self.expect(Tok::LParen)?;
                    self.expect(Tok::RParen)?;
                    return Some(Node::Call(w, name));
                }
                if self.peek() == Some(&Tok::LParen) {
                    return None;
                }
                Some(Node::Ident(w))
            }
            _ => None,
        }
    }
}

fn number(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    s.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

fn strip_casts(n: Node) -> Node {
    match n {
        Node::Cast(inner, _) => strip_casts(*inner),
        n => n,
    }
}

/// The kind a cast target type denotes.
fn cast_kind(t: &str) -> ColumnKind {
    match t {
        "text" | "character varying" | "varchar" | "name" => ColumnKind::Text,
        "uuid" => ColumnKind::Uuid,
        "integer" | "bigint" | "smallint" | "int" | "int4" | "int8" | "int2" => ColumnKind::Int,
        "boolean" | "bool" => ColumnKind::Bool,
        "numeric" | "double precision" | "real" => ColumnKind::Float,
        _ => ColumnKind::Other,
    }
}

/// Converts syntax to the fast-path form within nested scopes (the policy's table, then
/// each sub-select's table).
struct Conv<'r, 'a> {
    refs: &'r RefTables<'a>,
}

impl Conv<'_, '_> {
    /// The scope depth, name and kind of a column reference.
    fn column(&self, n: &Node, scopes: &[Scope]) -> Option<(usize, String, ColumnKind)> {
        match n {
            Node::Ident(name) => {
                // Unqualified names resolve innermost first, as in SQL.
                let d = scopes.iter().rposition(|s| s.cols.contains_key(name))?;
                Some((d, name.clone(), scopes[d].cols[name]))
            }
            Node::QIdent(q, name) => {
                let d = scopes
                    .iter()
                    .rposition(|s| s.names.iter().any(|x| x == q))?;
                let kind = *scopes[d].cols.get(name)?;
                Some((d, name.clone(), kind))
            }
            _ => None,
        }
    }

    fn to_bool(&self, n: &Node, scopes: &[Scope]) -> Option<PolicyExpr> {
        let here = scopes.len() - 1;
        match n {
            Node::Or(ps) => Some(PolicyExpr::Or(
                ps.iter()
                    .map(|p| self.to_bool(p, scopes))
                    .collect::<Option<_>>()?,
            )),
            Node::And(ps) => Some(PolicyExpr::And(
                ps.iter()
                    .map(|p| self.to_bool(p, scopes))
                    .collect::<Option<_>>()?,
            )),
            Node::Literal(Value::Bool(b)) => Some(PolicyExpr::Const(*b)),
            Node::Ident(_) | Node::QIdent(..) => match self.column(n, scopes)? {
                (d, name, ColumnKind::Bool) if d == here => Some(PolicyExpr::BoolColumn(name)),
                _ => None,
            },
            Node::Cmp(a, op, b) => Some(PolicyExpr::Cmp(
                self.to_operand(a, scopes)?,
                *op,
                self.to_operand(b, scopes)?,
            )),
            Node::Any(a, items) => Some(PolicyExpr::In(
                self.to_operand(a, scopes)?,
                items
                    .iter()
                    .map(|i| self.to_operand(i, scopes))
                    .collect::<Option<_>>()?,
            )),
            Node::Exists(sub) => self.exists(sub, None, scopes),
            Node::InSelect(left, sub) => self.exists(sub, Some(left), scopes),
            _ => None,
        }
    }

    /// A sub-select linked to the enclosing row by exactly one equality between a column
    /// of its table and a column of the enclosing scope (in its WHERE for EXISTS, or the
    /// IN's left side and the select's target).
    fn exists(
        &self,
        sub: &SubSelect,
        in_left: Option<&Node>,
        scopes: &[Scope],
    ) -> Option<PolicyExpr> {
        let outer_depth = scopes.len() - 1;
        let (schema, table, alias) = sub.from.as_ref()?;
        let cols = (self.refs)(schema, table)?;
        let mut names = vec![table.clone()];
        if let Some(a) = alias {
            // With an alias, the table's own name no longer qualifies its columns.
            names = vec![a.clone()];
        }
        let mut inner_scopes: Vec<Scope> = scopes
            .iter()
            .map(|s| Scope {
                names: s.names.clone(),
                cols: s.cols.clone(),
            })
            .collect();
        inner_scopes.push(Scope { names, cols });
        let here = inner_scopes.len() - 1;
        let mut conjuncts: Vec<&Node> = match &sub.cond {
            None => Vec::new(),
            Some(Node::And(ps)) => ps.iter().collect(),
            Some(c) => vec![c],
        };
        let exact = |k: ColumnKind| k.exact();
        let (inner, outer, kind) = match in_left {
            Some(left) => {
                let (ld, lname, lkind) = self.column(left, scopes)?;
                let (td, tname, tkind) = self.column(sub.target.as_ref()?, &inner_scopes)?;
                if ld != outer_depth || td != here || lkind != tkind || !exact(lkind) {
                    return None;
                }
                (tname, lname, lkind)
            }
            None => {
                // Exactly one conjunct `inner col = enclosing col`.
                let mut link = None;
                let mut rest = Vec::new();
                for c in conjuncts.drain(..) {
                    let found = match c {
                        Node::Cmp(a, CmpOp::Eq, b) => {
                            match (self.column(a, &inner_scopes), self.column(b, &inner_scopes)) {
                                (Some(x), Some(y)) if x.0 == here && y.0 == outer_depth => {
                                    Some((x, y))
                                }
                                (Some(x), Some(y)) if y.0 == here && x.0 == outer_depth => {
                                    Some((y, x))
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    match found {
                        Some(f) if link.is_none() => link = Some(f),
                        Some(_) => return None,
                        None => rest.push(c),
                    }
                }
                conjuncts = rest;
                let ((_, iname, ikind), (_, oname, okind)) = link?;
                if ikind != okind || !exact(ikind) {
                    return None;
                }
                (iname, oname, ikind)
            }
        };
        let cond = conjuncts
            .iter()
            .map(|c| self.to_bool(c, &inner_scopes))
            .collect::<Option<Vec<_>>>()?;
        let cond = match cond.len() {
            0 => PolicyExpr::Const(true),
            1 => cond.into_iter().next()?,
            _ => PolicyExpr::And(cond),
        };
        Some(PolicyExpr::Exists(Box::new(ExistsExpr {
            table: (schema.clone(), table.clone()),
            inner,
            kind,
            outer,
            cond,
        })))
    }

    fn to_operand(&self, n: &Node, scopes: &[Scope]) -> Option<Operand> {
        let here = scopes.len() - 1;
        match n {
            Node::Ident(_) | Node::QIdent(..) => {
                let (d, name, kind) = self.column(n, scopes)?;
                // Only the current row's columns, of kinds whose comparison in Rust is
                // exactly Postgres's.
                (d == here && kind.exact()).then_some(Operand::Column { name, kind })
            }
            Node::Literal(v) => Some(Operand::Literal(v.clone())),
            Node::Call(schema, f) if schema == "rowcast" && f == "uid" => Some(Operand::Uid),
            Node::Call(schema, f) if schema == "rowcast" && f == "role" => Some(Operand::Role),
            Node::Arrow(obj, key) => {
                let is_claims =
                    matches!(&**obj, Node::Call(s, f) if s == "rowcast" && f == "claims");
                match strip_casts((**key).clone()) {
                    Node::Literal(Value::String(k)) if is_claims => Some(Operand::Claim(k)),
                    _ => None,
                }
            }
            // `(select rowcast.uid())` is evaluated once per statement: the same value.
            Node::Scalar(inner) => match self.to_operand(inner, scopes)? {
                Operand::Column { .. } => None,
                op => Some(op),
            },
            Node::Cast(inner, ty) => {
                let op = self.to_operand(inner, scopes)?;
                let target = cast_kind(ty);
                match &op {
                    // A cast that changes a column's kind changes how it compares: not in
                    // the subset.
                    Operand::Column { kind, .. } => (*kind == target).then_some(op),
                    // Casting a literal or claim only fixes its type; comparison coerces it
                    // to the column's kind, and a value that does not fit compares as
                    // unknown.
                    _ => (target != ColumnKind::Other).then_some(op),
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cols() -> HashMap<String, ColumnKind> {
        [
            ("owner", ColumnKind::Uuid),
            ("team", ColumnKind::Text),
            ("n", ColumnKind::Int),
            ("public", ColumnKind::Bool),
            ("status", ColumnKind::Text),
            ("at", ColumnKind::Time),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn col(n: &str, k: ColumnKind) -> Operand {
        Operand::Column {
            name: n.into(),
            kind: k,
        }
    }

    #[test]
    fn the_fast_path_subset_as_postgres_prints_it() {
        let c = cols();
        assert_eq!(
            parse_policy("(owner = rowcast.uid())", &c),
            Some(PolicyExpr::Cmp(
                col("owner", ColumnKind::Uuid),
                CmpOp::Eq,
                Operand::Uid
            ))
        );
        assert_eq!(
            parse_policy("(team = (rowcast.claims() ->> 'team'::text))", &c),
            Some(PolicyExpr::Cmp(
                col("team", ColumnKind::Text),
                CmpOp::Eq,
                Operand::Claim("team".into())
            ))
        );
        assert_eq!(
            parse_policy("public", &c),
            Some(PolicyExpr::BoolColumn("public".into()))
        );
        assert_eq!(parse_policy("true", &c), Some(PolicyExpr::Const(true)));
        assert_eq!(
            parse_policy("(owner = ((rowcast.claims() ->> 'sub'::text))::uuid)", &c),
            Some(PolicyExpr::Cmp(
                col("owner", ColumnKind::Uuid),
                CmpOp::Eq,
                Operand::Claim("sub".into())
            ))
        );
        let p4 = parse_policy(
            "(((status = ANY (ARRAY['a'::text, 'b'::text])) AND (n = 5)) OR (public = true))",
            &c,
        )
        .unwrap();
        assert_eq!(
            p4,
            PolicyExpr::Or(vec![
                PolicyExpr::And(vec![
                    PolicyExpr::In(
                        col("status", ColumnKind::Text),
                        vec![Operand::Literal(json!("a")), Operand::Literal(json!("b"))]
                    ),
                    PolicyExpr::Cmp(
                        col("n", ColumnKind::Int),
                        CmpOp::Eq,
                        Operand::Literal(json!(5))
                    ),
                ]),
                PolicyExpr::Cmp(
                    col("public", ColumnKind::Bool),
                    CmpOp::Eq,
                    Operand::Literal(json!(true))
                ),
            ])
        );
        assert!(parse_policy(
            "((n = ANY (ARRAY[1, 2])) AND (rowcast.role() = 'authenticated'::text) AND (status = 'x'::text) AND (rowcast.uid() = owner))",
            &c
        )
        .is_some());
        assert_eq!(
            parse_policy("((n = '-5'::integer) AND (status <> 'it''s'::text))", &c),
            Some(PolicyExpr::And(vec![
                PolicyExpr::Cmp(
                    col("n", ColumnKind::Int),
                    CmpOp::Eq,
                    Operand::Literal(json!("-5"))
                ),
                PolicyExpr::Cmp(
                    col("status", ColumnKind::Text),
                    CmpOp::Neq,
                    Operand::Literal(json!("it's"))
                ),
            ]))
        );
    }

    #[test]
    fn everything_else_falls_back() {
        let c = cols();
        for text in [
            "(EXISTS ( SELECT 1\n   FROM todos t2\n  WHERE (t2.id = todos.id)))",
            "(owner = auth.uid())",
            "(lower(team) = 'a'::text)",
            "(at > now())",
            "((owner)::text = (rowcast.claims() ->> 'sub'::text))",
            "(nosuch = 1)",
            "(NOT public)",
            "(n > 5)",
            "(team = (rowcast.claims() -> 'team'::text))",
            "(team ~~ 'a%'::text)",
            "",
            "((",
            format!("{}true{}", "(".repeat(100), ")".repeat(100)).as_str(),
        ] {
            assert_eq!(parse_policy(text, &c), None, "{text}");
        }
    }

    fn todo_cols() -> HashMap<String, ColumnKind> {
        [
            ("id", ColumnKind::Int),
            ("list_id", ColumnKind::Int),
            ("owner", ColumnKind::Uuid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn refs(s: &str, t: &str) -> Option<HashMap<String, ColumnKind>> {
        let cols: &[(&str, ColumnKind)] = match (s, t) {
            ("public", "members") => &[
                ("list_id", ColumnKind::Int),
                ("user_id", ColumnKind::Uuid),
                ("role", ColumnKind::Text),
            ],
            ("public", "lists") => &[
                ("id", ColumnKind::Int),
                ("owner", ColumnKind::Uuid),
                ("archived", ColumnKind::Bool),
            ],
            _ => return None,
        };
        Some(cols.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn relational_forms_as_postgres_prints_them() {
        let c = todo_cols();
        let parse = |t: &str| parse_policy_in(t, "todos", &c, &refs);
        let members = |cond: PolicyExpr, outer: &str| {
            PolicyExpr::Exists(Box::new(ExistsExpr {
                table: ("public".into(), "members".into()),
                inner: "list_id".into(),
                kind: ColumnKind::Int,
                outer: outer.into(),
                cond,
            }))
        };
        let uid = PolicyExpr::Cmp(col("user_id", ColumnKind::Uuid), CmpOp::Eq, Operand::Uid);
        assert_eq!(
            parse("(EXISTS ( SELECT 1\n   FROM public.members m\n  WHERE ((m.list_id = todos.list_id) AND (m.user_id = rowcast.uid()))))"),
            Some(members(uid.clone(), "list_id"))
        );
        assert_eq!(
            parse("(list_id IN ( SELECT m.list_id\n   FROM public.members m\n  WHERE (m.user_id = rowcast.uid())))"),
            Some(members(uid.clone(), "list_id"))
        );
        assert_eq!(
            parse("(EXISTS ( SELECT 1\n   FROM public.members\n  WHERE ((members.list_id = todos.list_id) AND (members.user_id = ( SELECT rowcast.uid() AS uid)))))"),
            Some(members(uid.clone(), "list_id"))
        );
        let two = parse("(EXISTS ( SELECT 1\n   FROM public.lists l\n  WHERE ((l.id = todos.list_id) AND (EXISTS ( SELECT 1\n           FROM public.members m\n          WHERE ((m.list_id = l.id) AND (m.user_id = rowcast.uid())))))))").unwrap();
        assert_eq!(
            two,
            PolicyExpr::Exists(Box::new(ExistsExpr {
                table: ("public".into(), "lists".into()),
                inner: "id".into(),
                kind: ColumnKind::Int,
                outer: "list_id".into(),
                cond: members(uid.clone(), "id"),
            }))
        );
        assert!(parse("(list_id IN ( SELECT l.id\n   FROM public.lists l\n  WHERE (l.id IN ( SELECT members.list_id\n           FROM public.members\n          WHERE (members.user_id = rowcast.uid())))))").is_some());
        assert!(parse("((EXISTS ( SELECT 1\n   FROM public.members m\n  WHERE ((m.list_id = todos.list_id) AND (m.user_id = rowcast.uid()) AND (m.role = 'editor'::text)))) OR (owner = rowcast.uid()))").is_some());
        assert_eq!(
            parse("(owner = ( SELECT rowcast.uid() AS uid))"),
            Some(PolicyExpr::Cmp(
                col("owner", ColumnKind::Uuid),
                CmpOp::Eq,
                Operand::Uid
            ))
        );
        assert_eq!(
            referenced_tables("(EXISTS ( SELECT 1\n   FROM public.lists l\n  WHERE (EXISTS ( SELECT 1 FROM public.members m))))"),
            vec![("public".to_string(), "lists".to_string()), ("public".to_string(), "members".to_string())]
        );
        assert_eq!(
            referenced_tables(
                "(EXISTS ( SELECT 1 FROM public.members m WHERE (todos.title ~~ '%a%'::text)))"
            ),
            vec![("public".to_string(), "members".to_string())],
            "also for policies outside the subset"
        );
        // Outside the subset: joins, no link, a self-comparison, a table the resolver
        // refuses (RLS on it, not synced…), a grandparent reference, limits.
        for text in [
            "(EXISTS ( SELECT 1\n   FROM (public.lists l\n     JOIN public.members m ON ((m.list_id = l.id)))\n  WHERE ((l.id = todos.list_id) AND (m.user_id = rowcast.uid()))))",
            "(EXISTS ( SELECT\n   FROM public.members m\n  WHERE ((m.list_id = m.list_id) AND (m.user_id = rowcast.uid()))))",
            "(EXISTS ( SELECT 1 FROM public.members m WHERE (m.user_id = rowcast.uid())))",
            "(EXISTS ( SELECT 1 FROM public.secret s WHERE (s.id = todos.id)))",
            "(EXISTS ( SELECT 1 FROM public.members m WHERE ((m.list_id = todos.list_id) AND (m.user_id = todos.owner))))",
            "(EXISTS ( SELECT 1 FROM public.members m WHERE ((m.list_id = todos.list_id) AND (m.user_id = rowcast.uid())) LIMIT 1))",
            "(EXISTS ( SELECT 1 FROM public.members m WHERE ((m.list_id = todos.owner) AND (m.user_id = rowcast.uid()))))",
            "(owner IN ( SELECT m.user_id FROM public.members m WHERE (m.list_id > 3)))",
            "(owner = ( SELECT m.user_id FROM public.members m))",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
