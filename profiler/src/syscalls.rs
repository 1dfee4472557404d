//! The syscalls that can make overlayfs copy a file up, and how the kernel
//! program reads each one's arguments.
//!
//! Numbers come from libc for the architecture we are built for, so the
//! table is right wherever this compiles.

use strata_common::{SyscallSpec, Trigger};

pub struct Watched {
    /// The name in `syscalls:sys_enter_<name>`.
    pub name: &'static str,
    pub nr: i64,
    pub spec: SyscallSpec,
}

/// (trigger, path arg, dfd arg, flags arg, how arg, returns fd). A call
/// on an fd (fchmod, ftruncate, ...) has no path and its fd as `dfd`:
/// the kernel program reads the file's overlay inode through it.
fn spec(t: Trigger, path: i8, dfd: i8, flags: i8, how: i8, returns_fd: bool) -> SyscallSpec {
    SyscallSpec {
        trigger: t as u8,
        path_arg: path,
        dfd_arg: dfd,
        flags_arg: flags,
        how_arg: how,
        returns_fd: returns_fd as u8,
        _pad: [0; 2],
    }
}

pub fn watched() -> Vec<Watched> {
    use Trigger::*;
    let mut v = vec![
        // openat(dfd, path, flags, mode): musl and glibc's fopen use it.
        w(
            "openat",
            libc::SYS_openat,
            spec(OpenWrite, 1, 0, 2, -1, true),
        ),
        w(
            "openat2",
            libc::SYS_openat2,
            spec(OpenWrite, 1, 0, -1, 2, true),
        ),
        w(
            "truncate",
            libc::SYS_truncate,
            spec(Truncate, 0, -1, -1, -1, false),
        ),
        w(
            "ftruncate",
            libc::SYS_ftruncate,
            spec(Truncate, -1, 0, -1, -1, false),
        ),
        w(
            "fchmod",
            libc::SYS_fchmod,
            spec(Chmod, -1, 0, -1, -1, false),
        ),
        w(
            "fchmodat",
            libc::SYS_fchmodat,
            spec(Chmod, 1, 0, -1, -1, false),
        ),
        w(
            "fchmodat2",
            libc::SYS_fchmodat2,
            spec(Chmod, 1, 0, -1, -1, false),
        ),
        w(
            "fchown",
            libc::SYS_fchown,
            spec(Chown, -1, 0, -1, -1, false),
        ),
        w(
            "fchownat",
            libc::SYS_fchownat,
            spec(Chown, 1, 0, -1, -1, false),
        ),
        w(
            "setxattr",
            libc::SYS_setxattr,
            spec(SetXattr, 0, -1, -1, -1, false),
        ),
        w(
            "lsetxattr",
            libc::SYS_lsetxattr,
            spec(SetXattr, 0, -1, -1, -1, false),
        ),
        w(
            "fsetxattr",
            libc::SYS_fsetxattr,
            spec(SetXattr, -1, 0, -1, -1, false),
        ),
        w(
            "removexattr",
            libc::SYS_removexattr,
            spec(SetXattr, 0, -1, -1, -1, false),
        ),
        w(
            "lremovexattr",
            libc::SYS_lremovexattr,
            spec(SetXattr, 0, -1, -1, -1, false),
        ),
        w(
            "fremovexattr",
            libc::SYS_fremovexattr,
            spec(SetXattr, -1, 0, -1, -1, false),
        ),
        w(
            "utimensat",
            libc::SYS_utimensat,
            spec(Utimes, 1, 0, -1, -1, false),
        ),
        w(
            "renameat",
            libc::SYS_renameat,
            spec(Rename, 1, 0, -1, -1, false),
        ),
        w(
            "renameat2",
            libc::SYS_renameat2,
            spec(Rename, 1, 0, -1, -1, false),
        ),
        w("linkat", libc::SYS_linkat, spec(Link, 1, 0, -1, -1, false)),
    ];
    // The legacy path-only calls exist on x86_64 but not on newer ABIs.
    #[cfg(target_arch = "x86_64")]
    v.extend([
        // musl's open() issues open(2), not openat(2).
        w("open", libc::SYS_open, spec(OpenWrite, 0, -1, 1, -1, true)),
        // creat() always opens for writing.
        w(
            "creat",
            libc::SYS_creat,
            spec(OpenWrite, 0, -1, -1, -1, true),
        ),
        w("chmod", libc::SYS_chmod, spec(Chmod, 0, -1, -1, -1, false)),
        w("chown", libc::SYS_chown, spec(Chown, 0, -1, -1, -1, false)),
        w(
            "lchown",
            libc::SYS_lchown,
            spec(Chown, 0, -1, -1, -1, false),
        ),
        w("utime", libc::SYS_utime, spec(Utimes, 0, -1, -1, -1, false)),
        w(
            "utimes",
            libc::SYS_utimes,
            spec(Utimes, 0, -1, -1, -1, false),
        ),
        w(
            "futimesat",
            libc::SYS_futimesat,
            spec(Utimes, 1, 0, -1, -1, false),
        ),
        w(
            "rename",
            libc::SYS_rename,
            spec(Rename, 0, -1, -1, -1, false),
        ),
        w("link", libc::SYS_link, spec(Link, 0, -1, -1, -1, false)),
    ]);
    v
}

fn w(name: &'static str, nr: i64, spec: SyscallSpec) -> Watched {
    Watched { name, nr, spec }
}

/// The syscalls the `--vfs` view times: (tracepoint name, number, op).
pub fn vfs_watched() -> Vec<(&'static str, i64, u8)> {
    use strata_common::vfs_op::*;
    let mut v = vec![
        ("read", libc::SYS_read, READ),
        ("pread64", libc::SYS_pread64, READ),
        ("write", libc::SYS_write, WRITE),
        ("pwrite64", libc::SYS_pwrite64, WRITE),
        ("fsync", libc::SYS_fsync, FSYNC),
        ("fdatasync", libc::SYS_fdatasync, FSYNC),
        ("openat", libc::SYS_openat, OPEN),
    ];
    #[cfg(target_arch = "x86_64")]
    v.push(("open", libc::SYS_open, OPEN));
    v
}
