//! Abuse limits of auth: failed sign-ins per account and per client address, email sign-ups
//! and anonymous sign-ins per client address, mails per recipient, per account and per
//! client, and wrong one-time codes per address. Every attempt first reserves a slot on each
//! of its counters in one atomic database statement (`store::auth_limits`), before any
//! password is hashed; the counters are in Postgres, so several instances share them.
//! A sign-in or code that turns out right gives its slots back: the limits count failures
//! (and attempts still in flight, which is what makes a concurrent burst unable to pass).

use std::{net::IpAddr, time::Duration};

use uuid::Uuid;

use crate::store::{auth_limits::LimitKey, Store, StoreError};

const HOUR: Duration = Duration::from_secs(3600);

pub use crate::config::{Limits, SignUpLimits};

/// Why an attempt may not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("rate limited")]
    Limited(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A reserved attempt that can be given back when it turns out not to count.
#[derive(Debug)]
#[must_use]
pub struct Reservation {
    keys: Vec<String>,
}

#[derive(Debug)]
pub struct Limiter {
    store: Store,
    signin: Limits,
    signup: SignUpLimits,
}

impl Limiter {
    pub fn new(store: Store, signin: Limits, signup: SignUpLimits) -> Limiter {
        Limiter {
            store,
            signin,
            signup,
        }
    }

    /// A password attempt on `account` (an email) from `address`.
    pub async fn sign_in(&self, account: &str, address: IpAddr) -> Result<Reservation, LimitError> {
        self.reserve(vec![
            key(
                "signin:account",
                &normalize(account),
                self.signin.per_account,
                self.signin.window,
            ),
            key(
                "signin:address",
                &address_key(address),
                self.signin.per_address,
                self.signin.window,
            ),
        ])
        .await
    }

    /// A one-time code tried for `email` from `address` (counted like sign-in failures).
    pub async fn code(&self, email: &str, address: IpAddr) -> Result<Reservation, LimitError> {
        self.reserve(vec![
            key(
                "code:account",
                &normalize(email),
                self.signin.per_account,
                self.signin.window,
            ),
            key(
                "code:address",
                &address_key(address),
                self.signin.per_address,
                self.signin.window,
            ),
        ])
        .await
    }

    /// An email sign-up from `address`.
    pub async fn email_sign_up(&self, address: IpAddr) -> Result<(), LimitError> {
        self.reserve(vec![key(
            "signup:address",
            &address_key(address),
            self.signup.email_per_address,
            HOUR,
        )])
        .await
        .map(drop)
    }

    /// An anonymous sign-in from `address`.
    pub async fn anonymous_sign_up(&self, address: IpAddr) -> Result<(), LimitError> {
        self.reserve(vec![key(
            "anonymous:address",
            &address_key(address),
            self.signup.anonymous_per_address,
            HOUR,
        )])
        .await
        .map(drop)
    }

    /// A request from `address` that may send mail to `recipient` (and concerns `account`
    /// when the caller is signed in). Counted whether or not a mail is then sent, so the
    /// answer does not depend on whether the address has an account.
    pub async fn mail(
        &self,
        recipient: &str,
        account: Option<Uuid>,
        address: IpAddr,
    ) -> Result<(), LimitError> {
        let mut keys = vec![
            key(
                "mail:recipient",
                &normalize(recipient),
                self.signup.mail_per_recipient,
                HOUR,
            ),
            key(
                "mail:address",
                &address_key(address),
                self.signup.mail_per_address,
                HOUR,
            ),
        ];
        if let Some(id) = account {
            keys.push(key(
                "mail:account",
                &id.to_string(),
                self.signup.mail_per_recipient,
                HOUR,
            ));
        }
        self.reserve(keys).await.map(drop)
    }

    /// Give a reservation back.
    pub async fn release(&self, reservation: Reservation) -> Result<(), StoreError> {
        let keys: Vec<&str> = reservation.keys.iter().map(String::as_str).collect();
        self.store.release_auth_attempt(&keys).await
    }

    async fn reserve(&self, keys: Vec<LimitKey>) -> Result<Reservation, LimitError> {
        match self.store.reserve_auth_attempt(&keys).await? {
            None => Ok(Reservation {
                keys: keys.into_iter().map(|k| k.key).collect(),
            }),
            Some(wait) => Err(LimitError::Limited(wait)),
        }
    }
}

fn key(kind: &str, id: &str, limit: u32, window: Duration) -> LimitKey {
    LimitKey {
        key: format!("{kind}:{id}"),
        limit,
        window,
    }
}

fn normalize(account: &str) -> String {
    account.trim().to_lowercase()
}

/// The counter for a client address. An IPv6 client usually holds a whole /64, so its
/// addresses count together.
fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(address_key(mapped), "203.0.113.7");
        assert_eq!(normalize(" A@B.io "), "a@b.io");
    }
}
