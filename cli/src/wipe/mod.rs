//! The wipe engine: methods and pass lists, the seeded random stream, device discovery and
//! refusal rules, hidden-area checks, the overwrite/verify engine, and the signing key.

pub mod device;
pub mod engine;
pub mod hidden;
pub mod keys;
pub mod method;
pub mod stream;
pub mod target;
