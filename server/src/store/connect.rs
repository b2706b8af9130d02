//! How every connection to Postgres is made: the pool, the dedicated LISTEN connections and
//! migrations all go through [`Connector`], so they share one TLS policy.
//!
//! `sslmode` in `DATABASE_URL` means what libpq says it means. tokio-postgres itself only
//! knows `disable`/`prefer`/`require` and, with a TLS connector, never checks the
//! certificate; so `sslmode` and `sslrootcert` are taken out of the string here, and the
//! certificate check is done by our own rustls verifier:
//!
//! | `sslmode`     | TLS                           | certificate check                        |
//! |---------------|-------------------------------|------------------------------------------|
//! | `disable`     | never                         | –                                        |
//! | `prefer`      | if the server offers it       | chain, only when a CA file is set        |
//! | `require`     | always                        | chain, only when a CA file is set        |
//! | `verify-ca`   | always                        | chain (CA file, else the system store)   |
//! | `verify-full` | always                        | chain and host name                      |
//!
//! Unlike libpq, a `verify-*` mode with no CA file uses the system trust store instead of
//! failing (there is no `~/.postgresql/root.crt` in a container), and `prefer` does not
//! retry without TLS when the handshake itself fails. `sslrootcert=system` is the libpq 16
//! spelling for the system store and, as there, insists on `verify-full`. Unix-socket
//! connections never use TLS (Postgres does not offer it there), whatever `sslmode` says.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    pin::Pin,
    str::FromStr,
    sync::Arc,
};

