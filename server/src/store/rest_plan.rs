//! The SQL-shaped description of a REST request as plain data: what `rest::plan` builds
//! and `rest_query` turns into SQL (fields, conditions, operators, embeddings, order, write
//! plans), and the plain results that come back (`rest::response` shapes them). Every name
//! in here is a catalog [`Ident`]; every value is text to be bound.

use std::sync::Arc;

use super::rest_catalog::{Function, Ident, JsonArg, Table};

/// One table in the read tree: the URL's table or an embedded one.
#[derive(Debug, Clone)]
pub struct Node {
    pub table: Arc<Table>,
    pub fields: Vec<Field>,
    pub condition: Vec<Cond>,
    pub order: Vec<Order>,
    pub limit: Option<u64>,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub enum Field {
    /// `key` is the JSON key (alias or column name); it is bound as a parameter.
    Column {
        key: String,
        column: Ident,
        /// `meta->tags->>0`: JSON steps after the column (empty for the column itself).
        path: Vec<JsonStep>,
        cast: Option<Cast>,
    },
    Embed(Box<Embed>),
}

/// One `->key` / `->>key` step into a JSON column. The key is bound as a parameter (a
/// digit string as an array index, as PostgREST does).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonStep {
    pub key: String,
    pub index: Option<i64>,
    /// `->>`: the value as text.
    pub as_text: bool,
}

/// A column, or a path into a JSON column.
#[derive(Debug, Clone)]
pub struct ColRef {
    pub column: Ident,
    pub path: Vec<JsonStep>,
    /// The column is a `tsvector` (full-text search uses it as is, else `to_tsvector`).
    pub tsvector: bool,
}

#[derive(Debug, Clone)]
pub struct Embed {
    pub key: String,
    /// The name the client used for the target (to address it in filters and order).
    pub target: String,
    pub join: Join,
    pub to_one: bool,
    pub inner: bool,
    /// `...rel(...)`: the fields go into the parent's object (on a to-many relation, each
    /// as an array of its values over the related rows).
    pub spread: bool,
    pub node: Node,
}

/// Equalities `parent.col = child.col` along one foreign key, or (many-to-many) the
/// junction table that links the two.
#[derive(Debug, Clone)]
pub struct Join {
    pub pairs: Vec<(Ident, Ident)>,
    pub via: Option<Via>,
}

/// A junction table: `parent.col = junction.col` pairs and `child.col = junction.col` pairs.
#[derive(Debug, Clone)]
pub struct Via {
    pub junction: Arc<Table>,
    pub parent: Vec<(Ident, Ident)>,
    pub child: Vec<(Ident, Ident)>,
}

impl Join {
    /// The parent's columns the join reads.
    pub fn parent_columns(&self) -> impl Iterator<Item = &Ident> {
        self.pairs.iter().map(|(p, _)| p).chain(
            self.via
                .iter()
                .flat_map(|v| v.parent.iter().map(|(p, _)| p)),
        )
    }
}

#[derive(Debug, Clone)]
pub enum Cond {
    Pred {
        column: ColRef,
        negated: bool,
        op: Operator,
        operand: Operand,
    },
    And {
        negated: bool,
        items: Vec<Cond>,
    },
    Or {
        negated: bool,
        items: Vec<Cond>,
    },
    /// `rel=not.is.null` / `rel=is.null`: whether the embedding `key` of this node has a
    /// row (with its own filters); the anti-join when `present` is false.
    Exists {
        key: String,
        present: bool,
    },
}

#[derive(Debug, Clone)]
pub enum OrderKey {
    Column(ColRef),
    /// A column of a to-one related table.
    Related {
        table: Arc<Table>,
        join: Join,
        column: Ident,
    },
}

#[derive(Debug, Clone)]
pub struct Order {
    pub key: OrderKey,
    pub descending: bool,
    pub nulls: Option<Nulls>,
}

#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub node: Node,
    pub count: Option<CountPref>,
    pub single: bool,
    pub max_rows: u64,
}

/// What a write returns.
#[derive(Debug, Clone)]
pub enum Returning {
    Minimal,
    /// `return=headers-only`: the primary key, for the `Location` header.
    Keys(Vec<Ident>),
    Rows(Node),
}

#[derive(Debug, Clone)]
pub struct Conflict {
    pub columns: Vec<Ident>,
    pub resolution: Resolution,
    pub update: Vec<Ident>,
}

#[derive(Debug, Clone)]
pub struct InsertPlan {
    pub table: Arc<Table>,
    pub columns: Vec<Ident>,
    /// The rows as one JSON array text, bound as one parameter.
    pub rows: String,
    pub row_count: usize,
    pub conflict: Option<Conflict>,
    pub returning: Returning,
    pub single: bool,
    /// `Prefer: missing=default`: the rows split by the columns each one gives (one insert
    /// per group, so that the columns a row leaves out take their defaults). Empty: one
    /// insert of `columns` and `rows`.
    pub groups: Vec<(Vec<Ident>, String)>,
    /// A PUT: answers 200/204 (the row may have existed), not 201.
    pub put: bool,
}

