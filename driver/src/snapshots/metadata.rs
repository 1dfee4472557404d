//! The snapshot metadata: one JSON document, changed under the store
//! lock. Each change is one journal entry (see journal) after the newest
//! checkpoint of the whole (see slots): one data flush, whatever the
//! document's size.
//! It is the single source of truth for what containerd has asked for, as
//! containerd's overlay snapshotter keeps one bolt database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::store::Store;

use super::journal::Journal;
use super::slots::{SlotHeaders, Slots};

/// `snapshots/metadata.0` and `.1`: the checkpoints (see slots).
const STEM: &str = "metadata";
/// The changes since the newest checkpoint (see journal).
const JOURNAL_FILE: &str = "metadata.journal";
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// The metadata as last read or written, with where it was read up to;
/// shared by a store's clones. Only ever an older state than the files':
/// every read catches it up with the journal, and a new checkpoint (other
/// slot headers) discards it.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    kept: Arc<Mutex<Option<Kept>>>,
    /// The slots and the journal, with the files they keep open.
    files: Arc<std::sync::OnceLock<(Slots, Journal)>>,
}

#[derive(Clone)]
struct Kept {
    headers: SlotHeaders,
    /// The checkpoint's slot; None before the first.
    slot: Option<usize>,
    /// The generation `db` is at, and where the journal's next entry goes.
    generation: u64,
    journal_end: u64,
    db: Arc<SnapshotDb>,
}

impl SnapshotCache {
    fn get(&self, headers: &SlotHeaders) -> Option<Kept> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.as_ref().filter(|k| k.headers == *headers).cloned()
    }

    fn put(&self, kept: Kept) {
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
    }
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotCache")
    }
}

/// One journal entry's worth: what one save changed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Change {
    Put { key: String, record: SnapshotRecord },
    Delete { key: String },
}

fn changes_between(old: &SnapshotDb, new: &SnapshotDb) -> Vec<Change> {
    let mut changes: Vec<Change> = new
        .snapshots
        .iter()
        .filter(|(k, r)| old.snapshots.get(*k) != Some(*r))
        .map(|(k, r)| Change::Put {
            key: k.clone(),
            record: r.clone(),
        })
        .collect();
    changes.extend(
        old.snapshots
            .keys()
            .filter(|k| !new.snapshots.contains_key(*k))
            .map(|k| Change::Delete { key: k.clone() }),
    );
    changes
}

impl Store {
    fn snapshot_files(&self) -> &(Slots, Journal) {
        self.snapshot_cache.files.get_or_init(|| {
            let dir = self.snapshots_dir();
            let journal = Journal::new(&dir.join(JOURNAL_FILE), &self.tmp_dir());
            (Slots::new(&dir, STEM), journal)
        })
    }

    fn snapshot_slots(&self) -> &Slots {
        &self.snapshot_files().0
    }

    fn snapshot_journal(&self) -> &Journal {
        &self.snapshot_files().1
    }

    /// The snapshot metadata as last written (empty before the first).
    pub fn snapshot_db(&self) -> Result<Arc<SnapshotDb>> {
        Ok(self.kept_snapshot_db()?.db)
    }

    fn kept_snapshot_db(&self) -> Result<Kept> {
        let slots = self.snapshot_slots();
        let headers = slots.headers()?;
        let (kept, fresh) = match self.snapshot_cache.get(&headers) {
            Some(kept) => (kept, false),
            None => (self.read_checkpoint(slots, headers)?, true),
        };
        let (kept, advanced) = self.caught_up(kept)?;
        if fresh || advanced {
            self.snapshot_cache.put(kept.clone());
        }
        Ok(kept)
    }

    fn read_checkpoint(&self, slots: &Slots, headers: SlotHeaders) -> Result<Kept> {
        let (headers, newest) = slots.newest(&headers)?;
        Ok(match newest {
            Some(n) => Kept {
                db: Arc::new(fsutil::parse_json(&slots.paths()[n.slot], &n.body)?),
                slot: Some(n.slot),
                generation: n.generation,
                journal_end: 0,
                headers,
            },
            None => Kept {
                db: self.legacy_snapshot_db()?,
                slot: None,
                generation: 0,
                journal_end: 0,
                headers,
            },
        })
    }

    /// `kept` with the journal's entries after it applied, and whether
    /// there were any.
    fn caught_up(&self, mut kept: Kept) -> Result<(Kept, bool)> {
        let journal = self.snapshot_journal();
        let entries = journal.read_from(kept.journal_end, kept.generation)?;
        if entries.is_empty() {
            return Ok((kept, false));
        }
        let mut db = (*kept.db).clone();
        for e in entries {
            let changes: Vec<Change> = fsutil::parse_json(journal.path(), &e.body)?;
            for c in changes {
                match c {
                    Change::Put { key, record } => db.snapshots.insert(key, record),
                    Change::Delete { key } => db.snapshots.remove(&key),
                };
            }
            kept.generation = e.generation;
            kept.journal_end = e.end;
        }
        kept.db = Arc::new(db);
        Ok((kept, true))
    }

