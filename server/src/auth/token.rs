//! Access tokens: verifying a bearer JWT into an [`Identity`] (the server's own tokens and
//! those of configured external providers), signing our own, and publishing our public key.
//!
//! Every rejection is the same [`TokenError::Invalid`], so a caller learns nothing about
//! which check failed (the reason is logged at debug level only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use super::{provider::ExternalProvider, Identity, Role};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid or expired token")]
    Invalid,
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// Why a configured signing key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

pub use crate::config::SigningAlgorithm;

impl SigningAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::Hs256 => Algorithm::HS256,
            SigningAlgorithm::Rs256 => Algorithm::RS256,
            SigningAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

/// Claims whose meaning the server defines; an external provider cannot set them.
const RESERVED_FOR_PROVIDER_TOKENS: &[&str] = &["role", "provider", "provider_iss", "provider_sub"];

/// Signs the server's tokens and verifies bearer tokens (ours and external providers').
#[derive(Clone)]
pub struct TokenKeys {
    alg: Algorithm,
    kid: Option<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Our public key as a JWK (`None` for HS256, whose key is secret).
    public_jwk: Option<Value>,
    issuer: String,
    audience: String,
    providers: Vec<ExternalProvider>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TokenKeys")
            .field("alg", &self.alg)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> TokenKeys {
        TokenKeys {
            alg: Algorithm::HS256,
            kid: None,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            public_jwk: None,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            providers: Vec::new(),
        }
    }

    /// Keys for RS256 or ES256 from a PKCS#8 PEM private key (RSA keys may also be PKCS#1).
    pub fn asymmetric(
        alg: SigningAlgorithm,
        private_pem: &[u8],
        issuer: &str,
        audience: &str,
    ) -> Result<TokenKeys, KeyError> {
        let (encoding, jwk) = match alg {
            SigningAlgorithm::Hs256 => {
                return Err(KeyError("HS256 uses a secret, not a key pair".into()))
            }
            SigningAlgorithm::Rs256 => {
                let encoding = EncodingKey::from_rsa_pem(private_pem)
                    .map_err(|e| KeyError(format!("not an RSA private key in PEM ({e})")))?;
                (encoding, public_rsa_jwk(private_pem)?)
            }
            SigningAlgorithm::Es256 => {
                let encoding = EncodingKey::from_ec_pem(private_pem).map_err(|e| {
                    KeyError(format!("not a P-256 private key in PKCS#8 PEM ({e})"))
                })?;
                (encoding, public_ec_jwk(private_pem)?)
            }
        };
        let decoding = DecodingKey::from_jwk(
            &serde_json::from_value(jwk.clone()).map_err(|e| KeyError(e.to_string()))?,
        )
        .map_err(|e| KeyError(e.to_string()))?;
        let kid = jwk_thumbprint(&jwk);
        let mut public_jwk = jwk;
        public_jwk["kid"] = json!(kid);
        public_jwk["use"] = json!("sig");
        public_jwk["alg"] = json!(format!("{:?}", alg.jwt()));
        Ok(TokenKeys {
            alg: alg.jwt(),
            kid: Some(kid),
            encoding,
            decoding,
            public_jwk: Some(public_jwk),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            providers: Vec::new(),
        })
    }

    /// Also accept tokens from these external providers.
    pub fn with_providers(mut self, providers: Vec<ExternalProvider>) -> TokenKeys {
        self.providers = providers;
        self
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The JWKS document of our public keys (empty for HS256).
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.public_jwk.iter().collect::<Vec<_>>() })
    }

    /// Verify signature, algorithm, expiry, issuer and audience; map the claims to an
    /// identity. Tokens whose `iss` is a configured provider's are verified with that
    /// provider's keys and map to an internal user (see [`super::provider`]).
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            tracing::debug!(reason = %e, "rejected access token header");
            TokenError::Invalid
        })?;
        // The unverified issuer only picks which keys to verify with.
        let issuer = unverified_issuer(token).ok_or(TokenError::Invalid)?;
        if issuer != self.issuer {
            if let Some(provider) = self.providers.iter().find(|p| p.issuer == issuer) {
                let claims = provider.verify(token, &header)?;
                return provider_identity(provider, claims);
            }
        }
        let mut validation = Validation::new(self.alg);
        validation.algorithms = vec![self.alg];
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
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &Value::Object(claims), &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }
}

