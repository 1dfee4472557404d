//! Results on disk, the markdown table, and the regression gate against a
//! stored baseline.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::harness::{fmt_ns, BenchResult};

#[derive(Debug, Serialize, Deserialize)]
pub struct Results {
    pub quick: bool,
    pub kernel: String,
    pub results: Vec<BenchResult>,
}

pub fn baseline_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("baselines").join(format!("{name}.json"))
}

pub fn write(dir: &Path, r: &Results) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("results.md"), markdown(r))?;
    Ok(())
}

pub fn save_baseline(dir: &Path, name: &str, r: &Results) -> Result<PathBuf> {
    let p = baseline_path(dir, name);
    std::fs::create_dir_all(p.parent().unwrap())?;
    std::fs::write(&p, serde_json::to_vec_pretty(r)?)?;
    Ok(p)
}

pub fn load_baseline(dir: &Path, name: &str) -> Result<Results> {
    let p = baseline_path(dir, name);
    let data = std::fs::read(&p)
        .with_context(|| format!("no stored baseline {name} ({})", p.display()))?;
    serde_json::from_slice(&data).with_context(|| format!("{} is not a results file", p.display()))
}

pub fn markdown(r: &Results) -> String {
    let mut s = format!(
        "# strata benches ({}; kernel {})\n\n",
        if r.quick { "quick" } else { "full" },
        r.kernel
    );
    s += "| bench | strata median (min..max) | baseline | baseline median | ratio | bar |\n|---|---|---|---|---|---|\n";
    for b in &r.results {
        s += &format!(
            "| {} | {} ({}..{}){} | {} | {} | {:.2} | {} |\n",
            b.name,
            fmt_ns(b.candidate.median_ns),
            fmt_ns(b.candidate.min_ns),
            fmt_ns(b.candidate.max_ns),
            b.peak_rss_kib
                .map(|k| format!(", peak RSS {}", crate::harness::fmt_kib(k)))
                .unwrap_or_default(),
            b.baseline_name,
            fmt_ns(b.baseline.median_ns),
            b.ratio,
            b.target
                .map(|t| format!("{t:.2}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    s
}

/// A bench whose ratio grew more than `threshold` (0.10 = 10%) over the
/// stored baseline's.
#[derive(Debug)]
pub struct Regression {
    pub name: String,
    pub before: f64,
    pub now: f64,
}

pub fn regressions(now: &Results, before: &Results, threshold: f64) -> Vec<Regression> {
    now.results
        .iter()
        .filter_map(|b| {
            let old = before.results.iter().find(|o| o.name == b.name)?;
            (b.ratio > old.ratio * (1.0 + threshold)).then(|| Regression {
                name: b.name.clone(),
                before: old.ratio,
                now: b.ratio,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Measured;

    fn result(name: &str, ratio: f64) -> BenchResult {
        let m = Measured {
            median_ns: 100,
            min_ns: 90,
            max_ns: 110,
            samples: 5,
        };
        BenchResult {
            name: name.into(),
            candidate: m.clone(),
            baseline_name: "b".into(),
            baseline: m,
            ratio,
            target: None,
            peak_rss_kib: None,
        }
    }

    #[test]
    fn gate_flags_only_ratios_beyond_the_threshold() {
        let before = Results {
            quick: true,
            kernel: "k".into(),
            results: vec![result("a", 1.0), result("b", 2.0), result("c", 1.0)],
        };
        let now = Results {
            quick: true,
            kernel: "k".into(),
            results: vec![result("a", 1.09), result("b", 2.5), result("c", 0.5)],
        };
        let r = regressions(&now, &before, 0.10);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "b");
        assert!(markdown(&now).contains("| a |"));
    }
}
