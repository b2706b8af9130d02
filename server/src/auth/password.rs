//! Passwords: the rules a new password must meet, and argon2id hashing and verification
//! that costs the same whether or not the account exists. Hashing works in memory blocks the
//! caller lends (`auth::hashing` keeps a fixed set of them), so that the process never holds
//! more argon2 memory than that set, and freed memory is not left to the allocator.

use argon2::{
    password_hash::{Output, ParamsString, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
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

pub use crate::config::HashParams;

/// Hashes and verifies passwords with fixed parameters and a password policy.
#[derive(Clone)]
pub struct Passwords {
    argon: Argon2<'static>,
    params: Params,
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
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut passwords = Passwords {
            argon,
            params,
            min_length,
            dummy_hash: String::new(),
        };
        let random = hex::encode(rand::random::<[u8; 16]>());
        passwords.dummy_hash = passwords.hash_unchecked(&random, &mut Vec::new())?;
        Ok(passwords)
    }

    /// Bytes of memory one hash or verification needs with the configured parameters.
    pub fn memory_bytes(&self) -> usize {
        self.params.block_count() * Block::SIZE
    }

    /// A memory area for [`Passwords::hash`] and [`Passwords::verify`].
    pub fn new_memory(&self) -> Vec<Block> {
        vec![Block::default(); self.params.block_count()]
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

    /// Check the policy and hash (PHC string format, salt included), working in `memory`.
    pub fn hash(&self, password: &str, memory: &mut Vec<Block>) -> Result<String, PasswordError> {
        self.check_policy(password)?;
        self.hash_unchecked(password, memory)
    }

    fn hash_unchecked(
        &self,
        password: &str,
        memory: &mut Vec<Block>,
    ) -> Result<String, PasswordError> {
        let failed = |e: &dyn std::fmt::Display| PasswordError::Hashing(e.to_string());
        let salt_bytes = rand::random::<[u8; 16]>();
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| failed(&e))?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let blocks = self.params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        self.argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                &salt_bytes,
                &mut out,
                &mut memory[..blocks],
            )
            .map_err(|e| failed(&e))?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| failed(&e))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
        };
        Ok(phc.to_string())
    }

    /// True when `password` matches `stored`. With no stored hash (no such user, or a user
    /// without a password) the dummy hash is verified instead, and the answer is false.
    /// Works in `memory`; a stored hash made with more memory than configured now (the
    /// setting was lowered) gets a temporary area of its own.
    pub fn verify(&self, password: &str, stored: Option<&str>, memory: &mut Vec<Block>) -> bool {
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
        let ok = match self.verify_phc(password, hash, memory) {
            Some(ok) => ok,
            None => {
                tracing::error!("a stored password hash is not a valid argon2 PHC string");
                false
            }
        };
        ok && real
    }

    fn verify_phc(&self, password: &str, phc: &str, memory: &mut Vec<Block>) -> Option<bool> {
        let parsed = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::V0x13,
        };
        let params = Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut salt_buf = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
        let argon = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        let blocks = params.block_count();
        let result = if blocks <= self.params.block_count() {
            if memory.len() < blocks {
                memory.resize(blocks, Block::default());
            }
            argon.hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut memory[..blocks],
            )
        } else {
            argon.hash_password_into(password.as_bytes(), salt, &mut out)
        };
        result.ok()?;
        // `Output`'s equality is constant-time.
        Some(Output::new(&out).ok()? == expected)
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
        let m = &mut p.new_memory();
        let h = p.hash("correct horse", m).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{h}");
        assert!(p.verify("correct horse", Some(&h), m));
        assert!(!p.verify("correct horsE", Some(&h), m));
        assert!(!p.verify("correct horse", None, m));
        assert!(!p.verify("anything", Some("not a hash"), m));
        // Hashes made by the argon2 crate's own encoder verify too (existing users).
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = p
            .argon
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(p.verify("correct horse", Some(&theirs), m));
        assert!(!p.verify("wrong horse", Some(&theirs), m));
        // A hash made with more memory than configured still verifies.
        let big = Passwords::new(
            HashParams {
                memory_kib: 2048,
                iterations: 1,
                parallelism: 1,
            },
            8,
        )
        .unwrap();
        let h2 = big.hash("correct horse", &mut big.new_memory()).unwrap();
        assert!(p.verify("correct horse", Some(&h2), m));
        assert_eq!(
            m.len(),
            1024,
            "the lent memory grew past the configured size"
        );
    }

    #[test]
    fn policy_is_enforced() {
        let p = cheap();
        let m = &mut p.new_memory();
        assert!(matches!(
            p.hash("short", m),
            Err(PasswordError::TooShort(8))
        ));
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(p.hash(&long, m), Err(PasswordError::TooLong)));
        assert!(!p.verify(&long, None, m));
    }
}
