//! Containers: one writable layer (upper + work) over a chain of read-only
//! layers: an image's (`strata create`), or a containerd snapshot's parents
//! (`strata snapshotter`), so both front doors share one kind of writable
//! layer that `ps`, `diff`, `system df` and `check` all see.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::beneath::open_or_create_dirs;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, StagingDir, Txn};
use crate::layers::now_secs;
use crate::mount::{self, MountApi, OverlaySpec};
use crate::quota::{self, ContainerQuota, QuotaLimit};
use crate::store::Store;
use crate::volumes::VolumeMount;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image it was created from; None for a containerd snapshot.
    pub image: Option<Digest>,
    /// The layers beneath it, bottom first, fixed at create time.
    pub layers: Vec<Digest>,
    /// The containerd snapshot key that owns this writable layer. Such a
    /// container is mounted, committed and removed through containerd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub volumes: Vec<VolumeMount>,
    pub volatile: bool,
    /// Mounted with metacopy=on: its upper may hold metacopy files and
    /// redirected directories, which it must always be mounted to read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub metacopy: bool,
    /// The writable layer's project and limit (`create --size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<ContainerQuota>,
    /// Outstanding `strata mount`s; unmounted when it drops to zero.
    pub mount_count: u32,
    pub created: u64,
}

const RECORD: &str = "container.json";

impl ContainerRecord {
    /// containerd mounts, commits and removes its snapshots' writable
    /// layers itself; the CLI doing so behind its back would break them.
    pub fn refuse_if_snapshot(&self, what: &str) -> Result<()> {
        match &self.snapshot {
            Some(key) => Err(Error::InUse(format!(
                "container {} is containerd snapshot {key:?}: {what} it through containerd",
                self.name
            ))),
            None => Ok(()),
        }
    }
}

/// Options of `create`; the default is an unnamed, durable container
/// without volumes.
#[derive(Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    pub volumes: Vec<VolumeMount>,
    pub volatile: bool,
    /// `--metacopy`: metadata-only copy-up (the store's default if unset).
    pub metacopy: bool,
    /// `--size`: cap the writable layer (XFS or ext4 with prjquota).
    pub size: Option<QuotaLimit>,
}

