//! `--json`: one line per copy-up (`copy_up`), per interval key
//! (`interval`), per VFS row of an interval (`vfs`) and per probe
//! (`probe_cost`); then the `summary`, and the whole recording's VFS rows
//! (`vfs_total`).

use std::io::{Stdout, Write};

use anyhow::Result;
use serde_json::json;

use super::{Interval, Sink, Summary};
use crate::events::CopyUp;
use crate::histograms::Stats;

pub struct JsonLinesSink {
    out: Stdout,
}

impl JsonLinesSink {
    pub fn stdout() -> JsonLinesSink {
        JsonLinesSink {
            out: std::io::stdout(),
        }
    }
}

/// `value` with a `"type"` field naming what the line is.
fn typed(mut value: serde_json::Value, kind: &str) -> serde_json::Value {
    value["type"] = json!(kind);
    value
}

impl Sink for JsonLinesSink {
    fn copy_up(&mut self, event: &CopyUp) -> Result<()> {
        let line = typed(serde_json::to_value(event)?, "copy_up");
        writeln!(self.out.lock(), "{line}")?;
        Ok(())
    }

    fn interval(&mut self, iv: &Interval<'_>) -> Result<()> {
        let mut out = self.out.lock();
        for ((dim, bucket), h) in &iv.histograms.by_key {
            let line = json!({
                "type": "interval",
                "elapsed_s": iv.elapsed.as_secs_f64(),
                "dimension": dim,
                "key": bucket,
                "label": bucket.label(*dim),
                "stats": Stats::of(h),
            });
            writeln!(out, "{line}")?;
        }
        for row in iv.vfs.unwrap_or_default() {
            writeln!(out, "{}", typed(serde_json::to_value(row)?, "vfs"))?;
        }
        out.flush()?;
        Ok(())
    }

    fn summary(&mut self, s: &Summary<'_>) -> Result<()> {
        let mut out = self.out.lock();
        for c in s.probe_costs.unwrap_or_default() {
            writeln!(out, "{}", typed(serde_json::to_value(c)?, "probe_cost"))?;
        }
        let summary = json!({
            "type": "summary",
            "backend": s.backend.to_string(),
            "kernel_release": s.kernel,
            "copy_ups": s.histograms.total(),
            "kernel": s.counters,
            "new_files": s.new_files,
            "unnamed_mount": s.unnamed_mount,
        });
        writeln!(out, "{summary}")?;
        // The whole recording's rows: the sum of the intervals' "vfs" rows,
        // so typed apart, or a reader summing rows would count twice.
        for row in s.vfs.unwrap_or_default() {
            writeln!(out, "{}", typed(serde_json::to_value(row)?, "vfs_total"))?;
        }
        out.flush()?;
        Ok(())
    }
}
