//! The contract between strata's eBPF programs and `strata-prof`.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into
//! maps and the ring buffer, user space reads it back byte for byte.
#![no_std]

pub mod names;

/// Bytes of a syscall's path argument captured in the kernel.
pub const PATH_CAPTURE: usize = 256;
/// log2 latency slots in the in-kernel histograms (2^0 ns .. 2^39 ns, ~9 min).
pub const LOG2_SLOTS: usize = 40;
/// Where a syscall tracepoint's record holds the syscall number, its
/// arguments (sys_enter_*) and its return value (sys_exit_*): after the
/// 8-byte common header, fixed since syscall tracepoints exist. Constants,
/// so that the programs load them straight from the record (a helper call
/// saved per event); user space checks them against the format files.
pub const SYSCALL_NR_OFFSET: usize = 8;
pub const SYSCALL_ARGS_OFFSET: usize = 16;
pub const SYSCALL_RET_OFFSET: usize = 16;

/// Slots of the in-flight table, indexed by thread id modulo this.
pub const INFLIGHT_SLOTS: u32 = 16384;
/// Highest syscall number the trigger table holds.
pub const MAX_SYSCALL_NR: u32 = 512;
/// Size bucket used when the kernel could not see the file size.
pub const SIZE_UNKNOWN: u8 = 0xff;

/// What made overlayfs copy a file up.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    OpenWrite = 1,
    Truncate = 2,
    Chmod = 3,
    Chown = 4,
    SetXattr = 5,
    Utimes = 6,
    Rename = 7,
    Link = 8,
    /// A copy-up in a task with no syscall: a kernel thread (an NFS
    /// export, a kernel worker). Only the copy-up function backends see it.
    Kernel = 9,
    /// A copy-up inside a syscall that is not one of the above (a mkdir or
    /// unlink in a lower-only directory copies that directory up). Only
    /// the copy-up function backends see it.
    OtherSyscall = 10,
}

impl Trigger {
    pub const ALL: [Trigger; 10] = [
        Trigger::OpenWrite,
        Trigger::Truncate,
        Trigger::Chmod,
        Trigger::Chown,
        Trigger::SetXattr,
        Trigger::Utimes,
        Trigger::Rename,
        Trigger::Link,
        Trigger::Kernel,
        Trigger::OtherSyscall,
    ];

    pub fn from_u8(v: u8) -> Option<Trigger> {
        Trigger::ALL.iter().copied().find(|t| *t as u8 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            Trigger::OpenWrite => "open-write",
            Trigger::Truncate => "truncate",
            Trigger::Chmod => "chmod",
            Trigger::Chown => "chown",
            Trigger::SetXattr => "setxattr",
            Trigger::Utimes => "utimes",
            Trigger::Rename => "rename",
            Trigger::Link => "link",
            Trigger::Kernel => "kernel",
            Trigger::OtherSyscall => "other-syscall",
        }
    }
}

/// How a watched syscall's arguments are read. One entry per syscall number
/// in the kernel's trigger table, filled by user space from the host's
/// syscall numbers (they differ between architectures).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallSpec {
    /// `Trigger as u8`; 0 means "not watched".
    pub trigger: u8,
    /// Argument index of the path pointer, or -1 when the call takes an fd.
    pub path_arg: i8,
    /// Argument index of the directory fd for *at() calls, or -1.
    pub dfd_arg: i8,
    /// Argument index of open flags (only write-mode opens copy up), or -1.
    pub flags_arg: i8,
    /// Argument index of a `struct open_how *` (openat2), or -1.
    pub how_arg: i8,
    /// 1 when a successful return value is a new fd whose file the kernel can
    /// inspect (size, filesystem) at exit.
    pub returns_fd: u8,
    pub _pad: [u8; 2],
}

/// Kernel state kept per thread while a watched call runs: from syscall
/// entry to exit on the tracepoint backend, from entry to exit of
/// overlayfs's copy-up function on the function backends.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InFlight {
    pub start_ns: u64,
    /// Time the copied-up (non-directory) inode was created in the upper fs.
    pub target_created_ns: u64,
    /// Directories created in the upper fs during the call (ancestors, or
    /// the target itself when it is a directory).
    pub dirs_created: u32,
    /// Non-directory inodes created (the copied-up file; whiteouts excluded).
    pub files_created: u32,
    pub syscall_nr: u32,
    pub dfd: i32,
    /// Entry time of a filesystem fsync running inside the call, or 0.
    pub fsync_start_ns: u64,
    /// Time in fsyncs inside the call (the copy-up's durability part;
    /// seen where the upper filesystem has sync tracepoints, e.g. ext4).
    pub fsync_ns: u64,
    /// Tracepoint backend: the syscall's path argument (a user pointer),
    /// read only at exit and only when the call copied something up:
    /// copying 256 bytes on every write-mode open would tax the hot path
    /// for nothing. Function backends: the overlay dentry being copied up.
    pub subject: u64,
    /// The thread this state belongs to; 0 marks a free in-flight slot.
    pub tid: u32,
    pub trigger: u8,
    /// In a slot of the in-flight array: 1 once a thread whose id maps to
    /// this slot found it taken and went to the spill table, so a thread
    /// not in this slot looks there too. Sticky: spills are rare.
    pub spilled: u8,
    pub _pad: [u8; 2],
}

impl InFlight {
    /// A call of thread `tid` that started at `start_ns`, about `subject`,
    /// with nothing created yet.
    #[inline(always)]
    pub fn new(start_ns: u64, tid: u32, subject: u64) -> InFlight {
        InFlight {
            start_ns,
            target_created_ns: 0,
            dirs_created: 0,
            files_created: 0,
            syscall_nr: 0,
            dfd: -100, // AT_FDCWD
            fsync_start_ns: 0,
            fsync_ns: 0,
            subject,
            tid,
            trigger: 0,
            spilled: 0,
            _pad: [0; 2],
        }
    }
}

