//! Shared by the integration tests that need it: `mod support;`.

pub mod hostile;
