//! `safehand transfers` (the sender's transfers and their receipts), `safehand recall ID`,
//! `safehand undo ID` (a release taken back inside the school's undo window) and `safehand
//! release ID` (sent again after an undo).

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use crate::args::{ReleaseArgs, TransferIdArgs, TransfersArgs};

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

pub fn run(args: TransfersArgs) -> anyhow::Result<ExitCode> {
    let server = crate::report::connect(&args.server)?;
    let list = server.get("/api/v1/transfers")?.ok("list your transfers")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let transfers = list
        .get("transfers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if transfers.is_empty() {
        writeln!(
            out,
            "You have sent no transfers through {}.",
            server.server()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = transfers
        .iter()
        .map(|t| {
            let created = text(t, "created_at");
            [
                text(t, "id"),
                created.get(..16).unwrap_or(&created).replace('T', " "),
                text(t, "recipient_email"),
                format!("{}/{}", text(t, "downloads"), text(t, "download_limit")),
                text(t, "state"),
                text(t, "receipt"),
            ]
        })
        .collect();
    let header = ["ID", "CREATED (UTC)", "TO", "DOWNLOADS", "STATE", "RECEIPT"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        s
    };
    writeln!(out, "{}", line(&header))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn recall(args: TransferIdArgs) -> anyhow::Result<ExitCode> {
    let server = crate::report::connect(&args.server)?;
    let t = server
        .post_json(&format!("/api/v1/transfers/{}/recall", args.id), b"{}")?
        .ok(&format!("recall transfer {}", args.id))?;
    println!(
        "Transfer {} to {} is {}: its payload is destroyed and the link no longer works.",
        args.id,
        text(&t, "recipient_email"),
        text(&t, "state"),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn undo(args: TransferIdArgs) -> anyhow::Result<ExitCode> {
    let server = crate::report::connect(&args.server)?;
    let id = args.id;
    let reply = server.post_json(&format!("/api/v1/transfers/{id}/undo"), b"{}")?;
    // A refusal about the transfer's state (the window has closed, never sent, ended) carries
    // the server's reason; recall still ends a transfer whose link has gone.
    let refused_by_state = reply.status == 400;
    let t = match reply.ok(&format!("undo transfer {id}")) {
        Ok(t) => t,
        Err(e) if refused_by_state => bail!(
            "{e} Nothing was changed: `safehand transfers` shows its state, and \
             `safehand recall {id}` ends it and stops its link working"
        ),
        Err(e) => return Err(e),
    };
    println!(
        "Taken back: the link was not emailed to {}. Transfer {id} is {} again on the server (no \
         link exists); send it again with `safehand release {id}` or from its page, \
         {}/transfers/{id}, or recall it with `safehand recall {id}`.",
        text(&t, "recipient_email"),
        text(&t, "state"),
        server.server(),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn release(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let server = crate::report::connect(&args.server)?;
    let id = args.id;
    let t = server
        .get(&format!("/api/v1/transfers/{id}"))?
        .ok(&format!("find transfer {id}"))?;
    let to = text(&t, "recipient_email");
    if text(&t, "state") != "sealed" {
        bail!(
            "transfer {id} to {to} cannot be sent again: it is {} ({}). Nothing was changed; \
             `safehand transfers` lists your transfers",
            text(&t, "state"),
            text(&t, "receipt"),
        );
    }
    if !(args.yes
        || super::send::confirmed(&to, "anything else leaves it sealed and sends nothing")?)
    {
        bail!(
            "not confirmed: nothing was sent. Transfer {id} is still sealed: `safehand release \
             {id}` when you are ready to phone the passphrase, or `safehand recall {id}`"
        );
    }
    super::send::release_and_report(&server, id, &to)
}
