//! What a consumer receives: one [`Change`] per logged row change, grouped into
//! [`ChangeBatch`]es that each hold exactly one transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{CaptureError, Cursor};
use crate::store::changes::ChangeRow;

/// A synced table, by the schema and name it had when the change was captured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The kind of change. A primary-key update arrives as `Delete` (old key) + `Insert` (new
/// key) in the same batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// Every row of the table whose version is below this change's version is gone. A
    /// consumer drops those rows (keeping newer ones: they were written after the
    /// TRUNCATE even if delivered before it). Also logged by `rowcast.disable_sync`.
    Truncate,
    /// The table's shape (columns, types, key, name) or capture's state on it changed at
    /// this point of the log: row images before and after it may differ in shape, and
    /// changes may be missing while capture was stopped. A consumer resyncs the table.
    /// `new_row` holds `{"event", "status", "shape"}`, `old_row` the previous status and
    /// shape; see [`Change::schema_event`].
    Schema,
}

/// One captured row change.
///
/// Apply rule (last writer wins by version): a consumer keeps, per table and key, the
/// highest `version` it has seen (including deletes, as tombstones) and applies a change
/// only if its `version` is higher. Delivery is in log order, which is not commit order;
/// the version makes the result equal to the database's state regardless.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub table: TableName,
    pub op: Op,
    /// The primary key as a JSON object (`{"id": 7}`); empty for `Truncate`.
    pub pk: Map<String, Value>,
    /// The row's version after this change (the tombstone's version for `Delete`). Per key,
    /// versions follow commit order. Comparable with the `_v` column snapshot reads see
    /// (null `_v` counts as 0): a row state's `_v` is <= the version of the change that
    /// produced it and < the version of every later change of that key.
    pub version: i64,
    /// The whole new row (`Insert`, `Update`), including `_v`.
    pub new_row: Option<Value>,
    /// The whole old row (`Update`, `Delete`), so filters can tell a row leaving them.
    pub old_row: Option<Value>,
    /// This change's position in the log.
    pub cursor: Cursor,
}

impl Change {
    /// For an [`Op::Schema`] change, what happened: `column-added`, `column-dropped`,
    /// `column-changed` (renamed or retyped), `primary-key-changed`, `table-renamed`,
    /// `capture-stopped` or `capture-resumed`.
    pub fn schema_event(&self) -> Option<&str> {
        if self.op != Op::Schema {
            return None;
        }
        self.new_row.as_ref()?.get("event")?.as_str()
    }
}

/// All changes of one transaction, in the order they were made. Never split across
/// batches; batches arrive in log order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeBatch {
    /// The writing transaction's id.
    pub xid: u64,
    /// When the writing transaction started (used for lag).
    pub started_at: DateTime<Utc>,
    pub changes: Vec<Change>,
}

impl ChangeBatch {
    /// The position after this batch: resume from here to get what follows it.
    pub fn cursor(&self) -> Cursor {
        self.changes
            .last()
            .map(|c| c.cursor)
            .unwrap_or(Cursor::before_xid(self.xid))
    }
}

/// What the live tail publishes to subscribers.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// The next transaction, in log order.
    Batch(Arc<ChangeBatch>),
    /// The reader fell so far behind that retention pruned changes it had not read; anyone
    /// relying on the stream must resync (snapshot) and resume after `floor`.
    ResyncRequired { floor: Cursor },
}

pub(crate) fn change_from_row(row: ChangeRow) -> Result<Change, CaptureError> {
    let op = match row.op.as_str() {
        "I" => Op::Insert,
        "U" => Op::Update,
        "D" => Op::Delete,
        "T" => Op::Truncate,
        "S" => Op::Schema,
        other => return Err(CaptureError::Corrupt(format!("unknown op {other:?}"))),
    };
    let pk = match row.pk {
        Some(Value::Object(m)) => m,
        None if matches!(op, Op::Truncate | Op::Schema) => Map::new(),
        other => {
            return Err(CaptureError::Corrupt(format!(
                "primary key is not an object: {other:?}"
            )))
        }
    };
    Ok(Change {
        table: TableName {
            schema: row.table_schema,
            name: row.table_name,
        },
        op,
        pk,
        version: row.version,
        new_row: row.new_row,
        old_row: row.old_row,
        cursor: Cursor::new(row.xid, row.id),
    })
}

/// Group rows (in log order) into per-transaction batches.
pub(crate) fn group(rows: Vec<ChangeRow>) -> Result<Vec<ChangeBatch>, CaptureError> {
    let mut out: Vec<ChangeBatch> = Vec::new();
    for row in rows {
        let (xid, started_at) = (row.xid, row.created_at);
        let change = change_from_row(row)?;
        match out.last_mut() {
            Some(b) if b.xid == xid => b.changes.push(change),
            _ => out.push(ChangeBatch {
                xid,
                started_at,
                changes: vec![change],
            }),
        }
    }
    Ok(out)
}
