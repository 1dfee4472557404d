//! The fsync part of a copy-up: overlayfs fsyncs the new upper file
//! (unless the mount is volatile) before moving it into place. Where the
//! upper filesystem traces its fsync (ext4:ext4_sync_file_enter/exit),
//! the time in it is added to the call in flight. Attached only where
//! those tracepoints exist; elsewhere the part stays 0.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::maps::in_flight;

#[tracepoint]
pub fn strata_fsync_enter(_ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(call) = in_flight(tid) {
        // SAFETY: this thread's own entry, used only by this thread.
        unsafe { (*call).fsync_start_ns = bpf_ktime_get_ns() };
    }
    0
}

#[tracepoint]
pub fn strata_fsync_exit(_ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(call) = in_flight(tid) {
        // SAFETY: this thread's own entry, used only by this thread.
        unsafe {
            if (*call).fsync_start_ns != 0 {
                (*call).fsync_ns += bpf_ktime_get_ns().saturating_sub((*call).fsync_start_ns);
                (*call).fsync_start_ns = 0;
            }
        }
    }
    0
}

// Each program spells the name user space loads it by.
strata_common::named!(
    strata_common::names::program::FSYNC_ENTER,
    strata_fsync_enter
);
strata_common::named!(strata_common::names::program::FSYNC_EXIT, strata_fsync_exit);
