//! What a snapshot's mounts are, in the shapes containerd's own overlay
//! snapshotter returns: described, never mounted here (containerd mounts
//! them itself, in its own namespace).
//!
//! Lower layers are named by their absolute short links (`ROOT/l/NAME`):
//! containerd shortens a long `lowerdir=` list by moving into the common
//! parent directory and naming each layer relative to it, and only 7-byte
//! link names keep the kernel's 500 layers within the one page mount(2)
//! takes. (A relative option string cannot cross the API; absolute paths
//! through l/ can, and resolve the same on every kernel.)

use crate::error::Result;
use crate::mount::{self, MountSpec};
use crate::store::Store;

use super::metadata::{SnapshotDb, SnapshotRecord, SnapshotState};

impl Store {
    pub(crate) fn mounts_of(
        &self,
        db: &SnapshotDb,
        key: &str,
        rec: &SnapshotRecord,
    ) -> Result<Vec<MountSpec>> {
        let layers = db.layer_chain(rec.parent.as_deref())?;
        let mut lowers = Vec::with_capacity(layers.len());
        for chain in layers.iter().rev() {
            let link = self.require_layer(chain)?.link;
            lowers.push(self.links_dir().join(link).display().to_string());
        }
        let spec = match &rec.state {
            SnapshotState::Active { container } => {
                let upper = self.upper_dir(container).display().to_string();
                if lowers.is_empty() {
                    MountSpec::bind(upper, false)
                } else {
                    let work = self.container_dir(container).join("work");
                    let mut options = overlay_options();
                    options.push(format!("workdir={}", work.display()));
                    options.push(format!("upperdir={upper}"));
                    options.push(format!("lowerdir={}", lowers.join(":")));
                    MountSpec::overlay(options)
                }
            }
            SnapshotState::View => match lowers.len() {
                0 => MountSpec::bind(self.empty_dir().display().to_string(), true),
                1 => MountSpec::bind(self.layer_diff(&layers[0]).display().to_string(), true),
                _ => {
                    let mut options = overlay_options();
                    options.push(format!("lowerdir={}", lowers.join(":")));
                    MountSpec::overlay(options)
                }
            },
            SnapshotState::Committed { .. } => {
                return Err(crate::Error::InUse(format!(
                    "snapshot {key:?} is committed: only active snapshots and views have mounts"
                )))
            }
        };
        Ok(vec![spec])
    }
}

/// The CLI's fixed overlay settings, except that directories renamed out
/// of a lower layer are redirected rather than refused with EXDEV (moby
/// issue 25409, containerd's suite's Rename case): containerd computes a
/// snapshot's diff by comparing mounts, so redirects reach its layers
/// intact, and programs that rename directories (Go's os.Rename, dpkg)
/// work in containerd's containers.
fn overlay_options() -> Vec<String> {
    mount::overlay_options(false)
        .iter()
        .map(|(k, v)| match k.to_bytes() {
            b"redirect_dir" => "redirect_dir=on".to_string(),
            _ => format!("{}={v}", k.to_string_lossy()),
        })
        .collect()
}