    /// What a store made before the slots kept: one JSON file, replaced
    /// by rename. Read until the first change writes a checkpoint.
    fn legacy_snapshot_db(&self) -> Result<Arc<SnapshotDb>> {
        let path = self.snapshots_dir().join(LEGACY_FILE);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(e).ctx(|| format!("reading {}", path.display())),
            Ok(data) => Ok(Arc::new(fsutil::parse_json(&path, &data)?)),
        }
    }

    /// Replaces the metadata durably: what changed as one journal entry,
    /// or, once the journal is full (or before the first checkpoint), the
    /// whole as a checkpoint. Call with the store lock held.
    pub(crate) fn save_snapshot_db(&self, db: SnapshotDb) -> Result<()> {
        let kept = self.kept_snapshot_db()?;
        let changes = changes_between(&kept.db, &db);
        if changes.is_empty() {
            return Ok(());
        }
        let generation = kept.generation + 1;
        let appended = match kept.slot {
            Some(_) => {
                let entry = serde_json::to_vec(&changes).expect("changes always serialise");
                self.snapshot_journal()
                    .append(kept.journal_end, generation, &entry)?
            }
            None => None,
        };
        let saved = match appended {
            Some(end) => Kept {
                generation,
                journal_end: end,
                db: Arc::new(db),
                ..kept
            },
            None => self.checkpoint(kept.slot, generation, db)?,
        };
        self.snapshot_cache.put(saved);
        Ok(())
    }

    /// The whole metadata into the other slot; the journal starts over.
    fn checkpoint(&self, current: Option<usize>, generation: u64, db: SnapshotDb) -> Result<Kept> {
        let body = serde_json::to_vec(&db).expect("metadata always serialises");
        let (headers, slot) = self.snapshot_slots().write(current, generation, &body)?;
        // Once a slot holds it, the legacy file is only a stale copy.
        let legacy = self.snapshots_dir().join(LEGACY_FILE);
        match std::fs::remove_file(&legacy) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("removing {}", legacy.display()))
            }
            _ => {}
        }
        Ok(Kept {
            headers,
            slot: Some(slot),
            generation,
            journal_end: 0,
            db: Arc::new(db),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestStore;

    /// What a process that never saw the store reads.
    fn reread(s: &Store) -> Arc<SnapshotDb> {
        Store::open(s.root()).unwrap().snapshot_db().unwrap()
    }

    fn keys(db: &SnapshotDb) -> Vec<String> {
        db.snapshots.keys().cloned().collect()
    }

    /// Labels near containerd's limit make each entry ~4 KiB, so the
    /// journal fills within a test.
    fn labelled(s: &Store, key: &str) {
        let labels = BTreeMap::from([("big".to_string(), "x".repeat(4000))]);
        s.create_snapshot(true, key, "", labels).unwrap();
    }

    #[test]
    fn changes_reach_a_fresh_reader_through_the_journal_and_across_checkpoints() {
        let ts = TestStore::new();
        let s = &ts.store;
        labelled(s, "first");
        let checkpoint = s.snapshot_slots().headers().unwrap();
        labelled(s, "second");
        assert_eq!(
            s.snapshot_slots().headers().unwrap(),
            checkpoint,
            "journalled"
        );
        assert_eq!(keys(&reread(s)), ["first", "second"]);

        let entries = super::super::journal::CAPACITY as usize / 4000 + 10;
        for i in 0..entries {
            labelled(s, &format!("k{i:04}"));
        }
        s.remove_snapshot("first").unwrap();
        assert_ne!(
            s.snapshot_slots().headers().unwrap(),
            checkpoint,
            "checkpointed"
        );
        let db = reread(s);
        assert_eq!(db.snapshots.len(), entries + 1);
        assert!(db.get("first").is_none() && db.get("second").is_some());
        assert_eq!(db.snapshots, s.snapshot_db().unwrap().snapshots);
    }

    #[test]
    fn a_torn_journal_entry_loses_only_its_own_change() {
        let ts = TestStore::new();
        let s = &ts.store;
        labelled(s, "a");
        labelled(s, "b");
        let before_c = s.kept_snapshot_db().unwrap().journal_end;
        labelled(s, "c");
        // The entry adding "c" torn, as a power cut mid-write leaves it.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(s.snapshot_journal().path())
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"torn", before_c + 100).unwrap();
        assert_eq!(keys(&reread(s)), ["a", "b"]);
        // The next change goes where the torn one was, and is read.
        let fresh = Store::open(s.root()).unwrap();
        labelled(&fresh, "d");
        assert_eq!(keys(&reread(s)), ["a", "b", "d"]);
    }
}
