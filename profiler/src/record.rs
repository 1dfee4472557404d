//! `strata-prof record`: stream copy-ups until stopped or the duration
//! ends, then print the summary. Ctrl-C drains the ring buffer before the
//! probes detach, so nothing recorded is lost.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use tokio::io::unix::AsyncFd;

use crate::backend::Backend;
use crate::histograms::Histograms;
use crate::output;
use crate::probes::Filters;
use crate::session::Session;

/// `strata-prof record`'s options (`--container` is resolved to `mount`
/// before recording starts).
#[derive(clap::Args)]
pub struct RecordArgs {
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
    /// Also time read/write/fsync/open system-wide by what backs the
    /// file (lower layer, writable layer, not overlay) and, for opens,
    /// how many layers down it lives. Costs more on hot paths.
    #[arg(long)]
    pub vfs: bool,
    /// Also measure what each probe costs per run (the kernel's BPF
    /// run-time stats, on while recording) and print it at the end.
    #[arg(long)]
    pub probe_cost: bool,
}

struct Fd(RawFd);
impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub async fn record(args: RecordArgs) -> Result<Histograms> {
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
    // Held for the whole recording: the kernel counts runs and time only
    // while some process holds this (it adds two clock reads per run).
    let _stats = args
        .probe_cost
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime))
        .transpose()
        .context("turning on BPF run-time stats")?;
    let mut session = Session::start(filters, args.backend, args.mount.clone(), args.vfs)?;
    let mut vfs_seen = std::collections::HashMap::new();
    eprintln!("strata-prof: {}", session.reason);
    // SAFETY: the fd belongs to the session's ring buffer, which lives until
    // the end of this function; `ring` is declared later, so dropped first.
    let ring = unsafe { AsyncFd::register(Fd(session.ring_fd())) }
        .map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;

    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut hdr_file = match &args.hdr_log {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut serializer = V2DeflateSerializer::new();
    let started = Instant::now();
    let mut hdr_log = match hdr_file.as_mut() {
        Some(f) => Some(
            IntervalLogWriterBuilder::new()
                .add_comment("strata-prof copy-up latency, ns; tags are dimension=bucket")
                .with_start_time(std::time::SystemTime::now())
                .with_max_value_divisor(1e6)
                .begin_log_with(f, &mut serializer)
                .map_err(|e| anyhow::anyhow!("starting HdrHistogram log: {e}"))?,
        ),
        None => None,
    };

    let mut total = Histograms::default();
    let mut interval = Histograms::default();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    // The kernel side wakes us only per batch of events (a wakeup per
    // event costs more than the rest of its report), so drain on a timer.
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut interval_start = Duration::ZERO;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard?;
                take_events(&mut session, &mut out, &args, &mut interval)?;
                guard.clear_ready();
            }
            _ = drain.tick() => take_events(&mut session, &mut out, &args, &mut interval)?,
            _ = tick.tick() => {
                let elapsed = started.elapsed();
                emit_interval(&mut out, &args, elapsed, &interval, &session)?;
                if args.vfs {
                    let now = session.probes().vfs_histograms()?;
                    emit_vfs(&mut out, &args, &output::vfs_rows(&now, &vfs_seen))?;
                    vfs_seen = now.into_iter().collect();
                }
                if let Some(log) = hdr_log.as_mut() {
                    output::write_hdr_interval(log, &interval, interval_start, elapsed - interval_start)?;
                }
                interval_start = elapsed;
                total.merge(&interval);
                interval = Histograms::default();
            }
            _ = &mut ctrl_c => break,
            _ = until_deadline => break,
        }
    }
    // Drain what is still queued before the probes go away.
    take_events(&mut session, &mut out, &args, &mut interval)?;
    if let Some(log) = hdr_log.as_mut() {
        output::write_hdr_interval(
            log,
            &interval,
            interval_start,
            started.elapsed() - interval_start,
        )?;
    }
    drop(hdr_log);
    if let Some(mut f) = hdr_file {
        f.flush()?;
    }
    total.merge(&interval);

    let counters = session.counters()?;
    if args.probe_cost {
        emit_probe_costs(&mut out, &args, &session.probes().program_costs()?)?;
    }
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({"type": "summary", "copy_ups": total.total(), "kernel": counters, "new_files": session.new_files})
        )?;
    } else {
        writeln!(
            out,
            "\nsummary after {:.1}s: {} copy-ups",
            started.elapsed().as_secs_f64(),
            total.total()
        )?;
        output::print_tables(&mut out, &total)?;
        output::print_kernel_histograms(&mut out, &session.probes().kernel_histograms()?)?;
        output::print_counters(&mut out, &counters, session.new_files)?;
    }
    if args.vfs {
        let all = output::vfs_rows(&session.probes().vfs_histograms()?, &Default::default());
        if !args.json {
            writeln!(out, "whole recording:")?;
        }
        emit_vfs(&mut out, &args, &all)?;
    }
    if counters.lost() > 0 {
        eprintln!(
            "strata-prof: WARNING: {} events lost (see counters)",
            counters.lost()
        );
    }
    Ok(total)
}

/// How often record drains the ring buffer without being woken.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Everything in the ring buffer now: printed (with --json) and counted.
fn take_events(
    session: &mut Session,
    out: &mut impl Write,
    args: &RecordArgs,
    interval: &mut Histograms,
) -> Result<()> {
    for e in session.poll() {
        if args.json {
            writeln!(out, "{}", output::event_json(&e))?;
        }
        interval.record(&e);
    }
    Ok(())
}

fn emit_interval(
    out: &mut impl Write,
    args: &RecordArgs,
    elapsed: Duration,
    h: &Histograms,
    s: &Session,
) -> Result<()> {
    if args.json {
        for line in output::interval_json(elapsed.as_secs_f64(), h) {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    let now = humantime_now();
    writeln!(
        out,
        "{now}  {} copy-ups in the last {:.1}s (backend {})",
        h.total(),
        args.interval.as_secs_f64(),
        s.backend()
    )?;
    output::print_tables(out, h)?;
    output::print_counters(out, &s.counters()?, s.new_files)?;
    out.flush()?;
    Ok(())
}

fn emit_probe_costs(
    out: &mut impl Write,
    args: &RecordArgs,
    costs: &[crate::probes::ProgramCost],
) -> Result<()> {
    if !args.json {
        writeln!(out, "\nprobe cost (kernel BPF run-time stats):")?;
    }
    for c in costs {
        if args.json {
            let mut v = serde_json::to_value(c)?;
            v["type"] = "probe_cost".into();
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "  {:<28} {:>10} runs {:>8} ns/run",
                c.program, c.runs, c.ns_per_run
            )?;
        }
    }
    Ok(())
}

fn emit_vfs(out: &mut impl Write, args: &RecordArgs, rows: &[output::VfsRow]) -> Result<()> {
    if args.json {
        for r in rows {
            let mut v = serde_json::to_value(r)?;
            v["type"] = "vfs".into();
            writeln!(out, "{v}")?;
        }
    } else {
        output::print_vfs(out, rows)?;
    }
    Ok(())
}

fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}
