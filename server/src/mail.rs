//! Outgoing mail: an outbox table and the worker that empties it.
//!
//! A feature that needs to tell someone something calls [`enqueue`] inside the transaction of
//! the event itself, so a mail exists exactly when its event committed. A [`Worker`] (one per
//! server instance, started by `main`) claims due mails and delivers them over SMTP (lettre,
//! STARTTLS or implicit TLS, with credentials), or, with no SMTP configured, writes them as
//! `.eml` files (mode 0600) into `DATA_DIR/outbox/`.
//!
//! Claiming is one conditional `update` (`... where mail_id = $1 and state = 'queued' and
//! (lease_until is null or lease_until < now)`): whichever instance's update changes the row
//! owns the mail until its lease runs out, so several instances never send the same mail twice.
//! Failures are retried with exponential backoff; after the last attempt the mail is marked
//! `failed` and shows on the admin page. A mail queued for later ([`enqueue_at`], the undo
//! window of a release) can be `cancelled` until a worker claims it ([`cancel_in`]). Delivered bodies are erased from the table (they may
//! carry one-time codes); recipient, subject and times stay as a record.

use crate::clock::{Clock, UnixTime};
use crate::db::Db;
use crate::error::{Error, Result};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One mail to send. Subjects are neutral and bodies never carry file names, pupil details or
/// passphrases (POLICY P6): the caller writes them, this module only delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMail {
    /// The recipient's address.
    pub to: String,
    /// The subject line (one line).
    pub subject: String,
    /// The plain-text body.
    pub body_text: String,
}

/// Queues a mail in the outbox inside the caller's transaction (same transaction as the event).
///
/// A `&mut Transaction<'_, Any>` derefs to `AnyConnection`: call `mail::enqueue(&mut tx, ...)`.
/// Refuses an address that is not a valid mailbox and a subject with line breaks.
pub async fn enqueue(
    conn: &mut sqlx::AnyConnection,
    mail: &OutgoingMail,
    now: time::OffsetDateTime,
) -> Result<(), Error> {
    enqueue_at(conn, mail, now, now).await.map(|_| ())
}

/// Like [`enqueue`], but the mail is not due before `send_at` (the undo window of a release):
/// until then [`cancel_in`] can take it back. Returns the mail's id.
pub async fn enqueue_at(
    conn: &mut sqlx::AnyConnection,
    mail: &OutgoingMail,
    now: time::OffsetDateTime,
    send_at: time::OffsetDateTime,
) -> Result<i64, Error> {
    parse_mailbox(&mail.to).map_err(|_| {
        Error::BadInput(format!(
            "`{}` is not an email address that mail can be sent to; check the address",
            mail.to
        ))
    })?;
    if mail.subject.contains(['\r', '\n']) || mail.subject.trim().is_empty() {
        return Err(Error::BadInput(
            "a mail subject must be one non-empty line".into(),
        ));
    }
    let now = now.unix_timestamp();
    let send_at = send_at.unix_timestamp().max(now);
    let row = sqlx::query(
        "insert into mail_outbox (recipient, subject, body_text, created_at, state, attempts, next_attempt_at) \
         values ($1, $2, $3, $4, 'queued', 0, $5) returning mail_id",
    )
    .bind(mail.to.trim())
    .bind(&mail.subject)
    .bind(&mail.body_text)
    .bind(now)
    .bind(send_at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("mail_id")?)
}

