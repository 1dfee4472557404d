//! Load-time constants and reads of kernel structures.
//!
//! Rust eBPF has no CO-RE, so every struct offset here is resolved by user
//! space from the running kernel's BTF (and tracepoint format files) and
//! written into these globals before load. The one exception, the syscall
//! tracepoints' record layout (strata_common::SYSCALL_*_OFFSET), is a
//! constant so that it can be loaded straight from the record; user space
//! checks it against the format files.

use aya_ebpf::cty::c_void;
use aya_ebpf::helpers::generated::{
    bpf_get_current_task_btf, bpf_probe_read_kernel_str, bpf_task_pt_regs,
};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
    bpf_probe_read_kernel,
};
use aya_ebpf::programs::TracePointContext;
use aya_ebpf::EbpfContext;
use strata_common::{PATH_CAPTURE, SYSCALL_NR_OFFSET, SYSCALL_RET_OFFSET};

macro_rules! globals {
    ($($name:ident),* $(,)?) => {
        /// Values set by the loader (`EbpfLoader::override_global`); all u64
        /// so user space writes every one the same way.
        pub mod global {
            $(
                #[no_mangle]
                pub static $name: u64 = 0;
            )*
        }
        /// The globals, each read where it is used: a program run reads
        /// the few its path needs, not all of them.
        #[derive(Clone, Copy)]
        pub struct Globals;
        #[allow(dead_code)]
        impl Globals {
            #[inline(always)]
            pub fn load() -> Globals {
                Globals
            }
            $(
                #[inline(always)]
                pub fn $name(&self) -> u64 {
                    // SAFETY: read_volatile stops the compiler from folding
                    // the zero initialiser; the loader patched the real
                    // value in.
                    unsafe { core::ptr::read_volatile(&global::$name) }
                }
            )*
        }
    };
}

// The list lives in strata-common, which user space fills from the same.
strata_common::with_globals!(globals);

#[inline(always)]
fn read<T>(base: u64, off: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel((base + off) as *const T).ok() }
}

/// The current task's pid_tgid, if the in-kernel filters let it through.
#[inline(always)]
pub fn passes_filters() -> Option<u64> {
    let g = Globals::load();
    let pid_tgid = bpf_get_current_pid_tgid();
    if g.filter_tgid() != 0 && (pid_tgid >> 32) != g.filter_tgid() {
        return None;
    }
    // SAFETY: helper with no arguments.
    if g.filter_cgroup() != 0 && unsafe { bpf_get_current_cgroup_id() } != g.filter_cgroup() {
        return None;
    }
    Some(pid_tgid)
}

/// The syscall number in a syscalls:* tracepoint record.
#[inline(always)]
pub fn syscall_nr(ctx: &TracePointContext) -> i32 {
    // SAFETY: a constant offset inside every syscall tracepoint's record
    // (checked by user space); the verifier checks the load itself.
    unsafe {
        *(ctx.as_ptr() as *const u8)
            .add(SYSCALL_NR_OFFSET)
            .cast::<i32>()
    }
}

/// The return value in a syscalls:sys_exit_* tracepoint record.
#[inline(always)]
pub fn syscall_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as for syscall_nr.
    unsafe {
        *(ctx.as_ptr() as *const u8)
            .add(SYSCALL_RET_OFFSET)
            .cast::<i64>()
    }
}

/// The inode behind the current task's `fd`.
#[inline(always)]
pub fn fd_inode(g: &Globals, fd: u32) -> Option<u64> {
    read(fd_file(g, fd)?, g.file_inode_off())
}

/// The `struct file` behind the current task's `fd`.
#[inline(always)]
fn fd_file(g: &Globals, fd: u32) -> Option<u64> {
    // SAFETY: helper with no arguments; the result is only dereferenced
    // through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, g.task_files_off())?;
    let fdt: u64 = read(files, g.files_fdt_off())?;
    let max_fds: u32 = read(fdt, g.fdt_max_fds_off())?;
    if fd >= max_fds {
        return None;
    }
    let fd_array: u64 = read(fdt, g.fdt_fd_off())?;
    let file: u64 = read(fd_array, fd as u64 * 8)?;
    (file != 0).then_some(file)
}

