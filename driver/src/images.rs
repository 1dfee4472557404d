//! Image records: a name, a config, and a stack of layers (bottom first).

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, StagingDir, Txn};
use crate::store::Store;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the config blob, as docker and OCI define image IDs.
    pub id: Digest,
    pub names: Vec<String>,
    /// Chain IDs, bottom layer first.
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<Digest>,
    pub created: u64,
    /// `host/repo@sha256:...` of the manifests it was pulled by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
}

const RECORD: &str = "image.json";
const CONFIG: &str = "config.json";

/// `name` -> `name:latest`; a digest or full reference is kept as is.
pub fn normalize_name(name: &str) -> Result<String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(format!("image name {name:?}")));
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    Ok(if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    })
}

impl Store {
    pub fn image_dir(&self, id: &Digest) -> PathBuf {
        self.images_dir().join(id.hex())
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.images_dir();
        let mut out: Vec<ImageRecord> = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let rec = entry
                .ctx(|| format!("reading {}", dir.display()))?
                .path()
                .join(RECORD);
            if rec.exists() {
                out.push(fsutil::read_json(&rec)?);
            }
        }
        out.sort_by(|a, b| a.names.first().cmp(&b.names.first()).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Finds an image by name (`name` means `name:latest`) or ID prefix.
    pub fn find_image(&self, reference: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        let normalized = normalize_name(reference).ok();
        if let Some(img) = images.iter().find(|i| {
            i.names
                .iter()
                .any(|n| Some(n) == normalized.as_ref() || n == reference)
                || i.repo_digests.iter().any(|d| d == reference)
        }) {
            return Ok(img.clone());
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<_> = images
                .iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            match matches.len() {
                1 => return Ok(matches[0].clone()),
                0 => {}
                n => {
                    return Err(Error::Ambiguous {
                        kind: "image",
                        name: reference.into(),
                        matches: n,
                    })
                }
            }
        }
        Err(Error::NotFound {
            kind: "image",
            name: reference.into(),
        })
    }

    pub fn image_config(&self, id: &Digest) -> Result<Vec<u8>> {
        let p = self.image_dir(id).join(CONFIG);
        fs::read(&p).ctx(|| format!("reading {}", p.display()))
    }

    /// Stores (or updates) an image record and its config. Call with the
    /// store lock held. A name moves from any image that had it, as with
    /// `docker tag`.
    pub fn put_image(&self, record: &ImageRecord, config: &[u8]) -> Result<()> {
        let names: HashSet<&String> = record.names.iter().collect();
        for mut other in self.images()? {
            if other.id != record.id && other.names.iter().any(|n| names.contains(n)) {
                other.names.retain(|n| !names.contains(n));
                fsutil::write_json_atomic(&self.image_dir(&other.id).join(RECORD), &other)?;
            }
        }
        let dir = self.image_dir(&record.id);
        if dir.exists() {
            let mut merged: ImageRecord = fsutil::read_json(&dir.join(RECORD))?;
            for n in &record.names {
                if !merged.names.contains(n) {
                    merged.names.push(n.clone());
                }
            }
            for d in &record.repo_digests {
                if !merged.repo_digests.contains(d) {
                    merged.repo_digests.push(d.clone());
                }
            }
            return fsutil::write_json_atomic(&dir.join(RECORD), &merged);
        }
        let staged = StagingDir::create(&self.tmp_dir(), "image")?;
        fsutil::write_atomic(&staged.path().join(CONFIG), config)?;
        fsutil::write_json_atomic(&staged.path().join(RECORD), record)?;
        let from = staged.keep();
        fs::rename(&from, &dir).ctx(|| format!("publishing image {}", dir.display()))?;
        fsutil::sync_dir(&self.images_dir())
    }

    pub fn delete_image_record(&self, id: &Digest) -> Result<()> {
        let dir = self.image_dir(id);
        let doomed = self
            .tmp_dir()
            .join(format!("rm-image-{}", fsutil::random_hex(8)));
        fs::rename(&dir, &doomed).ctx(|| format!("removing image {}", dir.display()))?;
        fsutil::remove_tree(&doomed)
    }
}

impl Store {
    /// `strata image rm`: refused while a container uses the image; frees
    /// only the layers no other image references. Returns the freed
    /// layers' chain IDs.
    pub fn remove_image(&self, reference: &str) -> Result<Vec<Digest>> {
        let _lock = self.lock()?;
        let image = self.find_image(reference)?;
        let users: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| c.image.as_ref() == Some(&image.id))
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            return Err(Error::InUse(format!(
                "image {} is used by container(s) {}",
                image
                    .names
                    .first()
                    .map(String::as_str)
                    .unwrap_or(image.id.as_str()),
                users.join(", ")
            )));
        }
        // An image with several names loses just the one asked for.
        if image.names.len() > 1 {
            if let Ok(n) = normalize_name(reference) {
                if image.names.contains(&n) {
                    let mut rec = image.clone();
                    rec.names.retain(|x| *x != n);
                    fsutil::write_json_atomic(&self.image_dir(&image.id).join(RECORD), &rec)?;
                    return Ok(Vec::new());
                }
            }
        }
        // The record goes first, then the layers: a crash in between leaves
        // orphans, which recovery (triggered by this txn) deletes.
        let txn = Txn::begin(&self.tmp_dir(), "image-rm")?;
        self.delete_image_record(&image.id)?;
        let still_used = self.referenced_layers()?;
        let mut freed = Vec::new();
        for chain in image.layers.iter().rev() {
            if still_used.contains(chain) || freed.contains(chain) {
                continue;
            }
            if let Some(rec) = self.layer(chain)? {
                self.remove_layer(&rec)?;
                freed.push(chain.clone());
            }
        }
        txn.done();
        Ok(freed)
    }
}
