//! Timing: each bench runs its candidate and its baseline interleaved,
//! several times, and reports medians, spread and their ratio. These
//! machines are noisy; ratios measured side by side are what count.

use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measured {
    pub median_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub samples: usize,
}

impl Measured {
    pub fn of(mut samples: Vec<u64>) -> Measured {
        samples.sort_unstable();
        let n = samples.len().max(1);
        Measured {
            median_ns: if samples.is_empty() {
                0
            } else if n % 2 == 1 {
                samples[n / 2]
            } else {
                (samples[n / 2 - 1] + samples[n / 2]) / 2
            },
            min_ns: samples.first().copied().unwrap_or(0),
            max_ns: samples.last().copied().unwrap_or(0),
            samples: samples.len(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchResult {
    pub name: String,
    pub candidate: Measured,
    pub baseline_name: String,
    pub baseline: Measured,
    /// candidate median / baseline median.
    pub ratio: f64,
    /// The bar for this ratio, if it has one.
    pub target: Option<f64>,
    /// The candidate's largest peak RSS over its samples, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kib: Option<u64>,
}

impl BenchResult {
    /// `candidate` against `baseline`, with the ratio of their medians;
    /// reported on stderr as it comes.
    pub fn new(
        name: &str,
        candidate: Measured,
        baseline_name: &str,
        baseline: Measured,
        target: Option<f64>,
    ) -> BenchResult {
        let r = BenchResult {
            name: name.into(),
            ratio: candidate.median_ns as f64 / baseline.median_ns.max(1) as f64,
            candidate,
            baseline_name: baseline_name.into(),
            baseline,
            target,
            peak_rss_kib: None,
        };
        report(&r);
        r
    }

    /// Adds the candidate's peak RSS, and reports it.
    pub fn with_peak_rss(mut self, kib: u64) -> BenchResult {
        self.peak_rss_kib = Some(kib);
        eprintln!("  {:<44} peak RSS {}", self.name, fmt_kib(kib));
        self
    }
}

pub fn fmt_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Something timed: `setup` runs untimed before each sample, `run` is timed.
pub struct Timed<'a> {
    pub setup: Box<dyn FnMut() -> Result<()> + 'a>,
    pub run: Box<dyn FnMut() -> Result<()> + 'a>,
}

impl<'a> Timed<'a> {
    pub fn new(
        setup: impl FnMut() -> Result<()> + 'a,
        run: impl FnMut() -> Result<()> + 'a,
    ) -> Timed<'a> {
        Timed {
            setup: Box::new(setup),
            run: Box::new(run),
        }
    }

    pub fn just(run: impl FnMut() -> Result<()> + 'a) -> Timed<'a> {
        Timed::new(|| Ok(()), run)
    }

    /// Also runs `sync` before each sample (untimed), so that a side which
    /// syncs (strata's import ends with a syncfs) never pays for the
    /// writeback of what the other side left dirty: after `tar -x` without
    /// a sync, strata's import of the same layers read 1209 ms against
    /// 706 ms after a durable tar.
    pub fn settled(self) -> Timed<'a> {
        let mut setup = self.setup;
        Timed {
            setup: Box::new(move || {
                setup()?;
                crate::fixtures::sh("sync", &[])
            }),
            run: self.run,
        }
    }

    fn sample(&mut self) -> Result<u64> {
        (self.setup)()?;
        let t = Instant::now();
        (self.run)()?;
        Ok(t.elapsed().as_nanos() as u64)
    }
}

/// Runs candidate and baseline alternately `reps` times (after one
/// untimed warm-up each) and compares their medians.
pub fn compare(
    name: &str,
    reps: usize,
    mut candidate: Timed<'_>,
    baseline_name: &str,
    mut baseline: Timed<'_>,
    target: Option<f64>,
) -> Result<BenchResult> {
    candidate.sample()?;
    baseline.sample()?;
    let (mut c, mut b) = (Vec::new(), Vec::new());
    for i in 0..reps {
        // Alternate which goes first, so neither always gets a warm cache.
        if i % 2 == 0 {
            c.push(candidate.sample()?);
            b.push(baseline.sample()?);
        } else {
            b.push(baseline.sample()?);
            c.push(candidate.sample()?);
        }
    }
    Ok(BenchResult::new(
        name,
        Measured::of(c),
        baseline_name,
        Measured::of(b),
        target,
    ))
}

/// `candidate` against each of `peers`, all sampled in turn `reps`
/// times (after one untimed warm-up each; who goes first rotates). The
/// bar applies against the faster peer, by median: one result per peer,
/// `target` on the faster one's.
pub fn compare_with_faster(
    name: &str,
    reps: usize,
    mut candidate: Timed<'_>,
    mut peers: Vec<(&str, Timed<'_>)>,
    target: Option<f64>,
) -> Result<Vec<BenchResult>> {
    candidate.sample()?;
    for (_, p) in &mut peers {
        p.sample()?;
    }
    let mut c = Vec::new();
    let mut samples = vec![Vec::new(); peers.len()];
    let sides = peers.len() + 1;
    for i in 0..reps {
        for slot in (0..sides).map(|k| (k + i) % sides) {
            match slot {
                0 => c.push(candidate.sample()?),
                k => samples[k - 1].push(peers[k - 1].1.sample()?),
            }
        }
    }
    let measured: Vec<Measured> = samples.into_iter().map(Measured::of).collect();
    let fastest = (0..measured.len())
        .min_by_key(|&k| measured[k].median_ns)
        .unwrap_or(0);
    let candidate = Measured::of(c);
    Ok(peers
        .iter()
        .zip(measured)
        .enumerate()
        .map(|(k, ((peer, _), m))| {
            let bar = if k == fastest { target } else { None };
            BenchResult::new(
                &format!("{name} vs {peer}"),
                candidate.clone(),
                peer,
                m,
                bar,
            )
        })
        .collect())
}

/// One line per result as it comes, on stderr.
pub fn report(r: &BenchResult) {
    eprintln!(
        "  {:<44} {:>10} vs {:<28} {:>10}  ratio {:.2}{}",
        r.name,
        fmt_ns(r.candidate.median_ns),
        r.baseline_name,
        fmt_ns(r.baseline.median_ns),
        r.ratio,
        r.target
            .map(|t| format!(" (bar {t:.2})"))
            .unwrap_or_default()
    );
}

pub fn fmt_ns(v: u64) -> String {
    match v {
        0..=9_999 => format!("{v}ns"),
        10_000..=9_999_999 => format!("{:.1}us", v as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1}ms", v as f64 / 1e6),
        _ => format!("{:.2}s", v as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let m = Measured::of(vec![5, 1, 9, 3, 7]);
        assert_eq!((m.median_ns, m.min_ns, m.max_ns, m.samples), (5, 1, 9, 5));
        assert_eq!(Measured::of(vec![4, 2, 8, 6]).median_ns, 5);
    }

    #[test]
    fn compare_reports_the_ratio_of_medians() {
        let slow = Timed::just(|| {
            std::thread::sleep(std::time::Duration::from_millis(4));
            Ok(())
        });
        let fast = Timed::just(|| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(())
        });
        let r = compare("sleep", 3, slow, "half", fast, None).unwrap();
        assert!(r.ratio > 1.5 && r.ratio < 2.5, "{}", r.ratio);
    }
}
