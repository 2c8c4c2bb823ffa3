//! `safehand-server`: reads configuration, sets up logging, opens and migrates the database,
//! then either serves or runs one `admin` command.

use anyhow::{bail, Context};
use clap::Parser;
use safehand_server::accounts;
use safehand_server::audit::{self, Actor, Verification};
use safehand_server::blobs::Blobs;
use safehand_server::clock::Clock;
use safehand_server::config::{AdminCommand, BlobStore, Cli, Command};
use safehand_server::db::Db;
use safehand_server::key_rotation;
use safehand_server::keys::ServerKeys;
use safehand_server::mail;
use safehand_server::{AppState, Settings};
use secrecy::ExposeSecret;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("safehand-server: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<ExitCode> {
    // Everything the server writes (database, WAL, blobs, staging parts, mail files, keys) is
    // for the service account only, whatever umask it was started with.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAFEHAND_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = cli.config.resolve().map_err(anyhow::Error::msg)?;
    create_private_dir(&config.data_dir)?;
    let rotating = matches!(
        cli.command,
        Some(Command::Admin {
            action: AdminCommand::RotateKey
        })
    );
    if key_rotation::unfinished(&config.server_key_file) && !rotating {
        bail!(
            "a server key rotation was started and not finished ({} exists); run `safehand-server admin rotate-key` again to finish it",
            key_rotation::next_key_path(&config.server_key_file).display()
        );
    }
    if rotating && config.server_key.is_some() {
        bail!("rotate-key works on the key file; the key is given by SAFEHAND_SERVER_KEY, so put the new key into your secrets store instead (or use --server-key-file)");
    }
    let keys = match (&config.server_key, rotating) {
        (Some(k), _) => Some(ServerKeys::parse(k.expose_secret())?),
        // The rotation reads the key files itself (the key file may be mid-swap).
        (None, true) => None,
        (None, false) => Some(ServerKeys::load_or_create(&config.server_key_file)?),
    };
    if cli.config.database_url.is_none() && cli.config.database_url_file.is_none() {
        // The default SQLite file holds account data: create it private before SQLite does.
        create_private_file(&config.data_dir.join("safehand.db"))?;
    }
    let db = Db::connect(config.database_url.expose_secret())
        .await
        .context("cannot open the database (check DATABASE_URL)")?;
    db.migrate().await.context("database migrations failed")?;
    let audit_key = audit::load_or_create_key(&config.audit_key_file, &db)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the audit key: {e}"))?;
    let db = db.with_audit_key(audit_key);
    let clock = Clock::system();

    if rotating {
        let rotation = key_rotation::rotate(
            &db,
            &config.server_key_file,
            clock.now(),
            &Actor::operator(),
            key_rotation::Options::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "The server key is now {} (was {}): {} secrets sealed again{}.",
            rotation.new_id,
            rotation.old_id,
            rotation.resealed + rotation.already_done,
            if rotation.already_done > 0 {
                format!(
                    " ({} of them by an earlier, interrupted run)",
                    rotation.already_done
                )
            } else {
                String::new()
            }
        );
        println!(
            "The old key is kept in {}: move it somewhere safe (it opens old backups of the database), or delete it.",
            rotation.retired_key_file.display()
        );
        if rotation.expired_recipient_codes > 0 {
            println!(
                "{} recipient codes waiting to be used have expired: those recipients ask for a new code on their link page.",
                rotation.expired_recipient_codes
            );
        }
        if !rotation.retired_recovery_codes.is_empty() {
            println!(
                "Recovery codes made by an older release were retired; these people should make new ones on their account page: {}.",
                rotation.retired_recovery_codes.join(", ")
            );
        }
        db.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let keys = key_rotation::load_server_secrets(
        &db,
        keys.ok_or_else(|| anyhow::anyhow!("no server key"))?,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot read the secrets sealed in the database: {e}"))?;

    if let Some(Command::Admin { action }) = cli.command {
        let code = admin(&db, &clock, &config.public_url, action).await?;
        db.close().await;
        return Ok(code);
    }

    let mut settings = Settings::new(&config.public_url);
    settings.sessions.idle = cli.config.session_idle_timeout;
    settings.sessions.absolute = cli.config.session_max_age;
    settings.throttle.lock_after = cli.config.sign_in_lock_after;
    settings.throttle.lock_for = cli.config.sign_in_lock_duration;
    settings.trusted_proxies = cli.config.trusted_proxy.clone();
    settings.connections = safehand_server::connections::ConnectionLimits {
        max_connections: cli.config.max_connections as usize,
        header_timeout: secs(cli.config.header_timeout),
        body_idle_timeout: secs(cli.config.body_idle_timeout),
        drain_timeout: secs(cli.config.drain_timeout),
    };
    let lifetimes = settings.sessions;
    let throttle_policy = settings.throttle;

    let tls = match (&cli.config.tls_cert, &cli.config.tls_key) {
        (Some(cert), Some(key)) => {
            Some(safehand_server::tls::load_config(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is something else using it?)",
                config.listen
            )
        })?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = if cli.config.public_url.is_some() {
        config.public_url.clone()
    } else {
        format!("{scheme}://{bound}")
    };
    settings.public_url = public_url.clone();
    settings.https = settings.https || tls.is_some();
    let blobs = match &config.blobs {
        BlobStore::Folder(dir) => Blobs::local(dir).map_err(|e| anyhow::anyhow!("{e}"))?,
        BlobStore::S3(s3) => Blobs::s3(s3)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_claims(db.clone(), clock.clone()),
    };
    blobs.check().await.map_err(|e| {
        anyhow::anyhow!("{e}\n(check --s3-endpoint, --s3-bucket and the S3 credentials)")
    })?;
    tracing::info!(store = blobs.describe(), "blob storage ready");
    // A server killed mid-upload left part-written staging files; none is live yet.
    match blobs.remove_dead_staging(std::time::Duration::ZERO).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "removed uploads cut off by an earlier stop"),
        Err(e) => tracing::warn!(error = %e, "could not remove uploads cut off by an earlier stop"),
    }
    // In a bucket, uploads whose claim has lapsed (another instance's, or this one's before a
    // kill once the claim runs out: then the pass below takes it).
    abort_dead_uploads(&blobs).await;
    if let Some(token) = accounts::setup_link(&db, clock.now()).await? {
        println!("No accounts yet. Open this one-time link to create the first admin account:");
        println!("  {public_url}/setup/{token}");
    }
    // Printed last, so a supervisor (or a test) reading stdout knows start-up has finished.
    println!("Safehand is listening on {scheme}://{bound} (public address {public_url})");
    use std::io::Write;
    std::io::stdout().flush()?;

    let worker = mail::Worker::new(
        db.clone(),
        clock.clone(),
        &config.mail,
        &config.mail_from,
        mail::RetryPolicy::default(),
    )
    .map_err(anyhow::Error::msg)?;
    if let Err(e) = worker.check_connection().await {
        // Not fatal: mail waits in the outbox and is retried; the admin page shows the state.
        tracing::warn!(error = %e, "the SMTP server cannot be used now; mail will be retried");
        eprintln!("safehand-server: warning: the SMTP server cannot be used now ({e}); mail waits in the outbox and is retried");
    }
    settings.mail_delivery = config.mail.describe();
    settings.mail_sends = config.mail.sends();
    tracing::info!("{}", config.mail.describe());
    let worker = worker.spawn();

    let state = AppState::new(db.clone(), keys, settings, clock.clone(), blobs);
    // Transfers: expire and crypto-shred, then delete blobs, every minute (safe on every
    // instance at once).
    let transfer_db = db.clone();
    let transfer_blobs = state.blobs.clone();
    let transfer_clock = clock.clone();
    tokio::spawn(async move {
        loop {
            match safehand_server::transfers::sweeper::sweep(
                &transfer_db,
                &transfer_blobs,
                transfer_clock.now(),
            )
            .await
            {
                Ok(s) if s.ended > 0 || s.blobs_deleted > 0 => {
                    tracing::info!(
                        ended = s.ended,
                        blobs_deleted = s.blobs_deleted,
                        "transfer sweep"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "transfer sweep failed"),
            }
            // Staging files no upload of this process writes to, untouched for 10 minutes
            // (an abort that failed, say).
            match transfer_blobs
                .remove_dead_staging(std::time::Duration::from_secs(600))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "removed abandoned uploads"),
                Err(e) => tracing::warn!(error = %e, "could not remove abandoned uploads"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
    });
    // S3: this process's claims on its uploads in progress are renewed every 15 s, and every
    // 30 s the bucket's uploads whose claim has lapsed (a crashed instance's) are aborted.
    if state.blobs.staged_uploads_are_claimed() {
        let claim_blobs = state.blobs.clone();
        tokio::spawn(async move {
            for tick in 0u64.. {
                tokio::time::sleep(std::time::Duration::from_secs(15)).await;
                if let Err(e) = claim_blobs.renew_upload_claims().await {
                    tracing::warn!(error = %e, "could not renew the claims on uploads in progress");
                }
                if tick % 2 == 1 {
                    abort_dead_uploads(&claim_blobs).await;
                }
            }
        });
    }
    // The audit log's head is checked and signed at start-up, then at intervals.
    sign_audit_head(&db, clock.now(), 0).await;
    // Housekeeping: remove dead sessions now and then.
    let sweeper_db = db.clone();
    let sweeper_clock = clock.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(300)).await;
            if let Err(e) =
                safehand_server::sessions::sweep(&sweeper_db, sweeper_clock.now(), &lifetimes).await
            {
                tracing::warn!(error = %e, "session sweep failed");
            }
            let now = sweeper_clock.now();
            if let Err(e) =
                safehand_server::throttle::sweep(&sweeper_db, now, &throttle_policy).await
            {
                tracing::warn!(error = %e, "sign-in failure sweep failed");
            }
            sign_audit_head(&sweeper_db, now, audit::SIGN_INTERVAL_SECS).await;
        }
    });
    match tls {
        Some(tls) => safehand_server::serve_tls(listener, tls, state, shutdown_signal()).await?,
        None => safehand_server::serve(listener, state, shutdown_signal()).await?,
    }
    // Finish the mail in hand, then stop.
    worker.stop().await;
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Checks the audit chain and signs its head when it has grown (a broken chain is logged as
/// an error and never signed).
async fn sign_audit_head(db: &Db, now: i64, interval: i64) {
    match audit::sign_head_if_due(db, now, interval).await {
        Ok(Some(seq)) => tracing::info!(seq, "audit log head signed"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not sign the audit log's head"),
    }
}

/// A positive number of seconds (checked by the flag parser) as a duration.
fn secs(n: i64) -> std::time::Duration {
    std::time::Duration::from_secs(n.unsigned_abs())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
    }
    tighten(dir, 0o700, "the data folder")
}

/// Makes an existing folder or file private (`mode`) when group or others may use it, saying
/// so in the log.
fn tighten(path: &std::path::Path, mode: u32, what: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        let current = meta.permissions().mode() & 0o777;
        if current & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(
                || {
                    format!(
                        "{what} {} is open to other users (mode {current:o}) and cannot be made private; run `chmod {mode:o} {}` as its owner",
                        path.display(),
                        path.display()
                    )
                },
            )?;
            tracing::warn!(path = %path.display(), was = %format!("{current:o}"), now = %format!("{mode:o}"), "{what} was open to other users; made private");
        }
    }
    Ok(())
}

