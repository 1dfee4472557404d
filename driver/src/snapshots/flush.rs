//! Committed snapshots become durable shortly after Commit, many at once,
//! not inside it.
//!
//! containerd's own snapshotter never flushes a layer; strata does, but
//! one syncfs per Commit put the whole layer's writeback on the import's
//! critical path. Only a power loss or a kernel crash can lose data that
//! is in the page cache, and either means a new boot. So Commit records
//! the boot its data is unflushed in; `flush_snapshots` (run by the
//! snapshotter a moment after each commit, at start and at stop) flushes
//! the filesystem and clears the mark. Recovery in the same boot simply
//! flushes; recovery in a later boot drops every snapshot still marked,
//! with its descendants, and containerd extracts them again from its
//! content store, which it keeps durable itself. Layers strata fetched
//! for containerd (see fetched) are recorded the same way; an image that
//! comes to share one flushes it first (sync_unflushed_layers).

use std::collections::BTreeSet;

use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::store::Store;

use crate::digest::Digest;

use super::metadata::{SnapshotDb, SnapshotState};

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's identity: a new random id every time the kernel starts.
pub fn boot_id() -> Result<String> {
    std::fs::read_to_string(BOOT_ID)
        .map(|s| s.trim().to_string())
        .ctx(|| format!("reading {BOOT_ID}"))
}

impl Store {
    /// Flushes what was committed unflushed in this boot and records it
    /// durable. Returns how many snapshots became durable. The set is
    /// taken before the flush: a commit made during it stays marked for
    /// the next one.
    pub fn flush_snapshots(&self) -> Result<usize> {
        let boot = boot_id()?;
        let pending: Vec<String> = self
            .snapshot_db()?
            .snapshots
            .iter()
            .filter(|(_, r)| r.unflushed_boot.as_deref() == Some(boot.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        fsutil::syncfs(&self.layers_dir())?;
        let _lock = self.lock()?;
        let mut db = (*self.snapshot_db()?).clone();
        let mut flushed = 0;
        for key in &pending {
            if let Some(rec) = db.snapshots.get_mut(key) {
                if rec.unflushed_boot.take().is_some() {
                    flushed += 1;
                }
            }
        }
        if flushed > 0 {
            self.save_snapshot_db(db)?;
        }
        Ok(flushed)
    }

    /// Flushes the filesystem if any of `layers` is a snapshot's still
    /// unflushed, so that what is about to stand on them (an image) stands
    /// on durable data. The marks stay for flush_snapshots to clear: it
    /// takes the store lock, which the caller holds.
    pub(crate) fn sync_unflushed_layers(&self, layers: &[Digest]) -> Result<()> {
        let db = self.snapshot_db()?;
        let unflushed = db.snapshots.values().any(|r| {
            r.unflushed_boot.is_some()
                && matches!(&r.state, SnapshotState::Committed { layer, .. } if layers.contains(layer))
        });
        if unflushed {
            fsutil::syncfs(&self.layers_dir())?;
        }
        Ok(())
    }
}

impl SnapshotDb {
    /// Snapshots committed unflushed in another boot than `boot`, and every
    /// snapshot that descends from one: their data may not have survived.
    pub fn torn_snapshots(&self, boot: &str) -> BTreeSet<String> {
        let mut torn: BTreeSet<String> = self
            .snapshots
            .iter()
            .filter(|(_, r)| r.unflushed_boot.as_deref().is_some_and(|b| b != boot))
            .map(|(k, _)| k.clone())
            .collect();
        loop {
            let children: Vec<String> = self
                .snapshots
                .iter()
                .filter(|(k, r)| {
                    !torn.contains(*k) && r.parent.as_ref().is_some_and(|p| torn.contains(p))
                })
                .map(|(k, _)| k.clone())
                .collect();
            if children.is_empty() {
                return torn;
            }
            torn.extend(children);
        }
    }
}
