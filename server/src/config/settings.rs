//! The per-module settings `Config` produces: plain data, defined here so that `config` is a
//! leaf (it imports no module it configures). Each module re-exports its own settings under
//! its old path (`auth::password::HashParams`, `capture::CaptureConfig`, …).

use std::{path::PathBuf, time::Duration};

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

/// The sign-in failure limits (settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failed sign-ins allowed per account in one window.
    pub per_account: u32,
    /// Failed sign-ins allowed per client address in one window.
    pub per_address: u32,
    pub window: Duration,
}

/// Limits on creating users and sending mail (settings), each per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignUpLimits {
    /// Email sign-ups per client address.
    pub email_per_address: u32,
    /// Anonymous sign-ins per client address.
    pub anonymous_per_address: u32,
    /// Mails per recipient address, and per account.
    pub mail_per_recipient: u32,
    /// Mail-sending requests (recover, otp, sign-up, email change) per client address.
    pub mail_per_address: u32,
}

impl Default for SignUpLimits {
    fn default() -> Self {
        SignUpLimits {
            email_per_address: 30,
            anonymous_per_address: 30,
            mail_per_recipient: 5,
            mail_per_address: 30,
        }
    }
}

/// The algorithm of the server's own tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

/// How the SMTP connection is secured (setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SmtpTls {
    /// Plain text (only for a relay on the same host or network).
    None,
    /// Connect in plain text, then require STARTTLS (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// SMTP settings. The password is never logged.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum MailDelivery {
    Smtp(SmtpConfig),
    /// Written as `.eml` files into this folder, and the link logged (`dev` only).
    Outbox(PathBuf),
    /// No mail: the email flows answer that they are not configured.
    Disabled,
}

/// The mail settings.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub delivery: MailDelivery,
    /// The sender, e.g. `Rowcast <no-reply@example.com>`.
    pub from: String,
    /// Folder with template files overriding the built-in ones.
    pub templates: Option<PathBuf>,
}

/// Capture settings (see docs/operations.md).
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Longest the reader waits before looking at the log without a wake-up.
    pub poll_interval: Duration,
    /// Whether the NOTIFY doorbell trigger is on (and the LISTEN connection runs).
    pub notify: bool,
    /// Prune changes older than this; `None` keeps them by age forever.
    pub retention: Option<Duration>,
    /// Prune the oldest changes beyond this many; `None` means no cap.
    pub retention_max_changes: Option<u64>,
    /// How often the retention task runs.
    pub retention_interval: Duration,
    /// Rows per read of the log (a transaction larger than this is still delivered whole).
    pub page_size: i64,
    /// Batches a live subscriber may fall behind before it gets `Lagged`.
    pub live_capacity: usize,
    /// How often the reader checks whether the watermark is held back.
    pub lag_probe_interval: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            poll_interval: Duration::from_millis(50),
            notify: true,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_max_changes: None,
            retention_interval: Duration::from_secs(30),
            page_size: 256,
            live_capacity: 1024,
            lag_probe_interval: Duration::from_secs(1),
        }
    }
}

/// Limits and timings of the realtime endpoint (see docs/operations.md).
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// Largest client frame accepted; larger ones get `payload-too-large` (and frames over
    /// twice this close the socket with 1009).
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
    pub max_connections: usize,
    pub snapshot_max_rows: usize,
    /// Frames queued per connection before it is closed as lagging.
    pub queue_len: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// A socket that has not sent `hello` within this is closed (4003).
    pub hello_timeout: Duration,
    /// Connections one client address may hold.
    pub max_connections_per_address: usize,
    /// Connections one client address may hold before their `hello`.
    pub max_unauthenticated_per_address: usize,
    /// The exposed schemas (REST's, `ROWCAST_REST_SCHEMAS`; `app::start` copies them), in
    /// order; the first is where an unqualified table name is looked up. Tables elsewhere
    /// cannot be subscribed to.
    pub schemas: Vec<String>,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        RealtimeSettings {
            max_message_bytes: 64 * 1024,
            max_subscriptions: 100,
            max_connections: 20_000,
            snapshot_max_rows: 100_000,
            queue_len: 1024,
            heartbeat_interval: Duration::from_secs(20),
            heartbeat_timeout: Duration::from_secs(60),
            hello_timeout: Duration::from_secs(5),
            max_connections_per_address: 500,
            max_unauthenticated_per_address: 32,
            schemas: vec!["public".to_string()],
        }
    }
}

/// One external identity provider of `ROWCAST_AUTH_PROVIDERS`, its JWKS read but not yet
/// turned into keys (`auth::provider::from_config` does that, and refuses unusable ones).
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub jwks: serde_json::Value,
}
