//! SQL that places a client's cursor in this database's change log: the log's identity
//! (cluster system identifier and database oid), the watermark (now, or of a caller's
//! snapshot) and, for one position, the watermark, the retention floor and whether a change
//! with exactly that position exists.

use tokio_postgres::GenericClient;

use super::{Store, StoreError};

/// Where a position stands relative to the log, read in one statement (one snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// `pg_snapshot_xmin` now: no transaction at or after it has a readable change yet.
    pub watermark_xid: u64,
    /// The retention floor (everything at or below it may have been pruned).
    pub floor: (u64, i64),
    /// Whether the change log holds a change at exactly the position asked about.
    pub exists: bool,
}

fn parse_xid(s: &str) -> Result<u64, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Decode(format!("not an xid8: {s:?}")))
}

/// The watermark of the caller's snapshot: `pg_snapshot_xmin(pg_current_snapshot())`. In a
/// REPEATABLE READ transaction this is the xmin of the transaction's snapshot, whichever
/// statement calls it, so changes after it cover every transaction the snapshot cannot see.
pub async fn snapshot_watermark(tx: &tokio_postgres::Transaction<'_>) -> Result<u64, StoreError> {
    snapshot_xmin(tx).await
}

/// `pg_snapshot_xmin(pg_current_snapshot())` on any connection.
pub(super) async fn snapshot_xmin(client: &impl GenericClient) -> Result<u64, StoreError> {
    let row = client
        .query_one("select pg_snapshot_xmin(pg_current_snapshot())::text", &[])
        .await?;
    parse_xid(&row.try_get::<_, String>(0)?)
}

impl Store {
    /// The watermark now: `pg_snapshot_xmin` of a fresh snapshot (every transaction below
    /// it has ended).
    pub async fn watermark(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        snapshot_xmin(&**client).await
    }

    /// The cluster's system identifier (`None` where the role may not call
    /// `pg_control_system()`) and the current database's oid.
    pub async fn log_identity(&self) -> Result<(Option<i64>, u32), StoreError> {
        let client = self.client().await?;
        let oid: u32 = client
            .query_one(
                "select oid from pg_catalog.pg_database where datname = current_database()",
                &[],
            )
            .await?
            .try_get(0)?;
        let system = match client
            .query_one(
                "select system_identifier from pg_catalog.pg_control_system()",
                &[],
            )
            .await
        {
            Ok(row) => Some(row.try_get::<_, i64>(0)?),
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        Ok((system, oid))
    }

    /// Where `(xid, id)` stands in the change log.
    pub async fn place_cursor(&self, xid: u64, id: i64) -> Result<Placement, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "select pg_snapshot_xmin(pg_current_snapshot())::text,
                        f.xid::text, f.id,
                        exists (select 1 from rowcast.change_log l
                                where l.xid = $1::text::xid8 and l.id = $2)
                 from rowcast.change_floor f",
                &[&xid.to_string(), &id],
            )
            .await?;
        Ok(Placement {
            watermark_xid: parse_xid(&row.try_get::<_, String>(0)?)?,
            floor: (parse_xid(&row.try_get::<_, String>(1)?)?, row.try_get(2)?),
            exists: row.try_get(3)?,
        })
    }
}
