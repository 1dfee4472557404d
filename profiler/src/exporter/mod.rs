//! `strata-prof serve`'s Prometheus exporter: the copy-up metrics kept
//! from events ([`copy_ups`]), the kernel's own aggregates read at scrape
//! time, their encoding ([`families`]), a scrape's text as shared chunks
//! ([`chunks`]) and the HTTP front ([`http`]).

pub mod chunks;
pub mod classes;
pub mod copy_ups;
pub mod duration;
pub mod families;
pub mod http;

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use hyper::body::Bytes;
use prometheus_client::registry::Registry;
use strata_common::{VfsKey, LOG2_SLOTS};

use crate::containers::ContainerNames;
use crate::events::CopyUp;
use crate::probes::ProgramCost;
use crate::session::{KernelCounters, Session};
use crate::sink::{Interval, Sink, Summary};
use chunks::Chunks;
use copy_ups::CopyUpMetrics;

/// The exposition formats a scrape may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics = 0,
    /// Prometheus text format 0.0.4 (what promtool and older scrapers read).
    Text = 1,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// What the kernel side holds, read at each scrape (never replayed).
#[derive(Default)]
pub struct KernelView {
    pub counters: KernelCounters,
    pub new_files: u64,
    /// With `--vfs`.
    pub vfs: Option<Vec<(VfsKey, [u64; LOG2_SLOTS])>>,
    /// With `--probe-cost`.
    pub probe_costs: Option<Vec<ProgramCost>>,
}

/// Everything a scrape encodes.
#[derive(Default)]
pub struct State {
    pub copy_ups: CopyUpMetrics,
    pub kernel: KernelView,
    /// Whether the upper filesystem's fsync is traced (else no fsync family).
    pub fsync_traced: bool,
    /// `strata_prof_info`'s labels.
    pub backend: String,
    pub kernel_release: String,
}

/// The exporter: shared between the recording loop (as a sink) and the
/// scrapes it answers.
#[derive(Clone)]
pub struct Exporter {
    state: Arc<Mutex<State>>,
    registry: Arc<Registry>,
    vfs: bool,
    probe_cost: bool,
}

/// The registry's view of the state.
struct Collector(Arc<Mutex<State>>);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("strata-prof collector")
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        families::encode(&lock(&self.0), encoder)
    }
}

/// A registry's families in `format`. Encoding into a String cannot fail
/// short of a collector's own error, and ours return none.
fn encode_registry(registry: &Registry, format: Format, out: &mut String) {
    let done = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(out, registry),
        Format::Text => prometheus_client::encoding::prometheus_text::encode(out, registry),
    };
    done.expect("encoding metrics into a String")
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain counters behind, still
    // worth serving.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Exporter {
    pub fn new(
        session: &Session,
        containers: Option<ContainerNames>,
        vfs: bool,
        probe_cost: bool,
    ) -> Exporter {
        let state = State {
            copy_ups: CopyUpMetrics {
                containers,
                ..Default::default()
            },
            fsync_traced: session.probes().fsync_traced,
            backend: session.backend().to_string(),
            kernel_release: crate::backend::kernel_release(),
            ..Default::default()
        };
        Exporter::from_state(state, vfs, probe_cost)
    }

    /// An exporter over a state made elsewhere (benches, tests).
    pub fn from_state(state: State, vfs: bool, probe_cost: bool) -> Exporter {
        let state = Arc::new(Mutex::new(state));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collector(state.clone())));
        Exporter {
            state,
            registry: Arc::new(registry),
            vfs,
            probe_cost,
        }
    }

    /// Reads the kernel's aggregates and encodes every family.
    pub fn scrape(&self, session: &Session, format: Format) -> Result<Chunks> {
        let probes = session.probes();
        let kernel = KernelView {
            counters: session.counters()?,
            new_files: session.new_files,
            vfs: self.vfs.then(|| probes.vfs_histograms()).transpose()?,
            probe_costs: self
                .probe_cost
                .then(|| probes.program_costs())
                .transpose()?,
        };
        lock(&self.state).kernel = kernel;
        Ok(self.encode_chunks(format))
    }

    /// Every family, in `format`: the collector's, then the duration
    /// family from its per-series cache (before OpenMetrics' `# EOF`).
    pub fn encode_chunks(&self, format: Format) -> Chunks {
        let mut head = String::new();
        encode_registry(&self.registry, format, &mut head);
        let eof = head.len() - if head.ends_with("# EOF\n") { 6 } else { 0 };
        let tail = head.split_off(eof);
        let mut out = Chunks::default();
        out.push(Bytes::from(head));
        duration::encode(&mut lock(&self.state).copy_ups.duration, format, &mut out);
        out.push(Bytes::from(tail));
        out
    }

    /// The same, as one string (tests and tools; serve sends the chunks).
    pub fn encode(&self, format: Format) -> Result<String> {
        Ok(self.encode_chunks(format).to_text())
    }
}

