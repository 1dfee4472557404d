//! Applying an OCI layer tar to an empty directory, with full fidelity:
//! every entry type, ownership, modes (setuid/setgid/sticky), mtimes,
//! xattrs, sparse files, hardlinks, and OCI whiteouts turned into overlay
//! whiteouts.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::beneath::{cstr, cvt, join, open_beneath, open_or_create_dirs};
use super::split::TarSplit;
use super::{OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_PREFIX};
use crate::error::{entry_error, Error, IoContext, Result};
use crate::fsutil::SyncMode;

#[derive(Debug, Default, Clone)]
pub struct AppliedLayer {
    pub entries: u64,
    /// Apparent size as `docker ps -s` counts it: regular files (hardlinks
    /// once) plus symlink targets.
    pub size: u64,
    /// Directories the archive only implied (no entry of their own). A
    /// layer extracted without its lowers gives them their lowers'
    /// metadata later, with settle_implied_dirs.
    pub implied_dirs: Vec<OsString>,
}

/// Applies the (decompressed) tar `reader` into `dest`, which must be empty.
///
/// `lowers` are the layers below, top first. A directory the archive only
/// implies (it holds entries, but has no entry of its own) takes its mode,
/// owner and mtime from the first of them that has it, as
/// containers/storage does: otherwise a layer that just deletes `/etc/x`
/// would reset `/etc` to 0755 root in every container above it.
///
/// With `split`, whose reader `reader` must be, each file extracted
/// verbatim is named to it, so the tar can be rebuilt on save.
pub fn apply_layer(
    reader: impl Read,
    dest: &Path,
    lowers: &[PathBuf],
    sync: SyncMode,
    split: Option<&TarSplit>,
) -> Result<AppliedLayer> {
    let root = File::open(dest)
        .map(OwnedFd::from)
        .ctx(|| format!("opening layer directory {}", dest.display()))?;
    let mut applier = Applier {
        root,
        seen: HashMap::new(),
        dirs: Vec::new(),
        parent_cache: None,
        stats: AppliedLayer::default(),
        lowers: lowers.to_vec(),
        sync_each_file: sync == SyncMode::PerFile,
        split: split.cloned(),
        implied: Default::default(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().ctx(|| "reading tar stream".to_string())?;
    let mut last = String::from("<start of archive>");
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            entry_error(
                format!("after {last}"),
                format!("corrupt or truncated tar: {e}"),
            )
        })?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        last.clone_from(&shown);
        applier.entry(&mut entry, &raw).map_err(|e| match e {
            Error::Entry { .. } => e,
            Error::Io { source, context } => entry_error(&shown, format!("{context}: {source}")),
            other => entry_error(&shown, other.to_string()),
        })?;
        applier.stats.entries += 1;
    }
    applier.finish_dirs()?;
    applier.stats.implied_dirs = std::mem::take(&mut applier.implied).into_iter().collect();
    Ok(applier.stats)
}

/// Gives the directories layer `dest` only implied (as apply_layer
/// reported them) the mode, owner and mtime the layers below (`lowers`,
/// top first) have for them: what apply_layer does itself when given the
/// lowers, for layers extracted side by side before their lowers existed.
pub fn settle_implied_dirs(dest: &Path, implied: &[OsString], lowers: &[PathBuf]) -> Result<()> {
    let root = File::open(dest)
        .map(OwnedFd::from)
        .ctx(|| format!("opening layer directory {}", dest.display()))?;
    for path in implied {
        let Some(lower) = lower_dir(lowers, path) else {
            continue;
        };
        let dir = open_beneath(root.as_fd(), path, libc::O_RDONLY | libc::O_DIRECTORY)
            .ctx(|| format!("opening implied directory {path:?}"))?;
        let f = File::from(dir);
        fchown_ids(&f, lower.uid(), lower.gid())?;
        set_mode_and_mtime(&f, path, lower.mode() & 0o7777, lower.mtime().max(0) as u64)?;
    }
    Ok(())
}

