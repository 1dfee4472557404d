//! `strata-prof`: live histograms of what overlayfs copy-on-write costs.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use strata_prof::backend::Backend;
use strata_prof::{
    backend, census, containers, engines, output, probes, record, report, serve, sweep,
};

#[derive(Parser)]
#[command(
    name = "strata-prof",
    about = "eBPF profiler of overlayfs copy-on-write cost",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Which backends work on this kernel, and why the others do not;
    /// which engine and container each overlay mount here belongs to.
    Doctor {
        #[arg(long)]
        json: bool,
        /// strata's store root, to name strata's containers.
        #[arg(long, env = "STRATA_ROOT", default_value = strata_driver::store::DEFAULT_ROOT)]
        store_root: PathBuf,
    },
    /// Stream copy-up histograms until Ctrl-C or --duration, then summarise.
    Record {
        #[command(flatten)]
        args: record::RecordArgs,
        #[command(flatten)]
        which: WhichContainer,
    },
    /// Serve copy-up metrics to Prometheus at /metrics until SIGTERM/SIGINT.
    Serve {
        #[command(flatten)]
        args: serve::ServeArgs,
        #[command(flatten)]
        which: WhichContainer,
    },
    /// Plot latency against file size and depth from `record --json` or
    /// `sweep --json` output.
    Report {
        file: PathBuf,
        /// The plot: p50 and the p50-p99 band by size, layer depth and
        /// directory depth.
        #[arg(long, required_unless_present = "html")]
        svg: Option<PathBuf>,
        /// One page with the plot and the tables (no network needed).
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Build images over a size x layer-depth x directory-depth grid,
    /// trigger copy-ups, record them and print the matrix.
    Sweep(SweepArgs),
}

/// `--container` and where to look it up.
#[derive(clap::Args)]
struct WhichContainer {
    /// Only this container: a strata container (ID or name, wherever it is
    /// mounted), or a running docker, podman or containerd container (its
    /// ID, a unique prefix of it, or its docker or podman name).
    #[arg(long, conflicts_with = "mount")]
    container: Option<String>,
    /// strata's store root, for --container and --per-container.
    #[arg(long, env = "STRATA_ROOT", default_value = strata_driver::store::DEFAULT_ROOT)]
    store_root: PathBuf,
    /// dockerd's data-root, where --container finds docker's names.
    #[arg(long, default_value = "/var/lib/docker")]
    docker_root: PathBuf,
    /// containers/storage's root, where --container finds podman's names.
    #[arg(long, default_value = "/var/lib/containers/storage")]
    podman_root: PathBuf,
}

#[derive(clap::Args)]
struct SweepArgs {
    /// File sizes (K/M/G suffixes).
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    sizes: Option<Vec<u64>>,
    /// Layer depths.
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<usize>>,
    /// Directory depths.
    #[arg(long, value_delimiter = ',')]
    dirs: Option<Vec<usize>>,
    /// Every combination, not one axis at a time.
    #[arg(long)]
    full: bool,
    /// Copy-ups per cell (fewer for huge files).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// What copies the files up: write (an open for writing), chmod,
    /// chown; each is a line of its own in the plot.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "write")]
    triggers: Vec<sweep::SweepTrigger>,
    /// Containers mounted with overlayfs metacopy: off, on, or both.
    #[arg(long, value_enum, default_value_t = OnOff::Off)]
    metacopy: OnOff,
    /// Containers mounted volatile (no syncs): off, on, or both.
    #[arg(long, value_enum, default_value_t = OnOff::Off)]
    volatile: OnOff,
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// One JSON object per cell instead of the table.
    #[arg(long)]
    json: bool,
    /// Where to write the plot.
    #[arg(long, default_value = "strata-sweep.svg")]
    svg: PathBuf,
    /// Store for the sweep's images (removed afterwards unless --keep).
    #[arg(long)]
    root: Option<PathBuf>,
    #[arg(long)]
    keep: bool,
}

/// A mount variant the sweep measures without, with, or both ways.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    Off,
    On,
    Both,
}

