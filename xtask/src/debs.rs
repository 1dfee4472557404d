//! Debian packages the tests run but must not install: `prometheus`
//! (Prometheus and promtool, for the exporter tests) and `docker.io`
//! (dockerd 20.10, for the profiler's docker test). Installing either
//! would start a system daemon (and docker.io drags in apparmor and
//! more); each is fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` under target/<package>/root, where the tests run the
//! binaries from.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Result};

use crate::{run, workspace_root};

/// (package, the binaries the tests need from it).
pub const UNPACKED: [(&str, &[&str]); 2] = [
    ("prometheus", &["usr/bin/prometheus", "usr/bin/promtool"]),
    ("docker.io", &["usr/sbin/dockerd", "usr/bin/docker"]),
];

/// Where the tests look for a package's files.
pub fn root(package: &str) -> PathBuf {
    workspace_root().join("target").join(package).join("root")
}

/// Unpacks `package` once; true if it did something.
pub fn fetch(package: &str, needed: &[&str]) -> Result<bool> {
    let root = root(package);
    if needed.iter().all(|b| root.join(b).exists()) {
        return Ok(false);
    }
    let debs = workspace_root().join("target").join(package).join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs)?;
    let download = |cmd: &mut Command| run(cmd.args(["download", package]).current_dir(&debs));
    if download(&mut Command::new("apt-get")).is_err() {
        // A fresh machine's package lists may not know it yet.
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        download(&mut Command::new("apt-get"))?;
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
