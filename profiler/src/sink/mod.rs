//! Where a recording goes. The record loop knows one interface, [`Sink`],
//! and hands every sink the same three things: each copy-up as it is
//! attributed, each interval's histograms, and the summary at the end.
//! The terminal table, JSON lines, the HdrHistogram log and the Prometheus
//! exporter are sinks; `record` and `serve` differ only in which they pick.

mod hdr_log;
mod json_lines;
mod table;

use std::time::Duration;

use anyhow::Result;

pub use hdr_log::HdrLogSink;
pub use json_lines::JsonLinesSink;
pub use table::TableSink;

use crate::backend::Backend;
use crate::events::CopyUp;
use crate::histograms::Histograms;
use crate::output::VfsRow;
use crate::probes::ProgramCost;
use crate::session::KernelCounters;
use strata_common::{HistKey, LOG2_SLOTS};

/// One interval of a recording.
pub struct Interval<'a> {
    /// Since the recording started, at the end of this interval.
    pub elapsed: Duration,
    pub length: Duration,
    /// The copy-ups of this interval alone.
    pub histograms: &'a Histograms,
    pub counters: KernelCounters,
    pub new_files: u64,
    /// Copy-ups reported without a mount (see `Session::unnamed_mount`).
    pub unnamed_mount: u64,
    pub backend: Backend,
    /// The `--vfs` view of this interval, when asked for.
    pub vfs: Option<&'a [VfsRow]>,
}

/// The end of a recording.
pub struct Summary<'a> {
    pub elapsed: Duration,
    pub backend: Backend,
    /// The kernel's release (`uname -r`).
    pub kernel: String,
    /// Every copy-up of the recording.
    pub histograms: &'a Histograms,
    pub counters: KernelCounters,
    pub new_files: u64,
    pub unnamed_mount: u64,
    /// The always-on in-kernel log2 histograms.
    pub kernel_histograms: &'a [(HistKey, [u64; LOG2_SLOTS])],
    /// The `--vfs` view of the whole recording, when asked for.
    pub vfs: Option<&'a [VfsRow]>,
    /// What each probe cost, with `--probe-cost`.
    pub probe_costs: Option<&'a [ProgramCost]>,
}

/// One output of a recording (ripgrep's `Sink`, for copy-ups).
pub trait Sink {
    fn copy_up(&mut self, event: &CopyUp) -> Result<()>;
    fn interval(&mut self, interval: &Interval<'_>) -> Result<()>;
    fn summary(&mut self, summary: &Summary<'_>) -> Result<()>;
    /// Whether it reads the data the loop aggregates for intervals and
    /// the summary: the HdrHistograms (five keyed records per event) and
    /// the `--vfs` rows (a map read per interval). The loop computes them
    /// only if some sink does.
    fn reads_aggregates(&self) -> bool {
        true
    }
}

/// Several sinks fed the same recording, in order.
impl Sink for Vec<Box<dyn Sink>> {
    fn copy_up(&mut self, event: &CopyUp) -> Result<()> {
        self.iter_mut().try_for_each(|s| s.copy_up(event))
    }
    fn interval(&mut self, interval: &Interval<'_>) -> Result<()> {
        self.iter_mut().try_for_each(|s| s.interval(interval))
    }
    fn summary(&mut self, summary: &Summary<'_>) -> Result<()> {
        self.iter_mut().try_for_each(|s| s.summary(summary))
    }
    fn reads_aggregates(&self) -> bool {
        self.iter().any(|s| s.reads_aggregates())
    }
}
