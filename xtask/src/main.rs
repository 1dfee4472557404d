//! Project tasks: `cargo xtask setup | run | test`.
//!
//! `run` and `test` bootstrap first, so each README command works on a fresh
//! machine on its own.

mod bpf_toolchain;
mod setup;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "strata's build, bootstrap and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: nightly + rust-src, bpf-linker, Debian packages.
    Setup,
    /// Bootstrap, build in release mode and run the main job on its defaults:
    /// the profiler's copy-on-write sweep.
    Run {
        /// Extra arguments passed to `strata-prof sweep`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Bootstrap, then check formatting and lints and run every test.
    Test,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::setup(),
        Task::Run { args } => {
            setup::setup()?;
            cargo(&[
                "build",
                "--release",
                "-p",
                "strata-driver",
                "-p",
                "strata-prof",
            ])?;
            let prof = workspace_root().join("target/release/strata-prof");
            run(Command::new(prof).arg("sweep").args(args))
        }
        Task::Test => test(),
    }
}

fn test() -> Result<()> {
    setup::setup()?;
    if std::env::var("CI").as_deref() == Ok("true") && !setup::is_root() {
        bail!("CI=true but not root: the privileged tests would not run");
    }
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo_test(&["test", "--workspace"])
}

/// Runs cargo test, passing its output through, and closes with the total
/// over every test binary: cargo's own last line is whichever binary ran
/// last (often doc-tests with nothing in them).
fn cargo_test(args: &[&str]) -> Result<()> {
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                let n = words.next().and_then(|n| n.parse::<u64>().ok());
                match (n, words.next()) {
                    (Some(n), Some("passed")) => passed += n,
                    (Some(n), Some("failed")) => failed += n,
                    (Some(n), Some("ignored")) => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("\ntotal: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() || failed > 0 {
        bail!("cargo test failed: {status}");
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root()))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
