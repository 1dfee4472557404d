//! The plot: one panel per dimension, p50 as a line over a p50-p99 band,
//! sizes and layer depths on log2 axes with their own units on the ticks,
//! latency on a log axis labelled in ns/µs/ms/s, the backend and kernel in
//! the title, and the legend in a strip of its own below the panels. A
//! sweep of several triggers or mount variants draws a line for each.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Point, Report, PANELS};
use crate::histograms::{human_bytes, Dimension};

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 520;
const LEGEND_HEIGHT: u32 = 40;
const P50: RGBColor = RGBColor(31, 100, 180);
/// One colour per line, the first P50's.
const PALETTE: [RGBColor; 6] = [
    P50,
    RGBColor(214, 96, 24),
    RGBColor(44, 150, 44),
    RGBColor(148, 80, 180),
    RGBColor(190, 40, 60),
    RGBColor(110, 110, 110),
];

/// A line of a panel: its colour and its points, by x.
struct Line<'a> {
    color: RGBColor,
    pts: Vec<&'a Point>,
}

/// The report's plot as an SVG document.
pub fn render(report: &Report) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let root = root
            .titled(&report.title(), ("sans-serif", 22))
            .map_err(|e| anyhow!("{e}"))?;
        let (panels, legend) = root.split_vertically(root.dim_in_pixel().1 - LEGEND_HEIGHT);
        let mut series: Vec<&str> = Vec::new();
        for p in &report.points {
            if !series.contains(&p.series.as_str()) {
                series.push(&p.series);
            }
        }
        for (area, dim) in panels.split_evenly((1, 3)).iter().zip(PANELS) {
            let lines: Vec<Line> = series
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut pts: Vec<&Point> = report
                        .points
                        .iter()
                        .filter(|p| p.dim == dim && p.series == *name)
                        .collect();
                    pts.sort_by_key(|p| p.x);
                    pts.dedup_by_key(|p| p.x);
                    Line {
                        color: PALETTE[i % PALETTE.len()],
                        pts,
                    }
                })
                .filter(|l| !l.pts.is_empty())
                .collect();
            if !lines.is_empty() {
                panel(area, dim, &lines)?;
            }
        }
        draw_legend(&legend, if series.len() > 1 { &series } else { &[] })?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(svg)
}

pub fn write(report: &Report, out: &Path) -> Result<()> {
    std::fs::write(out, render(report)?).map_err(|e| anyhow!("writing {}: {e}", out.display()))
}

/// Where a dimension's value sits on its x axis: log2 for sizes and layer
/// depths (they span orders of magnitude), linear for directory depth.
fn x_of(dim: Dimension, v: u64) -> f64 {
    match dim {
        Dimension::FileSize | Dimension::LayerDepth => (v.max(1) as f64).log2(),
        _ => v as f64,
    }
}

/// Tick positions on a dimension's x axis: whole steps, every `stride`
/// of them (a power of two, so size ticks stay 4KiB, 64KiB, 1MiB...), at
/// most about 8 labels.
fn x_ticks(dim: Dimension, lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1.0);
    let stride = match dim {
        Dimension::DirDepth => ((span / 8.0).ceil() as u64).max(1),
        _ => ((span / 8.0).ceil() as u64).max(1).next_power_of_two(),
    };
    (lo.ceil() as u64..=hi.floor() as u64)
        .filter(|n| n % stride == 0)
        .map(|n| n as f64)
        .collect()
}

/// A tick's label at axis position `x`, in the dimension's unit.
fn x_label(dim: Dimension, x: f64) -> String {
    let n = x.round().max(0.0) as u32;
    match dim {
        Dimension::FileSize if n < 64 => human_bytes(1u64 << n),
        Dimension::LayerDepth if n < 64 => (1u64 << n).to_string(),
        _ => n.to_string(),
    }
}

