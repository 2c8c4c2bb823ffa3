//! `safehand send`: seals files and folders on this computer with a generated passphrase,
//! uploads the ciphertext to a Safehand server as a transfer to one contact from its
//! directory, prints the passphrase once with the contact's verified phone number, and
//! releases the transfer (the server emails the link) once the sender confirms they will phone.
//!
//! The server never sees the plaintext or the passphrase: it receives one sealed payload
//! (age, one scrypt stanza) and checks only its header. The payload is sealed into a private
//! temporary file first (ciphertext only, mode 0600, removed afterwards) so the upload has a
//! known length and a failed seal can never be uploaded as a truncated payload.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Cursor, IsTerminal, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use rand_core::{OsRng, RngCore};
use safehand_crypto::{passphrase, payload, ExposeSecret, Recipients};
use serde_json::{json, Value};

use crate::args::SendArgs;
use crate::progress::{Progress, ProgressReader};
use crate::report::Destination;
use crate::streams::{interrupt_flag, Cancellable};
use crate::usage::usage;

/// A sealed payload on its way to or from the server: a private (0600) temporary file that
/// holds ciphertext only, removed on drop. `safehand fetch` downloads into one too.
pub(crate) struct TempPayload {
    pub(crate) path: PathBuf,
}

impl TempPayload {
    pub(crate) fn create() -> anyhow::Result<(Self, File)> {
        let dir = std::env::temp_dir();
        let mut random = [0u8; 12];
        OsRng.fill_bytes(&mut random);
        let path = dir.join(format!(".safehand-send-{}.age", hex::encode(random)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| {
                format!(
                    "cannot create a temporary file in {} for the encrypted payload (set TMPDIR to a folder with room)",
                    dir.display()
                )
            })?;
        Ok((Self { path }, file))
    }
}

impl Drop for TempPayload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The stored form of an address, as the server compares them: trimmed, the domain in lower
/// case, the local part exactly as typed.
fn normalise_email(email: &str) -> String {
    let email = email.trim();
    match email.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => email.to_string(),
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Finds the contact for `email` in the server's directory.
fn find_contact(server: &Destination, email: &str) -> anyhow::Result<Value> {
    let list = server.get("/api/v1/contacts")?.ok("list the contacts")?;
    let wanted = normalise_email(email);
    let contacts = list
        .get("contacts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    contacts
        .into_iter()
        .find(|c| normalise_email(text(c, "email")) == wanted && c["archived"] != json!(true))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{wanted} is not in the contacts directory of {}: nothing was sent. Check the \
                 address (the part before @ must match exactly), or ask an administrator to add \
                 and verify this contact",
                server.server()
            )
        })
}

fn purpose(args: &SendArgs) -> anyhow::Result<String> {
    if let Some(p) = &args.purpose {
        if p.trim().is_empty() {
            return Err(usage("--purpose is empty: say why the files are sent"));
        }
        return Ok(p.trim().to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(
            "say why the files are sent with --purpose TEXT (for example: \"Child protection referral\")",
        ));
    }
    eprint!("Purpose (for example: Child protection referral): ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim().is_empty() {
        bail!("no purpose given: nothing was sent");
    }
    Ok(line.trim().to_string())
}

/// Asks whether the sender will phone the passphrase; only `yes` (any case) counts;
/// `otherwise` says what any other answer does.
pub fn confirmed(name: &str, otherwise: &str) -> anyhow::Result<bool> {
    eprint!(
        "Type yes once you are ready to phone {name} with the passphrase; the link is emailed \
         to them then ({otherwise}): "
    );
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let answer = line.trim().to_ascii_lowercase();
    Ok(answer == "yes")
}

