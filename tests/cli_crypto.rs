//! End-to-end tests of `safehand encrypt/decrypt/seal/open/list/verify` (issue: foundation).
