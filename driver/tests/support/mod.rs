//! Shared by the integration tests that need it: `mod support;`.
#![allow(dead_code)] // each test binary uses its own part

pub mod hostile;
pub mod token;
