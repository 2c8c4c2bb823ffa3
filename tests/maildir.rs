//! Mail as a test SMTP server stored it: aiosmtpd's `Mailbox` handler writes one file per
//! message into a maildir, with the envelope in `X-MailFrom` / `X-RcptTo` headers. The server
//! tests and the end-to-end tests read the link and code mails through this.

// Stored mail comes from our own test servers; a malformed one should stop the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// One message as the SMTP server received it.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    /// The envelope recipients (`X-RcptTo`), lower-cased.
    pub rcpt_to: Vec<String>,
    /// The envelope sender (`X-MailFrom`).
    pub mail_from: String,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded text body.
    pub body: String,
    /// The raw message.
    pub raw: String,
}

impl ReceivedMail {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn subject(&self) -> &str {
        self.header("subject").unwrap_or("")
    }
    /// The first `http(s)://...` link in the body.
    pub fn first_link(&self) -> Option<String> {
        let start = self.body.find("http")?;
        let rest = &self.body[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '"')
            .unwrap_or(rest.len());
        Some(rest[..end].to_string())
    }
}

/// Parses one stored message (single-part text; 7bit, quoted-printable or base64 body).
pub fn parse_mail(raw: &str) -> ReceivedMail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let encoding = get("content-transfer-encoding").to_ascii_lowercase();
    let body = match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            use base64::Engine;
            let compact: String = body.split_whitespace().collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap(),
            )
            .unwrap()
        }
        _ => body.to_string(),
    };
    ReceivedMail {
        rcpt_to: get("x-rcptto")
            .split(',')
            .map(|a| a.trim().to_ascii_lowercase())
            .filter(|a| !a.is_empty())
            .collect(),
        mail_from: get("x-mailfrom"),
        headers,
        body,
        raw: raw.clone(),
    }
}

fn decode_quoted_printable(s: &str) -> String {
    let mut out = Vec::new();
    for line in s.split('\n') {
        let (line, soft) = match line.strip_suffix('=') {
            Some(l) => (l, true),
            None => (line, false),
        };
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 3 <= bytes.len() {
                if let Ok(b) = u8::from_str_radix(&line[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        if !soft {
            out.push(b'\n');
        }
    }
    String::from_utf8_lossy(&out)
        .trim_end_matches('\n')
        .to_string()
        + "\n"
}

/// Every message in a maildir (new/ and cur/) addressed to `address` (envelope recipient).
pub fn messages_in(maildir: &std::path::Path, address: &str) -> Vec<ReceivedMail> {
    let address = address.to_ascii_lowercase();
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(raw) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mail = parse_mail(&raw);
            if mail.rcpt_to.contains(&address) {
                out.push(mail);
            }
        }
    }
    out
}
