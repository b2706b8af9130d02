//! Passwords: the rules a new password must meet, and argon2id hashing and verification
//! that costs the same whether or not the account exists.

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Algorithm, Argon2, Params, Version,
};

/// Longest accepted password in bytes: bounds the work one request can ask for.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {0} characters")]
    TooShort(usize),
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("cannot hash password: {0}")]
    Hashing(String),
}

/// The argon2id cost parameters (settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    /// OWASP's recommended argon2id minimum (19 MiB, 2 passes, 1 lane).
    fn default() -> Self {
        HashParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Hashes and verifies passwords with fixed parameters and a password policy.
#[derive(Clone)]
pub struct Passwords {
    argon: Argon2<'static>,
    min_length: usize,
    /// A hash of a random password, verified against when an account does not exist so that
    /// "no such user" takes as long as "wrong password".
    dummy_hash: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("min_length", &self.min_length)
            .finish_non_exhaustive()
    }
}

impl Passwords {
    pub fn new(params: HashParams, min_length: usize) -> Result<Passwords, PasswordError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut passwords = Passwords {
            argon,
            min_length,
            dummy_hash: String::new(),
        };
        let random = hex::encode(rand::random::<[u8; 16]>());
        passwords.dummy_hash = passwords.hash_unchecked(&random)?;
        Ok(passwords)
    }

    /// Check a new password against the policy.
    pub fn check_policy(&self, password: &str) -> Result<(), PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        if password.chars().count() < self.min_length {
            return Err(PasswordError::TooShort(self.min_length));
        }
        Ok(())
    }

    /// Check the policy and hash (PHC string format, salt included).
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.check_policy(password)?;
        self.hash_unchecked(password)
    }

    fn hash_unchecked(&self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| PasswordError::Hashing(e.to_string()))?;
        self.argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hashing(e.to_string()))
    }

    /// True when `password` matches `stored`. With no stored hash (no such user, or a user
    /// without a password) the dummy hash is verified instead, and the answer is false.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let password = if password.len() > MAX_PASSWORD_BYTES {
            // Still do the work, on a bounded input.
            &password[..0]
        } else {
            password
        };
        let (hash, real) = match stored {
            Some(h) => (h, true),
            None => (self.dummy_hash.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            tracing::error!("a stored password hash is not a valid PHC string");
            return false;
        };
        let ok = self
            .argon
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        let params = HashParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        Passwords::new(params, 8).unwrap()
    }

    #[test]
    fn hash_verifies_only_the_same_password() {
        let p = cheap();
        let h = p.hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(p.verify("correct horse", Some(&h)));
        assert!(!p.verify("correct horsE", Some(&h)));
        assert!(!p.verify("correct horse", None));
        assert!(!p.verify("anything", Some("not a hash")));
    }

    #[test]
    fn policy_is_enforced() {
        let p = cheap();
        assert!(matches!(p.hash("short"), Err(PasswordError::TooShort(8))));
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(p.hash(&long), Err(PasswordError::TooLong)));
        assert!(!p.verify(&long, None));
    }
}
