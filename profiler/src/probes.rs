//! Loading strata's eBPF object and attaching the tracepoint backend.
//!
//! Every offset the kernel programs use is resolved here, from BTF and the
//! tracepoint format files, and written into the object's globals.

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::{KProbe, TracePoint};
use aya::{Ebpf, EbpfLoader};
use strata_common::names::{map, program, GlobalValues};
use strata_common::{
    counter, HistKey, Log2Hist, SyscallSpec, VfsKey, MAX_SYSCALL_NR, SYSCALL_ARGS_OFFSET,
    SYSCALL_NR_OFFSET, SYSCALL_RET_OFFSET,
};

use crate::backend::Backend;
use crate::btf::Btf;
use crate::fentry::{self, FnLink, Hook};
use crate::syscalls;
use crate::tracefs::{self, Format};

/// The compiled kernel programs (built by build.rs from ebpf/).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strata-ebpf.o"));

/// overlayfs's superblock magic (uapi <linux/magic.h>).
const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

/// The tracepoint that shows each new inode with its state and mode.
const INODE_TP: (&str, &str) = ("writeback", "writeback_dirty_inode_enqueue");

pub fn object() -> Result<&'static [u8]> {
    if OBJECT.is_empty() {
        bail!(
            "this strata-prof was built with STRATA_SKIP_EBPF=1 and carries no eBPF programs; \
             rebuild it without that variable (after `cargo xtask setup`)"
        );
    }
    Ok(OBJECT)
}

/// In-kernel filters (0 = off).
#[derive(Clone, Copy, Debug, Default)]
pub struct Filters {
    pub tgid: u32,
    pub cgroup_id: u64,
}

/// strata's probes, loaded and attached. Dropping this detaches every
/// program (aya owns the links), on panic too.
pub struct Probes {
    ebpf: Ebpf,
    pub backend: Backend,
    /// Syscalls whose tracepoints were attached (none on the copy-up
    /// function backends).
    pub attached: Vec<&'static str>,
    /// Watched syscalls this kernel has no tracepoint for.
    pub missing: Vec<&'static str>,
    /// Whether the upper filesystem's fsync is traced (copy-up fsync part).
    pub fsync_traced: bool,
    /// The fentry backend's programs, loaded outside aya (see fentry.rs).
    fn_links: Vec<FnLink>,
    /// The tracepoint backend names a file it reached by fd by its dentry
    /// chain; false where the verifier refused that walk at syscall exit.
    pub exit_walks: bool,
}

/// Offsets resolved from the running kernel.
#[derive(Debug)]
pub struct Layout {
    /// writeback_dirty_inode_enqueue's state and mode fields.
    pub wb: [u32; 2],
    pub i_new: u64,
    /// task.files, files.fdt, fdt.max_fds, fdt.fd, file.f_inode, inode.i_sb,
    /// inode.i_size, sb.s_magic, sb.s_dev; None when BTF lacks one of them.
    pub fd_chain: Option<[u32; 9]>,
    /// What the copy-up function backends read; None when BTF lacks it.
    pub fn_chain: Option<FnChain>,
    /// Where a lower-backed overlay inode's layer index is; None where BTF
    /// lacks overlay's types.
    pub ovl_chain: Option<OvlChain>,
}

/// ovl_inode -> its lower ovl_path -> ovl_layer.idx. The path moved
/// between kernels: inline `ovl_inode.lowerpath` on 6.0-6.4, the first
/// of `ovl_inode.oe->__lowerstack` since 6.5.
#[derive(Clone, Copy, Debug, Default)]
pub struct OvlChain {
    pub vfs_inode: u32,
    pub upper: u32,
    pub lower_inline: bool,
    pub lower: u32,
    pub lowerstack: u32,
    pub path_layer: u32,
    pub layer_idx: u32,
    /// ovl_entry.__numlower (6.5+; 0 where the lower path is inline).
    pub numlower: u32,
    pub sb_fs_info: u32,
    pub numlayer: u32,
}

/// The copy-up function backends' view: the dentry being copied up (its
/// parent, name, inode and superblock) and the current task (its flags,
/// and the syscall number in its saved registers).
#[derive(Clone, Copy, Debug, Default)]
pub struct FnChain {
    pub dentry_parent: u32,
    /// d_name.name: the qstr's name pointer inside the dentry.
    pub dentry_name: u32,
    pub dentry_inode: u32,
    pub dentry_sb: u32,
    pub task_flags: u32,
    pub regs_syscall_nr: u32,
    /// file.f_path.dentry, for the tracepoint backend's walk of a file it
    /// reached through an fd.
    pub file_dentry: u32,
}