/// The first lower's metadata for directory `path`, if one has it as a
/// directory.
fn lower_dir(lowers: &[PathBuf], path: &OsStr) -> Option<std::fs::Metadata> {
    lowers
        .iter()
        .map(|l| l.join(path))
        .find_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|md| md.is_dir())
}

/// What a path in this layer is, for duplicate and hardlink checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Dir,
    Other,
}

struct DirMeta {
    path: OsString,
    mode: u32,
    mtime: u64,
}

struct Applier {
    root: OwnedFd,
    seen: HashMap<OsString, Seen>,
    /// Directory modes and mtimes are set last: adding children would
    /// change the mtime, and a read-only mode would not matter to root but
    /// keeps the order honest.
    dirs: Vec<DirMeta>,
    parent_cache: Option<(OsString, OwnedFd)>,
    stats: AppliedLayer,
    lowers: Vec<PathBuf>,
    /// fsync every file as it is written (SyncMode::PerFile) instead of
    /// the one syncfs the importer does before publishing.
    sync_each_file: bool,
    split: Option<TarSplit>,
    /// Directories created only as parents, until an entry of their own
    /// comes (which then sets their metadata).
    implied: std::collections::BTreeSet<OsString>,
}

/// A layer member's name (or hardlink target) as components inside the
/// layer. Leading `/`s are dropped, as docker, containerd and GNU tar do
/// (`/etc/x` is `etc/x` of the layer); everything else as clean_path.
pub fn clean_entry_path(raw: &[u8]) -> std::result::Result<Vec<&OsStr>, String> {
    let start = raw.iter().position(|b| *b != b'/').unwrap_or(raw.len());
    clean_path(&raw[start..])
}

