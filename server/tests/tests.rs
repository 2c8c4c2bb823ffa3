//! Safehand server tests: the router driven in-process on SQLite and PostgreSQL, the
//! `safehand-server admin` commands run as a binary, and the pages in headless Chromium.
//! One test binary; each module is one area.

// Helpers outside #[test] functions panic on purpose: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin_cli;
mod approval;
mod attempts;
mod audit_tx;
mod blobs;
mod browser;
mod connections;
mod downloads;
mod incidents;
mod key_rotation;
mod logs;
mod mail;
mod register;
mod router;
mod shredding;
mod tls;
mod transfers;
