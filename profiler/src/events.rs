//! Copy-up events from the ring buffer, attributed: file size, layer depth
//! and directory depth.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_common::{source, CopyUpEvent, Trigger, LOWER_NONE};

use crate::mounts::{self, OverlayMount};

/// What an event's `latency_ns` spans: it depends on the backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timed {
    /// Entry to exit of the syscall that copied up (tracepoint backend):
    /// the copy plus the rest of the call (path lookup, the open itself).
    #[default]
    Syscall,
    /// Entry to exit of overlayfs's copy-up function (fentry, kprobe):
    /// the copy alone.
    CopyUpFunction,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CopyUp {
    pub trigger: String,
    pub latency_ns: u64,
    /// What `latency_ns` spans.
    #[serde(default)]
    pub timed: Timed,
    /// From the start until the file's upper inode existed: lookups plus
    /// copying up ancestor directories.
    pub prepare_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// The writing task's cgroup (v2 id: the cgroup directory's inode).
    #[serde(default)]
    pub cgroup_id: u64,
    /// The engine's container the writing task ran in, by its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<crate::engines::Owner>,
    /// Absolute path inside the host, where known.
    pub path: Option<PathBuf>,
    pub mount: Option<PathBuf>,
    pub file_size: Option<u64>,
    /// 1 = the layer right below the upper.
    pub layer_depth: Option<usize>,
    pub stack_height: Option<usize>,
    /// Directories between the mount root and the file (0 = at the root).
    pub dir_depth: Option<usize>,
    /// Ancestor directories copied up along with the file.
    pub ancestors: u32,
    /// Time in the upper filesystem's fsync of the copy (0 on a volatile
    /// mount); None where the filesystem's fsync is not traced.
    pub fsync_ns: Option<u64>,
    /// The probe's own time after the end of `latency_ns` (see
    /// CopyUpEvent::probe_ns): what a stopwatch around the call adds.
    #[serde(default)]
    pub probe_ns: u64,
    /// The start time in CLOCK_MONOTONIC ns (bpf_ktime_get_ns).
    pub start_ns: u64,
    pub ret: i64,
}

impl CopyUp {
    /// A copy-up as attribution leaves it, without process, path or
    /// mount: what tests and benches feed histograms and the exporter.
    pub fn synthetic(
        trigger: &str,
        latency_ns: u64,
        file_size: Option<u64>,
        layer_depth: Option<usize>,
        dir_depth: Option<usize>,
    ) -> CopyUp {
        CopyUp {
            trigger: trigger.into(),
            latency_ns,
            timed: Timed::Syscall,
            prepare_ns: 0,
            pid: 0,
            tid: 0,
            cgroup_id: 0,
            container: None,
            path: None,
            mount: None,
            file_size,
            layer_depth,
            stack_height: layer_depth,
            dir_depth,
            ancestors: 0,
            fsync_ns: None,
            probe_ns: 0,
            start_ns: 0,
            ret: 0,
        }
    }
}

/// Reads a `CopyUpEvent` out of a ring buffer record.
pub fn decode(bytes: &[u8]) -> Option<CopyUpEvent> {
    if bytes.len() < std::mem::size_of::<CopyUpEvent>() {
        return None;
    }
    // SAFETY: length checked; CopyUpEvent is repr(C) plain data valid for
    // any bit pattern, and read_unaligned copes with the record's alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<CopyUpEvent>()) })
}

/// Turns a kernel event into an attributed copy-up. `mounts` is the
/// overlay mount table (refreshed by the caller when the mount misses).
pub fn attribute(ev: &CopyUpEvent, mounts: &[OverlayMount], fsync_traced: bool) -> CopyUp {
    let mut out = CopyUp {
        trigger: Trigger::from_u8(ev.trigger)
            .map(Trigger::name)
            .unwrap_or("unknown")
            .to_string(),
        latency_ns: ev.latency_ns,
        timed: Timed::Syscall,
        prepare_ns: ev.prepare_ns,
        pid: ev.pid,
        tid: ev.tid,
        cgroup_id: ev.cgroup_id,
        container: None,
        path: None,
        mount: None,
        file_size: (ev.file_size >= 0).then_some(ev.file_size as u64),
        layer_depth: None,
        stack_height: None,
        dir_depth: None,
        ancestors: if ev.files_created > 0 {
            ev.dirs_created
        } else {
            ev.dirs_created.saturating_sub(1)
        },
        fsync_ns: fsync_traced.then_some(ev.fsync_ns),
        probe_ns: ev.probe_ns,
        start_ns: ev.start_ns,
        ret: ev.ret,
    };
    // The kernel's word on layers, where it read the overlay inode; mount
    // options fill in only what it could not.
    out.layer_depth = kernel_layer(ev);
    out.stack_height = (ev.lower_count > 0).then_some(ev.lower_count as usize);
    if ev.source == source::COPY_UP_FN {
        out.timed = Timed::CopyUpFunction;
    }
    if ev.names_from_dentry != 0 {
        place_by_dentry(ev, mounts, &mut out);
    } else {
        place_by_syscall_path(ev, mounts, &mut out);
    }
    out
}

