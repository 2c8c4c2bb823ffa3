//! Every command line `safehand` accepts, in one place. Each subcommand's behaviour lives in
//! `cmd/<name>.rs` with its own `run()`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Safehand: encrypted USB payloads, verified wiping and certificates of erasure.
#[derive(Debug, Parser)]
#[command(name = "safehand", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success; 1 failure (the message says what to do); 2 bad usage.\n\
`safehand wipe` exits 0 only when the result is ERASED (see `safehand wipe --help`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encrypt one file (or stdin) in the age format, like `age -e`.
    #[command(
        after_help = "Examples:\n  safehand encrypt -r age1... -o report.pdf.age report.pdf\n  \
safehand encrypt -p --generate -o notes.age notes.txt\n  tar c folder | safehand encrypt -R team.txt > folder.tar.age"
    )]
    Encrypt(EncryptArgs),
    /// Decrypt one age file (or stdin), like `age -d`.
    #[command(
        after_help = "Examples:\n  safehand decrypt -i key.txt -o report.pdf report.pdf.age\n  \
safehand decrypt notes.age            (asks for the passphrase)"
    )]
    Decrypt(DecryptArgs),
    /// Seal files and folders into one encrypted payload (age + tar), e.g. onto a USB stick.
    #[command(
        after_help = "Examples:\n  safehand seal -p --generate -o /media/usb/pupils.age pupils/ consent.pdf\n  \
safehand seal -r age1... -o payload.age folder/\n\
Anyone without Safehand can open it with: age -d payload.age | tar x"
    )]
    Seal(SealArgs),
    /// Extract a sealed payload safely into a folder.
    #[command(
        after_help = "Examples:\n  safehand open /media/usb/pupils.age -C ~/received\n  \
safehand open -i key.txt payload.age"
    )]
    Open(OpenArgs),
    /// List a sealed payload's entries (names, sizes, times) without writing anything.
    #[command(after_help = "Example:\n  safehand list /media/usb/pupils.age")]
    List(ReadPayloadArgs),
    /// Check that a whole payload authenticates, without writing anything.
    #[command(after_help = "Example:\n  safehand verify -i key.txt payload.age")]
    Verify(ReadPayloadArgs),
    /// Print a new generated passphrase (words to read aloud over the phone).
    #[command(
        after_help = "Example:\n  safehand passphrase > pass.txt && safehand seal --passphrase-file pass.txt -o p.age folder/\n\
Seven words from the EFF long word list (90 bits), joined by `-`."
    )]
    Passphrase,
    /// Generate an X25519 identity, like `age-keygen` (file mode 0600).
    #[command(
        after_help = "Examples:\n  safehand keygen -o key.txt\n  safehand keygen        (prints to stdout)"
    )]
    Keygen(KeygenArgs),
    /// List block devices with their identity and whether they are in use.
    Devices(DevicesArgs),
    /// Overwrite a disk, partition, loop device or file, verify it, and sign a certificate.
    #[command(
        after_help = "Examples:\n  safehand wipe /dev/sdb --method nist-clear --certificate sdb.json --pdf sdb.pdf --asset-tag HT-0042\n  \
safehand wipe /dev/sdc --method dod-3 --verify all --yes --expect-serial WD-WCC4N1234567\n\n\
Exit codes:\n  0  ERASED: every pass written in full and every verified pass read back as written\n  \
1  nothing was written (refused: mounted, swap, running system; not confirmed; bad input)\n  \
2  bad usage\n  \
3  FAILED: a write or read error, short write or verification mismatch (ranges in the certificate)\n  \
4  INCOMPLETE: stopped by Ctrl-C or a kill signal (the certificate says how far it got)\n  \
5  UNVERIFIED: written without error but not read back (--verify none)\n  \
6  ERASED, but the upload to --report-to failed (the certificate is written locally; upload it later)\n\
A signed certificate is written for results 0, 3, 4, 5 and 6."
    )]
    Wipe(WipeArgs),
    /// Work with certificates of erasure.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Send files and folders to a verified contact through a Safehand server, sealed here.
    #[command(
        after_help = "Examples:\n  safehand send --to dana.social@northshire.gov.uk --purpose \"Child protection referral\" referral/ chronology.pdf\n  \
safehand send --server https://safehand.school.sch.uk --token-file ~/.config/safehand/token \\\n      \
--to dana.social@northshire.gov.uk --classification OFFICIAL --expires 3 --max-downloads 1 --yes report.pdf\n\n\
The files are sealed on this computer with a generated passphrase (work factor 18); only\n\
ciphertext is uploaded. The passphrase is printed once with the contact's verified phone\n\
number: phone them with it. The link is emailed only after you confirm at the prompt (or\n\
with --yes); anything but `yes` recalls the transfer and nothing is sent. After you confirm,\n\
the link waits for the school's undo window; until then `safehand undo ID` takes it back.\n\
Exit codes: 0 sent; 1 not sent (the message says why: not in the directory, refused by\n\
policy, not confirmed, ...); 2 bad usage."
    )]
    Send(SendArgs),
    /// List the transfers you sent and their states (receipts).
    #[command(
        after_help = "Example:\n  safehand transfers --server https://safehand.school.sch.uk"
    )]
    Transfers(TransfersArgs),
    /// Recall a transfer you sent: its payload is destroyed and the link stops working.
    #[command(after_help = "Example:\n  safehand recall 42")]
    Recall(TransferIdArgs),
    /// Take back a transfer you have just sent, inside your school's undo window: the link is
    /// not emailed and the transfer is sealed again.
    #[command(after_help = "Example:\n  safehand undo 42\n\n\
