//! `cargo xtask vm-test`: the driver's and profiler's privileged
//! integration tests on stock distro kernels, booted under qemu.
//!
//! The host kernel has neither kprobes nor working fentry, and it has
//! `lowerdir+`; a stock Debian kernel has the precise profiler backends and,
//! on 6.1, only the legacy mount path. Each kernel boots once (software
//! emulation: KVM is not assumed), runs every test binary, and powers off;
//! the host reads the serial console and reports per kernel and per test.

mod image;
mod kernel;
mod results;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::workspace_root;
use image::PlannedBinary;
use results::Report;

pub use kernel::KERNELS;

/// Tests the guest cannot run, and why: (binary, test or "" for all).
const NOT_IN_GUEST: &[(&str, &str, &str)] = &[
    (
        "export",
        "",
        "needs podman to load the exported image; the guest is a minimal busybox system without it",
    ),
    (
        "containerd",
        "",
        "needs containerd, ctr and runc; the guest is a minimal busybox system without them",
    ),
    (
        "serve",
        "",
        "needs Prometheus (unpacked on the host only) and times a 30 s scrape storm; serve reads the \
         same session as record, whose tests run here on every backend",
    ),
    (
        "engines",
        "",
        "needs dockerd, podman, containerd and runc; the guest is a minimal busybox system \
         without them (the hand-made relative overlay, the same kernel reads, runs in profiler)",
    ),
    (
        "pull",
        "",
        "needs the distribution registry and skopeo (host only); the layers it pulls go through \
         the same extraction the guest's images tests run",
    ),
    (
        "containerd_pull",
        "",
        "needs containerd 1.7, its Go client, the registry and skopeo (host only); the guest is a \
         minimal busybox system without them",
    ),
    (
        "docker_engine",
        "",
        "needs dockerd 26, containerd 1.7, runc, the registry and skopeo (host only); the guest is \
         a minimal busybox system without them",
    ),
    (
        "cri",
        "",
        "needs containerd 1.7's CRI plugin, runc, the Go CRI client, the registry and skopeo (host \
         only); the guest is a minimal busybox system without them",
    ),
    (
        "pull_hostile",
        "",
        "speaks HTTP on the guest's loopback, which the minimal busybox system does not bring up; \
         what it tests is the registry client, not the kernel",
    ),
    (
        "profiler",
        "record_follows_a_containerd_container",
        "needs containerd, ctr and runc; the guest is a minimal busybox system without them",
    ),
];

pub fn vm_test(kernels: &[String], only: &[String], timeout: Duration) -> Result<()> {
    let vm = workspace_root().join("target/vm");
    std::fs::create_dir_all(&vm)?;
    let (mut tests, bins) = build_test_binaries()?;
    if !only.is_empty() {
        tests.retain(|(name, _)| only.contains(name));
        if tests.is_empty() {
            bail!("no test binary is called {}", only.join(" or "));
        }
    }
    let mut plan = Vec::new();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut not_run: BTreeMap<(String, String), &str> = BTreeMap::new();
    for (name, path) in &tests {
        let names = list_tests(path)?;
        let mut args = Vec::new();
        for t in &names {
            if let Some((_, _, why)) = NOT_IN_GUEST
                .iter()
                .find(|(b, test, _)| b == name && (test.is_empty() || t == test))
            {
                not_run.insert((name.clone(), t.clone()), why);
                args.extend(["--skip".to_string(), t.clone()]);
            }
        }
        if args.len() < 2 * names.len() {
            if !args.is_empty() {
                args.push("--exact".to_string()); // skip those names only
            }
            // What passing tests print (the probes' cost per run, say)
            // goes to the log too.
            args.push("--show-output".to_string());
            plan.push(PlannedBinary {
                name: name.clone(),
                path: path.clone(),
                args,
            });
        }
        expected.insert(name.clone(), names);
    }
    // doctor first: on these stock kernels every backend must be there.
    let prof = bins
        .iter()
        .find(|b| b.ends_with("strata-prof"))
        .context("cargo built no strata-prof")?;
    plan.insert(
        0,
        PlannedBinary {
            name: results::DOCTOR.to_string(),
            path: prof.clone(),
            args: vec!["doctor".to_string()],
        },
    );
    expected.insert(
        results::DOCTOR.to_string(),
        results::EXPECTED_BACKENDS
            .iter()
            .map(|b| format!("{b}_available"))
            .collect(),
    );
    let disk = vm.join("disk.img");
    image::disk(&plan, &bins, &vm.join("rootfs"), &disk)?;

    let mut reports = Vec::new();
    for name in kernels {
        let k = kernel::fetch(name, &vm.join("kernels"))?;
        let initrd = vm.join(format!("initramfs-{name}.cpio"));
        image::initramfs(&k, &initrd)?;
        println!("vm-test: booting {name} ({}) under qemu", k.release);
        let started = Instant::now();
        let log = boot(&k, &initrd, &disk, &vm.join(format!("{name}.log")), timeout)?;
        let report = Report::from_log(name, &log, &expected, &not_run, started.elapsed());
        report.print();
        reports.push(report);
    }
    results::print_matrix(&reports);
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.all_passed())
        .map(|r| r.kernel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("vm-test failed on {}", failed.join(", "));
    }
    Ok(())
}