/// The lower layer the kernel read from the overlay inode (None where it
/// read none, or the file had no lower).
pub fn kernel_layer(ev: &CopyUpEvent) -> Option<usize> {
    (ev.lower_layer != 0 && ev.lower_layer != LOWER_NONE).then_some(ev.lower_layer as usize)
}

/// The syscall's path argument, made absolute and seen from the host,
/// names the file. Its mount is the overlay the kernel named by device
/// where it could read the file, else the longest mount point above it.
fn place_by_syscall_path(ev: &CopyUpEvent, mounts: &[OverlayMount], out: &mut CopyUp) {
    let raw = &ev.path[..ev
        .path
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(ev.path.len())];
    let by_dev = mounts::mount_with_dev(mounts, ev.overlay_dev).filter(|m| m.is_current());
    if raw.is_empty() {
        // A call on an fd: the overlay is known, the path is not.
        if let Some(m) = by_dev {
            place_on(m, None, out);
        }
        return;
    }
    let p = absolute(Path::new(OsStr::from_bytes(raw)), ev.pid, ev.dfd);
    let p = in_host_view(p, ev.pid, mounts);
    out.path = Some(p.clone());
    let by_path = mounts::mount_of(mounts, &p);
    match (by_dev, by_path) {
        (Some(m), Some((pm, rel))) if pm.dev == m.dev => place(pm, &rel, out),
        (Some(m), _) => {
            // The path names the file through some other view: most often
            // a container's own root, its task gone before its root could
            // be read. Where the overlay has the file at that path, that
            // is where it is; else the overlay still counts, pathless.
            let rel = p.strip_prefix("/").ok().map(Path::to_path_buf);
            let rel = rel.filter(|r| m.mount_point.join(r).symlink_metadata().is_ok());
            place_on(m, rel, out);
        }
        (None, Some((m, rel))) if ev.overlay_dev == 0 => place(m, &rel, out),
        _ => {}
    }
}

/// The kernel named the overlay (its device) and the file's names up to
/// the overlay root: no path string, cwd or mount namespace involved.
fn place_by_dentry(ev: &CopyUpEvent, mounts: &[OverlayMount], out: &mut CopyUp) {
    let names = dentry_names(ev);
    out.dir_depth = (ev.components > 0).then(|| ev.components as usize - 1);
    // A device number is reused once its overlay is unmounted: the table
    // may name an older mount (the caller then reads it again).
    let Some(m) = mounts::mount_with_dev(mounts, ev.overlay_dev).filter(|m| m.is_current()) else {
        return;
    };
    place_on(m, names, out);
}

/// The file is on `m`, at `rel` below its root where that is known.
fn place_on(m: &OverlayMount, rel: Option<PathBuf>, out: &mut CopyUp) {
    match rel {
        Some(rel) => {
            out.path = Some(m.mount_point.join(&rel));
            place(m, &rel, out);
        }
        None => {
            out.mount = Some(m.mount_point.clone());
            fill_from_options(m, None, out);
        }
    }
}

/// `rel` (relative to `m`'s root) is where the copied-up file lives: its
/// directory depth, and what the kernel did not say of its layers.
fn place(m: &OverlayMount, rel: &Path, out: &mut CopyUp) {
    out.mount = Some(m.mount_point.clone());
    out.dir_depth = Some(rel.components().count().saturating_sub(1));
    fill_from_options(m, Some(rel), out);
}

