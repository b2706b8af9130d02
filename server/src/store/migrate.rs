//! Schema migrations: the server's own (embedded from `migrations/`) and the app's (read from
//! a directory at startup), applied in order under an advisory lock so that any number of
//! instances can start at once and exactly one applies each migration.
//!
//! Each migration runs in its own transaction and is recorded with a SHA-256 checksum; an
//! applied migration whose text changed is refused rather than silently diverging.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Store, StoreError};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// Arbitrary but fixed: "rowcast" in ASCII. Shared by every instance and release.
const MIGRATION_LOCK: i64 = 0x0072_6f77_6361_7374;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Rowcast's own schema, embedded in the binary.
    Server,
    /// The team's tables, policies and sync settings, from `ROWCAST_APP_MIGRATIONS`.
    App,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Server => "server",
            Source::App => "app",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Migration {
    pub source: Source,
    pub version: i64,
    pub name: String,
    pub sql: String,
    pub checksum: String,
}

impl Migration {
    fn new(source: Source, file_name: &str, sql: String) -> Result<Migration, StoreError> {
        let invalid = |reason: &str| StoreError::Migration {
            name: format!("{}/{}", source.as_str(), file_name),
            reason: reason.to_string(),
        };
        let stem = file_name
            .strip_suffix(".sql")
            .ok_or_else(|| invalid("file name must end in .sql"))?;
        let (num, _) = stem
            .split_once('_')
            .ok_or_else(|| invalid("file name must look like 0001_description.sql"))?;
        let version: i64 = num.parse().map_err(|_| {
            invalid("file name must start with a number, like 0001_description.sql")
        })?;
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        Ok(Migration {
            source,
            version,
            name: file_name.to_string(),
            sql,
            checksum,
        })
    }

    pub fn label(&self) -> String {
        format!("{}/{}", self.source.as_str(), self.name)
    }
}

/// The server's own migrations, in order.
pub fn server_migrations() -> Vec<Migration> {
    embedded::EMBEDDED
        .iter()
        .map(|(name, sql)| {
            // The build script only embeds well-named files; a bad name is a build defect.
            Migration::new(Source::Server, name, (*sql).to_string())
                .unwrap_or_else(|e| panic!("embedded migration has a bad name: {e}"))
        })
        .collect()
}

/// The app's migrations from `dir`: every `NNNN_name.sql`, ordered by number.
pub fn app_migrations(dir: &Path) -> Result<Vec<Migration>, StoreError> {
    let io = |e: std::io::Error| StoreError::Migration {
        name: dir.display().to_string(),
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StoreError::Migration {
                name: path.display().to_string(),
                reason: "file name is not UTF-8".into(),
            })?
            .to_string();
        let sql = std::fs::read_to_string(&path).map_err(io)?;
        out.push(Migration::new(Source::App, &name, sql)?);
    }
    out.sort_by_key(|m| m.version);
    if let Some(w) = out.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(StoreError::Migration {
            name: w[1].label(),
            reason: format!("has the same number as {}", w[0].name),
        });
    }
    Ok(out)
}

/// Everything this process should apply: the server's migrations, then the app's.
pub fn all_migrations(app_dir: Option<&Path>) -> Result<Vec<Migration>, StoreError> {
    let mut all = server_migrations();
    if let Some(dir) = app_dir {
        all.extend(app_migrations(dir)?);
    }
    Ok(all)
}

/// Apply every pending migration; returns the labels of those this call applied.
///
/// Uses a dedicated connection so the session-level advisory lock is released even if
/// this process dies halfway.
pub async fn apply(
    pg_config: impl Into<super::Connector>,
    migrations: &[Migration],
) -> Result<Vec<String>, StoreError> {
    let (mut client, connection) = pg_config
        .into()
        .connect()
        .await
        .map_err(|e| StoreError::Unavailable(super::connect::describe(&e)))?;
    let conn_task = tokio::spawn(connection);
    let result = apply_locked(&mut client, migrations).await;
    drop(client);
    let _ = conn_task.await;
    result
}

