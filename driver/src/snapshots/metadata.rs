//! The snapshot metadata: one JSON document, replaced atomically (temp
//! file, fsync, rename) on every change under the store lock. It is the
//! single source of truth for what containerd has asked for, as
//! containerd's overlay snapshotter keeps one bolt database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsutil;
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
}

/// Every snapshot by key (active, view) or name (committed).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotDb {
    pub snapshots: BTreeMap<String, SnapshotRecord>,
}

impl Store {
    /// The snapshot metadata as last written (empty before the first).
    pub fn snapshot_db(&self) -> Result<SnapshotDb> {
        let path = self.snapshots_dir().join(FILE);
        if !path.exists() {
            return Ok(SnapshotDb::default());
        }
        fsutil::read_json(&path)
    }

    /// Replaces the metadata durably. Call with the store lock held.
    pub(crate) fn save_snapshot_db(&self, db: &SnapshotDb) -> Result<()> {
        fsutil::write_json_atomic(&self.snapshots_dir().join(FILE), db)
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
