//! End-to-end tests of `safehand devices/wipe/cert` on loop devices (issue: wiping).