impl Store {
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }
    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("upper")
    }
    pub fn merged_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("merged")
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let dir = self.containers_dir();
        let mut out: Vec<ContainerRecord> = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let e = e.ctx(|| "reading containers".into())?;
            if let Some(c) = read_record(&e.path())? {
                out.push(c);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Container directories without a record to read: what a power cut
    /// leaves of a `create` that never returned (see publish_container).
    pub(crate) fn unfinished_containers(&self) -> Result<Vec<PathBuf>> {
        let dir = self.containers_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let path = e.ctx(|| "reading containers".into())?.path();
            if path.is_dir() && read_record(&path)?.is_none() {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// By full ID, exact name, or unique ID prefix (docker's order).
    pub fn find_container(&self, reference: &str) -> Result<ContainerRecord> {
        // A full ID names its directory: no need to read every record.
        if reference.len() == 64 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Some(c) = read_record(&self.container_dir(reference))? {
                return Ok(c);
            }
        }
        let all = self.containers()?;
        if let Some(c) = all
            .iter()
            .find(|c| c.name == reference || c.id == reference)
        {
            return Ok(c.clone());
        }
        let matches: Vec<_> = all
            .iter()
            .filter(|c| reference.len() >= 4 && c.id.starts_with(reference))
            .collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(Error::NotFound {
                kind: "container",
                name: reference.into(),
            }),
            n => Err(Error::Ambiguous {
                kind: "container",
                name: reference.into(),
                matches: n,
            }),
        }
    }

    /// Records a new mount count. Not fsynced: after a crash or reboot the
    /// mounts are gone whatever the count says, and mount_container checks
    /// the real mount table before trusting it.
    fn save_mount_count(&self, c: &ContainerRecord) -> Result<()> {
        fsutil::replace_json(&self.container_dir(&c.id).join(RECORD), c)
    }

    pub fn create_container(
        &self,
        image_ref: &str,
        opts: &CreateOptions,
    ) -> Result<ContainerRecord> {
        let _lock = self.lock()?;
        let record = self.new_container_record(image_ref, opts)?;
        self.publish_container(record, true)
    }

    /// `create --mount`: creates and mounts the container under one lock,
    /// in one process, with one journal commit (the record's), which is
    /// what a `run`-style start pays. A kill at any point leaves no
    /// container or a complete one: the record is durable before the
    /// mount, and the `txn-` marker lets recovery zero a count whose mount
    /// never happened. A failed mount removes the container again.
    pub fn create_mounted(
        &self,
        image_ref: &str,
        opts: &CreateOptions,
    ) -> Result<(ContainerRecord, PathBuf)> {
        let _lock = self.lock()?;
        let mut record = self.new_container_record(image_ref, opts)?;
        record.mount_count = 1;
        let txn = Txn::begin(&self.tmp_dir(), "create-mount")?;
        let record = self.publish_container(record, true)?;
        if let Err(e) = self.mount_stack(&record) {
            // Left to recovery (the marker stays) if this fails too.
            self.discard_container(&record, false)?;
            txn.done();
            return Err(e);
        }
        txn.done();
        let merged = self.merged_dir(&record.id);
        Ok((record, merged))
    }

    /// A new container's record for `image_ref`: name, volumes, metacopy
    /// and quota checked and chosen. Call with the store lock held.
    fn new_container_record(
        &self,
        image_ref: &str,
        opts: &CreateOptions,
    ) -> Result<ContainerRecord> {
        let image = self.find_image(image_ref)?;
        for v in &opts.volumes {
            self.volume(&v.volume)?;
        }
        let id = fsutil::random_hex(32);
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("strata-{}", &id[..12]));
        if name.is_empty() || name.contains('/') || name.len() > 128 {
            return Err(Error::Invalid(format!("container name {name:?}")));
        }
        let existing = self.containers()?;
        if existing.iter().any(|c| c.name == name) {
            return Err(Error::AlreadyExists(format!("container {name}")));
        }
        let metacopy = opts.metacopy || self.options().metacopy;
        if metacopy {
            mount::check_metacopy_support()?;
        }
        let quota = match opts.size {
            Some(limit) => {
                let dir = self.containers_dir();
                quota::check_support(&dir)?;
                let taken = existing.iter().filter_map(|c| c.quota).map(|q| q.project);
                Some(ContainerQuota {
                    project: quota::next_project(&dir, taken)?,
                    limit,
                })
            }
            None => None,
        };
        Ok(ContainerRecord {
            id,
            name,
            image: Some(image.id.clone()),
            layers: image.layers.clone(),
            snapshot: None,
            volumes: opts.volumes.clone(),
            volatile: opts.volatile,
            metacopy,
            quota,
            mount_count: 0,
            created: now_secs(),
        })
    }

    /// Makes `record` (its layers checked, its id fresh) visible with an
    /// empty upper, work and merged directory. Call with the store lock held.
    ///
    /// `durable` syncs the record and the rename. A containerd snapshot's
    /// writable layer skips that: containerd never syncs what it writes
    /// there either, and the snapshot metadata (which is synced) is what
    /// recovery reconciles against.
    pub(crate) fn publish_container(
        &self,
        record: ContainerRecord,
        durable: bool,
    ) -> Result<ContainerRecord> {
        for l in &record.layers {
            self.require_layer(l)?;
        }
        if record.layers.len() > mount::MAX_LAYERS {
            return Err(Error::TooManyLayers {
                count: record.layers.len(),
                limit: mount::MAX_LAYERS,
            });
        }
        let staged = StagingDir::create(&self.tmp_dir(), "container")?;
        for d in ["upper", "work", "merged"] {
            fs::create_dir(staged.path().join(d)).ctx(|| format!("creating {d}"))?;
        }
        // Before the container is visible: a layer that could not be
        // capped is never published uncapped.
        if let Some(q) = record.quota {
            quota::apply(&staged.path().join("upper"), q.project, q.limit)?;
        }
        // Complete before anyone can see it: the staging dir is private.
        let json = staged.path().join(RECORD);
        fsutil::write_json(&json, &record)?;
        let from = staged.keep();
        let dest = self.container_dir(&record.id);
        fs::rename(&from, &dest).ctx(|| format!("publishing container {}", dest.display()))?;
        if durable {
            // Synced after the rename, not before it: one journal commit
            // instead of three. On ext4 and XFS the first fsync commits
            // every change made so far, so the other two find nothing
            // left (2.0 -> 0.7 ms on ext4, 1.2 -> 0.7 ms on XFS). A power
            // cut before they return may leave the record empty, which
            // read_record takes for a create that never returned.
            fsutil::sync_file(&dest.join(RECORD))?;
            fsutil::sync_dir(&dest)?;
            fsutil::sync_dir(&self.containers_dir())?;
        }
        Ok(record)
    }

    /// Mounts the container's merged view (reference-counted) and returns it.
    pub fn mount_container(&self, reference: &str) -> Result<PathBuf> {
        let _lock = self.lock()?;
        let mut c = self.find_container(reference)?;
        c.refuse_if_snapshot("mount")?;
        let merged = self.merged_dir(&c.id);
        // After a reboot the count outlives the mount: remount then.
        // Mount table and record change in two steps: if this process dies
        // or fails between them, the next command reconciles the two.
        let txn = Txn::begin(&self.tmp_dir(), "mount")?;
        if c.mount_count == 0 || !mount::is_mountpoint(&merged) {
            self.mount_stack(&c)?;
            c.mount_count = 0;
        }
        c.mount_count += 1;
        self.save_mount_count(&c)?;
        txn.done();
        Ok(merged)
    }

    fn mount_stack(&self, c: &ContainerRecord) -> Result<MountApi> {
        let mut lowers = Vec::new();
        let mut short = Vec::new();
        let links = self.links_dir();
        for chain in c.layers.iter().rev() {
            let rec = self.require_layer(chain)?;
            lowers.push(self.layer_diff(chain));
            short.push(rec.link);
        }
        let upper = self.upper_dir(&c.id);
        let work = self.container_dir(&c.id).join("work");
        let merged = self.merged_dir(&c.id);
        let api = self
            .options()
            .mount_api
            .unwrap_or_else(mount::MountApi::for_kernel);
        let api = mount::mount_overlay(
            &OverlaySpec {
                lowers,
                short_lowers: short,
                links_base: &links,
                upper: &upper,
                work: &work,
                target: &merged,
                volatile: c.volatile,
                metacopy: c.metacopy,
            },
            api,
        )?;
        if let Err(e) = self.mount_volumes(c, &merged) {
            let _ = self.unmount_all(c, true);
            return Err(e);
        }
        Ok(api)
    }

    fn mount_volumes(&self, c: &ContainerRecord, merged: &std::path::Path) -> Result<()> {
        let root: OwnedFd = File::open(merged)
            .ctx(|| format!("opening {}", merged.display()))?
            .into();
        for v in &c.volumes {
            let comps: Vec<&OsStr> = v
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(OsStr::new)
                .collect();
            // Resolved beneath the merged root: an image's symlink cannot
            // redirect the bind mount elsewhere on the host.
            let (target, _) = open_or_create_dirs(std::os::fd::AsFd::as_fd(&root), &comps)
                .ctx(|| format!("creating volume mount point {} in the container", v.path))?;
            let dir: OwnedFd = crate::archive::beneath::open_beneath(
                std::os::fd::AsFd::as_fd(&target),
                OsStr::new("."),
                libc::O_RDONLY | libc::O_DIRECTORY,
            )
            .ctx(|| format!("opening {}", v.path))?;
            mount::bind(&self.volume_data(&v.volume), &dir, v.readonly)?;
        }
        Ok(())
    }

    /// Unmounts what is mounted of the container: volumes, then overlay.
    pub(crate) fn unmount_all(&self, c: &ContainerRecord, force: bool) -> Result<()> {
        let merged = self.merged_dir(&c.id);
        for v in c.volumes.iter().rev() {
            let p = v.target_in(&merged);
            if mount::is_mountpoint(&p) {
                mount::unmount(&p, force)?;
            }
        }
        if mount::is_mountpoint(&merged) {
            mount::unmount(&merged, force)?;
        }
        Ok(())
    }

    /// Drops one mount reference; unmounts at zero.
    pub fn unmount_container(&self, reference: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut c = self.find_container(reference)?;
        c.refuse_if_snapshot("umount")?;
        if c.mount_count == 0 {
            return Err(Error::Invalid(format!(
                "container {} is not mounted",
                c.name
            )));
        }
        let txn = Txn::begin(&self.tmp_dir(), "umount")?;
        if c.mount_count == 1 {
            self.unmount_all(&c, false)?;
        }
        c.mount_count -= 1;
        self.save_mount_count(&c)?;
        txn.done();
        Ok(())
    }

    /// Removes the container and its writable layer. Refused while mounted
    /// unless `force`, which unmounts first.
    pub fn remove_container(&self, reference: &str, force: bool) -> Result<()> {
        let _lock = self.lock()?;
        let c = self.find_container(reference)?;
        c.refuse_if_snapshot("rm")?;
        let merged = self.merged_dir(&c.id);
        let mounted = c.mount_count > 0 || mount::is_mountpoint(&merged);
        if mounted && !force {
            return Err(Error::InUse(format!(
                "container {} is mounted ({} references); umount it or use -f",
                c.name, c.mount_count
            )));
        }
        let txn = Txn::begin(&self.tmp_dir(), "rm")?;
        self.discard_container(&c, mounted)?;
        txn.done();
        Ok(())
    }

    /// Unmounts (if `mounted`) and deletes a container's directory and
    /// quota. Call with the store lock held and a `txn-` marker begun.
    fn discard_container(&self, c: &ContainerRecord, mounted: bool) -> Result<()> {
        if mounted {
            self.unmount_all(c, true)?;
        }
        let dir = self.container_dir(&c.id);
        let doomed = self
            .tmp_dir()
            .join(format!("rm-container-{}", fsutil::random_hex(8)));
        fs::rename(&dir, &doomed).ctx(|| format!("removing {}", dir.display()))?;
        fsutil::sync_dir(&self.containers_dir())?;
        fsutil::remove_tree(&doomed)?;
        if let Some(q) = c.quota {
            // The container is gone whatever happens here: a limit left
            // behind (the filesystem remounted without prjquota) only
            // holds an id that next_project skips, so it is not an error.
            let _ = quota::release(&self.containers_dir(), q.project);
        }
        Ok(())
    }
}

/// The record in container directory `dir`; None when there is none: no
/// record, or one emptied by a power cut before `create` returned (its
/// data never reached the disk, so it reads as nothing or as zeros).
pub(crate) fn read_record(dir: &Path) -> Result<Option<ContainerRecord>> {
    let path = dir.join(RECORD);
    let data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None)
        }
        Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
    };
    if data.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    fsutil::parse_json(&path, &data).map(Some)
}
