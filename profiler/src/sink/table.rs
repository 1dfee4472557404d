//! The terminal view: per-interval tables in the style of bcc's *dist
//! tools, and the summary with the in-kernel histograms.

use std::io::{Stdout, Write};

use anyhow::Result;

use super::{Interval, Sink, Summary};
use crate::events::CopyUp;
use crate::output;

pub struct TableSink {
    out: Stdout,
}

impl TableSink {
    pub fn stdout() -> TableSink {
        TableSink {
            out: std::io::stdout(),
        }
    }
}

impl Sink for TableSink {
    fn copy_up(&mut self, _event: &CopyUp) -> Result<()> {
        Ok(())
    }

    fn interval(&mut self, iv: &Interval<'_>) -> Result<()> {
        let mut out = self.out.lock();
        writeln!(
            out,
            "{}  {} copy-ups in the last {:.1}s (backend {})",
            wall_clock(),
            iv.histograms.total(),
            iv.length.as_secs_f64(),
            iv.backend
        )?;
        output::print_tables(&mut out, iv.histograms)?;
        output::print_counters(&mut out, &iv.counters, iv.new_files, iv.unnamed_mount)?;
        if let Some(rows) = iv.vfs {
            output::print_vfs(&mut out, rows)?;
        }
        out.flush()?;
        Ok(())
    }

    fn summary(&mut self, s: &Summary<'_>) -> Result<()> {
        let mut out = self.out.lock();
        writeln!(
            out,
            "\nsummary after {:.1}s: {} copy-ups",
            s.elapsed.as_secs_f64(),
            s.histograms.total()
        )?;
        output::print_tables(&mut out, s.histograms)?;
        output::print_kernel_histograms(&mut out, s.kernel_histograms)?;
        output::print_counters(&mut out, &s.counters, s.new_files, s.unnamed_mount)?;
        if let Some(costs) = s.probe_costs {
            writeln!(out, "\nprobe cost (kernel BPF run-time stats):")?;
            for c in costs {
                writeln!(
                    out,
                    "  {:<28} {:>10} runs {:>8} ns/run",
                    c.program, c.runs, c.ns_per_run
                )?;
            }
        }
        if let Some(rows) = s.vfs {
            writeln!(out, "whole recording:")?;
            output::print_vfs(&mut out, rows)?;
        }
        out.flush()?;
        Ok(())
    }
}

/// HH:MM:SS (UTC) for the interval lines.
fn wall_clock() -> String {
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
