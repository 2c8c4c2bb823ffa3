//! Configuration: command-line flags with environment-variable fallbacks, `*_FILE` variants for
//! secrets, checked once at start-up. Unknown `SAFEHAND_*` variables are refused, so a typo is
//! an error rather than a silently ignored setting.

use crate::accounts::Role;
use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// `safehand-server`: the Safehand secure file-exchange service.
#[derive(Debug, Parser)]
#[command(name = "safehand-server", version, about, long_about = None)]
pub struct Cli {
    /// Settings (each also readable from the environment).
    #[command(flatten)]
    pub config: Config,
    /// Operator commands; with none, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Server settings.
#[derive(Debug, Args)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(
        long,
        env = "SAFEHAND_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Folder for the SQLite database, the server key, blobs and the mail outbox.
    #[arg(
        long,
        env = "SAFEHAND_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// The address people use to reach the service, e.g. https://safehand.school.sch.uk
    /// (used in links; defaults to http://LISTEN).
    #[arg(long, env = "SAFEHAND_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// Database: sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in the data folder).
    #[arg(long, env = "DATABASE_URL", value_parser = secret, hide_env_values = true, global = true)]
    pub database_url: Option<SecretString>,

    /// File holding the database URL (for secrets managers).
    #[arg(long, env = "DATABASE_URL_FILE", global = true)]
    pub database_url_file: Option<PathBuf>,

    /// The server key (64 hex digits or base64 of 32 bytes) that encrypts secrets at rest.
    /// Default: DATA_DIR/server.key, created when absent.
    #[arg(long, env = "SAFEHAND_SERVER_KEY", value_parser = secret, hide_env_values = true, global = true)]
    pub server_key: Option<SecretString>,

    /// File holding the server key.
    #[arg(long, env = "SAFEHAND_SERVER_KEY_FILE", global = true)]
    pub server_key_file: Option<PathBuf>,

    /// File holding the audit key, which MACs the audit log's records and signs its heads.
    /// Default: DATA_DIR/audit.key, created when absent. Every instance needs the same one.
    #[arg(long, env = "SAFEHAND_AUDIT_KEY_FILE", global = true)]
    pub audit_key_file: Option<PathBuf>,

    /// Sessions end after this long without activity (e.g. 15m, 900s, 1h).
    #[arg(long, env = "SAFEHAND_SESSION_IDLE_TIMEOUT", default_value = "15m", value_parser = duration_secs, global = true)]
    pub session_idle_timeout: i64,

    /// Sessions end this long after sign-in, however active.
    #[arg(long, env = "SAFEHAND_SESSION_MAX_AGE", default_value = "12h", value_parser = duration_secs, global = true)]
    pub session_max_age: i64,

    /// Failed sign-ins on one account before it locks.
    #[arg(long, env = "SAFEHAND_SIGN_IN_LOCK_AFTER", default_value_t = 10, value_parser = clap::value_parser!(i64).range(2..=1000), global = true)]
    pub sign_in_lock_after: i64,

    /// How long a locked account stays locked (also the window failures are counted over).
    #[arg(long, env = "SAFEHAND_SIGN_IN_LOCK_DURATION", default_value = "15m", value_parser = duration_secs, global = true)]
    pub sign_in_lock_duration: i64,

    /// Serve HTTPS directly with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "SAFEHAND_TLS_CERT", requires = "tls_key", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key for --tls-cert.
    #[arg(long, env = "SAFEHAND_TLS_KEY", requires = "tls_cert", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Connections served at once; past this, clients are told to try again in a few seconds.
    #[arg(long, env = "SAFEHAND_MAX_CONNECTIONS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub max_connections: u32,

    /// Time a client has to send a request's headers, from connecting or from the end of its
    /// previous request (idle connections are closed after it).
    #[arg(long, env = "SAFEHAND_HEADER_TIMEOUT", default_value = "10s", value_parser = duration_secs, global = true)]
    pub header_timeout: i64,

