//! strata's kernel programs. The tracepoint backend lives here; the
//! copy-up function backends (fentry, kprobe) in `copy_up_fn`.
//!
//! Tracepoint backend: a watched syscall (one that can make overlayfs copy
//! a file up) records its thread at entry. While it runs, every inode the
//! kernel creates in that thread is seen through
//! `writeback:writeback_dirty_inode_enqueue` with `I_NEW` set: that is
//! overlayfs creating the copy in the upper filesystem (directories first,
//! for missing ancestors). At exit a call that created something is a
//! copy-up, reported by `report::copy_up`.
#![no_std]
#![no_main]

mod copy_up_fn;
mod floor;
mod fsync;
mod kernel;
mod maps;
mod report;
mod vfs;

use aya_ebpf::EbpfContext;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use strata_common::{source, InFlight, Trigger, SYSCALL_ARGS_OFFSET};

use kernel::{Globals, InodeFacts};
use maps::TRIGGERS;
use report::Finished;

// uapi constants, identical on every Linux architecture strata supports.
const O_ACCMODE: u64 = 0o3;
const O_TRUNC: u64 = 0o1000;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
const S_IFCHR: u16 = 0o020000;
const AT_FDCWD: i32 = -100;

#[tracepoint]
pub fn strata_sys_enter(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter(&ctx);
    0
}

fn try_sys_enter(ctx: &TracePointContext) -> Result<(), i64> {
    let nr = kernel::syscall_nr(ctx);
    if nr < 0 {
        return Ok(());
    }
    let spec = match TRIGGERS.get(nr as u32) {
        Some(s) if s.trigger != 0 => *s,
        _ => return Ok(()),
    };
    let Some(pid_tgid) = kernel::passes_filters() else {
        return Ok(());
    };
    // All six argument slots in one read: each helper call costs more than
    // the bytes it copies.
    // SAFETY: syscall tracepoints carry six 8-byte args from
    // SYSCALL_ARGS_OFFSET on (checked against the format file in user space).
    let args: [u64; 6] = unsafe { ctx.read_at(SYSCALL_ARGS_OFFSET)? };
    let arg = |i: i8| -> Result<u64, i64> { args.get(i as usize).copied().ok_or(0) };
    // Only an open for writing (or truncating) can copy up.
    let mut open_flags = None;
    if spec.flags_arg >= 0 {
        open_flags = Some(arg(spec.flags_arg)?);
    } else if spec.how_arg >= 0 {
        // struct open_how starts with `__u64 flags`.
        // SAFETY: reading user memory through the helper, which checks it.
        open_flags = Some(unsafe { bpf_probe_read_user(arg(spec.how_arg)? as *const u64)? });
    }
    if open_flags.is_some_and(|flags| !opens_for_writing(flags)) {
        return Ok(());
    }
    let dfd = if spec.dfd_arg >= 0 {
        arg(spec.dfd_arg)? as i32
    } else {
        AT_FDCWD
    };
    let path = if spec.path_arg >= 0 {
        arg(spec.path_arg)?
    } else {
        0
    };
    track(nr, spec.trigger, pid_tgid, dfd, path);
    Ok(())
}

/// openat(dfd, path, flags, mode) alone: the watched syscall nearly every
/// program makes, most often to read. Its arguments are loaded straight
/// from the record (its four are all there, so constant offsets pass the
/// verifier), and a read-only open returns before anything else is done.
#[tracepoint]
pub fn strata_sys_enter_openat(ctx: TracePointContext) -> u32 {
    let arg = |i: usize| -> u64 {
        // SAFETY: a constant offset inside sys_enter_openat's record.
        unsafe {
            *(ctx.as_ptr() as *const u8)
                .add(SYSCALL_ARGS_OFFSET + 8 * i)
                .cast::<u64>()
        }
    };
    if !opens_for_writing(arg(2)) {
        return 0;
    }
    let Some(pid_tgid) = kernel::passes_filters() else {
        return 0;
    };
    let nr = kernel::syscall_nr(&ctx);
    track(
        nr,
        Trigger::OpenWrite as u8,
        pid_tgid,
        arg(0) as i32,
        arg(1),
    );
    0
}

/// Only an open for writing (or truncating) can copy up.
#[inline(always)]
fn opens_for_writing(flags: u64) -> bool {
    flags & O_ACCMODE != 0 || flags & O_TRUNC != 0
}

/// Starts tracking the current thread's watched call.
#[inline(always)]
fn track(nr: i32, trigger: u8, pid_tgid: u64, dfd: i32, path: u64) {
    // SAFETY: helper with no arguments.
    let mut state = InFlight::new(unsafe { bpf_ktime_get_ns() }, pid_tgid as u32, path);
    state.syscall_nr = nr as u32;
    state.dfd = dfd;
    state.trigger = trigger;
    maps::begin(&state);
}

