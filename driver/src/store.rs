//! The store root and its layout, and the lock that serialises changes.
//!
//! ```text
//! ROOT/
//!   lock                   flock: exclusive for changes, shared for reads
//!   layers/<chain>/diff    read-only layer contents (overlay lower dirs)
//!   layers/<chain>/layer.json
//!   l/<short>              -> ../layers/<chain>/diff (short names keep the
//!                             legacy mount option string within a page)
//!   images/<id>/image.json, images/<id>/config.json
//!   containers/<id>/{upper,work,merged}, container.json
//!   volumes/<name>/_data   outside the layer area; bind-mounted
//!   snapshots/metadata.{0,1}   containerd's snapshots: checkpoints,
//!   snapshots/metadata.journal and the changes since (see snapshots/)
//!   snapshots/trash/       removed snapshots' data, until Cleanup
//!   snapshots/empty/       what a view with no parent shows
//!   tmp/                   staging; everything becomes visible by rename
//!   downloads/<hex>        partial blobs of an interrupted pull (resumed)
//! ```

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

pub const DEFAULT_ROOT: &str = "/var/lib/strata";

pub use crate::fsutil::SyncMode;

/// Settings a store is opened with. The library reads no environment:
/// front doors decide (the CLI from its flags and STRATA_* variables).
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreOptions {
    /// Which mount interface the CLI's own mounts use; None: the kernel
    /// version decides (see MountApi::for_kernel).
    pub mount_api: Option<crate::mount::MountApi>,
    pub sync: SyncMode,
    /// New containers copy up metadata only (metacopy=on) unless asked
    /// otherwise: the store-wide form of `create --metacopy`.
    pub metacopy: bool,
}

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    options: StoreOptions,
    /// The snapshot metadata as last read, shared by clones (see
    /// snapshots::metadata).
    pub(crate) snapshot_cache: crate::snapshots::SnapshotCache,
}

/// A held store lock; released on drop.
pub struct StoreLock {
    _file: File,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, with default options.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    pub fn open_with(root: impl Into<PathBuf>, options: StoreOptions) -> Result<Store> {
        let root = root.into();
        let store = Store {
            root,
            options,
            snapshot_cache: Default::default(),
        };
        for dir in [
            "layers",
            "l",
            "images",
            "containers",
            "volumes",
            "tmp",
            "downloads",
            "snapshots/trash",
            "snapshots/empty",
        ] {
            let p = store.root.join(dir);
            fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("l")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// Partial layer blobs of interrupted pulls, resumed by the next one.
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    /// Data of removed snapshots, deleted by the next Cleanup.
    pub fn trash_dir(&self) -> PathBuf {
        self.root.join("snapshots/trash")
    }
    /// Always empty: the read-only view of no parent.
    pub fn empty_dir(&self) -> PathBuf {
        self.root.join("snapshots/empty")
    }

    /// Exclusive lock for any change to metadata.
    pub fn lock(&self) -> Result<StoreLock> {
        self.flock(libc::LOCK_EX)
    }

    /// Shared lock for a consistent read.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        self.flock(libc::LOCK_SH)
    }

    fn flock(&self, op: libc::c_int) -> Result<StoreLock> {
        let path = self.root.join("lock");
        let file = lock_file(&path, op)?.ctx(|| format!("locking {}", path.display()))?;
        Ok(StoreLock { _file: file })
    }
}

/// Opens (creating) `path` and flocks it with `op`. The outer error is
/// opening; the inner one the lock (EWOULDBLOCK with LOCK_NB when held).
pub(crate) fn lock_file(path: &Path, op: libc::c_int) -> Result<std::io::Result<File>> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx(|| format!("opening {}", path.display()))?;
    // SAFETY: valid fd; flock has no memory-safety preconditions.
    if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
        return Ok(Err(std::io::Error::last_os_error()));
    }
    Ok(Ok(file))
}
