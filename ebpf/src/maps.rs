//! The maps shared with user space. Names are the contract with
//! `profiler/src/probes.rs`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use strata_common::{
    counter, CopyUpEvent, HistKey, InFlight, Log2Hist, SyscallSpec, VfsCall, VfsKey, MAX_SYSCALL_NR,
};

/// Syscall number -> how to read it; filled by user space.
#[map]
pub static TRIGGERS: Array<SyscallSpec> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// Thread id -> the watched call it is in.
#[map]
pub static INFLIGHT: HashMap<u32, InFlight> = HashMap::with_max_entries(16384, 0);

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
strata_common::named!(strata_common::names::map::HIST, HIST);
strata_common::named!(strata_common::names::map::ZERO_HIST, ZERO_HIST);
strata_common::named!(strata_common::names::map::COUNTERS, COUNTERS);
strata_common::named!(strata_common::names::map::EVENTS, EVENTS);
strata_common::named!(strata_common::names::map::VFS_OPS, VFS_OPS);
strata_common::named!(strata_common::names::map::VFS_INFLIGHT, VFS_INFLIGHT);
strata_common::named!(strata_common::names::map::VFS_HIST, VFS_HIST);