async fn apply_locked(
    client: &mut tokio_postgres::Client,
    migrations: &[Migration],
) -> Result<Vec<String>, StoreError> {
    client
        .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = async {
        client
            .batch_execute(
                "create schema if not exists rowcast;
                 create table if not exists rowcast.schema_migrations (
                     source     text        not null,
                     version    bigint      not null,
                     name       text        not null,
                     checksum   text        not null,
                     applied_at timestamptz not null default now(),
                     primary key (source, version)
                 );",
            )
            .await?;
        let applied = applied(client).await?;
        verify_unchanged(migrations, &applied)?;
        let mut done = Vec::new();
        for m in migrations {
            if applied.iter().any(|a| a.0 == m.source.as_str() && a.1 == m.version) {
                continue;
            }
            let tx = client.transaction().await?;
            tx.batch_execute(&m.sql).await.map_err(|e| StoreError::Migration {
                name: m.label(),
                reason: describe_db_error(&e),
            })?;
            tx.execute(
                "insert into rowcast.schema_migrations (source, version, name, checksum) values ($1, $2, $3, $4)",
                &[&m.source.as_str(), &m.version, &m.name, &m.checksum],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(migration = %m.label(), "applied migration");
            done.push(m.label());
        }
        Ok(done)
    }
    .await;
    // Unlock even on failure; if this fails too, closing the connection releases it.
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

type AppliedRow = (String, i64, String, String);

async fn applied(client: &tokio_postgres::Client) -> Result<Vec<AppliedRow>, StoreError> {
    let rows = client
        .query(
            "select source, version, name, checksum from rowcast.schema_migrations order by source, version",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

fn verify_unchanged(migrations: &[Migration], applied: &[AppliedRow]) -> Result<(), StoreError> {
    for m in migrations {
        if let Some(a) = applied
            .iter()
            .find(|a| a.0 == m.source.as_str() && a.1 == m.version)
        {
            if a.3 != m.checksum {
                return Err(StoreError::Migration {
                    name: m.label(),
                    reason: format!(
                        "was changed after it was applied (recorded as {} with checksum {}, the file now has {}); \
                         applied migrations must not be edited: restore the file and add a new migration instead",
                        a.2,
                        &a.3[..12.min(a.3.len())],
                        &m.checksum[..12]
                    ),
                });
            }
        }
    }
    Ok(())
}

impl Store {
    /// Whether every migration in `migrations` is applied with an unchanged checksum (the
    /// readiness check).
    pub async fn migrations_current(&self, migrations: &[Migration]) -> Result<bool, StoreError> {
        let client = self.client().await?;
        is_current(&client, migrations).await
    }
}

/// Whether every migration in `migrations` is applied with an unchanged checksum.
async fn is_current(
    client: &tokio_postgres::Client,
    migrations: &[Migration],
) -> Result<bool, StoreError> {
    let exists: bool = client
        .query_one(
            "select to_regclass('rowcast.schema_migrations') is not null",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(false);
    }
    let applied = applied(client).await?;
    Ok(migrations.iter().all(|m| {
        applied
            .iter()
            .any(|a| a.0 == m.source.as_str() && a.1 == m.version && a.3 == m.checksum)
    }))
}

/// A migration's own SQL error is the operator's to read (it is their file), so unlike
/// client-facing errors it is passed on in full.
fn describe_db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            s
        }
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_migrations_are_numbered_uniquely_in_order() {
        let all = server_migrations();
        assert!(!all.is_empty());
        for w in all.windows(2) {
            assert!(w[0].version < w[1].version, "{} / {}", w[0].name, w[1].name);
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(Migration::new(Source::App, "init.sql", String::new()).is_err());
        assert!(Migration::new(Source::App, "abc_init.sql", String::new()).is_err());
        assert!(Migration::new(Source::App, "0001_init.txt", String::new()).is_err());
        let m = Migration::new(Source::App, "0007_todos.sql", "select 1".into()).expect("valid");
        assert_eq!(m.version, 7);
    }
}