impl FnChain {
    fn resolve(btf: &Btf) -> Result<FnChain, crate::btf::BtfError> {
        // x86-64 saves the syscall number as orig_ax, arm64 as syscallno.
        let nr = btf
            .member_offset("pt_regs", "orig_ax")
            .or_else(|_| btf.member_offset("pt_regs", "syscallno"))?;
        Ok(FnChain {
            dentry_parent: btf.member_offset("dentry", "d_parent")?,
            dentry_name: btf.member_offset("dentry", "d_name")?
                + btf.member_offset("qstr", "name")?,
            dentry_inode: btf.member_offset("dentry", "d_inode")?,
            dentry_sb: btf.member_offset("dentry", "d_sb")?,
            task_flags: btf.member_offset("task_struct", "flags")?,
            regs_syscall_nr: nr,
            file_dentry: btf.member_offset("file", "f_path")?
                + btf.member_offset("path", "dentry")?,
        })
    }
}

impl OvlChain {
    fn resolve(btf: &Btf) -> Result<OvlChain, crate::btf::BtfError> {
        let (lower_inline, lower, lowerstack, numlower) = match btf.member_offset("ovl_inode", "oe")
        {
            Ok(oe) => (
                false,
                oe,
                btf.member_offset("ovl_entry", "__lowerstack")?,
                btf.member_offset("ovl_entry", "__numlower")?,
            ),
            Err(_) => (true, btf.member_offset("ovl_inode", "lowerpath")?, 0, 0),
        };
        Ok(OvlChain {
            vfs_inode: btf.member_offset("ovl_inode", "vfs_inode")?,
            upper: btf.member_offset("ovl_inode", "__upperdentry")?,
            lower_inline,
            lower,
            lowerstack,
            path_layer: btf.member_offset("ovl_path", "layer")?,
            layer_idx: btf.member_offset("ovl_layer", "idx")?,
            numlower,
            sb_fs_info: btf.member_offset("super_block", "s_fs_info")?,
            numlayer: btf.member_offset("ovl_fs", "numlayer")?,
        })
    }
}

pub fn resolve_layout(btf: &Btf) -> Result<Layout> {
    let wb = Format::read(INODE_TP.0, INODE_TP.1)?;
    // A #define on older kernels (its value is in the format file), an enum
    // constant on newer ones (its value is in BTF).
    let i_new = match wb.flag_expr("I_NEW").and_then(crate::tracefs::eval_flag) {
        Some(v) => v,
        None => match btf.enum_value("I_NEW") {
            Some(v) => v as u64,
            None => {
                1u64 << btf.enum_value("__I_NEW").ok_or_else(|| {
                    anyhow!("neither the tracepoint format nor BTF gives I_NEW's value")
                })?
            }
        },
    };
    let fd_chain = (|| -> Result<[u32; 9], crate::btf::BtfError> {
        Ok([
            btf.member_offset("task_struct", "files")?,
            btf.member_offset("files_struct", "fdt")?,
            btf.member_offset("fdtable", "max_fds")?,
            btf.member_offset("fdtable", "fd")?,
            btf.member_offset("file", "f_inode")?,
            btf.member_offset("inode", "i_sb")?,
            btf.member_offset("inode", "i_size")?,
            btf.member_offset("super_block", "s_magic")?,
            btf.member_offset("super_block", "s_dev")?,
        ])
    })()
    .ok();
    let ovl_chain = OvlChain::resolve(btf).ok();
    let fn_chain = FnChain::resolve(btf).ok();
    Ok(Layout {
        ovl_chain,
        wb: [wb.offset("state")?, wb.offset("mode")?],
        i_new,
        fd_chain,
        fn_chain,
    })
}

