//! What the profiler's black-box tests share: the binary, one test at a
//! time, a running `record`, and doctor's answers.
#![allow(dead_code)] // each test binary uses its own share of these

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_strata-prof");

/// One profiler test at a time: each attaches probes and times real I/O,
/// and the sweep's stopwatch check must not compete with the others for
/// two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running `strata-prof record`, started and waited on until it says
/// which backend it attached; its stdout is collected as it comes (a full
/// pipe would stall it). Killed on drop: a failing test must not leave
/// probes behind (the kernel detaches them when the process exits).
pub struct Recording {
    child: Child,
    stdout: Option<std::thread::JoinHandle<String>>,
    /// The line saying which backend record attached, and why.
    pub ready: String,
}

impl Recording {
    pub fn start(args: &[&std::ffi::OsStr]) -> Recording {
        let mut child = Command::new(BIN)
            .arg("record")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut recording = Recording {
            child,
            stdout: Some(std::thread::spawn(move || {
                std::io::read_to_string(stdout).unwrap()
            })),
            ready: String::new(),
        };
        // Generous: under software emulation (`cargo xtask vm-test`) a
        // debug build takes seconds to read BTF and load the programs.
        let ready = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("record did not start");
        assert!(
            ready.contains(" backend")
                && ["tracepoint", "fentry", "kprobe"]
                    .iter()
                    .any(|b| ready.contains(b)),
            "{ready}"
        );
        recording.ready = ready;
        recording
    }

    /// Ctrl-C, as a user would; returns everything record printed.
    pub fn stop(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        self.stdout.take().unwrap().join().unwrap()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `strata-prof doctor --json`, which must succeed.
pub fn doctor() -> Value {
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The backends doctor says work on this kernel: the tracepoint one here,
/// all three on a stock distro kernel (`cargo xtask vm-test`).
pub fn available_backends() -> Vec<String> {
    doctor()["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["available"] == true)
        .map(|b| b["backend"].as_str().unwrap().to_string())
        .collect()
}
