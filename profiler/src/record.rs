//! The recording loop that `record` and `serve` share: drain the ring
//! buffer, hand each attributed copy-up to the sinks, close an interval on
//! every tick, answer pulls from outside (Prometheus scrapes) between
//! events, and on SIGINT/SIGTERM or the end of `--duration` drain what is
//! still queued before the probes detach, so nothing recorded is lost.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_common::{VfsKey, LOG2_SLOTS};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::backend::Backend;
use crate::histograms::Histograms;
use crate::output;
use crate::probes::Filters;
use crate::session::{Scope, Session};
use crate::sink::{HdrLogSink, Interval, JsonLinesSink, Sink, Summary, TableSink};

/// What to watch: the backend and the in-kernel filters, shared by
/// `record` and `serve` (`--container` is resolved to `mount` first).
#[derive(clap::Args)]
pub struct WatchArgs {
    /// Force a backend instead of the most precise that works here.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Only this process (in-kernel filter).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only this cgroup v2 directory (in-kernel filter).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Only this overlay mount point.
    #[arg(long)]
    pub mount: Option<PathBuf>,
    /// Only this engine's container (`--container` resolved to a docker,
    /// podman or containerd container).
    #[arg(skip)]
    pub container: Option<crate::engines::Owner>,
    /// strata's store, to name its containers (set with `--store-root`).
    #[arg(skip)]
    pub store_root: Option<PathBuf>,
    /// Also time read/write/fsync/open system-wide by what backs the
    /// file (lower layer, writable layer, not overlay) and, for opens,
    /// how many layers down it lives. Costs more on hot paths.
    #[arg(long)]
    pub vfs: bool,
    /// Also measure what each probe costs per run (the kernel's BPF
    /// run-time stats, on while recording).
    #[arg(long)]
    pub probe_cost: bool,
}

/// `strata-prof record`'s options.
#[derive(clap::Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Refresh the live view this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// JSON lines: one per copy-up, one per interval histogram.
    #[arg(long)]
    pub json: bool,
    /// Also write an HdrHistogram interval log.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
}

/// `record`: the terminal table or JSON lines, and the HdrHistogram log.
pub async fn record(args: RecordArgs) -> Result<Histograms> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    sinks.push(if args.json {
        Box::new(JsonLinesSink::stdout())
    } else {
        Box::new(TableSink::stdout())
    });
    if let Some(p) = &args.hdr_log {
        sinks.push(Box::new(HdrLogSink::create(p)?));
    }
    let watching = Watching::start(&args.watch)?;
    let until = LoopEnd {
        interval: args.interval,
        duration: args.duration,
    };
    watching.run::<()>(&until, &mut sinks, None).await
}

/// When the loop closes intervals and when it ends.
pub struct LoopEnd {
    pub interval: Duration,
    pub duration: Option<Duration>,
}

/// A pull from outside the loop, answered with the session in hand after
/// the ring buffer has been drained (a scrape sees every event so far).
pub type Pull<T> = (mpsc::Receiver<T>, Box<dyn FnMut(T, &Session) -> Result<()>>);

/// Probes attached and stats on, ready to loop.
pub struct Watching {
    session: Session,
    vfs: bool,
    probe_cost: bool,
    /// Held for the whole recording: the kernel counts runs and time only
    /// while some process holds this (it adds two clock reads per run).
    _stats: Option<std::os::fd::OwnedFd>,
}

