//! The catalog read behind `rowcast gen types`: every column of the tables and views in the
//! given schemas, with what the TypeScript rendering needs (type, nullability, defaults,
//! generated/identity, enum labels, array element type).

use super::{Store, StoreError};

/// One column of a table or view, as the catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogColumn {
    pub schema: String,
    pub relation: String,
    /// `r`/`p` (table), `v` (view), `m` (materialized view), `f` (foreign table).
    pub kind: char,
    pub name: String,
    /// `pg_type.typname` of the column, or of the element for arrays.
    pub type_name: String,
    pub is_array: bool,
    pub not_null: bool,
    /// A default, an identity or a generated expression supplies the value on insert.
    pub has_default: bool,
    /// `generated always` (identity or stored expression): cannot be written.
    pub always_generated: bool,
    /// Labels when the (element) type is an enum, in sort order.
    pub enum_labels: Vec<String>,
}

impl Store {
    /// Columns of every table and view in `schemas`, ordered by schema, relation and
    /// position.
    pub async fn catalog_columns(
        &self,
        schemas: &[String],
    ) -> Result<Vec<CatalogColumn>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "select n.nspname::text, c.relname::text, c.relkind::text, a.attname::text,
                    coalesce(et.typname, t.typname)::text, et.oid is not null,
                    a.attnotnull, (a.atthasdef or a.attidentity <> '' or a.attgenerated <> ''),
                    (a.attidentity = 'a' or a.attgenerated <> ''),
                    coalesce((select array_agg(e.enumlabel::text order by e.enumsortorder)
                              from pg_enum e where e.enumtypid = coalesce(et.oid, t.oid)), '{}')
               from pg_class c
               join pg_namespace n on n.oid = c.relnamespace
               join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
               join pg_type t on t.oid = a.atttypid
               left join pg_type et on et.oid = t.typelem and t.typcategory = 'A'
              where n.nspname = any($1) and c.relkind in ('r', 'p', 'v', 'm', 'f')
              order by n.nspname, c.relname, a.attnum",
                &[&schemas],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(2)?;
                Ok(CatalogColumn {
                    schema: r.try_get(0)?,
                    relation: r.try_get(1)?,
                    kind: kind.chars().next().unwrap_or('r'),
                    name: r.try_get(3)?,
                    type_name: r.try_get(4)?,
                    is_array: r.try_get(5)?,
                    not_null: r.try_get(6)?,
                    has_default: r.try_get(7)?,
                    always_generated: r.try_get(8)?,
                    enum_labels: r.try_get(9)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(StoreError::from)
    }
}
