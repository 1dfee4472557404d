//! Where a finished call that copied something up becomes a report: the
//! in-kernel log2 histogram it is counted in, and the ring-buffer event
//! user space attributes. Both backends end here.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_probe_read_user_str_bytes},
};
use strata_common::{
    counter, log2_floor, source, CopyUpEvent, HistKey, InFlight, PATH_CAPTURE, SIZE_UNKNOWN,
};

use crate::kernel::{dentry_path, Globals, InodeFacts};
use crate::maps::{bump, EVENTS, HIST, ZERO_HIST};

/// Queued bytes at which a report wakes the ring buffer's reader.
const WAKEUP_BYTES: u64 = 64 * core::mem::size_of::<CopyUpEvent>() as u64;

/// What the backend learned about the call, besides its `InFlight` state.
pub struct Finished {
    pub latency_ns: u64,
    pub ret: i64,
    /// The overlay file, where the backend could reach its inode (size -1
    /// and the rest 0 where not).
    pub file: InodeFacts,
    /// bpf_get_current_pid_tgid(), which the caller already has.
    pub pid_tgid: u64,
    pub trigger: u8,
    /// One of strata_common::source; says what `InFlight::subject` is.
    pub source: u8,
}

/// Counts the copy-up in the histograms and sends its event.
#[inline(always)]
pub fn copy_up(g: &Globals, call: &InFlight, f: &Finished) {
    let ancestors = if call.files_created > 0 {
        call.dirs_created
    } else {
        call.dirs_created.saturating_sub(1)
    };
    count(f, ancestors);
    bump(counter::COPY_UPS);
    let Some(mut entry) = EVENTS.reserve::<CopyUpEvent>(0) else {
        bump(counter::RINGBUF_DROPS);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring-buffer record of the right size,
    // exclusively ours until submit; every field is written before submit.
    unsafe {
        (*ev).start_ns = call.start_ns;
        (*ev).latency_ns = f.latency_ns;
        (*ev).prepare_ns = if call.target_created_ns != 0 {
            call.target_created_ns.saturating_sub(call.start_ns)
        } else {
            f.latency_ns
        };
        (*ev).fsync_ns = call.fsync_ns;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).file_size = f.file.size;
        (*ev).ret = f.ret;
        (*ev).overlay_dev = f.file.dev;
        (*ev).lower_layer = f.file.lower_layer;
        (*ev).lower_count = f.file.lower_count;
        (*ev)._pad2 = [0; 4];
        (*ev).pid = (f.pid_tgid >> 32) as u32;
        (*ev).tid = f.pid_tgid as u32;
        (*ev).dirs_created = call.dirs_created;
        (*ev).files_created = call.files_created;
        (*ev).dfd = call.dfd;
        (*ev).trigger = f.trigger;
        (*ev).source = f.source;
        (*ev).names_from_dentry = 0;
        (*ev).path[0] = 0;
        (*ev).path_len = 0;
        (*ev).components = 0;
        (*ev).path_complete = 0;
        // The function backends' subject is the dentry; the tracepoint
        // backend's a user path, unless it reached the file by an fd.
        let dentry = if f.source == source::COPY_UP_FN {
            call.subject
        } else {
            f.file.dentry
        };
        if dentry != 0 {
            let len = core::ptr::addr_of_mut!((*ev).path_len);
            let (names, complete) = dentry_path(g, dentry, &mut (*ev).path, len);
            (*ev).components = names;
            (*ev).path_complete = complete as u8;
            (*ev).names_from_dentry = 1;
        } else if call.subject != 0 {
            let read = bpf_probe_read_user_str_bytes(call.subject as *const u8, &mut (*ev).path);
            if let Ok(p) = read {
                (*ev).path_len = p.len() as u16;
                (*ev).path_complete = (p.len() < PATH_CAPTURE - 1) as u8;
            }
        }
        // SAFETY: helper with no arguments.
        let now = bpf_ktime_get_ns();
        (*ev).probe_ns = now.saturating_sub(call.start_ns + f.latency_ns);
    }
    // Wake the reader only once a batch is queued: a wakeup per event
    // cost ~10 us here (most of a report); the reader also drains the ring
    // on a short timer, so a lone event still arrives promptly.
    let queued = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    entry.submit(if queued >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    });
}

/// The always-on view: one log2 latency slot up in the per-CPU histogram
/// of the call's trigger, size class and ancestor count.
#[inline(always)]
fn count(f: &Finished, ancestors: u32) {
    let key = HistKey {
        trigger: f.trigger,
        size_log2: if f.file.size >= 0 {
            log2_floor(f.file.size as u64) as u8
        } else {
            SIZE_UNKNOWN
        },
        ancestors: if ancestors > 255 {
            255
        } else {
            ancestors as u8
        },
        _pad: 0,
    };
    if HIST.get_ptr_mut(key).is_none() {
        if let Some(zero) = ZERO_HIST.get(0) {
            let _ = HIST.insert(key, zero, 0);
        }
    }
    if let Some(hist) = HIST.get_ptr_mut(key) {
        let slot = log2_floor(f.latency_ns) as usize;
        if slot < strata_common::LOG2_SLOTS {
            // SAFETY: per-CPU value of this CPU; index bounds-checked above.
            unsafe { (*hist).slots[slot] += 1 };
        }
    }
}
