//! Sending certificates of erasure to the Safehand server's register
//! (`POST /api/v1/certificates` with an API token), for `safehand cert upload` and
//! `safehand wipe --report-to`.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use zeroize::Zeroizing;

/// Where to send certificates and with which token.
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

/// Reads the token file (it must be private: the token acts for its owner) and checks the
/// server URL, before anything is wiped.
pub fn destination(server: &str, token_file: &Path) -> anyhow::Result<Destination> {
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
            "the server `{server}` uses plain http://, which would send the API token in clear; use https://"
        )));
    }
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

    /// Uploads one certificate file's bytes exactly as written.
    pub fn upload(&self, certificate: &[u8]) -> anyhow::Result<Receipt> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}/api/v1/certificates", self.base);
        let mut response = agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token.as_str()))
            .content_type("application/json")
            .send(certificate)
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
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
