//! `strata-bench`: strata's operations against baselines measured in the
//! same run. Run it through `cargo xtask bench`.

mod containerd;
mod cow;
mod cri;
mod docker;
mod fixtures;
mod gate;
mod harness;
mod hot_path;
mod ops;
mod peers;
mod pull;
mod serve;
mod snapshot_rpc;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;

#[derive(Parser)]
#[command(about = "strata's performance-regression benches")]
struct Cli {
    /// Small workloads and few repetitions: proves every bench runs.
    #[arg(long)]
    quick: bool,
    /// Repetitions per side (default 3 quick, 9 full).
    #[arg(long)]
    reps: Option<usize>,
    /// Store these results as a named baseline.
    #[arg(long)]
    save_baseline: Option<String>,
    /// Compare against a named baseline; exit non-zero on a regression.
    #[arg(long)]
    baseline: Option<String>,
    /// How much a ratio may grow over the baseline's (0.10 = 10%).
    #[arg(long, default_value_t = 0.10)]
    threshold: f64,
    /// Only benches whose group matches: ops (import and containers), peers,
    /// pull (containerd-pull: its containerd pulls alone), containerd,
    /// docker and cri (full runs only, unless asked), containerd (and
    /// snapshot-rpc: its calls against a null proxy alone), cow, serve,
    /// overhead.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long)]
    strata: PathBuf,
    #[arg(long)]
    prof: PathBuf,
    /// Results directory.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let work = PathBuf::from("/var/tmp/strata-bench");
    fixtures::unmount_all_beneath(&work);
    let _ = std::fs::remove_dir_all(&work);
    let env = fixtures::Env {
        work: work.clone(),
        strata: cli.strata.canonicalize()?,
        prof: cli.prof.canonicalize()?,
        quick: cli.quick,
        reps: cli.reps.unwrap_or(if cli.quick { 3 } else { 9 }),
    };
    let wanted = |g: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == g);
    let mut results = Vec::new();
    let run = (|| -> Result<()> {
        if wanted("ops") || wanted("import") {
            eprintln!("imports (fresh filesystems):");
            results.extend(ops::imports(&env, &cli.out.join("cache"))?);
        }
        if wanted("ops") || wanted("containers") {
            eprintln!("containers:");
            results.extend(ops::containers(&env)?);
        }
        if wanted("peers") {
            eprintln!("import, strata vs the engines' own (fresh filesystems):");
            results.extend(peers::all(&env, &cli.out.join("cache"))?);
        }
        if wanted("pull") || wanted("containerd-pull") {
            eprintln!("pull from a local registry (fresh filesystems):");
            let only_containerd = !wanted("pull");
            results.extend(pull::all(&env, &cli.out.join("cache"), only_containerd)?);
        }
        // Three engines and a 130 MB image: full runs, or asked for.
        if cli.only.iter().any(|o| o == "docker") || (cli.only.is_empty() && !env.quick) {
            eprintln!("docker 26: strata vs overlayfs snapshotter vs overlay2:");
            results.extend(docker::all(&env, &cli.out.join("cache"))?);
        }
        // Two CRI nodes, 200 pods and a 130 MB image: full runs, or asked.
        if cli.only.iter().any(|o| o == "cri") || (cli.only.is_empty() && !env.quick) {
            eprintln!("CRI: strata vs overlayfs snapshotter:");
            results.extend(cri::all(&env, &cli.out.join("cache"))?);
        }
        if wanted("containerd") {
            eprintln!("containerd, strata snapshotter vs overlayfs:");
            results.extend(containerd::all(&env, &cli.out.join("cache"))?);
        }
        if wanted("containerd") || wanted("snapshot-rpc") {
            eprintln!("snapshot calls through containerd, strata vs a null proxy:");
            results.extend(snapshot_rpc::all(&env)?);
        }
        if wanted("cow") {
            eprintln!("copy-up matrix (durable vs --volatile):");
            results.extend(cow::matrix(&env, &cli.out)?);
        }
        if wanted("serve") {
            eprintln!("strata-prof serve:");
            results.extend(serve::all(&env)?);
        }
        if wanted("overhead") {
            eprintln!("profiler overhead:");
            results.extend(cow::profiler_overhead(&env)?);
            results.extend(hot_path::all(&env)?);
        }
        Ok(())
    })();
    fixtures::unmount_all_beneath(&work);
    let _ = std::fs::remove_dir_all(&work);
    run?;
    let kernel = strata_prof::backend::kernel_release();
    let results = gate::Results {
        quick: cli.quick,
        kernel,
        results,
    };
    gate::write(&cli.out, &results)?;
    println!("{}", gate::markdown(&results));
    if let Some(name) = &cli.save_baseline {
        println!(
            "saved baseline {}",
            gate::save_baseline(&cli.out, name, &results)?.display()
        );
    }
    if let Some(name) = &cli.baseline {
        let before = gate::load_baseline(&cli.out, name)?;
        let regressed = gate::regressions(&results, &before, cli.threshold);
        for r in &regressed {
            println!(
                "REGRESSION {}: ratio {:.2} -> {:.2}",
                r.name, r.before, r.now
            );
        }
        if !regressed.is_empty() {
            bail!(
                "{} bench(es) regressed more than {:.0}% against baseline {name}",
                regressed.len(),
                cli.threshold * 100.0
            );
        }
        println!(
            "no regression against baseline {name} (threshold {:.0}%)",
            cli.threshold * 100.0
        );
    }
    Ok(())
}
