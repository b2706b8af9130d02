//! SQL for one-time email tokens (sign-up confirmation, recovery, magic link / code, email
//! change): issuing one (which retires the user's earlier ones of that kind), spending one in
//! the single statement that accepts it, and pruning old ones. Only hashes are stored; the
//! secrets and their rules live in `auth::email_token`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};

/// A token as issued.
#[derive(Debug)]
pub struct NewEmailToken<'a> {
    pub link_hash: &'a [u8],
    pub code_hash: &'a [u8],
    pub kind: &'a str,
    pub user_id: Uuid,
    pub email: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// A token that was just spent.
#[derive(Debug, Clone)]
pub struct SpentEmailToken {
    pub kind: String,
    pub user_id: Uuid,
    pub email: String,
}

/// How a token is presented: the link's secret, or the address and the code.
#[derive(Debug, Clone, Copy)]
pub enum TokenProof<'a> {
    Link(&'a [u8]),
    Code(&'a [u8]),
}

impl Store {
    /// Store a new token; the user's earlier unspent tokens of the same kind stop working.
    pub async fn issue_email_token(&self, token: &NewEmailToken<'_>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "update rowcast.email_tokens set used_at = now() \
             where user_id = $1 and kind = $2 and used_at is null",
            &[&token.user_id, &token.kind],
        )
        .await?;
        tx.execute(
            "insert into rowcast.email_tokens \
               (link_hash, code_hash, kind, user_id, email, expires_at) \
             values ($1, $2, $3, $4, $5, $6)",
            &[
                &token.link_hash,
                &token.code_hash,
                &token.kind,
                &token.user_id,
                &token.email,
                &token.expires_at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Spend a live token of one of `kinds`. The `used_at is null` condition is re-checked
    /// under the row lock, so of concurrent attempts with one token exactly one succeeds.
    /// `None`: no such token, or it expired or was spent.
    pub async fn spend_email_token(
        &self,
        proof: TokenProof<'_>,
        kinds: &[&str],
    ) -> Result<Option<SpentEmailToken>, StoreError> {
        let client = self.client().await?;
        let (column, hash) = match proof {
            TokenProof::Link(h) => ("link_hash", h),
            TokenProof::Code(h) => ("code_hash", h),
        };
        // `column` is one of two fixed names above, never client input.
        let row = client
            .query_opt(
                &format!(
                    "update rowcast.email_tokens set used_at = now() \
                     where link_hash = (select link_hash from rowcast.email_tokens \
                                         where {column} = $1 and kind = any($2) \
                                           and used_at is null and expires_at > now() \
                                         order by created_at desc limit 1) \
                       and used_at is null and expires_at > now() \
                     returning kind, user_id, email"
                ),
                &[&hash, &kinds],
            )
            .await?;
        Ok(row.map(|r| SpentEmailToken {
            kind: r.get("kind"),
            user_id: r.get("user_id"),
            email: r.get("email"),
        }))
    }

    /// Delete tokens that expired or were spent more than a day ago.
    pub async fn prune_email_tokens(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "delete from rowcast.email_tokens \
                 where expires_at < now() - interval '1 day' \
                    or used_at < now() - interval '1 day'",
                &[],
            )
            .await?)
    }
}