struct Fd(RawFd);
impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Watching {
    pub fn start(args: &WatchArgs) -> Result<Watching> {
        let mut filters = Filters {
            tgid: args.pid.unwrap_or(0),
            cgroup_id: 0,
        };
        if let Some(cg) = &args.cgroup {
            // cgroup v2: the id bpf_get_current_cgroup_id returns is the
            // cgroup directory's inode number.
            let md = std::fs::metadata(cg).with_context(|| format!("cgroup {}", cg.display()))?;
            filters.cgroup_id = std::os::unix::fs::MetadataExt::ino(&md);
        }
        if let Some(m) = &args.mount {
            if !crate::mounts::overlay_mounts()
                .iter()
                .any(|o| &o.mount_point == m)
            {
                bail!("{} is not an overlay mount point", m.display());
            }
        }
        let stats = args
            .probe_cost
            .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
            .transpose()
            .context("turning on BPF run-time stats")?;
        let scope = match (&args.mount, &args.container) {
            (Some(m), _) => Some(Scope::Mount(m.clone())),
            (None, Some(o)) => Some(Scope::Container(o.clone())),
            (None, None) => None,
        };
        let session = Session::start(
            filters,
            args.backend,
            scope,
            args.vfs,
            args.store_root.as_deref(),
        )?;
        eprintln!("strata-prof: {}", session.reason);
        Ok(Watching {
            session,
            vfs: args.vfs,
            probe_cost: args.probe_cost,
            _stats: stats,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Loops until SIGINT, SIGTERM or the end; returns every copy-up's
    /// histograms.
    pub async fn run<T>(
        mut self,
        end: &LoopEnd,
        sink: &mut dyn Sink,
        mut pull: Option<Pull<T>>,
    ) -> Result<Histograms> {
        // SAFETY: the fd belongs to the session's ring buffer, which
        // outlives `ring` (dropped at the end of this function, before
        // `self`).
        let ring = unsafe { AsyncFd::register(Fd(self.session.ring_fd())) }
            .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
        let mut clock = Clock::new();
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + end.interval, end.interval);
        // The kernel side wakes us only per batch of events (a wakeup per
        // event costs more than the rest of its report), so drain on a timer.
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        let deadline = end.duration.map(|d| tokio::time::Instant::now() + d);
        loop {
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let next_pull = async {
                match pull.as_mut() {
                    Some((rx, _)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                guard = ring.readable() => {
                    let mut guard = guard?;
                    self.take_events(sink, &mut clock)?;
                    guard.clear_ready();
                }
                _ = drain.tick() => self.take_events(sink, &mut clock)?,
                _ = tick.tick() => self.close_interval(sink, &mut clock)?,
                Some(request) = next_pull => {
                    self.take_events(sink, &mut clock)?;
                    if let Some((_, answer)) = pull.as_mut() {
                        answer(request, &self.session)?;
                    }
                }
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = until_deadline => break,
            }
        }
        // Drain what is still queued before the probes go away.
        self.take_events(sink, &mut clock)?;
        self.close_interval(sink, &mut clock)?;
        self.summarise(sink, &clock)?;
        drop(ring);
        Ok(clock.total)
    }

    /// Everything in the ring buffer now: to the sinks, and counted.
    fn take_events(&mut self, sink: &mut dyn Sink, clock: &mut Clock) -> Result<()> {
        let keep_histograms = sink.reads_aggregates();
        for e in self.session.poll() {
            sink.copy_up(&e)?;
            if keep_histograms {
                clock.interval.record(&e);
            }
        }
        Ok(())
    }

    fn close_interval(&mut self, sink: &mut dyn Sink, clock: &mut Clock) -> Result<()> {
        let elapsed = clock.started.elapsed();
        let vfs = if self.vfs && sink.reads_aggregates() {
            let now = self.session.probes().vfs_histograms()?;
            let rows = output::vfs_rows(&now, &clock.vfs_seen);
            clock.vfs_seen = now.into_iter().collect();
            Some(rows)
        } else {
            None
        };
        sink.interval(&Interval {
            elapsed,
            length: elapsed - clock.interval_start,
            histograms: &clock.interval,
            counters: self.session.counters()?,
            new_files: self.session.new_files,
            unnamed_mount: self.session.unnamed_mount,
            backend: self.session.backend(),
            vfs: vfs.as_deref(),
        })?;
        clock.interval_start = elapsed;
        clock.total.merge(&clock.interval);
        clock.interval = Histograms::default();
        Ok(())
    }

    fn summarise(&self, sink: &mut dyn Sink, clock: &Clock) -> Result<()> {
        let probes = self.session.probes();
        let counters = self.session.counters()?;
        let costs = self
            .probe_cost
            .then(|| probes.program_costs())
            .transpose()?;
        let vfs = self
            .vfs
            .then(|| probes.vfs_histograms())
            .transpose()?
            .map(|now| output::vfs_rows(&now, &HashMap::new()));
        sink.summary(&Summary {
            elapsed: clock.started.elapsed(),
            backend: self.session.backend(),
            kernel: crate::backend::kernel_release(),
            histograms: &clock.total,
            counters,
            new_files: self.session.new_files,
            unnamed_mount: self.session.unnamed_mount,
            kernel_histograms: &probes.kernel_histograms()?,
            vfs: vfs.as_deref(),
            probe_costs: costs.as_deref(),
        })?;
        if counters.lost() > 0 {
            eprintln!(
                "strata-prof: WARNING: {} events lost (see counters)",
                counters.lost()
            );
        }
        Ok(())
    }
}

/// How often the loop drains the ring buffer without being woken.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// The loop's running state: the interval under way and the whole.
struct Clock {
    started: Instant,
    interval_start: Duration,
    interval: Histograms,
    total: Histograms,
    /// The VFS histograms at the last interval, to report differences.
    vfs_seen: HashMap<VfsKey, [u64; LOG2_SLOTS]>,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            started: Instant::now(),
            interval_start: Duration::ZERO,
            interval: Histograms::default(),
            total: Histograms::default(),
            vfs_seen: HashMap::new(),
        }
    }
}
