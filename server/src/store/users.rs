//! SQL for auth: users, sessions and their rotating refresh tokens, and external-provider
//! identities. These run as the server's own login role (the tables are not granted to
//! request roles); the rules about when to call them live in `auth::service`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Store, StoreError};

/// A user as stored, without the password hash.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub email: Option<String>,
    pub is_anonymous: bool,
    pub app_metadata: Value,
    pub user_metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// When the user proved they receive mail at `email`.
    pub email_confirmed_at: Option<DateTime<Utc>>,
}

const USER_COLUMNS: &str = "id, email, is_anonymous, app_metadata, user_metadata, created_at, \
                            updated_at, last_sign_in_at, email_confirmed_at";

impl UserRow {
    fn from_row(row: &Row) -> UserRow {
        UserRow {
            id: row.get("id"),
            email: row.get("email"),
            is_anonymous: row.get("is_anonymous"),
            app_metadata: row.get("app_metadata"),
            user_metadata: row.get("user_metadata"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            last_sign_in_at: row.get("last_sign_in_at"),
            email_confirmed_at: row.get("email_confirmed_at"),
        }
    }
}

/// A new user's fields.
#[derive(Debug, Default)]
pub struct NewUser<'a> {
    pub id: Option<Uuid>,
    pub email: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    pub is_anonymous: bool,
    pub app_metadata: Option<&'a Value>,
    pub user_metadata: Option<&'a Value>,
    /// Whether the email counts as confirmed from the start.
    pub email_confirmed: bool,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserChanges<'a> {
    pub email: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    pub app_metadata: Option<&'a Value>,
    pub user_metadata: Option<&'a Value>,
    /// A new email counts as confirmed (set without a confirmation mail).
    pub email_confirmed: bool,
}

/// The outcome of exchanging a refresh token. Reuse is not an error of the store: the
/// revocation it causes must commit.
#[derive(Debug)]
pub enum Rotation {
    /// Exchanged: the session continues with the new token.
    Rotated { session_id: Uuid, user: UserRow },
    /// Not a token we issued, or its session was revoked, signed out or expired.
    Invalid,
    /// The token had been exchanged before: its whole session was revoked just now.
    Reused { session_id: Uuid },
}

/// Postgres' unique_violation, e.g. an email already taken.
pub fn is_unique_violation(e: &StoreError) -> bool {
    e.sqlstate() == Some("23505")
}

impl Store {
    pub async fn create_user(&self, new: &NewUser<'_>) -> Result<UserRow, StoreError> {
        let client = self.client().await?;
        let empty = Value::Object(Default::default());
        let row = client
            .query_one(
                &format!(
                    "insert into rowcast.users \
                       (id, email, password_hash, is_anonymous, app_metadata, user_metadata, \
                        email_confirmed_at) \
                     values (coalesce($1, gen_random_uuid()), $2, $3, $4, $5, $6, \
                             case when $7 and $2::text is not null then now() end) \
                     returning {USER_COLUMNS}"
                ),
                &[
                    &new.id,
                    &new.email,
                    &new.password_hash,
                    &new.is_anonymous,
                    new.app_metadata.unwrap_or(&empty),
                    new.user_metadata.unwrap_or(&empty),
                    &new.email_confirmed,
                ],
            )
            .await?;
        Ok(UserRow::from_row(&row))
    }

