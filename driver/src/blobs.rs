//! The compressed blobs a layer is known as in registries: the one it was
//! pulled as, and those strata made when pushing it. Layers are stored
//! extracted, so this is what lets a push reuse a blob a registry has
//! (HEAD, or a cross-repository mount) instead of compressing and
//! uploading the layer again. A cache: losing it costs an upload, never
//! correctness (a reused blob is still checked to exist).
//!
//! `layers/<chain>/blobs.json`; an image pulled keeps the manifest it was
//! pulled by as `images/<id>/manifest.json`, so that pushing it unchanged
//! reproduces its manifest digest.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;
use crate::fsutil;
use crate::store::Store;

const BLOBS: &str = "blobs.json";
const MANIFEST: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// `host/repository` known to hold it.
    pub repository: String,
}

impl Store {
    /// What `chain` is known as; nothing when never pulled or pushed.
    pub fn known_blobs(&self, chain: &Digest) -> Vec<KnownBlob> {
        fsutil::read_json(&self.layer_dir(chain).join(BLOBS)).unwrap_or_default()
    }

    /// Adds `blobs` to what `chain` is known as.
    pub fn remember_blobs(&self, chain: &Digest, blobs: &[KnownBlob]) -> Result<()> {
        let _lock = self.lock()?;
        if self.layer(chain)?.is_none() {
            return Ok(()); // removed meanwhile: nothing to remember
        }
        let mut known = self.known_blobs(chain);
        let before = known.len();
        for b in blobs {
            if !known.contains(b) {
                known.push(b.clone());
            }
        }
        if known.len() == before {
            return Ok(());
        }
        fsutil::write_json_atomic(&self.layer_dir(chain).join(BLOBS), &known)
    }

    fn image_manifest_path(&self, id: &Digest) -> PathBuf {
        self.image_dir(id).join(MANIFEST)
    }

    /// The manifest image `id` was pulled by, if it was.
    pub fn image_manifest(&self, id: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.image_manifest_path(id)).ok()
    }

    pub fn keep_image_manifest(&self, id: &Digest, manifest: &[u8]) -> Result<()> {
        let _lock = self.lock()?;
        if !self.image_dir(id).exists() {
            return Ok(());
        }
        fsutil::write_atomic(&self.image_manifest_path(id), manifest)
    }
}
