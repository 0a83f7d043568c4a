//! The `email_smtp` channel: e-mail through an SMTP server (lettre, pooled connections).
//!
//! Connection: `tls: starttls` (default, port 587) upgrades the connection with STARTTLS
//! and refuses a server that does not offer it; `implicit` (port 465) speaks TLS from the
//! first byte; `none` (port 25) is plain text, for local test servers only. Certificates
//! are checked against the public (Mozilla) roots, plus the CA certificates of `ca_file`
//! when set (a relay whose certificate a private CA signed). With `username` and
//! `password` herald authenticates (AUTH PLAIN or LOGIN).
//!
//! Pool: at most `pool_size` (default [`DEFAULT_POOL_SIZE`]) connections are open at once,
//! and they stay open between messages. The pool is herald's own ([`pool`]), not the
//! one of lettre's `AsyncSmtpTransport`: lettre hands a used connection back in a task
//! spawned when it is dropped, so a send worker starting its next message right away found
//! the pool empty and opened (and authenticated) one more connection, which was then
//! closed because the pool was full. Here a connection is back in the pool before `send`
//! returns. A connection idle longer than [`IDLE_LIMIT`] is closed instead of reused.
//!
//! A message is `multipart/alternative` with a `text/plain` and a `text/html` part when the
//! template has both (one part when it has one), with `From`, `To`, `Reply-To`, `Subject`
//! and a `Message-ID` derived from the delivery's idempotency key (`<KEY@from-domain>`), so
//! a reader can drop the duplicate of a message sent twice. The Message-ID is also the
//! delivery's provider message id.
//!
//! Unsubscribe (RFC 2369 and RFC 8058): when the channel has a `public_url` and a key (its
//! `unsubscribe_secret`, else its `password`), every message carries
//! `List-Unsubscribe: <{public_url}/v1/unsubscribe/TOKEN>, <mailto:FROM?subject=unsubscribe>`
//! and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. The token names the channel and
//! the contact and carries an HMAC-SHA256 of both and the medium under the key
//! ([`unsubscribe_token`]); herald's `/v1/unsubscribe/{token}` checks it and opts the contact
//! out of e-mail. The mailto form reaches the `from` mailbox, which herald does not read.
//!
//! Replies: 2xx sent; 4xx transient (greylisting, a full mailbox, rate limits); 5xx
//! permanent (no such user, refused content). Errors without a reply (cannot connect, TLS,
//! timeouts, a dropped connection) are transient. SMTP has no idempotency key: a delivery
//! left in `sending` by a crash becomes `unknown`. Reasons quote the server's reply, never
//! the credentials.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT};
use lettre::{Address, Message};
use sha2::Sha256;

mod pool;

use self::pool::{Connector, Pool, Security};
pub use self::pool::{IDLE_LIMIT, TRANSACTION_TIMEOUT};
use super::{ChannelError, SendOutcome};
use crate::message::{Content, EmailMessage, OutboundMessage};
use crate::secrets::{SecretResolver, SecretString};
use crate::spec::channel::{Medium, SmtpSettings, SmtpTls};

/// SMTP has no idempotency key: a re-sent message arrives twice.
pub const HONOURS_IDEMPOTENCY_KEY: bool = false;

/// The default of `max_in_flight`: as many sends as pooled connections.
pub const DEFAULT_POOL_SIZE: u32 = 4;

/// How long opening a connection may take: the TCP connect, TLS, the greeting, EHLO,
/// STARTTLS and AUTH together. lettre itself bounds only the TCP connect.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The path unsubscribe links point at, under the public URL.
pub const UNSUBSCRIBE_PATH: &str = "/v1/unsubscribe/";

type HmacSha256 = Hmac<Sha256>;

/// Sends through one SMTP account.
pub struct EmailSmtpChannel {
    name: String,
    pool: Pool,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    /// `{public_url}` without a trailing slash and the key of the links' HMAC; `None`
    /// when the channel has no public URL or no key (then no List-Unsubscribe header).
    unsubscribe: Option<(String, SecretString)>,
    max_in_flight: usize,
}

