//! `strata-prof`: live histograms of what overlayfs copy-on-write costs.

mod backend;
mod btf;
mod events;
mod histograms;
mod mounts;
mod probes;
mod session;
mod syscalls;
mod tracefs;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "strata-prof", about = "eBPF profiler of overlayfs copy-on-write cost", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Which backends work on this kernel, and why the others do not.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Print copy-ups as they happen (temporary smoke command).
    Watch,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Doctor { json } => {
            let d = backend::diagnose(probes::try_load(backend::Backend::Fentry), probes::try_load(backend::Backend::Kprobe));
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                for c in &d.checks {
                    println!("[{}] {}: {}", if c.ok { " ok " } else { "FAIL" }, c.what, c.detail);
                }
                for b in &d.backends {
                    println!("backend {:<10} {}: {}", b.backend.to_string(), if b.available { "available" } else { "unavailable" }, b.why);
                }
            }
            Ok(())
        }
        Cmd::Watch => {
            let mut s = session::Session::start(probes::Filters::default(), None, None)?;
            eprintln!("{}", s.reason);
            loop {
                for e in s.poll() {
                    println!("{}", serde_json::to_string(&e)?);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
}