/// The `iss` of a token's payload, read without verifying anything.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

/// The identity of a verified provider token: always `authenticated`, with the internal
/// user id as `sub` and the provider's own subject kept in `provider_sub`.
fn provider_identity(provider: &ExternalProvider, claims: Value) -> Result<Identity, TokenError> {
    let Value::Object(mut claims) = claims else {
        return Err(TokenError::Invalid);
    };
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::Invalid)?
        .to_string();
    for reserved in RESERVED_FOR_PROVIDER_TOKENS {
        claims.remove(*reserved);
    }
    let user_id = super::provider::external_user_id(&provider.issuer, &subject);
    claims.insert("sub".into(), user_id.to_string().into());
    claims.insert("provider".into(), provider.name.clone().into());
    claims.insert("provider_iss".into(), provider.issuer.clone().into());
    claims.insert("provider_sub".into(), subject.into());
    claims.insert("role".into(), Role::Authenticated.claim().into());
    Ok(Identity {
        role: Role::Authenticated,
        claims: Value::Object(claims),
    })
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

fn pem_der(pem_text: &[u8]) -> Result<pem::Pem, KeyError> {
    pem::parse(pem_text).map_err(|e| KeyError(format!("not a PEM file ({e})")))
}

/// The public half of an RSA private key, as a JWK.
pub fn public_rsa_jwk(private_pem: &[u8]) -> Result<Value, KeyError> {
    let pem = pem_der(private_pem)?;
    let pair = match pem.tag() {
        "PRIVATE KEY" => ring::rsa::KeyPair::from_pkcs8(pem.contents()),
        "RSA PRIVATE KEY" => ring::rsa::KeyPair::from_der(pem.contents()),
        other => return Err(KeyError(format!("expected a PRIVATE KEY PEM, got {other}"))),
    }
    .map_err(|e| KeyError(format!("not a usable RSA private key ({e})")))?;
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok(json!({
        "kty": "RSA",
        "n": URL_SAFE_NO_PAD.encode(&public.n),
        "e": URL_SAFE_NO_PAD.encode(&public.e),
    }))
}

/// The public half of a P-256 private key, as a JWK.
pub fn public_ec_jwk(private_pem: &[u8]) -> Result<Value, KeyError> {
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    let pem = pem_der(private_pem)?;
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pem.contents(), &rng)
        .map_err(|e| KeyError(format!("not a P-256 private key in PKCS#8 ({e})")))?;
    let point = pair.public_key().as_ref();
    // Uncompressed SEC1 point: 0x04 || x || y.
    if point.len() != 65 || point[0] != 4 {
        return Err(KeyError("unexpected EC public key encoding".into()));
    }
    Ok(json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }))
}

/// RFC 7638 thumbprint of a public JWK, used as its `kid`.
fn jwk_thumbprint(jwk: &Value) -> String {
    use sha2::{Digest, Sha256};
    let canonical = match jwk["kty"].as_str() {
        Some("RSA") => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, jwk["e"], jwk["n"]),
        _ => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            jwk["crv"], jwk["x"], jwk["y"]
        ),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
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
        assert_eq!(keys.jwks(), json!({"keys": []}));

        let other = TokenKeys::hs256(b"another-secret-of-enough-length!", "rowcast", "rowcast");
        assert!(other.verify(&token).is_err(), "wrong key accepted");
        let wrong_aud = TokenKeys::hs256(b"a-test-secret-of-enough-length!!", "rowcast", "else");
        assert!(wrong_aud.verify(&token).is_err(), "wrong audience accepted");
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(keys.verify(&tampered).is_err(), "tampered token accepted");
    }
}