/// Splits a tar path into safe components: no absolute paths, no `..`.
pub fn clean_path(raw: &[u8]) -> std::result::Result<Vec<&OsStr>, String> {
    if raw.starts_with(b"/") {
        return Err("absolute path in layer archive".into());
    }
    if raw.contains(&0) {
        return Err("NUL byte in path".into());
    }
    let mut out = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err("path contains `..`".into()),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

impl Applier {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<()> {
        let comps =
            clean_entry_path(raw).map_err(|r| entry_error(String::from_utf8_lossy(raw), r))?;
        let kind = entry.header().entry_type();
        let xattrs = pax_xattrs(entry)?;
        let Some((name, parent)) = comps.split_last() else {
            // "./": the layer root's own metadata.
            if !kind.is_dir() {
                return Err(Error::Invalid(
                    "a non-directory entry names the layer root".into(),
                ));
            }
            return self.directory(&[], None, entry.header(), &xattrs);
        };
        let name_bytes = name.as_bytes();
        if name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(parent, name_bytes);
        }
        let path = join(&comps);
        if let Some(prev) = self.seen.get(&path) {
            if !(*prev == Seen::Dir && kind.is_dir()) {
                return Err(Error::Invalid("duplicate entry in layer archive".into()));
            }
        }
        self.open_parent(parent)?;
        let pfd = self.parent_cache.as_ref().expect("opened above").1.as_fd();
        let header = entry.header().clone();
        match kind {
            EntryType::Directory => {
                return self.directory(&comps, Some((pfd.as_raw_fd(), name)), &header, &xattrs);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let file = create_file(pfd, name)?;
                if let (Some(split), false) = (&self.split, kind == EntryType::GNUSparse) {
                    // A sparse entry's tar data is not the file's bytes:
                    // it stays in the record.
                    split
                        .file(entry.raw_file_position(), entry.size(), &path)
                        .ctx(|| "recording the tar layout".into())?;
                }
                let written = copy_data(entry, &file, kind == EntryType::GNUSparse)?;
                let size = header.size().unwrap_or(written).max(written);
                if kind == EntryType::GNUSparse {
                    // A trailing hole was skipped, not written.
                    file.set_len(size).ctx(|| "setting file length".into())?;
                }
                fchown(&file, &header)?;
                let mode = header_mode(&header)?;
                cvt(unsafe_fchmod(&file, mode)).ctx(|| "chmod".into())?;
                set_xattrs_fd(file.as_raw_fd(), &xattrs)?;
                set_mtime(pfd, name, &header)?;
                if self.sync_each_file {
                    file.sync_all().ctx(|| "fsync".into())?;
                }
                self.stats.size += size;
            }
            EntryType::Symlink => {
                let target = link_target(entry)?;
                let t = CString::new(target.as_bytes())
                    .map_err(|_| Error::Invalid("NUL in symlink target".into()))?;
                let n = cstr(name).ctx(|| "name".into())?;
                // SAFETY: valid dirfd and NUL-terminated strings.
                cvt(unsafe { libc::symlinkat(t.as_ptr(), pfd.as_raw_fd(), n.as_ptr()) })
                    .ctx(|| "creating symlink".into())?;
                chown_at(pfd, name, &header)?;
                set_xattrs_path(pfd, name, &xattrs)?;
                set_mtime(pfd, name, &header)?;
                self.stats.size += target.len() as u64;
            }
            EntryType::Link => {
                let target = link_target(entry)?;
                let tcomps = clean_entry_path(target.as_bytes())
                    .map_err(|r| Error::Invalid(format!("hardlink target: {r}")))?;
                if self.seen.get(&join(&tcomps)) != Some(&Seen::Other) {
                    return Err(Error::Invalid(format!(
                        "hardlink to {target:?}, which is not an earlier non-directory entry of this layer"
                    )));
                }
                let (tname, tparent) = tcomps.split_last().expect("seen paths are non-empty");
                let tdir = open_beneath(
                    self.root.as_fd(),
                    &join(tparent),
                    libc::O_PATH | libc::O_DIRECTORY,
                )
                .ctx(|| "opening hardlink target's directory".into())?;
                let (tn, n) = (
                    cstr(tname).ctx(|| "name".into())?,
                    cstr(name).ctx(|| "name".into())?,
                );
                // SAFETY: valid dirfds and NUL-terminated names; flags 0 does
                // not follow a symlink target.
                cvt(unsafe {
                    libc::linkat(
                        tdir.as_raw_fd(),
                        tn.as_ptr(),
                        pfd.as_raw_fd(),
                        n.as_ptr(),
                        0,
                    )
                })
                .ctx(|| "creating hardlink".into())?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let dev = libc::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                let n = cstr(name).ctx(|| "name".into())?;
                // SAFETY: valid dirfd and NUL-terminated name.
                cvt(unsafe { libc::mknodat(pfd.as_raw_fd(), n.as_ptr(), fmt | 0o600, dev) })
                    .map_err(|e| {
                        if e.raw_os_error() == Some(libc::EPERM) {
                            Error::Invalid("cannot create device node: no CAP_MKNOD".into())
                        } else {
                            Error::Io {
                                context: "mknod".into(),
                                source: e,
                            }
                        }
                    })?;
                chown_at(pfd, name, &header)?;
                chmod_at(pfd, name, header_mode(&header)?)?;
                set_xattrs_path(pfd, name, &xattrs)?;
                set_mtime(pfd, name, &header)?;
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unsupported tar entry type {other:?}"
                )));
            }
        }
        self.seen.insert(path, Seen::Other);
        Ok(())
    }

    fn directory(
        &mut self,
        comps: &[&OsStr],
        at: Option<(i32, &OsStr)>,
        header: &Header,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        if let Some((pfd, name)) = at {
            let n = cstr(name).ctx(|| "name".into())?;
            // SAFETY: valid dirfd and NUL-terminated name.
            let rc = unsafe { libc::mkdirat(pfd, n.as_ptr(), 0o700) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e).ctx(|| "mkdir".into());
                }
            }
        }
        let path = join(comps);
        let dir = open_beneath(self.root.as_fd(), &path, libc::O_RDONLY | libc::O_DIRECTORY).ctx(
            || "opening directory (is an earlier entry of that name not a directory?)".into(),
        )?;
        set_xattrs_fd(dir.as_raw_fd(), xattrs)?;
        fchown(&File::from(dir), header)?;
        self.dirs.push(DirMeta {
            path: path.clone(),
            mode: header_mode(header)?,
            mtime: header.mtime().unwrap_or(0),
        });
        // An entry of its own: its metadata is the archive's, not a lower's.
        self.implied.remove(&path);
        if !comps.is_empty() {
            self.seen.insert(path, Seen::Dir);
        }
        Ok(())
    }

    fn whiteout(&mut self, parent: &[&OsStr], name: &[u8]) -> Result<()> {
        self.open_parent(parent)?;
        let dir = &self.parent_cache.as_ref().expect("opened above").1;
        if name == OPAQUE_MARKER.as_bytes() {
            // Before or after its directory's own entry: the directory entry
            // only ever adds xattrs, so the marker is never lost.
            return set_xattr(dir_fd_rdonly(dir)?.as_raw_fd(), OVERLAY_OPAQUE_XATTR, b"y");
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(Error::Invalid("whiteout of the root, `.` or `..`".into()));
        }
        if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
            return Ok(());
        }
        let mut path = join(parent);
        if !path.is_empty() {
            path.push("/");
        }
        path.push(OsStr::from_bytes(target));
        if self.seen.contains_key(&path) {
            return Err(Error::Invalid(
                "whiteout of a path this same layer creates".into(),
            ));
        }
        let n = CString::new(target).map_err(|_| Error::Invalid("NUL in whiteout name".into()))?;
        // SAFETY: valid dirfd and NUL-terminated name; 0/0 char device is
        // overlayfs's whiteout.
        cvt(unsafe { libc::mknodat(dir.as_raw_fd(), n.as_ptr(), libc::S_IFCHR, 0) })
            .ctx(|| "creating whiteout".into())?;
        self.seen.insert(path, Seen::Other);
        Ok(())
    }

    /// Opens the directory an entry goes in, beneath the root, into
    /// `parent_cache`. Archives list entries directory by directory, so the
    /// last one is usually still there.
    fn open_parent(&mut self, comps: &[&OsStr]) -> Result<()> {
        let key = join(comps);
        let hit = matches!(&self.parent_cache, Some((k, _)) if *k == key);
        if !hit {
            let (fd, existed) =
                open_or_create_dirs(self.root.as_fd(), comps).map_err(|e| {
                    match e.raw_os_error() {
                        Some(libc::ELOOP) | Some(libc::EXDEV) => Error::Invalid(
                            "path passes through a symlink; refusing to follow it".into(),
                        ),
                        Some(libc::ENOTDIR) => {
                            Error::Invalid("a parent of this path is not a directory".into())
                        }
                        _ => Error::Io {
                            context: "opening parent directory".into(),
                            source: e,
                        },
                    }
                })?;
            for n in existed + 1..=comps.len() {
                self.implied_dir(&comps[..n])?;
            }
            self.parent_cache = Some((key, fd));
        }
        Ok(())
    }

    /// Gives a directory the archive only implied the metadata the layers
    /// below have for it (if any do), and remembers it as implied.
    fn implied_dir(&mut self, comps: &[&OsStr]) -> Result<()> {
        let path = join(comps);
        self.implied.insert(path.clone());
        let Some(lower) = lower_dir(&self.lowers, &path) else {
            return Ok(());
        };
        let dir = open_beneath(self.root.as_fd(), &path, libc::O_RDONLY | libc::O_DIRECTORY)
            .ctx(|| format!("opening implied directory {path:?}"))?;
        fchown_ids(&File::from(dir), lower.uid(), lower.gid())?;
        self.dirs.push(DirMeta {
            path,
            mode: lower.mode() & 0o7777,
            mtime: lower.mtime().max(0) as u64,
        });
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        // Deepest first, so setting a parent's mtime comes after its children.
        self.dirs.sort_by_key(|d| {
            std::cmp::Reverse(
                d.path.as_bytes().iter().filter(|b| **b == b'/').count()
                    + usize::from(!d.path.is_empty()),
            )
        });
        for d in &self.dirs {
            let fd = open_beneath(
                self.root.as_fd(),
                &d.path,
                libc::O_RDONLY | libc::O_DIRECTORY,
            )
            .ctx(|| format!("reopening directory {:?}", d.path))?;
            set_mode_and_mtime(&File::from(fd), &d.path, d.mode, d.mtime)?;
        }
        Ok(())
    }
}

