//! Debian packages the tests run but must not install, fetched with
//! `apt-get download` and unpacked with `dpkg-deb -x` under
//! target/<package>/root, where the tests run the binaries from.
//! Installing any of them would start a system daemon (docker.io also
//! drags in apparmor and more):
//! - `prometheus` (Prometheus and promtool, for the exporter tests) and
//!   `docker.io` (dockerd 20.10, for the profiler's docker test), from the
//!   host's own suite (bookworm);
//! - `docker-registry` (the CNCF distribution registry 2.8, for the pull
//!   tests), from trixie, which bookworm lacks. trixie is reached through
//!   a private apt state under target/apt-trixie: the host's sources,
//!   lists and cache are never touched.

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

/// (package, suite, the files the tests need from it).
pub const UNPACKED: [(&str, Suite, &[&str]); 3] = [
    (
        "prometheus",
        Suite::Host,
        &["usr/bin/prometheus", "usr/bin/promtool"],
    ),
    (
        "docker.io",
        Suite::Host,
        &["usr/sbin/dockerd", "usr/bin/docker"],
    ),
    (
        "docker-registry",
        Suite::Trixie,
        &["usr/bin/docker-registry"],
    ),
];

/// Where the tests look for a package's files.
pub fn root(package: &str) -> PathBuf {
    workspace_root().join("target").join(package).join("root")
}

/// Unpacks `package` once; true if it did something.
pub fn fetch(package: &str, suite: Suite, needed: &[&str]) -> Result<bool> {
    let root = root(package);
    if needed.iter().all(|b| root.join(b).exists()) {
        return Ok(false);
    }
    let debs = workspace_root().join("target").join(package).join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs)?;
    let apt = |tool: &str| -> Result<Command> {
        let mut cmd = Command::new(tool);
        if suite == Suite::Trixie {
            cmd.args(trixie_apt_options()?);
        }
        Ok(cmd)
    };
    let download = || {
        run(apt("apt-get")?
            .args(["download", package])
            .current_dir(&debs))
    };
    if download().is_err() {
        // A fresh machine's (or a fresh private state's) package lists
        // may not know it yet.
        run(apt("apt-get")?.args(["update", "-qq"]))?;
        download()?;
    }
    for deb in std::fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb?.path())
            .arg(&root))?;
    }
    if let Some(missing) = needed.iter().find(|b| !root.join(b).exists()) {
        bail!("the {package} package has no {missing}");
    }
    Ok(true)
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
