//! What `serve` keeps from the events it receives anyway: per label set,
//! log2 latency buckets (the kernel's own bucketing), a count and bytes.
//! Updated per event by a few map lookups; a scrape only reads it.

use std::collections::HashMap;

use strata_common::{log2_floor, LOG2_SLOTS};

use super::classes::{dir_class, layer_class, size_class, trigger_label};
use super::duration::DurationFamily;
use crate::containers::ContainerNames;
use crate::events::CopyUp;

/// Counts in log2(ns) slots, as the kernel keeps them, plus the exact sum
/// and count of what was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log2Counts {
    pub slots: [u64; LOG2_SLOTS],
    /// Exact where events fed it; estimated from slot midpoints where a
    /// kernel histogram did (the kernel keeps no sum).
    pub sum_ns: u128,
    pub count: u64,
}

impl Default for Log2Counts {
    fn default() -> Self {
        Log2Counts {
            slots: [0; LOG2_SLOTS],
            sum_ns: 0,
            count: 0,
        }
    }
}

impl Log2Counts {
    pub fn record(&mut self, ns: u64) {
        let slot = (log2_floor(ns) as usize).min(LOG2_SLOTS - 1);
        self.slots[slot] += 1;
        self.sum_ns += u128::from(ns);
        self.count += 1;
    }

    /// A kernel histogram, which has slots alone.
    pub fn from_slots(slots: [u64; LOG2_SLOTS]) -> Log2Counts {
        let sum_ns = slots
            .iter()
            .enumerate()
            .map(|(i, c)| u128::from(*c) * (3u128 << i) / 2)
            .sum();
        Log2Counts {
            slots,
            sum_ns,
            count: slots.iter().sum(),
        }
    }

    pub fn add(&mut self, other: &Log2Counts) {
        for (a, b) in self.slots.iter_mut().zip(other.slots) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
        self.count += other.count;
    }
}

/// The label set of a copy-up series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CopyUpLabels {
    pub trigger: &'static str,
    pub size: &'static str,
    pub layer_depth: &'static str,
    pub dir_depth: &'static str,
    /// With `--per-container` only.
    pub container: Option<ContainerLabel>,
}

/// The `container` and `engine` labels of `--per-container`: an engine's
/// container as its CLI names it (docker's short id, containerd's
/// namespace/id) or a strata container's name; both "" where a copy-up
/// is in no container anyone made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerLabel {
    pub engine: &'static str,
    pub name: String,
}

/// Counters by trigger (and container).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TriggerLabels {
    pub trigger: &'static str,
    pub container: Option<ContainerLabel>,
}

#[derive(Default)]
pub struct CopyUpMetrics {
    pub duration: DurationFamily,
    pub fsync: HashMap<TriggerLabels, Log2Counts>,
    pub count: HashMap<TriggerLabels, u64>,
    pub bytes: HashMap<TriggerLabels, u64>,
    /// Present with `--per-container`: which strata containers are still
    /// in the store.
    pub containers: Option<ContainerNames>,
}

impl CopyUpMetrics {
    /// The session named the container (strata's too, by its mount).
    fn container_of(&mut self, e: &CopyUp) -> Option<ContainerLabel> {
        self.containers.as_ref()?;
        Some(match &e.container {
            Some(owner) => ContainerLabel {
                engine: owner.engine.name(),
                name: owner.display_name(),
            },
            None => ContainerLabel::default(),
        })
    }

    /// Forgets the series of containers that are gone.
    pub fn drop_gone_containers(&mut self) {
        let Some(names) = self.containers.as_mut() else {
            return;
        };
        names.refresh();
        let running: std::collections::HashSet<String> = crate::engines::running()
            .into_iter()
            .map(|(o, _)| o.display_name())
            .collect();
        let live = |c: &Option<ContainerLabel>| {
            c.as_ref().is_none_or(|c| match c.engine {
                "" => true,
                "strata" => names.is_live(&c.name),
                _ => running.contains(&c.name),
            })
        };
        self.duration.retain(|k, _| live(&k.container));
        self.fsync.retain(|k, _| live(&k.container));
        self.count.retain(|k, _| live(&k.container));
        self.bytes.retain(|k, _| live(&k.container));
    }
}

impl CopyUpMetrics {
    /// Counts one attributed copy-up in its label sets.
    pub fn record(&mut self, e: &CopyUp) {
        let container = self.container_of(e);
        let trigger = trigger_label(&e.trigger);
        let labels = CopyUpLabels {
            trigger,
            size: size_class(e.file_size),
            layer_depth: layer_class(e.layer_depth),
            dir_depth: dir_class(e.dir_depth),
            container: container.clone(),
        };
        self.duration
            .entry(labels)
            .or_default()
            .record(e.latency_ns);
        let by_trigger = TriggerLabels { trigger, container };
        if let Some(ns) = e.fsync_ns {
            self.fsync.entry(by_trigger.clone()).or_default().record(ns);
        }
        *self.bytes.entry(by_trigger.clone()).or_default() += e.file_size.unwrap_or(0);
        *self.count.entry(by_trigger).or_default() += 1;
    }
}
