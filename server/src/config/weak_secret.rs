//! Which token secrets the server refuses to sign with: the placeholders this repository
//! and well-known examples publish, and secrets too regular to be random (one character
//! repeated, a short pattern repeated, a run like `abcdef…`, too few distinct characters).
//!
//! Anyone who knows the HS256 secret can forge any token, the service role's included, so a
//! secret copied from a compose file or a tutorial is as good as none. The check is a
//! heuristic aimed at those mistakes, not a strength meter: `openssl rand -hex 32` always
//! passes, and so does any random string of 32 or more bytes.

/// Secrets that were (or are) printed in this repository or in widely copied examples.
/// Compared ignoring case.
const KNOWN_PLACEHOLDERS: &[&str] = &[
    // docker-compose.yml's old fallback.
    "insecure-placeholder-secret-change-me-0123456789",
    // The test suite's secret before it became random-looking.
    "rowcast-test-secret-not-for-production-use",
    // Popular tutorial and self-hosting defaults.
    "super-secret-jwt-token-with-at-least-32-characters-long",
    "your-super-secret-jwt-token-with-at-least-32-characters-long",
    "your-256-bit-secret",
    "secretsecretsecretsecretsecretsecret",
];

/// Words that mark a secret as a placeholder, matched on the letters and digits only, so
/// `change-me`, `CHANGE_ME` and `changeme` are one word. None of them can occur in a hex
/// secret; in a random base64 secret their odds are negligible.
const MARKERS: &[&str] = &[
    "changeme",
    "changethis",
    "placeholder",
    "example",
    "insecure",
    "notforproduction",
    "replaceme",
    "yoursecret",
    "yourjwt",
    "supersecret",
    "mysecret",
    "secretkey",
    "password",
    "dontuse",
    "donotuse",
];

/// Why `secret` must not be used, or `None` if nothing is wrong with it.
pub fn weakness(secret: &str) -> Option<&'static str> {
    let lower = secret.to_ascii_lowercase();
    if KNOWN_PLACEHOLDERS.iter().any(|p| *p == lower) {
        return Some("it is a placeholder published in documentation or examples");
    }
    let letters: String = lower.chars().filter(char::is_ascii_alphanumeric).collect();
    if MARKERS.iter().any(|m| letters.contains(m)) {
        return Some("it reads like a placeholder (e.g. `change-me`, `example`, `secret-key`)");
    }
    let chars: Vec<char> = secret.chars().collect();
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Some("it uses too few distinct characters to be random");
    }
    let periodic = (1..=chars.len() / 2)
        .any(|p| chars.len() % p == 0 && chars.iter().enumerate().all(|(i, c)| *c == chars[i % p]));
    if periodic {
        return Some("it repeats a short pattern");
    }
    // Runs such as `abcdef…` or `0123…` (or backwards): more than half the steps are ±1.
    let steps = chars.windows(2).filter(|w| {
        let d = w[1] as i64 - w[0] as i64;
        d == 1 || d == -1
    });
    if steps.count() * 2 > chars.len() {
        return Some("it is mostly a run of consecutive characters");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_regular_strings_are_refused() {
        for bad in [
            "insecure-placeholder-secret-change-me-0123456789",
            "INSECURE-PLACEHOLDER-SECRET-CHANGE-ME-0123456789",
            "rowcast-test-secret-not-for-production-use",
            "super-secret-jwt-token-with-at-least-32-characters-long",
            "please_CHANGE_ME_before_deploying_this_thing_0987",
            "this-is-an-example-secret-for-the-readme-xyz",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababababababababababababab",
            "abcdefgh12abcdefgh12abcdefgh12abcdefgh12",
            "abcdefghijklmnopqrstuvwxyz0123456789",
            "0123456789012345678901234567890123456789",
            "zyxwvutsrqponmlkjihgfedcba9876543210",
        ] {
            assert!(weakness(bad).is_some(), "{bad} was accepted");
        }
    }

    #[test]
    fn random_secrets_pass() {
        for _ in 0..2000 {
            let hex = hex::encode(rand::random::<[u8; 32]>());
            assert_eq!(weakness(&hex), None, "{hex}");
            let short = hex::encode(rand::random::<[u8; 16]>());
            assert_eq!(weakness(&short), None, "{short}");
        }
        assert_eq!(weakness(crate::config::TEST_JWT_SECRET), None);
    }

    #[test]
    fn serve_and_dev_refuse_weak_secrets_and_accept_random_ones() {
        use crate::config::{Cli, Config};
        use clap::Parser;
        let parse = |mode: &str, secret: &str| {
            let cli = Cli::try_parse_from([
                "rowcast",
                mode,
                "--database-url",
                "postgres://h/db",
                "--jwt-secret",
                secret,
            ])
            .map_err(|e| e.to_string())?;
            Config::from_cli(cli).map_err(|e| e.to_string())
        };
        let placeholder = "insecure-placeholder-secret-change-me-0123456789";
        for mode in ["serve", "dev"] {
            let err = parse(mode, placeholder).unwrap_err();
            assert!(
                err.contains("ROWCAST_JWT_SECRET") && err.contains("placeholder"),
                "{err}"
            );
            assert!(!err.contains(placeholder), "{err}");
            let random = hex::encode(rand::random::<[u8; 32]>());
            assert!(parse(mode, &random).is_ok());
        }
        // `migrate` signs nothing; it does not judge the secret.
        assert!(parse("migrate", placeholder).is_ok());
    }

    /// The literal value a line assigns to `…JWT_SECRET`, if it is one (not `$(openssl …)`,
    /// `${VAR…}` or a secret reference).
    fn literal_secret(line: &str) -> Option<&str> {
        let (_, rest) = line.split_once("JWT_SECRET")?;
        let value = rest
            .trim_start_matches(['"', '\'', ':', '=', ' '])
            .trim_end_matches(['"', '\'', '`', ' ']);
        (value.len() >= 32 && !value.contains(['$', ' ', '`'])).then_some(value)
    }

    /// Every literal secret the repository's docs and deployment files show is refused, so a
    /// copied example never starts a server.
    #[test]
    fn literal_secrets_in_the_repository_are_refused() {
        // The scan finds a secret written the way compose used to write it.
        assert_eq!(
            literal_secret(
                "      ROWCAST_JWT_SECRET: insecure-placeholder-secret-change-me-0123456789"
            ),
            Some("insecure-placeholder-secret-change-me-0123456789")
        );
        assert_eq!(
            literal_secret(r#"-e ROWCAST_JWT_SECRET="$(openssl rand -hex 32)""#),
            None
        );
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut files = vec![
            format!("{root}/README.md"),
            format!("{root}/docker-compose.yml"),
            format!("{root}/Makefile"),
        ];
        for dir in ["docs", "deploy/k8s", "deploy/appengine"] {
            let entries = std::fs::read_dir(format!("{root}/{dir}")).unwrap();
            for e in entries.flatten() {
                if e.path().is_file() {
                    files.push(e.path().display().to_string());
                }
            }
        }
        assert!(files.len() > 5, "{files:?}");
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for value in text.lines().filter_map(literal_secret) {
                assert!(
                    weakness(value).is_some(),
                    "{f}: `{value}` would be accepted"
                );
            }
        }
    }
}
