//! `strata-prof report FILE [--svg OUT] [--html OUT]`: latency against
//! file size, layer depth and directory depth, as a plot ([`svg`]) and as
//! one self-contained page with the tables and the plot ([`html`]).
//!
//! FILE holds JSON lines from `record --json` (one per copy-up, and the
//! summary naming backend and kernel) or from `sweep --json` (one per
//! cell, and the sweep's own line).

pub mod html;
pub mod svg;

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::histograms::{human_bytes, Bucket, Dimension, Histograms, Stats};
use crate::output::ns;

/// One plotted point: x in the dimension's unit, latencies in ns, and
/// the line it belongs to (a sweep's trigger and mount variant; empty for
/// recorded events).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub dim: Dimension,
    pub x: u64,
    pub p50: u64,
    pub p99: u64,
    pub series: String,
}

/// The three panels, in order.
pub const PANELS: [Dimension; 3] = [
    Dimension::FileSize,
    Dimension::LayerDepth,
    Dimension::DirDepth,
];

/// A table of the report: a title, column names and rows of cells.
#[derive(Debug, Default)]
pub struct Table {
    pub title: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// What a report shows.
#[derive(Debug, Default)]
pub struct Report {
    /// Backend and kernel, where the input names them.
    pub backend: Option<String>,
    pub kernel: Option<String>,
    pub points: Vec<Point>,
    pub tables: Vec<Table>,
}

impl Report {
    /// "copy-up latency (tracepoint backend, Linux 6.18.4)".
    pub fn title(&self) -> String {
        let mut about = Vec::new();
        if let Some(b) = &self.backend {
            about.push(format!("{b} backend"));
        }
        if let Some(k) = &self.kernel {
            about.push(format!("Linux {k}"));
        }
        if about.is_empty() {
            "copy-up latency".into()
        } else {
            format!("copy-up latency ({})", about.join(", "))
        }
    }
}

pub fn load(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut report = Report::default();
    let mut events = Histograms::default();
    let mut cells = Vec::new();
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    for (n, line) in lines {
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        match v.get("type").and_then(Value::as_str) {
            Some("copy_up") => {
                let e: crate::events::CopyUp = serde_json::from_value(v)
                    .with_context(|| format!("{}: bad copy_up event", at()))?;
                events.record(&e);
            }
            Some("cell") => cells.push(v),
            Some("summary" | "sweep") => {
                let text = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
                report.backend = text("backend").or(report.backend);
                report.kernel = text("kernel_release").or(report.kernel);
            }
            _ => {}
        }
    }
    report.points = event_points(&events);
    report.points.extend(cell_points(&cells));
    if report.points.is_empty() {
        bail!("{} holds no copy-up events or sweep cells", path.display());
    }
    report.tables = event_tables(&events);
    if !cells.is_empty() {
        report.tables.push(cell_table(&cells));
    }
    Ok(report)
}

/// A sweep's report, straight from its result.
pub fn of_sweep(result: &crate::sweep::SweepResult) -> Report {
    let cells: Vec<Value> = result
        .cells
        .iter()
        .map(|c| serde_json::to_value(c).expect("cells serialise"))
        .collect();
    Report {
        backend: Some(result.backend.clone()),
        kernel: Some(result.kernel.clone()),
        points: cell_points(&cells),
        tables: vec![cell_table(&cells)],
    }
}

fn event_points(events: &Histograms) -> Vec<Point> {
    let mut points = Vec::new();
    for dim in PANELS {
        for (bucket, h) in events.dimension(dim) {
            if let Bucket::Num(x) = bucket {
                let x = if dim == Dimension::FileSize {
                    1u64 << x
                } else {
                    *x
                };
                let s = Stats::of(h);
                points.push(Point {
                    dim,
                    x,
                    p50: s.p50,
                    p99: s.p99,
                    series: String::new(),
                });
            }
        }
    }
    points
}

/// The terminal's tables: one per dimension.
fn event_tables(events: &Histograms) -> Vec<Table> {
    crate::histograms::Dimension::SHOWN
        .iter()
        .map(|dim| Table {
            title: format!("by {}", dim.title()),
            columns: vec!["key", "count", "p50", "p90", "p99", "max"],
            rows: events
                .dimension(*dim)
                .map(|(bucket, h)| {
                    let s = Stats::of(h);
                    let mut row = vec![bucket.label(*dim), s.count.to_string()];
                    row.extend([s.p50, s.p90, s.p99, s.max].map(ns));
                    row
                })
                .collect(),
        })
        .filter(|t| !t.rows.is_empty())
        .collect()
}

fn get(c: &Value, k: &str) -> u64 {
    c.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// A cell's trigger and mount variant (a sweep file from before they
/// existed: writes, plain mounts).
fn cell_variant(c: &Value) -> String {
    let flag = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
    let trigger = c.get("trigger").and_then(Value::as_str).unwrap_or("write");
    crate::sweep::variant_name(trigger, flag("metacopy"), flag("volatile"))
}

fn cell_table(cells: &[Value]) -> Table {
    Table {
        title: "sweep cells".into(),
        columns: vec![
            "by",
            "size",
            "layers",
            "dirs",
            "count",
            "p50",
            "p99",
            "max",
            "stopwatch p50",
        ],
        rows: cells
            .iter()
            .map(|c| {
                let mut row = vec![
                    cell_variant(c),
                    human_bytes(get(c, "file_size")),
                    get(c, "layer_depth").to_string(),
                    get(c, "dir_depth").to_string(),
                    get(c, "count").to_string(),
                ];
                row.extend(["p50", "p99", "max", "user_p50"].map(|k| ns(get(c, k))));
                row
            })
            .collect(),
    }
}

/// Sweep cells along each axis, the other two held at their smallest.
fn cell_points(cells: &[Value]) -> Vec<Point> {
    let min = |k: &str| cells.iter().map(|c| get(c, k)).min().unwrap_or(0);
    let (s0, l0, d0) = (min("file_size"), min("layer_depth"), min("dir_depth"));
    let mut out = Vec::new();
    for c in cells {
        let (s, l, d) = (
            get(c, "file_size"),
            get(c, "layer_depth"),
            get(c, "dir_depth"),
        );
        let p = |dim, x| Point {
            dim,
            x,
            p50: get(c, "p50"),
            p99: get(c, "p99"),
            series: cell_variant(c),
        };
        if l == l0 && d == d0 {
            out.push(p(Dimension::FileSize, s));
        }
        if s == s0 && d == d0 {
            out.push(p(Dimension::LayerDepth, l));
        }
        if s == s0 && l == l0 {
            out.push(p(Dimension::DirDepth, d));
        }
    }
    out
}
