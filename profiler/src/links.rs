//! What the kernel has attached: every BPF link, the program behind it,
//! and for a tracepoint link the tracepoint's name. The proof that a
//! backend attaches no syscall tracepoint reads this, not strata's own
//! bookkeeping.

use std::ffi::CStr;
use std::mem::zeroed;
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use aya_obj::generated::{bpf_cmd, bpf_prog_info};
use serde::Serialize;

use crate::sys_bpf::{fd_by_id, next_id, object_info};

#[derive(Clone, Debug, Serialize)]
pub struct KernelLink {
    pub link_id: u32,
    /// `enum bpf_link_type` (7: perf event, 2: tracing, 1: raw tracepoint).
    pub link_type: u32,
    /// The program's name as the kernel keeps it (at most 15 bytes).
    pub program: String,
    /// `enum bpf_prog_type` (5: tracepoint, 2: kprobe, 26: tracing).
    pub program_type: u32,
    /// The tracepoint a perf-event link feeds, where the kernel says
    /// (6.6 and later); None for other links and on older kernels.
    pub tracepoint: Option<String>,
}

/// `bpf_link_info`'s fixed head and the perf-event member of its union
/// (uapi; the union starts at byte 16), padded past the largest union
/// member a 6.1 kernel knows so that its zero-tail check passes.
#[repr(C)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    perf_event_type: u32,
    _pad2: u32,
    tp_name: u64,
    name_len: u32,
    _rest: [u32; 7],
}

/// `enum bpf_perf_event_type`'s tracepoint value.
const BPF_PERF_EVENT_TRACEPOINT: u32 = 5;

/// Every link attached in the kernel now.
pub fn kernel_links() -> Result<Vec<KernelLink>> {
    let mut out = Vec::new();
    let mut id = 0;
    while let Some(next) = next_id(bpf_cmd::BPF_LINK_GET_NEXT_ID, id)? {
        id = next;
        let Ok(fd) = fd_by_id(bpf_cmd::BPF_LINK_GET_FD_BY_ID, id) else {
            continue; // detached meanwhile
        };
        let mut name = [0u8; 128];
        // SAFETY: LinkInfo is plain integers; all-zero is valid.
        let mut info: LinkInfo = unsafe { zeroed() };
        info.tp_name = name.as_mut_ptr() as u64;
        info.name_len = name.len() as u32;
        object_info(fd.as_fd(), &mut info).context("reading a link's info")?;
        // Kernels before 6.6 fill nothing past prog_id for perf links: the
        // type we zeroed stays 0 and the name unknown.
        let tracepoint = (info.perf_event_type == BPF_PERF_EVENT_TRACEPOINT)
            .then(|| c_string(&name))
            .flatten();
        let (program, program_type) = program_of(info.prog_id).unwrap_or_default();
        out.push(KernelLink {
            link_id: id,
            link_type: info.link_type,
            program,
            program_type,
            tracepoint,
        });
    }
    Ok(out)
}

/// The name and type of program `id`, or None if it went away.
fn program_of(id: u32) -> Option<(String, u32)> {
    let fd = fd_by_id(bpf_cmd::BPF_PROG_GET_FD_BY_ID, id).ok()?;
    // SAFETY: bpf_prog_info is plain integers; all-zero is valid.
    let mut info: bpf_prog_info = unsafe { zeroed() };
    object_info(fd.as_fd(), &mut info).ok()?;
    let name: Vec<u8> = info.name.iter().map(|c| *c as u8).collect();
    Some((c_string(&name).unwrap_or_default(), info.type_))
}

fn c_string(bytes: &[u8]) -> Option<String> {
    CStr::from_bytes_until_nul(bytes)
        .ok()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}
