//! Snapshots of layers strata fetched itself, for containerd's remote
//! snapshotter protocol (see snapshotter::remote): each layer of an image
//! is recorded as a committed snapshot named by its chain ID, as
//! containerd's unpacker names them, over the one below. The layers are
//! content-addressed; those extracted for the fetch are recorded
//! unflushed, as a Commit's are, until the flusher has run (see flush).

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::Result;
use crate::store::Store;

use super::{now_ns, SnapshotRecord, SnapshotState};

/// A layer published for a fetch, to be recorded as a snapshot.
pub(crate) struct FetchedLayer {
    pub chain_id: Digest,
    /// containerd's Usage of a committed snapshot reports its inodes.
    pub inodes: u64,
    /// The boot its data is unflushed in; None if it was stored already.
    pub unflushed_boot: Option<String>,
}

/// The label containerd's unpacker names a layer's snapshot by.
pub const TARGET_REF_LABEL: &str = "containerd.io/snapshot.ref";

impl Store {
    /// Records, bottom first, a committed snapshot named by each layer's
    /// chain ID where there is none yet, with `labels` and containerd's
    /// ref label; `layers` are published already.
    /// Call with the store lock held, in the transaction that published
    /// them. Returns the snapshot names.
    pub(crate) fn record_fetched_snapshots(
        &self,
        layers: &[FetchedLayer],
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let mut db = (*self.snapshot_db()?).clone();
        let mut names = Vec::new();
        let mut parent: Option<String> = None;
        for layer in layers {
            let name = layer.chain_id.to_string();
            if db.get(&name).is_none() {
                let mut labels = labels.clone();
                labels.insert(TARGET_REF_LABEL.into(), name.clone());
                let now = now_ns();
                db.snapshots.insert(
                    name.clone(),
                    SnapshotRecord {
                        state: SnapshotState::Committed {
                            layer: layer.chain_id.clone(),
                            inodes: layer.inodes,
                        },
                        parent: parent.clone(),
                        labels,
                        created_ns: now,
                        updated_ns: now,
                        unflushed_boot: layer.unflushed_boot.clone(),
                    },
                );
            }
            parent = Some(name.clone());
            names.push(name);
        }
        self.save_snapshot_db(db)?;
        Ok(names)
    }
}
