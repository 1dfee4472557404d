//! `strata-prof sweep`: build images with the driver over a grid of file
//! size x layer depth x directory depth, trigger copy-ups in containers
//! (by a write open, a chmod or a chown; in containers mounted with or
//! without metacopy and volatile), record them with the probes, and check
//! every event against what was built and a user-space stopwatch.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use strata_common::Trigger;
use strata_driver::containers::CreateOptions;
use strata_driver::image::build::{write_docker_archive, LayerTar};
use strata_driver::import::{import, ImportOptions};
use strata_driver::{fsutil, Store};

use crate::backend::Backend;
use crate::events::{CopyUp, Timed};
use crate::histograms::{human_bytes, new_histogram, Stats};
use crate::probes::Filters;
use crate::session::Session;

#[derive(Clone, Debug)]
pub struct Grid {
    pub sizes: Vec<u64>,
    pub layers: Vec<usize>,
    pub dirs: Vec<usize>,
    /// Every combination; otherwise one axis at a time from the smallest
    /// value of the others.
    pub full: bool,
    pub reps: usize,
    /// Each cell is measured once per trigger, and per mount variant.
    pub triggers: Vec<SweepTrigger>,
    pub metacopy: Vec<bool>,
    pub volatile: Vec<bool>,
}

impl Default for Grid {
    fn default() -> Grid {
        Grid {
            sizes: vec![4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20],
            layers: vec![1, 8, 32, 128],
            dirs: vec![0, 4, 16, 32],
            full: false,
            reps: 5,
            triggers: vec![SweepTrigger::Write],
            metacopy: vec![false],
            volatile: vec![false],
        }
    }
}

/// What the sweep does to a lower file to copy it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SweepTrigger {
    /// open(O_WRONLY): always copies the data.
    Write,
    /// chmod: metadata only where the container has metacopy.
    Chmod,
    /// chown to the file's own owner: metadata only with metacopy.
    Chown,
}

impl SweepTrigger {
    pub fn name(self) -> &'static str {
        match self {
            SweepTrigger::Write => "write",
            SweepTrigger::Chmod => "chmod",
            SweepTrigger::Chown => "chown",
        }
    }

    /// The kernel program's name for the same trigger.
    pub fn event_name(self) -> &'static str {
        let t = match self {
            SweepTrigger::Write => Trigger::OpenWrite,
            SweepTrigger::Chmod => Trigger::Chmod,
            SweepTrigger::Chown => Trigger::Chown,
        };
        t.name()
    }

    /// Does it to `path` (`pass` 0 copies up, 1 finds the file up),
    /// timed by a user-space stopwatch around the syscall alone.
    fn timed(self, path: &Path, pass: usize) -> Result<u64> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .context("NUL in a sweep path")?;
        let t0 = Instant::now();
        // SAFETY: NUL-terminated path; the fd open returns is closed below.
        let rc = unsafe {
            match self {
                SweepTrigger::Write => libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC),
                SweepTrigger::Chmod => libc::chmod(c.as_ptr(), [0o600, 0o640][pass % 2]),
                SweepTrigger::Chown => libc::chown(c.as_ptr(), 0, 0),
            }
        };
        let user = t0.elapsed().as_nanos() as u64;
        if rc < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("{self:?} of {}", path.display()));
        }
        if self == SweepTrigger::Write {
            // SAFETY: the fd open just returned, closed once.
            unsafe { libc::close(rc) };
        }
        Ok(user)
    }
}

/// Copy-ups per cell cannot exceed this many bytes in total.
const CELL_BYTES: u64 = 512 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct CellKey {
    pub file_size: u64,
    pub layer_depth: usize,
    pub dir_depth: usize,
    pub trigger: SweepTrigger,
    pub metacopy: bool,
    pub volatile: bool,
}

impl CellKey {
    /// "chmod, metacopy": the trigger and the mount variant, which the
    /// plot draws as one line each.
    pub fn variant(&self) -> String {
        variant_name(self.trigger.name(), self.metacopy, self.volatile)
    }
}

pub fn variant_name(trigger: &str, metacopy: bool, volatile: bool) -> String {
    let mut name = trigger.to_string();
    if metacopy {
        name.push_str(", metacopy");
    }
    if volatile {
        name.push_str(", volatile");
    }
    name
}

#[derive(Debug, Serialize)]
pub struct Cell {
    #[serde(flatten)]
    pub key: CellKey,
    #[serde(flatten)]
    pub stats: Stats,
    /// Median of the user-space stopwatch around the triggering open().
    pub user_p50: u64,
    /// Median of the same open() once the file is up: the part of the
    /// syscall a copy-up function probe does not see.
    pub user_no_copy_up_p50: u64,
    /// Median of the exit probe's own time per event (CopyUp::probe_ns).
    pub probe_p50: u64,
    pub triggered: usize,
}

