//! Terminal formatting: the live tables (bcc *dist style), the in-kernel
//! histograms, the `--vfs` rows and the sweep's matrix.

use std::io::Write;

use serde_json::json;
use strata_common::{HistKey, Trigger, LOG2_SLOTS, SIZE_UNKNOWN};

use crate::histograms::{human_bytes, Dimension, Histograms, Stats};
use crate::session::KernelCounters;

pub fn ns(v: u64) -> String {
    match v {
        0..=9_999 => format!("{v}ns"),
        10_000..=9_999_999 => format!("{:.1}us", v as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1}ms", v as f64 / 1e6),
        _ => format!("{:.2}s", v as f64 / 1e9),
    }
}

/// One table per dimension: count, p50/p90/p99/max and a bar.
pub fn print_tables(out: &mut impl Write, hists: &Histograms) -> std::io::Result<()> {
    for dim in Dimension::SHOWN {
        let rows: Vec<_> = hists.dimension(dim).collect();
        if rows.is_empty() {
            continue;
        }
        let most = rows.iter().map(|(_, h)| h.len()).max().unwrap_or(1).max(1);
        writeln!(out, "  by {}:", dim.title())?;
        writeln!(
            out,
            "    {:<18} {:>7} {:>9} {:>9} {:>9} {:>9}  distribution",
            "key", "count", "p50", "p90", "p99", "max"
        )?;
        for (bucket, h) in rows {
            let s = Stats::of(h);
            let bar = "#".repeat(((s.count * 30).div_ceil(most)) as usize);
            writeln!(
                out,
                "    {:<18} {:>7} {:>9} {:>9} {:>9} {:>9}  |{bar:<30}|",
                bucket.label(dim),
                s.count,
                ns(s.p50),
                ns(s.p90),
                ns(s.p99),
                ns(s.max)
            )?;
        }
    }
    Ok(())
}

pub fn print_counters(
    out: &mut impl Write,
    c: &KernelCounters,
    new_files: u64,
    unnamed_mount: u64,
) -> std::io::Result<()> {
    writeln!(
        out,
        "  kernel: {} watched calls, {} copy-ups; lost: {} (ring buffer full: {}, in-flight table full: {}); new files (not copy-ups): {new_files}; copy-ups on no visible mount: {unnamed_mount}",
        c.watched_calls,
        c.copy_ups,
        c.lost(),
        c.ringbuf_drops,
        c.inflight_full
    )
}

/// The always-on in-kernel view: log2 latency histograms per trigger and
/// size bucket, printed like bcc's *dist tools.
pub fn print_kernel_histograms(
    out: &mut impl Write,
    hists: &[(HistKey, [u64; LOG2_SLOTS])],
) -> std::io::Result<()> {
    let mut hists = hists.to_vec();
    hists.sort_by_key(|(k, _)| (k.trigger, k.size_log2, k.ancestors));
    for (key, slots) in hists {
        let trigger = Trigger::from_u8(key.trigger)
            .map(Trigger::name)
            .unwrap_or("?");
        let size = if key.size_log2 == SIZE_UNKNOWN {
            "size ?".to_string()
        } else {
            format!(
                "size {}..{}",
                human_bytes(1 << key.size_log2),
                human_bytes(2u64 << key.size_log2)
            )
        };
        writeln!(
            out,
            "  in-kernel: {trigger}, {size}, {} ancestors copied",
            key.ancestors
        )?;
        let most = slots.iter().copied().max().unwrap_or(1).max(1);
        let first = slots.iter().position(|c| *c > 0).unwrap_or(0);
        let last = slots.iter().rposition(|c| *c > 0).unwrap_or(0);
        writeln!(out, "    {:>22} : {:<8} distribution", "usecs", "count")?;
        for (i, count) in slots.iter().enumerate().take(last + 1).skip(first) {
            let (lo, hi) = ((1u64 << i) / 1000, ((2u64 << i) - 1) / 1000);
            let stars = "*".repeat(((count * 40).div_ceil(most)) as usize);
            writeln!(out, "    {lo:>10} -> {hi:<10} : {count:<8} |{stars:<40}|")?;
        }
    }
    Ok(())
}

