//! What realtime reads from tables besides the change log: a table's rows as of a log
//! position (to load the membership index relational policies read, and to re-read the
//! rows a membership change may move in or out), and batched visibility checks for
//! policies outside the fast path. [`RowSource`] is that seam: the store implements it
//! (through its public methods), and the router's unit tests run over a fake.

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::feed::Cursor;
use crate::store::{
    realtime::{RowsAtError, VisibilityCheck},
    Store, StoreError,
};

/// Which rows of a table to read as of a position.
#[derive(Debug, Clone, Copy)]
pub struct RowsAt<'a> {
    pub schema: &'a str,
    pub name: &'a str,
    pub primary_key: &'a [String],
    /// The log position the rows are rolled back to.
    pub at: Cursor,
    /// Only rows whose `column` (of SQL type `sql_type`) holds one of `values`; all rows
    /// when `None`.
    pub only: Option<LinkValues<'a>>,
}

/// The link column values of the rows that may have moved.
#[derive(Debug, Clone, Copy)]
pub struct LinkValues<'a> {
    pub column: &'a str,
    pub sql_type: &'a str,
    pub values: &'a [String],
}

/// Rows realtime reads from the database.
pub trait RowSource: Send + Sync + 'static {
    /// The rows `query` names, as they were at `query.at`.
    fn rows_at<'a>(
        &'a self,
        query: RowsAt<'a>,
    ) -> BoxFuture<'a, Result<Vec<Map<String, Value>>, RowsAtError>>;

    /// For each check, per identity, per row image: whether the identity sees it (see
    /// `Store::visible_rows`).
    fn visible_rows<'a>(
        &'a self,
        table: (&'a str, &'a str),
        checks: &'a [VisibilityCheck],
    ) -> BoxFuture<'a, Result<Vec<Vec<Vec<bool>>>, StoreError>>;
}

impl RowSource for Store {
    fn rows_at<'a>(
        &'a self,
        q: RowsAt<'a>,
    ) -> BoxFuture<'a, Result<Vec<Map<String, Value>>, RowsAtError>> {
        Box::pin(async move {
            let only = q.only.map(|o| (o.column, o.sql_type, o.values));
            Store::rows_at(
                self,
                q.schema,
                q.name,
                q.primary_key,
                (q.at.xid(), q.at.id()),
                only,
            )
            .await
        })
    }

    fn visible_rows<'a>(
        &'a self,
        table: (&'a str, &'a str),
        checks: &'a [VisibilityCheck],
    ) -> BoxFuture<'a, Result<Vec<Vec<Vec<bool>>>, StoreError>> {
        Box::pin(Store::visible_rows(self, table, checks))
    }
}