`safehand send` says when the link will be emailed: after the school's undo window (the\n\
policy's undo_window_secs, 60 s unless changed). Until then `undo` cancels that email and\n\
the transfer is sealed again on the server (no link exists); send it again from its page on\n\
the server, or end it with `safehand recall ID`. Once the window has closed the link has been\n\
emailed: undo is refused and `safehand recall ID` is what stops the link working.\n\
Exit codes: 0 taken back; 1 not taken back (the message says why); 2 bad usage.")]
    Undo(TransferIdArgs),
    /// Send again a transfer taken back with `undo` (or never released): you confirm you will
    /// phone the passphrase you were given when it was sent, and the link is emailed.
    #[command(after_help = "Example:\n  safehand release 42\n\n\
The passphrase is not shown again (Safehand never kept it): phone the one `safehand send`\n\
printed. The school's undo window and approval rules apply as they did for `send`.\n\
Exit codes: 0 released (or held for an approver); 1 not released (the message says why); 2 bad usage.")]
    Release(ReleaseArgs),
    /// Collect files sent to you: asks for the emailed code, downloads the encrypted payload
    /// and opens it here with the passphrase the sender phoned you (it never leaves this computer).
    #[command(
        after_help = "Example:\n  safehand fetch 'https://safehand.school.sch.uk/r/...' -C ~/received\n\
The code is emailed to your address when you run this; type it at the prompt, then the\n\
passphrase. Nothing is written into DIR unless the whole payload authenticates.\n\
Exit codes: 0 opened; 1 not opened (the message says why); 2 bad usage."
    )]
    Fetch(FetchArgs),
    /// Check an exported audit log away from the server: every record against its hash and
    /// the one before, and the server's signature over the head.
    #[command(
        name = "audit-verify",
        after_help = "Example:\n  safehand audit-verify safehand-audit.json --public-key ed25519:...\n\
Export the whole log (no filters) as JSON from the server's audit page; that page also shows\n\
the signing key to give with --public-key (note it down once and compare). Without\n\
--public-key the key named in the export is used, which only proves the file is consistent.\n\
Exit codes: 0 intact; 1 not intact or not checkable (the message says why); 2 bad usage."
    )]
    AuditVerify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// The JSON export (safehand-audit.json).
    #[arg(value_name = "EXPORT.json")]
    pub export: PathBuf,
    /// The service's audit signing key (ed25519:...), or a file holding it.
    #[arg(long, value_name = "KEY")]
    pub public_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The link from the email (https://.../r/...).
    #[arg(value_name = "LINK")]
    pub link: String,
    /// The folder to extract into (created 0700 if absent; default: the current folder).
    #[arg(short = 'C', long = "directory", value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// Replace files that already exist in DIR.
    #[arg(long)]
    pub force: bool,
    /// Read the passphrase from the first line of a file (otherwise it is asked for).
    #[arg(long, value_name = "F")]
    pub passphrase_file: Option<PathBuf>,
}