impl std::fmt::Debug for EmailSmtpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSmtpChannel")
            .field("name", &self.name)
            .field("from", &self.from.to_string())
            .field("pool_size", &self.pool.size)
            .field("unsubscribe_links", &self.unsubscribe.is_some())
            .finish_non_exhaustive()
    }
}

impl EmailSmtpChannel {
    /// Resolves the password and the unsubscribe key, parses the addresses and sets up the
    /// connection pool. No network I/O (connections open on the first send).
    pub fn from_spec(
        name: &str,
        settings: &SmtpSettings,
        secrets: &SecretResolver,
        max_in_flight: Option<usize>,
    ) -> Result<EmailSmtpChannel, ChannelError> {
        let invalid = |field: &str, reason: String| ChannelError::InvalidSetting {
            channel: name.to_string(),
            field: format!("email_smtp.{field}"),
            reason,
        };
        let from: Mailbox = settings
            .from
            .value
            .parse()
            .map_err(|e| invalid("from", format!("not an e-mail address: {e}")))?;
        let reply_to = match &settings.reply_to {
            Some(r) => Some(
                r.value
                    .parse::<Mailbox>()
                    .map_err(|e| invalid("reply_to", format!("not an e-mail address: {e}")))?,
            ),
            None => None,
        };
        let password = match &settings.password {
            Some(p) => Some(secrets.resolve(p).map_err(|source| ChannelError::Secret {
                channel: name.to_string(),
                field: "email_smtp.password".into(),
                source,
            })?),
            None => None,
        };
        let host = settings.host.value.trim();
        if host.is_empty() {
            return Err(invalid("host", "is empty".into()));
        }
        let tls = settings.tls.as_ref().map_or(SmtpTls::Starttls, |t| t.value);
        // With `ca_file` the private CA is trusted in addition to the public roots;
        // without it, the public roots only (what lettre's relay constructors use).
        let tls_parameters = match (&settings.ca_file, tls) {
            (None, SmtpTls::None) => None,
            (None, _) => Some(
                TlsParameters::new(host.to_string())
                    .map_err(|e| invalid("host", format!("cannot set up TLS: {e}")))?,
            ),
            (Some(_), SmtpTls::None) => {
                return Err(invalid("ca_file", "needs TLS, but `tls` is `none`".into()));
            }
            (Some(path), _) => {
                let roots = private_roots(&path.value).map_err(|r| invalid("ca_file", r))?;
                let params = TlsParameters::builder(host.to_string())
                    .add_root_certificate(roots)
                    .build()
                    .map_err(|e| {
                        invalid(
                            "ca_file",
                            format!("{}: cannot trust its certificates: {e}", path.value),
                        )
                    })?;
                Some(params)
            }
        };
        let (security, default_port) = match (tls, tls_parameters) {
            (SmtpTls::Starttls, Some(params)) => (Security::Starttls(params), SUBMISSION_PORT),
            (SmtpTls::Implicit, Some(params)) => (Security::Implicit(params), SUBMISSIONS_PORT),
            _ => (Security::Plain, SMTP_PORT),
        };
        let credentials = match (&settings.username, &password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.value.clone(),
                password.expose().to_string(),
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid("password", "is required with `username`".into()));
            }
            (None, Some(_)) => {
                return Err(invalid("username", "is required with `password`".into()));
            }
        };
        let pool_size = settings
            .pool_size
            .as_ref()
            .map_or(DEFAULT_POOL_SIZE, |n| n.value)
            .max(1);
        let pool = Pool::new(
            Connector {
                host: host.to_string(),
                port: settings.port.as_ref().map_or(default_port, |p| p.value),
                security,
                // As lettre's transport does: the machine's host name, else [127.0.0.1].
                hello: ClientId::default(),
                credentials,
            },
            pool_size as usize,
        );
        let key = unsubscribe_key(name, settings, secrets)?;
        let unsubscribe = match (&settings.public_url, key) {
            (Some(url), Some(key)) => {
                let base = url.value.trim().trim_end_matches('/');
                if !(base.starts_with("https://") || base.starts_with("http://")) {
                    return Err(invalid(
                        "public_url",
                        "must be an http:// or https:// URL".into(),
                    ));
                }
                Some((base.to_string(), key))
            }
            _ => None,
        };
        Ok(EmailSmtpChannel {
            name: name.to_string(),
            pool,
            from,
            reply_to,
            unsubscribe,
            max_in_flight: max_in_flight.unwrap_or(pool_size as usize).max(1),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn medium(&self) -> Medium {
        Medium::Email
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Contact `contact_id`'s one-click unsubscribe link on this channel, when the channel
    /// has a public URL and a key. Templates get it as `{{ unsubscribe_url }}`; the
    /// List-Unsubscribe header carries the same link.
    pub fn unsubscribe_url(&self, contact_id: &str) -> Option<String> {
        let (base, key) = self.unsubscribe.as_ref()?;
        let token = unsubscribe_token(key.expose().as_bytes(), &self.name, contact_id);
        Some(format!("{base}{UNSUBSCRIBE_PATH}{token}"))
    }

    /// Sends the message over a pooled connection and classifies the reply (module docs).
    pub async fn send(&self, message: &OutboundMessage) -> SendOutcome {
        let Content::Email(content) = &message.content else {
            return SendOutcome::permanent("not an e-mail message");
        };
        let message_id = message_id(&message.idempotency_key, &self.from);
        let email = match self.build(message, content, &message_id) {
            Ok(email) => email,
            Err(reason) => return SendOutcome::permanent(reason),
        };
        match self.pool.send(email.envelope(), &email.formatted()).await {
            Ok(()) => SendOutcome::Sent {
                provider_message_id: Some(message_id),
            },
            Err(outcome) => outcome,
        }
    }

    /// The MIME message for `content` to `message.to`.
    fn build(
        &self,
        message: &OutboundMessage,
        content: &EmailMessage,
        message_id: &str,
    ) -> Result<Message, String> {
        let to: Address = message
            .to
            .trim()
            .parse()
            .map_err(|e| format!("the contact's address is not an e-mail address: {e}"))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(content.subject.clone())
            .message_id(Some(message_id.to_string()))
            .date_now();
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        // The engine rendered the message with this contact's link (see `unsubscribe_url`).
        if let Some(link) = &content.unsubscribe_url {
            let mailto = format!("mailto:{}?subject=unsubscribe", self.from.email);
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{link}>, <{mailto}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let text = content.text.as_ref().map(|t| {
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(t.clone())
        });
        let html = content.html.as_ref().map(|h| {
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(h.clone())
        });
        let built = match (text, html) {
            (Some(text), Some(html)) => {
                builder.multipart(MultiPart::alternative().singlepart(text).singlepart(html))
            }
            (Some(part), None) | (None, Some(part)) => builder.singlepart(part),
            (None, None) => return Err("the e-mail has neither a text nor an html body".into()),
        };
        built.map_err(|e| format!("cannot build the e-mail: {e}"))
    }
}

/// The certificates of the PEM file at `path` (`email_smtp.ca_file`), as one root set; the
/// error says what is wrong with the file and names it.
fn private_roots(path: &str) -> Result<Certificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // lettre's parser skips what is not a certificate, so a key file or any other text
    // would parse as an empty set and quietly trust nothing extra: refuse it here.
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !pem.windows(marker.len()).any(|w| w == marker) {
        return Err(format!(
            "{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Certificate::from_pem(&pem).map_err(|e| format!("{path}: not PEM certificates: {e}"))
}

/// An SMTP failure as an outcome: a 5xx reply permanent, a 4xx reply and every error
/// without a reply (connection, TLS, timeout) transient.
pub fn classify(error: &lettre::transport::smtp::Error) -> SendOutcome {
    let reason = super::body_excerpt(error.to_string().as_bytes());
    if error.is_permanent() {
        SendOutcome::permanent(reason)
    } else {
        SendOutcome::transient(reason)
    }
}

/// `<KEY@domain-of-from>`, the key reduced to characters valid in a Message-ID.
pub fn message_id(idempotency_key: &str, from: &Mailbox) -> String {
    let local: String = idempotency_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("<{local}@{}>", from.email.domain())
}

/// The token of contact `contact_id`'s unsubscribe link on channel `channel`:
/// `base64url(channel).base64url(contact_id).base64url(HMAC-SHA256(key, those two joined
/// by '.', then ".email"))`. Forging one needs the key.
pub fn unsubscribe_token(key: &[u8], channel: &str, contact_id: &str) -> String {
    let head = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(channel),
        URL_SAFE_NO_PAD.encode(contact_id)
    );
    let tag = token_mac(key, &head).finalize().into_bytes();
    format!("{head}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn token_mac(key: &[u8], head: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(head.as_bytes());
    mac.update(b".");
    mac.update(Medium::Email.as_str().as_bytes());
    mac
}

/// An unsubscribe token read back, not yet checked: the channel says which key to check
/// it with ([`UnsubscribeToken::verifies`]).
#[derive(Debug)]
pub struct UnsubscribeToken {
    pub channel: String,
    pub contact_id: String,
    head: String,
    tag: Vec<u8>,
}

impl UnsubscribeToken {
    /// The token's parts, or `None` when it is not shaped like one.
    pub fn parse(token: &str) -> Option<UnsubscribeToken> {
        let mut parts = token.split('.');
        let (channel, contact, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let text = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        };
        Some(UnsubscribeToken {
            channel: text(channel)?,
            contact_id: text(contact)?,
            head: format!("{channel}.{contact}"),
            tag: URL_SAFE_NO_PAD.decode(tag).ok()?,
        })
    }

    /// Whether the HMAC verifies under `key` (compared in constant time).
    pub fn verifies(&self, key: &[u8]) -> bool {
        token_mac(key, &self.head).verify_slice(&self.tag).is_ok()
    }
}

/// The key channel `name`'s unsubscribe links are signed with: `unsubscribe_secret`, else
/// `password`; `None` when it has neither (its messages then carry no links).
pub fn unsubscribe_key(
    name: &str,
    settings: &SmtpSettings,
    secrets: &SecretResolver,
) -> Result<Option<SecretString>, ChannelError> {
    let (secret, field) = match (&settings.unsubscribe_secret, &settings.password) {
        (Some(s), _) => (s, "unsubscribe_secret"),
        (None, Some(p)) => (p, "password"),
        (None, None) => return Ok(None),
    };
    secrets
        .resolve(secret)
        .map(Some)
        .map_err(|source| ChannelError::Secret {
            channel: name.to_string(),
            field: format!("email_smtp.{field}"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    use super::*;

    #[test]
    fn a_token_verifies_under_its_key_only() {
        let token = unsubscribe_token(b"key-1", "mail", "c-42");
        let parsed = UnsubscribeToken::parse(&token).expect("parses");
        assert_eq!(parsed.channel, "mail");
        assert_eq!(parsed.contact_id, "c-42");
        assert!(parsed.verifies(b"key-1"));
        assert!(!parsed.verifies(b"key-2"));
    }

    #[test]
    fn a_token_for_another_contact_does_not_verify() {
        let token = unsubscribe_token(b"key", "mail", "c-42");
        let tag = token.rsplit('.').next().unwrap();
        let forged = format!(
            "{}.{}.{tag}",
            URL_SAFE_NO_PAD.encode("mail"),
            URL_SAFE_NO_PAD.encode("c-43")
        );
        assert!(!UnsubscribeToken::parse(&forged).unwrap().verifies(b"key"));
        assert!(UnsubscribeToken::parse("not-a-token").is_none());
        assert!(UnsubscribeToken::parse("a.b.c.d").is_none());
    }

    /// Settings of a channel on 127.0.0.1 plus the YAML lines `extra` (top-level keys).
    fn settings(extra: &str) -> SmtpSettings {
        let yaml = format!("host: 127.0.0.1\nfrom: \"news@acme.example\"\n{extra}");
        serde_saphyr::from_str(&yaml).expect("valid email_smtp settings")
    }

    fn ca_file_error(extra: &str, dir: &std::path::Path) -> String {
        let err =
            EmailSmtpChannel::from_spec("mail", &settings(extra), &SecretResolver::new(dir), None)
                .expect_err("the ca_file is refused");
        let ChannelError::InvalidSetting { channel, field, .. } = &err else {
            panic!("not an invalid setting: {err}");
        };
        assert_eq!(
            (channel.as_str(), field.as_str()),
            ("mail", "email_smtp.ca_file")
        );
        err.to_string()
    }

    #[test]
    fn an_unreadable_ca_file_is_an_error_naming_the_field_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-ca.pem");
        let message = ca_file_error(&format!("ca_file: {}\n", path.display()), dir.path());
        assert!(message.contains("email_smtp.ca_file"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("cannot read"), "{message}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A key where the CA certificate should be: PEM, but nothing to trust.
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let not_certificates = [
            ("key.pem", key.as_str()),
            ("empty.pem", ""),
            ("text.pem", "just some text\n"),
        ];
        for (name, text) in not_certificates {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let message = ca_file_error(&format!("ca_file: {}\n", path.display()), dir.path());
            assert!(message.contains("no PEM certificate"), "{name}: {message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    #[test]
    fn an_unparsable_certificate_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            // Not base64 at all: the PEM parser refuses it.
            (
                "garbled.pem",
                "-----BEGIN CERTIFICATE-----\n@@@ not base64 @@@\n-----END CERTIFICATE-----\n",
                "not PEM certificates",
            ),
            // Base64 of bytes that are no X.509 certificate ("hello world"): PEM parses,
            // the root store refuses it.
            (
                "not-x509.pem",
                "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
                "cannot trust its certificates",
            ),
        ];
        for (name, text, why) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let message = ca_file_error(&format!("ca_file: {}\n", path.display()), dir.path());
            assert!(message.contains(why), "{name}: {message}");
            assert!(
                message.contains(&path.display().to_string()),
                "{name}: {message}"
            );
        }
    }

    #[test]
    fn a_ca_file_with_tls_none_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let message = ca_file_error("tls: none\nca_file: ca.pem\n", dir.path());
        assert!(message.contains("none"), "{message}");
    }

    /// A real CA file is accepted for both TLS modes; no connection is opened (and no
    /// runtime is needed: the pool starts no task).
    #[test]
    fn a_ca_file_of_certificates_sets_up_both_tls_modes() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = dir.path().join("ca.pem");
        // Two certificates in one file: a bundle, as the setting allows.
        std::fs::write(&path, format!("{}{}", ca.pem(), ca.pem())).unwrap();
        for tls in ["starttls", "implicit"] {
            let extra = format!("tls: {tls}\nca_file: {}\n", path.display());
            let channel = EmailSmtpChannel::from_spec(
                "mail",
                &settings(&extra),
                &SecretResolver::new(dir.path()),
                None,
            );
            assert!(channel.is_ok(), "{tls}: {:?}", channel.err());
        }
    }

    /// What the fake SMTP server of the pool tests saw.
    #[derive(Default)]
    struct Seen {
        /// Connections accepted so far.
        opened: AtomicUsize,
        /// Connections open now, and the most ever open at once.
        open: AtomicUsize,
        most_open: AtomicUsize,
        auths: AtomicUsize,
        quits: AtomicUsize,
        messages: AtomicUsize,
    }

    const USER: &str = "herald-user";
    const PASSWORD: &str = "pool-pass-0123456789";

    /// An SMTP server on 127.0.0.1 speaking just enough of RFC 5321 (and AUTH PLAIN, RFC
    /// 4616) for lettre's client: greeting, EHLO with AUTH, MAIL, RCPT (`550` for
    /// bounce@), DATA, NOOP, RSET, QUIT. It counts connections and what came over them.
    async fn fake_smtp() -> (u16, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(fake_session(stream, counts.clone()));
            }
        });
        (port, seen)
    }

    async fn fake_session(stream: tokio::net::TcpStream, seen: Arc<Seen>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        seen.opened.fetch_add(1, SeqCst);
        let now_open = seen.open.fetch_add(1, SeqCst) + 1;
        seen.most_open.fetch_max(now_open, SeqCst);
        let (read, mut write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read).lines();
        let plain =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
        let _ = write.write_all(b"220 fake.test ESMTP\r\n").await;
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            let answer = if in_data {
                if line != "." {
                    continue;
                }
                in_data = false;
                seen.messages.fetch_add(1, SeqCst);
                "250 2.0.0 accepted".to_string()
            } else {
                let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" => "250-fake.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME".into(),
                    "AUTH" if line == format!("AUTH PLAIN {plain}") => {
                        seen.auths.fetch_add(1, SeqCst);
                        "235 2.7.0 authenticated".into()
                    }
                    "AUTH" => "535 5.7.8 authentication credentials invalid".into(),
                    "MAIL" | "NOOP" | "RSET" => "250 2.0.0 ok".into(),
                    "RCPT" if line.contains("bounce@") => "550 5.1.1 no such user".into(),
                    "RCPT" => "250 2.1.5 ok".into(),
                    "DATA" => {
                        in_data = true;
                        "354 end data with <CR><LF>.<CR><LF>".into()
                    }
                    "QUIT" => {
                        // Counted before the reply, so a client that waits for it sees it.
                        seen.quits.fetch_add(1, SeqCst);
                        seen.open.fetch_sub(1, SeqCst);
                        let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                        return;
                    }
                    _ => "502 5.5.2 command not recognized".into(),
                }
            };
            if write
                .write_all(format!("{answer}\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        seen.open.fetch_sub(1, SeqCst);
    }

    /// Channel `mail` on the fake server: plain text, AUTH with `password`, `pool_size`.
    fn pool_channel(port: u16, pool_size: u32, password: &str) -> EmailSmtpChannel {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), password).unwrap();
        let extra = format!(
            "port: {port}\ntls: none\nusername: {USER}\npassword: \"${{file:password}}\"\n\
             pool_size: {pool_size}\n"
        );
        EmailSmtpChannel::from_spec(
            "mail",
            &settings(&extra),
            &SecretResolver::new(dir.path()),
            None,
        )
        .unwrap()
    }

    fn mail_to(to: &str) -> OutboundMessage {
        OutboundMessage {
            delivery_id: 1,
            idempotency_key: format!("run1:{to}"),
            run_id: 1,
            campaign: "promo".into(),
            channel: "mail".into(),
            contact_id: "c-1".into(),
            to: to.into(),
            content: Content::Email(EmailMessage {
                subject: "Hola".into(),
                html: None,
                text: Some("20% OFF".into()),
                unsubscribe_url: None,
            }),
            test: false,
        }
    }

    fn is_sent(outcome: &SendOutcome) -> bool {
        matches!(outcome, SendOutcome::Sent { .. })
    }

    /// Eight sends at once through a pool of 2: never more than 2 connections open, each
    /// authenticated once, and later sends reuse them instead of opening more.
    #[tokio::test]
    async fn sends_at_once_share_at_most_pool_size_connections() {
        let (port, seen) = fake_smtp().await;
        let channel = pool_channel(port, 2, PASSWORD);
        let sends = (0..8).map(|n| mail_to(&format!("reader{n}@example.com")));
        let sends: Vec<OutboundMessage> = sends.collect();
        let outcomes = futures_util::future::join_all(sends.iter().map(|m| channel.send(m))).await;
        assert!(outcomes.iter().all(is_sent), "{outcomes:?}");
        for n in 0..3 {
            let outcome = channel
                .send(&mail_to(&format!("later{n}@example.com")))
                .await;
            assert!(is_sent(&outcome), "{outcome:?}");
        }
        assert_eq!(seen.messages.load(SeqCst), 11);
        assert!(seen.most_open.load(SeqCst) <= 2);
        assert!((1..=2).contains(&seen.opened.load(SeqCst)));
        assert_eq!(seen.auths.load(SeqCst), seen.opened.load(SeqCst));
    }

    /// A connection idle past the limit is ended with QUIT and replaced, not reused: with
    /// the limit at zero every idle connection is past it. With the default limit the
    /// same two sends share one connection.
    #[tokio::test]
    async fn a_connection_idle_past_the_limit_is_closed_not_reused() {
        let (port, seen) = fake_smtp().await;
        let channel = pool_channel(port, 1, PASSWORD);
        for to in ["a@example.com", "b@example.com"] {
            assert!(is_sent(&channel.send(&mail_to(to)).await));
        }
        assert_eq!((seen.opened.load(SeqCst), seen.quits.load(SeqCst)), (1, 0));

        let (port, seen) = fake_smtp().await;
        let mut channel = pool_channel(port, 1, PASSWORD);
        channel.pool.idle_limit = Duration::ZERO;
        for to in ["a@example.com", "b@example.com"] {
            assert!(is_sent(&channel.send(&mail_to(to)).await));
        }
        assert_eq!((seen.opened.load(SeqCst), seen.quits.load(SeqCst)), (2, 1));
        // The old session was over before the new one opened.
        assert_eq!(seen.most_open.load(SeqCst), 1);
    }

    /// An error reply makes lettre abort the session: it is not put back, and the next
    /// message goes over a new connection (and is sent).
    #[tokio::test]
    async fn a_connection_that_got_an_error_reply_is_not_reused() {
        let (port, seen) = fake_smtp().await;
        let channel = pool_channel(port, 1, PASSWORD);
        let outcome = channel.send(&mail_to("bounce@example.com")).await;
        let SendOutcome::Permanent { reason, .. } = &outcome else {
            panic!("a 550 is permanent: {outcome:?}");
        };
        assert!(
            reason.contains("550") && reason.contains("no such user"),
            "{reason}"
        );
        let outcome = channel.send(&mail_to("ana@example.com")).await;
        assert!(is_sent(&outcome), "{outcome:?}");
        assert_eq!(seen.opened.load(SeqCst), 2);
        assert_eq!(seen.quits.load(SeqCst), 1, "the aborted session said QUIT");
        assert_eq!(seen.messages.load(SeqCst), 1);
    }

    /// Refused credentials: permanent, the reason quoting the server and not the password,
    /// the session ended with QUIT rather than kept.
    #[tokio::test]
    async fn refused_credentials_retry_the_message_and_end_the_session() {
        let (port, seen) = fake_smtp().await;
        let channel = pool_channel(port, 1, "a-wrong-password-42");
        let outcome = channel.send(&mail_to("ana@example.com")).await;
        // The channel's credentials, not the message, are wrong: retried (the campaign's
        // attempts give time to fix the password), never failed at once.
        let SendOutcome::Transient { reason, .. } = &outcome else {
            panic!("a refused AUTH is transient: {outcome:?}");
        };
        assert!(reason.contains("535"), "{reason}");
        assert!(reason.contains("cannot open an SMTP session"), "{reason}");
        assert!(!reason.contains("a-wrong-password-42"), "{reason}");
        assert_eq!((seen.auths.load(SeqCst), seen.quits.load(SeqCst)), (0, 1));
        assert_eq!(seen.open.load(SeqCst), 0);
    }

    #[test]
    fn the_message_id_keeps_the_key_readable() {
        let from: Mailbox = "Acme <news@acme.example>".parse().unwrap();
        assert_eq!(message_id("run7:c 1/x", &from), "<run7-c-1-x@acme.example>");
    }
}
