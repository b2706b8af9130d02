//! Catalog facts for the REST API as plain data: the tables, views, columns, keys, foreign
//! keys and functions of the exposed schemas, as `rest_schema` reads them. `rest::schema`
//! re-exports these and resolves client names against them; `rest_query` quotes only these
//! names into SQL.

use std::{collections::HashMap, sync::Arc};

/// A name read from the Postgres catalog. Only the catalog loader constructs these, so an
/// `Ident` in a plan is proof that the name was resolved, never taken from a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

impl Ident {
    /// For the catalog loader only: `name` must come from a catalog row.
    pub fn from_catalog(name: String) -> Ident {
        Ident(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: Ident,
    /// The type's name as `format_type` gives it, for messages and docs.
    pub type_name: String,
    pub nullable: bool,
    pub has_default: bool,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: Ident,
    pub name: Ident,
    pub columns: Vec<Column>,
    pub primary_key: Vec<Ident>,
    pub insertable: bool,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name.as_str() == name)
    }
}

/// A foreign key: `columns` of `table` reference `ref_columns` of `ref_table`.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: Ident,
    pub table: (Ident, Ident),
    pub columns: Vec<Ident>,
    pub ref_table: (Ident, Ident),
    pub ref_columns: Vec<Ident>,
}

#[derive(Debug, Clone)]
pub struct FunctionArg {
    pub name: Ident,
    pub has_default: bool,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub schema: Ident,
    pub name: Ident,
    /// Named input arguments, in order.
    pub args: Vec<FunctionArg>,
    /// Some input argument has no name: such a function cannot be called with named args.
    pub has_unnamed_args: bool,
    pub returns_set: bool,
    pub returns_void: bool,
    /// Stable or immutable: may be called with GET.
    pub read_only: bool,
    /// A single unnamed `json`/`jsonb` argument: the whole request body is passed to it.
    pub json_arg: Option<JsonArg>,
    /// The columns of each result row when the function returns rows of a composite type
    /// (a table's row type, `returns table (...)`, `out` arguments); empty for scalars.
    pub result_columns: Vec<Column>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonArg {
    Json,
    Jsonb,
}

/// One consistent snapshot of the exposed part of the catalog.
#[derive(Debug, Default)]
pub struct SchemaCache {
    /// Exposed schemas in configured order; the first is the default.
    pub schemas: Vec<String>,
    pub tables: HashMap<(String, String), Arc<Table>>,
    pub foreign_keys: Vec<ForeignKey>,
    pub functions: HashMap<(String, String), Vec<Arc<Function>>>,
}

impl SchemaCache {
    pub fn table(&self, schema: &str, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }

    pub fn functions(&self, schema: &str, name: &str) -> &[Arc<Function>] {
        self.functions
            .get(&(schema.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}
