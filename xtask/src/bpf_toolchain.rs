//! Which nightly builds the eBPF crate.
//!
//! bpf-linker 0.10.3 links through the nightly rustc's own LLVM, which must be
//! LLVM 22. The machine's `nightly` is used when it has that LLVM; otherwise
//! the pinned nightly, known to carry it. Shared by the bootstrap (which
//! installs what this picks) and `profiler/build.rs` (which builds with it),
//! so the two can never disagree.

use std::process::Command;

pub const PINNED_NIGHTLY: &str = "nightly-2026-05-19";
pub const REQUIRED_LLVM_MAJOR: u32 = 22;
/// Overrides the choice, e.g. for a machine with a suitable custom toolchain.
pub const OVERRIDE_ENV: &str = "STRATA_BPF_TOOLCHAIN";

/// LLVM major version of `toolchain`'s rustc, or None if it is not installed.
pub fn llvm_major(toolchain: &str) -> Option<u32> {
    let out = Command::new("rustc")
        .arg(format!("+{toolchain}"))
        .arg("-vV")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

/// The toolchain the eBPF build must use: the override, else `nightly` when
/// its LLVM matches bpf-linker's, else the pinned nightly.
pub fn choose() -> String {
    if let Ok(t) = std::env::var(OVERRIDE_ENV) {
        if !t.is_empty() {
            return t;
        }
    }
    if llvm_major("nightly") == Some(REQUIRED_LLVM_MAJOR) {
        "nightly".to_string()
    } else {
        PINNED_NIGHTLY.to_string()
    }
}