impl Probes {
    /// Loads the object with this kernel's offsets and attaches `backend`.
    /// The tracepoint backend: the watched syscalls' tracepoints. The copy-up
    /// function backends: the function probes and no syscall tracepoint at
    /// all (an attached syscall tracepoint puts every syscall of every task
    /// on the kernel's slow path). Both: the inode-creation tracepoint, and
    /// the upper filesystem's fsync ones where it has them.
    pub fn attach(filters: Filters, backend: Backend, vfs: bool) -> Result<Probes> {
        let (mut ebpf, layout) = load_object(filters)?;
        let traced = backend == Backend::Tracepoint;
        let (watched, missing) = fill_triggers(&mut ebpf, traced)?;
        clear_zero_hist(&mut ebpf)?;
        // The function probes first: where the kernel refuses them, that
        // is known before anything else is attached and detached again.
        if backend != Backend::Tracepoint && layout.fn_chain.is_none() {
            bail!(
                "this kernel's BTF lacks a field the {backend} backend reads \
                 (dentry d_parent/d_name/d_inode/d_sb, task_struct flags, \
                 pt_regs orig_ax or syscallno)"
            );
        }
        let fn_links = attach_copy_up_fn(&mut ebpf, backend)?;
        let (attached, exit_walks) = if traced {
            let walks = attach_syscalls(&mut ebpf, &watched)?;
            (watched, walks)
        } else {
            (Vec::new(), true)
        };
        attach_inode_created(&mut ebpf)?;
        let fsync_traced = attach_fsync(&mut ebpf)?;
        if vfs {
            attach_vfs(&mut ebpf)?;
        }
        Ok(Probes {
            ebpf,
            backend,
            attached,
            missing,
            fsync_traced,
            fn_links,
            exit_walks,
        })
    }
}

impl Probes {
    /// A program that returns at once on every tracepoint the tracepoint
    /// backend attaches to, and nothing else: the floor its cost is
    /// measured against. Its `program_costs` are the floor's.
    pub fn attach_floor() -> Result<Probes> {
        let (mut ebpf, _) = load_object(Filters::default())?;
        check_syscall_records()?;
        let (watched, missing) = fill_triggers(&mut ebpf, true)?;
        let mut tracepoints = syscall_tracepoints("enter", &watched);
        tracepoints.extend(syscall_tracepoints("exit", &watched));
        tracepoints.push((INODE_TP.0, INODE_TP.1.to_string()));
        let (cat, enter, exit) = FSYNC_TPS;
        let fsync_traced = fsync_traced();
        if fsync_traced {
            tracepoints.extend([(cat, enter.to_string()), (cat, exit.to_string())]);
        }
        attach_tracepoint(&mut ebpf, program::FLOOR, tracepoints)?;
        Ok(Probes {
            ebpf,
            backend: Backend::Tracepoint,
            attached: watched,
            missing,
            fsync_traced,
            fn_links: Vec::new(),
            exit_walks: false,
        })
    }
}

fn load_object(filters: Filters) -> Result<(Ebpf, Layout)> {
    tracefs::ensure_mounted()?;
    let btf = Btf::kernel().context("reading kernel BTF")?;
    let l = resolve_layout(btf)?;
    let chain = l.fd_chain.unwrap_or([0; 9]);
    let ovl = l.ovl_chain.unwrap_or_default();
    let func = l.fn_chain.unwrap_or_default();
    let mut loader = EbpfLoader::new();
    let globals = GlobalValues {
        filter_tgid: filters.tgid as u64,
        filter_cgroup: filters.cgroup_id,
        wb_state_off: l.wb[0] as u64,
        wb_mode_off: l.wb[1] as u64,
        i_new: l.i_new,
        offsets_valid: l.fd_chain.is_some() as u64,
        task_files_off: chain[0] as u64,
        files_fdt_off: chain[1] as u64,
        fdt_max_fds_off: chain[2] as u64,
        fdt_fd_off: chain[3] as u64,
        file_inode_off: chain[4] as u64,
        inode_sb_off: chain[5] as u64,
        inode_size_off: chain[6] as u64,
        sb_magic_off: chain[7] as u64,
        sb_dev_off: chain[8] as u64,
        overlay_magic: OVERLAYFS_SUPER_MAGIC,
        ovl_offsets_valid: l.ovl_chain.is_some() as u64,
        ovl_vfs_inode_off: ovl.vfs_inode as u64,
        ovl_upper_off: ovl.upper as u64,
        ovl_lower_inline: ovl.lower_inline as u64,
        ovl_lower_off: ovl.lower as u64,
        ovl_lowerstack_off: ovl.lowerstack as u64,
        ovl_path_layer_off: ovl.path_layer as u64,
        ovl_layer_idx_off: ovl.layer_idx as u64,
        ovl_numlower_off: ovl.numlower as u64,
        sb_fs_info_off: ovl.sb_fs_info as u64,
        ovl_numlayer_off: ovl.numlayer as u64,
        dentry_parent_off: func.dentry_parent as u64,
        dentry_name_off: func.dentry_name as u64,
        dentry_inode_off: func.dentry_inode as u64,
        dentry_sb_off: func.dentry_sb as u64,
        task_flags_off: func.task_flags as u64,
        regs_syscall_nr_off: func.regs_syscall_nr as u64,
        file_dentry_off: func.file_dentry as u64,
    };
    // The loader keeps a reference to each value until it loads.
    let named: Vec<(&str, u64)> = globals.named().collect();
    for (name, v) in &named {
        loader.override_global(name, v, true);
    }
    let ebpf = loader.load(object()?).context("loading the eBPF object")?;
    Ok((ebpf, l))
}

