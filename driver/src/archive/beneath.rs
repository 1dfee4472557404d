//! Resolving paths strictly beneath a layer root.
//!
//! Every directory an archive entry is written into is opened with
//! openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a symlink planted by an
//! earlier entry, `..`, or an absolute path can never lead a write out of
//! the layer.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

// uapi <linux/openat2.h>
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

pub fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

/// openat2 of `rel` (no `..`, relative) beneath `root`, refusing symlinks.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    let path = cstr(if rel.is_empty() { OsStr::new(".") } else { rel })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid fd, NUL-terminated path and an open_how of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens directory `components` beneath `root`, creating missing ones (mode
/// 0755, as docker does for parents an archive leaves implicit). Returns
/// the directory and how many leading components already existed (the
/// rest were created).
pub fn open_or_create_dirs(
    root: BorrowedFd<'_>,
    components: &[&OsStr],
) -> io::Result<(OwnedFd, usize)> {
    let joined = join(components);
    match open_beneath(root, &joined, libc::O_PATH | libc::O_DIRECTORY) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other.map(|fd| (fd, components.len())),
    }
    let mut dir = open_beneath(root, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY)?;
    let mut existed = components.len();
    for (i, comp) in components.iter().enumerate() {
        let name = cstr(comp)?;
        // SAFETY: valid dirfd and NUL-terminated name.
        let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        } else {
            existed = existed.min(i);
        }
        dir = open_beneath(dir.as_fd(), comp, libc::O_PATH | libc::O_DIRECTORY)?;
    }
    Ok((dir, existed))
}

pub fn join(components: &[&OsStr]) -> std::ffi::OsString {
    let mut out = std::ffi::OsString::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            out.push("/");
        }
        out.push(c);
    }
    out
}

/// Turns a libc return code into an io::Result.
pub fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
