//! A profiling session: the chosen backend's probes, the event stream, and
//! the attribution of each event to its overlay mount and layers.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use aya::maps::{MapData, RingBuf};
use strata_common::{counter, source, CopyUpEvent, LOWER_NONE};

use crate::backend::Backend;
use crate::containers::ContainerNames;
use crate::engines::{Owner, Owners};
use crate::events::{self, CopyUp};
use crate::mounts::{self, OverlayMount};
use crate::probes::{Filters, Probes};

pub struct Session {
    probes: Probes,
    ring: RingBuf<MapData>,
    mounts: Vec<OverlayMount>,
    /// Only these copy-ups (`--mount`, `--container`), or every one.
    pub scope: Option<Scope>,
    owners: Owners,
    /// strata's containers, by their mounts (where a store root was given).
    strata: Option<ContainerNames>,
    /// Calls that created a file that no lower layer had: a new file, not
    /// a copy-up. Counted, not reported as copy-ups.
    pub new_files: u64,
    /// Copy-ups reported without a mount: their overlay is not mounted
    /// where this process can see it (or already gone).
    pub unnamed_mount: u64,
    /// Overlays (by device) the mount table lacked when last read: their
    /// events do not make it be read again, until something else does.
    unmounted_devs: HashSet<u32>,
    /// Why the backend was chosen.
    pub reason: String,
}

/// Which copy-ups a session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Those on this overlay mount point (`--mount`, or a strata
    /// container's mount).
    Mount(PathBuf),
    /// Those of tasks in this engine's container (`--container` naming a
    /// docker, podman or containerd container).
    Container(Owner),
}

impl Scope {
    fn admits(&self, cu: &CopyUp) -> bool {
        match self {
            Scope::Mount(m) => cu.mount.as_ref() == Some(m),
            Scope::Container(o) => cu.container.as_ref() == Some(o),
        }
    }
}

/// Counters from the kernel side.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct KernelCounters {
    pub watched_calls: u64,
    pub copy_ups: u64,
    /// Events the ring buffer had no room for (still in the in-kernel
    /// histograms).
    pub ringbuf_drops: u64,
    /// Calls not tracked because the in-flight table was full.
    pub inflight_full: u64,
}

impl KernelCounters {
    pub fn lost(&self) -> u64 {
        self.ringbuf_drops + self.inflight_full
    }
}

/// The most precise backend that loads and attaches here, and why the
/// more precise ones did not.
fn attach_most_precise(filters: Filters, vfs: bool) -> Result<(Probes, String)> {
    let mut skipped = Vec::new();
    for b in [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint] {
        match Probes::attach(filters, b, vfs) {
            Ok(p) => {
                let mut why = format!("{b} backend: the most precise that attached here");
                if !skipped.is_empty() {
                    why.push_str(&format!("; skipped {}", skipped.join("; ")));
                }
                return Ok((p, why));
            }
            Err(e) => skipped.push(format!("{b} ({e:#})")),
        }
    }
    bail!("no backend attached here: {}", skipped.join("; "))
}

impl Session {
    pub fn start(
        filters: Filters,
        forced: Option<Backend>,
        scope: Option<Scope>,
        vfs: bool,
        strata_root: Option<&Path>,
    ) -> Result<Session> {
        let (mut probes, reason) = match forced {
            Some(b) => (
                Probes::attach(filters, b, vfs)?,
                format!("{b} backend forced with --backend"),
            ),
            None => attach_most_precise(filters, vfs)?,
        };
        let ring = probes.ring_buffer()?;
        let mut reason = if probes.backend == Backend::Tracepoint {
            format!(
                "{reason}; {} syscalls watched; latency is the syscall's",
                probes.attached.len()
            )
        } else {
            format!(
                "{reason}; no syscall tracepoint attached; latency is {}'s alone",
                crate::probes::COPY_UP_FN
            )
        };
        if !probes.exit_walks {
            reason.push_str(
                "; the verifier refused the dentry walk at syscall exit: \
                 calls on an fd have no path",
            );
        }
        if !probes.missing.is_empty() {
            reason.push_str(&format!(
                " (not on this kernel: {})",
                probes.missing.join(", ")
            ));
        }
        Ok(Session {
            probes,
            ring,
            mounts: mounts::overlay_mounts(),
            scope,
            owners: Owners::default(),
            strata: strata_root.map(ContainerNames::new),
            new_files: 0,
            unnamed_mount: 0,
            unmounted_devs: HashSet::new(),
            reason,
        })
    }

    pub fn backend(&self) -> Backend {
        self.probes.backend
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    pub fn ring_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Everything in the ring buffer now, attributed and filtered.
    pub fn poll(&mut self) -> Vec<CopyUp> {
        let mut raw = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(ev) = events::decode(&item) {
                raw.push(ev);
            }
        }
        let mut out = Vec::with_capacity(raw.len());
        for ev in raw {
            let mut cu = events::attribute(&ev, &self.mounts, self.probes.fsync_traced);
            let by_dev = ev.names_from_dentry != 0 || ev.overlay_dev != 0;
            let unseen = !self.unmounted_devs.contains(&ev.overlay_dev);
            if cu.mount.is_none() && (cu.path.is_some() || by_dev) && unseen {
                // A mount made after we started: look again.
                self.mounts = mounts::overlay_mounts();
                self.owners.forget_overlays();
                self.unmounted_devs.clear();
                cu = events::attribute(&ev, &self.mounts, self.probes.fsync_traced);
                if cu.mount.is_none() && ev.overlay_dev != 0 {
                    self.unmounted_devs.insert(ev.overlay_dev);
                }
            }
            cu.container = self.owners.of_event(ev.cgroup_id, ev.pid, ev.overlay_dev);
            if cu.container.is_none() {
                if let (Some(strata), Some(mount)) = (self.strata.as_mut(), &cu.mount) {
                    cu.container = strata.owner_of_mount(mount);
                }
            }
            if self.scope.as_ref().is_some_and(|s| !s.admits(&cu)) {
                continue;
            }
            if is_new_file(&ev, &cu, &self.mounts) {
                self.new_files += 1;
                continue;
            }
            if cu.mount.is_none() {
                self.unnamed_mount += 1;
            }
            out.push(cu);
        }
        out
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        let c = self.probes.counters()?;
        Ok(KernelCounters {
            watched_calls: c[counter::WATCHED_CALLS as usize],
            copy_ups: c[counter::COPY_UPS as usize],
            ringbuf_drops: c[counter::RINGBUF_DROPS as usize],
            inflight_full: c[counter::INFLIGHT_FULL as usize],
        })
    }
}

/// A call that created a file no lower layer had made a new file, not a
/// copy-up. The kernel says so where it read the overlay inode; else
/// (an older kernel without overlay's BTF) the mount's layer list does,
/// where it names real directories. The function backends see copy-ups
/// only.
fn is_new_file(ev: &CopyUpEvent, cu: &CopyUp, mounts: &[OverlayMount]) -> bool {
    if ev.source == source::COPY_UP_FN {
        return false;
    }
    if ev.lower_layer != 0 {
        return ev.lower_layer == LOWER_NONE;
    }
    let lowers_found = cu
        .mount
        .as_ref()
        .and_then(|mp| mounts.iter().find(|m| &m.mount_point == mp))
        .is_some_and(|m| m.lowers_found);
    lowers_found && cu.path.is_some() && cu.layer_depth.is_none()
}
