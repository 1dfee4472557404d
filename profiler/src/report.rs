//! `strata-prof report FILE --svg OUT`: latency against file size, layer
//! depth and directory depth, as p50 and p99 lines.
//!
//! FILE holds JSON lines from `record --json` (one per copy-up) or from
//! `sweep --json` (one per cell).

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::histograms::{Bucket, Dimension, Histograms, Stats};

/// One plotted point: x in the dimension's unit, latencies in ns.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub dim: Dimension,
    pub x: u64,
    pub p50: u64,
    pub p99: u64,
}

const PANELS: [Dimension; 3] = [
    Dimension::FileSize,
    Dimension::LayerDepth,
    Dimension::DirDepth,
];

pub fn points_from_file(path: &Path) -> Result<Vec<Point>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Histograms::default();
    let mut cells = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        match v.get("type").and_then(Value::as_str) {
            Some("copy_up") => {
                let e: crate::events::CopyUp = serde_json::from_value(v)
                    .with_context(|| format!("{}:{}: bad copy_up event", path.display(), n + 1))?;
                events.record(&e);
            }
            Some("cell") => cells.push(v),
            _ => {}
        }
    }
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
                });
            }
        }
    }
    points.extend(cell_points(&cells));
    if points.is_empty() {
        bail!("{} holds no copy-up events or sweep cells", path.display());
    }
    Ok(points)
}

/// Sweep cells along each axis, the other two held at their smallest.
fn cell_points(cells: &[Value]) -> Vec<Point> {
    let get = |c: &Value, k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
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

pub fn plot(points: &[Point], out: &Path) -> Result<()> {
    let root = SVGBackend::new(out, (1500, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 3));
    for (area, dim) in panels.iter().zip(PANELS) {
        let mut pts: Vec<&Point> = points.iter().filter(|p| p.dim == dim).collect();
        pts.sort_by_key(|p| p.x);
        pts.dedup_by_key(|p| p.x);
        if pts.is_empty() {
            continue;
        }
        let x_max = pts.iter().map(|p| p.x).max().unwrap_or(1).max(1) as f64;
        let x_min = pts.iter().map(|p| p.x).min().unwrap_or(0) as f64;
        let y_max = pts
            .iter()
            .map(|p| p.p99.max(p.p50))
            .max()
            .unwrap_or(1)
            .max(1) as f64
            / 1e3;
        let y_min = pts
            .iter()
            .map(|p| p.p50.min(p.p99))
            .min()
            .unwrap_or(1)
            .max(1) as f64
            / 1e3;
        let (x_label, log_x) = match dim {
            Dimension::FileSize => ("file size (bytes)", true),
            Dimension::LayerDepth => ("layer depth", false),
            _ => ("directory depth", false),
        };
        let caption = format!("copy-up latency vs {}", dim.title());
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(caption, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60);
        let y_range = ((y_min / 2.0).max(0.1)..y_max * 2.0).log_scale();
        let series =
            |p: &Point, p99: bool| (p.x as f64, if p99 { p.p99 } else { p.p50 } as f64 / 1e3);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc("latency (us)")
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                for (p99, color, name) in [(false, BLUE, "p50"), (true, RED, "p99")] {
                    chart
                        .draw_series(LineSeries::new(
                            pts.iter().map(|p| series(p, p99)),
                            color.stroke_width(2),
                        ))
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .label(name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                    chart
                        .draw_series(
                            pts.iter()
                                .map(|p| Circle::new(series(p, p99), 3, color.filled())),
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                chart
                    .configure_series_labels()
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }};
        }
        if log_x {
            draw!(builder
                .build_cartesian_2d(((x_min / 2.0).max(1.0)..x_max * 2.0).log_scale(), y_range)
                .map_err(|e| anyhow::anyhow!("{e}"))?);
        } else {
            draw!(builder
                .build_cartesian_2d((x_min - 1.0).max(0.0)..x_max + 1.0, y_range)
                .map_err(|e| anyhow::anyhow!("{e}"))?);
        }
    }
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    Ok(())
}

/// Points straight from a sweep's cells.
pub fn cell_points_of(cells: &[crate::sweep::Cell]) -> Vec<Point> {
    let values: Vec<Value> = cells
        .iter()
        .map(|c| serde_json::to_value(c).expect("cells serialise"))
        .collect();
    cell_points(&values)
}
