//! Alarm and report email over SMTP (the `lettre` crate): the operator's
//! relay from `smtp_url`, messages built from a delivery's stored body or
//! from a report.
//!
//! `smtp_url` forms:
//! - `smtps://[user:password@]host[:465]`: TLS from the first byte;
//! - `smtp+starttls://[user:password@]host[:587]`: STARTTLS, required;
//! - `smtp://host[:25]`: no TLS, for a relay on the same host or network
//!   (a local Postfix, a test sink). The operator chooses this; tenants
//!   only choose recipients.
//!
//! TLS verifies the relay's certificate against the system's roots.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

/// An SMTP conversation may take this long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);
/// Recipients per tenant route.
pub const MAX_RECIPIENTS: usize = 20;

/// What a delivery row stores for an email: sent as is on every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailBody {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// Builds the transport for `url`; nothing connects until a send.
    pub fn new(url: &str, from: &str) -> Result<Mailer, String> {
        let u = reqwest::Url::parse(url).map_err(|e| format!("smtp_url does not parse: {e}"))?;
        let host = u
            .host_str()
            .ok_or("smtp_url has no host: use smtps://mail.example.net")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let creds = (!u.username().is_empty()).then(|| {
            Credentials::new(
                percent_decode(u.username()),
                percent_decode(u.password().unwrap_or_default()),
            )
        });
        let builder = match u.scheme() {
            "smtps" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(|e| format!("smtp_url: {e}"))?,
            "smtp+starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(|e| format!("smtp_url: {e}"))?,
            "smtp" => {
                if creds.is_some() {
                    return Err(
                        "smtp_url: credentials need TLS: use smtps:// or smtp+starttls://".into(),
                    );
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host).port(25)
            }
            other => {
                return Err(format!(
                    "smtp_url scheme {other} is unknown: use smtps://, smtp+starttls:// or smtp://"
                ))
            }
        };
        let mut builder = builder.timeout(Some(SMTP_TIMEOUT));
        if let Some(p) = u.port() {
            builder = builder.port(p);
        }
        if let Some(c) = creds {
            builder = builder.credentials(c);
        }
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("smtp_from {from:?} is not an address: {e}"))?;
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    pub async fn send(&self, body: &EmailBody) -> Result<(), String> {
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(body.subject.clone());
        for to in &body.to {
            m = m.to(to
                .parse::<Mailbox>()
                .map_err(|e| format!("recipient {to:?}: {e}"))?);
        }
        let msg = m
            .header(ContentType::TEXT_PLAIN)
            .body(body.text.clone())
            .map_err(|e| format!("building the message: {e}"))?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp: {e}"))
    }
}

/// A report's email: text and HTML alternatives, the PDF attached.
pub struct ReportMail<'a> {
    pub to: &'a [String],
    pub subject: String,
    pub text: String,
    pub html: String,
    pub pdf_name: String,
    pub pdf: Vec<u8>,
}

impl Mailer {
    pub async fn send_report(&self, mail: ReportMail<'_>) -> Result<(), String> {
        use lettre::message::{Attachment, MultiPart};
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject);
        for to in mail.to {
            m = m.to(to
                .parse::<Mailbox>()
                .map_err(|e| format!("recipient {to:?}: {e}"))?);
        }
        let pdf_type =
            ContentType::parse("application/pdf").map_err(|e| format!("pdf content type: {e}"))?;
        let msg = m
            .multipart(
                MultiPart::mixed()
                    .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
                    .singlepart(Attachment::new(mail.pdf_name).body(mail.pdf, pdf_type)),
            )
            .map_err(|e| format!("building the message: {e}"))?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| format!("smtp: {e}"))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks an address the way the sender will parse it.
pub fn validate_recipient(addr: &str) -> Result<(), String> {
    if addr.len() > 254 {
        return Err(format!("recipient {addr:?} is longer than 254 characters"));
    }
    addr.parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| format!("recipient {addr:?} is not an email address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(Mailer::new("smtp://127.0.0.1:2525", "rampart@example.net").is_ok());
        assert!(Mailer::new("smtps://u:p%40ss@mail.example.net", "rampart@example.net").is_ok());
        assert!(Mailer::new("smtp+starttls://mail.example.net:587", "a@b.example").is_ok());
        for (url, from) in [
            ("smtp://u:p@mail.example.net", "a@b.example"),
            ("ftp://mail.example.net", "a@b.example"),
            ("smtp://127.0.0.1", "not an address"),
            ("no url", "a@b.example"),
        ] {
            assert!(Mailer::new(url, from).is_err(), "{url} {from}");
        }
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
    }

    #[test]
    fn recipients_are_checked() {
        assert!(validate_recipient("soc@acme.example").is_ok());
        assert!(validate_recipient("not-an-address").is_err());
        assert!(validate_recipient(&format!("{}@x.example", "a".repeat(260))).is_err());
    }
}