/// Gives open directory `f` (`path`, for errors) its mode and mtime: after
/// its owner, as fchown clears setuid/setgid, and after its entries, as
/// each one changes its mtime.
fn set_mode_and_mtime(f: &File, path: &OsStr, mode: u32, mtime: u64) -> Result<()> {
    cvt(unsafe_fchmod(f, mode)).ctx(|| format!("chmod {path:?}"))?;
    let ts = [timespec(mtime), timespec(mtime)];
    // SAFETY: valid fd and a two-element timespec array.
    cvt(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) }).ctx(|| format!("utimes {path:?}"))
}

fn dir_fd_rdonly(dir: &OwnedFd) -> Result<OwnedFd> {
    open_beneath(
        dir.as_fd(),
        OsStr::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY,
    )
    .ctx(|| "opening directory".into())
}

fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> Result<File> {
    let n = cstr(name).ctx(|| "name".into())?;
    // SAFETY: valid dirfd and NUL-terminated name; O_EXCL|O_NOFOLLOW never
    // opens something that already exists, symlink or not.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).ctx(|| "creating file".into());
    }
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Bytes per write of file data: io::copy's 8 KiB made a 130 MB import
/// 35,000 writes; this makes a file one write up to 256 KiB.
const COPY_CHUNK: usize = 256 * 1024;
const SPARSE_CHUNK: usize = 64 * 1024;