/// What a `CopyUpEvent`'s time spans and its path holds (`source`).
pub mod source {
    /// Syscall entry to exit; `path` is the syscall's path argument as
    /// given (relative to `dfd` or the cwd where it is relative).
    pub const SYSCALL: u8 = 0;
    /// Entry to exit of overlayfs's copy-up function; `path` is the
    /// file's name and its parents' up to the overlay root, file first,
    /// each NUL-terminated.
    pub const COPY_UP_FN: u8 = 1;
}

/// One copy-up as seen by the kernel, sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CopyUpEvent {
    pub start_ns: u64,
    /// The time `source` says: the syscall's, or the copy-up function's.
    pub latency_ns: u64,
    /// From the start until the target's upper inode existed: lookups and
    /// copying up the ancestor directories.
    pub prepare_ns: u64,
    /// Time in the upper filesystem's fsync during the call.
    pub fsync_ns: u64,
    /// Time the exit probe itself spent after taking its end time (reading
    /// the inode, walking the names): a stopwatch around the call sees it,
    /// `latency_ns` cannot.
    pub probe_ns: u64,
    pub cgroup_id: u64,
    /// The file's size as the kernel saw it, or -1.
    pub file_size: i64,
    /// The syscall's or the copy-up function's return value.
    pub ret: i64,
    /// The overlay superblock's device (kernel encoding: major << 20 |
    /// minor), or 0 where it could not be read.
    pub overlay_dev: u32,
    pub pid: u32,
    pub tid: u32,
    pub dirs_created: u32,
    pub files_created: u32,
    pub dfd: i32,
    /// `source::COPY_UP_FN`: names walked from the file up to the overlay
    /// root (the file's directory depth + 1), counted even past `path`;
    /// 0 when the walk did not reach the root (too deep, a failed read).
    pub components: u16,
    pub trigger: u8,
    /// One of [`source`].
    pub source: u8,
    /// 1 when `path` holds the whole path, 0 when it was cut short.
    pub path_complete: u8,
    /// 1 when `path` holds the file's dentry names up to the overlay root
    /// (file first, each NUL-terminated; `components` counts them), as
    /// the function backends always send and the tracepoint backend does
    /// where it reached the file through an fd; 0 when it holds the
    /// syscall's path argument.
    pub names_from_dentry: u8,
    /// Bytes of `path` written (NULs included).
    pub path_len: u16,
    /// The lower layer the file was copied up from, as overlayfs numbers
    /// it (1 = right below the writable layer), read from the overlay
    /// inode; [`LOWER_NONE`] when that inode has no lower (a file made in
    /// the writable layer, not a copy-up); 0 where it could not be read.
    pub lower_layer: u16,
    /// How many lower layers the overlay has (from its superblock), or 0
    /// where it could not be read.
    pub lower_count: u16,
    pub _pad2: [u8; 4],
    pub path: [u8; PATH_CAPTURE],
}

/// `CopyUpEvent::lower_layer` of a file that no lower layer had.
pub const LOWER_NONE: u16 = u16::MAX;

/// Key of the in-kernel log2 histograms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HistKey {
    pub trigger: u8,
    /// log2 of the file size in bytes, or `SIZE_UNKNOWN`.
    pub size_log2: u8,
    /// Ancestor directories copied up too (saturates at 255).
    pub ancestors: u8,
    pub _pad: u8,
}

/// Per-CPU counts of latency in log2(ns) slots.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Log2Hist {
    pub slots: [u64; LOG2_SLOTS],
}

/// VFS operations timed by the `--vfs` view (values of `VfsKey::op`).
pub mod vfs_op {
    pub const READ: u8 = 1;
    pub const WRITE: u8 = 2;
    pub const FSYNC: u8 = 3;
    pub const OPEN: u8 = 4;
}

/// What a file is backed by (values of `VfsKey::backing`).
pub mod backing {
    /// Not on overlayfs (a volume, the host).
    pub const OTHER: u8 = 0;
    /// An overlay file still served from a lower (image) layer.
    pub const LOWER: u8 = 1;
    /// An overlay file in the writable layer (created or copied up).
    pub const UPPER: u8 = 2;
}

/// Key of the in-kernel VFS latency histograms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VfsKey {
    pub op: u8,
    pub backing: u8,
    /// For opens of lower-backed files: how many layers down the file
    /// lives (1 = right below the writable layer); otherwise 0.
    pub layer: u8,
    pub _pad: u8,
}

/// Kernel state of one VFS call between entry and exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VfsCall {
    pub start_ns: u64,
    pub fd: i64,
    pub op: u8,
    pub _pad: [u8; 7],
}

/// Indices of the per-CPU counters array.
pub mod counter {
    /// Calls that matched a trigger and passed the filters.
    pub const WATCHED_CALLS: u32 = 0;
    /// Calls that copied something up.
    pub const COPY_UPS: u32 = 1;
    /// Events the ring buffer had no room for.
    pub const RINGBUF_DROPS: u32 = 2;
    /// Calls not tracked because their in-flight slot was taken and the
    /// spill table was full.
    pub const INFLIGHT_FULL: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Floor of log2(v), with log2(0) = 0.
#[inline(always)]
pub fn log2_floor(v: u64) -> u32 {
    if v == 0 {
        0
    } else {
        63 - v.leading_zeros()
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] structs of integers and byte arrays
    // with explicit padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SyscallSpec {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HistKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Log2Hist {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VfsKey {}
}
