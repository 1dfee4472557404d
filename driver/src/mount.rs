//! Mounting overlayfs.
//!
//! Since Linux 6.7 overlayfs takes one lower layer per `fsconfig` call
//! (`lowerdir+`) through the new mount API, so a stack is limited only by
//! the kernel's 500 layers. Older kernels get the legacy `mount(2)` option
//! string, which must fit in a page: lower layers are named by 6-character
//! links in the store's l/, resolved from a thread whose working directory
//! is l/, which leaves room for the kernel's 500 layers too.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// overlayfs's OVL_MAX_STACK.
pub const MAX_LAYERS: usize = 500;
/// The legacy option string must fit in one page, NUL included.
const LEGACY_OPTIONS_MAX: usize = 4095;

// uapi <linux/mount.h>
const FSOPEN_CLOEXEC: u32 = 0x1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// Which syscall interface mounts the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountApi {
    /// fsopen/fsconfig(`lowerdir+`)/fsmount/move_mount (Linux >= 6.7).
    LowerdirPlus,
    /// mount(2) with a `lowerdir=a:b:c` option string.
    Legacy,
}

impl MountApi {
    /// `lowerdir+` where the kernel has it (Linux >= 6.7), else legacy.
    pub fn for_kernel() -> MountApi {
        if kernel_version() >= (6, 7) {
            MountApi::LowerdirPlus
        } else {
            MountApi::Legacy
        }
    }
}

/// (major, minor) of the running kernel; (0, 0) where unreadable.
pub fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

impl std::str::FromStr for MountApi {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<MountApi, String> {
        match s {
            "legacy" => Ok(MountApi::Legacy),
            "new" => Ok(MountApi::LowerdirPlus),
            _ => Err(format!("{s:?} is not a mount API: legacy or new")),
        }
    }
}

/// A mount described, not made: what the snapshotter hands containerd,
/// which mounts it itself (fstab-style type, source and options).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MountSpec {
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
}

impl MountSpec {
    /// A recursive bind of `source`, read-only or read-write.
    pub fn bind(source: String, readonly: bool) -> MountSpec {
        MountSpec {
            fstype: "bind".into(),
            source,
            options: vec![if readonly { "ro" } else { "rw" }.into(), "rbind".into()],
        }
    }

    pub fn overlay(options: Vec<String>) -> MountSpec {
        MountSpec {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options,
        }
    }
}

pub struct OverlaySpec<'a> {
    /// Lower directories, top (nearest the container) first.
    pub lowers: Vec<PathBuf>,
    /// The same layers as short links relative to `links_base`, for the
    /// legacy option string.
    pub short_lowers: Vec<String>,
    pub links_base: &'a Path,
    pub upper: &'a Path,
    pub work: &'a Path,
    pub target: &'a Path,
    /// No syncs in the upper layer: faster, but lost on a crash.
    pub volatile: bool,
    /// Metadata-only copy-up (see overlay_options).
    pub metacopy: bool,
}

pub fn mount_overlay(spec: &OverlaySpec<'_>, api: MountApi) -> Result<MountApi> {
    if spec.lowers.len() > MAX_LAYERS {
        return Err(Error::TooManyLayers {
            count: spec.lowers.len(),
            limit: MAX_LAYERS,
        });
    }
    match api {
        MountApi::LowerdirPlus => mount_new_api(spec),
        MountApi::Legacy => mount_legacy(spec),
    }
    .map(|()| api)
}

fn mount_err(target: &Path, reason: impl Into<String>) -> Error {
    Error::Mount {
        target: target.to_path_buf(),
        reason: reason.into(),
    }
}

fn c(p: &[u8]) -> CString {
    CString::new(p).expect("mount arguments have no NUL")
}

fn mount_new_api(spec: &OverlaySpec<'_>) -> Result<()> {
    // SAFETY: NUL-terminated filesystem name; the flags are valid.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(mount_err(
            spec.target,
            format!("fsopen(overlay): {}", io::Error::last_os_error()),
        ));
    }
    // SAFETY: the kernel just returned this fd; we own it.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let set = |key: &CStr, value: Option<&[u8]>| -> Result<()> {
        let v = value.map(c);
        let (cmd, vptr) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: valid fs-context fd; NUL-terminated key and value (or
        // null for a flag); aux is unused for these commands.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key.as_ptr(),
                vptr,
                0,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(mount_err(
                spec.target,
                format!("{}: {e}{}", key.to_string_lossy(), kernel_log(&fs)),
            ));
        }
        Ok(())
    };
    for lower in &spec.lowers {
        set(c"lowerdir+", Some(lower.as_os_str().as_bytes()))?;
    }
    set(c"upperdir", Some(spec.upper.as_os_str().as_bytes()))?;
    set(c"workdir", Some(spec.work.as_os_str().as_bytes()))?;
    for (k, v) in overlay_options(spec.metacopy) {
        set(k, Some(v.as_bytes()))?;
    }
    if spec.volatile {
        set(c"volatile", None)?;
    }
    // SAFETY: valid fs-context fd; CMD_CREATE takes no key or value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(mount_err(
            spec.target,
            format!("creating overlay: {e}{}", kernel_log(&fs)),
        ));
    }
    // SAFETY: valid fs-context fd in the created state.
    let mfd = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if mfd < 0 {
        return Err(mount_err(
            spec.target,
            format!("fsmount: {}", io::Error::last_os_error()),
        ));
    }
    // SAFETY: the kernel just returned this fd; we own it.
    let mnt = unsafe { OwnedFd::from_raw_fd(mfd as i32) };
    let target = c(spec.target.as_os_str().as_bytes());
    // SAFETY: valid mount fd, empty path with F_EMPTY_PATH, NUL-terminated target.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(mount_err(
            spec.target,
            format!("move_mount: {}", io::Error::last_os_error()),
        ));
    }
    Ok(())
}

