//! containerd's snapshots on the store, modelled on containerd's own
//! overlay snapshotter but made of strata's parts:
//! - an active snapshot is a writable layer (a container record owned by
//!   the snapshot's key), so `ps -s`, `diff`, `system df` and `check`
//!   cover containerd's containers;
//! - committing one moves its upper directory into a new read-only layer,
//!   shared and counted like an imported one;
//! - a view is metadata alone: its mounts are its parents' layers,
//!   read-only.
//!
//! Keys are names in the metadata, never paths. Every change takes the
//! store lock and a transaction marker, publishes data before the metadata
//! that names it and retires data after, so a crash anywhere leaves only
//! orphans, which recovery removes (or, for a half-moved commit, moves
//! back). Remove is a rename under the lock; the deletion waits for
//! Cleanup, because containerd's garbage collector removes while holding
//! its own lock.

mod fetched;
pub mod filter;
mod flush;
mod journal;
mod metadata;
mod mounts;
mod slots;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub(crate) use fetched::FetchedLayer;
pub use fetched::TARGET_REF_LABEL;
pub use flush::boot_id;
pub use metadata::{SnapshotCache, SnapshotDb, SnapshotRecord, SnapshotState};

use crate::containers::ContainerRecord;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, Txn};
use crate::layers::now_secs;
use crate::mount::{self, MountSpec};
use crate::sizes;
use crate::store::Store;
use filter::{AnyFilter, Fields};

/// containerd's limit on a label's key and value together (labels.Validate).
pub const MAX_LABEL_BYTES: usize = 4096;
/// Keys are stored and compared, never used as paths; a bound keeps one
/// client from bloating the metadata every other call reads.
pub const MAX_KEY_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Active,
    View,
    Committed,
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub kind: Kind,
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

impl Fields for SnapshotInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        let kind = match self.kind {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        };
        match path {
            [f] if f == "kind" => Some(kind.into()),
            [f] if f == "name" => Some(self.name.clone()),
            // Always present, empty for none, as containerd's adaptors
            // have it: its unpacker walks for `parent==""` to find a
            // remote snapshotter's bottom layer.
            [f] if f == "parent" => Some(self.parent.clone().unwrap_or_default()),
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => {
                self.labels.get(&rest.join(".")).cloned()
            }
            _ => None,
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn info_of(name: &str, rec: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        name: name.to_string(),
        kind: match rec.state {
            SnapshotState::Active { .. } => Kind::Active,
            SnapshotState::View => Kind::View,
            SnapshotState::Committed { .. } => Kind::Committed,
        },
        parent: rec.parent.clone(),
        labels: rec.labels.clone(),
        created: UNIX_EPOCH + Duration::from_nanos(rec.created_ns),
        updated: UNIX_EPOCH + Duration::from_nanos(rec.updated_ns),
    }
}

pub fn validate_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::Invalid(format!("{what} is empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::Invalid(format!(
            "{what} is {} bytes, over the {MAX_KEY_BYTES} allowed",
            key.len()
        )));
    }
    if key.contains('\0') {
        return Err(Error::Invalid(format!("{what} {key:?} contains NUL")));
    }
    Ok(())
}

pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() || k.contains('\0') || v.contains('\0') {
            return Err(Error::Invalid(format!(
                "label {k:?}: keys must be non-empty, keys and values free of NUL"
            )));
        }
        if k.len() + v.len() > MAX_LABEL_BYTES {
            return Err(Error::Invalid(format!(
                "label {:?}: key and value are {} bytes, over containerd's {MAX_LABEL_BYTES}",
                k.chars().take(64).collect::<String>(),
                k.len() + v.len()
            )));
        }
    }
    Ok(())
}

impl Store {
    /// containerd's Prepare (`view` false) and View.
    pub fn create_snapshot(
        &self,
        view: bool,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<MountSpec>> {
        validate_key("snapshot key", key)?;
        validate_labels(&labels)?;
        let parent = (!parent.is_empty()).then(|| parent.to_string());
        let _lock = self.lock()?;
        let mut db = (*self.snapshot_db()?).clone();
        if db.get(key).is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {key:?}")));
        }
        let layers = db.layer_chain(parent.as_deref())?;
        let txn = Txn::begin(&self.tmp_dir(), "snapshot-create")?;
        let state = if view {
            SnapshotState::View
        } else {
            let record = self.writable_layer_record(key, fsutil::random_hex(32), layers)?;
            let c = self.publish_container(record, false)?;
            SnapshotState::Active { container: c.id }
        };
        let now = now_ns();
        let rec = SnapshotRecord {
            state,
            parent,
            labels,
            created_ns: now,
            updated_ns: now,
            unflushed_boot: None,
        };
        db.snapshots.insert(key.to_string(), rec.clone());
        // Described before anything is recorded: a failure leaves only an
        // orphan writable layer and the open transaction, for recovery.
        let mounts = self.mounts_of(&db, key, &rec)?;
        self.save_snapshot_db(db)?;
        txn.done();
        Ok(mounts)
    }

