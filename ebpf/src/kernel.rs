//! Load-time constants and reads of kernel structures.
//!
//! Rust eBPF has no CO-RE, so every struct offset here is resolved by user
//! space from the running kernel's BTF (and tracepoint format files) and
//! written into these globals before load. Nothing is hard-coded.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

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
        /// A snapshot of the globals, read once per program run.
        #[allow(non_snake_case)]
        pub struct Globals { $(pub $name: u64,)* }
        impl Globals {
            #[inline(always)]
            pub fn load() -> Globals {
                // SAFETY: read_volatile stops the compiler from folding the
                // zero initialiser; the loader patched the real values in.
                unsafe { Globals { $($name: core::ptr::read_volatile(&global::$name),)* } }
            }
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

/// The inode behind the current task's `fd`.
#[inline(always)]
pub fn fd_inode(g: &Globals, fd: u32) -> Option<u64> {
    // SAFETY: helper with no arguments; the result is only dereferenced
    // through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, g.task_files_off)?;
    let fdt: u64 = read(files, g.files_fdt_off)?;
    let max_fds: u32 = read(fdt, g.fdt_max_fds_off)?;
    if fd >= max_fds {
        return None;
    }
    let fd_array: u64 = read(fdt, g.fdt_fd_off)?;
    let file: u64 = read(fd_array, fd as u64 * 8)?;
    if file == 0 {
        return None;
    }
    read(file, g.file_inode_off)
}

/// The filesystem magic and size of the file behind the current task's `fd`.
#[inline(always)]
pub fn fd_magic_and_size(g: &Globals, fd: u32) -> Option<(u64, i64)> {
    let inode = fd_inode(g, fd)?;
    let sb: u64 = read(inode, g.inode_sb_off)?;
    Some((read(sb, g.sb_magic_off)?, read(inode, g.inode_size_off)?))
}

/// How the file behind `fd` is backed, and for a lower-backed overlay file
/// the index of the layer it lives in (overlayfs numbers lower layers from
/// 1, top first).
#[inline(always)]
pub fn fd_backing(g: &Globals, fd: u32) -> Option<(u8, u8)> {
    use strata_common::backing;
    let inode = fd_inode(g, fd)?;
    let sb: u64 = read(inode, g.inode_sb_off)?;
    let magic: u64 = read(sb, g.sb_magic_off)?;
    if magic != g.overlay_magic || g.ovl_offsets_valid == 0 {
        return Some((backing::OTHER, 0));
    }
    // container_of(inode, struct ovl_inode, vfs_inode)
    let ovl = inode - g.ovl_vfs_inode_off;
    let upper: u64 = read(ovl, g.ovl_upper_off)?;
    if upper != 0 {
        return Some((backing::UPPER, 0));
    }
    let path = if g.ovl_lower_inline != 0 {
        ovl + g.ovl_lower_off
    } else {
        read::<u64>(ovl, g.ovl_lower_off)? + g.ovl_lowerstack_off
    };
    let layer: u64 = read(path, g.ovl_path_layer_off)?;
    let idx: i32 = read(layer, g.ovl_layer_idx_off)?;
    Some((backing::LOWER, idx.clamp(0, 255) as u8))
}
