//! Debian packages the tests run but must not install, fetched with
//! `apt-get download` and unpacked with `dpkg-deb -x` under
//! target/<package>/root, where the tests run the binaries from.
//! Installing any of them would start a system daemon (docker.io also
//! drags in apparmor and more):
//! - `prometheus` (Prometheus and promtool, for the exporter tests) and
//!   `docker.io` (dockerd 20.10, for the profiler's docker test), from the
//!   host's own suite (bookworm);
//! - `docker-registry` (the CNCF distribution registry 2.8, for the pull
//!   tests) and `containerd` 1.7 (its remote-snapshotter unpacker, for the
//!   tests of containerd pulling through strata), from trixie, which
//!   bookworm lacks (its containerd is 1.6). trixie is reached through a
//!   private apt state under target/apt-trixie: the host's sources, lists
//!   and cache are never touched;
//! - Docker Engine 26 (`docker.io`, `docker-cli`, `docker-buildx` and
//!   `tini` for docker-init), from trixie, for the tests and benches of
//!   docker on strata through its containerd image store, which 20.10
//!   lacks. Its binaries need only glibc 2.34.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Result};

use crate::{run, workspace_root};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// The host's own apt configuration.
    Host,
    Trixie,
}

/// (directory under target/, packages, suite, the files the tests need
/// from them).
pub const UNPACKED: [(&str, &[&str], Suite, &[&str]); 5] = [
    (
        "prometheus",
        &["prometheus"],
        Suite::Host,
        &["usr/bin/prometheus", "usr/bin/promtool"],
    ),
    (
        "docker.io",
        &["docker.io"],
        Suite::Host,
        &["usr/sbin/dockerd", "usr/bin/docker"],
    ),
    (
        "docker-registry",
        &["docker-registry"],
        Suite::Trixie,
        &["usr/bin/docker-registry"],
    ),
    // Its runc needs glibc 2.38: the shim runs bookworm's (installed).
    (
        "containerd-1.7",
        &["containerd"],
        Suite::Trixie,
        &[
            "usr/bin/containerd",
            "usr/bin/ctr",
            "usr/bin/containerd-shim-runc-v2",
        ],
    ),
    (
        "docker-26",
        &["docker.io", "docker-cli", "docker-buildx", "tini"],
        Suite::Trixie,
        &[
            "usr/sbin/dockerd",
            "usr/bin/docker",
            "usr/bin/docker-init",
            "usr/libexec/docker/cli-plugins/docker-buildx",
        ],
    ),
];

/// Where the tests look for a package's files.
pub fn root(dir: &str) -> PathBuf {
    workspace_root().join("target").join(dir).join("root")
}

/// Unpacks `packages` under target/`dir` once; true if it did something.
pub fn fetch(dir: &str, packages: &[&str], suite: Suite, needed: &[&str]) -> Result<bool> {
    let root = root(dir);
    if needed.iter().all(|b| root.join(b).exists()) {
        return Ok(false);
    }
    fetch_many(dir, suite, packages)?;
    if let Some(missing) = needed.iter().find(|b| !root.join(b).exists()) {
        bail!("the packages {} have no {missing}", packages.join(" "));
    }
    Ok(true)
}

/// Downloads `packages` and unpacks them all under target/`dir`/root.
pub fn fetch_many(dir: &str, suite: Suite, packages: &[&str]) -> Result<()> {
    let debs = workspace_root().join("target").join(dir).join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs)?;
    let download = || {
        run(apt("apt-get", suite)?
            .arg("download")
            .args(packages)
            .current_dir(&debs))
    };
    if download().is_err() {
        // A fresh machine's (or a fresh private state's) package lists
        // may not know them yet.
        run(apt("apt-get", suite)?.args(["update", "-qq"]))?;
        download()?;
    }
    let root = root(dir);
    for deb in std::fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb?.path())
            .arg(&root))?;
    }
    // The .debs are only a step: the unpacked tree is what stays.
    let _ = std::fs::remove_dir_all(&debs);
    Ok(())
}

/// `roots` and every package they depend on, recursively, that `keep`
/// selects (the Go sources, not the C libraries the host has).
pub fn closure(suite: Suite, roots: &[&str], keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let depends = |cmd: &mut Command| -> Result<std::process::Output> {
        Ok(cmd
            .args([
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
            ])
            .args(["--no-breaks", "--no-replaces", "--no-enhances"])
            .args(roots)
            .output()?)
    };
    let mut out = depends(&mut apt("apt-cache", suite)?)?;
    if !out.status.success() {
        run(apt("apt-get", suite)?.args(["update", "-qq"]))?;
        out = depends(&mut apt("apt-cache", suite)?)?;
    }
    if !out.status.success() {
        bail!(
            "apt-cache depends {}: {}",
            roots.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut packages: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<'))
        .map(str::trim)
        .filter(|p| keep(p) || roots.contains(p))
        .map(str::to_string)
        .collect();
    packages.sort();
    packages.dedup();
    Ok(packages)
}

/// `tool` (apt-get, apt-cache) with the suite's apt state.
fn apt(tool: &str, suite: Suite) -> Result<Command> {
    let mut cmd = Command::new(tool);
    if suite == Suite::Trixie {
        cmd.args(trixie_apt_options()?);
    }
    Ok(cmd)
}

/// apt options that point every apt tool at trixie's private state,
/// created on first use.
fn trixie_apt_options() -> Result<Vec<String>> {
    let state = workspace_root().join("target/apt-trixie");
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(state.join(d))?;
    }
    let sources = state.join("sources.list");
    std::fs::write(
        &sources,
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n",
    )?;
    let s = |p: &str| state.join(p).display().to_string();
    Ok(vec![
        "-o".into(),
        format!("Dir::Etc::sourcelist={}", sources.display()),
        "-o".into(),
        "Dir::Etc::sourceparts=/nonexistent".into(),
        "-o".into(),
        format!("Dir::State::Lists={}", s("lists")),
        "-o".into(),
        format!("Dir::Cache={}", s("cache")),
    ])
}