#[derive(Debug, Serialize)]
pub struct SweepResult {
    pub backend: String,
    /// The kernel it ran on (`uname -r`).
    #[serde(rename = "kernel_release")]
    pub kernel: String,
    pub cells: Vec<Cell>,
    /// Everything that broke the truth bar; empty when it holds.
    pub violations: Vec<String>,
    /// Cells measured again because an event's time disagreed with its
    /// stopwatch, with that first disagreement (see TIMING_ATTEMPTS).
    pub retried: Vec<String>,
}

/// A cell whose kernel time disagrees with the stopwatch is measured again
/// (fresh image, fresh files), up to this many times in all. Being
/// descheduled right after the syscall (a busy host, a vCPU under
/// emulation) inflates one stopwatch; a real disagreement repeats. Counts
/// and attribution are never retried.
const TIMING_ATTEMPTS: usize = 3;

impl Grid {
    /// The cells to measure: every size/layer/directory cell, once per
    /// trigger and mount variant.
    pub fn cells(&self) -> Vec<CellKey> {
        let mut out = Vec::new();
        for &trigger in &self.triggers {
            for &metacopy in &self.metacopy {
                for &volatile in &self.volatile {
                    out.extend(self.shape_cells().into_iter().map(|k| CellKey {
                        trigger,
                        metacopy,
                        volatile,
                        ..k
                    }));
                }
            }
        }
        out
    }

    /// Size x layer depth x directory depth.
    fn shape_cells(&self) -> Vec<CellKey> {
        let mut out: Vec<CellKey> = Vec::new();
        let (s0, l0, d0) = (self.sizes[0], self.layers[0], self.dirs[0]);
        let mut push = |k: CellKey| {
            if !out.contains(&k) {
                out.push(k);
            }
        };
        if self.full {
            for &s in &self.sizes {
                for &l in &self.layers {
                    for &d in &self.dirs {
                        push(shape(s, l, d));
                    }
                }
            }
        } else {
            for &s in &self.sizes {
                push(shape(s, l0, d0));
            }
            for &l in &self.layers {
                push(shape(s0, l, d0));
            }
            for &d in &self.dirs {
                push(shape(s0, l0, d));
            }
        }
        out
    }
}

pub fn run(
    grid: &Grid,
    root: &Path,
    backend: Option<Backend>,
    progress: bool,
) -> Result<SweepResult> {
    let store =
        Store::open(root).with_context(|| format!("opening sweep store {}", root.display()))?;
    let filters = Filters {
        tgid: std::process::id(),
        cgroup_id: 0,
    };
    let mut session = Session::start(filters, backend, None, false, None)?;
    if progress {
        eprintln!("strata-prof: {}", session.reason);
    }
    let mut result = SweepResult {
        backend: session.backend().to_string(),
        kernel: crate::backend::kernel_release(),
        cells: Vec::new(),
        violations: Vec::new(),
        retried: Vec::new(),
    };
    let reps_of = |key: &CellKey| {
        grid.reps
            .min((CELL_BYTES / key.file_size.max(1)).max(1) as usize)
            .max(1)
    };
    // The run's first cell paid for first uses no later cell pays for
    // (the probes', the copy-up path's): layer depth 1 read p50 196 us
    // against 146 us at depth 8. One whole cell first, discarded.
    if let Some(first) = grid.cells().first() {
        run_cell(
            &store,
            &mut session,
            *first,
            reps_of(first),
            (&mut Vec::new(), &mut Vec::new()),
        )?;
    }
    for key in grid.cells() {
        let reps = reps_of(&key);
        if progress {
            eprintln!(
                "strata-prof: cell size={} layers={} dirs={} by {} ({reps} copy-ups)",
                human_bytes(key.file_size),
                key.layer_depth,
                key.dir_depth,
                key.variant()
            );
        }
        let mut attempt = 1;
        let cell = loop {
            let mut timing = Vec::new();
            let cell = run_cell(
                &store,
                &mut session,
                key,
                reps,
                (&mut result.violations, &mut timing),
            )?;
            if timing.is_empty() || attempt == TIMING_ATTEMPTS {
                result.violations.extend(timing);
                break cell;
            }
            result.retried.push(timing.join("; "));
            attempt += 1;
        };
        result.cells.push(cell);
    }
    Ok(result)
}

