//! Safehand's formats and secrets. No network, no database.
#![forbid(unsafe_code)]
pub mod certificate;