/// Layer depth, stack height and size from the mount's layer list, where
/// the kernel did not give them and the list names real directories.
fn fill_from_options(m: &OverlayMount, rel: Option<&Path>, out: &mut CopyUp) {
    if !m.lowers_found {
        return;
    }
    out.stack_height.get_or_insert(m.lowers.len());
    let Some(rel) = rel else {
        return;
    };
    if out.layer_depth.is_none() {
        out.layer_depth = m.layer_of(rel);
    }
    if out.file_size.is_none() {
        if let Some(d) = out.layer_depth.filter(|d| *d <= m.lowers.len()) {
            out.file_size = std::fs::symlink_metadata(m.lowers[d - 1].join(rel))
                .ok()
                .map(|md| md.len());
        }
    }
}

/// The path below the overlay root from an event's dentry names
/// (file first, each NUL-terminated), or None where it was cut short.
fn dentry_names(ev: &CopyUpEvent) -> Option<PathBuf> {
    if ev.path_complete == 0 || ev.components == 0 {
        return None;
    }
    let used = (ev.path_len as usize).min(ev.path.len());
    let names: Vec<&[u8]> = ev.path[..used]
        .split(|b| *b == 0)
        .take(ev.components as usize)
        .collect();
    if names.len() != ev.components as usize || names.iter().any(|n| n.is_empty()) {
        return None;
    }
    Some(
        names
            .iter()
            .rev()
            .map(|n| Path::new(OsStr::from_bytes(n)))
            .collect(),
    )
}

/// A containerised task names files from its own root (containerd's
/// runc pivots into the rootfs mount): where that root is one of the
/// overlay mounts, the path is re-rooted at that mount's host mount point.
/// Identity decides (the root's device and inode), not path strings.
fn in_host_view(p: PathBuf, pid: u32, mounts: &[OverlayMount]) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let id = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let Some(root) = id(Path::new(&format!("/proc/{pid}/root"))) else {
        return p; // the task is gone: its path stays as it named it
    };
    if Some(root) == id(Path::new("/")) {
        return p;
    }
    match mounts.iter().find(|m| id(&m.mount_point) == Some(root)) {
        Some(m) => m.mount_point.join(p.strip_prefix("/").unwrap_or(&p)),
        None => p,
    }
}

/// Makes a syscall's path absolute: relative to its dirfd, or the cwd.
fn absolute(p: &Path, pid: u32, dfd: i32) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let base = if dfd == libc::AT_FDCWD {
        PathBuf::from(format!("/proc/{pid}/cwd"))
    } else {
        PathBuf::from(format!("/proc/{pid}/fd/{dfd}"))
    };
    std::fs::read_link(&base)
        .map(|b| b.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy-up function event whose path holds `names` as the kernel
    /// writes them (file first, each NUL-terminated).
    fn dentry_event(names: &[&str], components: u16, complete: bool) -> CopyUpEvent {
        // SAFETY: CopyUpEvent is plain integers and bytes; all-zero is valid.
        let mut ev: CopyUpEvent = unsafe { std::mem::zeroed() };
        let mut at = 0;
        for n in names {
            ev.path[at..at + n.len()].copy_from_slice(n.as_bytes());
            at += n.len() + 1;
        }
        ev.path_len = at as u16;
        ev.components = components;
        ev.path_complete = complete as u8;
        ev.source = source::COPY_UP_FN;
        ev.names_from_dentry = 1;
        ev
    }

    #[test]
    fn dentry_names_read_file_first_and_refuse_a_cut_path() {
        let ev = dentry_event(&["f0", "d1", "d0"], 3, true);
        assert_eq!(dentry_names(&ev), Some(PathBuf::from("d0/d1/f0")));
        // Deeper than the buffer held: the depth is known, the path not.
        assert_eq!(dentry_names(&dentry_event(&["f0", "d1"], 3, false)), None);
        assert_eq!(dentry_names(&dentry_event(&["f0", "d1"], 3, true)), None);
        let ev = dentry_event(&["f0", "d1"], 3, false);
        let cu = attribute(&ev, &[], false);
        assert_eq!(
            (cu.dir_depth, cu.path, cu.timed),
            (Some(2), None, Timed::CopyUpFunction)
        );
        // The walk never reached the overlay root: no depth at all.
        let cu = attribute(&dentry_event(&["f0", "d1"], 0, false), &[], false);
        assert_eq!((cu.dir_depth, cu.path), (None, None));
    }
}