/// Latency ticks over [lo, hi] ns: 1-2-5 steps per decade, thinned to
/// 1-3 or 1 per decade on wide ranges, so every panel has several labels.
fn y_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let within = |steps: &[f64]| -> Vec<f64> {
        (0..13)
            .flat_map(|e| steps.iter().map(move |s| s * 10f64.powi(e)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    for steps in [&[1.0, 2.0, 5.0][..], &[1.0, 3.0], &[1.0]] {
        let ticks = within(steps);
        if ticks.len() <= 9 {
            if ticks.len() >= 3 || steps.len() == 3 {
                return if ticks.len() >= 3 {
                    ticks
                } else {
                    within(&[1.0, 1.5, 2.0, 3.0, 5.0, 7.0])
                };
            }
            return ticks;
        }
    }
    within(&[1.0])
}

/// A latency tick: 3 significant digits in the largest unit below it.
pub fn latency_label(ns: f64) -> String {
    let (v, unit) = match ns {
        n if n < 1e3 => (n, "ns"),
        n if n < 1e6 => (n / 1e3, "µs"),
        n if n < 1e9 => (n / 1e6, "ms"),
        n => (n / 1e9, "s"),
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{v:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{unit}")
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;
type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;

fn panel(area: &Area<'_>, dim: Dimension, lines: &[Line<'_>]) -> Result<()> {
    let pts: Vec<&Point> = lines.iter().flat_map(|l| l.pts.iter().copied()).collect();
    let xs: Vec<f64> = pts.iter().map(|p| x_of(dim, p.x)).collect();
    let pad = match dim {
        Dimension::DirDepth => 1.0,
        _ => 0.5,
    };
    let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let x = (x_lo - pad)..(x_hi + pad);
    let y_min = pts.iter().map(|p| p.p50.min(p.p99)).min().unwrap_or(1);
    let y_max = pts.iter().map(|p| p.p99.max(p.p50)).max().unwrap_or(1);
    let y = (y_min.max(1) as f64 / 1.6)..(y_max.max(1) as f64 * 1.6);
    let x_desc = match dim {
        Dimension::FileSize => "file size",
        Dimension::LayerDepth => "layer depth (layers below the writable one)",
        _ => "directory depth (below the mount root)",
    };
    let mut chart = ChartBuilder::on(area)
        .caption(format!("by {}", dim.title()), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x.clone(), y.clone().log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    // plotters' log axis labels decades only (none at all on a range
    // inside one decade): the ticks and grid are drawn by `axes` instead.
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|_| String::new())
        .x_desc(x_desc)
        .y_desc("copy-up latency")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    axes(area, &mut chart, dim, x, y)?;
    for line in lines {
        let xs: Vec<f64> = line.pts.iter().map(|p| x_of(dim, p.x)).collect();
        latency(&mut chart, &xs, &line.pts, line.color)?;
    }
    Ok(())
}

/// Grid lines, tick marks and tick labels in the dimension's units.
fn axes(
    area: &Area<'_>,
    chart: &mut Chart<'_, '_>,
    dim: Dimension,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<()> {
    let grid = RGBColor(220, 220, 220);
    let x_ticks = x_ticks(dim, x.start, x.end);
    let y_ticks = y_ticks(y.start, y.end);
    let vertical = x_ticks.iter().map(|t| [(*t, y.start), (*t, y.end)]);
    let horizontal = y_ticks.iter().map(|t| [(x.start, *t), (x.end, *t)]);
    for line in vertical.chain(horizontal) {
        chart
            .draw_series(LineSeries::new(line, grid))
            .map_err(|e| anyhow!("{e}"))?;
    }
    let font: TextStyle = ("sans-serif", 12).into_font().into();
    let base = area.get_base_pixel();
    let at = |px: (i32, i32)| (px.0 - base.0, px.1 - base.1);
    let draw = |e: Result<(), DrawingAreaErrorKind<_>>| e.map_err(|e| anyhow!("{e}"));
    for t in &x_ticks {
        let (px, py) = at(chart.backend_coord(&(*t, y.start)));
        draw(area.draw(&PathElement::new(vec![(px, py), (px, py + 5)], BLACK)))?;
        let style = font.clone().pos(Pos::new(HPos::Center, VPos::Top));
        draw(area.draw(&Text::new(x_label(dim, *t), (px, py + 8), style)))?;
    }
    for t in &y_ticks {
        let (px, py) = at(chart.backend_coord(&(x.start, *t)));
        draw(area.draw(&PathElement::new(vec![(px - 5, py), (px, py)], BLACK)))?;
        let style = font.clone().pos(Pos::new(HPos::Right, VPos::Center));
        draw(area.draw(&Text::new(latency_label(*t), (px - 8, py), style)))?;
    }
    Ok(())
}

/// p50 as a line with points, over the p50-p99 band.
fn latency(chart: &mut Chart<'_, '_>, xs: &[f64], pts: &[&Point], color: RGBColor) -> Result<()> {
    let line = |q: fn(&Point) -> u64| -> Vec<(f64, f64)> {
        xs.iter().zip(pts).map(|(x, p)| (*x, q(p) as f64)).collect()
    };
    let p50 = line(|p| p.p50);
    let p99 = line(|p| p.p99.max(p.p50));
    let band: Vec<(f64, f64)> = p50.iter().chain(p99.iter().rev()).copied().collect();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{e}");
    chart
        .draw_series(std::iter::once(Polygon::new(
            band,
            color.mix(0.18).filled(),
        )))
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(p99, color.mix(0.45).stroke_width(1)))
        .map_err(err)?;
    chart
        .draw_series(p50.iter().map(|p| Circle::new(*p, 3, color.filled())))
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(p50, color.stroke_width(2)))
        .map_err(err)?;
    Ok(())
}

/// Widths of the legend's "p50" and "p50 to p99" keys.
const P50_KEY_WIDTH: i32 = 120;
const BAND_KEY_WIDTH: i32 = 180;

/// Below the panels, so it covers no data: what p50 and the band are,
/// then each line's name in its colour (when there is more than one).
fn draw_legend(area: &DrawingArea<SVGBackend<'_>, Shift>, series: &[&str]) -> Result<()> {
    let y = (LEGEND_HEIGHT / 2) as i32;
    // Swatch plus name, ~8 px a character at this size.
    let key_width = |name: &str| 50 + 8 * name.len() as i32;
    let names_width: i32 = series.iter().map(|s| key_width(s)).sum();
    let x = (WIDTH as i32 - P50_KEY_WIDTH - BAND_KEY_WIDTH - names_width) / 2;
    let font = ("sans-serif", 15).into_font();
    let draw = |e: Result<(), _>| e.map_err(|e: DrawingAreaErrorKind<_>| anyhow!("{e}"));
    draw(area.draw(&PathElement::new(
        vec![(x, y), (x + 34, y)],
        P50.stroke_width(2),
    )))?;
    draw(area.draw(&Circle::new((x + 17, y), 3, P50.filled())))?;
    draw(area.draw(&Text::new("p50", (x + 42, y - 8), font.clone())))?;
    let x = x + P50_KEY_WIDTH;
    draw(area.draw(&Rectangle::new(
        [(x, y - 7), (x + 34, y + 7)],
        P50.mix(0.18).filled(),
    )))?;
    draw(area.draw(&PathElement::new(
        vec![(x, y - 7), (x + 34, y - 7)],
        P50.mix(0.45),
    )))?;
    draw(area.draw(&Text::new("p50 to p99", (x + 42, y - 8), font.clone())))?;
    let mut x = x + BAND_KEY_WIDTH;
    for (i, name) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        draw(area.draw(&PathElement::new(
            vec![(x, y), (x + 34, y)],
            color.stroke_width(3),
        )))?;
        draw(area.draw(&Text::new(name.to_string(), (x + 42, y - 8), font.clone())))?;
        x += key_width(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_speak_units() {
        assert_eq!(x_label(Dimension::FileSize, 12.0), "4KiB");
        assert_eq!(x_label(Dimension::FileSize, 20.0), "1MiB");
        let sizes: Vec<_> = x_ticks(Dimension::FileSize, 11.5, 28.5)
            .into_iter()
            .map(|x| x_label(Dimension::FileSize, x))
            .collect();
        assert_eq!(sizes, ["4KiB", "64KiB", "1MiB", "16MiB", "256MiB"]);
        let layers: Vec<_> = x_ticks(Dimension::LayerDepth, -0.5, 7.5)
            .into_iter()
            .map(|x| x_label(Dimension::LayerDepth, x))
            .collect();
        assert_eq!(layers, ["1", "2", "4", "8", "16", "32", "64", "128"]);
        // Every panel gets several latency labels, however narrow its range.
        for (lo, hi) in [(20e3, 60e3), (10e3, 3e6), (100.0, 5e9)] {
            let n = y_ticks(lo, hi).len();
            assert!((3..=9).contains(&n), "{lo}..{hi}: {n} ticks");
        }
        assert_eq!(x_label(Dimension::LayerDepth, 3.0), "8");
        assert_eq!(x_label(Dimension::LayerDepth, 7.0), "128");
        assert_eq!(x_label(Dimension::DirDepth, 4.0), "4");
        assert_eq!(latency_label(500.0), "500ns");
        assert_eq!(latency_label(12_345.0), "12.3µs");
        assert_eq!(latency_label(2_000_000.0), "2ms");
        assert_eq!(latency_label(1_500_000_000.0), "1.5s");
    }

    #[test]
    fn the_plot_names_backend_kernel_and_units() {
        let pt = |dim, x, p50| Point {
            dim,
            x,
            p50,
            p99: p50 * 3,
            series: String::new(),
        };
        let report = Report {
            backend: Some("fentry".into()),
            kernel: Some("6.12.1".into()),
            points: vec![
                pt(Dimension::FileSize, 4096, 40_000),
                pt(Dimension::FileSize, 1 << 20, 900_000),
                pt(Dimension::LayerDepth, 1, 40_000),
                pt(Dimension::LayerDepth, 128, 60_000),
                pt(Dimension::DirDepth, 0, 40_000),
                pt(Dimension::DirDepth, 8, 50_000),
            ],
            tables: vec![],
        };
        let svg = render(&report).unwrap();
        for want in [
            "fentry backend",
            "Linux 6.12.1",
            "4KiB",
            "1MiB",
            "128",
            "µs",
            "p50 to p99",
        ] {
            assert!(svg.contains(want), "{want} missing");
        }
    }

    #[test]
    fn a_sweep_of_variants_draws_and_names_a_line_each() {
        let pt = |x, p50, series: &str| Point {
            dim: Dimension::FileSize,
            x,
            p50,
            p99: p50 * 2,
            series: series.into(),
        };
        let report = Report {
            points: vec![
                pt(4096, 40_000, "chmod"),
                pt(1 << 20, 900_000, "chmod"),
                pt(4096, 30_000, "chmod, metacopy"),
                pt(1 << 20, 31_000, "chmod, metacopy"),
            ],
            ..Default::default()
        };
        let svg = render(&report).unwrap();
        // plotters puts a text's content on a line of its own.
        assert!(svg.contains("\nchmod\n") && svg.contains("\nchmod, metacopy\n"));
        let (first, second) = (PALETTE[0], PALETTE[1]);
        for c in [first, second] {
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            assert!(svg.contains(&hex), "no line in {hex}");
        }
    }
}