/// Options strata always sets, so copy-up and export behave the same on
/// every kernel whatever its build defaults: no inode index, and unless
/// asked for, no metadata-only copy-up and no redirected directories.
/// metacopy needs redirect_dir=on (a renamed metacopy file must find its
/// data again); commit and diff understand both (lowerstack).
pub(crate) fn overlay_options(metacopy: bool) -> [(&'static CStr, &'static str); 3] {
    let on_off = if metacopy { "on" } else { "off" };
    [
        (c"index", "off"),
        (c"metacopy", on_off),
        (c"redirect_dir", on_off),
    ]
}

/// Refuses metacopy where this kernel's overlayfs lacks it (before 4.19),
/// saying so.
pub fn check_metacopy_support() -> Result<()> {
    if Path::new("/sys/module/overlay/parameters/metacopy").exists() {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "metacopy: this kernel's overlayfs has no metacopy option \
             (/sys/module/overlay/parameters/metacopy is missing; it needs Linux 4.19)"
                .into(),
        ))
    }
}

/// Messages the kernel queued on the fs context explain a failed mount.
fn kernel_log(fs: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: valid fd and buffer; reading an fs context returns one message.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return out;
        }
        out.push_str(" (kernel: ");
        out.push_str(String::from_utf8_lossy(&buf[..n as usize]).trim());
        out.push(')');
    }
}

fn mount_legacy(spec: &OverlaySpec<'_>) -> Result<()> {
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        spec.short_lowers.join(":"),
        spec.upper.display(),
        spec.work.display()
    );
    for (k, v) in overlay_options(spec.metacopy) {
        opts.push_str(&format!(",{}={v}", k.to_string_lossy()));
    }
    if spec.volatile {
        opts.push_str(",volatile");
    }
    if opts.len() > LEGACY_OPTIONS_MAX {
        // What would fit: the room the rest of the string leaves, in
        // layers of this stack's average name length.
        let n = spec.lowers.len().max(1);
        let lowers_len: usize = spec.short_lowers.iter().map(|s| s.len() + 1).sum();
        let rest = opts.len() + 1 - lowers_len;
        return Err(Error::TooManyLayers {
            count: spec.lowers.len(),
            limit: LEGACY_OPTIONS_MAX.saturating_sub(rest) * n / lowers_len.max(1),
        });
    }
    let base = spec.links_base.to_path_buf();
    let target = spec.target.to_path_buf();
    // A thread of its own, unshared from the process's working directory,
    // so the relative short links resolve against the store root without
    // changing anyone else's cwd.
    let result = std::thread::spawn(move || -> io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(io::Error::from)?;
        std::env::set_current_dir(&base)?;
        nix::mount::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(io::Error::from)
    })
    .join()
    .expect("mount thread does not panic");
    result.map_err(|e| mount_err(spec.target, format!("mount(2): {e}")))
}

/// Unmounts `target`; with `force`, lazily (detached) if it is busy.
pub fn unmount(target: &Path, force: bool) -> Result<()> {
    let flags = if force {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(target, flags) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(mount_err(target, format!("umount: {e}"))),
    }
}

/// Detaches every mount at or beneath `dir`, deepest first: before a tree
/// is deleted, so the deletion can never reach into a mounted filesystem.
pub fn unmount_beneath(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_mountinfo(p))))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Whether something is mounted exactly at `target`.
pub fn is_mountpoint(target: &Path) -> bool {
    let Ok(real) = target.canonicalize() else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(real.as_os_str().as_bytes())
    })
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
pub fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Bind-mounts `source` at the directory open as `target_fd` (a path in
/// the merged view resolved beneath it), read-only when asked.
pub fn bind(source: &Path, target_fd: &OwnedFd, readonly: bool) -> Result<()> {
    let target = PathBuf::from(format!("/proc/self/fd/{}", target_fd.as_raw_fd()));
    use nix::mount::{mount, MsFlags};
    mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| mount_err(source, format!("bind mount: {e}")))?;
    if readonly {
        // The bind is now the mount at `target`; remount it read-only.
        let real = fs::read_link(&target).unwrap_or(target.clone());
        mount(
            None::<&str>,
            &real,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| mount_err(&real, format!("read-only remount: {e}")))?;
    }
    Ok(())
}