/// Cancels a queued mail that no worker has claimed or tried yet, inside the caller's
/// transaction: its state becomes `cancelled` and its body is erased. One conditional update,
/// so it cannot race a worker's claim (which needs `state = 'queued'`): either the cancel wins
/// and the mail is never sent, or the worker has it and this returns false.
pub async fn cancel_in(conn: &mut sqlx::AnyConnection, mail_id: i64) -> Result<bool, Error> {
    let done = sqlx::query(
        "update mail_outbox set state = 'cancelled', body_text = '' \
         where mail_id = $1 and state = 'queued' and attempts = 0 and claimed_by is null",
    )
    .bind(mail_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn parse_mailbox(address: &str) -> std::result::Result<Mailbox, lettre::address::AddressError> {
    address.trim().parse::<Mailbox>()
}

/// How a mail leaves the server.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// Through an SMTP server.
    Smtp(SmtpSettings),
    /// As `.eml` files in this folder (no SMTP configured).
    Folder(PathBuf),
}

impl Delivery {
    /// One line for the admin pages and the start-up log (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Delivery::Smtp(s) => format!(
                "Mail is sent through the SMTP server {}:{} ({}).",
                s.host,
                s.port,
                match s.security {
                    Security::StartTls => "STARTTLS",
                    Security::ImplicitTls => "TLS",
                    Security::None => "no encryption",
                }
            ),
            Delivery::Folder(dir) => format!(
                "No SMTP server is configured: mail is not sent but written as files to {}. Set --smtp-url to send it.",
                dir.display()
            ),
        }
    }

    /// Whether mail actually leaves the server.
    pub fn sends(&self) -> bool {
        matches!(self, Delivery::Smtp(_))
    }
}

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic); port 587.
    StartTls,
    /// TLS from the first byte (`smtps://`); port 465.
    ImplicitTls,
    /// No encryption: only for a relay on this machine (`?tls=none`, loopback host).
    None,
}

/// A checked SMTP configuration. `Debug` never shows the password.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Server host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connection security.
    pub security: Security,
    /// User name, when the server wants one.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<SecretString>,
    /// An extra trusted root certificate (PEM), for a relay with a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

