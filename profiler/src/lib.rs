//! strata-prof: live histograms of what overlayfs copy-on-write costs.
//!
//! The probes ([`probes`], [`backend`], [`fentry`], [`btf`]) feed a
//! [`session`] whose events are attributed ([`events`], [`mounts`]) and
//! and named by container ([`engines`]: docker, podman, containerd; and
//! strata's own, [`containers`]), then handed by the [`record`] loop to [`sink`]s: the terminal table, JSON
//! lines, the HdrHistogram log, or the Prometheus [`exporter`] of
//! [`serve`]. [`sweep`] builds its own images and checks the probes
//! against a stopwatch; [`report`] plots what was recorded.

pub mod backend;
pub mod btf;
pub mod census;
pub mod containers;
pub mod engines;
pub mod events;
pub mod exporter;
pub mod fentry;
pub mod histograms;
pub mod links;
pub mod mounts;
pub mod output;
pub mod probes;
pub mod record;
pub mod report;
pub mod serve;
pub mod session;
pub mod sink;
pub mod sweep;
mod sys_bpf;
pub mod syscalls;
pub mod tracefs;
