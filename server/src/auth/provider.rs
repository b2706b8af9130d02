//! External identity providers (Firebase Auth, Auth0, Keycloak, Supabase, …): verifying
//! their access tokens against configured public keys, and mapping their subjects to
//! internal user ids.
//!
//! Each key's algorithm is pinned by its type (RSA → RS256 unless the JWK names another RSA
//! algorithm, EC P-256 → ES256, …): a token whose header names another algorithm is refused,
//! so `none` and "HS256 signed with the public key" never verify. Symmetric keys are refused
//! at configuration time.

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
    Algorithm, DecodingKey, Header, Validation,
};
use serde_json::Value;
use uuid::Uuid;

use super::token::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {0}: {1}")]
    Invalid(String, String),
}

/// One configured provider.
#[derive(Clone)]
pub struct ExternalProvider {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    keys: Vec<ProviderKey>,
}

#[derive(Clone)]
struct ProviderKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for ExternalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalProvider")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The verifying providers of `ROWCAST_AUTH_PROVIDERS`; refuses any whose JWKS holds no
/// usable public key.
pub fn from_config(
    providers: &[crate::config::ProviderConfig],
) -> Result<Vec<ExternalProvider>, ProviderError> {
    providers
        .iter()
        .map(|p| ExternalProvider::from_jwks(&p.name, &p.issuer, &p.audience, &p.jwks))
        .collect()
}

impl ExternalProvider {
    /// A provider from its issuer, audience and JWKS document (`{"keys": [...]}`).
    pub fn from_jwks(
        name: &str,
        issuer: &str,
        audience: &str,
        jwks: &Value,
    ) -> Result<ExternalProvider, ProviderError> {
        let invalid = |why: String| ProviderError::Invalid(name.to_string(), why);
        if issuer.is_empty() || audience.is_empty() {
            return Err(invalid("issuer and audience are required".into()));
        }
        let set: JwkSet = serde_json::from_value(jwks.clone())
            .map_err(|e| invalid(format!("not a JWKS document ({e})")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let alg =
                pinned_algorithm(&jwk.algorithm, jwk.common.key_algorithm).ok_or_else(|| {
                    invalid(
                        "only RSA, EC (P-256/P-384) and Ed25519 public keys are accepted".into(),
                    )
                })?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("bad key ({e})")))?;
            keys.push(ProviderKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(invalid("the JWKS has no keys".into()));
        }
        Ok(ExternalProvider {
            name: name.to_string(),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            keys,
        })
    }

    /// Verify `token` (whose header is `header`) with this provider's keys, issuer and
    /// audience; the verified claims.
    pub(crate) fn verify(&self, token: &str, header: &Header) -> Result<Value, TokenError> {
        let candidates = self.keys.iter().filter(|k| {
            k.alg == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        });
        for key in candidates {
            let mut validation = Validation::new(key.alg);
            validation.algorithms = vec![key.alg];
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = 5;
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    tracing::debug!(provider = %self.name, reason = %e, "rejected provider token")
                }
            }
        }
        Err(TokenError::Invalid)
    }
}

/// The algorithm a public key may verify; `None` for keys a provider must not use.
fn pinned_algorithm(
    params: &AlgorithmParameters,
    named: Option<KeyAlgorithm>,
) -> Option<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => Some(match named {
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            Some(KeyAlgorithm::PS256) => Algorithm::PS256,
            Some(KeyAlgorithm::PS384) => Algorithm::PS384,
            Some(KeyAlgorithm::PS512) => Algorithm::PS512,
            _ => Algorithm::RS256,
        }),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

/// The internal user id for a provider's subject: a UUID derived from the issuer and the
/// subject, so it is the same on every instance and needs no lookup to verify a token.
pub fn external_user_id(issuer: &str, subject: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"rowcast-external-identity\0");
    hasher.update(issuer.as_bytes());
    hasher.update(b"\0");
    hasher.update(subject.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // RFC 9562 version 8 (custom) UUID.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_stable_and_distinct() {
        let a = external_user_id("https://securetoken.google.com/p", "uid1");
        assert_eq!(
            a,
            external_user_id("https://securetoken.google.com/p", "uid1")
        );
        assert_ne!(
            a,
            external_user_id("https://securetoken.google.com/p", "uid2")
        );
        assert_ne!(a, external_user_id("https://other", "uid1"));
        assert_eq!(a.get_version_num(), 8);
    }

    #[test]
    fn symmetric_keys_are_refused() {
        let jwks = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(ExternalProvider::from_jwks("x", "iss", "aud", &jwks).is_err());
        assert!(
            ExternalProvider::from_jwks("x", "iss", "aud", &serde_json::json!({"keys": []}))
                .is_err()
        );
    }
}
