//! The floor the tracepoint backend is measured against (`cargo xtask
//! bench`, overhead group): a program that returns at once, attached to
//! the same tracepoints. What the backend costs above it is strata's own;
//! the floor itself is the kernel's price for running any program there.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint]
pub fn strata_floor(_ctx: TracePointContext) -> u32 {
    0
}

// The program spells the name user space loads it by.
strata_common::named!(strata_common::names::program::FLOOR, strata_floor);
