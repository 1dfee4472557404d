//! Snapshots of layers strata fetched itself, for containerd's remote
//! snapshotter protocol (see snapshotter::remote): each layer of an image
//! is recorded as a committed snapshot named by its chain ID, as
//! containerd's unpacker names them, over the one below. The layers are
//! content-addressed and durable before they are recorded.

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::Result;
use crate::store::Store;

use super::{now_ns, SnapshotRecord, SnapshotState};

/// The label containerd's unpacker names a layer's snapshot by.
pub const TARGET_REF_LABEL: &str = "containerd.io/snapshot.ref";

impl Store {
    /// Records, bottom first, a committed snapshot named by each layer's
    /// chain ID where there is none yet, with `labels` and containerd's
    /// ref label; `layers` are (chain ID, inodes), published already.
    /// Call with the store lock held, in the transaction that published
    /// them. Returns the snapshot names.
    pub(crate) fn record_fetched_snapshots(
        &self,
        layers: &[(Digest, u64)],
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let mut db = (*self.snapshot_db()?).clone();
        let mut names = Vec::new();
        let mut parent: Option<String> = None;
        for (chain, inodes) in layers {
            let name = chain.to_string();
            if db.get(&name).is_none() {
                let mut labels = labels.clone();
                labels.insert(TARGET_REF_LABEL.into(), name.clone());
                let now = now_ns();
                db.snapshots.insert(
                    name.clone(),
                    SnapshotRecord {
                        state: SnapshotState::Committed {
                            layer: chain.clone(),
                            inodes: *inodes,
                        },
                        parent: parent.clone(),
                        labels,
                        created_ns: now,
                        updated_ns: now,
                        unflushed_boot: None,
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
