//! herald's own pool of SMTP sessions for one `email_smtp` channel.
//!
//! lettre's pool hands a used connection back from a task spawned when it is dropped, so a
//! send worker starting its next message at once finds the pool empty and opens (and
//! AUTHs) another: more connections than `pool_size`, the extras closed again on return.
//! Here a send puts its connection back before it returns.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::sync::Semaphore;

use super::{TIMEOUT, classify};
use crate::channels::SendOutcome;

/// How long one message's transaction (MAIL, RCPT, DATA, the message, the final reply) may
/// take. Only a guard against a server that stops answering, which would otherwise hold
/// one of the pool's connections for ever: RFC 5321 (4.5.3.2.6) has a client wait at least
/// 10 minutes for the reply to the message data, and giving up sooner risks a duplicate
/// (the server may have accepted it; the retry sends it again).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(600);

/// A connection idle this long is closed (QUIT) instead of reused. Reusing one younger
/// than that without a NOOP saves a round trip per message while a campaign runs: RFC 5321
/// (4.5.3.2.7) asks servers to wait at least 5 minutes for the next command, so a session
/// idle under a minute is normally still there. If a server dropped it anyway, the send
/// fails without a reply, which is transient: the delivery is retried on a new connection.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How long closing a connection (QUIT and its reply) may take before the socket is just
/// dropped: a server that went away must not hold up the send that closes its session.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a connection is secured: `tls: none`, `starttls` (required) or `implicit`.
pub(super) enum Security {
    Plain,
    /// STARTTLS before anything else; a server that does not offer it is refused, so
    /// neither the password nor a message goes out in plain text.
    Starttls(TlsParameters),
    /// TLS from the first byte (SMTPS).
    Implicit(TlsParameters),
}

/// What opening a connection needs: the channel's server, TLS and credentials.
pub(super) struct Connector {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) security: Security,
    pub(super) hello: ClientId,
    pub(super) credentials: Option<Credentials>,
}

impl Connector {
    /// A new session, ready for MAIL: connected (TLS from the first byte for `implicit`),
    /// greeted, EHLO said, upgraded with STARTTLS and EHLO said again for `starttls`, then
    /// authenticated when the channel has credentials.
    async fn connect(&self) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let implicit = match &self.security {
            Security::Implicit(params) => Some(params.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(TIMEOUT),
            &self.hello,
            implicit,
            None,
        )
        .await?;
        if let Security::Starttls(params) = &self.security {
            // On failure the connection is dropped without a QUIT: after a failed TLS
            // handshake lettre has no stream left to write one on (it would panic).
            conn.starttls(params.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials
            && let Err(e) = conn.auth(DEFAULT_MECHANISMS, credentials).await
        {
            // Refused credentials leave a working session: end it politely.
            close(conn).await;
            return Err(e);
        }
        Ok(conn)
    }
}

/// herald's pool of SMTP sessions for one channel.
///
/// Every open connection is either idle in `idle` or in the hands of a send holding one
/// of the `size` permits, and a send opens a connection only while it holds a permit and
/// no connection: so never more than `size` are open at once. A send puts its connection
/// back before it lets its permit go and before it returns, so the next send (of the same
/// worker or another) finds it there.
pub(super) struct Pool {
    connector: Connector,
    pub(super) size: usize,
    permits: Semaphore,
    /// Oldest first (a connection is pushed when it comes back).
    idle: Mutex<Vec<Idle>>,
    /// [`IDLE_LIMIT`]; shorter in unit tests.
    pub(super) idle_limit: Duration,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

impl Pool {
    pub(super) fn new(connector: Connector, size: usize) -> Pool {
        Pool {
            connector,
            size,
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::new()),
            idle_limit: IDLE_LIMIT,
        }
    }

    /// One SMTP transaction for `envelope` and the message `raw`, on an idle connection
    /// or a new one; a failure as its outcome (see [`classify`]).
    pub(super) async fn send(&self, envelope: &Envelope, raw: &[u8]) -> Result<(), SendOutcome> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let mut conn = match self.take_idle().await {
            Some(conn) => conn,
            None => self.open().await?,
        };
        match tokio::time::timeout(TRANSACTION_TIMEOUT, conn.send(envelope, raw)).await {
            Ok(result) => {
                self.put_back(conn);
                result.map(|_| ()).map_err(|e| classify(&e))
            }
            // Cut off mid-transaction, the session is in no known state: dropped (the
            // socket closes; a QUIT would wait on the same silent server).
            Err(_) => Err(SendOutcome::transient(format!(
                "network error: no reply from the SMTP server within {} s",
                TRANSACTION_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The most recently used idle connection, after closing those idle past the limit.
    /// Most recent first, so that when fewer sends are in flight than connections are
    /// open, the ones not needed age out and get closed.
    async fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (conn, stale) = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                match idle.first() {
                    None => return None,
                    // One at a time, under this send's permit: while it is being closed it
                    // still counts against the pool's size.
                    Some(oldest) if oldest.since.elapsed() >= self.idle_limit => {
                        (idle.remove(0).conn, true)
                    }
                    Some(_) => (idle.pop().expect("not empty").conn, false),
                }
            };
            if !stale {
                return Some(conn);
            }
            close(conn).await;
        }
    }

    /// A new connection (see [`Connector::connect`]), or why not as an outcome. Always
    /// transient, even a 5xx (a refused AUTH, a 554 greeting): it is the channel's trouble,
    /// not the message's, so a rotated password fails no delivery while someone fixes it
    /// within the campaign's retries.
    async fn open(&self) -> Result<AsyncSmtpConnection, SendOutcome> {
        match tokio::time::timeout(TIMEOUT, self.connector.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(match classify(&e) {
                SendOutcome::Permanent { reason, .. } => {
                    SendOutcome::transient(format!("cannot open an SMTP session: {reason}"))
                }
                other => other,
            }),
            Err(_) => Err(SendOutcome::transient(format!(
                "network error: no reply from the SMTP server within {} s while connecting",
                TIMEOUT.as_secs()
            ))),
        }
    }

    /// Back to the pool after a transaction, unless it broke. lettre's `send` aborts the
    /// session (QUIT, then closes the socket) on any error reply or I/O error, since it
    /// does not know what state the server is in: such a connection is already closed
    /// and is dropped here. An error lettre finds before MAIL (non-ASCII the server did
    /// not say it takes) leaves the session as it was: it goes back.
    fn put_back(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Idle {
                conn,
                since: Instant::now(),
            });
    }
}

/// Ends a session politely when the server still answers: QUIT (unless it broke), then
/// the socket is closed.
async fn close(mut conn: AsyncSmtpConnection) {
    let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.abort()).await;
}
