//! The PostgREST URL grammar: query strings (`select=`, filters, `or=`/`and=`, `order=`,
//! `limit`/`offset`, `on_conflict=`, `columns=`) parsed into a typed request. Names stay raw
//! here; [`super::plan`] resolves them against the schema cache. No SQL, no catalog.

use super::RestError;
pub use crate::store::rest_plan::{Cast, CountPref, IsValue, Nulls, Operand, Operator, Resolution};

impl Cast {
    pub fn parse(s: &str) -> Option<Cast> {
        Some(match s {
            "text" | "varchar" => Cast::Text,
            "int2" | "smallint" => Cast::Int2,
            "int" | "int4" | "integer" => Cast::Int4,
            "int8" | "bigint" => Cast::Int8,
            "numeric" | "decimal" => Cast::Numeric,
            "float4" | "real" => Cast::Float4,
            "float8" | "double precision" => Cast::Float8,
            "bool" | "boolean" => Cast::Bool,
            "json" => Cast::Json,
            "jsonb" => Cast::Jsonb,
            "date" => Cast::Date,
            "time" => Cast::Time,
            "timestamp" => Cast::Timestamp,
            "timestamptz" => Cast::Timestamptz,
            "uuid" => Cast::Uuid,
            _ => return None,
        })
    }
}

/// One item of `select=`.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// `*`: every column.
    Star,
    /// `alias:name::cast`
    Column {
        alias: Option<String>,
        name: String,
        cast: Option<Cast>,
    },
    /// `alias:target!hint!inner(items)`: a related table along a foreign key (or through a
    /// junction table). `...target(items)` spreads a to-one relation's fields into the
    /// parent; `target()` selects nothing (an embedding used only to filter).
    Embed {
        alias: Option<String>,
        target: String,
        hint: Option<String>,
        inner: bool,
        spread: bool,
        items: Vec<SelectItem>,
    },
}

impl Operator {
    fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "eq" => Operator::Eq,
            "neq" => Operator::Neq,
            "gt" => Operator::Gt,
            "gte" => Operator::Gte,
            "lt" => Operator::Lt,
            "lte" => Operator::Lte,
            "like" => Operator::Like,
            "ilike" => Operator::Ilike,
            "match" => Operator::Match,
            "imatch" => Operator::Imatch,
            "in" => Operator::In,
            "is" => Operator::Is,
            "cs" => Operator::Contains,
            "cd" => Operator::ContainedIn,
            "ov" => Operator::Overlaps,
            "isdistinct" => Operator::IsDistinct,
            "fts" => Operator::Fts,
            "plfts" => Operator::Plfts,
            "phfts" => Operator::Phfts,
            "wfts" => Operator::Wfts,
            _ => return None,
        })
    }
}

/// `column=[not.]op.value`
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub column: String,
    pub negated: bool,
    pub op: Operator,
    pub operand: Operand,
}

