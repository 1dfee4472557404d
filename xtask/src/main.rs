//! Project tasks: `cargo xtask setup | run | test`.
//!
//! `run` and `test` bootstrap first, so each README command works on a fresh
//! machine on its own.

mod bpf_toolchain;
mod containerd_suite;
mod debs;
mod go;
mod setup;
mod vm;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    /// Bootstrap, then check formatting and lints, run every test, run the
    /// integration tests again on a stock Debian kernel under qemu, and run
    /// the benches in quick mode (proves each one runs; no gating).
    Test,
    /// containerd's snapshotter suite against `strata snapshotter`
    /// (part of `test`).
    ContainerdSuite,
    /// Boot stock distro kernels under qemu and run the driver's and
    /// profiler's integration tests in each; report per kernel and test.
    VmTest {
        /// Kernels to boot (default: all known).
        #[arg(long = "kernel", value_parser = clap::builder::PossibleValuesParser::new(vm::KERNELS.iter().map(|k| k.0)))]
        kernels: Vec<String>,
        /// Only these test binaries (e.g. `profiler`, `containers`).
        #[arg(long = "test")]
        tests: Vec<String>,
        /// Give up on a guest after this many minutes.
        #[arg(long, default_value_t = 40)]
        timeout_minutes: u64,
    },
    /// Run the performance benches against same-run baselines; results go
    /// to target/bench/ (JSON, markdown, matrix plot).
    Bench {
        /// Small workloads, few repetitions (what CI runs).
        #[arg(long)]
        quick: bool,
        /// Store the results as baseline NAME.
        #[arg(long)]
        save_baseline: Option<String>,
        /// Fail if a ratio regressed beyond --threshold against NAME.
        #[arg(long)]
        baseline: Option<String>,
        #[arg(long)]
        threshold: Option<f64>,
        #[arg(long)]
        reps: Option<usize>,
        /// Only these groups: ops, cow, overhead.
        #[arg(long)]
        only: Option<String>,
    },
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
        Task::ContainerdSuite => {
            setup::setup()?;
            cargo(&["build", "-p", "strata-driver"])?;
            containerd_suite::run_suite(&workspace_root().join("target/debug/strata"))
        }
        Task::VmTest {
            kernels,
            tests,
            timeout_minutes,
        } => {
            setup::setup()?;
            let kernels = if kernels.is_empty() {
                vm::KERNELS.iter().map(|k| k.0.to_string()).collect()
            } else {
                kernels
            };
            vm::vm_test(&kernels, &tests, Duration::from_secs(timeout_minutes * 60))
        }
        Task::Bench {
            quick,
            save_baseline,
            baseline,
            threshold,
            reps,
            only,
        } => {
            setup::setup()?;
            let mut args = Vec::new();
            if quick {
                args.push("--quick".to_string());
            }
            for (flag, v) in [
                ("--save-baseline", save_baseline),
                ("--baseline", baseline),
                ("--threshold", threshold.map(|t| t.to_string())),
                ("--reps", reps.map(|r| r.to_string())),
                ("--only", only),
            ] {
                if let Some(v) = v {
                    args.extend([flag.to_string(), v]);
                }
            }
            bench(&args)
        }
    }
}

/// Builds the release binaries and runs strata-bench with them.
fn bench(args: &[String]) -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "strata-driver",
        "-p",
        "strata-prof",
        "-p",
        "strata-benches",
    ])?;
    let root = workspace_root();
    let bin = |name: &str| root.join("target/release").join(name);
    let out = root.join("target/bench");
    run(Command::new(bin("strata-bench"))
        .arg("--strata")
        .arg(bin("strata"))
        .arg("--prof")
        .arg(bin("strata-prof"))
        .arg("--out")
        .arg(&out)
        .args(args)
        .current_dir(&root))?;
    // One plot per filesystem the copy-up matrix ran on (none when the
    // run left the cow group out).
    for fs in ["ext4", "xfs"] {
        let cells = out.join(format!("cow-matrix-{fs}.jsonl"));
        if cells.exists() {
            run(Command::new(bin("strata-prof"))
                .arg("report")
                .arg(&cells)
                .arg("--svg")
                .arg(out.join(format!("cow-matrix-{fs}.svg"))))?;
        }
    }
    Ok(())
}

/// The kernel `cargo xtask test` boots: Debian 12's own, where overlay is a
/// module (fentry through split BTF) and `lowerdir+` does not exist.
const CI_KERNEL: &str = "debian-6.1";

fn test() -> Result<()> {
    // Every group's time is printed at the end, failed or not: CI has
    // 35 minutes on 2 cores, and the engine tests keep arriving.
    let mut times = StageTimes::default();
    times.run("setup", setup::setup)?;
    if std::env::var("CI").as_deref() == Ok("true") && !setup::is_root() {
        bail!("CI=true but not root: the privileged tests would not run");
    }
    times.run("fmt", || cargo(&["fmt", "--all", "--", "--check"]))?;
    times.run("clippy", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    times.run("cargo test", || cargo_test(&["test", "--workspace"]))?;
    times.run("containerd suite", || {
        cargo(&["build", "-p", "strata-driver"])?;
        containerd_suite::run_suite(&workspace_root().join("target/debug/strata"))
    })?;
    // The same integration tests on a stock kernel: the precise profiler
    // backends and the pre-6.7 mount path exist only there.
    // A normal run takes about 5 minutes; a hung guest must not eat the
    // whole CI budget.
    times.run("vm-test", || {
        vm::vm_test(&[CI_KERNEL.to_string()], &[], Duration::from_secs(15 * 60))
    })?;
    times.run("quick benches", || bench(&["--quick".to_string()]))
}

/// How long each group of `test` took; printed when dropped.
#[derive(Default)]
struct StageTimes(Vec<(&'static str, Duration)>);

impl StageTimes {
    fn run(&mut self, name: &'static str, stage: impl FnOnce() -> Result<()>) -> Result<()> {
        let started = std::time::Instant::now();
        let result = stage();
        self.0.push((name, started.elapsed()));
        result
    }
}

impl Drop for StageTimes {
    fn drop(&mut self) {
        let total: Duration = self.0.iter().map(|(_, d)| *d).sum();
        println!("\ntest groups:");
        for (name, d) in &self.0 {
            println!("  {name:<18} {:>7.1} s", d.as_secs_f64());
        }
        println!("  {:<18} {:>7.1} s", "total", total.as_secs_f64());
    }
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