fn create_private_file(path: &std::path::Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("cannot create the database file {}", path.display()))?;
    // An existing database (and its WAL) made before this check.
    tighten(path, 0o600, "the database file")?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        tighten(std::path::Path::new(&side), 0o600, "the database file")?;
    }
    Ok(())
}

async fn find(db: &Db, email: &str) -> anyhow::Result<accounts::User> {
    match accounts::by_email(db, email).await? {
        Some(u) => Ok(u),
        None => bail!("no account has the email address {email}"),
    }
}

async fn admin(
    db: &Db,
    clock: &Clock,
    public_url: &str,
    action: AdminCommand,
) -> anyhow::Result<ExitCode> {
    let now = clock.now();
    let actor = Actor::operator();
    match action {
        AdminCommand::CreateUser { email, name, roles } => {
            let (user, token) = accounts::create(db, now, &actor, &email, &name, &roles)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "Created {} ({}) with roles {}.",
                user.name,
                user.email,
                accounts::format_roles(&user.roles)
            );
            println!("Give them this one-time enrolment link (valid 7 days):");
            println!("  {public_url}/enrol/{token}");
        }
        AdminCommand::DisableUser { email } => {
            let user = find(db, &email).await?;
            accounts::set_disabled(db, now, &actor, &user, true).await?;
            println!(
                "Disabled {}; their sessions and API tokens have ended.",
                user.email
            );
        }
        AdminCommand::EnableUser { email } => {
            let user = find(db, &email).await?;
            accounts::set_disabled(db, now, &actor, &user, false).await?;
            println!("Enabled {}.", user.email);
        }
        AdminCommand::ResetTotp { email } => {
            let user = find(db, &email).await?;
            accounts::reset_totp(db, now, &actor, &user).await?;
            println!(
                "Reset the authenticator for {}; they will set it up at their next sign-in.",
                user.email
            );
        }
        AdminCommand::ResetPassword { email } => {
            let user = find(db, &email).await?;
            let token = accounts::force_password_reset(db, now, &actor, &user).await?;
            println!("The password of {} no longer works. Give them this one-time link to set a new one:", user.email);
            println!("  {public_url}/enrol/{token}");
        }
        AdminCommand::AuditExport { file } => {
            let export = audit::export_chain(db, now, i64::MAX).await?;
            let text = serde_json::to_string_pretty(&export.document())?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut out = options
                .open(&file)
                .with_context(|| format!("cannot create {}", file.display()))?;
            std::io::Write::write_all(&mut out, text.as_bytes())
                .and_then(|()| out.sync_all())
                .with_context(|| format!("cannot write {}", file.display()))?;
            audit::record(db, now, &actor, "audit_exported", "audit log", serde_json::json!({ "format": "json", "records": export.records.len(), "signed": export.broken.is_none(), "by": "command line" })).await?;
            match export.broken {
                None => println!(
                    "Wrote {} records to {}, signed by {}. Check it with: safehand audit-verify {} --public-key {}",
                    export.records.len(),
                    file.display(),
                    export.public_key,
                    file.display(),
                    export.public_key
                ),
                Some(reason) => {
                    println!("Wrote {} records to {}, NOT signed: {reason}.", export.records.len(), file.display());
                    return Ok(ExitCode::from(1));
                }
            }
        }
        AdminCommand::AuditVerify => match audit::verify(db).await? {
            Verification::Intact {
                records,
                head,
                unkeyed,
                signed_up_to,
            } => {
                println!("The audit log is intact: {records} records, head {head}.");
                if unkeyed > 0 {
                    println!("The first {unkeyed} records were written before the chain was keyed: they cannot have been changed since record {} was written (its MAC covers them), but nothing proves they were not changed before.", unkeyed + 1);
                }
                match signed_up_to {
                    Some(seq) => println!(
                        "Heads are signed up to record {seq}; the signing key is {}.",
                        audit::public_key(db)?
                    ),
                    None => println!(
                        "No head has been signed yet; the signing key is {}.",
                        audit::public_key(db)?
                    ),
                }
            }
            Verification::Broken { seq, reason } => {
                println!("The audit log is BROKEN at record {seq}: {reason}.");
                return Ok(ExitCode::from(1));
            }
        },
        AdminCommand::Migrate => {
            println!("Migrations are up to date.");
        }
        AdminCommand::RotateKey => bail!("rotate-key is handled before other commands"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Aborts the bucket's uploads that no live instance claims (a no-op for the local folder),
/// and logs what it did.
async fn abort_dead_uploads(blobs: &Blobs) {
    match blobs
        .remove_dead_uploads_in_bucket(std::time::Duration::ZERO)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(uploads = n, "aborted uploads cut off by a crash"),
        Err(e) => tracing::warn!(error = %e, "could not abort uploads cut off by a crash"),
    }
}