/// Asks the server whether it would accept this transfer, before anything is sealed: the
/// details alone, with no payload, come back with every problem (contact not allowed by
/// policy, purpose, expiry, ...) plus "no file", and create nothing. Without this a refusal
/// would arrive while the payload is still being uploaded, and be lost in a broken connection.
fn preflight(server: &Destination, details: &Value) -> anyhow::Result<()> {
    let boundary = "safehand-preflight";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"details\"\r\n\
         Content-Type: application/json\r\n\r\n{details}\r\n--{boundary}--\r\n"
    );
    let reply = server.post_stream(
        "/api/v1/transfers",
        &format!("multipart/form-data; boundary={boundary}"),
        body.len() as u64,
        &mut body.as_bytes(),
    )?;
    if reply.status != 400 {
        let status = reply.status;
        reply.ok("check the transfer")?;
        bail!(
            "the server answered HTTP {status} to a transfer without files; is {} a Safehand server?",
            server.server()
        );
    }
    let problems: Vec<(String, String)> = reply
        .json
        .get("problems")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|p| (text(p, "field").to_string(), text(p, "message").to_string()))
                .filter(|(field, _)| field != "files")
                .collect()
        })
        .unwrap_or_default();
    if problems.is_empty() && reply.json.get("problems").is_some() {
        return Ok(());
    }
    if problems.is_empty() {
        return reply
            .ok("accept the transfer")
            .map(|_| ())
            .context("nothing was sent");
    }
    let mut reasons: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
    if reasons.iter().any(|m| m.contains("how you checked")) {
        reasons.push("(With the CLI: --attestation TEXT.)".into());
    }
    bail!(
        "the server refused the transfer: {} Nothing was sent",
        reasons.join(" ")
    )
}

fn multipart_parts(boundary: &str, details: &Value) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"details\"\r\n\
         Content-Type: application/json\r\n\r\n{details}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"payload\"; filename=\"payload.age\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    (head.into_bytes(), tail.into_bytes())
}

pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let server = crate::report::connect(&args.server)?;
    for p in &args.paths {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(usage(format!("{} does not exist", p.display())));
        }
    }
    let purpose = purpose(&args)?;
    let contact = find_contact(&server, &args.to)?;
    let contact_id = contact.get("id").and_then(Value::as_i64).unwrap_or(0);
    let name = text(&contact, "name").to_string();
    let details = json!({
        "contact_id": contact_id,
        "purpose": purpose,
        "classification": args.classification,
        "expires_in_days": args.expires,
        "download_limit": args.max_downloads,
        "attestation": args.attestation,
    });
    preflight(&server, &details)?;

    // Seal on this computer: ciphertext only leaves it.
    let flag = interrupt_flag();
    let recipients = Recipients::Passphrase(passphrase::generate());
    let (temp, file) = TempPayload::create()?;
    let sealing = Progress::new(None, "sealing");
    let on_bytes = {
        let sealing = sealing.clone();
        move |n: u64| sealing.advance(n)
    };
    let (file, summary) = payload::seal(
        &args.paths,
        &recipients,
        Cancellable::new(file, flag.clone()),
        &on_bytes,
    )?;
    sealing.finish();
    let mut file = file.into_inner();
    file.flush()?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", temp.path.display()))?;
    let sealed_len = file.seek(std::io::SeekFrom::End(0))?;
    file.rewind()?;

    let mut random = [0u8; 16];
    OsRng.fill_bytes(&mut random);
    let boundary = format!("safehand-{}", hex::encode(random));
    let (head, tail) = multipart_parts(&boundary, &details);
    let length = head.len() as u64 + sealed_len + tail.len() as u64;
    let uploading = Progress::new(Some(length), "uploading");
    let body = Cursor::new(head).chain(file).chain(Cursor::new(tail));
    let mut body = Cancellable::new(ProgressReader::new(body, uploading.clone()), flag);
    let reply = server.post_stream(
        "/api/v1/transfers",
        &format!("multipart/form-data; boundary={boundary}"),
        length,
        &mut body,
    );
    uploading.finish();
    drop(body);
    drop(temp);
    let reply = reply.context("the upload failed: nothing was sent")?;
    let transfer = match reply.status {
        201 => reply.json,
        _ => {
            let err = reply
                .ok("accept the transfer")
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the server did not create the transfer"));
            return Err(err.context("nothing was sent"));
        }
    };
    let id = transfer.get("id").and_then(Value::as_i64).unwrap_or(0);
    let recipient = transfer.get("recipient").cloned().unwrap_or(Value::Null);
    let verified_phone = contact
        .get("verification")
        .and_then(|v| v.get("phone_called"))
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty());
    let phone = verified_phone
        .unwrap_or_else(|| text(&recipient, "phone"))
        .to_string();
    let phone_note = if verified_phone.is_some() {
        "the number checked when they were verified"
    } else {
        "from the directory; not verified"
    };
    let Recipients::Passphrase(passphrase) = &recipients else {
        bail!("internal error: the payload was not sealed with a passphrase");
    };

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Transfer {id}: {} files, {} folders ({} bytes) sealed on this computer and uploaded for {name} <{}>, {}.\n",
        summary.files,
        summary.folders,
        summary.bytes,
        text(&contact, "email"),
        text(&contact, "organisation"),
    )?;
    writeln!(
        out,
        "Passphrase (shown only this once; Safehand does not keep it):\n\n    {}\n",
        passphrase.expose_secret()
    )?;
    writeln!(
        out,
        "Phone {name} on {phone} ({phone_note}) and say:\n  \
         \"I am sending you files through Safehand. You will get an email with a link; it asks\n  \
         for a code sent to your email, then for a passphrase. The passphrase is: (read it word\n  \
         by word, and ask them to read it back). Please do not email or text it to anyone.\"\n\
         Never put the passphrase in an email, a text or a chat message.\n"
    )?;
    out.flush()?;
    drop(out);

    let release = args.yes
        || confirmed(
            &name,
            "anything else recalls the transfer and nothing is sent",
        )?;
    if !release {
        let recalled = server
            .post_json(&format!("/api/v1/transfers/{id}/recall"), b"{}")
            .and_then(|r| r.ok("recall the transfer"));
        return match recalled {
            Ok(_) => bail!(
                "not confirmed: transfer {id} was recalled and its payload destroyed; nothing was sent"
            ),
            Err(e) => Err(e.context(format!(
                "not confirmed, and transfer {id} could not be recalled (it was never released, \
                 so no link was emailed; it expires on its own, or recall it with `safehand recall {id}`)"
            ))),
        };
    }
    release_and_report(&server, id, &name)
}

/// Releases transfer `id` (the sender has confirmed the phone call) and says what follows:
/// held for an approver, or the link emailed after the undo window or now.
pub fn release_and_report(server: &Destination, id: i64, name: &str) -> anyhow::Result<ExitCode> {
    let released = server
        .post_json(
            &format!("/api/v1/transfers/{id}/release"),
            br#"{"will_phone": true}"#,
        )?
        .ok("release the transfer")
        .with_context(|| format!("transfer {id} was not released: no link was emailed"))?;
    if text(&released, "state") == "held" {
        println!(
            "Waiting for approval: school policy asks an approver to check this transfer first \
             ({}). Nothing has been emailed to {name} yet; you will be emailed when an approver \
             decides. See `safehand transfers`, or `safehand recall {id}` to take it back.",
            text(&released, "receipt"),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let when = match released.get("undo_seconds_left").and_then(|v| v.as_i64()) {
        Some(left) if left > 0 => format!(
            "in {left} seconds (the school's undo window: until then `safehand undo {id}` \
             takes it back before anything leaves)"
        ),
        _ => "now".to_string(),
    };
    println!(
        "Released: {name} is emailed the link {when}. State: {} ({}). Expires {}; \
         see `safehand transfers`, or `safehand recall {id}` to take it back.",
        text(&released, "state"),
        text(&released, "receipt"),
        text(&released, "expires_at"),
    );
    Ok(ExitCode::SUCCESS)
}