use futures::Future;
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier,
    },
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    server::ParsedCertificate,
    CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::{
    config::Host,
    tls::{MakeTlsConnect, TlsConnect},
    Client, Socket,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;

/// libpq's `sslmode` values (all but `allow`, which tokio-postgres cannot do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file with one or more CA certificates (`sslrootcert=…` or the setting).
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

/// What is wrong with a connection string. The text never repeats the string: it may hold
/// a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("a Postgres connection string such as postgres://user:password@host:5432/dbname")]
    Invalid,
    #[error("sslmode is one of disable, prefer, require, verify-ca or verify-full")]
    SslMode,
    #[error("sslrootcert=system only with sslmode=verify-full (any certificate a public CA signed would pass a weaker check)")]
    SystemNeedsVerifyFull,
    #[error("{0} is not supported (Rowcast does not present client certificates)")]
    Unsupported(&'static str),
}

/// A connection string with its TLS parameters taken out and understood.
#[derive(Debug, Clone)]
pub struct ConnectionString {
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<RootCert>,
}

/// Parameters libpq knows for client certificates and revocation; tokio-postgres would
/// call them unknown options, which says less.
const UNSUPPORTED: [&str; 5] = ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

/// Parse `url` (a `postgres://` URL or `key=value` pairs), taking out `sslmode` and
/// `sslrootcert`. No file is read.
pub fn parse_url(url: &str) -> Result<ConnectionString, UrlError> {
    let mut ssl_mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: String| -> Result<bool, UrlError> {
        match key {
            "sslmode" => ssl_mode = Some(value),
            "sslrootcert" => root_cert = Some(value),
            k => {
                if let Some(u) = UNSUPPORTED.iter().find(|u| **u == k) {
                    return Err(UrlError::Unsupported(u));
                }
                return Ok(false);
            }
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        strip_url_params(url, &mut take)?
    } else {
        strip_keyword_params(url, &mut take)?
    };
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|_| UrlError::Invalid)?;
    let root_cert = match root_cert.as_deref() {
        None | Some("") => None,
        Some("system") => Some(RootCert::System),
        Some(path) => Some(RootCert::File(PathBuf::from(path))),
    };
    let ssl_mode = match ssl_mode.as_deref() {
        None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
        None => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("prefer") => SslMode::Prefer,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(_) => return Err(UrlError::SslMode),
    };
    if root_cert == Some(RootCert::System) && ssl_mode != SslMode::VerifyFull {
        return Err(UrlError::SystemNeedsVerifyFull);
    }
    // Postgres offers no TLS on Unix sockets; libpq ignores sslmode there, and so do we.
    let all_unix = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, Host::Tcp(_)));
    config.ssl_mode(match ssl_mode {
        _ if all_unix => tokio_postgres::config::SslMode::Disable,
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    Ok(ConnectionString {
        config,
        ssl_mode,
        root_cert,
    })
}

type Take<'a> = dyn FnMut(&str, String) -> Result<bool, UrlError> + 'a;

/// Remove the parameters `take` claims from the query of a URL, keeping the rest verbatim.
fn strip_url_params(url: &str, take: &mut Take<'_>) -> Result<String, UrlError> {
    // As tokio-postgres reads it: credentials run to the first '@', the query starts at the
    // first '?' after them.
    let creds_end = url.find('@').map(|i| i + 1).unwrap_or(0);
    let Some(q) = url[creds_end..].find('?').map(|i| i + creds_end) else {
        return Ok(url.to_string());
    };
    let mut kept = Vec::new();
    for pair in url[q + 1..].split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or(UrlError::Invalid)?;
        let key = decode(key)?;
        if !take(&key, decode(value)?)? {
            kept.push(pair);
        }
    }
    let base = &url[..q];
    Ok(if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

fn decode(s: &str) -> Result<String, UrlError> {
    percent_decode(s).ok_or(UrlError::Invalid)
}

/// `%XX` decoding as libpq does it for URL parts (`+` stays a plus).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Remove the parameters `take` claims from a `key=value …` string. The others are written
/// back quoted, which means the same to the parser.
fn strip_keyword_params(s: &str, take: &mut Take<'_>) -> Result<String, UrlError> {
    let mut kept = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if it.peek().is_some() {
                return Err(UrlError::Invalid);
            }
            break;
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(UrlError::Invalid);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(UrlError::Invalid),
                    Some('\'') => break,
                    Some('\\') => value.push(it.next().ok_or(UrlError::Invalid)?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(c2) = it.next() {
                        value.push(c2);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(UrlError::Invalid);
            }
        }
        if !take(&key, value.clone())? {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok(kept.join(" "))
}

/// A connection configuration plus how to secure it. Cheap to clone. Derefs to the
/// tokio-postgres config so callers can adjust `application_name`, keepalives and such.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    tls: MakeTls,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the config: it holds the password.
        f.debug_struct("Connector")
            .field("sslmode", &self.ssl_mode.as_str())
            .finish_non_exhaustive()
    }
}

/// The connection half of a connected [`Connector`]; poll it (or spawn it) to drive the
/// client.
pub type Connection = tokio_postgres::Connection<Socket, TlsStream>;
/// The stream under a [`Connection`]: TLS or, when `sslmode` allowed, plain.
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

impl Connector {
    /// Build the connector for `url`; `ca_file` is `ROWCAST_DATABASE_CA_FILE`. Reads the CA
    /// file (or the system store) now, so a bad one stops start-up rather than every
    /// connection.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Connector, StoreError> {
        let parsed =
            parse_url(url).map_err(|e| StoreError::Config(format!("DATABASE_URL: {e}")))?;
        let root_cert = match (parsed.root_cert, ca_file) {
            (Some(_), Some(_)) => return Err(StoreError::Config(
                "both sslrootcert in DATABASE_URL and ROWCAST_DATABASE_CA_FILE are set; keep one"
                    .into(),
            )),
            (Some(r), None) => Some(r),
            (None, Some(f)) => Some(RootCert::File(f.to_path_buf())),
            (None, None) => None,
        };
        Connector::from_parts(parsed.config, parsed.ssl_mode, root_cert.as_ref())
    }

    /// A connector for an already parsed config; `root_cert` as the CA file setting.
    pub fn from_parts(
        config: tokio_postgres::Config,
        ssl_mode: SslMode,
        root_cert: Option<&RootCert>,
    ) -> Result<Connector, StoreError> {
        let roots = match (ssl_mode, root_cert) {
            (SslMode::Disable, _) => None,
            (_, Some(r)) => Some(load_roots(r)?),
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => Some(load_roots(&RootCert::System)?),
            (SslMode::Prefer | SslMode::Require, None) => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (ssl_mode, roots) {
            (SslMode::VerifyFull, Some(roots)) => {
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| StoreError::Config(format!("TLS to the database: {e}")))?
            }
            (_, roots) => Arc::new(LibpqVerifier {
                chain: roots,
                provider: provider.clone(),
            }),
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Config(format!("TLS to the database: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // As libpq 17 does: Postgres 17 insists on it for `sslnegotiation=direct`, older
        // servers ignore it.
        tls.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            config,
            ssl_mode,
            tls: MakeTls(MakeRustlsConnect::new(tls)),
        })
    }

    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The TLS connector, for a pool manager.
    pub fn tls(&self) -> MakeTls {
        self.tls.clone()
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Open a dedicated connection. TLS failures say what was wrong with the certificate.
    pub async fn connect(&self) -> Result<(Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

impl std::ops::Deref for Connector {
    type Target = tokio_postgres::Config;
    fn deref(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl std::ops::DerefMut for Connector {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }
}

impl From<&Connector> for Connector {
    fn from(c: &Connector) -> Connector {
        c.clone()
    }
}

/// A bare tokio-postgres config (tests, tools) connects as its own `sslmode` says, without
/// a certificate check: libpq's `disable`/`prefer`/`require` with no CA file.
impl From<&tokio_postgres::Config> for Connector {
    fn from(config: &tokio_postgres::Config) -> Connector {
        let ssl_mode = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        match Connector::from_parts(config.clone(), ssl_mode, None) {
            Ok(c) => c,
            // Without a CA nothing is read, and the ring provider's default versions are
            // valid: this cannot fail.
            Err(e) => unreachable!("TLS connector without a CA: {e}"),
        }
    }
}

fn load_roots(root: &RootCert) -> Result<Arc<RootCertStore>, StoreError> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    StoreError::Config(format!(
                        "database CA file {}: cannot read PEM certificates ({e})",
                        path.display()
                    ))
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Config(format!(
                    "database CA file {}: no usable CA certificate in it",
                    path.display()
                )));
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(StoreError::Config(
                    "no system CA certificates found for sslmode=verify-ca/verify-full \
                     (install ca-certificates, or set ROWCAST_DATABASE_CA_FILE)"
                        .into(),
                ));
            }
        }
    }
    Ok(Arc::new(store))
}