    /// The record of active snapshot `key`'s writable layer, container
    /// `id` over `layers`.
    fn writable_layer_record(
        &self,
        key: &str,
        id: String,
        layers: Vec<Digest>,
    ) -> Result<ContainerRecord> {
        Ok(ContainerRecord {
            id,
            name: self.snapshot_container_name(key)?,
            image: None,
            layers,
            snapshot: Some(key.to_string()),
            volumes: Vec::new(),
            volatile: false,
            // containerd's mounts are described with metacopy off.
            metacopy: false,
            quota: None,
            mount_count: 0,
            created: now_secs(),
        })
    }

    /// Active snapshot `key`, and the record its writable layer has.
    pub(crate) fn expected_writable_layer(&self, key: &str) -> Result<ContainerRecord> {
        let db = self.snapshot_db()?;
        let rec = db.require(key)?;
        let SnapshotState::Active { container } = &rec.state else {
            return Err(Error::Invalid(format!("snapshot {key:?} is not active")));
        };
        let layers = db.layer_chain(rec.parent.as_deref())?;
        self.writable_layer_record(key, container.clone(), layers)
    }

    /// Makes active snapshot `key`'s writable layer again, empty, where a
    /// power cut took it (Prepare does not sync it: see check). Call with
    /// the lock held.
    pub(crate) fn remake_writable_layer(&self, key: &str) -> Result<()> {
        let record = self.expected_writable_layer(key)?;
        let dir = self.container_dir(&record.id);
        if dir.exists() {
            mount::unmount_beneath(&dir);
            self.move_to_trash(&dir)?;
        }
        self.publish_container(record, false).map(drop)
    }

    /// The writable layer's name in `strata ps`: the key itself where it
    /// is a usable, unclaimed container name. containerd's keys
    /// (`namespace/N/key`) contain a `/`, which CLI names never do, so
    /// only other keys cost a look at the containers.
    fn snapshot_container_name(&self, key: &str) -> Result<String> {
        let usable = key.len() <= 255 && !key.chars().any(char::is_control);
        if usable && (key.contains('/') || !self.containers()?.iter().any(|c| c.name == key)) {
            return Ok(key.to_string());
        }
        Ok(format!("snapshot-{}", fsutil::random_hex(6)))
    }

    pub fn snapshot_mounts(&self, key: &str) -> Result<Vec<MountSpec>> {
        let _lock = self.lock_shared()?;
        let db = self.snapshot_db()?;
        let rec = db.require(key)?;
        self.mounts_of(&db, key, rec)
    }

    pub fn stat_snapshot(&self, key: &str) -> Result<SnapshotInfo> {
        let _lock = self.lock_shared()?;
        let db = self.snapshot_db()?;
        Ok(info_of(key, db.require(key)?))
    }

    /// Every snapshot the filters select. The metadata is read under the
    /// lock and matched after it is released.
    pub fn list_snapshots(&self, filters: &[String]) -> Result<Vec<SnapshotInfo>> {
        let filter = AnyFilter::parse(filters)?;
        let db = {
            let _lock = self.lock_shared()?;
            self.snapshot_db()?
        };
        Ok(db
            .snapshots
            .iter()
            .map(|(k, r)| info_of(k, r))
            .filter(|i| filter.matches(i))
            .collect())
    }

    /// containerd's Update: only labels change. No field paths replaces
    /// them all, `labels` too; `labels.KEY` sets one (an empty or missing
    /// value deletes it); any other path is an invalid argument.
    pub fn update_snapshot(
        &self,
        key: &str,
        labels: BTreeMap<String, String>,
        fieldpaths: &[String],
    ) -> Result<SnapshotInfo> {
        validate_labels(&labels)?;
        let _lock = self.lock()?;
        let mut db = (*self.snapshot_db()?).clone();
        let rec = db.snapshots.get_mut(key).ok_or_else(|| Error::NotFound {
            kind: "snapshot",
            name: key.to_string(),
        })?;
        if fieldpaths.is_empty() {
            rec.labels = labels;
        } else {
            for path in fieldpaths {
                if let Some(label) = path.strip_prefix("labels.") {
                    match labels.get(label).filter(|v| !v.is_empty()) {
                        Some(v) => rec.labels.insert(label.to_string(), v.clone()),
                        None => rec.labels.remove(label),
                    };
                } else if path == "labels" {
                    rec.labels = labels.clone();
                } else {
                    return Err(Error::Invalid(format!(
                        "cannot update field {path:?} of snapshot {key:?}: only labels change"
                    )));
                }
            }
        }
        rec.updated_ns = now_ns().max(rec.created_ns);
        let info = info_of(key, rec);
        self.save_snapshot_db(db)?;
        Ok(info)
    }

