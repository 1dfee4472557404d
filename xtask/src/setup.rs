//! The bootstrap: installs whatever is missing, idempotently, and says what
//! it did. A second run finds everything present and changes nothing.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bpf_toolchain;
use crate::run;

pub const BPF_LINKER_VERSION: &str = "0.10.3";

/// Debian packages the tests and benches use: (command it provides, package).
/// umoci/skopeo/podman make and check real OCI images; debootstrap builds a
/// real Debian rootfs for the import bench.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("umoci", "umoci"),
    ("skopeo", "skopeo"),
    ("podman", "podman"),
    // The import bench's peers: podman load, and buildah pull.
    ("buildah", "buildah"),
    ("debootstrap", "debootstrap"),
    ("zstd", "zstd"),
    // The kernel matrix (`vm-test`): a software-emulated guest, a static
    // busybox for its init, e2fsprogs for its disk.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("mkfs.ext4", "e2fsprogs"),
    // Per-container quota tests: XFS with project quotas.
    ("mkfs.xfs", "xfsprogs"),
    ("xz", "xz-utils"),
    ("depmod", "kmod"),
    // containerd's proxy snapshotter: containerd and runc for the real
    // engine tests and benches, protoc for containerd-snapshots' build.
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("protoc", "protobuf-compiler"),
    // The profiler overhead bench's peer: what a user would write by hand
    // to time write-mode opens.
    ("bpftrace", "bpftrace"),
    // The pull bench's floor: every blob fetched with curl, piped to tar.
    ("curl", "curl"),
];

pub fn setup() -> Result<()> {
    let started = Instant::now();
    let mut did = Vec::new();

    let toolchain = bpf_toolchain::choose();
    if bpf_toolchain::llvm_major(&toolchain) != Some(bpf_toolchain::REQUIRED_LLVM_MAJOR) {
        if toolchain != bpf_toolchain::PINNED_NIGHTLY {
            bail!(
                "{}={toolchain} does not have LLVM {}",
                bpf_toolchain::OVERRIDE_ENV,
                bpf_toolchain::REQUIRED_LLVM_MAJOR
            );
        }
        println!(
            "setup: `nightly` lacks LLVM {}; installing pinned {toolchain}",
            bpf_toolchain::REQUIRED_LLVM_MAJOR
        );
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            &toolchain,
            "--profile",
            "minimal",
            "-c",
            "rust-src",
        ]))?;
        did.push(format!("installed {toolchain}"));
    }
    if !has_component(&toolchain, "rust-src")? {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain,
        ]))?;
        did.push(format!("added rust-src to {toolchain}"));
    }

    if bpf_linker_version().as_deref() != Some(BPF_LINKER_VERSION) {
        run(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
        did.push(format!("installed bpf-linker {BPF_LINKER_VERSION}"));
    }

    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        did.push(format!("apt-get installed {}", missing.join(" ")));
    }

    for (dir, packages, suite, needed) in crate::debs::UNPACKED {
        if crate::debs::fetch(dir, packages, suite, needed)? {
            did.push(format!(
                "unpacked {} under target/{dir}",
                packages.join(" ")
            ));
        }
    }
    did.extend(crate::go::setup()?);

    did.extend(mount_kernel_fs()?);

    if did.is_empty() {
        println!(
            "setup: everything present (eBPF toolchain {toolchain}, bpf-linker {BPF_LINKER_VERSION}) in {:.2}s",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "setup: {} in {:.1}s",
            did.join("; "),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// tracefs and bpffs are missing on some minimal hosts; the profiler needs
/// both. Only attempted as root: a non-root developer can still build.
fn mount_kernel_fs() -> Result<Vec<String>> {
    let mut did = Vec::new();
    if !is_root() {
        return Ok(did);
    }
    for (fstype, dir, probe) in [
        (
            "tracefs",
            "/sys/kernel/tracing",
            "/sys/kernel/tracing/events",
        ),
        ("bpf", "/sys/fs/bpf", ""),
    ] {
        let mounted = if probe.is_empty() {
            is_mount_of(dir, fstype)?
        } else {
            Path::new(probe).exists()
        };
        if !mounted {
            std::fs::create_dir_all(dir).ok();
            run(Command::new("mount").args(["-t", fstype, fstype, dir]))?;
            did.push(format!("mounted {fstype} at {dir}"));
        }
    }
    Ok(did)
}

fn is_mount_of(dir: &str, fstype: &str) -> Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, mp, ty) = (f.next(), f.next(), f.next());
        mp == Some(dir) && ty == Some(fstype)
    }))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn has_component(toolchain: &str, component: &str) -> Result<bool> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .output()
        .context("running rustup")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with(component)))
}

fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    // Prints e.g. "bpf-linker 0.10.3".
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
}

pub fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}
