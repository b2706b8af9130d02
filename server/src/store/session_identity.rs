//! The identity a statement runs as, as plain data: the Postgres role and the verified
//! claims JSON. Domain layers (`auth::Identity`) convert into this, so `store` needs no
//! domain type to take on a caller's identity.

/// Who a transaction runs as: `role` is set as the Postgres role and `claims` as
/// `rowcast.claims`, both transaction-locally (see `SET_IDENTITY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    pub role: String,
    pub claims: String,
}