impl SmtpSettings {
    /// Parses `smtp://[user[:password]@]host[:port][?tls=starttls|none]` or
    /// `smtps://[user@]host[:port]`. A password given separately (`--smtp-password-file`)
    /// wins over one in the URL. Errors say what to write instead.
    pub fn parse(url: &str, password: Option<SecretString>) -> std::result::Result<Self, String> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| {
            format!("--smtp-url is not a URL ({e}); write e.g. smtp://user@mail.school.sch.uk:587")
        })?;
        let implicit = match parsed.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => {
                return Err(format!(
                "--smtp-url must start with smtp:// (STARTTLS) or smtps:// (TLS), not {other}://"
            ))
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("--smtp-url has no host name; write e.g. smtp://mail.school.sch.uk:587")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut security = if implicit {
            Security::ImplicitTls
        } else {
            Security::StartTls
        };
        for (key, value) in parsed.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "starttls") if !implicit => security = Security::StartTls,
                ("tls", "none") if !implicit => security = Security::None,
                ("tls", v) => {
                    return Err(format!(
                        "--smtp-url: tls={v} is not understood; use smtp://...?tls=starttls (the default), smtp://...?tls=none (local relay only) or smtps://"
                    ))
                }
                (k, _) => {
                    return Err(format!(
                        "--smtp-url: unknown option `{k}`; the only option is tls=starttls|none"
                    ))
                }
            }
        }
        let port = parsed.port().unwrap_or(if implicit { 465 } else { 587 });
        let user = match parsed.username() {
            "" => None,
            u => Some(percent_decode(u)),
        };
        let url_password = parsed
            .password()
            .map(|p| SecretString::from(percent_decode(p)));
        let password = password.or(url_password);
        if password.is_some() && user.is_none() {
            return Err(
                "an SMTP password is set but --smtp-url names no user; write smtp://USER@host"
                    .into(),
            );
        }
        if user.is_some() && password.is_none() {
            return Err(format!(
                "--smtp-url names the user {} but no password is set; give --smtp-password-file (or SAFEHAND_SMTP_PASSWORD_FILE)",
                user.as_deref().unwrap_or_default()
            ));
        }
        if security == Security::None {
            let local = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .map(|a| a.is_loopback())
                    .unwrap_or(false);
            if !local {
                return Err(format!(
                    "--smtp-url: tls=none is only allowed for a relay on this machine (localhost), not {host}; remove ?tls=none to use STARTTLS"
                ));
            }
        }
        Ok(Self {
            host,
            port,
            security,
            user,
            password,
            ca_pem: None,
        })
    }

    fn transport(&self) -> std::result::Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let tls_parameters = || {
            let mut builder = TlsParameters::builder(self.host.clone());
            if let Some(pem) = &self.ca_pem {
                let cert = Certificate::from_pem(pem)
                    .map_err(|e| format!("--smtp-ca-file is not a PEM certificate: {e}"))?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build_rustls()
                .map_err(|e| format!("cannot set up TLS for SMTP: {e}"))
        };
        let tls = match self.security {
            Security::StartTls => Tls::Required(tls_parameters()?),
            Security::ImplicitTls => Tls::Wrapper(tls_parameters()?),
            Security::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(builder.build())
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// Retry timing: attempt n (from 1) that fails waits `first_retry * 2^(n-1)`, at most
/// `max_wait`; after `max_attempts` failures the mail is marked failed.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub first_retry: Duration,
    /// Longest wait between attempts.
    pub max_wait: Duration,
    /// Attempts before giving up.
    pub max_attempts: i64,
    /// How long a claim lasts (longer than one delivery can take).
    pub lease: Duration,
    /// How often an idle worker looks for due mail.
    pub poll: Duration,
}

impl Default for RetryPolicy {
    /// 1 min, 2, 4, ... up to 1 h between attempts, 12 attempts (about 7 hours), 5-minute
    /// leases, a look every 2 seconds.
    fn default() -> Self {
        Self {
            first_retry: Duration::from_secs(60),
            max_wait: Duration::from_secs(3600),
            max_attempts: 12,
            lease: Duration::from_secs(300),
            poll: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    fn wait_after(&self, attempts: i64) -> i64 {
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let wait = self
            .first_retry
            .as_secs()
            .saturating_mul(1u64 << exponent)
            .min(self.max_wait.as_secs())
            .max(1);
        i64::try_from(wait).unwrap_or(i64::MAX)
    }
}

/// One mail as the admin page shows it.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    /// Row id.
    pub mail_id: i64,
    /// Recipient address.
    pub recipient: String,
    /// Subject.
    pub subject: String,
    /// `queued`, `sent`, `failed` or `cancelled`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// When it was queued.
    pub created_at: UnixTime,
    /// When it was delivered.
    pub sent_at: Option<UnixTime>,
    /// The last delivery error (no secrets: lettre's message or an I/O error).
    pub last_error: Option<String>,
}

/// Counts of mails by state, for the admin page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Waiting for (another) attempt.
    pub queued: i64,
    /// Delivered.
    pub sent: i64,
    /// Given up.
    pub failed: i64,
}

/// Mails by state.
pub async fn counts(db: &Db) -> Result<OutboxCounts> {
    let rows = sqlx::query("select state, count(*) as n from mail_outbox group by state")
        .fetch_all(db.pool())
        .await?;
    let mut out = OutboxCounts::default();
    for row in rows {
        let n: i64 = row.try_get("n")?;
        match row.try_get::<String, _>("state")?.as_str() {
            "queued" => out.queued = n,
            "sent" => out.sent = n,
            "failed" => out.failed = n,
            _ => {}
        }
    }
    Ok(out)
}

/// The newest `limit` mails, newest first.
pub async fn recent(db: &Db, limit: i64) -> Result<Vec<OutboxEntry>> {
    let rows = sqlx::query(
        "select mail_id, recipient, subject, state, attempts, created_at, sent_at, last_error \
         from mail_outbox order by mail_id desc limit $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OutboxEntry {
                mail_id: r.try_get("mail_id")?,
                recipient: r.try_get("recipient")?,
                subject: r.try_get("subject")?,
                state: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
                sent_at: crate::db::opt_i64(r, "sent_at")?,
                last_error: r.try_get::<Option<String>, _>("last_error")?,
            })
        })
        .collect()
}

/// Delivers the outbox. One per server instance; any number may share a database.
#[derive(Debug)]
pub struct Worker {
    db: Db,
    clock: Clock,
    sender: Sender,
    from: Mailbox,
    policy: RetryPolicy,
    /// This worker's name in `claimed_by` (random per process).
    id: String,
}