#[tracepoint]
pub fn strata_inode_created(ctx: TracePointContext) -> u32 {
    let _ = try_inode_created(&ctx);
    0
}

fn try_inode_created(ctx: &TracePointContext) -> Result<(), i64> {
    let g = Globals::load();
    // Most enqueued inodes are old ones made dirty, in threads in no
    // watched call: I_NEW first, one read, before any table lookup.
    // SAFETY: the offset comes from this tracepoint's format file.
    let state: u64 = unsafe { ctx.read_at(g.wb_state_off() as usize)? };
    if state & g.i_new() == 0 {
        return Ok(());
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(call) = maps::in_flight(tid) else {
        return Ok(());
    };
    // SAFETY: as above.
    let mode: u16 = unsafe { ctx.read_at(g.wb_mode_off() as usize)? };
    // SAFETY: the entry belongs to this thread, which is running this program.
    let call = unsafe { &mut *call };
    match mode & S_IFMT {
        S_IFDIR => call.dirs_created += 1,
        // A 0/0 char device is a whiteout (rename, unlink), not a copy.
        S_IFCHR => {}
        _ => {
            call.files_created += 1;
            if call.target_created_ns == 0 {
                // SAFETY: helper with no arguments.
                call.target_created_ns = unsafe { bpf_ktime_get_ns() };
            }
        }
    }
    Ok(())
}

#[tracepoint]
pub fn strata_sys_exit(ctx: TracePointContext) -> u32 {
    sys_exit::<true>(&ctx)
}

/// strata_sys_exit without the dentry walk, for kernels whose verifier
/// gives up on the walk inside it (6.1 gives E2BIG): a file reached by fd
/// then has its layers and size, but no path.
#[tracepoint]
pub fn strata_sys_exit_no_walk(ctx: TracePointContext) -> u32 {
    sys_exit::<false>(&ctx)
}

#[inline(always)]
fn sys_exit<const WALK: bool>(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // Most exits (a read-only open, a filtered-out process) have no entry:
    // one lookup, not a lookup and a delete.
    let Some(call) = maps::in_flight(tid) else {
        return 0;
    };
    // SAFETY: this thread's own entry; released only after this.
    let _ = try_sys_exit::<WALK>(ctx, unsafe { &*call }, pid_tgid);
    maps::end(tid, call);
    0
}

#[inline(always)]
fn try_sys_exit<const WALK: bool>(
    ctx: &TracePointContext,
    call: &InFlight,
    pid_tgid: u64,
) -> Result<(), i64> {
    if call.dirs_created == 0 && call.files_created == 0 {
        return Ok(());
    }
    // SAFETY: helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let g = Globals::load();
    let ret = kernel::syscall_ret(ctx);
    let mut done = Finished {
        latency_ns: now.saturating_sub(call.start_ns),
        ret,
        file: InodeFacts {
            dev: 0,
            dentry: 0,
            size: -1,
            lower_layer: 0,
            lower_count: 0,
        },
        pid_tgid,
        trigger: call.trigger,
        source: source::SYSCALL,
    };
    // The file is reachable where the call returned an fd to it (an open)
    // or was given one (fchmod, ftruncate, ...: `dfd` holds it then).
    let spec = TRIGGERS.get(call.syscall_nr);
    let returns_fd = spec.is_some_and(|s| s.returns_fd != 0);
    let fd = if returns_fd {
        (ret >= 0).then_some(ret as u32)
    } else {
        spec.filter(|s| s.path_arg < 0 && s.dfd_arg >= 0 && call.dfd >= 0)
            .map(|_| call.dfd as u32)
    };
    if let Some(fd) = fd.filter(|_| g.offsets_valid() != 0) {
        if let Some((magic, file)) = kernel::fd_facts(&g, fd) {
            if magic != g.overlay_magic() {
                // An O_CREAT of a new file on a plain filesystem (or a
                // copy-up's side effect elsewhere): not ours.
                return Ok(());
            }
            done.file = file;
            if !WALK {
                done.file.dentry = 0;
            }
        }
    }
    report::copy_up(&g, call, &done);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// Each program spells the name user space loads it by.
strata_common::named!(strata_common::names::program::SYS_ENTER, strata_sys_enter);
strata_common::named!(
    strata_common::names::program::SYS_ENTER_OPENAT,
    strata_sys_enter_openat
);
strata_common::named!(
    strata_common::names::program::INODE_CREATED,
    strata_inode_created
);
strata_common::named!(strata_common::names::program::SYS_EXIT, strata_sys_exit);
strata_common::named!(
    strata_common::names::program::SYS_EXIT_NO_WALK,
    strata_sys_exit_no_walk
);
