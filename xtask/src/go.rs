//! The Go side of the engine tests, from Debian trixie without installing
//! anything: Go 1.24 and containerd 1.7's sources with the Go packages they
//! import (GOPATH mode: Debian ships Go libraries as source under
//! /usr/share/gocode), unpacked under target/trixie-go/root, and the
//! clients the tests run built from them into target/go-bin. Nothing is
//! fetched from a Go module proxy.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::debs::{self, Suite};
use crate::{run, workspace_root};

/// The packages whose dependency closure (its golang-* part) is unpacked.
const ROOTS: &[&str] = &["golang-1.24-go", "golang-github-containerd-containerd-dev"];
/// Where the Go toolchain and sources are unpacked.
const ROOT: &str = "trixie-go";
/// The clients: (name under xtask/go/ and target/go-bin/).
const CLIENTS: &[&str] = &["strata-containerd-pull", "strata-cri"];

/// Unpacks the toolchain and sources once, and (re)builds each client
/// whose source is newer than its binary. What it did, for setup's line.
pub fn setup() -> Result<Vec<String>> {
    let mut did = Vec::new();
    let root = debs::root(ROOT);
    let go = root.join("usr/lib/go-1.24/bin/go");
    let containerd_src = gopath_src(&root).join("github.com/containerd/containerd/client.go");
    if !go.exists() || !containerd_src.exists() {
        let packages = debs::closure(Suite::Trixie, ROOTS, |p| p.starts_with("golang-"))?;
        let refs: Vec<&str> = packages.iter().map(String::as_str).collect();
        debs::fetch_many(ROOT, Suite::Trixie, &refs)?;
        did.push(format!(
            "unpacked Go 1.24 and {} Go source packages under target/{ROOT}",
            packages.len()
        ));
    }
    for client in CLIENTS {
        let src = workspace_root().join("xtask/go").join(client);
        let bin = bin_dir().join(client);
        if newer(&bin, &src.join("main.go")) {
            continue;
        }
        build(&root, &src, &bin)?;
        did.push(format!("built target/go-bin/{client}"));
    }
    Ok(did)
}

pub fn bin_dir() -> PathBuf {
    workspace_root().join("target/go-bin")
}

fn gopath_src(root: &Path) -> PathBuf {
    root.join("usr/share/gocode/src")
}

/// Whether `bin` exists and is newer than `src`.
fn newer(bin: &Path, src: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((m(bin), m(src)), (Some(b), Some(s)) if b >= s)
}

/// `go build` in GOPATH mode: the client's directory is linked into a
/// GOPATH of its own, beside Debian's sources.
fn build(root: &Path, src: &Path, bin: &Path) -> Result<()> {
    let name = src.file_name().expect("a client directory").to_owned();
    let gopath = workspace_root().join("target/go-path");
    let pkg = gopath.join("src").join(&name);
    std::fs::create_dir_all(pkg.parent().expect("under src"))?;
    let _ = std::fs::remove_file(&pkg);
    std::os::unix::fs::symlink(src, &pkg)?;
    std::fs::create_dir_all(bin_dir())?;
    let goroot = root.join("usr/lib/go-1.24");
    run(Command::new(goroot.join("bin/go"))
        .arg("build")
        .arg("-o")
        .arg(bin)
        .arg(&name)
        .env("GOROOT", &goroot)
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!(
                "{}:{}",
                gopath.display(),
                root.join("usr/share/gocode").display()
            ),
        )
        .env("GOCACHE", workspace_root().join("target/go-cache"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0"))
}