/// A filter: a predicate or a nested `and(...)` / `or(...)`, possibly negated.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Pred(Predicate),
    And {
        negated: bool,
        items: Vec<Condition>,
    },
    Or {
        negated: bool,
        items: Vec<Condition>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderTarget {
    Column(String),
    /// `relation(column)`: a column of an embedded to-one relation.
    Related {
        relation: String,
        column: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderTerm {
    pub target: OrderTarget,
    pub descending: bool,
    pub nulls: Option<Nulls>,
}

/// Something that applies at a point of the embedding tree: the empty path is the table
/// of the URL, `["comments"]` its embedded `comments`, and so on.
#[derive(Debug, Clone, PartialEq)]
pub struct Scoped<T> {
    pub path: Vec<String>,
    pub item: T,
}

/// Everything the query string of a request says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub select: Option<Vec<SelectItem>>,
    pub conditions: Vec<Scoped<Condition>>,
    pub order: Vec<Scoped<Vec<OrderTerm>>>,
    pub limit: Vec<Scoped<u64>>,
    pub offset: Vec<Scoped<u64>>,
    pub on_conflict: Option<Vec<String>>,
    pub columns: Option<Vec<String>>,
}

impl Query {
    /// True when any filter applies to the table of the URL itself.
    pub fn has_root_filter(&self) -> bool {
        self.conditions.iter().any(|c| c.path.is_empty())
    }
}

fn bad(msg: impl Into<String>) -> RestError {
    RestError::Syntax(msg.into())
}

/// Parse a raw (still percent-encoded) query string.
pub fn parse_query(raw: &str) -> Result<Query, RestError> {
    let mut q = Query::default();
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        let key = key.as_ref();
        let value = value.as_ref();
        match key {
            "select" => {
                if q.select.is_some() {
                    return Err(bad("`select` given more than once"));
                }
                q.select = Some(parse_select_at(value, 0)?);
                continue;
            }
            "on_conflict" => {
                q.on_conflict = Some(parse_name_list(value, "on_conflict")?);
                continue;
            }
            "columns" => {
                q.columns = Some(parse_name_list(value, "columns")?);
                continue;
            }
            _ => {}
        }
        let segments: Vec<&str> = key.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(bad(format!("malformed parameter name `{key}`")));
        }
        let n = segments.len();
        let last = segments[n - 1];
        let owned = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match last {
            "order" => q.order.push(Scoped {
                path: owned(&segments[..n - 1]),
                item: parse_order(value)?,
            }),
            "limit" => q.limit.push(Scoped {
                path: owned(&segments[..n - 1]),
                item: parse_count(value, "limit")?,
            }),
            "offset" => q.offset.push(Scoped {
                path: owned(&segments[..n - 1]),
                item: parse_count(value, "offset")?,
            }),
            "or" | "and" => {
                let negated = n >= 2 && segments[n - 2] == "not";
                let path_end = if negated { n - 2 } else { n - 1 };
                let items = parse_logic_list(value, 0)?;
                let cond = if last == "or" {
                    Condition::Or { negated, items }
                } else {
                    Condition::And { negated, items }
                };
                q.conditions.push(Scoped {
                    path: owned(&segments[..path_end]),
                    item: cond,
                });
            }
            column => {
                let (negated, op, operand) = parse_filter_value(value)?;
                q.conditions.push(Scoped {
                    path: owned(&segments[..n - 1]),
                    item: Condition::Pred(Predicate {
                        column: column.to_string(),
                        negated,
                        op,
                        operand,
                    }),
                });
            }
        }
    }
    Ok(q)
}

fn parse_count(value: &str, what: &str) -> Result<u64, RestError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| bad(format!("`{what}` must be a whole number")))
}

fn valid_name(s: &str) -> bool {
    // A JSON path (`meta->a->>b`) may be longer than one identifier.
    let max = if s.contains("->") { 1024 } else { 63 };
    !s.is_empty()
        && s.len() <= max
        && !s
            .chars()
            .any(|c| matches!(c, '(' | ')' | ',' | ':' | '!' | '"' | '.') || c.is_control())
}

fn parse_name_list(value: &str, what: &str) -> Result<Vec<String>, RestError> {
    // postgrest-js double-quotes each name in `columns=`.
    let names: Vec<String> = value
        .split(',')
        .map(|s| {
            let s = s.trim();
            s.strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(s)
                .to_string()
        })
        .collect();
    if names.iter().any(|n| !valid_name(n)) {
        return Err(bad(format!(
            "`{what}` must be a comma-separated list of column names"
        )));
    }
    Ok(names)
}