/// The check for every mode but `verify-full`: the handshake signature always, the chain
/// only when there are roots to check it against, the host name never.
#[derive(Debug)]
struct LibpqVerifier {
    chain: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.chain {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres-rustls's connector, with handshake errors turned into [`TlsError`]s that
/// say what an operator has to fix.
#[derive(Clone)]
pub struct MakeTls(MakeRustlsConnect);

type RustlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;

impl MakeTlsConnect<Socket> for MakeTls {
    type Stream = TlsStream;
    type TlsConnect = Handshake;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, Self::Error> {
        Ok(Handshake {
            inner: <MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(
                &mut self.0,
                host,
            )?,
            host: host.to_string(),
        })
    }
}

/// One handshake (see [`MakeTls`]).
pub struct Handshake {
    inner: RustlsConnect,
    host: String,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = TlsStream;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream, TlsError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let host = self.host;
        let handshake = self.inner.connect(stream);
        Box::pin(async move { handshake.await.map_err(|e| TlsError::new(e, host)) })
    }
}

/// Why the TLS handshake with the database failed, in an operator's terms.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the database server's certificate is not signed by a trusted CA (certificate unknown; set ROWCAST_DATABASE_CA_FILE or sslrootcert to the CA that signed it)")]
    UnknownCa,
    #[error("the database server's certificate does not match the host name {host:?} (host name mismatch; connect by a name the certificate lists, or use sslmode=verify-ca)")]
    HostNameMismatch { host: String },
    #[error("the database server's certificate has expired or is not valid yet")]
    Expired,
    #[error("the TLS handshake with the database failed: {0}")]
    Other(io::Error),
}

