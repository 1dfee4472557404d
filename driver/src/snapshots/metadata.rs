//! The snapshot metadata: one JSON document, written whole on every
//! change under the store lock, durable with one data flush (see slots).
//! It is the single source of truth for what containerd has asked for, as
//! containerd's overlay snapshotter keeps one bolt database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::store::Store;

use super::slots::{SlotHeaders, Slots};

/// `snapshots/metadata.0` and `.1` (see slots).
const STEM: &str = "metadata";
const LEGACY_FILE: &str = "metadata.json";

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

/// The metadata as last read or written, with the slot headers it was
/// read under; shared by a store's clones.
#[derive(Clone, Default)]
pub struct SnapshotCache(Arc<Mutex<Option<Kept>>>);

#[derive(Clone)]
struct Kept {
    headers: SlotHeaders,
    /// The slot and generation `db` came from; None: no slot written yet.
    newest: Option<(usize, u64)>,
    db: Arc<SnapshotDb>,
}

impl SnapshotCache {
    fn get(&self, headers: &SlotHeaders) -> Option<Kept> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.as_ref().filter(|k| k.headers == *headers).cloned()
    }

    fn put(&self, kept: Kept) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
    }
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotCache")
    }
}

impl Store {
    fn snapshot_slots(&self) -> Slots {
        Slots::new(&self.snapshots_dir(), STEM)
    }

    /// The snapshot metadata as last written (empty before the first).
    pub fn snapshot_db(&self) -> Result<Arc<SnapshotDb>> {
        Ok(self.kept_snapshot_db()?.db)
    }

    fn kept_snapshot_db(&self) -> Result<Kept> {
        let slots = self.snapshot_slots();
        let headers = slots.headers()?;
        if let Some(kept) = self.snapshot_cache.get(&headers) {
            return Ok(kept);
        }
        let (headers, newest) = slots.newest(&headers)?;
        let kept = match newest {
            Some(n) => Kept {
                db: Arc::new(fsutil::parse_json(&slots.paths()[n.slot], &n.body)?),
                newest: Some((n.slot, n.generation)),
                headers,
            },
            None => Kept {
                db: self.legacy_snapshot_db()?,
                newest: None,
                headers,
            },
        };
        self.snapshot_cache.put(kept.clone());
        Ok(kept)
    }

    /// What a store made before the slots kept: one JSON file, replaced
    /// by rename. Read until the first change writes a slot.
    fn legacy_snapshot_db(&self) -> Result<Arc<SnapshotDb>> {
        let path = self.snapshots_dir().join(LEGACY_FILE);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
            Ok(data) => Ok(Arc::new(fsutil::parse_json(&path, &data)?)),
        }
    }

    /// Replaces the metadata durably. Call with the store lock held.
    pub(crate) fn save_snapshot_db(&self, db: SnapshotDb) -> Result<()> {
        let kept = self.kept_snapshot_db()?;
        let body = serde_json::to_vec(&db).expect("metadata always serialises");
        let (headers, newest) = self.snapshot_slots().write(kept.newest, &body)?;
        // Once a slot holds it, the legacy file is only a stale copy.
        let legacy = self.snapshots_dir().join(LEGACY_FILE);
        match std::fs::remove_file(&legacy) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("removing {}", legacy.display()))
            }
            _ => {}
        }
        self.snapshot_cache.put(Kept {
            headers,
            newest: Some(newest),
            db: Arc::new(db),
        });
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

    /// Each active snapshot's container and the layers it stands on; one
    /// whose parents do not resolve is left out (its record says).
    pub fn active_chains(&self) -> impl Iterator<Item = (&str, Vec<Digest>)> + '_ {
        self.snapshots.values().filter_map(|r| match &r.state {
            SnapshotState::Active { container } => self
                .layer_chain(r.parent.as_deref())
                .ok()
                .map(|chain| (container.as_str(), chain)),
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
