//! A Prometheus server and promtool for the exporter tests: Debian's
//! `prometheus` package, fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` under target/prometheus (installing it would start a
//! system daemon). The tests run the binaries from there.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Result};

use crate::{run, workspace_root};

/// Where the tests look for `usr/bin/prometheus` and `usr/bin/promtool`.
pub fn root() -> PathBuf {
    workspace_root().join("target/prometheus/root")
}

/// Unpacks the package once; true if it did something.
pub fn fetch() -> Result<bool> {
    let root = root();
    if root.join("usr/bin/prometheus").exists() && root.join("usr/bin/promtool").exists() {
        return Ok(false);
    }
    let debs = workspace_root().join("target/prometheus/debs");
    std::fs::create_dir_all(&debs)?;
    let download = |cmd: &mut Command| run(cmd.args(["download", "prometheus"]).current_dir(&debs));
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
    if !root.join("usr/bin/prometheus").exists() {
        bail!("the prometheus package has no usr/bin/prometheus");
    }
    Ok(true)
}
