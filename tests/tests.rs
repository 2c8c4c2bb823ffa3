//! Safehand's end-to-end tests: the real binaries against real tools and services.
//! One test binary; each module is one area.

mod audit_cli;
mod cli_crypto;
mod crash;
mod server;
mod transfers_cli;
mod wipe;