    /// The user with this email (any case) and their password hash.
    pub async fn user_by_email(
        &self,
        email: &str,
    ) -> Result<Option<(UserRow, Option<String>)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "select {USER_COLUMNS}, password_hash from rowcast.users \
                     where lower(email) = lower($1)"
                ),
                &[&email],
            )
            .await?;
        Ok(row.map(|r| (UserRow::from_row(&r), r.get("password_hash"))))
    }

    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRow>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("select {USER_COLUMNS} from rowcast.users where id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(UserRow::from_row))
    }

    /// A page of users, oldest first, and the total count.
    pub async fn list_users(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<UserRow>, i64), StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "select {USER_COLUMNS} from rowcast.users \
                     order by created_at, id limit $1 offset $2"
                ),
                &[&limit, &offset],
            )
            .await?;
        let total: i64 = client
            .query_one("select count(*) from rowcast.users", &[])
            .await?
            .get(0);
        Ok((rows.iter().map(UserRow::from_row).collect(), total))
    }

    /// Apply `changes`; a user who now has both an email and a password is no longer
    /// anonymous. `None` when there is no such user.
    pub async fn update_user(
        &self,
        id: Uuid,
        changes: &UserChanges<'_>,
    ) -> Result<Option<UserRow>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "update rowcast.users set \
                       email_confirmed_at = case when $2::text is null \
                         or lower($2) = lower(coalesce(email, '')) then email_confirmed_at \
                         when $6 then now() end, \
                       email = coalesce($2, email), \
                       password_hash = coalesce($3, password_hash), \
                       app_metadata = coalesce($4, app_metadata), \
                       user_metadata = coalesce($5, user_metadata), \
                       is_anonymous = is_anonymous and not \
                         (coalesce($2, email) is not null and coalesce($3, password_hash) is not null), \
                       updated_at = now() \
                     where id = $1 returning {USER_COLUMNS}"
                ),
                &[
                    &id,
                    &changes.email,
                    &changes.password_hash,
                    &changes.app_metadata,
                    &changes.user_metadata,
                    &changes.email_confirmed,
                ],
            )
            .await?;
        Ok(row.as_ref().map(UserRow::from_row))
    }

    /// Mark `email` confirmed for the user, if it is still their address. `None` when the
    /// user is gone or has another address now.
    pub async fn confirm_email(
        &self,
        id: Uuid,
        email: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "update rowcast.users set \
                       email_confirmed_at = coalesce(email_confirmed_at, now()), \
                       updated_at = now() \
                     where id = $1 and lower(email) = lower($2) returning {USER_COLUMNS}"
                ),
                &[&id, &email],
            )
            .await?;
        Ok(row.as_ref().map(UserRow::from_row))
    }

    /// Ids of anonymous users with no sign-in, refresh or creation within `idle`, oldest
    /// first, at most `limit`.
    pub async fn idle_anonymous_users(
        &self,
        idle: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<Uuid>, StoreError> {
        let client = self.client().await?;
        let idle_secs = idle.as_secs_f64();
        let rows = client
            .query(
                "select u.id from rowcast.users u \
                 where u.is_anonymous \
                   and greatest(u.created_at, coalesce(u.last_sign_in_at, u.created_at)) \
                       < now() - make_interval(secs => $1) \
                   and not exists (select 1 from rowcast.sessions s where s.user_id = u.id \
                       and coalesce(s.refreshed_at, s.created_at) >= now() - make_interval(secs => $1)) \
                 order by u.created_at limit $2",
                &[&idle_secs, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Delete a user with their sessions and identities. False when there was none.
    pub async fn delete_user(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute("delete from rowcast.users where id = $1", &[&id])
            .await?
            == 1)
    }

    /// Start a session for `user_id` with its first refresh token; stamps the sign-in.
    pub async fn create_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        refresh_hash: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "insert into rowcast.sessions (id, user_id, expires_at) values ($1, $2, $3)",
            &[&session_id, &user_id, &expires_at],
        )
        .await?;
        tx.execute(
            "insert into rowcast.refresh_tokens (token_hash, session_id) values ($1, $2)",
            &[&refresh_hash, &session_id],
        )
        .await?;
        tx.execute(
            "update rowcast.users set last_sign_in_at = now() where id = $1",
            &[&user_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Exchange the refresh token hashed as `old_hash` for the one hashed as `new_hash`.
    /// A token that was exchanged before revokes its session (the family) and is refused.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
    ) -> Result<Rotation, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row lock serializes concurrent exchanges of one token: exactly one wins.
        let found = tx
            .query_opt(
                "select t.session_id, t.used_at is not null as used, \
                        s.revoked_at is null and s.expires_at > now() as live, s.user_id \
                 from rowcast.refresh_tokens t join rowcast.sessions s on s.id = t.session_id \
                 where t.token_hash = $1 for update of t, s",
                &[&old_hash],
            )
            .await?;
        let Some(found) = found else {
            return Ok(Rotation::Invalid);
        };
        let session_id: Uuid = found.get("session_id");
        let used: bool = found.get("used");
        let live: bool = found.get("live");
        let user_id: Uuid = found.get("user_id");
        if used {
            tx.execute(
                "update rowcast.sessions set revoked_at = coalesce(revoked_at, now()) where id = $1",
                &[&session_id],
            )
            .await?;
            tx.commit().await?;
            return Ok(Rotation::Reused { session_id });
        }
        if !live {
            return Ok(Rotation::Invalid);
        }
        tx.execute(
            "update rowcast.refresh_tokens set used_at = now() where token_hash = $1",
            &[&old_hash],
        )
        .await?;
        tx.execute(
            "insert into rowcast.refresh_tokens (token_hash, session_id) values ($1, $2)",
            &[&new_hash, &session_id],
        )
        .await?;
        tx.execute(
            "update rowcast.sessions set refreshed_at = now() where id = $1",
            &[&session_id],
        )
        .await?;
        let user = tx
            .query_opt(
                &format!("select {USER_COLUMNS} from rowcast.users where id = $1"),
                &[&user_id],
            )
            .await?;
        let Some(user) = user else {
            return Ok(Rotation::Invalid);
        };
        tx.commit().await?;
        Ok(Rotation::Rotated {
            session_id,
            user: UserRow::from_row(&user),
        })
    }

    /// Revoke one session of `user_id`.
    pub async fn revoke_session(&self, user_id: Uuid, session_id: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "update rowcast.sessions set revoked_at = coalesce(revoked_at, now()) \
                 where id = $1 and user_id = $2",
                &[&session_id, &user_id],
            )
            .await?;
        Ok(())
    }

    /// Revoke every session of `user_id`, except `keep` if given.
    pub async fn revoke_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "update rowcast.sessions set revoked_at = coalesce(revoked_at, now()) \
                 where user_id = $1 and ($2::uuid is null or id <> $2)",
                &[&user_id, &keep],
            )
            .await?;
        Ok(())
    }

    /// Make sure an external provider's subject has its user row and identity link.
    /// Idempotent and safe to race.
    pub async fn ensure_external_user(
        &self,
        user_id: Uuid,
        issuer: &str,
        subject: &str,
        email: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The email is informational; if another user already has it, keep the row without.
        let inserted = tx
            .execute(
                "insert into rowcast.users (id, email) \
                 select $1::uuid, $2::text where not exists \
                   (select 1 from rowcast.users where lower(email) = lower($2)) \
                 on conflict do nothing",
                &[&user_id, &email],
            )
            .await?;
        if inserted == 0 {
            tx.execute(
                "insert into rowcast.users (id) values ($1) on conflict do nothing",
                &[&user_id],
            )
            .await?;
        }
        tx.execute(
            "insert into rowcast.identities (issuer, subject, user_id) values ($1, $2, $3) \
             on conflict do nothing",
            &[&issuer, &subject, &user_id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