impl OnOff {
    fn values(self) -> Vec<bool> {
        match self {
            OnOff::Off => vec![false],
            OnOff::On => vec![true],
            OnOff::Both => vec![false, true],
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size like 4K, 1M or 4096"))
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Doctor { json, store_root } => doctor(json, &store_root),
        Cmd::Record { mut args, which } => {
            scope(&mut args.watch, &which)?;
            runtime()?.block_on(record::record(args))?;
            Ok(())
        }
        Cmd::Serve { mut args, which } => {
            scope(&mut args.watch, &which)?;
            runtime()?.block_on(serve::serve(args, &which.store_root))
        }
        Cmd::Report { file, svg, html } => {
            let report = report::load(&file)?;
            if let Some(svg) = svg {
                report::svg::write(&report, &svg)?;
                println!("wrote {} ({} points)", svg.display(), report.points.len());
            }
            if let Some(html) = html {
                report::html::write(&report, &html)?;
                println!("wrote {}", html.display());
            }
            Ok(())
        }
        Cmd::Sweep(args) => sweep_command(args),
    }
}

/// `strata-prof sweep`: the grid from the options, the run, the table
/// and the plot.
fn sweep_command(args: SweepArgs) -> Result<()> {
    let mut grid = sweep::Grid {
        full: args.full,
        reps: args.reps.max(1),
        triggers: args.triggers,
        metacopy: args.metacopy.values(),
        volatile: args.volatile.values(),
        ..Default::default()
    };
    if let Some(s) = args.sizes {
        grid.sizes = s;
    }
    if let Some(l) = args.layers {
        grid.layers = l;
    }
    if let Some(d) = args.dirs {
        grid.dirs = d;
    }
    grid.triggers.dedup();
    if grid.sizes.is_empty()
        || grid.triggers.is_empty()
        || grid.layers.is_empty()
        || grid.dirs.is_empty()
        || grid.layers.contains(&0)
    {
        bail!("every axis needs at least one value, and layer depths start at 1");
    }
    let root = args
        .root
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/strata-sweep-{}", std::process::id())));
    let result = sweep::run(&grid, &root, args.backend, !args.json);
    if !args.keep {
        let _ = strata_driver::fsutil::remove_tree(&root);
    }
    let result = result?;
    output::print_sweep(&result, args.json)?;
    report::svg::write(&report::of_sweep(&result), &args.svg)?;
    if !args.json {
        println!("plot: {}", args.svg.display());
    }
    if !result.violations.is_empty() {
        bail!("{} truth-bar violations", result.violations.len());
    }
    Ok(())
}

/// Resolves `--container` to a strata container's mount or to an engine's
/// container, and `--mount` to a canonical path.
fn scope(watch: &mut record::WatchArgs, which: &WhichContainer) -> Result<()> {
    watch.store_root = Some(which.store_root.clone());
    if let Some(spec) = &which.container {
        // strata's own first (opening no store where there is none, so
        // that none is created), then the engines' running containers.
        let in_store = which.store_root.join("containers").is_dir()
            && strata_driver::Store::open(&which.store_root)
                .and_then(|s| s.find_container(spec))
                .is_ok();
        if in_store {
            watch.mount = Some(containers::mount_point(&which.store_root, spec)?);
        } else {
            watch.container = Some(engines::resolve(spec, &engine_roots(which))?);
        }
    } else if let Some(m) = &watch.mount {
        watch.mount = Some(
            m.canonicalize()
                .with_context(|| format!("{}", m.display()))?,
        );
    }
    Ok(())
}

fn engine_roots(which: &WhichContainer) -> engines::EngineRoots {
    engines::EngineRoots {
        docker: which.docker_root.clone(),
        podman: which.podman_root.clone(),
    }
}

/// One thread: the loop, the probes' ring buffer and the HTTP front take
/// turns, so none needs a lock across threads on the hot path.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn doctor(json: bool, store_root: &std::path::Path) -> Result<()> {
    let d = backend::diagnose(
        probes::try_load(Backend::Fentry),
        probes::try_load(Backend::Kprobe),
    );
    let mounts = census::overlay_mounts(store_root);
    if json {
        let mut v = serde_json::to_value(&d)?;
        v["overlay_mounts"] = serde_json::to_value(&mounts)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for c in &d.checks {
        println!(
            "[{}] {}: {}",
            if c.ok { " ok " } else { "FAIL" },
            c.what,
            c.detail
        );
    }
    println!();
    for b in &d.backends {
        let state = if b.available {
            "available"
        } else {
            "unavailable"
        };
        println!("{:<10} {state:<11} {}", b.backend.to_string(), b.why);
    }
    match d.chosen {
        Some(b) => println!("\nrecord would use: {b}"),
        None => println!("\nno backend works on this kernel"),
    }
    println!("\noverlay mounts: {}", mounts.len());
    for m in &mounts {
        let layers = m.lower_layers.map_or("?".into(), |n| n.to_string());
        let engine = m.engine.as_deref().unwrap_or("?");
        let who = match (&m.container, &m.unattributed) {
            (Some(c), _) => c.clone(),
            (None, Some(why)) => format!("unattributed: {why}"),
            (None, None) => "?".into(),
        };
        println!(
            "  {}  layers {layers}  {engine}  {who}",
            m.mount_point.display()
        );
    }
    Ok(())
}
