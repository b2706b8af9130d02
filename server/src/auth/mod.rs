//! Identity: who a request or socket acts as, and the Postgres role and claims that
//! row-level security sees for it.

pub mod email_token;
pub mod hashing;
pub mod limiter;
pub mod mail;
pub mod password;
pub mod provider;
pub mod refresh;
pub mod service;
pub mod token;
/// The refused-secret rule lives with the settings it validates.
pub use crate::config::weak_secret;

use serde_json::Value;

/// The Postgres role a request runs as. The names are created by the core migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// No token: the anonymous role.
    Anon,
    /// A signed-in user (including anonymous sign-in users).
    Authenticated,
    /// The service key: bypasses row-level security, for admin tooling.
    Service,
}

impl Role {
    /// The Postgres role name; a fixed string, never taken from a client.
    pub fn pg_role(self) -> &'static str {
        match self {
            Role::Anon => "rowcast_anon",
            Role::Authenticated => "rowcast_authenticated",
            Role::Service => "rowcast_service",
        }
    }

    /// The value of the `role` claim in tokens.
    pub fn claim(self) -> &'static str {
        match self {
            Role::Anon => "anon",
            Role::Authenticated => "authenticated",
            Role::Service => "service",
        }
    }
}

/// A verified identity. Only constructed from a verified token (or as anonymous/service by
/// the server itself), never from unverified client input.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub role: Role,
    /// The verified claims; `sub` is the user's id when there is a user.
    pub claims: Value,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            role: Role::Anon,
            claims: serde_json::json!({ "role": Role::Anon.claim() }),
        }
    }

    pub fn service() -> Identity {
        Identity {
            role: Role::Service,
            claims: serde_json::json!({ "role": Role::Service.claim() }),
        }
    }

    /// A signed-in user with `sub` and any further claims.
    pub fn user(sub: &str, extra: Value) -> Identity {
        let mut claims = match extra {
            Value::Object(m) => Value::Object(m),
            _ => Value::Object(Default::default()),
        };
        claims["sub"] = Value::String(sub.to_string());
        claims["role"] = Value::String(Role::Authenticated.claim().to_string());
        Identity {
            role: Role::Authenticated,
            claims,
        }
    }

    /// The user id (`sub`), if any.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// The claims as the JSON text handed to Postgres (always bound as a parameter).
    pub fn claims_json(&self) -> String {
        self.claims.to_string()
    }
}

impl From<&Identity> for crate::store::SessionIdentity {
    fn from(who: &Identity) -> Self {
        crate::store::SessionIdentity::new(who.role.pg_role(), who.claims.clone())
    }
}