impl Sink for Exporter {
    fn copy_up(&mut self, event: &CopyUp) -> Result<()> {
        lock(&self.state).copy_ups.record(event);
        Ok(())
    }
    /// Each interval (every 5 s in serve) forgets removed containers.
    fn interval(&mut self, _interval: &Interval<'_>) -> Result<()> {
        lock(&self.state).copy_ups.drop_gone_containers();
        Ok(())
    }
    fn summary(&mut self, _summary: &Summary<'_>) -> Result<()> {
        Ok(())
    }
    /// It keeps its own log2 counts per label set, and reads the kernel's
    /// maps at scrape time.
    fn reads_aggregates(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(size: u64, layer: usize, dir: usize, ns: u64) -> CopyUp {
        CopyUp {
            fsync_ns: Some(ns / 2),
            ..CopyUp::synthetic("open-write", ns, Some(size), Some(layer), Some(dir))
        }
    }

    fn lines_of<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> {
        text.lines().filter(move |l| l.starts_with(prefix))
    }

    /// With --per-container, an engine's container is labelled as its CLI
    /// names it, with its engine; a copy-up in no container gets "".
    #[test]
    fn engine_containers_get_their_own_labels() {
        use crate::engines::{Engine, Owner};
        let mut exporter = Exporter::from_state(
            State {
                copy_ups: copy_ups::CopyUpMetrics {
                    containers: Some(ContainerNames::new(std::path::Path::new(
                        "/nonexistent-strata-store",
                    ))),
                    ..Default::default()
                },
                ..Default::default()
            },
            false,
            false,
        );
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let in_docker = CopyUp {
            container: Some(Owner::new(Engine::Docker, id)),
            ..event(4096, 1, 0, 1000)
        };
        exporter.copy_up(&in_docker).unwrap();
        exporter.copy_up(&in_docker).unwrap();
        exporter.copy_up(&event(4096, 1, 0, 1000)).unwrap();
        let text = exporter.encode(Format::Text).unwrap();
        let count = |labels: &str| {
            lines_of(
                &text,
                &format!("strata_copy_ups_total{{trigger=\"open-write\",{labels}}}"),
            )
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .next()
        };
        assert_eq!(
            count("container=\"0123456789ab\",engine=\"docker\"").as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            count("container=\"\",engine=\"\"").as_deref(),
            Some("1"),
            "{text}"
        );
    }

    #[test]
    fn both_formats_close_every_histogram_with_inf_and_count_alike() {
        let mut exporter = Exporter::from_state(
            State {
                fsync_traced: true,
                ..Default::default()
            },
            false,
            false,
        );
        for (i, ns) in [900u64, 1_500, 3_000_000, 3_100_000]
            .into_iter()
            .enumerate()
        {
            exporter.copy_up(&event(4096 << i, 1, i, ns)).unwrap();
        }
        for format in [Format::OpenMetrics, Format::Text] {
            let text = exporter.encode(format).unwrap();
            let counts: Vec<_> = lines_of(&text, "strata_copy_up_duration_seconds_count").collect();
            let infs: Vec<_> = lines_of(&text, "strata_copy_up_duration_seconds_bucket")
                .filter(|l| l.contains("le=\"+Inf\""))
                .collect();
            assert_eq!(counts.len(), 4, "{format:?}:\n{text}");
            assert_eq!(infs.len(), 4, "{format:?}:\n{text}");
            for (count, inf) in counts.iter().zip(&infs) {
                assert_eq!(count.rsplit(' ').next(), inf.rsplit(' ').next(), "{text}");
            }
            let has = |name: &str, labels: &[&str], value: &str| {
                lines_of(&text, name).any(|l| {
                    l.ends_with(&format!(" {value}")) && labels.iter().all(|want| l.contains(want))
                })
            };
            let open_write = "trigger=\"open-write\"";
            assert!(has("strata_copy_ups_total{", &[open_write], "4"), "{text}");
            assert!(
                has("strata_copy_up_bytes_total{", &[open_write], "61440"),
                "{text}"
            );
            let inf = "le=\"+Inf\"";
            assert!(
                has(
                    "strata_copy_up_fsync_seconds_bucket{",
                    &[open_write, inf],
                    "4"
                ),
                "{text}"
            );
            // 1500 ns is in slot 10, whose bucket ends at 2047 ns.
            let small = [
                "size=\"le_8KiB\"",
                "dir_depth=\"1-3\"",
                match format {
                    Format::OpenMetrics => "le=\"0.000002047\"",
                    Format::Text => "le=\"2.047e-06\"", // Go's float format
                },
            ];
            assert!(
                has("strata_copy_up_duration_seconds_bucket{", &small, "1"),
                "{text}"
            );
        }
        let om = exporter.encode(Format::OpenMetrics).unwrap();
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn series_stay_within_the_documented_bound_whatever_the_files() {
        let mut exporter = Exporter::from_state(State::default(), false, false);
        let mut n = 0u64;
        for size_log2 in 0..34 {
            for layer in [1, 2, 3, 5, 9, 17, 40, 65, 128, 499] {
                for dir in [0, 1, 2, 4, 9, 16, 40] {
                    n += 1;
                    let size = (1u64 << size_log2) + n % 7;
                    exporter
                        .copy_up(&event(size, layer, dir, 1000 + n))
                        .unwrap();
                }
            }
        }
        let text = exporter.encode(Format::Text).unwrap();
        let series = lines_of(&text, "strata_copy_up_duration_seconds_count").count();
        assert!(series <= classes::MAX_COPY_UP_SERIES, "{series}");
        // Every size class but unknown, 5 layer classes, 4 dir classes.
        assert_eq!(series, 20 * 5 * 4, "{n} copy-ups");
    }

    /// (family, label names) of every sample in a text scrape; histogram
    /// series folded into their family, `le` left out.
    fn exported(text: &str) -> std::collections::BTreeSet<(String, Vec<String>)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, rest) = l
                    .split_once('{')
                    .unwrap_or((l.split(' ').next().unwrap(), ""));
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
                    .unwrap_or(name);
                let labels = rest
                    .split(',')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
                    .filter(|k| k != "le")
                    .collect();
                (family.to_string(), labels)
            })
            .collect()
    }

    #[test]
    fn the_catalogue_is_exactly_what_serve_exports() {
        use strata_common::{backing, vfs_op, VfsKey};
        let vfs_key = |op, backing, layer| VfsKey {
            op,
            backing,
            layer,
            _pad: 0,
        };
        let mut slots = [0u64; LOG2_SLOTS];
        slots[12] = 3;
        let state = State {
            fsync_traced: true,
            kernel: KernelView {
                vfs: Some(vec![
                    (vfs_key(vfs_op::OPEN, backing::LOWER, 3), slots),
                    (vfs_key(vfs_op::READ, backing::UPPER, 0), slots),
                ]),
                probe_costs: Some(vec![ProgramCost {
                    program: "strata_sys_enter".into(),
                    runs: 10,
                    ns_per_run: 100,
                    run_time_ns: 1000,
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut exporter = Exporter::from_state(state, true, true);
        exporter.copy_up(&event(4096, 1, 0, 1000)).unwrap();
        let got = exported(&exporter.encode(Format::Text).unwrap());
        let want: std::collections::BTreeSet<_> = families::FAMILIES
            .iter()
            .map(|f| {
                (
                    f.name.to_string(),
                    f.labels.iter().map(|l| l.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_scrape_after_a_change_shows_it_and_keeps_the_rest() {
        let mut exporter = Exporter::from_state(State::default(), false, false);
        exporter.copy_up(&event(4096, 1, 0, 1000)).unwrap();
        exporter.copy_up(&event(1 << 20, 2, 5, 1000)).unwrap();
        let count = |text: &str, size: &str| -> Vec<String> {
            lines_of(text, "strata_copy_up_duration_seconds_count")
                .filter(|l| l.contains(size))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
                .collect()
        };
        for format in [Format::OpenMetrics, Format::Text] {
            let before = exporter.encode(format).unwrap();
            assert_eq!(count(&before, "le_4KiB"), ["1"], "{before}");
        }
        exporter.copy_up(&event(4096, 1, 0, 5000)).unwrap();
        for format in [Format::Text, Format::OpenMetrics] {
            let after = exporter.encode(format).unwrap();
            assert_eq!(count(&after, "le_4KiB"), ["2"], "{after}");
            assert_eq!(count(&after, "le_1MiB"), ["1"], "{after}");
            let infs = lines_of(&after, "strata_copy_up_duration_seconds_bucket")
                .filter(|l| l.contains("+Inf"))
                .count();
            assert_eq!(infs, 2, "{after}");
        }
    }
}
