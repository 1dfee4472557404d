//! The Grafana dashboard shipped in profiler/grafana asks only for what
//! `serve` exports: every metric and label in every PromQL expression
//! (panels and template variables) is in the exporter's catalogue.

use std::collections::BTreeSet;

use serde_json::Value;
use strata_prof::exporter::families::{Family, FAMILIES};

const DASHBOARD: &str = include_str!("../grafana/strata-copy-up.json");

/// Labels Prometheus adds, or that `serve` adds by option.
const ADDED: [&str; 3] = ["instance", "job", "container"];

fn expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            out.push(var["query"].as_str().unwrap().to_string());
        }
    }
    out
}

/// The family a metric name in PromQL belongs to (histograms are queried
/// through their _bucket/_sum/_count series).
fn family_of(metric: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == metric).or_else(|| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))?;
        FAMILIES
            .iter()
            .find(|f| f.name == base && f.name.ends_with("_seconds"))
    })
}

fn identifier_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Metric names and label names an expression uses.
fn parse(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let mut rest = expr;
    while let Some(i) = rest.find("strata_") {
        let name = identifier_at(&rest[i..]);
        metrics.insert(name.to_string());
        rest = &rest[i + name.len()..];
        if let Some(matchers) = rest.strip_prefix('{') {
            let end = matchers.find('}').expect("unclosed matcher");
            for m in matchers[..end].split(',') {
                labels.insert(identifier_at(m.trim()).to_string());
            }
        }
    }
    for grouping in ["by (", "without ("] {
        for part in expr.split(grouping).skip(1) {
            let list = &part[..part.find(')').expect("unclosed grouping")];
            labels.extend(list.split(',').map(|l| l.trim().to_string()));
        }
    }
    if let Some(args) = expr.strip_prefix("label_values(") {
        let label = args
            .rsplit(',')
            .next()
            .unwrap()
            .trim_end_matches(')')
            .trim();
        labels.insert(label.to_string());
    }
    (metrics, labels)
}

#[test]
fn every_expression_names_exported_metrics_and_labels() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let (metrics, labels) = parse(expr);
        assert!(!metrics.is_empty(), "{expr} uses no strata metric");
        let mut allowed: BTreeSet<&str> = ADDED.into_iter().collect();
        for m in &metrics {
            let family = family_of(m).unwrap_or_else(|| panic!("{expr}: {m} is not exported"));
            allowed.extend(family.labels);
            if m.ends_with("_bucket") {
                allowed.insert("le");
            }
            used.insert(family.name);
        }
        for l in &labels {
            assert!(
                allowed.contains(l.as_str()),
                "{expr}: label {l} is not on {metrics:?}"
            );
        }
    }
    // The panels the README promises.
    for family in [
        "strata_copy_up_duration_seconds",
        "strata_copy_ups_total",
        "strata_copy_up_bytes_total",
        "strata_prof_events_lost_total",
    ] {
        assert!(used.contains(family), "no panel shows {family}");
    }
}

#[test]
fn the_checker_catches_a_wrong_name_or_label() {
    let (metrics, labels) = parse(
        "histogram_quantile(0.5, sum by (le, size) (rate(strata_copy_up_duration_seconds_bucket{instance=~\"$i\"}[5m])))",
    );
    assert_eq!(
        metrics,
        ["strata_copy_up_duration_seconds_bucket".to_string()].into()
    );
    assert_eq!(labels, ["instance", "le", "size"].map(String::from).into());
    assert!(family_of("strata_copy_up_duration_seconds_bucket").is_some());
    assert!(family_of("strata_copy_ups_total_bucket").is_none());
    assert!(family_of("strata_copy_up_latency_seconds").is_none());
}