thread_local! {
    /// One copy buffer per extracting thread (allocating 256 KiB per file
    /// would cost an mmap each).
    static COPY_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; COPY_CHUNK]);
}

/// Copies file data in writes of up to COPY_CHUNK; for GNU sparse
/// entries, all-zero chunks become holes.
fn copy_data(src: &mut impl Read, dst: &File, sparse: bool) -> Result<u64> {
    // A hole is found per chunk: smaller chunks for sparse entries.
    let chunk = if sparse { SPARSE_CHUNK } else { COPY_CHUNK };
    COPY_BUF.with_borrow_mut(|buf| copy_with(src, dst, sparse, &mut buf[..chunk]))
}

fn copy_with(src: &mut impl Read, mut dst: &File, sparse: bool, buf: &mut [u8]) -> Result<u64> {
    let mut total = 0u64;
    loop {
        // A sparse entry's reader stops at each data/hole boundary: one
        // read at a time keeps a hole from sharing a chunk with data.
        let n = if sparse {
            src.read(buf)
        } else {
            read_full(src, buf)
        };
        let n = n.ctx(|| "reading file data".into())?;
        if n == 0 {
            return Ok(total);
        }
        if sparse && buf[..n].iter().all(|b| *b == 0) {
            dst.seek(SeekFrom::Current(n as i64))
                .ctx(|| "seeking past hole".into())?;
        } else {
            dst.write_all(&buf[..n])
                .ctx(|| "writing file data".into())?;
        }
        total += n as u64;
    }
}