    /// Time an upload may send nothing (or a download client read nothing) before the
    /// connection is closed.
    #[arg(long, env = "SAFEHAND_BODY_IDLE_TIMEOUT", default_value = "60s", value_parser = duration_secs, global = true)]
    pub body_idle_timeout: i64,

    /// On shutdown, time requests in flight get to finish.
    #[arg(long, env = "SAFEHAND_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration_secs, global = true)]
    pub drain_timeout: i64,

    /// Addresses of reverse proxies whose X-Forwarded-For header is trusted (comma-separated).
    #[arg(
        long,
        env = "SAFEHAND_TRUSTED_PROXY",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxy: Vec<IpAddr>,

    /// SMTP server for outgoing mail: smtp://[USER@]HOST[:587] (STARTTLS),
    /// smtps://[USER@]HOST[:465] (TLS), or smtp://localhost:25?tls=none (a relay on this
    /// machine). Without it, mail is written to DATA_DIR/outbox/*.eml instead of sent.
    #[arg(long, env = "SAFEHAND_SMTP_URL", value_parser = secret, hide_env_values = true, global = true)]
    pub smtp_url: Option<SecretString>,

    /// Password for the SMTP user named in --smtp-url.
    #[arg(long, env = "SAFEHAND_SMTP_PASSWORD", value_parser = secret, hide_env_values = true, global = true)]
    pub smtp_password: Option<SecretString>,

    /// File holding the SMTP password.
    #[arg(long, env = "SAFEHAND_SMTP_PASSWORD_FILE", global = true)]
    pub smtp_password_file: Option<PathBuf>,

    /// Extra trusted CA certificate (PEM) for an SMTP relay with a private certificate.
    #[arg(long, env = "SAFEHAND_SMTP_CA_FILE", global = true)]
    pub smtp_ca_file: Option<PathBuf>,

    /// Sender of the service's mail, e.g. "Safehand <safehand@school.sch.uk>" (required with
    /// --smtp-url; default safehand@ the public address's host).
    #[arg(long, env = "SAFEHAND_MAIL_FROM", global = true)]
    pub mail_from: Option<String>,

    /// S3-compatible blob store endpoint, e.g. https://s3.eu-west-2.amazonaws.com (default:
    /// blobs in DATA_DIR/blobs).
    #[arg(long, env = "SAFEHAND_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,

    /// The bucket (must exist).
    #[arg(long, env = "SAFEHAND_S3_BUCKET", global = true)]
    pub s3_bucket: Option<String>,

    /// The bucket's region.
    #[arg(
        long,
        env = "SAFEHAND_S3_REGION",
        default_value = "us-east-1",
        global = true
    )]
    pub s3_region: String,

    /// S3 access key id.
    #[arg(long, env = "SAFEHAND_S3_ACCESS_KEY_ID", value_parser = secret, hide_env_values = true, global = true)]
    pub s3_access_key_id: Option<SecretString>,

    /// File holding the S3 access key id.
    #[arg(long, env = "SAFEHAND_S3_ACCESS_KEY_ID_FILE", global = true)]
    pub s3_access_key_id_file: Option<PathBuf>,

    /// S3 secret access key.
    #[arg(long, env = "SAFEHAND_S3_SECRET_ACCESS_KEY", value_parser = secret, hide_env_values = true, global = true)]
    pub s3_secret_access_key: Option<SecretString>,

    /// File holding the S3 secret access key.
    #[arg(long, env = "SAFEHAND_S3_SECRET_ACCESS_KEY_FILE", global = true)]
    pub s3_secret_access_key_file: Option<PathBuf>,

    /// Allow an http:// S3 endpoint (a store on this machine or a trusted private network).
    #[arg(long, env = "SAFEHAND_S3_ALLOW_HTTP", global = true)]
    pub s3_allow_http: bool,

    /// Keep Safehand's objects under this folder of the bucket, e.g. `safehand` (default: the
    /// bucket's top). Multipart uploads cut off by a crash are aborted under it only.
    #[arg(long, env = "SAFEHAND_S3_PREFIX", global = true)]
    pub s3_prefix: Option<String>,
}

