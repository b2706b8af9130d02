//! Outgoing auth mail: the four messages (sign-up confirmation, password recovery, magic
//! link / code, email change), their templates (built in, overridable by files), and where
//! mail goes: an SMTP server (through `lettre`), or in `dev` without SMTP a local outbox
//! folder with the link logged. Mail is sent by one background task from a bounded queue,
//! which also stores the mail's one-time token just before sending it: a request that mails
//! does no more work than one that does not (that timing would reveal whether an address
//! has an account), and never waits on SMTP.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use lettre::{
    message::{header::ContentType, Mailbox},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::store::{email_tokens::NewEmailToken, Store};

/// Mails waiting to be sent; beyond this new ones are dropped (and logged).
const QUEUE: usize = 1024;

pub use crate::config::{MailConfig, MailDelivery, SmtpConfig, SmtpTls};

/// Which message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailKind {
    Confirmation,
    Recovery,
    MagicLink,
    EmailChange,
}

impl MailKind {
    pub const ALL: [MailKind; 4] = [
        MailKind::Confirmation,
        MailKind::Recovery,
        MailKind::MagicLink,
        MailKind::EmailChange,
    ];

    /// The template's file name in the templates folder.
    pub fn file_name(self) -> &'static str {
        match self {
            MailKind::Confirmation => "confirmation.txt",
            MailKind::Recovery => "recovery.txt",
            MailKind::MagicLink => "magic_link.txt",
            MailKind::EmailChange => "email_change.txt",
        }
    }

    fn default_template(self) -> &'static str {
        match self {
            MailKind::Confirmation => {
                "Subject: Confirm your email address\n\n\
                 Follow this link to confirm {{ .Email }}:\n\n{{ .ConfirmationURL }}\n\n\
                 Or enter this code: {{ .Token }}\n\n\
                 If you did not sign up, ignore this message.\n"
            }
            MailKind::Recovery => {
                "Subject: Reset your password\n\n\
                 Follow this link to choose a new password:\n\n{{ .ConfirmationURL }}\n\n\
                 Or enter this code: {{ .Token }}\n\n\
                 If you did not ask for this, ignore this message.\n"
            }
            MailKind::MagicLink => {
                "Subject: Your sign-in link\n\n\
                 Follow this link to sign in:\n\n{{ .ConfirmationURL }}\n\n\
                 Or enter this code: {{ .Token }}\n\n\
                 If you did not ask for this, ignore this message.\n"
            }
            MailKind::EmailChange => {
                "Subject: Confirm your new email address\n\n\
                 Follow this link to change your address to {{ .NewEmail }}:\n\n\
                 {{ .ConfirmationURL }}\n\n\
                 Or enter this code: {{ .Token }}\n\n\
                 If you did not ask for this, ignore this message.\n"
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("cannot read mail template {path}: {source}")]
    Template {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mail template {0} must start with a `Subject: ...` line and a blank line")]
    TemplateShape(PathBuf),
    #[error("invalid sender address (ROWCAST_SMTP_FROM)")]
    From,
    #[error("SMTP settings: {0}")]
    Smtp(String),
}

#[derive(Debug, Clone)]
struct Template {
    subject: String,
    body: String,
}

/// The one-time token a mail carries, stored (hashes only) by the sending task.
#[derive(Debug, Clone)]
pub struct TokenToStore {
    pub link_hash: [u8; 32],
    pub code_hash: [u8; 32],
    pub kind: &'static str,
    pub user_id: Uuid,
    pub email: String,
    pub expires_at: DateTime<Utc>,
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Mail {
    pub kind: MailKind,
    pub to: String,
    /// Stored before the mail goes out; if storing fails the mail is not sent.
    pub token: Option<TokenToStore>,
    /// Placeholder values: `ConfirmationURL`, `Token`, `TokenHash`, `Email`, `NewEmail`,
    /// `SiteURL`.
    pub values: Vec<(&'static str, String)>,
}

/// The sending side handed to the auth service.
#[derive(Debug, Clone)]
pub struct Mailer {
    queue: Option<mpsc::Sender<Mail>>,
}

impl Mailer {
    /// A mailer that sends nothing (no mail configured).
    pub fn disabled() -> Mailer {
        Mailer { queue: None }
    }

    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queue a mail; a full queue drops it (logged without the address).
    pub fn send(&self, mail: Mail) {
        if let Some(q) = &self.queue {
            if q.try_send(mail).is_err() {
                tracing::warn!("the auth mail queue is full; a mail was dropped");
            }
        }
    }

    /// Read the templates, set up the transport and start the sending task (stops on
    /// shutdown).
    pub fn start(
        config: &MailConfig,
        store: Store,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Mailer, MailError> {
        let templates = load_templates(config.templates.as_deref())?;
        let from: Mailbox = config.from.parse().map_err(|_| MailError::From)?;
        let sink = match &config.delivery {
            MailDelivery::Disabled => return Ok(Mailer::disabled()),
            MailDelivery::Outbox(dir) => {
                tracing::info!(dir = %dir.display(), "auth mail goes to the dev outbox (no SMTP configured)");
                Sink::Outbox(dir.clone())
            }
            MailDelivery::Smtp(smtp) => Sink::Smtp(smtp_transport(smtp)?),
        };
        let (tx, mut rx) = mpsc::channel::<Mail>(QUEUE);
        tasks.spawn(async move {
            loop {
                let mail = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = rx.recv() => match m { Some(m) => m, None => break },
                };
                if let Some(t) = &mail.token {
                    let stored = store
                        .issue_email_token(&NewEmailToken {
                            link_hash: &t.link_hash,
                            code_hash: &t.code_hash,
                            kind: t.kind,
                            user_id: t.user_id,
                            email: &t.email,
                            expires_at: t.expires_at,
                        })
                        .await;
                    if let Err(e) = stored {
                        tracing::warn!(kind = ?mail.kind, error = %e, "cannot store an auth mail's token; not sent");
                        continue;
                    }
                }
                let Some(message) = compose(&templates, &from, &mail) else {
                    continue;
                };
                sink.deliver(&mail, message).await;
            }
        });
        Ok(Mailer { queue: Some(tx) })
    }
}

enum Sink {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

impl Sink {
    async fn deliver(&self, mail: &Mail, message: Message) {
        match self {
            Sink::Smtp(t) => {
                if let Err(e) = t.send(message).await {
                    // lettre's error names the server's reply, never our credentials.
                    tracing::warn!(kind = ?mail.kind, error = %e, "sending auth mail failed");
                }
            }
            Sink::Outbox(dir) => {
                let name = format!(
                    "{}-{:?}-{}.eml",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"),
                    mail.kind,
                    uuid::Uuid::new_v4().simple()
                );
                let path = dir.join(name);
                let written = tokio::fs::create_dir_all(dir)
                    .await
                    .and(tokio::fs::write(&path, message.formatted()).await);
                let link = mail
                    .values
                    .iter()
                    .find(|(k, _)| *k == "ConfirmationURL")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                match written {
                    // dev only: the developer follows the link from the log.
                    Ok(()) => tracing::info!(
                        kind = ?mail.kind,
                        file = %path.display(),
                        %link,
                        "auth mail written to the dev outbox"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot write to the dev outbox"),
                }
            }
        }
    }
}

fn smtp_transport(smtp: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let tls = || TlsParameters::new(smtp.host.clone()).map_err(|e| MailError::Smtp(e.to_string()));
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(20)));
    builder = match smtp.tls {
        SmtpTls::None => builder.tls(Tls::None),
        SmtpTls::Starttls => builder.tls(Tls::Required(tls()?)),
        SmtpTls::Tls => builder.tls(Tls::Wrapper(tls()?)),
    };
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

fn load_templates(dir: Option<&std::path::Path>) -> Result<HashMap<MailKind, Template>, MailError> {
    let mut out = HashMap::new();
    for kind in MailKind::ALL {
        let (text, path) = match dir.map(|d| d.join(kind.file_name())) {
            Some(path) if path.exists() => (
                std::fs::read_to_string(&path).map_err(|source| MailError::Template {
                    path: path.clone(),
                    source,
                })?,
                path,
            ),
            _ => (
                kind.default_template().to_string(),
                PathBuf::from(kind.file_name()),
            ),
        };
        out.insert(
            kind,
            parse_template(&text).ok_or(MailError::TemplateShape(path))?,
        );
    }
    Ok(out)
}

/// `Subject: ...`, a blank line, then the plain-text body.
fn parse_template(text: &str) -> Option<Template> {
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n")?;
    let subject = head.strip_prefix("Subject:")?.trim();
    (!subject.is_empty() && !subject.contains('\n')).then(|| Template {
        subject: subject.to_string(),
        body: body.to_string(),
    })
}

/// Replace `{{ .Name }}` (spaces optional) with the values.
fn render(text: &str, values: &[(&'static str, String)]) -> String {
    let mut out = text.to_string();
    for (name, value) in values {
        for pattern in [format!("{{{{ .{name} }}}}"), format!("{{{{.{name}}}}}")] {
            out = out.replace(&pattern, value);
        }
    }
    out
}

fn compose(
    templates: &HashMap<MailKind, Template>,
    from: &Mailbox,
    mail: &Mail,
) -> Option<Message> {
    let template = templates.get(&mail.kind)?;
    let to: Mailbox = match mail.to.parse() {
        Ok(t) => t,
        Err(_) => {
            tracing::warn!(kind = ?mail.kind, "an auth mail's recipient is not a valid mailbox");
            return None;
        }
    };
    // A subject must stay one line whatever the values hold.
    let subject = render(&template.subject, &mail.values).replace(['\r', '\n'], " ");
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(render(&template.body, &mail.values))
        .map_err(|e| tracing::warn!(error = %e, "cannot build an auth mail"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_render() {
        for kind in MailKind::ALL {
            assert!(
                parse_template(kind.default_template()).is_some(),
                "{kind:?}"
            );
        }
        let t = parse_template("Subject: Hi {{ .Email }}\r\n\r\nGo to {{.ConfirmationURL}} now")
            .unwrap();
        let values = vec![
            ("Email", "a@b.io".to_string()),
            ("ConfirmationURL", "http://x/y".to_string()),
        ];
        assert_eq!(render(&t.subject, &values), "Hi a@b.io");
        assert_eq!(render(&t.body, &values), "Go to http://x/y now");
        assert!(parse_template("no subject here").is_none());
        assert!(parse_template("Subject: \n\nbody").is_none());
    }

    #[test]
    fn smtp_password_is_not_in_debug_output() {
        let c = SmtpConfig {
            host: "smtp.example.com".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: Some("u".into()),
            password: Some("hunter2-secret".into()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
