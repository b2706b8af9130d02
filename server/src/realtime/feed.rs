//! What the realtime router consumes: the change-capture types (`Cursor`, `Change`,
//! `ChangeBatch`), re-exported in one place so the router, the catch-up reader and the tests
//! name them the same way.
//!
//! Until change capture lands on `main`, this file carries a faithful copy of its public
//! types (same names, fields and cursor text form); at integration it becomes a re-export.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// A position in the change log; ordered like the log, text form `"<xid>:<id>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    xid: u64,
    id: i64,
}

impl Cursor {
    pub const START: Cursor = Cursor { xid: 0, id: 0 };

    pub(crate) fn new(xid: u64, id: i64) -> Cursor {
        Cursor { xid, id }
    }

    pub(crate) fn before_xid(xid: u64) -> Cursor {
        Cursor { xid, id: 0 }
    }

    pub(crate) fn xid(self) -> u64 {
        self.xid
    }

    pub(crate) fn id(self) -> i64 {
        self.id
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.xid, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid cursor (expected the opaque string the server sent)")]
pub struct CursorParseError;

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Cursor, CursorParseError> {
        fn digits(s: &str) -> Option<&str> {
            (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
        }
        let (x, i) = s.split_once(':').ok_or(CursorParseError)?;
        let xid = digits(x)
            .and_then(|x| x.parse::<u64>().ok())
            .ok_or(CursorParseError)?;
        let id = digits(i)
            .and_then(|i| i.parse::<i64>().ok())
            .ok_or(CursorParseError)?;
        Ok(Cursor { xid, id })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub table: TableName,
    pub op: Op,
    pub pk: Map<String, Value>,
    pub version: i64,
    pub new_row: Option<Value>,
    pub old_row: Option<Value>,
    pub cursor: Cursor,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch {
    pub xid: u64,
    pub started_at: DateTime<Utc>,
    pub changes: Vec<Change>,
}

impl ChangeBatch {
    pub fn cursor(&self) -> Cursor {
        self.changes
            .last()
            .map(|c| c.cursor)
            .unwrap_or(Cursor::before_xid(self.xid))
    }
}

/// Until change capture is integrated: a log with no history.
#[derive(Debug)]
pub struct NoLog;

impl super::ChangeSource for NoLog {
    fn changes_between(
        &self,
        _after: Cursor,
        _until: Cursor,
    ) -> futures::stream::BoxStream<'static, Result<ChangeBatch, super::SourceError>> {
        Box::pin(futures::stream::empty())
    }
}