/// The sweep's matrix: a table, or one JSON object per cell.
pub fn print_sweep(r: &crate::sweep::SweepResult, json: bool) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        for c in &r.cells {
            let mut v = serde_json::to_value(c).expect("cells serialise");
            v["type"] = json!("cell");
            writeln!(out, "{v}")?;
        }
        return writeln!(
            out,
            "{}",
            json!({"type": "sweep", "backend": r.backend, "kernel_release": r.kernel, "violations": r.violations, "retried": r.retried})
        );
    }
    writeln!(out, "copy-up latency by cell (backend {}):", r.backend)?;
    writeln!(
        out,
        "  {:<26} {:>9} {:>6} {:>5} {:>6} {:>10} {:>10} {:>10} {:>12}",
        "by", "size", "layers", "dirs", "count", "p50", "p99", "max", "stopwatch p50"
    )?;
    for c in &r.cells {
        writeln!(
            out,
            "  {:<26} {:>9} {:>6} {:>5} {:>6} {:>10} {:>10} {:>10} {:>12}",
            c.key.variant(),
            human_bytes(c.key.file_size),
            c.key.layer_depth,
            c.key.dir_depth,
            c.stats.count,
            ns(c.stats.p50),
            ns(c.stats.p99),
            ns(c.stats.max),
            ns(c.user_p50)
        )?;
    }
    for why in &r.retried {
        writeln!(out, "retried a cell after: {why}")?;
    }
    if r.violations.is_empty() {
        let n: usize = r.cells.iter().map(|c| c.triggered).sum();
        writeln!(
            out,
            "truth: all {n} copy-ups caught once, within the stopwatch, attributed as built"
        )
    } else {
        writeln!(out, "truth: {} violations:", r.violations.len())?;
        r.violations.iter().try_for_each(|v| writeln!(out, "  {v}"))
    }
}

/// One row of the --vfs view: a (op, backing, layer) key over an interval.
#[derive(Debug, serde::Serialize, PartialEq)]
pub struct VfsRow {
    pub op: &'static str,
    pub backing: &'static str,
    /// Layers down, for opens of lower-backed files; else 0.
    pub layer: u8,
    pub count: u64,
    /// Upper bounds of the log2 buckets holding the 50th/99th percentile.
    pub p50_ns_below: u64,
    pub p99_ns_below: u64,
}

pub type Log2 = [u64; LOG2_SLOTS];

/// The --vfs rows for what happened since `before` (a previous snapshot).
pub fn vfs_rows(
    now: &[(strata_common::VfsKey, Log2)],
    before: &std::collections::HashMap<strata_common::VfsKey, Log2>,
) -> Vec<VfsRow> {
    use strata_common::{backing, vfs_op};
    let mut rows: Vec<VfsRow> = now
        .iter()
        .filter_map(|(k, slots)| {
            let prev = before.get(k).copied().unwrap_or([0; LOG2_SLOTS]);
            let delta: Log2 = std::array::from_fn(|i| slots[i].saturating_sub(prev[i]));
            let count: u64 = delta.iter().sum();
            (count > 0).then(|| VfsRow {
                op: match k.op {
                    vfs_op::READ => "read",
                    vfs_op::WRITE => "write",
                    vfs_op::FSYNC => "fsync",
                    _ => "open",
                },
                backing: match k.backing {
                    backing::LOWER => "overlay, lower layer",
                    backing::UPPER => "overlay, writable layer",
                    _ => "not overlay",
                },
                layer: k.layer,
                count,
                p50_ns_below: quantile_bound(&delta, 0.5),
                p99_ns_below: quantile_bound(&delta, 0.99),
            })
        })
        .collect();
    rows.sort_by(|a, b| (a.op, a.backing, a.layer).cmp(&(b.op, b.backing, b.layer)));
    rows
}

/// The upper bound of the log2 bucket where quantile `q` falls.
fn quantile_bound(slots: &Log2, q: f64) -> u64 {
    let total: u64 = slots.iter().sum();
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in slots.iter().enumerate() {
        seen += c;
        if seen >= want {
            return 2u64 << i;
        }
    }
    0
}

pub fn print_vfs(out: &mut impl Write, rows: &[VfsRow]) -> std::io::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out, "  VFS calls (in-kernel log2 buckets):")?;
    writeln!(
        out,
        "    {:<6} {:<24} {:>6} {:>8} {:>10} {:>10}",
        "op", "backing", "layer", "count", "p50 <", "p99 <"
    )?;
    for r in rows {
        let layer = if r.layer > 0 {
            r.layer.to_string()
        } else {
            "-".into()
        };
        writeln!(
            out,
            "    {:<6} {:<24} {:>6} {:>8} {:>10} {:>10}",
            r.op,
            r.backing,
            layer,
            r.count,
            ns(r.p50_ns_below),
            ns(r.p99_ns_below)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_common::VfsKey;

    #[test]
    fn vfs_rows_are_interval_deltas_with_bucket_bounds() {
        let key = VfsKey {
            op: strata_common::vfs_op::OPEN,
            backing: strata_common::backing::LOWER,
            layer: 3,
            _pad: 0,
        };
        let mut before = [0u64; LOG2_SLOTS];
        before[10] = 5;
        let mut now = before;
        now[10] += 99; // 1024..2047 ns
        now[20] += 1; // ~1 ms
        let rows = vfs_rows(&[(key, now)], &[(key, before)].into_iter().collect());
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.op, r.backing, r.layer, r.count),
            ("open", "overlay, lower layer", 3, 100)
        );
        assert_eq!((r.p50_ns_below, r.p99_ns_below), (2048, 2048));
        assert!(vfs_rows(&[(key, before)], &[(key, before)].into_iter().collect()).is_empty());
    }
}