impl TlsError {
    fn new(e: io::Error, host: String) -> TlsError {
        let cert = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(|r| match r {
                rustls::Error::InvalidCertificate(c) => Some(c.clone()),
                _ => None,
            });
        match cert {
            Some(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
                TlsError::UnknownCa
            }
            Some(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => TlsError::HostNameMismatch { host },
            Some(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => TlsError::Expired,
            _ => TlsError::Other(e),
        }
    }
}

/// The operator-facing text of a failed connection or statement: tokio-postgres's own
/// text says only "error performing TLS handshake"; the causes say which check failed.
pub fn describe(e: &tokio_postgres::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tls_params_are_taken_out_and_the_rest_kept() {
        let p = parse_url(
            "postgres://u:p%40ss@db.example.com:6543/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(p.ssl_mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert, Some(RootCert::File("/ca.pem".into())));
        assert_eq!(p.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(p.config.get_application_name(), Some("x"));
        assert_eq!(p.config.get_dbname(), Some("app"));
        assert_eq!(
            p.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn keyword_tls_params_are_taken_out_and_quoting_survives() {
        let p = parse_url(
            r"host=db.example.com password='it''s' sslmode = verify-ca user=a\ b dbname='x y'",
        );
        // `''` is not an escape in libpq's keyword syntax: the value ends at the second quote.
        assert_eq!(p.unwrap_err(), UrlError::Invalid);
        let p = parse_url(
            r"host=db.example.com password='it\'s' sslmode = verify-ca user=a\ b dbname='x y'",
        )
        .unwrap();
        assert_eq!(p.ssl_mode, SslMode::VerifyCa);
        assert_eq!(p.config.get_password(), Some(&b"it's"[..]));
        assert_eq!(p.config.get_user(), Some("a b"));
        assert_eq!(p.config.get_dbname(), Some("x y"));
    }

    #[test]
    fn modes_and_their_defaults() {
        let mode = |u: &str| parse_url(u).map(|p| p.ssl_mode);
        assert_eq!(mode("postgres://h/db"), Ok(SslMode::Prefer));
        assert_eq!(
            mode("postgres://h/db?sslmode=disable"),
            Ok(SslMode::Disable)
        );
        assert_eq!(
            mode("postgres://h/db?sslmode=require"),
            Ok(SslMode::Require)
        );
        assert_eq!(
            mode("postgres://h/db?sslrootcert=system"),
            Ok(SslMode::VerifyFull)
        );
        assert_eq!(
            mode("postgres://h/db?sslrootcert=system&sslmode=require"),
            Err(UrlError::SystemNeedsVerifyFull)
        );
        assert_eq!(
            mode("postgres://h/db?sslmode=allow"),
            Err(UrlError::SslMode)
        );
        assert_eq!(
            mode("postgres://h/db?sslcert=/c.pem"),
            Err(UrlError::Unsupported("sslcert"))
        );
        assert_eq!(mode("host=h sslmode=verify"), Err(UrlError::SslMode));
        assert_eq!(
            mode("postgres://h/db?sslmode=verify-ca&"),
            Ok(SslMode::VerifyCa)
        );
    }

    #[test]
    fn handshake_failures_are_named() {
        let fail = |c: CertificateError| {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(c),
            );
            TlsError::new(e, "db.example.com".into()).to_string()
        };
        assert!(fail(CertificateError::UnknownIssuer).contains("certificate unknown"));
        assert!(fail(CertificateError::NotValidForName).contains("\"db.example.com\""));
        assert!(fail(CertificateError::Expired).contains("expired"));
        let other = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(TlsError::new(other, "h".into())
            .to_string()
            .contains("reset by peer"));
    }

    #[test]
    fn unix_sockets_never_use_tls() {
        let p = parse_url("host=/cloudsql/p:r:i dbname=app sslmode=require").unwrap();
        assert_eq!(
            p.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn errors_do_not_echo_the_string() {
        for bad in [
            "postgres://u:s3cret@h/db?sslmode=bogus",
            "postgres://u:s3cret@h/db?nosuch=1",
            "host=h password=s3cret 'oops",
        ] {
            let e = Connector::new(bad, None).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn two_ca_settings_are_refused() {
        let e = Connector::new(
            "postgres://h/db?sslmode=verify-ca&sslrootcert=/a.pem",
            Some(Path::new("/b.pem")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("keep one"), "{e}");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = Connector::new(
            "postgres://h/db?sslmode=verify-full",
            Some(Path::new("/nonexistent/ca.pem")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