/// Operator commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage users and check the audit log from the server's own shell.
    Admin {
        /// What to do.
        #[command(subcommand)]
        action: AdminCommand,
    },
}

/// `safehand-server admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a user and print their one-time enrolment link.
    CreateUser {
        /// Their email address (what they sign in with).
        #[arg(long)]
        email: String,
        /// Their name as shown to others.
        #[arg(long)]
        name: String,
        /// A role (repeat for several): staff, approver, admin, technician.
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<Role>,
    },
    /// Disable a user: their sessions and API tokens end at once.
    DisableUser {
        /// The user's email address.
        email: String,
    },
    /// Enable a disabled user again (also lifts a sign-in lock).
    EnableUser {
        /// The user's email address.
        email: String,
    },
    /// Remove a user's TOTP enrolment; they enrol again at their next sign-in.
    ResetTotp {
        /// The user's email address.
        email: String,
    },
    /// Force a password reset: print a one-time link to set a new password.
    ResetPassword {
        /// The user's email address.
        email: String,
    },
    /// Check the audit log's chain (hashes, MACs under the audit key, signed heads) and report
    /// the first broken link.
    AuditVerify,
    /// Write the whole audit log as JSON with a head signed now (what the audit page's JSON
    /// export without filters gives), for `safehand audit-verify` on another computer.
    AuditExport {
        /// Where to write it (created 0600; refuses to replace a file).
        file: std::path::PathBuf,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Replace the server key: seal every secret at rest again under a new key, keep the old
    /// key file beside it as server.key.retired-DATE-KEYID. Stop the service first. Safe to run
    /// again after an interruption: it resumes.
    RotateKey,
}

fn secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.to_string()))
}

/// Parses `90`, `90s`, `15m`, `12h`, `7d` into seconds.
pub fn duration_secs(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 90s, 15m, 12h or 7d"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    let secs = n.checked_mul(factor).ok_or("duration too long")?;
    if secs <= 0 {
        return Err("the duration must be more than zero".into());
    }
    Ok(secs)
}

/// Environment variables this program reads; any other `SAFEHAND_*` variable is an error.
const KNOWN_ENV: &[&str] = &[
    "SAFEHAND_LISTEN",
    "SAFEHAND_DATA_DIR",
    "SAFEHAND_PUBLIC_URL",
    "SAFEHAND_SERVER_KEY",
    "SAFEHAND_SERVER_KEY_FILE",
    "SAFEHAND_SESSION_IDLE_TIMEOUT",
    "SAFEHAND_SESSION_MAX_AGE",
    "SAFEHAND_SIGN_IN_LOCK_AFTER",
    "SAFEHAND_SIGN_IN_LOCK_DURATION",
    "SAFEHAND_TRUSTED_PROXY",
    "SAFEHAND_MAX_CONNECTIONS",
    "SAFEHAND_HEADER_TIMEOUT",
    "SAFEHAND_BODY_IDLE_TIMEOUT",
    "SAFEHAND_DRAIN_TIMEOUT",
    "SAFEHAND_TLS_CERT",
    "SAFEHAND_TLS_KEY",
    "SAFEHAND_LOG",
    "SAFEHAND_SMTP_URL",
    "SAFEHAND_SMTP_PASSWORD",
    "SAFEHAND_SMTP_PASSWORD_FILE",
    "SAFEHAND_SMTP_CA_FILE",
    "SAFEHAND_MAIL_FROM",
    "SAFEHAND_S3_ENDPOINT",
    "SAFEHAND_S3_BUCKET",
    "SAFEHAND_S3_REGION",
    "SAFEHAND_S3_ACCESS_KEY_ID",
    "SAFEHAND_S3_ACCESS_KEY_ID_FILE",
    "SAFEHAND_S3_SECRET_ACCESS_KEY",
    "SAFEHAND_S3_SECRET_ACCESS_KEY_FILE",
    "SAFEHAND_S3_ALLOW_HTTP",
];