    /// What the snapshot itself holds, without its parents: a committed
    /// one's size as measured at commit; an active one's upper, walked now.
    pub fn snapshot_usage(&self, key: &str) -> Result<Usage> {
        let state = {
            let _lock = self.lock_shared()?;
            self.snapshot_db()?.require(key)?.state.clone()
        };
        match state {
            SnapshotState::Active { container } => {
                let u = sizes::dir_usage(&self.upper_dir(&container))?;
                Ok(Usage {
                    size: u.bytes,
                    inodes: u.inodes,
                })
            }
            SnapshotState::View => Ok(Usage::default()),
            SnapshotState::Committed { layer, inodes } => Ok(Usage {
                size: self.require_layer(&layer)?.size,
                inodes,
            }),
        }
    }

    /// containerd's Commit: the active snapshot `key` becomes the
    /// committed snapshot `name`, its upper directory a read-only layer,
    /// durable once flush_snapshots has run.
    pub fn commit_snapshot(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        validate_key("snapshot name", name)?;
        validate_labels(&labels)?;
        let container = self.active_container(&*self.snapshot_db()?, key)?;
        // Measured before the lock, without holding up other clients. Not
        // flushed here: flush_snapshots does that shortly after, for many
        // commits at once, and until then the record says which boot the
        // data is unflushed in (a later boot's recovery drops it).
        let usage = sizes::dir_usage(&self.upper_dir(&container))?;
        let boot = flush::boot_id()?;

        let _lock = self.lock()?;
        let mut db = (*self.snapshot_db()?).clone();
        if self.active_container(&db, key)? != container {
            return Err(Error::Conflict(format!("snapshot {key:?}")));
        }
        if db.get(name).is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {name:?}")));
        }
        let parent = db.require(key)?.parent.clone();
        let parent_layer = db.layer_chain(parent.as_deref())?.pop();
        let txn = Txn::begin(&self.tmp_dir(), "snapshot-commit")?;
        let layer =
            Digest::of_bytes(format!("strata snapshot {}", fsutil::random_hex(16)).as_bytes());
        self.publish_snapshot_layer(&container, &layer, parent_layer.as_ref(), usage.bytes)?;
        db.snapshots.remove(key);
        let now = now_ns();
        db.snapshots.insert(
            name.to_string(),
            SnapshotRecord {
                state: SnapshotState::Committed {
                    layer,
                    inodes: usage.inodes,
                },
                parent,
                labels,
                created_ns: now,
                updated_ns: now,
                unflushed_boot: Some(boot),
            },
        );
        self.save_snapshot_db(db)?;
        self.move_to_trash(&self.container_dir(&container))?;
        txn.done();
        Ok(())
    }

    fn active_container(&self, db: &SnapshotDb, key: &str) -> Result<String> {
        match &db.require(key)?.state {
            SnapshotState::Active { container } => Ok(container.clone()),
            _ => Err(Error::InUse(format!(
                "snapshot {key:?} is not active: only an active snapshot can be committed"
            ))),
        }
    }

    /// containerd's Remove: refused while the snapshot has children. The
    /// metadata changes first; the data is moved to the trash, and its
    /// layer only if nothing else stands on it.
    pub fn remove_snapshot(&self, key: &str) -> Result<()> {
        let _lock = self.lock()?;
        let mut db = (*self.snapshot_db()?).clone();
        let rec = db.require(key)?.clone();
        if let Some(child) = db.first_child(key) {
            return Err(Error::InUse(format!(
                "cannot remove snapshot {key:?}: snapshot {child:?} is its child; remove the children first"
            )));
        }
        let txn = Txn::begin(&self.tmp_dir(), "snapshot-rm")?;
        db.snapshots.remove(key);
        self.save_snapshot_db(db)?;
        match rec.state {
            SnapshotState::Active { container } => {
                self.move_to_trash(&self.container_dir(&container))?
            }
            SnapshotState::View => {}
            SnapshotState::Committed { layer, .. } => {
                if !self.referenced_layers()?.contains(&layer) {
                    match self.layer(&layer)? {
                        Some(record) => self.retire_layer(&record, &self.trash_path())?,
                        None => self.move_to_trash(&self.layer_dir(&layer))?,
                    }
                }
            }
        }
        txn.done();
        Ok(())
    }

    /// Out of sight by one rename; Cleanup deletes it.
    pub(crate) fn move_to_trash(&self, path: &std::path::Path) -> Result<()> {
        fs::rename(path, self.trash_path())
            .ctx(|| format!("moving {} to the trash", path.display()))
    }

    /// A fresh name in the trash.
    fn trash_path(&self) -> std::path::PathBuf {
        self.trash_dir().join(fsutil::random_hex(8))
    }

    /// containerd's Cleanup: deletes what Remove set aside. Nothing in the
    /// trash is named by any metadata, so no lock is needed.
    pub fn cleanup_snapshots(&self) -> Result<usize> {
        let trash = self.trash_dir();
        let mut removed = 0;
        for e in fs::read_dir(&trash).ctx(|| format!("reading {}", trash.display()))? {
            let path = e.ctx(|| format!("reading {}", trash.display()))?.path();
            // Never delete into a mount that outlived its snapshot.
            mount::unmount_beneath(&path);
            fsutil::remove_tree(&path)?;
            removed += 1;
        }
        Ok(removed)
    }
}