/// Fills the trigger table (syscall number -> how to read the call) for
/// the watched syscalls this kernel has (with a tracepoint, where
/// `traced`): the tracepoint backend's filter, and the function backends'
/// trigger names. Returns those syscalls, and the ones it lacks.
fn fill_triggers(ebpf: &mut Ebpf, traced: bool) -> Result<(Vec<&'static str>, Vec<&'static str>)> {
    let mut triggers: Array<_, SyscallSpec> = Array::try_from(
        ebpf.map_mut(map::TRIGGERS)
            .with_context(|| format!("map {}", map::TRIGGERS))?,
    )?;
    let mut watched = Vec::new();
    let mut missing = Vec::new();
    for w in syscalls::watched() {
        let enter = format!("sys_enter_{}", w.name);
        let in_table = (0..MAX_SYSCALL_NR as i64).contains(&w.nr);
        if !in_table || traced && !tracefs::exists("syscalls", &enter) {
            missing.push(w.name);
            continue;
        }
        triggers.set(w.nr as u32, w.spec, 0)?;
        watched.push(w.name);
    }
    Ok((watched, missing))
}

/// The all-zero histogram new in-kernel histogram keys start from.
fn clear_zero_hist(ebpf: &mut Ebpf) -> Result<()> {
    let mut zero: PerCpuArray<_, Log2Hist> = PerCpuArray::try_from(
        ebpf.map_mut(map::ZERO_HIST)
            .with_context(|| format!("map {}", map::ZERO_HIST))?,
    )?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let empty = Log2Hist {
        slots: [0; strata_common::LOG2_SLOTS],
    };
    zero.set(0, aya::maps::PerCpuValues::try_from(vec![empty; cpus])?, 0)?;
    Ok(())
}

/// The syscall tracepoints' records hold the number, arguments and return
/// value where the programs load them from (strata_common's constants):
/// checked before any syscall tracepoint is attached, so that a kernel
/// whose records differ is refused rather than misread.
fn check_syscall_records() -> Result<()> {
    let enter = Format::read("syscalls", "sys_enter_openat")?;
    let exit = Format::read("syscalls", "sys_exit_openat")?;
    for (what, found, expected) in [
        (
            "__syscall_nr",
            enter.offset("__syscall_nr")?,
            SYSCALL_NR_OFFSET,
        ),
        ("args", enter.syscall_args_offset()?, SYSCALL_ARGS_OFFSET),
        ("ret", exit.offset("ret")?, SYSCALL_RET_OFFSET),
    ] {
        if found as usize != expected {
            bail!(
                "this kernel's syscall tracepoints hold {what} at offset {found}, \
                 not {expected} as strata's programs read it"
            );
        }
    }
    Ok(())
}

/// The tracepoint backend's entry and exit programs on every watched
/// syscall.
/// (openat has an entry program of its own: see strata_sys_enter_openat.)
/// Attaches the syscall programs; false where the exit program had to go
/// without its dentry walk.
fn attach_syscalls(ebpf: &mut Ebpf, watched: &[&str]) -> Result<bool> {
    check_syscall_records()?;
    let (openat, others): (Vec<&str>, Vec<&str>) = watched.iter().partition(|n| **n == "openat");
    let enter = syscall_tracepoints("enter", &others);
    attach_tracepoint(ebpf, program::SYS_ENTER, enter)?;
    let enter_openat = syscall_tracepoints("enter", &openat);
    attach_tracepoint(ebpf, program::SYS_ENTER_OPENAT, enter_openat)?;
    let exits = syscall_tracepoints("exit", watched);
    // 6.1's verifier refuses the walk only after running to its
    // complexity limit, seconds of CPU (a minute under emulation): not
    // tried where it is known to fail.
    let known_refused = strata_driver::mount::kernel_version() < (6, 2);
    if !known_refused && load_tracepoint(ebpf, program::SYS_EXIT).is_ok() {
        attach_tracepoint(ebpf, program::SYS_EXIT, exits)?;
        return Ok(true);
    }
    // The walk is what some verifiers refuse (6.1: too complex).
    attach_tracepoint(ebpf, program::SYS_EXIT_NO_WALK, exits)?;
    Ok(false)
}

