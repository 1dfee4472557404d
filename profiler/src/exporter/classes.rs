//! Bounded label values. A label that took raw sizes or depths would make
//! a series per file; these classes keep every family's series count fixed
//! whatever the workload (see [`MAX_COPY_UP_SERIES`]).

use strata_common::Trigger;

/// File size classes: "at most" each power of two from 4 KiB to 1 GiB,
/// then above, then not seen.
pub const SIZE_CLASSES: [&str; 21] = [
    "le_4KiB",
    "le_8KiB",
    "le_16KiB",
    "le_32KiB",
    "le_64KiB",
    "le_128KiB",
    "le_256KiB",
    "le_512KiB",
    "le_1MiB",
    "le_2MiB",
    "le_4MiB",
    "le_8MiB",
    "le_16MiB",
    "le_32MiB",
    "le_64MiB",
    "le_128MiB",
    "le_256MiB",
    "le_512MiB",
    "le_1GiB",
    "gt_1GiB",
    "unknown",
];

/// Layer depth classes (1 = right below the writable layer).
pub const LAYER_CLASSES: [&str; 6] = ["1", "2-4", "5-16", "17-64", "65+", "unknown"];

/// Directory depth classes (0 = at the mount root).
pub const DIR_CLASSES: [&str; 5] = ["0", "1-3", "4-15", "16+", "unknown"];

/// Trigger label values: every trigger the kernel side knows, or unknown.
pub const TRIGGERS: usize = Trigger::ALL.len() + 1;

/// Series of `strata_copy_up_duration_seconds` per container label value
/// (one, without `--per-container`).
pub const MAX_COPY_UP_SERIES: usize =
    TRIGGERS * SIZE_CLASSES.len() * LAYER_CLASSES.len() * DIR_CLASSES.len();

pub fn size_class(size: Option<u64>) -> &'static str {
    const SMALLEST_LOG2: u32 = 12;
    match size {
        None => SIZE_CLASSES[20],
        Some(s) if s <= 1 << SMALLEST_LOG2 => SIZE_CLASSES[0],
        Some(s) if s > 1 << 30 => SIZE_CLASSES[19],
        // The smallest power of two that holds s: ceil(log2(s)).
        Some(s) => SIZE_CLASSES[(u64::BITS - (s - 1).leading_zeros() - SMALLEST_LOG2) as usize],
    }
}

pub fn layer_class(depth: Option<usize>) -> &'static str {
    match depth {
        Some(1) => LAYER_CLASSES[0],
        Some(2..=4) => LAYER_CLASSES[1],
        Some(5..=16) => LAYER_CLASSES[2],
        Some(17..=64) => LAYER_CLASSES[3],
        Some(65..) => LAYER_CLASSES[4],
        Some(0) | None => LAYER_CLASSES[5],
    }
}

pub fn dir_class(depth: Option<usize>) -> &'static str {
    match depth {
        Some(0) => DIR_CLASSES[0],
        Some(1..=3) => DIR_CLASSES[1],
        Some(4..=15) => DIR_CLASSES[2],
        Some(16..) => DIR_CLASSES[3],
        None => DIR_CLASSES[4],
    }
}

/// The trigger's own name where it is one the kernel side sends.
pub fn trigger_label(name: &str) -> &'static str {
    Trigger::ALL
        .iter()
        .map(|t| t.name())
        .find(|t| *t == name)
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_in_the_class_of_the_power_of_two_that_holds_them() {
        let cases = [
            (1, "le_4KiB"),
            (4096, "le_4KiB"),
            (4097, "le_8KiB"),
            (8192, "le_8KiB"),
            (1 << 20, "le_1MiB"),
            ((1 << 20) + 1, "le_2MiB"),
            (1 << 30, "le_1GiB"),
            ((1 << 30) + 1, "gt_1GiB"),
        ];
        for (size, class) in cases {
            assert_eq!(size_class(Some(size)), class, "{size}");
        }
        assert_eq!(size_class(None), "unknown");
    }

    #[test]
    fn depths_fall_in_their_documented_classes() {
        let layers: Vec<_> = [1, 2, 4, 5, 16, 17, 64, 65, 500]
            .map(|d| layer_class(Some(d)))
            .into();
        assert_eq!(
            layers,
            ["1", "2-4", "2-4", "5-16", "5-16", "17-64", "17-64", "65+", "65+"]
        );
        let dirs: Vec<_> = [0, 1, 3, 4, 15, 16, 300].map(|d| dir_class(Some(d))).into();
        assert_eq!(dirs, ["0", "1-3", "1-3", "4-15", "4-15", "16+", "16+"]);
        assert_eq!(trigger_label("open-write"), "open-write");
        assert_eq!(trigger_label("something new"), "unknown");
    }
}
