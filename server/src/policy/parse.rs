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
}

/// Parse `text` for a table whose columns have the given kinds. `None` means "not in the
/// fast-path subset".
pub fn parse_policy(text: &str, columns: &HashMap<String, ColumnKind>) -> Option<PolicyExpr> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, at: 0 };
    let node = p.or()?;
    if p.at != p.tokens.len() {
        return None;
    }
    to_bool(&node, columns)
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

    fn primary(&mut self) -> Option<Node> {
        match self.next()? {
            Tok::LParen => {
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
            Tok::Quoted(q) => Some(Node::Ident(q)),
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
                    // Keywords that start constructs outside the subset (EXISTS, CASE, NOT…).
                    "exists" | "case" | "not" | "select" | "and" | "or" | "any" | "is" => {
                        return None
                    }
                    _ => {}
                }
                if self.peek() == Some(&Tok::Dot) {
                    self.at += 1;
                    let name = match self.next()? {
                        Tok::Ident(n) => n,
                        _ => return None,
                    };
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

fn to_bool(n: &Node, cols: &HashMap<String, ColumnKind>) -> Option<PolicyExpr> {
    match n {
        Node::Or(ps) => Some(PolicyExpr::Or(
            ps.iter().map(|p| to_bool(p, cols)).collect::<Option<_>>()?,
        )),
        Node::And(ps) => Some(PolicyExpr::And(
            ps.iter().map(|p| to_bool(p, cols)).collect::<Option<_>>()?,
        )),
        Node::Literal(Value::Bool(b)) => Some(PolicyExpr::Const(*b)),
        Node::Ident(name) => match cols.get(name) {
            Some(ColumnKind::Bool) => Some(PolicyExpr::BoolColumn(name.clone())),
            _ => None,
        },
        Node::Cmp(a, op, b) => Some(PolicyExpr::Cmp(
            to_operand(a, cols)?,
            *op,
            to_operand(b, cols)?,
        )),
        Node::Any(a, items) => Some(PolicyExpr::In(
            to_operand(a, cols)?,
            items
                .iter()
                .map(|i| to_operand(i, cols))
                .collect::<Option<_>>()?,
        )),
        _ => None,
    }
}

fn to_operand(n: &Node, cols: &HashMap<String, ColumnKind>) -> Option<Operand> {
    match n {
        Node::Ident(name) => {
            let kind = *cols.get(name)?;
            // Only kinds whose comparison in Rust is exactly Postgres's.
            kind.exact().then(|| Operand::Column {
                name: name.clone(),
                kind,
            })
        }
        Node::Literal(v) => Some(Operand::Literal(v.clone())),
        Node::Call(schema, f) if schema == "rowcast" && f == "uid" => Some(Operand::Uid),
        Node::Call(schema, f) if schema == "rowcast" && f == "role" => Some(Operand::Role),
        Node::Arrow(obj, key) => {
            let is_claims = matches!(&**obj, Node::Call(s, f) if s == "rowcast" && f == "claims");
            match strip_casts((**key).clone()) {
                Node::Literal(Value::String(k)) if is_claims => Some(Operand::Claim(k)),
                _ => None,
            }
        }
        Node::Cast(inner, ty) => {
            let op = to_operand(inner, cols)?;
            let target = cast_kind(ty);
            match &op {
                // A cast that changes a column's kind changes how it compares: not in the subset.
                Operand::Column { kind, .. } => (*kind == target).then_some(op),
                // Casting a literal or claim only fixes its type; comparison coerces it to the
                // column's kind, and a value that does not fit compares as unknown.
                _ => (target != ColumnKind::Other).then_some(op),
            }
        }
        _ => None,
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
}
