//! The snapshot metadata: one JSON document, replaced atomically (temp
//! file, fsync, rename) on every change under the store lock. It is the
//! single source of truth for what containerd has asked for, as
//! containerd's overlay snapshotter keeps one bolt database.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, FileId};
use crate::store::Store;

const FILE: &str = "metadata.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SnapshotState {
    /// A writable layer: the container (id) that holds its upper and work.
    Active { container: String },
    /// Read-only; its mounts are its parents' layers alone.
    View,
    /// A read-only layer, with the inode count measured at commit (its
    /// byte size is the layer's).
    Committed { layer: Digest, inodes: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub state: SnapshotState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the epoch: containerd compares them exactly.
    pub created_ns: u64,
    pub updated_ns: u64,
    /// A committed snapshot whose data is not flushed yet: the boot
    /// (kernel boot_id) it was written in. None once durable (see flush).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unflushed_boot: Option<String>,
}

/// Every snapshot by key (active, view) or name (committed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotDb {
    pub snapshots: BTreeMap<String, SnapshotRecord>,
}

impl Store {
    fn metadata_path(&self) -> std::path::PathBuf {
        self.snapshots_dir().join(FILE)
    }

    /// The snapshot metadata as last written (empty before the first).
    pub fn snapshot_db(&self) -> Result<Arc<SnapshotDb>> {
        let path = self.metadata_path();
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(SnapshotDb::default()))
            }
            Err(e) => return Err(e).ctx(|| format!("stat {}", path.display())),
            Ok(md) => {
                if let Some(db) = self.snapshot_cache.get::<SnapshotDb>(FileId::of(&md)) {
                    return Ok(db);
                }
            }
        }
        self.read_snapshot_db(&path)
    }

    /// Parses the file, identified by the same open file it is read
    /// from, so a concurrent replacement cannot pair old id, new contents.
    fn read_snapshot_db(&self, path: &Path) -> Result<Arc<SnapshotDb>> {
        let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let id = FileId::of(&f.metadata().ctx(|| format!("stat {}", path.display()))?);
        let mut data = Vec::new();
        f.read_to_end(&mut data)
            .ctx(|| format!("reading {}", path.display()))?;
        let db: Arc<SnapshotDb> = Arc::new(fsutil::parse_json(path, &data)?);
        self.snapshot_cache.put(id, db.clone());
        Ok(db)
    }

    /// Replaces the metadata durably. Call with the store lock held.
    pub(crate) fn save_snapshot_db(&self, db: SnapshotDb) -> Result<()> {
        let path = self.metadata_path();
        fsutil::write_json_atomic(&path, &db)?;
        let md = std::fs::metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        self.snapshot_cache.put(FileId::of(&md), Arc::new(db));
        Ok(())
    }
}

impl SnapshotDb {
    pub fn get(&self, key: &str) -> Option<&SnapshotRecord> {
        self.snapshots.get(key)
    }

    pub fn require(&self, key: &str) -> Result<&SnapshotRecord> {
        self.get(key).ok_or_else(|| Error::NotFound {
            kind: "snapshot",
            name: key.to_string(),
        })
    }

    /// The layers of every committed snapshot.
    pub fn committed_layers(&self) -> impl Iterator<Item = Digest> + '_ {
        self.snapshots.values().filter_map(|r| match &r.state {
            SnapshotState::Committed { layer, .. } => Some(layer.clone()),
            _ => None,
        })
    }

    /// The layers under a snapshot whose parent is `parent`, bottom first.
    pub fn layer_chain(&self, parent: Option<&str>) -> Result<Vec<Digest>> {
        let mut chain = Vec::new();
        let mut next = parent;
        while let Some(key) = next {
            let rec = self.require(key)?;
            match &rec.state {
                SnapshotState::Committed { layer, .. } => chain.push(layer.clone()),
                _ => {
                    return Err(Error::Invalid(format!(
                        "parent {key:?} is not a committed snapshot"
                    )))
                }
            }
            next = rec.parent.as_deref();
        }
        chain.reverse();
        Ok(chain)
    }

    /// The first snapshot whose parent is `key`, if any.
    pub fn first_child(&self, key: &str) -> Option<&str> {
        self.snapshots
            .iter()
            .find(|(_, r)| r.parent.as_deref() == Some(key))
            .map(|(k, _)| k.as_str())
    }

    /// The key of the active snapshot whose writable layer is `container`.
    pub fn key_of_container(&self, container: &str) -> Option<&str> {
        self.snapshots
            .iter()
            .find(|(_, r)| {
                matches!(&r.state, SnapshotState::Active { container: c } if c == container)
            })
            .map(|(k, _)| k.as_str())
    }
}
