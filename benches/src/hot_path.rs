//! What watching costs work that never copies up: an open(O_RDWR) / read /
//! pwrite / close loop on a copied-up overlay file, plain and under three
//! watchers attached to the syscalls it makes: the no-op floor (the same
//! tracepoints as strata's tracepoint backend, programs that return at
//! once), bpftrace doing the least a user would write for the same
//! question (write-mode openat timed into a histogram), and `strata-prof
//! record`. Interleaved rounds, one sample per watcher per round, so all
//! four see the same machine. Then, untimed, the kernel's run-time stats
//! of strata's programs next to the floor's: what each event costs.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use strata_prof::probes::Probes;

use crate::cow::cell_image;
use crate::fixtures::{Env, ProfilerProcess};
use crate::harness::{BenchResult, Measured};

/// bpftrace's answer to "how long do write-mode opens take".
const BPFTRACE_PROGRAM: &str = "tracepoint:syscalls:sys_enter_openat /(args->flags & 3) != 0/ \
     { @start[tid] = nsecs; } \
     tracepoint:syscalls:sys_exit_openat /@start[tid]/ \
     { @ns = hist(nsecs - @start[tid]); delete(@start[tid]); }";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Watcher {
    Plain,
    Floor,
    Bpftrace,
    StrataProf,
}

impl Watcher {
    const ALL: [Watcher; 4] = [
        Watcher::Plain,
        Watcher::Floor,
        Watcher::Bpftrace,
        Watcher::StrataProf,
    ];

    fn name(self) -> &'static str {
        match self {
            Watcher::Plain => "nothing attached",
            Watcher::Floor => "the no-op floor",
            Watcher::Bpftrace => "bpftrace",
            Watcher::StrataProf => "strata-prof record",
        }
    }
}

/// Whatever watcher is attached now; attaching one detaches the others.
enum Attached {
    Nothing,
    // Held, never read: dropping it detaches the floor.
    #[allow(dead_code)]
    Floor(Probes),
    Bpftrace(Bpftrace),
    StrataProf(ProfilerProcess),
}

impl Attached {
    fn switch_to(&mut self, w: Watcher, prof: &Path) -> Result<()> {
        self.detach()?;
        *self = match w {
            Watcher::Plain => Attached::Nothing,
            Watcher::Floor => Attached::Floor(Probes::attach_floor()?),
            Watcher::Bpftrace => Attached::Bpftrace(start_bpftrace()?),
            Watcher::StrataProf => {
                let args = ["record", "--json", "--interval", "1h"];
                Attached::StrataProf(ProfilerProcess::start(prof, &args)?)
            }
        };
        Ok(())
    }

    fn detach(&mut self) -> Result<()> {
        match std::mem::replace(self, Attached::Nothing) {
            Attached::Nothing | Attached::Floor(_) => {}
            Attached::Bpftrace(mut b) => {
                let pid = nix::unistd::Pid::from_raw(b.0.id() as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
                b.0.wait()?;
            }
            Attached::StrataProf(p) => drop(p.interrupt()?),
        }
        Ok(())
    }
}

/// A running bpftrace; killed on drop (a failed bench leaves no probes).
struct Bpftrace(Child);

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// bpftrace, once it says its probes are attached.
fn start_bpftrace() -> Result<Bpftrace> {
    let mut child = Command::new("bpftrace")
        .args(["-e", BPFTRACE_PROGRAM])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace (installed by `cargo xtask setup`)")?;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line)? > 0 {
        if line.starts_with("Attaching") {
            // Its exit report goes nowhere.
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return Ok(Bpftrace(child));
        }
        line.clear();
    }
    let _ = child.kill();
    bail!("bpftrace exited before attaching its probes")
}

/// `loops` x open(O_RDWR), read, pwrite, close of `file`.
fn hot_loop(file: &Path, loops: usize) -> Result<u64> {
    let mut buf = [0u8; 4];
    let t = std::time::Instant::now();
    for _ in 0..loops {
        let mut f = fs::OpenOptions::new().read(true).write(true).open(file)?;
        f.read_exact(&mut buf)?;
        f.write_at(b"warm", 0)?;
    }
    Ok(t.elapsed().as_nanos() as u64)
}