enum Sender {
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>, String),
    Folder(PathBuf),
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sender::Smtp(_, d) => write!(f, "Smtp({d})"),
            Sender::Folder(p) => write!(f, "Folder({})", p.display()),
        }
    }
}

/// What one pass over the outbox did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Mails delivered.
    pub sent: usize,
    /// Mails that failed and will be tried again.
    pub retrying: usize,
    /// Mails given up on.
    pub failed: usize,
}

impl Worker {
    /// A worker delivering through `delivery` with mails from `from` (e.g.
    /// `Safehand <safehand@school.sch.uk>`). Errors (bad sender address, bad TLS settings,
    /// unusable outbox folder) say which setting to fix.
    pub fn new(
        db: Db,
        clock: Clock,
        delivery: &Delivery,
        from: &str,
        policy: RetryPolicy,
    ) -> std::result::Result<Self, String> {
        let from = parse_mailbox(from).map_err(|e| {
            format!("--mail-from `{from}` is not a mail address ({e}); write e.g. \"Safehand <safehand@school.sch.uk>\"")
        })?;
        let sender = match delivery {
            Delivery::Smtp(settings) => {
                Sender::Smtp(Box::new(settings.transport()?), delivery.describe())
            }
            Delivery::Folder(dir) => {
                create_private_dir(dir).map_err(|e| {
                    format!(
                        "cannot create the mail outbox folder {}: {e}",
                        dir.display()
                    )
                })?;
                Sender::Folder(dir.clone())
            }
        };
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        Ok(Self {
            db,
            clock,
            sender,
            from,
            policy,
            id: format!("{}-{}", std::process::id(), hex::encode(id)),
        })
    }

