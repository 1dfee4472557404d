//! Snapshots of layers strata fetched itself, for containerd's remote
//! snapshotter protocol (see snapshotter::remote): each layer of an image
//! becomes a committed snapshot named by its chain ID, as containerd's
//! unpacker names them, over the one below. They are content-addressed
//! layers, shared with the CLI's images, and durable before they are
//! recorded.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::fsutil::Txn;
use crate::import::{publish_layers, StagedImage};
use crate::sizes;
use crate::store::Store;

use super::{now_ns, SnapshotRecord, SnapshotState};

/// The label containerd's unpacker names a layer's snapshot by.
pub const TARGET_REF_LABEL: &str = "containerd.io/snapshot.ref";

impl Store {
    /// Publishes `staged`'s layers and records, bottom first, a committed
    /// snapshot named by each one's chain ID where there is none yet, with
    /// `labels` and containerd's ref label. Returns the snapshot names.
    pub(crate) fn publish_fetched_snapshots(
        &self,
        staged: StagedImage,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        // Measured before the lock: containerd's Usage of a committed
        // snapshot reports its inodes.
        let inodes = staged
            .layers
            .iter()
            .map(|s| sizes::dir_usage(&s.diff_dir(self)).map(|u| u.inodes))
            .collect::<Result<Vec<_>>>()?;
        let _lock = self.lock()?;
        let txn = Txn::begin(&self.tmp_dir(), "snapshot-fetch")?;
        let layers = publish_layers(self, staged.layers)?;
        let mut db = (*self.snapshot_db()?).clone();
        let mut names = Vec::new();
        let mut parent: Option<String> = None;
        for (layer, inodes) in layers.into_iter().zip(inodes) {
            let name = layer.chain_id.to_string();
            if db.get(&name).is_none() {
                let mut labels = labels.clone();
                labels.insert(TARGET_REF_LABEL.into(), name.clone());
                let now = now_ns();
                db.snapshots.insert(
                    name.clone(),
                    SnapshotRecord {
                        state: SnapshotState::Committed {
                            layer: layer.chain_id,
                            inodes,
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
        txn.done();
        Ok(names)
    }
}