/// `[not.]op.value`
pub fn parse_filter_value(value: &str) -> Result<(bool, Operator, Operand), RestError> {
    let (negated, rest) = match value.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let (op_name, arg) = rest
        .split_once('.')
        .ok_or_else(|| bad("a filter looks like `column=op.value`, e.g. `id=eq.1`"))?;
    // `like(any)`, `fts(english)`: an operator with a modifier in parentheses.
    let (op_name, modifier) = match op_name.split_once('(') {
        Some((name, m)) => (
            name,
            Some(
                m.strip_suffix(')')
                    .filter(|m| !m.is_empty() && valid_name(m))
                    .ok_or_else(|| bad("malformed operator modifier, e.g. `like(any)`"))?,
            ),
        ),
        None => (op_name, None),
    };
    let op = Operator::parse(op_name).ok_or_else(|| {
        bad("unknown filter operator").hint(
            "use eq, neq, gt, gte, lt, lte, like, ilike, match, imatch, in, is, isdistinct, cs, cd, ov, fts, plfts, phfts or wfts",
        )
    })?;
    let pattern = |v: &str| match op {
        Operator::Like | Operator::Ilike => v.replace('*', "%"),
        _ => v.to_string(),
    };
    match (op, modifier) {
        (Operator::Fts | Operator::Plfts | Operator::Phfts | Operator::Wfts, language) => {
            return Ok((
                negated,
                op,
                Operand::Search {
                    language: language.map(str::to_string),
                    query: arg.to_string(),
                },
            ));
        }
        (
            Operator::Eq
            | Operator::Neq
            | Operator::Gt
            | Operator::Gte
            | Operator::Lt
            | Operator::Lte
            | Operator::Like
            | Operator::Ilike
            | Operator::Match
            | Operator::Imatch,
            Some(q @ ("any" | "all")),
        ) => {
            let inner = arg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .ok_or_else(|| bad("`(any)`/`(all)` take a list in braces, e.g. `like(any).{a*,b*}`"))?;
            let values = if inner.is_empty() {
                Vec::new()
            } else {
                split_top_level(inner)?
                    .into_iter()
                    .map(|s| unquote(s.trim()).map(|v| pattern(&v)))
                    .collect::<Result<Vec<_>, _>>()?
            };
            return Ok((
                negated,
                op,
                Operand::Quantified {
                    all: q == "all",
                    values,
                },
            ));
        }
        (_, Some(_)) => {
            return Err(bad("this operator takes no modifier")
                .hint("`(any)`/`(all)` go with eq, neq, gt, gte, lt, lte, like, ilike, match, imatch; a language with fts, plfts, phfts, wfts"))
        }
        (_, None) => {}
    }
    let operand = match op {
        Operator::In => Operand::List(parse_in_list(arg)?),
        Operator::Is => Operand::Is(match arg.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "not_null" => IsValue::NotNull,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            _ => return Err(bad("`is` takes null, not_null, true, false or unknown")),
        }),
        Operator::Like | Operator::Ilike => Operand::Value(arg.replace('*', "%")),
        _ => Operand::Value(arg.to_string()),
    };
    Ok((negated, op, operand))
}

fn parse_in_list(arg: &str) -> Result<Vec<String>, RestError> {
    let inner = arg
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad("`in` takes a list in parentheses, e.g. `in.(1,2,3)`"))?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    split_top_level(inner)?
        .into_iter()
        .map(|s| unquote(s.trim()))
        .collect()
}