    /// Tries the SMTP server once (connect, TLS, login), for the start-up check.
    pub async fn check_connection(&self) -> std::result::Result<(), String> {
        match &self.sender {
            Sender::Smtp(transport, describe) => match transport.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("{describe} The server did not answer NOOP.")),
                Err(e) if credentials_refused(&e) => Err(credentials_refused_text(&e)),
                Err(e) => Err(smtp_error_text(&e)),
            },
            Sender::Folder(_) => Ok(()),
        }
    }

    /// Claims and delivers every mail due now, once each. Returns what happened.
    pub async fn run_once(&self) -> Result<Pass> {
        let mut pass = Pass::default();
        loop {
            let now = self.clock.now();
            let due = sqlx::query(
                "select mail_id from mail_outbox \
                 where state = 'queued' and next_attempt_at <= $1 \
                   and (lease_until is null or lease_until < $1) \
                 order by next_attempt_at, mail_id limit 20",
            )
            .bind(now)
            .fetch_all(self.db.pool())
            .await?;
            if due.is_empty() {
                if pass.sent > 0 {
                    // Delivered bodies (links, codes) were erased: truncate the WAL too.
                    self.db.checkpoint_wal().await;
                }
                return Ok(pass);
            }
            let mut claimed_any = false;
            for row in due {
                let mail_id: i64 = row.try_get("mail_id")?;
                if !self.claim(mail_id).await? {
                    continue; // another instance has it
                }
                claimed_any = true;
                match self.deliver(mail_id).await? {
                    Outcome::Sent => pass.sent += 1,
                    Outcome::Retrying => pass.retrying += 1,
                    Outcome::Failed => pass.failed += 1,
                }
            }
            if !claimed_any {
                if pass.sent > 0 {
                    self.db.checkpoint_wal().await;
                }
                return Ok(pass);
            }
        }
    }

    /// The atomic claim: true when this worker now owns the mail.
    async fn claim(&self, mail_id: i64) -> Result<bool> {
        let now = self.clock.now();
        let lease = i64::try_from(self.policy.lease.as_secs()).unwrap_or(300);
        let done = sqlx::query(
            "update mail_outbox set claimed_by = $1, lease_until = $2 \
             where mail_id = $3 and state = 'queued' and next_attempt_at <= $4 \
               and (lease_until is null or lease_until < $4)",
        )
        .bind(&self.id)
        .bind(now + lease)
        .bind(mail_id)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn deliver(&self, mail_id: i64) -> Result<Outcome> {
        let row = sqlx::query(
            "select recipient, subject, body_text, attempts from mail_outbox where mail_id = $1",
        )
        .bind(mail_id)
        .fetch_one(self.db.pool())
        .await?;
        let recipient: String = row.try_get("recipient")?;
        let subject: String = row.try_get("subject")?;
        let body: String = row.try_get("body_text")?;
        let attempts: i64 = row.try_get::<i64, _>("attempts")? + 1;
        let result = match self.build(&recipient, &subject, body) {
            Ok(message) => self.send(mail_id, message).await,
            Err(e) => Err(Failure::Permanent(e)),
        };
        let now = self.clock.now();
        match result {
            Ok(()) => {
                sqlx::query(
                    "update mail_outbox set state = 'sent', sent_at = $1, attempts = $2, body_text = '', \
                     claimed_by = null, lease_until = null, last_error = null \
                     where mail_id = $3 and claimed_by = $4",
                )
                .bind(now)
                .bind(attempts)
                .bind(mail_id)
                .bind(&self.id)
                .execute(self.db.pool())
                .await?;
                tracing::info!(mail_id, attempts, "mail delivered");
                Ok(Outcome::Sent)
            }
            Err(failure) => {
                let (permanent, text) = match failure {
                    Failure::Permanent(t) => (true, t),
                    Failure::Transient(t) => (false, t),
                };
                let give_up = permanent || attempts >= self.policy.max_attempts;
                let next = now + self.policy.wait_after(attempts);
                sqlx::query(
                    "update mail_outbox set state = $1, attempts = $2, next_attempt_at = $3, \
                     claimed_by = null, lease_until = null, last_error = $4 \
                     where mail_id = $5 and claimed_by = $6",
                )
                .bind(if give_up { "failed" } else { "queued" })
                .bind(attempts)
                .bind(next)
                .bind(&text)
                .bind(mail_id)
                .bind(&self.id)
                .execute(self.db.pool())
                .await?;
                if give_up {
                    tracing::error!(mail_id, attempts, error = %text, "mail delivery failed; giving up");
                    Ok(Outcome::Failed)
                } else {
                    tracing::warn!(mail_id, attempts, error = %text, retry_at = next, "mail delivery failed; will retry");
                    Ok(Outcome::Retrying)
                }
            }
        }
    }

    fn build(&self, to: &str, subject: &str, body: String) -> std::result::Result<Message, String> {
        let to = parse_mailbox(to).map_err(|e| format!("bad recipient address: {e}"))?;
        // A Message-ID in the sender's domain (spam filters mark mail without one).
        let domain = self.from.email.domain().to_string();
        let id = hex::encode(rand::random::<[u8; 16]>());
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(Some(format!("<{id}@{domain}>")))
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("cannot build the message: {e}"))
    }

    async fn send(&self, mail_id: i64, message: Message) -> std::result::Result<(), Failure> {
        match &self.sender {
            Sender::Smtp(transport, _) => match transport.send(message).await {
                Ok(_) => Ok(()),
                Err(e) if credentials_refused(&e) => {
                    Err(Failure::Transient(credentials_refused_text(&e)))
                }
                Err(e) if e.is_permanent() => Err(Failure::Permanent(smtp_error_text(&e))),
                Err(e) => Err(Failure::Transient(smtp_error_text(&e))),
            },
            Sender::Folder(dir) => write_eml(dir, mail_id, &message.formatted())
                .map_err(|e| Failure::Transient(format!("cannot write to {}: {e}", dir.display()))),
        }
    }

    /// Runs until `stop` turns true: delivers due mail, then waits `policy.poll`. The mail in
    /// hand is finished before stopping.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.run_once().await {
                tracing::warn!(error = %e, "mail worker pass failed");
            }
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(self.policy.poll) => {}
            }
        }
    }

    /// Starts [`Worker::run`] on the runtime; stop it with [`WorkerHandle::stop`].
    pub fn spawn(self) -> WorkerHandle {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(self.run(rx));
        WorkerHandle { stop: tx, task }
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Asks the worker to stop and waits until it has (after the mail in hand).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

enum Outcome {
    Sent,
    Retrying,
    Failed,
}

enum Failure {
    /// Will not get better by trying again (bad address, permanent 5xx reply).
    Permanent(String),
    /// Connection refused, timeout, 4xx: try again later.
    Transient(String),
}

/// Replies that mean the relay did not accept our credentials (RFC 4954: 530 authentication
/// required, 534 mechanism too weak, 535 credentials invalid, 538 encryption required). They
/// are permanent replies, but the fault is a setting, not the mail: the mail waits and is
/// retried (until the last attempt) so that fixing the password delivers it.
fn credentials_refused(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .is_some_and(|code| matches!(u16::from(code), 530 | 534 | 535 | 538))
}

fn credentials_refused_text(e: &lettre::transport::smtp::Error) -> String {
    format!(
        "the SMTP server refused Safehand's user name or password; check the user in --smtp-url and the password in --smtp-password-file, then restart (mail waits and is retried). The server said: {}",
        smtp_error_text(e)
    )
}

/// lettre's error text, which names the stage and the server's reply but never credentials.
fn smtp_error_text(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(500).collect()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `NNNNNNNNNN.eml` (mode 0600) through a temporary file, so a reader never sees half a
/// message. Writing the same mail again (after a crash) replaces the file.
fn write_eml(dir: &Path, mail_id: i64, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let final_path = dir.join(format!("{mail_id:010}.eml"));
    let temp = dir.join(format!(".{mail_id:010}.eml.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, &final_path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        let s = SmtpSettings::parse(
            "smtp://relay%40school@mail.school.sch.uk",
            Some(SecretString::from("pw".to_string())),
        )
        .unwrap();
        assert_eq!(s.host, "mail.school.sch.uk");
        assert_eq!(s.port, 587);
        assert_eq!(s.security, Security::StartTls);
        assert_eq!(s.user.as_deref(), Some("relay@school"));
        let s = SmtpSettings::parse("smtps://mail.example.org", None).unwrap();
        assert_eq!((s.port, s.security), (465, Security::ImplicitTls));
        let s = SmtpSettings::parse("smtp://127.0.0.1:2525?tls=none", None).unwrap();
        assert_eq!((s.port, s.security), (2525, Security::None));
        let s = SmtpSettings::parse("smtp://u:p%2Bq@h", None).unwrap();
        assert_eq!(s.password.unwrap().expose_secret(), "p+q");
    }

    #[test]
    fn bad_smtp_urls_say_what_to_do() {
        let e = SmtpSettings::parse("smtp://mail.example.org?tls=none", None).unwrap_err();
        assert!(
            e.contains("only allowed for a relay on this machine"),
            "{e}"
        );
        let e = SmtpSettings::parse("http://mail.example.org", None).unwrap_err();
        assert!(e.contains("smtp://"), "{e}");
        let e = SmtpSettings::parse("smtp://sam@mail.example.org", None).unwrap_err();
        assert!(e.contains("--smtp-password-file"), "{e}");
        let e = SmtpSettings::parse("smtp://mail.example.org?tls=maybe", None).unwrap_err();
        assert!(e.contains("tls=maybe"), "{e}");
        let e = SmtpSettings::parse("smtp://h?x=1", None).unwrap_err();
        assert!(e.contains("unknown option"), "{e}");
    }

    #[test]
    fn password_never_in_debug() {
        let s = SmtpSettings::parse("smtp://u:hunter2hunter2@h", None).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!Delivery::Smtp(s).describe().contains("hunter2"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.wait_after(1), 60);
        assert_eq!(p.wait_after(2), 120);
        assert_eq!(p.wait_after(3), 240);
        assert_eq!(p.wait_after(7), 3600);
        assert_eq!(p.wait_after(100), 3600);
    }
}
