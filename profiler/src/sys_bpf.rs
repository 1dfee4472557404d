//! The bpf(2) commands strata-prof issues itself, outside aya: loading
//! fentry programs against module BTF (fentry.rs) and reading the kernel's
//! lists of BTF objects and links (links.rs).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use aya_obj::generated::bpf_cmd;

/// The uapi `union bpf_attr` members used here, as the kernel lays them
/// out; the kernel accepts a shorter attr than its own.
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

pub(crate) fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, correctly laid out bpf_attr prefix for
    // `cmd`, and the pointers inside it outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn bpf_fd<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: these commands return a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The id after `id` in one of the kernel's object lists (`cmd` is a
/// `*_GET_NEXT_ID`), or None at its end.
pub(crate) fn next_id(cmd: bpf_cmd, id: u32) -> Result<Option<u32>> {
    let mut next = IdAttr {
        id,
        ..Default::default()
    };
    match bpf(cmd, &mut next) {
        Ok(_) => Ok(Some(next.next_id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e).context("listing kernel objects"),
    }
}

/// A new fd for kernel object `id`; `cmd` is one of the `*_GET_FD_BY_ID`.
pub(crate) fn fd_by_id(cmd: bpf_cmd, id: u32) -> io::Result<OwnedFd> {
    let mut by_id = IdAttr {
        id,
        ..Default::default()
    };
    bpf_fd(cmd, &mut by_id)
}

/// Fills `info` (a uapi `bpf_*_info`, with any pointers in it already
/// set) for the object behind `fd`.
pub(crate) fn object_info<T>(fd: BorrowedFd<'_>, info: &mut T) -> io::Result<()> {
    let mut get = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut get).map(drop)
}