/// Which Safehand server, and the API token to use with it.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The Safehand server (https://...; http:// only to this computer).
    #[arg(long, value_name = "URL", env = "SAFEHAND_SERVER")]
    pub server: String,
    /// The file holding your API token (mode 0600) [default: ~/.config/safehand/token].
    #[arg(long, value_name = "F", env = "SAFEHAND_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The contact's email address, exactly as in the server's contacts directory.
    #[arg(long, value_name = "EMAIL")]
    pub to: String,
    /// Why the files are sent (asked for when absent and a terminal is attached).
    #[arg(long, value_name = "TEXT")]
    pub purpose: Option<String>,
    /// The protective marking.
    #[arg(
        long,
        value_name = "C",
        default_value = "OFFICIAL-SENSITIVE",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(["OFFICIAL", "OFFICIAL-SENSITIVE"]),
            |s: String| s.to_ascii_uppercase()
        ),
        ignore_case = true
    )]
    pub classification: String,
    /// Days until the link expires [default: the server's policy].
    #[arg(long, value_name = "DAYS")]
    pub expires: Option<i64>,
    /// Completed downloads allowed [default: the server's policy].
    #[arg(long, value_name = "N")]
    pub max_downloads: Option<i64>,
    /// For a contact who is not verified, when your school's policy allows it: how you checked
    /// their email address (at least 20 characters; the transfer records it).
    #[arg(long, value_name = "TEXT")]
    pub attestation: Option<String>,
    /// Email the link without asking (for scripts): you confirm you will phone the passphrase.
    #[arg(long)]
    pub yes: bool,
    /// The files and folders to send (sealed into one payload).
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TransfersArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One of your transfers, on a server.
#[derive(Debug, Args)]
pub struct TransferIdArgs {
    /// The transfer's number (see `safehand transfers`).
    #[arg(value_name = "ID")]
    pub id: i64,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `safehand release ID`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The transfer's number (see `safehand transfers`).
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Email the link without asking (for scripts): you confirm you will phone the passphrase.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Who a file is encrypted to: X25519 recipients or one passphrase (never both).
#[derive(Debug, Args)]
pub struct RecipientArgs {
    /// Encrypt to an X25519 recipient (age1...). Repeatable.
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
    /// Encrypt to the recipients listed in a file (one per line, # comments). Repeatable.
    #[arg(short = 'R', long = "recipients-file", value_name = "RECIPIENTS_FILE")]
    pub recipients_files: Vec<PathBuf>,
    /// Encrypt with a passphrase (asked twice with no echo, unless --passphrase-file or --generate).
    #[arg(short = 'p', long = "passphrase")]
    pub passphrase: bool,
    /// With -p: generate a passphrase and print it once to the terminal.
    #[arg(long, requires = "passphrase")]
    pub generate: bool,
    /// Read the passphrase from the first line of a file.
    #[arg(long, value_name = "F")]
    pub passphrase_file: Option<PathBuf>,
}

/// How a file is decrypted: identity files or a passphrase.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// Decrypt with the identities in a file (AGE-SECRET-KEY-1...). Repeatable.
    #[arg(short = 'i', long = "identity", value_name = "IDENTITY_FILE")]
    pub identities: Vec<PathBuf>,
    /// Read the passphrase from the first line of a file (otherwise it is asked for).
    #[arg(long, value_name = "F")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// Write ASCII-armored (PEM) output.
    #[arg(short = 'a', long)]
    pub armor: bool,
    /// Write to OUT (created 0600); `-` or absent means stdout.
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// The file to encrypt; absent or `-` means stdin.
    #[arg(value_name = "INPUT")]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Write to OUT (created 0600, visible only once fully authenticated); `-` or absent means stdout.
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// The file to decrypt; absent or `-` means stdin.
    #[arg(value_name = "INPUT")]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub recipients: RecipientArgs,
    /// The files and folders to seal.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// The payload to write (created 0600).
    #[arg(short = 'o', long, value_name = "OUT.age", required = true)]
    pub output: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The sealed payload.
    #[arg(value_name = "IN.age")]
    pub input: PathBuf,
    /// The folder to extract into (created 0700 if absent; default: the current folder).
    #[arg(short = 'C', long = "directory", value_name = "DIR")]
    pub directory: Option<PathBuf>,
    /// Replace files that already exist in DIR.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ReadPayloadArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The sealed payload.
    #[arg(value_name = "IN.age")]
    pub input: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the identity to FILE (created 0600; refuses to overwrite).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WipeArgs {
    /// A whole disk, a partition, a loop device or a regular file.
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
    /// zero, one, random, nist-clear, dod-3, dod-7, hmg-is5, gutmann, or custom:PASSES
    /// (e.g. custom:00,ff,random,55aa).
    #[arg(long, value_name = "METHOD")]
    pub method: String,
    /// Which passes to read back: none, last (default) or all.
    #[arg(long, value_name = "none|last|all", default_value = "last")]
    pub verify: String,
    /// Repeat the method's pass list N times.
    #[arg(long, value_name = "N")]
    pub passes: Option<u32>,
    /// Add a final blanking (zeros) pass.
    #[arg(long)]
    pub blank: bool,
    /// Write the signed certificate of erasure here (JSON).
    #[arg(long, value_name = "OUT.json")]
    pub certificate: Option<PathBuf>,
    /// Also render the certificate as a one-page PDF.
    #[arg(long, value_name = "OUT.pdf")]
    pub pdf: Option<PathBuf>,
    /// The person doing the wipe (default: the login name).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// The organisation, for the certificate.
    #[arg(long, value_name = "NAME")]
    pub organisation: Option<String>,
    /// The asset tag from the school's register.
    #[arg(long, value_name = "TAG")]
    pub asset_tag: Option<String>,
    /// Do not ask for confirmation (requires --expect-serial).
    #[arg(long, requires = "expect_serial")]
    pub yes: bool,
    /// The serial the device must have (files and loop devices: their path).
    #[arg(long, value_name = "SERIAL")]
    pub expect_serial: Option<String>,
    /// Remove a file target after it has been wiped and verified.
    #[arg(long)]
    pub remove: bool,
    /// The operator's signing key (default: the key `safehand cert key` manages).
    #[arg(long, value_name = "KEY")]
    pub key: Option<PathBuf>,
    /// After the wipe, upload the certificate to the register of this Safehand server
    /// (https://...). The certificate is written locally first, whatever happens.
    #[arg(long, value_name = "URL", requires = "token_file")]
    pub report_to: Option<String>,
    /// The file holding the API token for --report-to (mode 0600).
    #[arg(long, value_name = "F", requires = "report_to")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Check a certificate's signature (and, with --trusted-key, who signed it).
    Verify {
        #[arg(value_name = "CERT.json")]
        certificate: PathBuf,
        /// The public key (or a file holding it) that must have signed the certificate.
        #[arg(long, value_name = "KEY")]
        trusted_key: Option<String>,
    },
    /// Print a certificate's facts for a person to read.
    Show {
        #[arg(value_name = "CERT.json")]
        certificate: PathBuf,
    },
    /// Render a certificate as a one-page PDF for signing.
    Pdf {
        #[arg(value_name = "CERT.json")]
        certificate: PathBuf,
        #[arg(short = 'o', long, value_name = "OUT.pdf")]
        output: PathBuf,
    },
    /// Upload a certificate to the register of a Safehand server.
    #[command(
        after_help = "Example:\n  safehand cert upload sdb.json --server https://safehand.school.sch.uk --token-file ~/.config/safehand/token\n\
The token is an API token with the technician role (account page); keep its file private (chmod 600)."
    )]
    Upload {
        #[arg(value_name = "CERT.json")]
        certificate: PathBuf,
        /// The Safehand server (https://...).
        #[arg(long, value_name = "URL")]
        server: String,
        /// The file holding the API token (mode 0600).
        #[arg(long, value_name = "F")]
        token_file: PathBuf,
    },
    /// Show the operator's signing key, creating it (0600) if there is none.
    Key {
        /// Use this key file instead of the default location.
        #[arg(long, value_name = "KEY")]
        key: Option<PathBuf>,
    },
}
