//! Exact latency distributions per key, folded from events into
//! HdrHistograms: by file size (log2 buckets), layer depth, directory depth
//! and trigger.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::events::CopyUp;

/// What a histogram is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    All,
    FileSize,
    LayerDepth,
    DirDepth,
    Trigger,
}

impl Dimension {
    pub const SHOWN: [Dimension; 4] = [
        Dimension::FileSize,
        Dimension::LayerDepth,
        Dimension::DirDepth,
        Dimension::Trigger,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Dimension::All => "all copy-ups",
            Dimension::FileSize => "file size",
            Dimension::LayerDepth => "layer depth",
            Dimension::DirDepth => "directory depth",
            Dimension::Trigger => "trigger",
        }
    }
}

/// A key's value within its dimension; ordered for display.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum Bucket {
    Num(u64),
    Name(String),
    Unknown,
}

impl Bucket {
    pub fn label(&self, dim: Dimension) -> String {
        match (self, dim) {
            (Bucket::Num(b), Dimension::FileSize) => {
                format!("{}..{}", human_bytes(1 << b), human_bytes(2 << b))
            }
            (Bucket::Num(n), _) => n.to_string(),
            (Bucket::Name(s), _) => s.clone(),
            (Bucket::Unknown, _) => "?".into(),
        }
    }
}

pub fn human_bytes(v: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    let mut x = v;
    while x >= 1024 && x.is_multiple_of(1024) && i < U.len() - 1 {
        x /= 1024;
        i += 1;
    }
    format!("{x}{}", U[i])
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 1 hour at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds are valid")
}

#[derive(Default)]
pub struct Histograms {
    pub by_key: BTreeMap<(Dimension, Bucket), Histogram<u64>>,
}

impl Histograms {
    pub fn record(&mut self, e: &CopyUp) {
        let num = |v: Option<usize>| v.map(|x| Bucket::Num(x as u64)).unwrap_or(Bucket::Unknown);
        let keys = [
            (Dimension::All, Bucket::Name("all".into())),
            (
                Dimension::FileSize,
                e.file_size
                    .map(|s| Bucket::Num(strata_common::log2_floor(s.max(1)) as u64))
                    .unwrap_or(Bucket::Unknown),
            ),
            (Dimension::LayerDepth, num(e.layer_depth)),
            (Dimension::DirDepth, num(e.dir_depth)),
            (Dimension::Trigger, Bucket::Name(e.trigger.clone())),
        ];
        for key in keys {
            let h = self.by_key.entry(key).or_insert_with(new_histogram);
            h.saturating_record(e.latency_ns.max(1));
        }
    }

    pub fn total(&self) -> u64 {
        self.by_key
            .get(&(Dimension::All, Bucket::Name("all".into())))
            .map(|h| h.len())
            .unwrap_or(0)
    }

    pub fn dimension(&self, dim: Dimension) -> impl Iterator<Item = (&Bucket, &Histogram<u64>)> {
        self.by_key
            .iter()
            .filter(move |((d, _), _)| *d == dim)
            .map(|((_, b), h)| (b, h))
    }

    pub fn merge(&mut self, other: &Histograms) {
        for (k, h) in &other.by_key {
            self.by_key
                .entry(k.clone())
                .or_insert_with(new_histogram)
                .add(h)
                .expect("same bounds");
        }
    }
}

/// Count and percentiles of one histogram, in ns.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stats {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Stats {
    pub fn of(h: &Histogram<u64>) -> Stats {
        Stats {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(size: u64, layer: usize, dir: usize, ns: u64) -> CopyUp {
        CopyUp::synthetic("open-write", ns, Some(size), Some(layer), Some(dir))
    }

    #[test]
    fn keys_every_event_in_every_dimension() {
        let mut h = Histograms::default();
        for i in 1..=100 {
            h.record(&ev(4096, 1, 0, i * 1000));
        }
        h.record(&ev(1 << 20, 8, 3, 5_000_000));
        assert_eq!(h.total(), 101);
        let sizes: Vec<_> = h
            .dimension(Dimension::FileSize)
            .map(|(b, h)| (b.clone(), h.len()))
            .collect();
        assert_eq!(sizes, vec![(Bucket::Num(12), 100), (Bucket::Num(20), 1)]);
        let (_, small) = h.dimension(Dimension::FileSize).next().unwrap();
        let s = Stats::of(small);
        assert!((49_000..=51_000).contains(&s.p50), "{s:?}");
        assert_eq!(h.dimension(Dimension::LayerDepth).count(), 2);
        assert_eq!(Bucket::Num(12).label(Dimension::FileSize), "4KiB..8KiB");
    }
}
