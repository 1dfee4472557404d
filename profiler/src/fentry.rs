//! fentry/fexit programs, loaded by strata itself.
//!
//! aya 0.14's `FEntry::load` looks a function up in vmlinux's BTF only. On
//! most distro kernels overlayfs is a module: its functions are in the
//! module's split BTF, and the kernel must be told which BTF object the
//! function's type ID belongs to (`attach_btf_obj_fd`). So the program is
//! taken from the same object aya loaded, relocated against the maps aya
//! created (they hold the globals already), and loaded and attached here
//! with the right BTF object. Built-in functions take the same path, with
//! vmlinux's BTF (no object fd).

use std::collections::HashSet;
use std::ffi::CStr;
use std::mem::zeroed;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Map, MapData};
use aya::Ebpf;
use aya_obj::generated::{
    bpf_attach_type, bpf_btf_info, bpf_cmd, bpf_insn, bpf_prog_info, bpf_prog_type,
};

use crate::btf::Btf;
use crate::sys_bpf::{bpf_fd, fd_by_id, next_id, object_info};

#[derive(Clone, Copy)]
pub enum Hook {
    Entry,
    Exit,
}

/// A loaded and attached program; closing the fds detaches it.
pub struct FnLink {
    pub name: &'static str,
    prog: OwnedFd,
    _link: OwnedFd,
}

impl FnLink {
    /// (runs, total ns) while kernel BPF run-time stats were on.
    pub fn run_stats(&self) -> Result<(u64, u64)> {
        // SAFETY: bpf_prog_info is plain integers; all-zero is valid.
        let mut info: bpf_prog_info = unsafe { zeroed() };
        object_info(self.prog.as_fd(), &mut info).context("reading program info")?;
        Ok((info.run_cnt, info.run_time_ns))
    }
}

/// Loads `prog` from `object` to run at entry or exit of kernel
/// function `function`.
pub fn load(
    ebpf: &Ebpf,
    object: &[u8],
    btf: &Btf,
    prog: &str,
    hook: Hook,
    function: &str,
) -> Result<OwnedFd> {
    let (type_id, module) = btf
        .func_id(function)
        .ok_or_else(|| anyhow!("{function} is not in the kernel's BTF"))?;
    let btf_obj = module.map(kernel_btf_object).transpose()?;
    let (insns, license) = relocated(ebpf, object, prog)?;
    let mut attr = ProgLoadAttr {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_TRACING as u32,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: match hook {
            Hook::Entry => bpf_attach_type::BPF_TRACE_FENTRY,
            Hook::Exit => bpf_attach_type::BPF_TRACE_FEXIT,
        } as u32,
        attach_btf_id: type_id,
        attach_btf_obj_fd: btf_obj.as_ref().map_or(0, |fd| fd.as_raw_fd() as u32),
        ..Default::default()
    };
    let name = prog.as_bytes();
    let n = name.len().min(attr.prog_name.len() - 1);
    attr.prog_name[..n].copy_from_slice(&name[..n]);
    let where_ = match module {
        Some(m) => format!("{function} (BTF id {type_id} in module {m})"),
        None => format!("{function} (BTF id {type_id} in vmlinux)"),
    };
    match bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            // Again with the verifier's log, to say why.
            // Large enough for the whole log of a program with bounded loops:
            // before 6.4 the kernel keeps a log's start and drops its end,
            // where the reason is.
            let mut log = vec![0u8; 16 << 20];
            attr.log_level = 1;
            attr.log_buf = log.as_mut_ptr() as u64;
            attr.log_size = log.len() as u32;
            let _ = bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr);
            let text = CStr::from_bytes_until_nul(&log)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            bail!(
                "loading {prog} on {where_}: {e}{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(" (verifier: {})", tail.join(" / "))
                }
            )
        }
    }
}

/// Attaches a loaded fentry/fexit program to the function it was loaded for.
pub fn attach(name: &'static str, prog: OwnedFd) -> Result<FnLink> {
    let mut attr = RawTracepointAttr {
        name: 0,
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
    };
    let link = bpf_fd(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).context("attaching")?;
    Ok(FnLink {
        name,
        prog,
        _link: link,
    })
}

/// `prog`'s instructions from a fresh parse of the object, with map
/// references pointing at the maps aya created for `ebpf`.
fn relocated(ebpf: &Ebpf, object: &[u8], prog: &str) -> Result<(Vec<bpf_insn>, std::ffi::CString)> {
    let mut obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    let fds = ebpf
        .maps()
        .map(|(name, map)| Ok((name.to_string(), map_data(map)?.fd().as_fd().as_raw_fd())))
        .collect::<Result<Vec<(String, RawFd)>>>()?;
    let defs = std::mem::take(&mut obj.maps);
    obj.relocate_maps(
        fds.iter()
            .filter_map(|(name, fd)| defs.get(name).map(|d| (name.as_str(), *fd, d))),
        &text_sections,
    )
    .context("relocating map references")?;
    obj.relocate_calls(&text_sections)
        .context("relocating calls")?;
    let p = obj
        .programs
        .get(prog)
        .ok_or_else(|| anyhow!("the eBPF object has no program {prog}"))?;
    let f = &obj.functions[&p.function_key()];
    Ok((f.instructions.clone(), p.license.clone()))
}

fn map_data(map: &Map) -> Result<&MapData> {
    match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::RingBuf(m)
        | Map::LruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::Unsupported(m) => Ok(m),
        other => bail!("map of unexpected type in the eBPF object: {other:?}"),
    }
}

/// The kernel BTF object of module `module` (`/sys/kernel/btf/<module>`).
fn kernel_btf_object(module: &str) -> Result<OwnedFd> {
    let mut id = 0u32;
    loop {
        id = next_id(bpf_cmd::BPF_BTF_GET_NEXT_ID, id)?
            .ok_or_else(|| anyhow!("no kernel BTF object is named {module}"))?;
        let Ok(fd) = fd_by_id(bpf_cmd::BPF_BTF_GET_FD_BY_ID, id) else {
            continue; // unloaded meanwhile
        };
        let mut name = [0u8; 64];
        // SAFETY: bpf_btf_info is plain integers; all-zero is valid.
        let mut info: bpf_btf_info = unsafe { zeroed() };
        info.name = name.as_mut_ptr() as u64;
        info.name_len = name.len() as u32;
        object_info(fd.as_fd(), &mut info).context("reading a BTF object's name")?;
        let found =
            CStr::from_bytes_until_nul(&name).is_ok_and(|n| n.to_bytes() == module.as_bytes());
        if info.kernel_btf != 0 && found {
            return Ok(fd);
        }
    }
}

/// The uapi `union bpf_attr` members used here, as the kernel lays them
/// out; the kernel accepts a shorter attr than its own.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    core_relo_cnt: u32,
}

#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}
