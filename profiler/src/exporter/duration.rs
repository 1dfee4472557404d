//! The copy-up duration family: up to thousands of series (see
//! classes::MAX_COPY_UP_SERIES), almost all unchanged between two scrapes.
//! prometheus-client re-encodes every label of every bucket line, which
//! costs ~290 ns a line: 18 ms for every label set filled. So each
//! series' lines are encoded by prometheus-client once after it changed,
//! kept as shared bytes, and handed to later scrapes by reference (see
//! exporter::chunks); a scrape then costs what changed.

use std::collections::BTreeMap;

use hyper::body::Bytes;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::chunks::Chunks;
use super::copy_ups::{CopyUpLabels, Log2Counts};
use super::{families, Format};

/// One series: its counts, and its lines in each format once encoded.
#[derive(Debug, Default)]
pub struct DurationSeries {
    pub counts: Log2Counts,
    encoded: [Option<Bytes>; 2],
}

impl DurationSeries {
    pub fn record(&mut self, ns: u64) {
        self.counts.record(ns);
        self.encoded = [None, None];
    }
}

pub type DurationFamily = BTreeMap<CopyUpLabels, DurationSeries>;

/// Appends the whole family (descriptor, then every series in label
/// order) to `out`, encoding the series that changed in one pass.
pub fn encode(family: &mut DurationFamily, format: Format, out: &mut Chunks) {
    let changed: Vec<(CopyUpLabels, Log2Counts)> = family
        .iter()
        .filter(|(_, s)| s.encoded[format as usize].is_none())
        .map(|(l, s)| (l.clone(), s.counts.clone()))
        .collect();
    let text = encode_with_prometheus_client(&changed, format);
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    // Series come out in the order given, each as its buckets (+Inf
    // included), _sum and _count.
    for (labels, counts) in &changed {
        let n = counts.slots.iter().filter(|c| **c > 0).count() + 3;
        let mut series_lines = String::new();
        for line in lines.by_ref().take(n) {
            series_lines.push_str(line);
            series_lines.push('\n');
        }
        if let Some(series) = family.get_mut(labels) {
            series.encoded[format as usize] = Some(Bytes::from(series_lines));
        }
    }
    let mut descriptor = String::new();
    text.lines()
        .filter(|l| l.starts_with('#') && *l != "# EOF")
        .for_each(|l| {
            descriptor.push_str(l);
            descriptor.push('\n');
        });
    out.push(Bytes::from(descriptor));
    for series in family.values() {
        if let Some(lines) = &series.encoded[format as usize] {
            out.push(lines.clone());
        }
    }
}

/// The family over `series`, as prometheus-client encodes it.
fn encode_with_prometheus_client(series: &[(CopyUpLabels, Log2Counts)], format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Changed(series.to_vec())));
    let mut text = String::new();
    super::encode_registry(&registry, format, &mut text);
    text
}

/// The series that changed since the last scrape, for one registry pass.
#[derive(Debug)]
struct Changed(Vec<(CopyUpLabels, Log2Counts)>);

impl prometheus_client::collector::Collector for Changed {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        families::copy_up_duration(&mut encoder, self.0.iter().map(|(l, c)| (l, c)))
    }
}
