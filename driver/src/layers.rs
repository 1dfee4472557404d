//! The layer store: read-only, content-addressed by chain ID, shared by
//! every image whose stack contains them.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, StagingDir};
use crate::store::Store;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: Digest,
    pub diff_id: Digest,
    pub parent: Option<Digest>,
    /// Apparent size of the layer's contents (see `sizes`).
    pub size: u64,
    /// Short name under `l/`, used in legacy mount option strings (see
    /// LINK_NAME_LEN).
    pub link: String,
    pub created: u64,
    /// Set on a layer made by committing a containerd snapshot: the
    /// writable layer whose upper directory became this layer's diff. Its
    /// IDs are then not content digests (containerd has applied the
    /// changes itself), and an interrupted commit can be rolled back by
    /// moving the diff back (see recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_container: Option<String>,
}

const RECORD: &str = "layer.json";

/// Short link names are this many characters of [0-9a-z] (31 bits).
/// The legacy mount runs from inside l/, so a layer costs "name:", 7
/// bytes, and the kernel's 500 layers fit the one-page option string with
/// room for the upper and work paths. (Docker's 26-character names stop
/// near 130 layers.)
pub const LINK_NAME_LEN: usize = 6;

impl Store {
    pub fn layer_dir(&self, chain: &Digest) -> PathBuf {
        self.layers_dir().join(chain.hex())
    }

    /// The stack beneath a container whose layers are `layers`, bottom
    /// first (as records keep them).
    pub fn lowers_of(&self, layers: &[Digest]) -> crate::lowerstack::Lowers {
        crate::lowerstack::Lowers(layers.iter().rev().map(|l| self.layer_diff(l)).collect())
    }

    /// The directory overlayfs mounts as a lower layer.
    pub fn layer_diff(&self, chain: &Digest) -> PathBuf {
        self.layer_dir(chain).join("diff")
    }

    pub fn layer(&self, chain: &Digest) -> Result<Option<LayerRecord>> {
        let path = self.layer_dir(chain).join(RECORD);
        if !path.exists() {
            return Ok(None);
        }
        fsutil::read_json(&path).map(Some)
    }

    pub fn require_layer(&self, chain: &Digest) -> Result<LayerRecord> {
        self.layer(chain)?.ok_or_else(|| Error::NotFound {
            kind: "layer",
            name: chain.to_string(),
        })
    }