/// How the file behind `fd` is backed, and for a lower-backed overlay file
/// the index of the layer it lives in (overlayfs numbers lower layers from
/// 1, top first).
#[inline(always)]
pub fn fd_backing(g: &Globals, fd: u32) -> Option<(u8, u8)> {
    use strata_common::backing;
    let inode = fd_inode(g, fd)?;
    let sb: u64 = read(inode, g.inode_sb_off())?;
    let magic: u64 = read(sb, g.sb_magic_off())?;
    if magic != g.overlay_magic() || g.ovl_offsets_valid() == 0 {
        return Some((backing::OTHER, 0));
    }
    // container_of(inode, struct ovl_inode, vfs_inode)
    let upper: u64 = read(inode - g.ovl_vfs_inode_off(), g.ovl_upper_off())?;
    if upper != 0 {
        return Some((backing::UPPER, 0));
    }
    let idx = lower_layer(g, inode)?;
    Some((backing::LOWER, idx.clamp(0, 255) as u8))
}

/// The lower layer an overlay `inode` came from (overlayfs numbers them
/// from 1, top first), which it keeps after its copy-up; Some(0) when it
/// has none (a file made in the writable layer); None where a read failed.
#[inline(always)]
fn lower_layer(g: &Globals, inode: u64) -> Option<u16> {
    // container_of(inode, struct ovl_inode, vfs_inode)
    let ovl = inode - g.ovl_vfs_inode_off();
    let path = if g.ovl_lower_inline() != 0 {
        ovl + g.ovl_lower_off()
    } else {
        let oe: u64 = read(ovl, g.ovl_lower_off())?;
        if oe == 0 || read::<u32>(oe, g.ovl_numlower_off())? == 0 {
            return Some(0);
        }
        oe + g.ovl_lowerstack_off()
    };
    let layer: u64 = read(path, g.ovl_path_layer_off())?;
    if layer == 0 {
        return Some(0);
    }
    let idx: i32 = read(layer, g.ovl_layer_idx_off())?;
    Some(idx.clamp(0, u16::MAX as i32 - 1) as u16)
}

/// An overlay file's lower layer (`CopyUpEvent::lower_layer`'s encoding)
/// and its overlay's number of lower layers, from the overlay inode and
/// superblock: no mount option involved. (0, 0) where overlay's types are
/// not in BTF.
#[inline(always)]
pub fn overlay_layers(g: &Globals, inode: u64, sb: u64) -> (u16, u16) {
    if g.ovl_offsets_valid() == 0 || inode == 0 {
        return (0, 0);
    }
    let lower = match lower_layer(g, inode) {
        Some(0) => strata_common::LOWER_NONE,
        Some(idx) => idx,
        None => 0,
    };
    let count = read::<u64>(sb, g.sb_fs_info_off())
        .filter(|ofs| *ofs != 0)
        .and_then(|ofs| read::<u32>(ofs, g.ovl_numlayer_off()))
        .map(|n| n.saturating_sub(1).min(u16::MAX as u32) as u16)
        .unwrap_or(0);
    (lower, count)
}

/// What a finished call learns from an overlay file's inode.
#[derive(Clone, Copy)]
pub struct InodeFacts {
    /// The superblock's device (kernel encoding), 0 where unread.
    pub dev: u32,
    /// The file's dentry, whose names the report walks; 0 where unread.
    pub dentry: u64,
    pub size: i64,
    pub lower_layer: u16,
    pub lower_count: u16,
}

/// The filesystem magic of the file behind the current task's `fd`, and
/// its device, size and (on an overlay) layers.
#[inline(always)]
pub fn fd_facts(g: &Globals, fd: u32) -> Option<(u64, InodeFacts)> {
    let file = fd_file(g, fd)?;
    let inode: u64 = read(file, g.file_inode_off())?;
    let sb: u64 = read(inode, g.inode_sb_off())?;
    let magic = read(sb, g.sb_magic_off())?;
    let (lower_layer, lower_count) = if magic == g.overlay_magic() {
        overlay_layers(g, inode, sb)
    } else {
        (0, 0)
    };
    let dentry = match g.file_dentry_off() {
        0 => 0,
        off => read(file, off).unwrap_or(0),
    };
    let facts = InodeFacts {
        dev: read(sb, g.sb_dev_off()).unwrap_or(0),
        dentry,
        size: read(inode, g.inode_size_off())?,
        lower_layer,
        lower_count,
    };
    Some((magic, facts))
}