/// Reads until `buf` is full or the source ends: a tar entry hands out
/// what its reader's buffer holds, often much less than asked.
pub(crate) fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Result<OsString> {
    match entry.link_name_bytes() {
        Some(b) => Ok(OsStr::from_bytes(&b).to_os_string()),
        None => Err(Error::Invalid("link entry without a target".into())),
    }
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(exts) = entry.pax_extensions().ctx(|| "reading PAX header".into())? else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.ctx(|| "reading PAX record".into())?;
        let Ok(key) = ext.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            if name.starts_with(OVERLAY_XATTR_PREFIX) {
                return Err(Error::Invalid(format!(
                    "xattr {name} is reserved for overlayfs"
                )));
            }
            out.push((name.to_string(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

fn header_mode(h: &Header) -> Result<u32> {
    Ok(h.mode()
        .map_err(|e| Error::Invalid(format!("bad mode field: {e}")))?
        & 0o7777)
}

fn ids(h: &Header) -> Result<(u32, u32)> {
    let uid = h
        .uid()
        .map_err(|e| Error::Invalid(format!("bad uid field: {e}")))?;
    let gid = h
        .gid()
        .map_err(|e| Error::Invalid(format!("bad gid field: {e}")))?;
    let uid = u32::try_from(uid).map_err(|_| Error::Invalid(format!("uid {uid} out of range")))?;
    let gid = u32::try_from(gid).map_err(|_| Error::Invalid(format!("gid {gid} out of range")))?;
    Ok((uid, gid))
}

fn fchown(f: &File, h: &Header) -> Result<()> {
    let (uid, gid) = ids(h)?;
    fchown_ids(f, uid, gid)
}

fn fchown_ids(f: &File, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchown(f.as_raw_fd(), uid, gid) }).ctx(|| "chown".into())
}

fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, h: &Header) -> Result<()> {
    let (uid, gid) = ids(h)?;
    let n = cstr(name).ctx(|| "name".into())?;
    // SAFETY: valid dirfd and NUL-terminated name; no symlink following.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            n.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .ctx(|| "chown".into())
}

fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> Result<()> {
    let n = cstr(name).ctx(|| "name".into())?;
    // SAFETY: valid dirfd and NUL-terminated name. Only called for device
    // nodes and fifos, which fchmodat never follows.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), n.as_ptr(), mode, 0) }).ctx(|| "chmod".into())
}

fn unsafe_fchmod(f: &File, mode: u32) -> libc::c_int {
    // SAFETY: valid fd. Called after fchown, which would clear setuid/setgid.
    unsafe { libc::fchmod(f.as_raw_fd(), mode) }
}

fn timespec(secs: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    }
}

fn set_mtime(dir: BorrowedFd<'_>, name: &OsStr, h: &Header) -> Result<()> {
    let t = h.mtime().unwrap_or(0);
    let ts = [timespec(t), timespec(t)];
    let n = cstr(name).ctx(|| "name".into())?;
    // SAFETY: valid dirfd, NUL-terminated name, two-element timespec array.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            n.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .ctx(|| "setting mtime".into())
}

fn set_xattr(fd: i32, name: &str, value: &[u8]) -> Result<()> {
    let n = CString::new(name).map_err(|_| Error::Invalid("NUL in xattr name".into()))?;
    // SAFETY: valid fd, NUL-terminated name, pointer/length of `value`.
    cvt(unsafe { libc::fsetxattr(fd, n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .ctx(|| format!("setting xattr {name}"))
}

fn set_xattrs_fd(fd: i32, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
    xattrs.iter().try_for_each(|(k, v)| set_xattr(fd, k, v))
}

/// xattrs on a symlink or device node, which cannot be opened: through the
/// parent's /proc fd path, with the l- variant so the last component is
/// not followed.
fn set_xattrs_path(dir: BorrowedFd<'_>, name: &OsStr, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    let path =
        CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Invalid("NUL in name".into()))?;
    for (k, v) in xattrs {
        let n = CString::new(k.as_str()).map_err(|_| Error::Invalid("NUL in xattr name".into()))?;
        // SAFETY: NUL-terminated path and name, pointer/length of `v`.
        cvt(unsafe { libc::lsetxattr(path.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) })
            .ctx(|| format!("setting xattr {k}"))?;
    }
    Ok(())
}
