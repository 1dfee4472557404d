//! Small filesystem helpers for durable, atomic state changes.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};

/// Writes `value` as JSON so that readers see the old or the new file, never
/// half of one: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).expect("metadata always serialises");
    write_atomic(path, &data)
}

/// Like `write_json_atomic`, without the fsyncs: for state that does not
/// outlive a reboot anyway (mount reference counts), where readers still
/// must never see half a file.
pub fn replace_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).expect("metadata always serialises");
    let dir = path.parent().expect("metadata paths have a parent");
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        random_hex(8)
    ));
    fs::write(&tmp, data).ctx(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {} into place", path.display()))
}

/// Writes `value` to `path` as it is, unsynced: for a file no one can see
/// yet (inside a staging directory).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).expect("metadata always serialises");
    fs::write(path, data).ctx(|| format!("writing {}", path.display()))
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().expect("metadata paths have a parent");
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        random_hex(8)
    ));
    let mut f = File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .ctx(|| format!("writing {}", tmp.display()))?;
    f.sync_all().ctx(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("renaming {} into place", path.display()))?;
    sync_dir(dir)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let data = fs::read(path).ctx(|| format!("reading {}", path.display()))?;
    parse_json(path, &data)
}

/// `data`, read from `path`, as JSON; a parse error names the file.
pub fn parse_json<T: DeserializeOwned>(path: &Path, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .ctx(|| format!("syncing {}", path.display()))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Flushes a whole filesystem: cheaper than fsync per file after writing a
/// layer of thousands of files, and what makes an import durable.
pub fn syncfs(path: &Path) -> Result<()> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f))
        .ctx(|| format!("syncfs {}", path.display()))
}

