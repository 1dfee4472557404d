//! containerd's own snapshotter suite (`snapshots/testsuite`) against
//! `strata snapshotter`, through containerd's proxy client
//! (`xtask/go/snapshotter-suite`), from two releases: bookworm's 1.6.20
//! (built with its Go 1.19) and trixie's 1.7.24 (with Go 1.24; the
//! sources go.rs unpacks under target/trixie-go).
//!
//! Go and containerd's sources come from Debian: the packages that
//! `apt-get install golang-go golang-github-containerd-containerd-dev`
//! would install, fetched with `apt-get download` and unpacked with
//! `dpkg -x` under target/go (installing them would upgrade systemd, and
//! no Go module proxy is reachable), built in GOPATH mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{run, workspace_root};

const GO_PACKAGES: &[&str] = &["golang-go", "golang-github-containerd-containerd-dev"];
/// Every case of containerd 1.6's and 1.7's SnapshotterSuite.
const CASES: usize = 21;
/// 1.6 skips this case unconditionally ("still fails on some kernels
/// with overlay"; 1.7 runs it); strata's mounts redirect renamed
/// directories, so it is run.
const RENAME_SKIP: &str = "t.Skip(\"rename test still fails on some kernels with overlay\")";

/// One containerd release's suite: where its sources and Go are.
struct Release {
    name: &'static str,
    /// The unpacked packages (usr/share/gocode, usr/lib/go-N).
    sources: PathBuf,
    goroot: &'static str,
    /// Whether upstream skips Rename (see RENAME_SKIP).
    skips_rename: bool,
}

fn releases() -> Result<Vec<Release>> {
    Ok(vec![
        Release {
            name: "1.6",
            sources: unpack_sources()?,
            goroot: "usr/lib/go-1.19",
            skips_rename: true,
        },
        Release {
            name: "1.7",
            sources: crate::debs::root("trixie-go"),
            goroot: "usr/lib/go-1.24",
            skips_rename: false,
        },
    ])
}

fn go_dir() -> PathBuf {
    workspace_root().join("target/go")
}

/// The Debian packages (Go sources and the Go toolchain) to unpack.
fn package_set() -> Result<Vec<String>> {
    let out = Command::new("apt-get")
        .args(["install", "-s", "--no-install-recommends"])
        .args(GO_PACKAGES)
        .output()
        .context("running apt-get install -s")?;
    let listed = String::from_utf8_lossy(&out.stdout);
    let pkgs: Vec<String> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|p| p.starts_with("golang-"))
        .map(str::to_string)
        .collect();
    if !pkgs
        .iter()
        .any(|p| p == "golang-github-containerd-containerd-dev")
    {
        bail!("apt-get cannot resolve {GO_PACKAGES:?}:\n{listed}");
    }
    Ok(pkgs)
}

/// target/go/root: the unpacked packages (fetched once).
fn unpack_sources() -> Result<PathBuf> {
    let root = go_dir().join("root");
    let stamp = go_dir().join("unpacked");
    if stamp.exists() {
        return Ok(root);
    }
    let debs = go_dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .arg("download")
        .args(package_set()?)
        .current_dir(&debs))?;
    for deb in std::fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb?.path())
            .arg(&root))?;
    }
    std::fs::write(&stamp, "")?;
    Ok(root)
}

/// Our GOPATH entry: the harness, and the suite with its Rename skip
/// removed (under its own import path: GOPATH shadows whole directories).
fn lay_out_gopath(release: &Release) -> Result<PathBuf> {
    let sources = &release.sources;
    let gopath = go_dir().join(format!("gopath-{}", release.name));
    let ours = gopath.join("src/strata");
    let _ = std::fs::remove_dir_all(&ours);
    std::fs::create_dir_all(ours.join("testsuite"))?;
    std::fs::create_dir_all(ours.join("suite"))?;
    // A go.mod lets GOPATH mode resolve `gotest.tools/v3` imports
    // (minimal module compatibility), as in containerd's own tree.
    std::fs::write(ours.join("go.mod"), "module strata\n\ngo 1.19\n")?;
    let upstream =
        sources.join("usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite");
    for f in std::fs::read_dir(&upstream).context("containerd's testsuite")? {
        let f = f?;
        let mut text = std::fs::read_to_string(f.path())?;
        if f.file_name() == "issues.go" && release.skips_rename {
            if !text.contains(RENAME_SKIP) {
                bail!("containerd's suite no longer skips Rename as expected: check the harness");
            }
            text = text.replace(RENAME_SKIP, "");
        }
        std::fs::write(ours.join("testsuite").join(f.file_name()), text)?;
    }
    std::fs::copy(
        workspace_root().join("xtask/go/snapshotter-suite/suite_test.go"),
        ours.join("suite/suite_test.go"),
    )?;
    Ok(gopath)
}

fn build(release: &Release) -> Result<PathBuf> {
    let gopath = lay_out_gopath(release)?;
    let sources = &release.sources;
    let goroot = sources.join(release.goroot);
    let bin = go_dir().join(format!("snapshotter-suite-{}.test", release.name));
    run(Command::new(goroot.join("bin/go"))
        .args(["test", "-c", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(gopath.join("src/strata/suite"))
        .env("GOROOT", &goroot)
        .env(
            "GOPATH",
            format!(
                "{}:{}",
                gopath.display(),
                sources.join("usr/share/gocode").display()
            ),
        )
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("GOCACHE", go_dir().join("cache")))?;
    Ok(bin)
}

/// Builds and runs each release's suite against `strata`; every case of
/// each must pass.
pub fn run_suite(strata: &Path) -> Result<()> {
    for release in releases()? {
        run_release(&release, strata)?;
    }
    Ok(())
}

fn run_release(release: &Release, strata: &Path) -> Result<()> {
    let bin = build(release)?;
    let out = Command::new(&bin)
        .args(["-test.root", "-test.v", "-test.timeout", "10m"])
        .env("STRATA_BIN", strata)
        .output()
        .context("running containerd's snapshotter suite")?;
    let log = String::from_utf8_lossy(&out.stdout);
    let count = |verdict: &str| {
        log.lines()
            .filter(|l| {
                l.trim_start()
                    .starts_with(&format!("--- {verdict}: TestStrataSnapshotter/"))
            })
            .count()
    };
    let (passed, failed, skipped) = (count("PASS"), count("FAIL"), count("SKIP"));
    if !out.status.success() || passed != CASES || failed + skipped > 0 {
        println!("{log}{}", String::from_utf8_lossy(&out.stderr));
        bail!(
            "containerd {} snapshotter suite: {passed} passed, {failed} failed, {skipped} skipped \
             of {CASES} ({})",
            release.name,
            out.status
        );
    }
    println!(
        "containerd {} snapshotter suite: {passed} passed, {failed} failed",
        release.name
    );
    Ok(())
}
