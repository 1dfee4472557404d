//! For tests and benches of the driver and the profiler: a throwaway store
//! on a real filesystem that cleans up its mounts even on panic,
//! privileged-test gating, image building and tree snapshots.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::archive::write::read_xattrs;
use crate::containers::CreateOptions;
use crate::image::build::{write_docker_archive, LayerTar};
use crate::import::{import, ImportOptions};
use crate::store::StoreOptions;
use crate::{fsutil, Store};

pub mod containerd;
pub mod docker;
pub mod loopfs;
pub mod podman;
pub mod registry;

/// Privileged tests run as root. In CI (CI=true) not being root is a
/// failure, never a skip.
pub fn privileged() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("privileged test cannot run: not root, and CI=true forbids skipping");
    }
    eprintln!("skipping privileged test: not root");
    false
}

/// A store in a fresh directory under /var/tmp (a disk filesystem: the
/// upper layer must not be tmpfs). Dropping it, on panic too, unmounts
/// everything beneath it and deletes it.
pub struct TestStore {
    pub dir: PathBuf,
    pub store: Store,
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

impl TestStore {
    pub fn new() -> TestStore {
        TestStore::with_options(StoreOptions::default())
    }

    pub fn with_options(options: StoreOptions) -> TestStore {
        let base = PathBuf::from("/var/tmp/strata-tests");
        fs::create_dir_all(&base).unwrap();
        let dir = base.join(format!("t{}", fsutil::random_hex(6)));
        fs::create_dir(&dir).unwrap();
        let store = Store::open_with(dir.join("root"), options).unwrap();
        TestStore { dir, store }
    }

    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Builds a docker-archive directory from layer builders (bottom
    /// first) and imports it as `name`.
    pub fn image(&self, name: &str, layers: Vec<LayerFn>) -> String {
        self.image_into(&self.store, name, layers)
    }

    /// The same, into another store (one at an odd path, say).
    pub fn image_into(&self, store: &Store, name: &str, layers: Vec<LayerFn>) -> String {
        let work = self.scratch(&format!("build-{}", name.replace([':', '/'], "_")));
        let archive = docker_archive_dir(&work, name, layers);
        import(
            store,
            archive.to_str().unwrap(),
            &ImportOptions {
                name: Some(name.into()),
                progress: false,
            },
        )
        .unwrap();
        name.to_string()
    }

    pub fn container(&self, image: &str) -> (String, PathBuf) {
        let c = self
            .store
            .create_container(image, &CreateOptions::default())
            .unwrap();
        let merged = self.store.mount_container(&c.id).unwrap();
        (c.id, merged)
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        unmount_beneath(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub use crate::mount::unmount_beneath;

/// setxattr(2) of `name` = `value` on `path` (following a symlink); it
/// must succeed.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated path and name, pointer/length of `value`.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// stdout of an engine CLI's run `what` (e.g. `ctr ["run", ...]`), which
/// must have succeeded: else a panic with everything it printed.
pub fn stdout_of_success(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills every process (but this one) whose command line names `dir`:
/// what an engine started under a test's directory (shims, conmon) can
/// outlive the engine.
pub fn kill_processes_naming(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if pid as u32 != std::process::id() && String::from_utf8_lossy(&cmdline).contains(&needle) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// `docker_archive_dir`, packed as the one tar `docker save` writes:
/// `work`/image.tar, returned.
pub fn docker_save_tar(work: &Path, tag: &str, layers: Vec<LayerFn>) -> PathBuf {
    let archive = docker_archive_dir(work, tag, layers);
    let tar = work.join("image.tar");
    let ok = std::process::Command::new("tar")
        .arg("-C")
        .arg(&archive)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    tar
}

/// Builds the layers (bottom first) as tars in `work` and a `docker
/// save` directory tagged `tag` from them, `work`/archive, returned.
pub fn docker_archive_dir(work: &Path, tag: &str, layers: Vec<LayerFn>) -> PathBuf {
    let mut tars = Vec::new();
    for (i, f) in layers.into_iter().enumerate() {
        let mut t = LayerTar::create(&work.join(format!("{i}.tar"))).unwrap();
        f(&mut t);
        tars.push(t.finish().unwrap());
    }
    let archive = work.join("archive");
    write_docker_archive(&archive, tag, &tars).unwrap();
    archive
}

/// Rewrites the snapshot metadata by hand, under the store lock, as a
/// test makes what a crash or an earlier boot would have left.
pub fn edit_snapshot_db(store: &Store, edit: impl FnOnce(&mut crate::snapshots::SnapshotDb)) {
    let _lock = store.lock().unwrap();
    let mut db = (*store.snapshot_db().unwrap()).clone();
    edit(&mut db);
    store.save_snapshot_db(db).unwrap();
}

/// Writes one layer's entries.
pub type LayerFn = Box<dyn FnOnce(&mut LayerTar)>;

/// Boxes a layer-building closure.
pub fn layer(f: impl FnOnce(&mut LayerTar) + 'static) -> LayerFn {
    Box::new(f)
}

/// What a tree holds, comparable across filesystems: type, mode, owner,
/// size, content, link target, xattrs; and which paths share an inode.
/// Directory mtimes are left out (creating children changes them).
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    inodes: &mut BTreeMap<(u64, u64), String>,
) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let mut desc = format!("mode={:o} uid={} gid={}", md.mode(), md.uid(), md.gid());
        if ft.is_file() {
            let data = fs::read(&p).unwrap();
            desc += &format!(" file size={} sum={:x}", data.len(), fnv(&data));
            if md.nlink() > 1 {
                let first = inodes
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| rel.clone());
                desc += &format!(" linked-with={first}");
            }
        } else if ft.is_symlink() {
            desc += &format!(" symlink->{}", fs::read_link(&p).unwrap().display());
        } else if ft.is_char_device() || ft.is_block_device() {
            desc += &format!(" dev={}:{}", libc::major(md.rdev()), libc::minor(md.rdev()));
        } else if ft.is_dir() {
            desc += " dir";
        }
        for (k, v) in read_xattrs(&p).unwrap() {
            desc += &format!(" xattr {k}={v:?}");
        }
        out.insert(rel, desc);
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}