/// Prefixes of `SAFEHAND_*` variables that belong to other programs sharing the environment
/// (the test suites and the `safehand` CLI's test hooks): never refused.
const OTHER_PROGRAMS: &[&str] = &["SAFEHAND_TEST_", "SAFEHAND_WIPE_TEST_"];

/// Whether the server refuses to start with this environment variable set.
fn unknown_env(name: &str) -> bool {
    name.starts_with("SAFEHAND_")
        && !KNOWN_ENV.contains(&name)
        && !OTHER_PROGRAMS.iter().any(|p| name.starts_with(p))
}

/// Settings after checking, ready to run with.
#[derive(Debug)]
pub struct Resolved {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data folder (created, mode 0700).
    pub data_dir: PathBuf,
    /// Public base URL without a trailing slash.
    pub public_url: String,
    /// Database URL.
    pub database_url: SecretString,
    /// Server key (from configuration), if not from the key file.
    pub server_key: Option<SecretString>,
    /// Key file used when no key is configured.
    pub server_key_file: PathBuf,
    /// The audit key file.
    pub audit_key_file: PathBuf,
    /// How mail leaves the server.
    pub mail: crate::mail::Delivery,
    /// Sender address of the service's mail.
    pub mail_from: String,
    /// Where blobs are kept.
    pub blobs: BlobStore,
}

/// Where blobs are kept.
#[derive(Debug)]
pub enum BlobStore {
    /// A local folder.
    Folder(PathBuf),
    /// An S3-compatible bucket.
    S3(crate::blobs::S3Settings),
}

/// Reads a secret from a `*_FILE` setting (trimmed; the file should be mode 0600).
fn read_secret_file(setting: &str, path: &std::path::Path) -> Result<SecretString, String> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {setting} {}: {e}", path.display()))?,
    );
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{setting} {} is empty", path.display()));
    }
    Ok(SecretString::from(text.to_string()))
}

/// A secret given directly or through a file, not both.
fn one_secret(
    direct: &Option<SecretString>,
    file: &Option<PathBuf>,
    direct_name: &str,
    file_name: &str,
) -> Result<Option<SecretString>, String> {
    match (direct, file) {
        (Some(_), Some(_)) => Err(format!(
            "give either {direct_name} or {file_name}, not both"
        )),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => read_secret_file(file_name, path).map(Some),
        (None, None) => Ok(None),
    }
}

