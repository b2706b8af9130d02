//! SQL for the abuse limits of auth: reserving one attempt against several counters in one
//! statement (`rowcast.reserve_auth_attempt`), giving a reservation back, and pruning
//! finished windows. The counters live in Postgres so that every instance on the database
//! enforces the same limits; which keys and limits apply is decided in `auth::limiter`.

use std::time::Duration;

use super::{Store, StoreError};

/// One counter an attempt is charged to.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitKey {
    pub key: String,
    pub limit: u32,
    pub window: Duration,
}

impl Store {
    /// Reserve one attempt on every key, or none: `Ok(None)` when reserved, `Ok(Some(wait))`
    /// when some key is used up for `wait`.
    pub async fn reserve_auth_attempt(
        &self,
        keys: &[LimitKey],
    ) -> Result<Option<Duration>, StoreError> {
        let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        let limits: Vec<i32> = keys
            .iter()
            .map(|k| i32::try_from(k.limit).unwrap_or(i32::MAX))
            .collect();
        let windows: Vec<f64> = keys.iter().map(|k| k.window.as_secs_f64()).collect();
        let client = self.client().await?;
        let wait: f64 = client
            .query_one(
                "select rowcast.reserve_auth_attempt($1, $2, $3)",
                &[&names, &limits, &windows],
            )
            .await?
            .get(0);
        if wait > 0.0 && wait.is_finite() {
            Ok(Some(Duration::from_secs_f64(wait)))
        } else {
            Ok(None)
        }
    }

    /// Give back one reserved attempt on each key (the attempt turned out not to count, e.g.
    /// a sign-in that succeeded).
    pub async fn release_auth_attempt(&self, keys: &[&str]) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "update rowcast.auth_limits set count = greatest(count - 1, 0) \
                 where key = any($1) and window_end > now()",
                &[&keys],
            )
            .await?;
        Ok(())
    }

    /// Delete counters whose window has ended. Returns how many.
    pub async fn prune_auth_limits(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "delete from rowcast.auth_limits where window_end < now()",
                &[],
            )
            .await?)
    }
}
