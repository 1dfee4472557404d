//! The `--vfs` view: open, read, write and fsync latency, split by what
//! backs the file (a lower layer, the writable layer, or no overlay at
//! all), and for opens of lower-backed files by how deep the file lives.
//! Only in-kernel log2 histograms: these calls are far too many to stream.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use strata_common::{log2_floor, vfs_op, VfsCall, VfsKey, LOG2_SLOTS, SYSCALL_ARGS_OFFSET};

use crate::kernel::{fd_backing, Globals};
use crate::maps::{VFS_HIST, VFS_INFLIGHT, VFS_OPS, ZERO_HIST};

#[tracepoint]
pub fn strata_vfs_enter(ctx: TracePointContext) -> u32 {
    let _ = try_enter(&ctx);
    0
}

fn try_enter(ctx: &TracePointContext) -> Result<(), i64> {
    let nr = crate::kernel::syscall_nr(ctx);
    let op = match VFS_OPS.get(nr as u32) {
        Some(op) if *op != 0 => *op,
        _ => return Ok(()),
    };
    let Some(pid_tgid) = crate::kernel::passes_filters() else {
        return Ok(());
    };
    // read/write/pread/pwrite/fsync/fdatasync take the fd first; an open's
    // fd is its return value.
    let fd: i64 = if op == vfs_op::OPEN {
        -1
    } else {
        // SAFETY: syscall tracepoints carry their args from
        // SYSCALL_ARGS_OFFSET on (checked in user space).
        unsafe { ctx.read_at(SYSCALL_ARGS_OFFSET)? }
    };
    let call = VfsCall {
        // SAFETY: helper with no arguments.
        start_ns: unsafe { bpf_ktime_get_ns() },
        fd,
        op,
        _pad: [0; 7],
    };
    let _ = VFS_INFLIGHT.insert(pid_tgid as u32, call, 0);
    Ok(())
}

#[tracepoint]
pub fn strata_vfs_exit(ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = try_exit(&ctx, tid);
    let _ = VFS_INFLIGHT.remove(tid);
    0
}

fn try_exit(ctx: &TracePointContext, tid: u32) -> Result<(), i64> {
    let Some(call) = VFS_INFLIGHT.get_ptr(tid) else {
        return Ok(());
    };
    // SAFETY: this thread's own entry, removed only after we return.
    let call = unsafe { *call };
    // SAFETY: helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let g = Globals::load();
    let ret = crate::kernel::syscall_ret(ctx);
    if ret < 0 || g.offsets_valid() == 0 {
        return Ok(());
    }
    let fd = if call.op == vfs_op::OPEN {
        ret
    } else {
        call.fd
    };
    let Some((backing, layer)) = fd_backing(&g, fd as u32) else {
        return Ok(());
    };
    let key = VfsKey {
        op: call.op,
        backing,
        layer: if call.op == vfs_op::OPEN { layer } else { 0 },
        _pad: 0,
    };
    if VFS_HIST.get_ptr_mut(key).is_none() {
        if let Some(zero) = ZERO_HIST.get(0) {
            let _ = VFS_HIST.insert(key, zero, 0);
        }
    }
    if let Some(h) = VFS_HIST.get_ptr_mut(key) {
        let slot = log2_floor(now.saturating_sub(call.start_ns)) as usize;
        if slot < LOG2_SLOTS {
            // SAFETY: per-CPU value of this CPU; index bounds-checked above.
            unsafe { (*h).slots[slot] += 1 };
        }
    }
    Ok(())
}

// Each program spells the name user space loads it by.
strata_common::named!(strata_common::names::program::VFS_ENTER, strata_vfs_enter);
strata_common::named!(strata_common::names::program::VFS_EXIT, strata_vfs_exit);