pub fn all(env: &Env) -> Result<Vec<BenchResult>> {
    let dir = env.dir("hot-path");
    let root = dir.join("store");
    let image = cell_image(env, &root, 4096, 1, 0, 1)?;
    let id = env.strata(&root, &["create", &image])?;
    let merged = PathBuf::from(env.strata(&root, &["mount", &id])?);
    let file = merged.join("f0");
    fs::write(&file, b"warm")?; // copied up before anything is timed
    let loops = if env.quick { 2_000 } else { 20_000 };
    let rounds = env.reps.max(if env.quick { 3 } else { 5 });
    let mut attached = Attached::Nothing;
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); Watcher::ALL.len()];
    for round in 0..rounds {
        // A different watcher goes first each round.
        for k in 0..Watcher::ALL.len() {
            let i = (k + round) % Watcher::ALL.len();
            attached.switch_to(Watcher::ALL[i], &env.prof)?;
            hot_loop(&file, loops / 10)?; // warm, untimed
            samples[i].push(hot_loop(&file, loops)?);
        }
    }
    attached.detach()?;
    let measured: Vec<Measured> = samples.into_iter().map(Measured::of).collect();
    let mut out = ratios(&measured, loops);
    out.extend(cost_per_event(&env.prof, &file, loops)?);
    env.strata(&root, &["rm", "-f", &id])?;
    Ok(out)
}

/// Each watcher against the plain loop, then strata-prof's added time
/// against the floor's and bpftrace's (the two bars).
fn ratios(m: &[Measured], loops: usize) -> Vec<BenchResult> {
    let plain = &m[0];
    let mut out = Vec::new();
    for (w, measured) in Watcher::ALL.iter().zip(m).skip(1) {
        out.push(BenchResult::new(
            &format!("{loops} open/read/pwrite/close, {}", w.name()),
            measured.clone(),
            Watcher::Plain.name(),
            plain.clone(),
            None,
        ));
    }
    let added = |w: Watcher| {
        let median = m[w as usize].median_ns.saturating_sub(plain.median_ns);
        Measured {
            median_ns: median,
            min_ns: median,
            max_ns: median,
            samples: m[w as usize].samples,
        }
    };
    for (peer, bar) in [(Watcher::Floor, 1.3), (Watcher::Bpftrace, 1.0)] {
        out.push(BenchResult::new(
            "time strata-prof adds to the loop",
            added(Watcher::StrataProf),
            &format!("time {} adds", peer.name()),
            added(peer),
            Some(bar),
        ));
    }
    out
}

/// One untimed loop each with the kernel's run-time stats on: mean ns per
/// run of strata's syscall programs next to the floor program's.
fn cost_per_event(prof: &Path, file: &Path, loops: usize) -> Result<Vec<BenchResult>> {
    let floor_ns = {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
        let floor = Probes::attach_floor()?;
        hot_loop(file, loops)?;
        let costs = floor.program_costs()?;
        costs
            .first()
            .map(|c| c.ns_per_run)
            .context("the floor never ran")?
    };
    let args = ["record", "--json", "--interval", "1h", "--probe-cost"];
    let recording = ProfilerProcess::start(prof, &args)?;
    hot_loop(file, loops)?;
    let lines = recording.interrupt()?;
    let mut out = Vec::new();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if v["type"] != "probe_cost" {
            continue;
        }
        let program = v["program"].as_str().unwrap_or_default();
        let ns = v["ns_per_run"].as_u64().unwrap_or_default();
        let one = |ns| Measured {
            median_ns: ns,
            min_ns: ns,
            max_ns: ns,
            samples: 1,
        };
        out.push(BenchResult::new(
            &format!("{program}, ns per run"),
            one(ns),
            "the floor program, ns per run",
            one(floor_ns),
            None,
        ));
    }
    if out.is_empty() {
        bail!("strata-prof record --probe-cost reported no program");
    }
    Ok(out)
}