/// A value inside a list or logic tree may be double-quoted so that it can hold `,` `.`
/// `(` `)`; `\"` and `\\` escape inside quotes.
fn unquote(s: &str) -> Result<String, RestError> {
    let Some(inner) = s.strip_prefix('"') else {
        return Ok(s.to_string());
    };
    let inner = inner
        .strip_suffix('"')
        .ok_or_else(|| bad("unterminated double quote in a value"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e) => out.push(e),
                None => return Err(bad("dangling backslash in a quoted value")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Split on commas that are not inside parentheses or double quotes.
fn split_top_level(s: &str) -> Result<Vec<&str>, RestError> {
    let mut parts = Vec::new();
    let mut depth: i32 = 0;
    // `{a,b}` (an array literal, `like(any).{..}`) keeps its commas too; an unbalanced
    // brace is just a character.
    let mut braces: i32 = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(bad("unbalanced parentheses"));
                }
            }
            '{' => braces += 1,
            '}' => braces = (braces - 1).max(0),
            ',' if depth == 0 && braces == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quotes {
        return Err(bad("unterminated double quote"));
    }
    if depth != 0 {
        return Err(bad("unbalanced parentheses"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// `(cond,cond,...)` of `or=` / `and=`.
/// How deep `and(...)`/`or(...)` and embeddings may nest in the grammar itself. The parser
/// recurses, so without a bound a long query string could exhaust the stack; plans apply
/// the (smaller) configured embed depth afterwards.
pub const MAX_NESTING: usize = 16;

fn too_deep() -> RestError {
    bad(format!("nested more than {MAX_NESTING} levels deep"))
}

fn parse_logic_list(value: &str, depth: usize) -> Result<Vec<Condition>, RestError> {
    if depth > MAX_NESTING {
        return Err(too_deep());
    }
    let inner = value
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad("`or`/`and` take a list in parentheses, e.g. `or=(a.eq.1,b.eq.2)`"))?;
    let parts = split_top_level(inner)?;
    if parts.iter().all(|p| p.trim().is_empty()) {
        return Err(bad("`or`/`and` need at least one condition"));
    }
    parts
        .into_iter()
        .map(|p| parse_logic_item(p.trim(), depth))
        .collect()
}

fn parse_logic_item(s: &str, depth: usize) -> Result<Condition, RestError> {
    let (negated, body) = match s.strip_prefix("not.") {
        Some(r) if r.starts_with("and(") || r.starts_with("or(") => (true, r),
        _ => (false, s),
    };
    if let Some(list) = body.strip_prefix("and") {
        if list.starts_with('(') {
            return Ok(Condition::And {
                negated,
                items: parse_logic_list(list, depth + 1)?,
            });
        }
    }
    if let Some(list) = body.strip_prefix("or") {
        if list.starts_with('(') {
            return Ok(Condition::Or {
                negated,
                items: parse_logic_list(list, depth + 1)?,
            });
        }
    }
    let (column, rest) = s
        .split_once('.')
        .ok_or_else(|| bad("a condition looks like `column.op.value`"))?;
    if !valid_name(column) {
        return Err(bad("malformed column name in a condition"));
    }
    let (negated, op, operand) = parse_filter_value(rest)?;
    let operand = match operand {
        Operand::Value(v) => Operand::Value(unquote(&v)?),
        other => other,
    };
    Ok(Condition::Pred(Predicate {
        column: column.to_string(),
        negated,
        op,
        operand,
    }))
}

/// `col.desc.nullslast,rel(col).asc`
fn parse_order(value: &str) -> Result<Vec<OrderTerm>, RestError> {
    let mut terms = Vec::new();
    for part in split_top_level(value)? {
        let part = part.trim();
        let (target, modifiers) = match part.find('(') {
            Some(open) => {
                let close = part[open..]
                    .find(')')
                    .map(|c| c + open)
                    .ok_or_else(|| bad("malformed `order` term"))?;
                let relation = &part[..open];
                let column = &part[open + 1..close];
                if !valid_name(relation) || !valid_name(column) {
                    return Err(bad("malformed `order` term"));
                }
                let rest = &part[close + 1..];
                (
                    OrderTarget::Related {
                        relation: relation.to_string(),
                        column: column.to_string(),
                    },
                    rest,
                )
            }
            None => {
                let (name, rest) = match part.find('.') {
                    Some(i) => (&part[..i], &part[i..]),
                    None => (part, ""),
                };
                if !valid_name(name) {
                    return Err(bad("malformed `order` term"));
                }
                (OrderTarget::Column(name.to_string()), rest)
            }
        };
        let mut term = OrderTerm {
            target,
            descending: false,
            nulls: None,
        };
        for m in modifiers.split('.').filter(|m| !m.is_empty()) {
            match m {
                "asc" => term.descending = false,
                "desc" => term.descending = true,
                "nullsfirst" => term.nulls = Some(Nulls::First),
                "nullslast" => term.nulls = Some(Nulls::Last),
                _ => {
                    return Err(bad("unknown `order` modifier")
                        .hint("use asc, desc, nullsfirst or nullslast"))
                }
            }
        }
        terms.push(term);
    }
    Ok(terms)
}

/// `select=` grammar: `item(,item)*` where an item is `*`, `[alias:]column[::cast]`, or
/// `[alias:]table[!hint][!inner](items)`.
pub fn parse_select(value: &str) -> Result<Vec<SelectItem>, RestError> {
    parse_select_at(value, 0)
}

fn parse_select_at(value: &str, depth: usize) -> Result<Vec<SelectItem>, RestError> {
    if depth > MAX_NESTING {
        return Err(too_deep());
    }
    let value = value.trim();
    if value.is_empty() {
        return Ok(vec![SelectItem::Star]);
    }
    split_top_level(value)?
        .into_iter()
        .map(|item| parse_select_item(item.trim(), depth))
        .collect()
}

fn parse_select_item(item: &str, depth: usize) -> Result<SelectItem, RestError> {
    if item == "*" {
        return Ok(SelectItem::Star);
    }
    if item.is_empty() {
        return Err(bad("empty item in `select`"));
    }
    let (spread, item) = match item.strip_prefix("...") {
        Some(rest) => (true, rest.trim()),
        None => (false, item),
    };
    // The alias is before the first single colon (a `::` is a cast).
    let (alias, rest) = match find_single_colon(item) {
        Some(i) => (Some(item[..i].trim()), item[i + 1..].trim()),
        None => (None, item),
    };
    if let Some(a) = alias {
        if !valid_name(a) {
            return Err(bad("malformed alias in `select`"));
        }
    }
    let alias = alias.map(str::to_string);
    if let Some(open) = rest.find('(') {
        let inner = rest[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| bad("an embedding in `select` must end with `)`"))?;
        let mut head = rest[..open].split('!');
        let target = head.next().unwrap_or_default().trim();
        if !valid_name(target) {
            return Err(bad("malformed embedding name in `select`"));
        }
        let mut hint = None;
        let mut inner_join = false;
        for h in head {
            match h.trim() {
                "inner" => inner_join = true,
                "left" => inner_join = false,
                h if valid_name(h) && hint.is_none() => hint = Some(h.to_string()),
                _ => return Err(bad("malformed `!hint` in `select`")),
            }
        }
        if spread && alias.is_some() {
            return Err(bad("a spread embedding `...rel(...)` takes no alias")
                .hint("alias the fields inside it instead, e.g. `...lists(list_name:name)`"));
        }
        // `rel()` selects nothing: the embedding only filters (`rel=not.is.null`).
        let items = if inner.trim().is_empty() {
            Vec::new()
        } else {
            parse_select_at(inner, depth + 1)?
        };
        return Ok(SelectItem::Embed {
            alias,
            target: target.to_string(),
            hint,
            inner: inner_join,
            spread,
            items,
        });
    }
    if spread {
        return Err(bad("`...` spreads an embedding: `...rel(columns)`"));
    }
    let (name, cast) = match rest.split_once("::") {
        Some((n, c)) => (
            n.trim(),
            Some(Cast::parse(c.trim()).ok_or_else(|| {
                bad("unsupported cast in `select`").hint(
                    "casts allowed: text, int2, int4, int8, numeric, float4, float8, bool, json, jsonb, date, time, timestamp, timestamptz, uuid",
                )
            })?),
        ),
        None => (rest, None),
    };
    if !valid_name(name) {
        return Err(bad("malformed column name in `select`"));
    }
    Ok(SelectItem::Column {
        alias,
        name: name.to_string(),
        cast,
    })
}

fn find_single_colon(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let stop = s.find('(').unwrap_or(s.len());
    let mut i = 0;
    while i < stop {
        if bytes[i] == b':' {
            if i + 1 < bytes.len() && bytes[i + 1] == b':' {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

/// What `Prefer: return=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPref {
    Minimal,
    HeadersOnly,
    Representation,
}

/// The `Prefer` headers of a request. Unknown preferences are ignored, as RFC 7240 says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prefer {
    pub return_: Option<ReturnPref>,
    pub count: Option<CountPref>,
    pub resolution: Option<Resolution>,
    /// `missing=default`: keys a row leaves out get the column default, not null.
    pub missing_default: bool,
}

pub fn parse_prefer<'a>(values: impl Iterator<Item = &'a str>) -> Prefer {
    let mut p = Prefer::default();
    for value in values {
        for pref in value.split(',') {
            let pref = pref.trim();
            match pref {
                "return=minimal" => p.return_ = Some(ReturnPref::Minimal),
                "return=headers-only" => p.return_ = Some(ReturnPref::HeadersOnly),
                "return=representation" => p.return_ = Some(ReturnPref::Representation),
                "count=exact" => p.count = Some(CountPref::Exact),
                "count=planned" => p.count = Some(CountPref::Planned),
                "count=estimated" => p.count = Some(CountPref::Estimated),
                "resolution=merge-duplicates" => p.resolution = Some(Resolution::MergeDuplicates),
                "resolution=ignore-duplicates" => p.resolution = Some(Resolution::IgnoreDuplicates),
                "missing=default" => p.missing_default = true,
                "missing=null" => p.missing_default = false,
                _ => {}
            }
        }
    }
    p
}

/// `Range: 0-9` (or `items=0-9`): first and optional last row, inclusive.
pub fn parse_range(value: &str) -> Result<(u64, Option<u64>), RestError> {
    let v = value.trim();
    let v = v.strip_prefix("items=").unwrap_or(v);
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| bad("`Range` looks like `0-24`"))?;
    let first: u64 = a
        .trim()
        .parse()
        .map_err(|_| bad("`Range` looks like `0-24`"))?;
    let last = match b.trim() {
        "" => None,
        s => {
            let last: u64 = s.parse().map_err(|_| bad("`Range` looks like `0-24`"))?;
            if last < first {
                return Err(bad("`Range` ends before it starts"));
            }
            Some(last)
        }
    };
    Ok((first, last))
}

/// The representation an `Accept` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A JSON array of rows.
    Json,
    /// `application/vnd.pgrst.object+json`: exactly one row, as an object.
    SingleObject,
}

pub fn parse_accept(value: Option<&str>) -> Result<Accept, RestError> {
    let Some(value) = value else {
        return Ok(Accept::Json);
    };
    for media in value.split(',') {
        let media = media.split(';').next().unwrap_or_default().trim();
        match media {
            "application/vnd.pgrst.object+json" | "application/vnd.pgrst.object" => {
                return Ok(Accept::SingleObject)
            }
            "application/json" | "*/*" | "application/*" | "" => return Ok(Accept::Json),
            _ => {}
        }
    }
    Err(RestError::NotAcceptable(
        "only application/json and application/vnd.pgrst.object+json are offered".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_with_nested_embeds_aliases_casts_and_hints() {
        let s = parse_select("id,t:title::text,comments(id,body,author:users!author_id(name)),*")
            .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[1],
            SelectItem::Column {
                alias: Some("t".into()),
                name: "title".into(),
                cast: Some(Cast::Text)
            }
        );
        let SelectItem::Embed { target, items, .. } = &s[2] else {
            panic!("embed")
        };
        assert_eq!(target, "comments");
        let SelectItem::Embed {
            alias,
            target,
            hint,
            ..
        } = &items[2]
        else {
            panic!("nested embed")
        };
        assert_eq!(alias.as_deref(), Some("author"));
        assert_eq!(target, "users");
        assert_eq!(hint.as_deref(), Some("author_id"));
        assert!(parse_select("id::evil_type").is_err());
        assert!(parse_select("a(b").is_err());
        assert!(parse_select("x\"; drop table t; --").is_err());
        let deep = format!("{}id{}", "a(".repeat(100_000), ")".repeat(100_000));
        assert!(parse_select(&deep).is_err());
    }

    #[test]
    fn filters_logic_trees_and_order() {
        let q = parse_query(
            "id=gt.1&name=not.ilike.*ab*&or=(a.eq.1,and(b.in.(1,\"x,y\"),c.is.null))&comments.body=eq.hi&order=rel(name).desc.nullslast,id&limit=5&comments.order=id",
        )
        .unwrap();
        assert_eq!(q.conditions.len(), 4);
        assert_eq!(
            q.conditions[1].item,
            Condition::Pred(Predicate {
                column: "name".into(),
                negated: true,
                op: Operator::Ilike,
                operand: Operand::Value("%ab%".into())
            })
        );
        let Condition::Or { items, .. } = &q.conditions[2].item else {
            panic!("or")
        };
        let Condition::And { items, .. } = &items[1] else {
            panic!("and")
        };
        assert_eq!(
            items[0],
            Condition::Pred(Predicate {
                column: "b".into(),
                negated: false,
                op: Operator::In,
                operand: Operand::List(vec!["1".into(), "x,y".into()])
            })
        );
        assert_eq!(q.conditions[3].path, vec!["comments".to_string()]);
        assert_eq!(q.order[0].item.len(), 2);
        assert!(q.order[0].item[0].descending);
        assert_eq!(q.order[0].item[0].nulls, Some(Nulls::Last));
        assert_eq!(q.order[1].path, vec!["comments".to_string()]);
        assert!(parse_query("id=zz.1").is_err());
        assert!(parse_query("or=(a.eq.1").is_err());
        assert!(parse_query("limit=-1").is_err());
        assert!(parse_query("order=id.sideways").is_err());
        let deep = format!(
            "or=({}a.eq.1{})",
            "and(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert!(parse_query(&deep).is_err());
    }

    #[test]
    fn prefer_range_accept() {
        let p = parse_prefer(
            [
                "return=representation, count=exact",
                "resolution=merge-duplicates",
            ]
            .into_iter(),
        );
        assert_eq!(p.return_, Some(ReturnPref::Representation));
        assert_eq!(p.count, Some(CountPref::Exact));
        assert_eq!(p.resolution, Some(Resolution::MergeDuplicates));
        assert_eq!(parse_range("0-9").unwrap(), (0, Some(9)));
        assert_eq!(parse_range("items=5-").unwrap(), (5, None));
        assert!(parse_range("9-1").is_err());
        assert_eq!(
            parse_accept(Some("application/vnd.pgrst.object+json")).unwrap(),
            Accept::SingleObject
        );
        assert!(parse_accept(Some("text/csv")).is_err());
    }
}