/// Lowercase hex from the kernel's random pool.
pub fn random_hex(bytes: usize) -> String {
    random_bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` random characters from [0-9a-z].
pub fn random_name(len: usize) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    random_bytes(len)
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn random_bytes(bytes: usize) -> Vec<u8> {
    let mut buf = vec![0u8; bytes];
    let mut filled = 0;
    while filled < bytes {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), bytes - filled, 0) };
        assert!(
            n > 0,
            "getrandom failed: {}",
            std::io::Error::last_os_error()
        );
        filled += n as usize;
    }
    buf
}

/// Removes a tree if it exists. Layer trees hold root-owned 0000 files and
/// immutable-looking modes; as root remove_dir_all handles them.
/// Two processes may delete the same abandoned tree at once (recovery in
/// each): whatever the other removed first is not an error. A plain file
/// (a transaction marker) is removed too.
pub fn remove_tree(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).ctx(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(_) if !path.exists() => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => remove_tree(path),
        Err(e) => Err(e).ctx(|| format!("removing {}", path.display())),
    }
}

/// A directory removed on drop unless `keep` was called: staging areas that
/// must not outlive a failed operation.
///
/// It holds an flock on `.owner` inside it for as long as it lives. A
/// process killed mid-operation releases that lock with its last fd, so
/// recovery can tell an abandoned staging directory (lock free) from one a
/// concurrent strata process is still filling (lock held).
pub struct StagingDir {
    path: PathBuf,
    keep: bool,
    _owner: File,
}

pub const OWNER_FILE: &str = ".owner";

impl StagingDir {
    /// Made under a hidden `.new-` name, locked, then renamed: no other
    /// process ever sees it under its real name without its lock held
    /// (recovery deletes unlocked staging directories).
    pub fn create(parent: &Path, prefix: &str) -> Result<StagingDir> {
        let id = random_hex(8);
        let nascent = parent.join(format!("{NASCENT_PREFIX}{prefix}-{id}"));
        let path = parent.join(format!("{prefix}-{id}"));
        fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
        fs::create_dir(&nascent).ctx(|| format!("creating {}", nascent.display()))?;
        let owner = File::create(nascent.join(OWNER_FILE))
            .ctx(|| format!("creating {}", nascent.display()))?;
        // SAFETY: valid fd; flock has no memory-safety preconditions.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&owner), libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .ctx(|| format!("locking {}", nascent.display()));
        }
        fs::rename(&nascent, &path).ctx(|| format!("creating {}", path.display()))?;
        Ok(StagingDir {
            path,
            keep: false,
            _owner: owner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands the directory over (it is about to be renamed into place).
    /// The owner file goes with it; its lock ends when `self` drops.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        let _ = fs::remove_file(self.path.join(OWNER_FILE));
        self.path.clone()
    }
}

/// Marks a multi-step change in progress, from its first visible step to
/// its last. Finished with `done`. Dropped without it (an error part-way),
/// it stays behind, exactly as after a crash, so the next command's
/// recovery reconciles whatever was half done.
///
/// A plain file, no lock of its own: a transaction only runs while its
/// process holds the store lock, and recovery only acts under that lock,
/// so a marker recovery can see there belongs to a process that is gone.
pub struct Txn(Option<PathBuf>);

impl Txn {
    /// Call with the store lock held.
    pub fn begin(tmp: &Path, what: &str) -> Result<Txn> {
        let path = tmp.join(format!("txn-{what}-{}", random_hex(8)));
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx(|| format!("creating {}", path.display()))?;
        Ok(Txn(Some(path)))
    }

    pub fn done(mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        // Not done: left for recovery.
        self.0.take();
    }
}

/// Staging directories are born under this prefix (see StagingDir::create).
const NASCENT_PREFIX: &str = ".new-";

/// Whether a staging directory's owner is gone (its lock can be taken).
/// One still being born (`.new-`) counts only once it is 10 s old: its
/// creator may not have locked it yet (a window of microseconds).
pub fn is_abandoned(dir: &Path) -> bool {
    let nascent = dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(NASCENT_PREFIX));
    if nascent {
        let old = fs::symlink_metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 10));
        if !old {
            return false;
        }
    }
    let Ok(f) = File::open(dir.join(OWNER_FILE)) else {
        // No owner file: a directory renamed in for deletion, a transaction
        // marker (see Txn), or one whose creator died before locking it.
        // Under the store lock, nobody will finish any of them.
        return true;
    };
    // SAFETY: valid fd.
    unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        ) == 0
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// How layer files reach the disk when a layer is extracted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// One syncfs per layer before it is published.
    #[default]
    Filesystem,
    /// fsync every extracted file (much slower; for filesystems whose
    /// syncfs cannot be trusted).
    PerFile,
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<SyncMode, String> {
        match s {
            "filesystem" => Ok(SyncMode::Filesystem),
            "per-file" => Ok(SyncMode::PerFile),
            _ => Err(format!("{s:?} is not a sync mode: filesystem or per-file")),
        }
    }
}

/// xattr `name` of `path` (not following symlinks); None when it has none.
pub fn get_xattr(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("paths have no NUL");
    let n = std::ffi::CString::new(name).expect("xattr names have no NUL");
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: NUL-terminated strings and a buffer of buf.len() bytes.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len >= 0 {
            buf.truncate(len as usize);
            return Ok(Some(buf));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            _ => return Err(e).ctx(|| format!("reading xattr {name} of {}", path.display())),
        }
    }
}

pub fn xattr_is(path: &Path, name: &str, value: &[u8]) -> bool {
    matches!(get_xattr(path, name), Ok(Some(v)) if v == value)
}

/// Reads at `offset` until `buf` is full or the file ends; returns how
/// much it read. A positional read may return less than asked.
pub fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes zeros over `from..to` of `f`: blocks written now, not a hole or
/// an unwritten preallocation, so that a later overwrite there allocates
/// nothing and its fdatasync commits no filesystem metadata.
pub fn write_zeros(f: &File, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(&vec![0; to.saturating_sub(from) as usize], from)
}

/// A file opened for reading on first use, once it exists, and kept open:
/// for files overwritten in place and never replaced (the snapshot
/// metadata's), so that a read on a hot path costs no open.
#[derive(Debug, Default)]
pub struct KeptOpen(std::sync::Mutex<Option<std::sync::Arc<File>>>);

impl KeptOpen {
    /// The open file, None while `path` does not exist.
    pub fn get(&self, path: &Path) -> Result<Option<std::sync::Arc<File>>> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = kept.as_ref() {
            return Ok(Some(f.clone()));
        }
        match File::open(path) {
            Ok(f) => Ok(Some(kept.insert(std::sync::Arc::new(f)).clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx(|| format!("opening {}", path.display())),
        }
    }
}