#[derive(Debug, Clone)]
pub struct UpdatePlan {
    pub table: Arc<Table>,
    pub columns: Vec<Ident>,
    /// The new values as one JSON object text, bound as one parameter.
    pub values: String,
    pub condition: Vec<Cond>,
    pub returning: Returning,
    pub single: bool,
}

#[derive(Debug, Clone)]
pub struct DeletePlan {
    pub table: Arc<Table>,
    pub condition: Vec<Cond>,
    pub returning: Returning,
    pub single: bool,
}

#[derive(Debug, Clone)]
pub struct RpcPlan {
    pub function: Arc<Function>,
    /// Named arguments with their values as text (`None` = SQL null).
    pub args: Vec<(Ident, Option<String>)>,
    /// A function with one unnamed `json`/`jsonb` argument gets the whole body.
    pub body_arg: Option<(JsonArg, String)>,
    pub single: bool,
    /// `GET /rpc/f?select=…&col=op.value&order=…`: the result rows shaped and filtered as a
    /// read of a table would be; the node's table stands for the function's result columns
    /// (it is never named in SQL).
    pub read: Option<Node>,
}

#[derive(Debug, Clone)]
pub enum WritePlan {
    Insert(InsertPlan),
    Update(UpdatePlan),
    Delete(DeletePlan),
    Rpc(RpcPlan),
}

impl WritePlan {
    pub fn table(&self) -> Option<&Arc<Table>> {
        match self {
            WritePlan::Insert(p) => Some(&p.table),
            WritePlan::Update(p) => Some(&p.table),
            WritePlan::Delete(p) => Some(&p.table),
            WritePlan::Rpc(_) => None,
        }
    }

    pub fn returning(&self) -> Option<&Returning> {
        match self {
            WritePlan::Insert(p) => Some(&p.returning),
            WritePlan::Update(p) => Some(&p.returning),
            WritePlan::Delete(p) => Some(&p.returning),
            WritePlan::Rpc(_) => None,
        }
    }

    pub fn single(&self) -> bool {
        match self {
            WritePlan::Insert(p) => p.single,
            WritePlan::Update(p) => p.single,
            WritePlan::Delete(p) => p.single,
            WritePlan::Rpc(p) => p.single,
        }
    }
}

/// A cast allowed in `select=col::type`. A closed list: the type never comes from the client
/// as text, so the SQL for it is a fixed string chosen by the storage layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    Text,
    Int2,
    Int4,
    Int8,
    Numeric,
    Float4,
    Float8,
    Bool,
    Json,
    Jsonb,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Match,
    Imatch,
    In,
    Is,
    Contains,
    ContainedIn,
    Overlaps,
    /// `isdistinct`: `is distinct from`, null-safe inequality.
    IsDistinct,
    /// Full-text search with `to_tsquery`, `plainto_tsquery`, `phraseto_tsquery`,
    /// `websearch_to_tsquery`.
    Fts,
    Plfts,
    Phfts,
    Wfts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

/// The right-hand side of a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A single value, always bound as a parameter.
    Value(String),
    /// `in.(a,b,"c,d")`
    List(Vec<String>),
    /// `is.null` and friends: keywords, not values.
    Is(IsValue),
    /// `eq(any).{a,b}` / `like(all).{a*,b*}`: the operator against every value, joined by
    /// `any` or `all`.
    Quantified { all: bool, values: Vec<String> },
    /// `fts(english).query`: the query text and the optional text search configuration
    /// (bound as a `regconfig` parameter, so Postgres checks the name).
    Search {
        language: Option<String>,
        query: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    First,
    Last,
}

/// What `Prefer: count=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountPref {
    Exact,
    Planned,
    Estimated,
}

/// What `Prefer: resolution=` asks for on insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    MergeDuplicates,
    IgnoreDuplicates,
}

/// A finished response as plain data (status, headers, body), independent of the HTTP
/// framework; stored as is for idempotent replay. `rest::response` builds these.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// What a read returned: the rows as one JSON array text, how many, and the total count
/// if one was asked for.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub body: String,
    pub rows: i64,
    pub total: Option<i64>,
}

/// What a write returned: the returned rows (or keys) as one JSON array text, and how many
/// rows it touched.
#[derive(Debug, Clone)]
pub struct WriteResult {
    pub body: String,
    pub rows: i64,
}

/// What identifies a retried write: the client's key, who sent it, and where.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub subject: String,
    pub method: &'static str,
    pub path: String,
    /// A digest of everything else in the request; a different request under the same key
    /// is refused instead of being answered with the wrong stored response.
    pub request_hash: String,
    pub ttl: std::time::Duration,
}
