//! Opting tables in and out of sync from Rust (the `rowcast sync` command); the same as
//! calling `rowcast.enable_sync`/`disable_sync`/`synced_tables()` from psql or a migration.

use chrono::{DateTime, Utc};

use crate::store::{Store, StoreError};

/// A synced table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedTable {
    pub schema: String,
    pub name: String,
    pub primary_key: Vec<String>,
    pub enabled_at: DateTime<Utc>,
    /// `ok`, or why capture does not work on it: `triggers-disabled`, `triggers-missing`,
    /// `origin-only` (triggers re-enabled without ALWAYS), `no-primary-key`,
    /// `no-version-column`.
    pub status: String,
}

/// Why enabling or disabling failed, in words for the operator who asked.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Postgres refused (missing table, a view, no primary key, not the owner…); the message
    /// is Postgres's, written for the admin.
    #[error("{message}{}", hint.as_deref().map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    Refused {
        sqlstate: String,
        message: String,
        hint: Option<String>,
    },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Db(db) = &e {
            if let Some(d) = db.as_db_error() {
                return SyncError::Refused {
                    sqlstate: d.code().code().to_string(),
                    message: d.message().to_string(),
                    hint: d.hint().map(str::to_string),
                };
            }
        }
        SyncError::Store(e)
    }
}

/// Enable sync on `table` (`todos`, `public.todos`, `"Mixed Case"`). Idempotent.
pub async fn enable(store: &Store, table: &str) -> Result<(), SyncError> {
    store.enable_sync(table).await?;
    Ok(())
}

/// Disable sync on `table`: removes the triggers and the `_v` column. Idempotent.
pub async fn disable(store: &Store, table: &str) -> Result<(), SyncError> {
    store.disable_sync(table).await?;
    Ok(())
}

pub async fn list(store: &Store) -> Result<Vec<SyncedTable>, SyncError> {
    Ok(store
        .synced_tables()
        .await?
        .into_iter()
        .map(|r| SyncedTable {
            schema: r.schema,
            name: r.name,
            primary_key: r.primary_key,
            enabled_at: r.enabled_at,
            status: r.status,
        })
        .collect())
}
