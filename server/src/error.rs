//! The service's one error type. Domain code returns it; `http::error` turns it into a page or
//! a JSON body. Internal details are logged with an id and never sent to the browser.

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No valid session or API token.
    #[error("You need to sign in.")]
    NotSignedIn,
    /// A change through `/api/` sent without an API token (a browser session cannot make it).
    #[error("Changes through the API need an API token: send `Authorization: Bearer shtok_...` (create a token on your Account page). A browser session cannot be used here.")]
    TokenRequired,
    /// The session existed but has ended (idle or absolute timeout).
    #[error("Your session has ended. Sign in again.")]
    SessionEnded,
    /// Signed in, but the account's roles do not allow this.
    #[error("You do not have permission to see this page.")]
    Forbidden,
    /// Nothing here.
    #[error("Page not found.")]
    NotFound,
    /// The form's CSRF token is missing or wrong.
    #[error("This form has expired or was not sent from this service. Go back, reload the page and try again.")]
    Csrf,
    /// Input the service cannot accept; the message says what to do.
    #[error("{0}")]
    BadInput(String),
    /// The link (setup, enrolment) is unknown, used or expired.
    #[error("This link is not valid: it may have been used already or have expired. Ask an administrator for a new one.")]
    LinkNotValid,
    /// Blob storage failed (unreachable store, full disk, refused credentials). The message
    /// names the store and the cause for the log; users see a "try again later" page.
    #[error("blob storage: {0}")]
    Storage(String),
    /// A transfer link that cannot be used (unknown, expired, recalled, locked or used up).
    /// One message for every case, so that it reveals nothing about the transfer.
    #[error("This link cannot be used. It may have expired, been withdrawn by the sender or used up, or it may have been copied wrongly. If you still need the files, contact the person who sent them.")]
    Unavailable,
    /// An upload larger than policy allows.
    #[error("{0}")]
    TooLarge(String),
    /// A database failure (logged, not shown).
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Any other internal failure (logged, not shown).
    #[error("internal error: {0}")]
    Internal(String),
    /// The server key file could not be read or created (at start-up or in a key rotation).
    #[error("cannot use the server key file {path}: {source}")]
    KeyFile {
        /// The key file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The configured server key is not 32 bytes of hex or base64; the text says what it is.
    #[error("the server key must be 32 bytes, written as 64 hex digits or base64 ({0})")]
    KeyMalformed(String),
    /// The audit key cannot be used with this database; the text says what to do.
    #[error("{0}")]
    AuditKey(String),
    /// A value sealed at rest did not authenticate under the server key (logged, not shown).
    #[error("a stored secret could not be decrypted with the server key")]
    Unseal,
    /// A value sealed at rest names another server key: a rotation is half done, or the wrong
    /// key file is in use (logged, not shown).
    #[error("a stored secret is sealed under server key {found}, but the server key in use is {current}; finish the key rotation (safehand-server admin rotate-key) or use the right key file")]
    SealedUnderOtherKey {
        /// The sealed value's key id (hex).
        found: String,
        /// The key id in use (hex).
        current: String,
    },
}

/// Result with the service's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
