//! Access tokens: verifying a bearer JWT into an [`Identity`], and signing our own.
//!
//! Every rejection is the same [`TokenError::Invalid`], so a caller learns nothing about
//! which check failed (the reason is logged at debug level only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use super::{Identity, Role};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid or expired token")]
    Invalid,
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// Signs and verifies the server's own HS256 access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> TokenKeys {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        }
    }

    /// Verify signature, algorithm, expiry, issuer and audience; map the claims to an identity.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        let data =
            jsonwebtoken::decode::<Value>(token, &self.decoding, &validation).map_err(|e| {
                tracing::debug!(reason = %e, "rejected access token");
                TokenError::Invalid
            })?;
        identity_from_claims(data.claims)
    }

    /// Sign an access token for `identity`, valid for `ttl`.
    pub fn sign(&self, identity: &Identity, ttl: Duration) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| TokenError::Signing(e.to_string()))?
            .as_secs();
        let mut claims = match &identity.claims {
            Value::Object(m) => m.clone(),
            _ => Default::default(),
        };
        claims.insert("role".into(), identity.role.claim().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + ttl.as_secs()).into());
        claims.insert("iss".into(), self.issuer.clone().into());
        claims.insert("aud".into(), self.audience.clone().into());
        claims
            .entry("sub")
            .or_insert_with(|| identity.role.claim().into());
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Value::Object(claims),
            &self.encoding,
        )
        .map_err(|e| TokenError::Signing(e.to_string()))
    }
}

/// The identity a verified claim set stands for. The role claim picks the Postgres role;
/// anything else in the token is carried along for policies (`rowcast.claims()`).
pub fn identity_from_claims(claims: Value) -> Result<Identity, TokenError> {
    let role = match claims.get("role").and_then(Value::as_str) {
        Some("authenticated") | None => Role::Authenticated,
        Some("anon") => Role::Anon,
        Some("service") => Role::Service,
        Some(_) => return Err(TokenError::Invalid),
    };
    if role == Role::Authenticated {
        // Policies compare rowcast.uid() (a uuid) with row columns.
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(TokenError::Invalid)?;
        if uuid::Uuid::parse_str(sub).is_err() {
            return Err(TokenError::Invalid);
        }
    }
    Ok(Identity { role, claims })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let keys = TokenKeys::hs256(b"a-test-secret-of-enough-length!!", "rowcast", "rowcast");
        let uid = uuid::Uuid::new_v4().to_string();
        let who = Identity::user(&uid, serde_json::json!({"team": "a"}));
        let token = keys.sign(&who, Duration::from_secs(60)).unwrap();
        let back = keys.verify(&token).unwrap();
        assert_eq!(back.role, Role::Authenticated);
        assert_eq!(back.subject(), Some(uid.as_str()));
        assert_eq!(back.claims["team"], "a");

        let other = TokenKeys::hs256(b"another-secret-of-enough-length!", "rowcast", "rowcast");
        assert!(other.verify(&token).is_err(), "wrong key accepted");
        let wrong_aud = TokenKeys::hs256(b"a-test-secret-of-enough-length!!", "rowcast", "else");
        assert!(wrong_aud.verify(&token).is_err(), "wrong audience accepted");
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(keys.verify(&tampered).is_err(), "tampered token accepted");
    }
}
