//! The metric families `serve` exports, named by Prometheus' conventions
//! (base units, `_total` counters), and their encoding. Kernel log2 slots
//! become `le` buckets at their *upper* bound: slot i holds durations of
//! [2^i, 2^(i+1)) ns, all of which are <= 2^(i+1) ns. (Labelling slot i
//! with 2^i, as floor-log2 tools print it, would put every observation in
//! a bucket below its value: cloudflare/ebpf_exporter's old off-by-one.)

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use strata_common::{backing, vfs_op, LOG2_SLOTS};

use super::classes::layer_class;
use super::copy_ups::{ContainerLabel, CopyUpLabels, Log2Counts, TriggerLabels};
use super::State;

/// One exported family: its full name as scraped, and its labels.
pub struct Family {
    pub name: &'static str,
    pub labels: &'static [&'static str],
}

/// Every family `serve` can export (the dashboard may use these alone).
/// `container` and `engine` are added to the copy-up families by
/// `--per-container`; the
/// `strata_vfs_*` families need `--vfs`, the `strata_prof_probe_*` ones
/// `--probe-cost`, and the fsync one a traced upper filesystem.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "strata_copy_up_duration_seconds",
        labels: &["trigger", "size", "layer_depth", "dir_depth"],
    },
    Family {
        name: "strata_copy_ups_total",
        labels: &["trigger"],
    },
    Family {
        name: "strata_copy_up_bytes_total",
        labels: &["trigger"],
    },
    Family {
        name: "strata_copy_up_fsync_seconds",
        labels: &["trigger"],
    },
    Family {
        name: "strata_vfs_duration_seconds",
        labels: &["op", "backing"],
    },
    Family {
        name: "strata_vfs_lower_open_duration_seconds",
        labels: &["layer_depth"],
    },
    Family {
        name: "strata_prof_events_lost_total",
        labels: &["reason"],
    },
    Family {
        name: "strata_prof_watched_calls_total",
        labels: &[],
    },
    Family {
        name: "strata_prof_new_files_total",
        labels: &[],
    },
    Family {
        name: "strata_prof_probe_runs_total",
        labels: &["program"],
    },
    Family {
        name: "strata_prof_probe_run_seconds_total",
        labels: &["program"],
    },
    Family {
        name: "strata_prof_info",
        labels: &["backend", "kernel", "version"],
    },
];

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Encodes the state: the collector's part of a scrape (all but the
/// duration family, which exporter::duration adds).
pub fn encode(s: &State, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
    encode_copy_ups(s, &mut enc)?;
    encode_health(s, &mut enc)?;
    if let Some(vfs) = &s.kernel.vfs {
        encode_vfs(vfs, &mut enc)?;
    }
    Ok(())
}

fn with_container<'a>(mut labels: Labels<'a>, container: &'a Option<ContainerLabel>) -> Labels<'a> {
    if let Some(c) = container {
        labels.push(("container", &c.name));
        labels.push(("engine", c.engine));
    }
    labels
}

/// `strata_copy_up_duration_seconds`, over the given series (see
/// exporter::duration for how a scrape reuses their lines).
pub fn copy_up_duration<'a>(
    enc: &mut DescriptorEncoder<'_>,
    series: impl Iterator<Item = (&'a CopyUpLabels, &'a Log2Counts)>,
) -> std::fmt::Result {
    histogram(
        enc,
        "strata_copy_up_duration",
        "Copy-up latency: the triggering call from entry to exit, by what was copied.",
        series.map(|(k, v)| {
            let labels = vec![
                ("trigger", k.trigger),
                ("size", k.size),
                ("layer_depth", k.layer_depth),
                ("dir_depth", k.dir_depth),
            ];
            (with_container(labels, &k.container), v)
        }),
    )
}

/// The copy-up families but the duration histogram.
fn encode_copy_ups(s: &State, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let m = &s.copy_ups;
    counter_by_trigger(
        enc,
        "strata_copy_ups",
        "Files copied up to a writable layer.",
        None,
        &m.count,
    )?;
    counter_by_trigger(
        enc,
        "strata_copy_up",
        "Bytes of file data copied up.",
        Some(&Unit::Bytes),
        &m.bytes,
    )?;
    if s.fsync_traced {
        histogram(
            enc,
            "strata_copy_up_fsync",
            "Time in the upper filesystem's fsync during a copy-up.",
            sorted(&m.fsync).into_iter().map(|(k, v)| {
                (
                    with_container(vec![("trigger", k.trigger)], &k.container),
                    v,
                )
            }),
        )?;
    }
    Ok(())
}

fn counter_by_trigger(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: &std::collections::HashMap<TriggerLabels, u64>,
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (k, n) in sorted(values) {
        let labels = with_container(vec![("trigger", k.trigger)], &k.container);
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(n, None)?;
    }
    Ok(())
}