/// ("syscalls", "sys_<dir>_<name>") for each syscall in `names`.
fn syscall_tracepoints(dir: &str, names: &[&str]) -> Vec<(&'static str, String)> {
    names
        .iter()
        .map(|n| ("syscalls", format!("sys_{dir}_{n}")))
        .collect()
}

/// What tells a call that copied something up from one that did not.
fn attach_inode_created(ebpf: &mut Ebpf) -> Result<()> {
    let (category, name) = INODE_TP;
    attach_tracepoint(ebpf, program::INODE_CREATED, [(category, name.to_string())])
}

fn load_tracepoint(ebpf: &mut Ebpf, prog: &str) -> Result<()> {
    let p: &mut TracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog}"))?
        .try_into()?;
    p.load().with_context(|| format!("loading {prog}"))?;
    Ok(())
}

/// Loads `prog` (unless it is loaded) and attaches it to every (category,
/// name) tracepoint.
fn attach_tracepoint<'a>(
    ebpf: &mut Ebpf,
    prog: &str,
    tracepoints: impl IntoIterator<Item = (&'a str, String)>,
) -> Result<()> {
    let p: &mut TracePoint = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog}"))?
        .try_into()?;
    if p.fd().is_err() {
        p.load().with_context(|| format!("loading {prog}"))?;
    }
    for (category, name) in tracepoints {
        p.attach(category, &name)
            .with_context(|| format!("attaching {prog} to {category}:{name}"))?;
    }
    Ok(())
}

/// Filesystem fsync tracepoints, for the fsync part of each copy-up. ext4
/// has them; elsewhere the part is not measured (and says so: None).
const FSYNC_TPS: (&str, &str, &str) = ("ext4", "ext4_sync_file_enter", "ext4_sync_file_exit");

fn fsync_traced() -> bool {
    let (cat, enter, exit) = FSYNC_TPS;
    tracefs::exists(cat, enter) && tracefs::exists(cat, exit)
}

fn attach_fsync(ebpf: &mut Ebpf) -> Result<bool> {
    if !fsync_traced() {
        return Ok(false);
    }
    let (cat, enter, exit) = FSYNC_TPS;
    for (prog, tp) in [(program::FSYNC_ENTER, enter), (program::FSYNC_EXIT, exit)] {
        attach_tracepoint(ebpf, prog, [(cat, tp.to_string())])?;
    }
    Ok(true)
}

/// The --vfs view: read/write/fsync/open timed by what backs the file.
fn attach_vfs(ebpf: &mut Ebpf) -> Result<()> {
    check_syscall_records()?;
    let mut ops: Array<_, u8> = Array::try_from(
        ebpf.map_mut(map::VFS_OPS)
            .with_context(|| format!("map {}", map::VFS_OPS))?,
    )?;
    let mut names = Vec::new();
    for (name, nr, op) in syscalls::vfs_watched() {
        if (0..MAX_SYSCALL_NR as i64).contains(&nr)
            && tracefs::exists("syscalls", &format!("sys_enter_{name}"))
        {
            ops.set(nr as u32, op, 0)?;
            names.push(name);
        }
    }
    for (prog, dir) in [(program::VFS_ENTER, "enter"), (program::VFS_EXIT, "exit")] {
        attach_tracepoint(ebpf, prog, syscall_tracepoints(dir, &names))?;
    }
    Ok(())
}

/// The precise backends' function probes (none for the tracepoint one).
fn attach_copy_up_fn(ebpf: &mut Ebpf, backend: Backend) -> Result<Vec<FnLink>> {
    match backend {
        Backend::Tracepoint => Ok(Vec::new()),
        Backend::Fentry => {
            let btf = Btf::kernel().context("reading kernel BTF")?;
            [
                (program::FENTRY_COPY_UP, Hook::Entry),
                (program::FEXIT_COPY_UP, Hook::Exit),
            ]
            .into_iter()
            .map(|(prog, hook)| {
                let fd = fentry::load(ebpf, object()?, btf, prog, hook, COPY_UP_FN)?;
                fentry::attach(prog, fd)
                    .with_context(|| format!("attaching {prog} to {COPY_UP_FN}"))
            })
            .collect()
        }
        Backend::Kprobe => {
            for prog in KPROBE_PROGRAMS {
                load_kprobe(ebpf, prog)?;
                let p: &mut KProbe = ebpf.program_mut(prog).expect("loaded above").try_into()?;
                p.attach(COPY_UP_FN, 0)
                    .with_context(|| format!("attaching {prog} to {COPY_UP_FN}"))?;
            }
            Ok(Vec::new())
        }
    }
}

