//! The Safehand server's JSON API with an API token: certificates of erasure for the register
//! (`POST /api/v1/certificates`, from `safehand cert upload` and `safehand wipe --report-to`),
//! and the transfers API for `safehand send`, `transfers`, `recall` and `undo`.
//!
//! One place checks the server URL (https, or http only to loopback) and the token file
//! (private, one `shtok_` line); the token is zeroized when dropped and never printed.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use zeroize::Zeroizing;

/// A Safehand server and the API token to use with it.
pub struct Destination {
    base: String,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What the server said about an upload.
#[derive(Debug)]
pub struct Receipt {
    /// The server's sentence about the certificate (matched, evidence, or what to do next).
    pub message: String,
    /// Where to see it on the server.
    pub url: String,
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What the server answered: the HTTP status and the JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub json: Value,
}

impl Reply {
    /// The server's own sentence about a refusal (`message`), if it gave one.
    pub fn message(&self) -> String {
        self.json
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    /// Success (2xx) or an error saying what `action` the server refused and why.
    pub fn ok(self, action: &str) -> anyhow::Result<Value> {
        match self.status {
            200..=299 => Ok(self.json),
            401 => bail!("the server refused the API token (expired, revoked, or not a Safehand token): create a new one on your account page"),
            403 => bail!("the server refused to {action}: your account or API token does not have the right role (ask an administrator)"),
            404 => bail!("the server refused to {action}: not found (check the number with `safehand transfers`)"),
            status => {
                let message = self.message();
                if message.is_empty() {
                    bail!("the server refused to {action} (HTTP {status})");
                }
                bail!("the server refused to {action}: {message}")
            }
        }
    }
}

/// The server's answer to one request: its status and JSON body (`Null` when not JSON).
fn read_reply(
    base: &str,
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<Reply> {
    let mut response = sent.with_context(|| format!("cannot reach the server at {base}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_default();
    Ok(Reply {
        status,
        json: serde_json::from_str(&body).unwrap_or_default(),
    })
}

/// The server's base URL without a trailing `/`: https, or plain http only to this computer.
fn checked_server(server: &str) -> anyhow::Result<String> {
    let base = server.trim().trim_end_matches('/').to_string();
    let Some(rest) = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
    else {
        return Err(crate::usage::usage(format!(
            "the server `{server}` must start with https:// (for example https://safehand.school.sch.uk)"
        )));
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    if host.is_empty() {
        return Err(crate::usage::usage(format!(
            "the server `{server}` has no host name"
        )));
    }
    if base.starts_with("http://") && !is_loopback(host) {
        return Err(crate::usage::usage(format!(
            "the server `{server}` uses plain http://, which would send the API token or the recipient's code in clear; use https://"
        )));
    }
    Ok(base)
}

/// Reads the token file (it must be private: the token acts for its owner) and checks the
/// server URL, before anything is wiped, sealed or sent.
pub fn destination(server: &str, token_file: &Path) -> anyhow::Result<Destination> {
    let base = checked_server(server)?;
    let meta = std::fs::metadata(token_file).with_context(|| {
        format!(
            "cannot read the token file {}: create an API token on your account page and save it there (mode 0600)",
            token_file.display()
        )
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "the token file {} can be read by others (mode {mode:03o}); make it private with `chmod 600 {}`",
                token_file.display(),
                token_file.display()
            );
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(token_file)
            .with_context(|| format!("cannot read the token file {}", token_file.display()))?,
    );
    let token = Zeroizing::new(text.trim().to_string());
    if !token.starts_with("shtok_") || token.contains(char::is_whitespace) {
        bail!(
            "the token file {} does not hold a Safehand API token (one line starting with shtok_)",
            token_file.display()
        );
    }
    Ok(Destination { base, token })
}

impl Destination {
    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    /// An agent for one request; `global` bounds the whole exchange (`None` for uploads of
    /// any size, which are bounded by the connection's progress instead).
    fn agent(global: Option<Duration>) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_global(global)
            .timeout_per_read(Some(Duration::from_secs(300)))
            .timeout_per_write(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn bearer(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("Bearer {}", self.token.as_str()))
    }

    fn reply(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Reply> {
        read_reply(&self.base, sent)
    }

    /// `GET path` (e.g. `/api/v1/transfers`).
    pub fn get(&self, path: &str) -> anyhow::Result<Reply> {
        let sent = Self::agent(Some(Duration::from_secs(120)))
            .get(&self.url(path))
            .header("Authorization", self.bearer().as_str())
            .header("Accept", "application/json")
            .call();
        self.reply(sent)
    }

    /// `POST path` with a JSON body (raw bytes, sent exactly as given).
    pub fn post_json(&self, path: &str, body: &[u8]) -> anyhow::Result<Reply> {
        let sent = Self::agent(Some(Duration::from_secs(120)))
            .post(&self.url(path))
            .header("Authorization", self.bearer().as_str())
            .header("Accept", "application/json")
            .content_type("application/json")
            .send(body);
        self.reply(sent)
    }

    /// `POST path` streaming `length` bytes of `body` with `content_type` (uploads).
    pub fn post_stream(
        &self,
        path: &str,
        content_type: &str,
        length: u64,
        body: &mut dyn Read,
    ) -> anyhow::Result<Reply> {
        let sent = Self::agent(None)
            .post(&self.url(path))
            .header("Authorization", self.bearer().as_str())
            .header("Accept", "application/json")
            .header("Content-Length", &length.to_string())
            .content_type(content_type)
            .send(ureq::SendBody::from_reader(body));
        self.reply(sent)
    }

    /// Uploads one certificate file's bytes exactly as written.
    pub fn upload(&self, certificate: &[u8]) -> anyhow::Result<Receipt> {
        let Reply { status, json } = self.post_json("/api/v1/certificates", certificate)?;
        let text = |key: &str| {
            json.get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        match status {
            200 | 201 => Ok(Receipt {
                message: text("message"),
                url: text("url"),
            }),
            401 => bail!("the server refused the API token (expired, revoked, or not a Safehand token): create a new one on your account page"),
            403 => bail!("the API token may not upload certificates: create one with the technician role on your account page"),
            _ => {
                let message = text("message");
                if message.is_empty() {
                    bail!("the server answered HTTP {status}");
                }
                bail!("the server refused the certificate (HTTP {status}): {message}")
            }
        }
    }
}

/// The token file when neither `--token-file` nor `SAFEHAND_TOKEN_FILE` names one:
/// `$XDG_CONFIG_HOME/safehand/token`, else `~/.config/safehand/token`.
fn default_token_file() -> Option<std::path::PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| std::path::PathBuf::from(h).join(".config"))
        })?;
    Some(config.join("safehand").join("token"))
}

/// The server and token of `--server`/`--token-file` (or their environment variables and the
/// default token file), checked before any work starts.
pub fn connect(args: &crate::args::ServerArgs) -> anyhow::Result<Destination> {
    let token_file = match &args.token_file {
        Some(f) => f.clone(),
        None => default_token_file().ok_or_else(|| {
            crate::usage::usage(
                "say where your API token is: --token-file F (or SAFEHAND_TOKEN_FILE)",
            )
        })?,
    };
    destination(&args.server, &token_file)
}

/// A recipient's link (`https://server/r/TOKEN` from the email), for `safehand fetch`: no API
/// token; the recipient proves the mailbox with the emailed code and gets a short session.
pub struct Link {
    base: String,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Parses and checks the link from the email.
    pub fn parse(link: &str) -> anyhow::Result<Self> {
        let link = link.trim();
        let Some((server, token)) = link.rsplit_once("/r/") else {
            return Err(crate::usage::usage(format!(
                "`{link}` is not a Safehand link: copy the whole link from the email (it has /r/ in it)"
            )));
        };
        let token = token.trim_end_matches('/');
        if token.is_empty()
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(crate::usage::usage(format!(
                "`{link}` is not a whole Safehand link: copy it again from the email"
            )));
        }
        Ok(Self {
            base: checked_server(server)?,
            token: Zeroizing::new(token.to_string()),
        })
    }

    fn url(&self, step: &str) -> String {
        format!("{}/api/v1/r/{}/{step}", self.base, self.token.as_str())
    }

    fn reply(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Reply> {
        read_reply(&self.base, sent)
    }

    fn refused(reply: &Reply, action: &str) -> anyhow::Error {
        let message = reply.message();
        if message.is_empty() {
            anyhow::anyhow!("the server refused to {action} (HTTP {})", reply.status)
        } else {
            anyhow::anyhow!("the server refused to {action}: {message}")
        }
    }

    /// Asks the server to email the one-time code to the recipient's address.
    pub fn request_code(&self) -> anyhow::Result<()> {
        let sent = Destination::agent(Some(Duration::from_secs(120)))
            .post(&self.url("code"))
            .header("Accept", "application/json")
            .content_type("application/json")
            .send(&b"{}"[..]);
        let reply = self.reply(sent)?;
        if !(200..=299).contains(&reply.status) {
            return Err(Self::refused(&reply, "send a code"));
        }
        Ok(())
    }

    /// Trades the emailed code for a recipient session; returns it and the payload's size.
    pub fn session(&self, code: &str) -> anyhow::Result<(Zeroizing<String>, Option<u64>)> {
        let body = serde_json::to_vec(&serde_json::json!({ "code": code }))?;
        let sent = Destination::agent(Some(Duration::from_secs(120)))
            .post(&self.url("session"))
            .header("Accept", "application/json")
            .content_type("application/json")
            .send(&body[..]);
        let reply = self.reply(sent)?;
        if !(200..=299).contains(&reply.status) {
            return Err(Self::refused(&reply, "accept the code"));
        }
        let session = reply
            .json
            .get("session")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow::anyhow!("the server's answer had no session"))?;
        Ok((
            Zeroizing::new(session.to_string()),
            reply.json.get("payload_bytes").and_then(Value::as_u64),
        ))
    }

    /// Downloads the `.age` payload (ciphertext) into `out`, calling `on_bytes` as it comes.
    pub fn download(
        &self,
        session: &str,
        out: &mut dyn std::io::Write,
        on_bytes: &dyn Fn(u64),
    ) -> anyhow::Result<u64> {
        let bearer = Zeroizing::new(format!("Bearer {session}"));
        let sent = Destination::agent(None)
            .get(&self.url("payload.age"))
            .header("Authorization", bearer.as_str())
            .call();
        let mut response =
            sent.with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let reply = Reply {
                status,
                json: serde_json::from_str(&body).unwrap_or_default(),
            };
            return Err(Self::refused(&reply, "send the files"));
        }
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .context("the download was cut off; run the same command again")?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            total += n as u64;
            on_bytes(n as u64);
        }
        Ok(total)
    }
}
