//! Per-container size limits (`strata create --size`), as docker's
//! `--storage-opt size=` and containers/storage do it: the writable layer
//! gets a project id of its own (inherited by everything created in it)
//! and the filesystem under the store caps that project's blocks and
//! inodes. Works on XFS and on ext4 with the `project` and `quota`
//! features, both mounted with `prjquota`; usage is then read back from
//! the quota in O(1) (`ps -s`).
//!
//! Everything goes through `quotactl_fd(2)` on a directory of the store,
//! so no block device path is needed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// What a container may hold in its writable layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimit {
    pub bytes: u64,
    /// Files, directories and links; None: no inode limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
}

/// A container's limit as applied: its project id and the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerQuota {
    pub project: u32,
    #[serde(flatten)]
    pub limit: QuotaLimit,
}

// include/uapi/linux/quota.h and fs.h.
const Q_GETQUOTA: u32 = 0x800007;
const Q_SETQUOTA: u32 = 0x800008;
const PRJQUOTA: u32 = 2;
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
/// if_dqblk block limits are in these units.
const QIF_DQBLKSIZE: u64 = 1024;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
const EXT4_SUPER_MAGIC: i64 = 0xef53;
/// Project ids strata hands out start here: far from the small ids an
/// administrator gives by hand in /etc/projid.
const FIRST_PROJECT: u32 = 0x5354_0000;

/// struct if_dqblk
#[repr(C)]
#[derive(Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

/// struct fsxattr
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

fn quotactl(dir: &File, cmd: u32, id: u32, q: &mut IfDqblk) -> std::io::Result<()> {
    let qcmd = (cmd << 8) | PRJQUOTA;
    // SAFETY: quotactl_fd reads or writes one if_dqblk at `q`, which lives
    // for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            dir.as_raw_fd(),
            qcmd as libc::c_uint,
            id as libc::c_uint,
            q as *mut IfDqblk,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn open_dir(dir: &Path) -> Result<File> {
    File::open(dir).ctx(|| format!("opening {}", dir.display()))
}

/// Whether the filesystem holding `dir` can cap a project, or an error
/// that says what is missing.
pub fn check_support(dir: &Path) -> Result<()> {
    let refuse = |why: String| Err(Error::Unsupported(format!("--size: {why}")));
    let st = nix::sys::statfs::statfs(dir).ctx(|| format!("statfs {}", dir.display()))?;
    let magic = st.filesystem_type().0 as i64;
    let fs = match magic {
        XFS_SUPER_MAGIC => "xfs",
        EXT4_SUPER_MAGIC => "ext4",
        _ => {
            return refuse(format!(
                "{} is on a filesystem without project quotas (magic {magic:#x}); \
                 per-container size needs XFS or ext4 mounted with prjquota",
                dir.display()
            ))
        }
    };
    // Probe the kernel: Q_GETQUOTA of a project nobody uses.
    let mut q = IfDqblk::default();
    match quotactl(&open_dir(dir)?, Q_GETQUOTA, FIRST_PROJECT - 1, &mut q) {
        // XFS has no entry for a project never used: enabled all the same.
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => refuse(format!(
            "this kernel has no disk quota support for {fs} (CONFIG_QUOTA and \
             CONFIG_QUOTACTL; for XFS also CONFIG_XFS_QUOTA), where {} is",
            dir.display()
        )),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => refuse(format!(
            "{} is {fs} without project quotas enabled: mount it with -o prjquota{}",
            dir.display(),
            if fs == "ext4" {
                " (and give it the project and quota features: mkfs.ext4 -O quota,project \
                 or tune2fs -O quota,project)"
            } else {
                ""
            }
        )),
        Err(e) => refuse(format!("project quota on {}: {e}", dir.display())),
    }
}

/// Gives `upper` (empty, just made) project `project`, inherited by all
/// that is created in it, and caps that project at `limit`.
pub fn apply(upper: &Path, project: u32, limit: QuotaLimit) -> Result<()> {
    let dir = open_dir(upper)?;
    let mut attr = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills one struct fsxattr.
    if unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSGETXATTR, &mut attr) } < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| format!("reading the project of {}", upper.display()));
    }
    attr.projid = project;
    attr.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: FS_IOC_FSSETXATTR reads one struct fsxattr.
    if unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSSETXATTR, &attr) } < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| format!("setting project {project} on {}", upper.display()));
    }
    set_limit(&dir, project, Some(limit))
        .ctx(|| format!("capping project {project} under {}", upper.display()))
}

fn set_limit(dir: &File, project: u32, limit: Option<QuotaLimit>) -> std::io::Result<()> {
    let limit = limit.unwrap_or(QuotaLimit {
        bytes: 0,
        inodes: None,
    });
    let mut q = IfDqblk {
        bhardlimit: limit.bytes.div_ceil(QIF_DQBLKSIZE),
        bsoftlimit: limit.bytes.div_ceil(QIF_DQBLKSIZE),
        ihardlimit: limit.inodes.unwrap_or(0),
        isoftlimit: limit.inodes.unwrap_or(0),
        valid: QIF_BLIMITS | QIF_ILIMITS,
        ..Default::default()
    };
    quotactl(dir, Q_SETQUOTA, project, &mut q)
}

/// Lifts project `project`'s limit (its container is gone). `dir` is any
/// directory on the same filesystem.
pub fn release(dir: &Path, project: u32) -> Result<()> {
    set_limit(&open_dir(dir)?, project, None)
        .ctx(|| format!("releasing project {project} under {}", dir.display()))
}

/// Bytes project `project` holds, from the quota: O(1).
pub fn usage(dir: &Path, project: u32) -> Result<u64> {
    let mut q = IfDqblk::default();
    quotactl(&open_dir(dir)?, Q_GETQUOTA, project, &mut q)
        .ctx(|| format!("reading project {project}'s usage under {}", dir.display()))?;
    Ok(q.curspace)
}

/// A project id for a new container: past every one `taken` and not in
/// use on the filesystem of `dir` (another store, or an administrator's).
pub fn next_project(dir: &Path, taken: impl IntoIterator<Item = u32>) -> Result<u32> {
    let dir = open_dir(dir)?;
    let mut id = taken
        .into_iter()
        .max()
        .map_or(FIRST_PROJECT, |m| m.max(FIRST_PROJECT - 1) + 1);
    loop {
        let mut q = IfDqblk::default();
        let used = match quotactl(&dir, Q_GETQUOTA, id, &mut q) {
            Ok(()) => q.curspace > 0 || q.curinodes > 0 || q.bhardlimit > 0,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
            Err(e) => return Err(e).ctx(|| format!("reading project {id}")),
        };
        if !used {
            return Ok(id);
        }
        id = id.checked_add(1).ok_or_else(|| {
            Error::Invalid("no free project id left for a container quota".into())
        })?;
    }
}

/// Parses `--size`: bytes with an optional k/m/g/t suffix (powers of 1024,
/// as docker's `size=` takes them).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.to_ascii_lowercase().trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use k, m, g or t)")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size like 10g, 512m or 1073741824"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_dockers() {
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1kb"), Ok(1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12x").unwrap_err().contains("unknown unit"));
        assert!(parse_size("g").is_err());
    }
}