fn sorted<K: Ord, V>(map: &std::collections::HashMap<K, V>) -> Vec<(&K, &V)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn encode_health(s: &State, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    let c = &s.kernel.counters;
    let mut lost = enc.encode_descriptor(
        "strata_prof_events_lost",
        "Copy-up events the profiler could not report (they still count in the kernel's histograms).",
        None,
        MetricType::Counter,
    )?;
    for (reason, n) in [
        ("ring_buffer_full", c.ringbuf_drops),
        ("in_flight_table_full", c.inflight_full),
    ] {
        lost.encode_family(&vec![("reason", reason)])?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    plain_counter(
        enc,
        "strata_prof_watched_calls",
        "Calls that could copy up and passed the filters.",
        c.watched_calls,
    )?;
    plain_counter(
        enc,
        "strata_prof_new_files",
        "Files created in a writable layer that no lower layer had (not copy-ups).",
        s.kernel.new_files,
    )?;
    if let Some(costs) = &s.kernel.probe_costs {
        let mut runs = enc.encode_descriptor(
            "strata_prof_probe_runs",
            "Runs of each of the profiler's BPF programs (kernel BPF stats).",
            None,
            MetricType::Counter,
        )?;
        for p in costs {
            runs.encode_family(&vec![("program", p.program.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&p.runs, None)?;
        }
        let mut time = enc.encode_descriptor(
            "strata_prof_probe_run",
            "Time spent running each of the profiler's BPF programs (kernel BPF stats).",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for p in costs {
            time.encode_family(&vec![("program", p.program.as_str())])?
                .encode_counter::<NoLabelSet, _, f64>(&(p.run_time_ns as f64 / 1e9), None)?;
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    let info = vec![
        ("backend", s.backend.as_str()),
        ("kernel", s.kernel_release.as_str()),
        ("version", version),
    ];
    enc.encode_descriptor(
        "strata_prof_info",
        "The profiler's backend, kernel and version.",
        None,
        MetricType::Gauge,
    )?
    .encode_family(&info)?
    .encode_gauge(&1i64)
}

fn plain_counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn encode_vfs(
    vfs: &[(strata_common::VfsKey, [u64; LOG2_SLOTS])],
    enc: &mut DescriptorEncoder<'_>,
) -> std::fmt::Result {
    let mut by_backing: std::collections::BTreeMap<(&str, &str), Log2Counts> = Default::default();
    let mut lower_opens: std::collections::BTreeMap<&str, Log2Counts> = Default::default();
    for (key, slots) in vfs {
        let counts = Log2Counts::from_slots(*slots);
        let op = match key.op {
            vfs_op::READ => "read",
            vfs_op::WRITE => "write",
            vfs_op::FSYNC => "fsync",
            _ => "open",
        };
        let backed_by = match key.backing {
            backing::LOWER => "lower",
            backing::UPPER => "writable",
            _ => "not_overlay",
        };
        by_backing.entry((op, backed_by)).or_default().add(&counts);
        if key.op == vfs_op::OPEN && key.backing == backing::LOWER && key.layer > 0 {
            let class = layer_class(Some(usize::from(key.layer)));
            lower_opens.entry(class).or_default().add(&counts);
        }
    }
    histogram(
        enc,
        "strata_vfs_duration",
        "VFS call latency by what backs the file (sum estimated from the kernel's log2 buckets).",
        by_backing
            .iter()
            .map(|((op, b), v)| (vec![("op", *op), ("backing", *b)], v)),
    )?;
    histogram(
        enc,
        "strata_vfs_lower_open_duration",
        "Opens of files served from a lower layer, by how many layers down (sum estimated from the kernel's log2 buckets).",
        lower_opens
            .iter()
            .map(|(class, v)| (vec![("layer_depth", *class)], v)),
    )
}

/// A seconds histogram family from log2(ns) counts: only the slots that
/// ever counted (they stay non-zero, so a series' buckets never vanish),
/// then +Inf, which the OpenMetrics encoder does not add by itself.
fn histogram<'a>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Labels<'a>, &'a Log2Counts)>,
) -> std::fmt::Result {
    let mut family =
        enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    let mut buckets = Vec::with_capacity(LOG2_SLOTS);
    for (labels, counts) in series {
        buckets.clear();
        buckets.extend(
            counts
                .slots
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (slot_upper_bound_seconds(i), *n)),
        );
        buckets.push((f64::INFINITY, 0));
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                counts.sum_ns as f64 / 1e9,
                counts.count,
                &buckets,
                None,
            )?;
    }
    Ok(())
}

/// The `le` of log2 slot i: 2^(i+1)-1 ns, in seconds.
pub fn slot_upper_bound_seconds(slot: usize) -> f64 {
    ((2u64 << slot) - 1) as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_common::log2_floor;

    #[test]
    fn every_duration_is_at_most_its_buckets_le() {
        for ns in [
            1u64,
            2,
            3,
            1023,
            1024,
            1025,
            2047,
            2048,
            999_999,
            1 << 20,
            123_456_789,
        ] {
            let slot = log2_floor(ns) as usize;
            let le_ns = slot_upper_bound_seconds(slot) * 1e9;
            assert!(
                ns as f64 <= le_ns,
                "{ns} ns in slot {slot} with le {le_ns} ns"
            );
            // ... and above the bucket below, so it is in no lower bucket.
            if slot > 0 {
                assert!(ns as f64 > slot_upper_bound_seconds(slot - 1) * 1e9, "{ns}");
            }
        }
    }
}
