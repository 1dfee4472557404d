//! Builds the eBPF object (ebpf/) for bpfel-unknown-none with the nightly
//! that the bootstrap installed, and hands its path to the profiler.
//!
//! `STRATA_SKIP_EBPF=1` skips it (for a user-space-only build); the binary
//! then says so when asked to load probes instead of failing obscurely.

#[path = "../xtask/src/bpf_toolchain.rs"]
mod bpf_toolchain;

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let ebpf_dir = manifest.parent().unwrap().join("ebpf");
    let object = out_dir.join("strata-ebpf.o");

    println!("cargo::rustc-check-cfg=cfg(strata_ebpf_skipped)");
    println!("cargo::rerun-if-env-changed=STRATA_SKIP_EBPF");
    println!(
        "cargo::rerun-if-env-changed={}",
        bpf_toolchain::OVERRIDE_ENV
    );
    for p in ["src", "Cargo.toml", "Cargo.lock", "../common/src"] {
        println!("cargo::rerun-if-changed={}", ebpf_dir.join(p).display());
    }

    if std::env::var("STRATA_SKIP_EBPF").is_ok_and(|v| v == "1") {
        std::fs::write(&object, b"").unwrap();
        println!("cargo::rustc-cfg=strata_ebpf_skipped");
        println!(
            "cargo::warning=STRATA_SKIP_EBPF=1: strata-prof is built without its eBPF programs"
        );
        return;
    }

    let toolchain = bpf_toolchain::choose();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let target_dir = ebpf_dir.join("target");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", &toolchain, "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                format!("--cfg=bpf_target_arch=\"{arch}\""),
                "-Cdebuginfo=2".into(),
                "-Clink-arg=--btf".into(),
            ]
            .join("\x1f"),
        );
    // The outer (stable) build's settings must not leak into the nightly one.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run rustup for the eBPF build ({e}); run `cargo xtask setup` first")
    });
    if !status.success() {
        panic!(
            "building ebpf/ with {toolchain} failed ({status}). Run `cargo xtask setup` \
             (installs {toolchain} + rust-src and bpf-linker), or set STRATA_SKIP_EBPF=1 \
             for a user-space-only build"
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/strata-ebpf");
    std::fs::copy(&built, &object).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
}