impl Config {
    /// Checks the settings and resolves defaults; errors say which setting is wrong.
    pub fn resolve(&self) -> Result<Resolved, String> {
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if unknown_env(&name) {
                return Err(format!(
                    "unknown setting {name} in the environment; known settings: {}",
                    KNOWN_ENV.join(", ")
                ));
            }
        }
        if self.session_idle_timeout > self.session_max_age {
            return Err("--session-idle-timeout cannot be longer than --session-max-age".into());
        }
        let public_url = match &self.public_url {
            Some(u) => {
                let u = u.trim().trim_end_matches('/').to_string();
                if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 {
                    return Err(format!(
                        "--public-url / SAFEHAND_PUBLIC_URL must start with https:// or http:// (got `{u}`)"
                    ));
                }
                if u.contains(char::is_whitespace) || u.contains('?') || u.contains('#') {
                    return Err(format!("--public-url `{u}` must be a plain base address"));
                }
                u
            }
            None if self.tls_cert.is_some() => format!("https://{}", self.listen),
            None => format!("http://{}", self.listen),
        };
        let database_url = match (&self.database_url, &self.database_url_file) {
            (Some(_), Some(_)) => {
                return Err("give either DATABASE_URL or DATABASE_URL_FILE, not both".into())
            }
            (Some(u), None) => u.clone(),
            (None, Some(path)) => SecretString::from(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read DATABASE_URL_FILE {}: {e}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => SecretString::from(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("safehand.db").display()
            )),
        };
        let url = database_url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err("DATABASE_URL must start with sqlite:// or postgres://".into());
        }
        if self.server_key.is_some() && self.server_key_file.is_some() {
            return Err(
                "give either SAFEHAND_SERVER_KEY or SAFEHAND_SERVER_KEY_FILE, not both".into(),
            );
        }
        let mail = match &self.smtp_url {
            Some(url) => {
                let password = one_secret(
                    &self.smtp_password,
                    &self.smtp_password_file,
                    "--smtp-password (SAFEHAND_SMTP_PASSWORD)",
                    "--smtp-password-file (SAFEHAND_SMTP_PASSWORD_FILE)",
                )?;
                let mut smtp = crate::mail::SmtpSettings::parse(url.expose_secret(), password)?;
                if let Some(path) = &self.smtp_ca_file {
                    smtp.ca_pem = Some(std::fs::read(path).map_err(|e| {
                        format!("cannot read --smtp-ca-file {}: {e}", path.display())
                    })?);
                }
                crate::mail::Delivery::Smtp(smtp)
            }
            None => {
                if self.smtp_password.is_some() || self.smtp_password_file.is_some() {
                    return Err(
                        "an SMTP password is set but no --smtp-url (SAFEHAND_SMTP_URL)".into(),
                    );
                }
                crate::mail::Delivery::Folder(self.data_dir.join("outbox"))
            }
        };
        let mail_from = match (&self.mail_from, mail.sends()) {
            (Some(from), _) => from.trim().to_string(),
            (None, true) => {
                return Err("--mail-from (SAFEHAND_MAIL_FROM) is required with --smtp-url; write e.g. \"Safehand <safehand@school.sch.uk>\"".into())
            }
            (None, false) => {
                let host = url::Url::parse(&public_url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .filter(|h| h.contains('.') && h.parse::<IpAddr>().is_err())
                    .unwrap_or_else(|| "localhost".into());
                format!("Safehand <safehand@{host}>")
            }
        };
        let blobs = match (&self.s3_endpoint, &self.s3_bucket) {
            (None, None) => {
                if self.s3_access_key_id.is_some()
                    || self.s3_prefix.is_some()
                    || self.s3_access_key_id_file.is_some()
                    || self.s3_secret_access_key.is_some()
                    || self.s3_secret_access_key_file.is_some()
                {
                    return Err(
                        "S3 credentials or a prefix are set but no --s3-endpoint and --s3-bucket"
                            .into(),
                    );
                }
                BlobStore::Folder(self.data_dir.join("blobs"))
            }
            (Some(endpoint), Some(bucket)) => {
                let id = one_secret(
                    &self.s3_access_key_id,
                    &self.s3_access_key_id_file,
                    "--s3-access-key-id",
                    "--s3-access-key-id-file",
                )?
                .ok_or("--s3-access-key-id (SAFEHAND_S3_ACCESS_KEY_ID or ..._FILE) is required with --s3-endpoint")?;
                let secret = one_secret(
                    &self.s3_secret_access_key,
                    &self.s3_secret_access_key_file,
                    "--s3-secret-access-key",
                    "--s3-secret-access-key-file",
                )?
                .ok_or("--s3-secret-access-key (SAFEHAND_S3_SECRET_ACCESS_KEY or ..._FILE) is required with --s3-endpoint")?;
                BlobStore::S3(crate::blobs::S3Settings {
                    endpoint: endpoint.trim().to_string(),
                    bucket: bucket.trim().to_string(),
                    region: self.s3_region.trim().to_string(),
                    access_key_id: id.expose_secret().to_string(),
                    secret_access_key: secret,
                    allow_http: self.s3_allow_http,
                    prefix: self
                        .s3_prefix
                        .as_deref()
                        .map(|p| p.trim().trim_matches('/').to_string())
                        .filter(|p| !p.is_empty()),
                })
            }
            (Some(_), None) => {
                return Err("--s3-endpoint needs --s3-bucket (SAFEHAND_S3_BUCKET)".into())
            }
            (None, Some(_)) => {
                return Err("--s3-bucket needs --s3-endpoint (SAFEHAND_S3_ENDPOINT)".into())
            }
        };
        Ok(Resolved {
            mail,
            mail_from,
            blobs,
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            public_url,
            database_url,
            server_key: self.server_key.clone(),
            server_key_file: self
                .server_key_file
                .clone()
                .unwrap_or_else(|| self.data_dir.join("server.key")),
            audit_key_file: self
                .audit_key_file
                .clone()
                .unwrap_or_else(|| self.data_dir.join("audit.key")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_secs("15m"), Ok(900));
        assert_eq!(duration_secs("90"), Ok(90));
        assert_eq!(duration_secs("12h"), Ok(43_200));
        assert!(duration_secs("0s").is_err());
        assert!(duration_secs("soon").is_err());
        assert!(duration_secs("5y").is_err());
    }

    #[test]
    fn database_url_is_redacted_in_debug() {
        let cli = Cli::parse_from([
            "safehand-server",
            "--database-url",
            "postgres://u:hunter2hunter2@db/x",
        ]);
        assert!(!format!("{cli:?}").contains("hunter2"));
    }

    #[test]
    fn variables_of_tests_and_the_cli_are_not_refused() {
        assert!(!unknown_env("SAFEHAND_TEST_SMTP_ADDR"));
        assert!(!unknown_env("SAFEHAND_WIPE_TEST_DIR"));
        assert!(!unknown_env("SAFEHAND_SMTP_URL"));
        assert!(unknown_env("SAFEHAND_LISTN"));
        assert!(!unknown_env("HOME"));
    }

    #[test]
    fn smtp_settings_are_checked() {
        let cli = Cli::parse_from(["safehand-server", "--smtp-url", "smtp://mail.example.org"]);
        let e = cli.config.resolve().unwrap_err();
        assert!(e.contains("--mail-from"), "{e}");
        let cli = Cli::parse_from([
            "safehand-server",
            "--smtp-url",
            "smtp://u:hunter2hunter2@mail.example.org",
            "--mail-from",
            "Safehand <safehand@example.org>",
        ]);
        assert!(!format!("{cli:?}").contains("hunter2"));
        let r = cli.config.resolve().unwrap();
        assert!(r.mail.sends());
        assert!(!format!("{r:?}").contains("hunter2"));
        let cli = Cli::parse_from(["safehand-server", "--smtp-password-file", "/nonexistent"]);
        assert!(cli.config.resolve().unwrap_err().contains("--smtp-url"));
    }

    #[test]
    fn s3_settings_are_checked() {
        let cli = Cli::parse_from(["safehand-server", "--s3-endpoint", "https://s3.example"]);
        assert!(cli.config.resolve().unwrap_err().contains("--s3-bucket"));
        let cli = Cli::parse_from([
            "safehand-server",
            "--s3-endpoint",
            "https://s3.example",
            "--s3-bucket",
            "b",
        ]);
        assert!(cli
            .config
            .resolve()
            .unwrap_err()
            .contains("--s3-access-key-id"));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "hunter2hunter2\n").unwrap();
        let cli = Cli::parse_from([
            "safehand-server",
            "--s3-endpoint",
            "https://s3.example",
            "--s3-bucket",
            "b",
            "--s3-access-key-id",
            "AKID",
            "--s3-secret-access-key-file",
            secret.to_str().unwrap(),
        ]);
        let r = cli.config.resolve().unwrap();
        match &r.blobs {
            BlobStore::S3(s) => assert_eq!(s.secret_access_key.expose_secret(), "hunter2hunter2"),
            BlobStore::Folder(_) => panic!("expected S3"),
        }
        assert!(!format!("{r:?}").contains("hunter2"));
    }

    #[test]
    fn bad_public_url_is_refused() {
        let cli = Cli::parse_from(["safehand-server", "--public-url", "ftp://x"]);
        assert!(cli.config.resolve().unwrap_err().contains("--public-url"));
    }
}
