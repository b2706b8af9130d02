//! One-time email tokens: each mail carries a 256-bit link secret and a six-digit code for
//! the same token. Only their SHA-256 hashes are stored (`store::email_tokens`); the code's
//! hash includes the address, so a code only works together with its address, and wrong
//! codes are rate-limited like failed sign-ins (`auth::limiter`).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::Rng as _;
use sha2::{Digest, Sha256};

/// Longest link secret worth hashing; ours are 43 characters.
pub const MAX_LINK_TOKEN_LEN: usize = 128;

/// What the token is for (the `kind` stored, and gotrue's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Signup,
    Recovery,
    MagicLink,
    EmailChange,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Signup => "signup",
            TokenKind::Recovery => "recovery",
            TokenKind::MagicLink => "magiclink",
            TokenKind::EmailChange => "email_change",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        Some(match s {
            "signup" => TokenKind::Signup,
            "recovery" => TokenKind::Recovery,
            "magiclink" => TokenKind::MagicLink,
            "email_change" => TokenKind::EmailChange,
            _ => return None,
        })
    }
}

/// A freshly made token's secrets (sent by mail, never stored).
#[derive(Debug)]
pub struct EmailSecrets {
    pub link: String,
    pub code: String,
}

impl EmailSecrets {
    pub fn new() -> EmailSecrets {
        EmailSecrets {
            link: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
            code: format!("{:06}", rand::thread_rng().gen_range(0..1_000_000u32)),
        }
    }
}

impl Default for EmailSecrets {
    fn default() -> Self {
        EmailSecrets::new()
    }
}

pub fn link_hash(link: &str) -> [u8; 32] {
    Sha256::digest(link.as_bytes()).into()
}

/// The code's hash, bound to the (case-insensitive) address it was sent to.
pub fn code_hash(email: &str, code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(email.trim().to_lowercase().as_bytes());
    h.update(b"\0");
    h.update(code.trim().as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_codes_bind_their_address() {
        let a = EmailSecrets::new();
        let b = EmailSecrets::new();
        assert_ne!(a.link, b.link);
        assert_eq!(a.link.len(), 43);
        assert_eq!(a.code.len(), 6);
        assert!(a.code.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(
            code_hash("A@b.io", "012345"),
            code_hash("a@B.io ", " 012345")
        );
        assert_ne!(code_hash("a@b.io", "012345"), code_hash("c@b.io", "012345"));
        for k in ["signup", "recovery", "magiclink", "email_change"] {
            assert_eq!(TokenKind::parse(k).unwrap().as_str(), k);
        }
        assert!(TokenKind::parse("invite").is_none());
    }
}
