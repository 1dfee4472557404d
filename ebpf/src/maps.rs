//! The maps shared with user space. Names are the contract with
//! `profiler/src/probes.rs`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use strata_common::{
    counter, CopyUpEvent, HistKey, InFlight, Log2Hist, SyscallSpec, VfsCall, VfsKey,
    INFLIGHT_SLOTS, MAX_SYSCALL_NR,
};

/// Syscall number -> how to read it; filled by user space.
#[map]
pub static TRIGGERS: Array<SyscallSpec> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Thread id modulo INFLIGHT_SLOTS -> the watched call that thread is in.
/// An array, not a hash: a hash insert and delete on every watched call
/// cost ~480 ns here, more than everything else the tracepoint backend
/// does per call; an array slot is an inlined lookup and a store.
#[map]
pub static INFLIGHT: Array<InFlight> = Array::with_max_entries(INFLIGHT_SLOTS, 0);

/// Thread id -> the watched call it is in, for a thread whose slot was
/// taken by another thread in flight (their ids share the remainder).
#[map]
pub static INFLIGHT_SPILL: HashMap<u32, InFlight> = HashMap::with_max_entries(4096, 0);

/// Starts tracking `state` as thread `state.tid`'s call, and counts it
/// as watched, or as lost when neither its slot nor the spill table had
/// room.
#[inline(always)]
pub fn begin(state: &InFlight) {
    bump(if claim(state) {
        counter::WATCHED_CALLS
    } else {
        counter::INFLIGHT_FULL
    });
}

#[inline(always)]
fn claim(state: &InFlight) -> bool {
    let Some(slot) = INFLIGHT.get_ptr_mut(state.tid % INFLIGHT_SLOTS) else {
        return false;
    };
    // SAFETY: a slot is written by the thread whose id it holds, or by
    // the one claiming it while it is free. (Two threads claiming one
    // free slot at the same instant: the later wins, the other call goes
    // untracked; their ids would have to share the remainder and their
    // syscalls start together.)
    unsafe {
        if (*slot).tid == 0 || (*slot).tid == state.tid {
            let spilled = (*slot).spilled;
            *slot = *state;
            (*slot).spilled = spilled;
            return true;
        }
        if INFLIGHT_SPILL.insert(state.tid, state, 0).is_err() {
            return false;
        }
        (*slot).spilled = 1;
    }
    true
}

/// The call thread `tid` is in, if it is tracked. Most threads asking are
/// in no watched call (the exit of a read-only open): one inlined array
/// lookup answers them, unless a spill ever went through their slot.
#[inline(always)]
pub fn in_flight(tid: u32) -> Option<*mut InFlight> {
    let slot = INFLIGHT.get_ptr_mut(tid % INFLIGHT_SLOTS)?;
    // SAFETY: reading a slot of the array.
    let (owner, spilled) = unsafe { ((*slot).tid, (*slot).spilled) };
    if owner == tid {
        Some(slot)
    } else if spilled != 0 {
        INFLIGHT_SPILL.get_ptr_mut(tid)
    } else {
        None
    }
}

/// Stops tracking thread `tid`'s call `call` (from `in_flight`).
#[inline(always)]
pub fn end(tid: u32, call: *mut InFlight) {
    // SAFETY: `call` came from in_flight(tid) in this program run.
    unsafe {
        if (*call).tid == tid && INFLIGHT.get_ptr_mut(tid % INFLIGHT_SLOTS) == Some(call) {
            (*call).tid = 0;
            return;
        }
    }
    let _ = INFLIGHT_SPILL.remove(tid);
}

/// The always-on view: latency log2 histograms per key, per CPU.
#[map]
pub static HIST: PerCpuHashMap<HistKey, Log2Hist> = PerCpuHashMap::with_max_entries(4096, 0);

/// An all-zero histogram to initialise new `HIST` keys from.
#[map]
pub static ZERO_HIST: PerCpuArray<Log2Hist> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// One record per copy-up, for exact percentiles in user space.
#[map]
pub static EVENTS: RingBuf =
    RingBuf::with_byte_size((4096 * core::mem::size_of::<CopyUpEvent>()) as u32, 0);

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot of the running CPU; no concurrent writer.
        unsafe { *c += 1 };
    }
}

/// Syscall number -> strata_common::vfs_op for the --vfs view (0: none).
#[map]
pub static VFS_OPS: Array<u8> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Thread id -> the VFS call it is in.
#[map]
pub static VFS_INFLIGHT: HashMap<u32, VfsCall> = HashMap::with_max_entries(16384, 0);

/// VFS latency log2 histograms per (op, backing, layer), per CPU.
#[map]
pub static VFS_HIST: PerCpuHashMap<VfsKey, Log2Hist> = PerCpuHashMap::with_max_entries(1024, 0);

// Each map's static spells the name user space looks it up by.
strata_common::named!(strata_common::names::map::TRIGGERS, TRIGGERS);
strata_common::named!(strata_common::names::map::INFLIGHT, INFLIGHT);
strata_common::named!(strata_common::names::map::INFLIGHT_SPILL, INFLIGHT_SPILL);
strata_common::named!(strata_common::names::map::HIST, HIST);
strata_common::named!(strata_common::names::map::ZERO_HIST, ZERO_HIST);
strata_common::named!(strata_common::names::map::COUNTERS, COUNTERS);
strata_common::named!(strata_common::names::map::EVENTS, EVENTS);
strata_common::named!(strata_common::names::map::VFS_OPS, VFS_OPS);
strata_common::named!(strata_common::names::map::VFS_INFLIGHT, VFS_INFLIGHT);
strata_common::named!(strata_common::names::map::VFS_HIST, VFS_HIST);
