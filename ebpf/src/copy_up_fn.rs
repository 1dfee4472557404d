//! The precise backends: fentry/fexit (or kprobe/kretprobe) on overlayfs's
//! copy-up function time the copy itself, inside a call the syscall
//! tracepoints are already tracking. The function is attached by name,
//! which user space checks in BTF and kallsyms first.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};

use crate::maps::INFLIGHT;

#[fentry(function = "ovl_copy_up_flags")]
pub fn strata_fentry_copy_up(_ctx: FEntryContext) -> u32 {
    enter();
    0
}

#[fexit(function = "ovl_copy_up_flags")]
pub fn strata_fexit_copy_up(_ctx: FExitContext) -> u32 {
    exit();
    0
}

#[kprobe]
pub fn strata_kprobe_copy_up(_ctx: ProbeContext) -> u32 {
    enter();
    0
}

#[kretprobe]
pub fn strata_kretprobe_copy_up(_ctx: RetProbeContext) -> u32 {
    exit();
    0
}

#[inline(always)]
fn enter() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(call) = INFLIGHT.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry, used only by this thread.
        unsafe {
            if (*call).fn_start_ns == 0 {
                (*call).fn_start_ns = bpf_ktime_get_ns();
            }
        }
    }
}

#[inline(always)]
fn exit() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(call) = INFLIGHT.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry, used only by this thread.
        unsafe {
            if (*call).fn_start_ns != 0 {
                (*call).fn_ns += bpf_ktime_get_ns().saturating_sub((*call).fn_start_ns);
                (*call).fn_start_ns = 0;
            }
        }
    }
}

// Each program spells the name user space loads it by.
strata_common::named!(strata_common::names::program::FENTRY_COPY_UP, strata_fentry_copy_up);
strata_common::named!(strata_common::names::program::FEXIT_COPY_UP, strata_fexit_copy_up);
strata_common::named!(strata_common::names::program::KPROBE_COPY_UP, strata_kprobe_copy_up);
strata_common::named!(strata_common::names::program::KRETPROBE_COPY_UP, strata_kretprobe_copy_up);
