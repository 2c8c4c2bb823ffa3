//! The Safehand secure file-exchange service, as a library.
//!
//! - [`app`] builds the whole router from an [`AppState`]; it does no I/O.
//! - [`serve`] runs that router on a listener until a shutdown future completes.
//! - `main.rs` reads configuration, sets up logging, opens and migrates the database, and
//!   calls these two.
//!
//! Domain modules ([`accounts`], [`sessions`], [`tokens`], [`throttle`], [`audit`], [`mail`])
//! own the SQL; the [`http`] module owns requests, pages and cookies and never writes SQL.
//! [`blobs`] owns the blob store (a local folder or S3).

#![forbid(unsafe_code)]

pub mod accounts;
pub mod audit;
pub mod blobs;
pub mod clock;
pub mod config;
pub mod connections;
pub mod contacts;
pub mod db;
pub mod error;
pub mod http;
pub mod incidents;
pub mod key_rotation;
pub mod keys;
pub mod leases;
pub mod mail;
pub mod metrics;
pub mod passwords;
pub mod policy;
pub mod register;
pub mod sessions;
pub mod text;
pub mod throttle;
pub mod tls;
pub mod tokens;
pub mod transfers;

pub use error::{Error, Result};

use std::net::IpAddr;
use std::sync::Arc;

/// Settings the request handlers need (derived from [`config::Config`]).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Base URL for links, without a trailing slash.
    pub public_url: String,
    /// Mark cookies `Secure` and send HSTS (the service is reached over HTTPS).
    pub https: bool,
    /// Session timing.
    pub sessions: sessions::Lifetimes,
    /// Sign-in throttling.
    pub throttle: throttle::Policy,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// How mail leaves the server, in a sentence for the admin pages ([`mail::Delivery::describe`]).
    pub mail_delivery: String,
    /// Whether mail is really sent (false: written to the outbox folder).
    pub mail_sends: bool,
    /// Limits on connections: time-outs for slow clients and a cap on open connections.
    pub connections: connections::ConnectionLimits,
}

impl Settings {
    /// Settings for a service reached at `public_url`, with default timings.
    pub fn new(public_url: &str) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_string(),
            https: public_url.starts_with("https://"),
            sessions: sessions::Lifetimes::default(),
            throttle: throttle::Policy::default(),
            trusted_proxies: Vec::new(),
            mail_delivery: "No SMTP server is configured: mail is not sent but written as files to the outbox folder in the data folder. Set --smtp-url to send it.".into(),
            mail_sends: false,
            connections: connections::ConnectionLimits::default(),
        }
    }
}

/// Everything a request handler can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: db::Db,
    /// Keys derived from the server key.
    pub keys: Arc<keys::ServerKeys>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// The clock (a manual one in tests).
    pub clock: clock::Clock,
    /// Prometheus counters.
    pub metrics: Arc<metrics::Metrics>,
    /// Blob storage (ciphertext only).
    pub blobs: blobs::Blobs,
}

impl AppState {
    /// Bundles the parts of the service.
    pub fn new(
        db: db::Db,
        keys: keys::ServerKeys,
        settings: Settings,
        clock: clock::Clock,
        blobs: blobs::Blobs,
    ) -> Self {
        Self {
            db,
            keys: Arc::new(keys),
            settings: Arc::new(settings),
            clock,
            metrics: Arc::default(),
            blobs,
        }
    }
}

/// Builds the service's router. Does no I/O.
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}

/// Serves the app on `listener` until `shutdown` completes, then finishes in-flight requests
/// (within the drain time of [`Settings::connections`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.settings.connections;
    connections::serve(listener, None, app(state), limits, shutdown).await
}

/// Serves the app over HTTPS on `listener` until `shutdown` completes.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.settings.connections;
    connections::serve(listener, Some(tls), app(state), limits, shutdown).await
}