    pub fn layers(&self) -> Result<Vec<LayerRecord>> {
        let mut out = Vec::new();
        let dir = self.layers_dir();
        for entry in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let entry = entry.ctx(|| format!("reading {}", dir.display()))?;
            let rec = entry.path().join(RECORD);
            if rec.exists() {
                out.push(fsutil::read_json(&rec)?);
            }
        }
        Ok(out)
    }

    /// A staging area for a new layer: `<staging>/diff` receives the
    /// contents. It is deleted unless published.
    pub fn stage_layer(&self) -> Result<StagingDir> {
        let staged = StagingDir::create(&self.tmp_dir(), "layer")?;
        let diff = staged.path().join("diff");
        fs::create_dir(&diff).ctx(|| format!("creating {}", diff.display()))?;
        Ok(staged)
    }

    /// Makes a staged layer visible under its chain ID. Call with the store
    /// lock held. If the chain is already stored (another import won the
    /// race) the staged copy is discarded and `shared` is true.
    pub fn publish_layer(
        &self,
        staged: StagingDir,
        chain_id: &Digest,
        diff_id: &Digest,
        parent: Option<&Digest>,
        size: u64,
    ) -> Result<(LayerRecord, bool)> {
        if let Some(existing) = self.layer(chain_id)? {
            return Ok((existing, true));
        }
        let record = LayerRecord {
            chain_id: chain_id.clone(),
            diff_id: diff_id.clone(),
            parent: parent.cloned(),
            size,
            link: self.create_short_link(chain_id)?,
            created: now_secs(),
            from_container: None,
        };
        fsutil::write_json_atomic(&staged.path().join(RECORD), &record)?;
        let dest = self.layer_dir(chain_id);
        let from = staged.keep();
        fs::rename(&from, &dest).ctx(|| format!("publishing layer {}", dest.display()))?;
        fsutil::sync_dir(&self.layers_dir())?;
        Ok((record, false))
    }

    /// Turns a container's upper directory into layer `chain_id`, by
    /// rename: record first, then the diff, so that recovery can tell an
    /// interrupted commit (a layer nothing references whose container
    /// still exists without its upper) and move the diff back. Call with
    /// the store lock held and a transaction open. Nothing is synced here:
    /// the committed snapshot records that it is unflushed until
    /// flush_snapshots has flushed the whole filesystem.
    pub(crate) fn publish_snapshot_layer(
        &self,
        container: &str,
        chain_id: &Digest,
        parent: Option<&Digest>,
        size: u64,
    ) -> Result<LayerRecord> {
        let dir = self.layer_dir(chain_id);
        fs::create_dir(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let record = LayerRecord {
            chain_id: chain_id.clone(),
            diff_id: chain_id.clone(),
            parent: parent.cloned(),
            size,
            link: self.create_short_link(chain_id)?,
            created: now_secs(),
            from_container: Some(container.to_string()),
        };
        fsutil::replace_json(&dir.join(RECORD), &record)?;
        let upper = self.upper_dir(container);
        fs::rename(&upper, dir.join("diff"))
            .ctx(|| format!("moving {} into layer {chain_id}", upper.display()))?;
        Ok(record)
    }

    /// Every layer something still stands on: an image, a container (its
    /// writable layer's lowers, whichever front door made it) or a
    /// committed containerd snapshot. The one answer to "may this layer
    /// go?" for image rm, snapshot remove and recovery alike.
    pub fn referenced_layers(&self) -> Result<HashSet<Digest>> {
        let mut used: HashSet<Digest> = self.images()?.into_iter().flat_map(|i| i.layers).collect();
        let db = self.snapshot_db()?;
        used.extend(db.committed_layers());
        // An active snapshot's writable layer stands on its parent chain,
        // which the metadata holds: its record is not read. A containerd
        // host has one per container, and every Remove asks (3.3 -> 0.75
        // ms per Remove beside 300 of them).
        let mut known = HashSet::new();
        for (container, chain) in db.active_chains() {
            used.extend(chain);
            known.insert(container);
        }
        let dir = self.containers_dir();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let e = e.ctx(|| "reading containers".into())?;
            if e.file_name().to_str().is_some_and(|id| known.contains(id)) {
                continue;
            }
            if let Some(c) = crate::containers::read_record(&e.path())? {
                used.extend(c.layers);
            }
        }
        Ok(used)
    }

    /// Makes l/NAME -> ../layers/CHAIN/diff under a fresh random name and
    /// returns the name. A name already taken is simply drawn again.
    fn create_short_link(&self, chain_id: &Digest) -> Result<String> {
        let target = format!("../layers/{}/diff", chain_id.hex());
        for _ in 0..16 {
            let name = fsutil::random_name(LINK_NAME_LEN);
            let link = self.links_dir().join(&name);
            match symlink(&target, &link) {
                Ok(()) => return Ok(name),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).ctx(|| format!("creating short link {}", link.display())),
            }
        }
        Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
            .ctx(|| "no free short link name in 16 draws".into())
    }

    /// Deletes a layer: first out of sight (rename into tmp), then from disk.
    pub fn remove_layer(&self, record: &LayerRecord) -> Result<()> {
        let doomed = self
            .tmp_dir()
            .join(format!("rm-layer-{}", fsutil::random_hex(8)));
        self.retire_layer(record, &doomed)?;
        fsutil::remove_tree(&doomed)
    }

    /// Takes a layer out of sight: its directory renamed to `to` (to be
    /// deleted now, or by a later Cleanup), its short link gone.
    pub(crate) fn retire_layer(&self, record: &LayerRecord, to: &Path) -> Result<()> {
        let dir = self.layer_dir(&record.chain_id);
        fs::rename(&dir, to).ctx(|| format!("removing layer {}", dir.display()))?;
        let _ = fs::remove_file(self.links_dir().join(&record.link));
        Ok(())
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