/// The function the precise backends probe: the entry point every trigger
/// goes through, once per request (ancestors included).
pub const COPY_UP_FN: &str = "ovl_copy_up_flags";

const KPROBE_PROGRAMS: [&str; 2] = [program::KPROBE_COPY_UP, program::KRETPROBE_COPY_UP];

fn load_kprobe(ebpf: &mut Ebpf, prog: &str) -> Result<()> {
    let p: &mut KProbe = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog}"))?
        .try_into()?;
    p.load().with_context(|| format!("loading {prog}"))
}

/// Loads (without attaching) a precise backend's programs: what doctor
/// uses to learn whether the kernel permits them.
pub fn try_load(backend: Backend) -> Result<(), String> {
    let (mut ebpf, _) = load_object(Filters::default()).map_err(|e| format!("{e:#}"))?;
    let r = match backend {
        Backend::Fentry => Btf::kernel()
            .context("reading kernel BTF")
            .and_then(|btf| {
                fentry::load(
                    &ebpf,
                    object()?,
                    btf,
                    program::FENTRY_COPY_UP,
                    Hook::Entry,
                    COPY_UP_FN,
                )
            })
            .map(drop),
        Backend::Kprobe => KPROBE_PROGRAMS
            .iter()
            .try_for_each(|prog| load_kprobe(&mut ebpf, prog)),
        Backend::Tracepoint => Ok(()),
    };
    r.map_err(|e| format!("{e:#}"))
}

/// What one of strata's programs cost while BPF run-time stats were on.
#[derive(Debug, serde::Serialize)]
pub struct ProgramCost {
    pub program: String,
    pub runs: u64,
    pub ns_per_run: u64,
    pub run_time_ns: u64,
}

impl Probes {
    /// Run count and mean time per run of every attached program. The
    /// kernel counts only while stats are enabled (`record --probe-cost`).
    pub fn program_costs(&self) -> Result<Vec<ProgramCost>> {
        let mut out = Vec::new();
        let mut push = |program: &str, runs: u64, ns: u64| {
            if runs > 0 {
                out.push(ProgramCost {
                    program: program.to_string(),
                    runs,
                    ns_per_run: ns / runs,
                    run_time_ns: ns,
                });
            }
        };
        for (name, prog) in self.ebpf.programs() {
            // Programs this backend never loaded have no info.
            if let Ok(info) = prog.info() {
                push(name, info.run_count(), info.run_time().as_nanos() as u64);
            }
        }
        for link in &self.fn_links {
            let (runs, ns) = link.run_stats()?;
            push(link.name, runs, ns);
        }
        out.sort_by(|a, b| a.program.cmp(&b.program));
        Ok(out)
    }

    pub fn ring_buffer(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(map::EVENTS)
            .context("map EVENTS already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Sum over CPUs of each counter (see strata_common::counter).
    pub fn counters(&self) -> Result<[u64; counter::COUNT as usize]> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(map::COUNTERS)
                .with_context(|| format!("map {}", map::COUNTERS))?,
        )?;
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// The in-kernel log2 histograms, summed over CPUs.
    pub fn kernel_histograms(&self) -> Result<Vec<(HistKey, [u64; strata_common::LOG2_SLOTS])>> {
        self.log2_map(map::HIST)
    }

    /// The --vfs view's histograms, summed over CPUs.
    pub fn vfs_histograms(&self) -> Result<Vec<(VfsKey, [u64; strata_common::LOG2_SLOTS])>> {
        self.log2_map(map::VFS_HIST)
    }

    fn log2_map<K: aya::Pod>(
        &self,
        name: &str,
    ) -> Result<Vec<(K, [u64; strata_common::LOG2_SLOTS])>> {
        let map: PerCpuHashMap<_, K, Log2Hist> =
            PerCpuHashMap::try_from(self.ebpf.map(name).with_context(|| format!("map {name}"))?)?;
        let mut out = Vec::new();
        for item in map.iter() {
            let (key, per_cpu) = item?;
            let mut slots = [0u64; strata_common::LOG2_SLOTS];
            for h in per_cpu.iter() {
                for (s, v) in slots.iter_mut().zip(h.slots.iter()) {
                    *s += v;
                }
            }
            out.push((key, slots));
        }
        Ok(out)
    }
}
