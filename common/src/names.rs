//! The names both sides use for the eBPF maps, programs and load-time
//! globals, defined once. User space looks maps and programs up by these
//! constants; the kernel crate names its statics and functions by
//! identifiers, and [`named!`](crate::named) fails its build where one
//! does not spell its constant. The globals are one list,
//! [`with_globals!`](crate::with_globals), that both sides expand.

/// Maps, as the kernel crate's `#[map]` statics are called.
pub mod map {
    pub const TRIGGERS: &str = "TRIGGERS";
    pub const INFLIGHT: &str = "INFLIGHT";
    pub const INFLIGHT_SPILL: &str = "INFLIGHT_SPILL";
    pub const HIST: &str = "HIST";
    pub const ZERO_HIST: &str = "ZERO_HIST";
    pub const COUNTERS: &str = "COUNTERS";
    pub const EVENTS: &str = "EVENTS";
    pub const VFS_OPS: &str = "VFS_OPS";
    pub const VFS_INFLIGHT: &str = "VFS_INFLIGHT";
    pub const VFS_HIST: &str = "VFS_HIST";
}

/// Programs, as the kernel crate's program functions are called.
pub mod program {
    pub const SYS_ENTER: &str = "strata_sys_enter";
    pub const SYS_ENTER_OPENAT: &str = "strata_sys_enter_openat";
    pub const SYS_EXIT: &str = "strata_sys_exit";
    pub const SYS_EXIT_NO_WALK: &str = "strata_sys_exit_no_walk";
    pub const INODE_CREATED: &str = "strata_inode_created";
    pub const FSYNC_ENTER: &str = "strata_fsync_enter";
    pub const FSYNC_EXIT: &str = "strata_fsync_exit";
    pub const VFS_ENTER: &str = "strata_vfs_enter";
    pub const VFS_EXIT: &str = "strata_vfs_exit";
    pub const FENTRY_COPY_UP: &str = "strata_fentry_copy_up";
    pub const FEXIT_COPY_UP: &str = "strata_fexit_copy_up";
    pub const KPROBE_COPY_UP: &str = "strata_kprobe_copy_up";
    pub const KRETPROBE_COPY_UP: &str = "strata_kretprobe_copy_up";
    pub const FLOOR: &str = "strata_floor";
}

/// Byte-wise string equality, usable in constants.
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Fails the build unless `$ident` is an item in scope (a map static or
/// a program function) whose identifier spells the name `$name`.
#[macro_export]
macro_rules! named {
    ($name:path, $ident:ident) => {
        const _: () = {
            let _ = &$ident;
            assert!(
                $crate::names::same($name, stringify!($ident)),
                concat!(stringify!($ident), " is not spelled as ", stringify!($name))
            );
        };
    };
}

/// Expands `$m! { name, ... }` over the load-time globals of the kernel
/// programs (all u64): the kernel crate makes them statics, user space a
/// struct of values ([`GlobalValues`]). Rust eBPF has no CO-RE, so these
/// carry what user space resolved from the running kernel.
#[macro_export]
macro_rules! with_globals {
    ($m:ident) => {
        $m! {
            // In-kernel filters (0: off).
            filter_tgid, filter_cgroup,
            // writeback:writeback_dirty_inode_enqueue layout, and I_NEW.
            wb_state_off, wb_mode_off, i_new,
            // BTF offsets for task -> files -> fdtable -> file -> inode -> sb.
            offsets_valid, task_files_off, files_fdt_off, fdt_max_fds_off,
            fdt_fd_off, file_inode_off, inode_sb_off, inode_size_off,
            sb_magic_off, overlay_magic,
            // BTF offsets into overlayfs's own inode, for the --vfs view.
            // ovl_lower_inline: 1 = the lower ovl_path is inline in
            // ovl_inode at ovl_lower_off (6.0-6.4 `lowerpath`); 0 = a
            // pointer there (`oe`) to an ovl_entry holding it at
            // ovl_lowerstack_off (6.5+).
            ovl_offsets_valid, ovl_vfs_inode_off, ovl_upper_off,
            ovl_lower_inline, ovl_lower_off, ovl_lowerstack_off,
            ovl_path_layer_off, ovl_layer_idx_off,
            // ovl_entry.__numlower (6.5+: a lower stack may be empty), and
            // super_block.s_fs_info -> ovl_fs.numlayer (the writable layer
            // counts as one): which lower a file came from, and how many
            // lowers its overlay has, known without any mount option.
            ovl_numlower_off, sb_fs_info_off, ovl_numlayer_off,
            // BTF offsets for the copy-up function backends, which read all
            // they report from the dentry being copied up and the current
            // task: dentry -> parent, name, inode, sb; sb -> s_dev; task ->
            // flags; pt_regs -> the syscall number (orig_ax on x86-64,
            // syscallno on arm64). User space attaches those backends only
            // where all of them resolved.
            dentry_parent_off, dentry_name_off, dentry_inode_off,
            dentry_sb_off, sb_dev_off, task_flags_off, regs_syscall_nr_off,
            // file.f_path.dentry: the tracepoint backend walks the names of
            // a file it reached through an fd (0: not resolved, no walk).
            file_dentry_off,
        }
    };
}

macro_rules! global_values {
    ($($name:ident),* $(,)?) => {
        /// A value for every load-time global, set by name.
        #[derive(Clone, Copy, Debug, Default)]
        pub struct GlobalValues {
            $(pub $name: u64,)*
        }

        impl GlobalValues {
            /// (name, value) of every global, for the loader.
            pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name)),*].into_iter()
            }
        }
    };
}

with_globals!(global_values);

#[cfg(test)]
mod tests {
    #[test]
    fn same_compares_whole_names() {
        assert!(super::same("EVENTS", "EVENTS"));
        assert!(!super::same("EVENTS", "EVENT"));
        assert!(!super::same("HIST", "HISS"));
    }
}