/// A size/layer/directory cell, before its trigger and variant are set.
fn shape(file_size: u64, layer_depth: usize, dir_depth: usize) -> CellKey {
    CellKey {
        file_size,
        layer_depth,
        dir_depth,
        trigger: SweepTrigger::Write,
        metacopy: false,
        volatile: false,
    }
}

/// A small top-level file in every sweep image, copied up untimed first.
const WARM_UP: &str = "warm-up";

fn dir_path(depth: usize) -> String {
    (0..depth).map(|i| format!("d{i}/")).collect()
}

fn build_image(store: &Store, key: CellKey, reps: usize) -> Result<String> {
    let work = fsutil::StagingDir::create(&store.tmp_dir(), "sweep-image")?;
    let dir = dir_path(key.dir_depth);
    let mut layers = Vec::new();
    // Bottom layer: the files to copy up, `dir_depth` directories down.
    let bottom = work.path().join("bottom.tar");
    let mut t = LayerTar::create(&bottom)?;
    let mut prefix = String::new();
    for i in 0..key.dir_depth {
        prefix.push_str(&format!("d{i}/"));
        t.dir(prefix.trim_end_matches('/'), 0o755, 0, 0)?;
    }
    for r in 0..reps {
        t.pattern_file(&format!("{dir}f{r}"), key.file_size, r as u8 + 1)?;
    }
    t.file(WARM_UP, b"warm", 0o644)?;
    layers.push(t.finish()?);
    // Layers above it, each with a file of its own so none is empty.
    for l in 1..key.layer_depth {
        let p = work.path().join(format!("l{l}.tar"));
        let mut t = LayerTar::create(&p)?;
        t.file(
            &format!("filler-{l}"),
            format!("layer {l}\n").as_bytes(),
            0o644,
        )?;
        layers.push(t.finish()?);
    }
    let name = format!(
        "sweep-{}-{}-{}:latest",
        key.file_size, key.layer_depth, key.dir_depth
    );
    let archive = work.path().join("archive");
    write_docker_archive(&archive, &name, &layers)?;
    import(
        store,
        archive.to_str().context("non-UTF-8 sweep path")?,
        &ImportOptions {
            name: Some(name.clone()),
            progress: false,
        },
    )?;
    Ok(name)
}

fn run_cell(
    store: &Store,
    session: &mut Session,
    key: CellKey,
    reps: usize,
    (violations, timing): (&mut Vec<String>, &mut Vec<String>),
) -> Result<Cell> {
    let image = build_image(store, key, reps)?;
    let opts = CreateOptions {
        metacopy: key.metacopy,
        volatile: key.volatile,
        ..Default::default()
    };
    let c = store.create_container(&image, &opts)?;
    let merged = store.mount_container(&c.id)?;
    // One copy-up before the timed ones, so that none of them pays for
    // the mount's first use (cold dentries; under emulation, code seen for
    // the first time). Its event is collected and set aside.
    timed_open_for_write(&merged.join(WARM_UP))?;
    let _ = collect(session, 1, Duration::from_secs(5));
    let _ = session.poll(); // anything before this cell is not ours
    let mut stopwatch: HashMap<PathBuf, u64> = HashMap::new();
    let mut no_copy_up: HashMap<PathBuf, u64> = HashMap::new();
    let dir = dir_path(key.dir_depth);
    // Looked up once before any is timed: the first open of a file must
    // differ from the second by the copy-up only, not by a cold lookup
    // through the layers (which no backend counts as copy-up time).
    for r in 0..reps {
        std::fs::symlink_metadata(merged.join(format!("{dir}f{r}")))?;
    }
    // The stopwatch must not include time this thread spent preempted
    // after the syscall: real-time priority for the timed calls (root).
    let _rt = RealTime::enter();
    for (pass, times) in [&mut stopwatch, &mut no_copy_up].into_iter().enumerate() {
        for r in 0..reps {
            let path = merged.join(format!("{dir}f{r}"));
            times.insert(path.clone(), key.trigger.timed(&path, pass)?);
        }
    }
    let events = collect(session, stopwatch.len(), Duration::from_secs(5));
    let cell = judge(
        key,
        (&stopwatch, &no_copy_up),
        &events,
        (violations, timing),
    );
    store.remove_container(&c.id, true)?;
    store.remove_image(&image)?;
    Ok(cell)
}

/// How long open(path, O_WRONLY) takes, by the user-space stopwatch.
fn timed_open_for_write(path: &Path) -> Result<u64> {
    let t0 = Instant::now();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path);
    let user = t0.elapsed().as_nanos() as u64;
    f.with_context(|| format!("opening {} for writing", path.display()))?;
    Ok(user)
}