/// Test binaries by target name, and the program binaries they run.
type Built = (Vec<(String, PathBuf)>, Vec<PathBuf>);

/// Builds the driver's and profiler's integration tests.
fn build_test_binaries() -> Result<Built> {
    let out = Command::new(env!("CARGO"))
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
            "-p",
            "strata-driver",
            "-p",
            "strata-prof",
            "--test",
            "*",
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let (mut tests, mut bins) = (Vec::new(), Vec::new());
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(exe) = json_str(line, "executable") else {
            continue;
        };
        if line.contains("\"kind\":[\"test\"]") {
            let name = json_str(line, "name").context("artifact without a name")?;
            tests.push((name, PathBuf::from(exe)));
        } else if line.contains("\"kind\":[\"bin\"]") && line.contains("\"test\":false") {
            bins.push(PathBuf::from(exe));
        }
    }
    if tests.is_empty() {
        bail!("cargo built no integration test");
    }
    Ok((tests, bins))
}

/// The first string value of `"key":"…"` in one line of cargo's JSON (its
/// paths and target names need no unescaping).
fn json_str(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

fn list_tests(bin: &Path) -> Result<Vec<String>> {
    let out = Command::new(bin)
        .args(["--list", "--format", "terse"])
        .output()
        .with_context(|| format!("listing the tests of {}", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

/// Boots `kernel`, streams its console here (prefixed) and to `log_path`,
/// and returns the console text. Kills the guest after `timeout`.
fn boot(
    kernel: &kernel::Kernel,
    initrd: &Path,
    disk: &Path,
    log_path: &Path,
    timeout: Duration,
) -> Result<String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2"])
        // No network in the guest: the tests need none.
        .args([
            "-m",
            "4096",
            "-nographic",
            "-nic",
            "none",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init",
            "-drive",
        ])
        .arg(format!(
            "file={},if=virtio,format=raw,snapshot=on",
            disk.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().expect("piped");
    let prefix = kernel.name.clone();
    let mut log = std::fs::File::create(log_path)?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            println!("[{prefix}] {line}");
            let _ = writeln!(log, "{line}");
            text.push_str(line);
            text.push('\n');
        }
        text
    });
    let started = Instant::now();
    let mut timed_out = false;
    while child.try_wait()?.is_none() {
        if started.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut text = reader.join().expect("console reader panicked");
    if timed_out {
        text.push_str(&format!(
            "{} timeout after {} s\n",
            image::MARK,
            timeout.as_secs()
        ));
    }
    Ok(text)
}