/// What the overlay `dentry` being copied up tells: its superblock's
/// device, its size (the lower file's until the copy is done) and layers.
#[inline(always)]
pub fn dentry_facts(g: &Globals, dentry: u64) -> InodeFacts {
    let sb = read::<u64>(dentry, g.dentry_sb_off()).unwrap_or(0);
    let inode = read::<u64>(dentry, g.dentry_inode_off()).unwrap_or(0);
    let (lower_layer, lower_count) = overlay_layers(g, inode, sb);
    InodeFacts {
        dev: read(sb, g.sb_dev_off()).unwrap_or(0),
        dentry,
        size: if inode != 0 {
            read(inode, g.inode_size_off()).unwrap_or(-1)
        } else {
            -1
        },
        lower_layer,
        lower_count,
    }
}

/// Each name is read into a window of this many bytes (the verifier needs
/// a fixed size for each read into the event); a longer name, or one
/// starting past PATH_CAPTURE - NAME_CAPTURE, leaves the path incomplete.
/// Half the path: names of packaged files run long (dist-info, hashed
/// node_modules entries), and short ones still fit 40 levels.
const NAME_CAPTURE: usize = 128;
/// Directory levels walked at most; a deeper file's depth is unknown.
const MAX_WALK: usize = 96;

/// Writes `dentry`'s name and its parents' up to the filesystem root into
/// `path`, file first, each NUL-terminated, keeping the bytes used in
/// `*len` (which must start at 0). Returns how many names there were
/// (counted on past a full `path`; 0 when the root was not reached) and
/// whether all of them fit.
///
/// `*len` is event memory, read and written volatile on purpose: an
/// offset kept in a register has a different range on every path through
/// the loop, and the verifier, unable to merge them, gives up long before
/// the loop ends; one loaded from memory is unknown, checked, and the same
/// on every path.
#[inline(always)]
pub fn dentry_path(
    g: &Globals,
    dentry: u64,
    path: &mut [u8; PATH_CAPTURE],
    len: *mut u16,
) -> (u16, bool) {
    let mut complete = true;
    let mut d = dentry;
    // `walked`: names below `d`, which is the root once its parent is itself.
    for walked in 0..MAX_WALK as u16 {
        let Some(parent) = read::<u64>(d, g.dentry_parent_off()) else {
            return (0, false);
        };
        if parent == d || parent == 0 {
            return (walked, complete);
        }
        // SAFETY: `len` points into the caller's reserved event.
        let at = unsafe { core::ptr::read_volatile(len) } as usize;
        match read::<u64>(d, g.dentry_name_off()) {
            Some(name) if at <= PATH_CAPTURE - NAME_CAPTURE => {
                // SAFETY: at + NAME_CAPTURE <= PATH_CAPTURE (checked), so
                // the helper writes inside `path`; it checks `name` itself.
                let n = unsafe {
                    bpf_probe_read_kernel_str(
                        path.as_mut_ptr().add(at) as *mut c_void,
                        NAME_CAPTURE as u32,
                        name as *const c_void,
                    )
                };
                if n <= 0 || n as usize >= NAME_CAPTURE {
                    complete = false;
                }
                if n > 0 && (n as usize) <= NAME_CAPTURE {
                    // SAFETY: as above.
                    unsafe { core::ptr::write_volatile(len, (at + n as usize) as u16) };
                }
            }
            _ => complete = false,
        }
        d = parent;
    }
    (0, false)
}

/// Kernel threads carry this in task_struct.flags (include/linux/sched.h;
/// unchanged since 2.6).
const PF_KTHREAD: u32 = 0x0020_0000;

/// What made the current task copy up: its syscall's trigger, `Kernel`
/// for a kernel thread, `OtherSyscall` for a syscall outside the table.
#[inline(always)]
pub fn current_trigger(g: &Globals) -> u8 {
    use strata_common::Trigger;
    // SAFETY: helper with no arguments. The pointer is read through
    // probe_read only, and handed to bpf_task_pt_regs as the verifier's
    // BTF pointer to the current task (one call serves both).
    let task = unsafe { bpf_get_current_task_btf() };
    let flags: u32 = read(task as u64, g.task_flags_off()).unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        return Trigger::Kernel as u8;
    }
    // SAFETY: returns the task's saved user registers (the syscall's).
    let regs = unsafe { bpf_task_pt_regs(task) } as u64;
    // The low half: x86-64's orig_ax is 8 bytes, arm64's syscallno 4.
    let Some(nr) = read::<u32>(regs, g.regs_syscall_nr_off()) else {
        return Trigger::OtherSyscall as u8;
    };
    match crate::maps::TRIGGERS.get(nr) {
        Some(s) if s.trigger != 0 => s.trigger,
        _ => Trigger::OtherSyscall as u8,
    }
}