/// SCHED_FIFO for the current thread while held; the previous policy
/// comes back on drop. Without the privilege it changes nothing.
struct RealTime(Option<(libc::c_int, libc::sched_param)>);

impl RealTime {
    fn enter() -> RealTime {
        // SAFETY: querying and setting this thread's (tid 0 = self) policy
        // with valid sched_param values; failures leave it unchanged.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            let mut old = std::mem::zeroed::<libc::sched_param>();
            if policy < 0 || libc::sched_getparam(0, &mut old) != 0 {
                return RealTime(None);
            }
            let rt = libc::sched_param { sched_priority: 1 };
            if libc::sched_setscheduler(0, libc::SCHED_FIFO, &rt) != 0 {
                return RealTime(None);
            }
            RealTime(Some((policy, old)))
        }
    }
}

impl Drop for RealTime {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.0.take() {
            // SAFETY: restoring the policy and parameters read in enter().
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

/// Polls until `want` events arrived or `timeout` passed.
fn collect(session: &mut Session, want: usize, timeout: Duration) -> Vec<CopyUp> {
    let until = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        got.extend(session.poll());
        if got.len() >= want || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The truth bar: every triggered copy-up caught once, no more; kernel
/// time within the stopwatch (<= it, and within 10% or 50us of it); size,
/// layer depth and directory depth as built. An event timed over the
/// copy-up function alone has the rest of its syscall added first: what
/// the same open costs without a copy-up, by the same stopwatch. Stopwatch
/// disagreements go to `timing` (the caller may measure the cell again),
/// everything else to `violations`.
fn judge(
    key: CellKey,
    (stopwatch, no_copy_up): (&HashMap<PathBuf, u64>, &HashMap<PathBuf, u64>),
    events: &[CopyUp],
    (violations, timing): (&mut Vec<String>, &mut Vec<String>),
) -> Cell {
    let mut h = new_histogram();
    let mut user = new_histogram();
    let mut user_no_copy_up = new_histogram();
    let mut probe = new_histogram();
    let cell = format!(
        "size={} layers={} dirs={} by {}",
        key.file_size,
        key.layer_depth,
        key.dir_depth,
        key.variant()
    );
    for (path, &user_ns) in stopwatch {
        user.saturating_record(user_ns.max(1));
        let matching: Vec<&CopyUp> = events
            .iter()
            .filter(|e| e.path.as_deref() == Some(path.as_path()))
            .collect();
        if matching.len() != 1 {
            violations.push(format!(
                "{cell}: {} events for {}",
                matching.len(),
                path.display()
            ));
            continue;
        }
        let e = matching[0];
        if e.trigger != key.trigger.event_name() {
            violations.push(format!(
                "{cell}: caught as {} for {}",
                e.trigger,
                path.display()
            ));
        }
        h.saturating_record(e.latency_ns.max(1));
        probe.saturating_record(e.probe_ns.max(1));
        let without = no_copy_up.get(path).copied().unwrap_or(0);
        user_no_copy_up.saturating_record(without.max(1));
        // What the stopwatch sees beyond the kernel's time: the rest of
        // the syscall for a function backend, and the exit probe's own
        // work (tens of ns here, ~100 us under emulation).
        let rest = e.probe_ns
            + match e.timed {
                Timed::CopyUpFunction => without,
                Timed::Syscall => 0,
            };
        let slack = (user_ns / 10).max(50_000);
        if e.latency_ns > user_ns || user_ns.saturating_sub(e.latency_ns + rest) > slack {
            timing.push(format!(
                "{cell}: kernel {}ns (+{rest}ns outside the copy-up) vs stopwatch {user_ns}ns for {}",
                e.latency_ns,
                path.display()
            ));
        }
        if e.file_size != Some(key.file_size)
            || e.layer_depth != Some(key.layer_depth)
            || e.dir_depth != Some(key.dir_depth)
        {
            violations.push(format!(
                "{cell}: attributed size={:?} layer={:?} dir={:?} for {}",
                e.file_size,
                e.layer_depth,
                e.dir_depth,
                path.display()
            ));
        }
    }
    let extra = events.len().saturating_sub(stopwatch.len());
    if extra > 0 {
        violations.push(format!(
            "{cell}: {extra} events beyond the copy-ups triggered"
        ));
    }
    Cell {
        key,
        stats: Stats::of(&h),
        user_p50: user.value_at_quantile(0.5),
        user_no_copy_up_p50: user_no_copy_up.value_at_quantile(0.5),
        probe_p50: probe.value_at_quantile(0.5),
        triggered: stopwatch.len(),
    }
}
