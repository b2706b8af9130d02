//! The identity a transaction takes on, as plain data: the Postgres role to switch to and
//! the verified claims `rowcast.uid()` and policies read. `auth` builds it from a verified
//! token; `store` only sets it.

/// Who a transaction runs as.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionIdentity {
    /// A Postgres role name (one of the three API roles).
    pub role: String,
    /// The verified claims, bound as JSON text into `rowcast.claims`.
    pub claims: serde_json::Value,
}

impl SessionIdentity {
    pub fn new(role: impl Into<String>, claims: serde_json::Value) -> SessionIdentity {
        SessionIdentity {
            role: role.into(),
            claims,
        }
    }
}
