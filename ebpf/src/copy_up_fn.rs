//! The copy-up function backends: fentry/fexit (or kprobe/kretprobe) on
//! overlayfs's copy-up function, and nothing on any syscall. The call in
//! flight is the function's own: it starts at entry, the inode-creation
//! tracepoint counts what it creates (ancestor directories first), and at
//! exit a call that created something is reported, timed entry to exit.
//! Everything else comes from the dentry being copied up (path, size,
//! overlay device) and the current task (trigger, from its syscall
//! number; `kernel` for a kernel thread). Offsets come from BTF.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use strata_common::{source, InFlight};

use crate::kernel::{current_trigger, dentry_facts, passes_filters, Globals};
use crate::maps;
use crate::report::{self, Finished};

#[fentry(function = "ovl_copy_up_flags")]
pub fn strata_fentry_copy_up(ctx: FEntryContext) -> u32 {
    // ovl_copy_up_flags(struct dentry *dentry, int flags)
    enter(ctx.arg::<*const c_void>(0) as u64);
    0
}

#[fexit(function = "ovl_copy_up_flags")]
pub fn strata_fexit_copy_up(ctx: FExitContext) -> u32 {
    // The return value follows the two arguments.
    exit(ctx.arg::<i32>(2) as i64);
    0
}

#[kprobe]
pub fn strata_kprobe_copy_up(ctx: ProbeContext) -> u32 {
    if let Some(dentry) = ctx.arg::<*const c_void>(0) {
        enter(dentry as u64);
    }
    0
}

#[kretprobe]
pub fn strata_kretprobe_copy_up(ctx: RetProbeContext) -> u32 {
    exit(ctx.ret::<i32>() as i64);
    0
}

#[inline(always)]
fn enter(dentry: u64) {
    let Some(pid_tgid) = passes_filters() else {
        return;
    };
    // SAFETY: helper with no arguments.
    let start_ns = unsafe { bpf_ktime_get_ns() };
    maps::begin(&InFlight::new(start_ns, pid_tgid as u32, dentry));
}

#[inline(always)]
fn exit(ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(ptr) = maps::in_flight(tid) else {
        return;
    };
    // SAFETY: this thread's own entry; released only after this.
    let call = unsafe { &*ptr };
    if call.dirs_created != 0 || call.files_created != 0 {
        // SAFETY: helper with no arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        let g = Globals::load();
        let done = Finished {
            latency_ns: now.saturating_sub(call.start_ns),
            ret,
            file: dentry_facts(&g, call.subject),
            pid_tgid,
            trigger: current_trigger(&g),
            source: source::COPY_UP_FN,
        };
        report::copy_up(&g, call, &done);
    }
    maps::end(tid, ptr);
}

// Each program spells the name user space loads it by.
strata_common::named!(
    strata_common::names::program::FENTRY_COPY_UP,
    strata_fentry_copy_up
);
strata_common::named!(
    strata_common::names::program::FEXIT_COPY_UP,
    strata_fexit_copy_up
);
strata_common::named!(
    strata_common::names::program::KPROBE_COPY_UP,
    strata_kprobe_copy_up
);
strata_common::named!(
    strata_common::names::program::KRETPROBE_COPY_UP,
    strata_kretprobe_copy_up
);
