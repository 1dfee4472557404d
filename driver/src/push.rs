//! `strata image push`: a stored image to a registry. Every layer is
//! first looked for under the blobs it is known as (see blobs): one the
//! repository has is not sent, one another repository of the same
//! registry has is mounted from there; only the others are rebuilt from
//! the store (an imported or pulled layer into the very tar it came as,
//! from its tar-split), gzipped and uploaded in chunks as they are made.
//! The config follows, then the manifest: a pulled image pushed unchanged
//! goes up with the manifest it was pulled by, so its digest stays.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::blobs::KnownBlob;
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::export::write_stored_layer;
use crate::image::{config, oci};
use crate::registry::pusher::Pusher;
use crate::registry::reference::Reference;
use crate::registry::{Registry, RegistryOptions};
use crate::store::Store;

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sent {
    /// The repository had it.
    Exists,
    /// Mounted from another repository of the registry.
    Mounted,
    Uploaded,
}

#[derive(Debug, Serialize)]
pub struct PushedLayer {
    pub digest: Digest,
    pub size: u64,
    pub sent: Sent,
}

#[derive(Debug, Serialize)]
pub struct PushReport {
    pub reference: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layers: Vec<PushedLayer>,
}

/// Pushes `image` to `dest` (default: the image's first name).
pub fn push(
    store: &Store,
    image: &str,
    dest: Option<&str>,
    opts: &RegistryOptions,
) -> Result<PushReport> {
    let image = {
        let _lock = store.lock_shared()?;
        store.find_image(image)?
    };
    let name = dest
        .or(image.names.first().map(String::as_str))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "image {} has no name: say where to push it",
                image.id
            ))
        })?;
    let dest = Reference::parse(name)?;
    if dest.tag.is_none() {
        return Err(Error::Invalid(format!(
            "push to a tag, not a digest: {dest}"
        )));
    }
    let pusher = Pusher {
        registry: Arc::new(Registry::connect(dest.api_host(), opts)?),
        repository: dest.repository.clone(),
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (chain, diff_id) in image.layers.iter().zip(&image.diff_ids) {
        let (blob, sent, sent_diff_id) = match reuse(store, &pusher, &dest, chain)? {
            Some((blob, sent)) => (blob, sent, diff_id.clone()),
            None => {
                let (blob, d) = upload_layer(store, &pusher, &dest, chain, diff_id)?;
                (blob, Sent::Uploaded, d)
            }
        };
        diff_ids.push(sent_diff_id);
        layers.push((blob, sent));
    }
    let config = config::with_diff_ids(&store.image_config(&image.id)?, &diff_ids)?;
    // The config is where the layers came from, if anywhere here.
    let same_registry = format!("{}/", dest.registry);
    let source_repo = layers.iter().find_map(|(b, _)| {
        b.repository
            .strip_prefix(&same_registry)
            .map(str::to_string)
    });
    let config_digest = pusher.put_small_blob(&config, source_repo.as_deref())?;
    let (media_type, manifest) = manifest(store, &image.id, &config_digest, config.len(), &layers);
    pusher.put_manifest(
        dest.tag.as_deref().expect("checked above"),
        &media_type,
        &manifest,
    )?;
    Ok(PushReport {
        reference: dest.to_string(),
        manifest_digest: Digest::of_bytes(&manifest),
        config_digest,
        layers: layers
            .into_iter()
            .map(|(b, sent)| PushedLayer {
                digest: b.digest,
                size: b.size,
                sent,
            })
            .collect(),
    })
}

/// A blob `chain` is known as that the repository has, or can mount.
fn reuse(
    store: &Store,
    pusher: &Pusher,
    dest: &Reference,
    chain: &Digest,
) -> Result<Option<(KnownBlob, Sent)>> {
    let known = store.known_blobs(chain);
    for b in &known {
        if pusher.has_blob(&b.digest)? {
            return Ok(Some((b.clone(), Sent::Exists)));
        }
    }
    let same_registry = format!("{}/", dest.registry);
    for b in &known {
        if let Some(from) = b.repository.strip_prefix(&same_registry) {
            if from != dest.repository && pusher.mount_blob(&b.digest, from)? {
                return Ok(Some((b.clone(), Sent::Mounted)));
            }
        }
    }
    Ok(None)
}

/// Writes `chain`'s tar (see export) gzipped into a chunked upload,
/// and remembers the blob. Returns it and the tar's digest.
fn upload_layer(
    store: &Store,
    pusher: &Pusher,
    dest: &Reference,
    chain: &Digest,
    diff_id: &Digest,
) -> Result<(KnownBlob, Digest)> {
    let upload = HashingWriter::new(pusher.upload()?);
    let gzip = flate2::write::GzEncoder::new(upload, flate2::Compression::default());
    let (gzip, sent_diff_id, _) = write_stored_layer(store, chain, diff_id, gzip)?;
    let upload = gzip.finish().map_err(|e| io_error(chain, e))?;
    let (upload, digest, size) = upload.finish();
    upload.finish(&digest)?;
    let blob = KnownBlob {
        digest,
        size,
        media_type: GZIP_LAYER.into(),
        repository: format!("{}/{}", dest.registry, dest.repository),
    };
    store.remember_blobs(chain, std::slice::from_ref(&blob))?;
    Ok((blob, sent_diff_id))
}

fn io_error(chain: &Digest, e: std::io::Error) -> Error {
    // An upload's failure travels through the gzip writer as io::Error.
    Error::Io {
        context: format!("uploading layer {chain}"),
        source: e,
    }
}

/// The manifest it was pulled by when it still describes exactly these
/// blobs and config; else a new OCI manifest.
fn manifest(
    store: &Store,
    id: &Digest,
    config_digest: &Digest,
    config_len: usize,
    layers: &[(KnownBlob, Sent)],
) -> (String, Vec<u8>) {
    if let Some(original) = store.image_manifest(id) {
        if let Ok(doc) = serde_json::from_slice::<Value>(&original) {
            let digests = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.get("digest")?.as_str().map(str::to_string))
                    .collect()
            };
            let same_layers = digests(&doc["layers"])
                == layers
                    .iter()
                    .map(|(b, _)| b.digest.to_string())
                    .collect::<Vec<_>>();
            let same_config = doc.pointer("/config/digest").and_then(Value::as_str)
                == Some(config_digest.as_str());
            if let (true, true, Some(mt)) = (same_layers, same_config, doc["mediaType"].as_str()) {
                return (mt.to_string(), original);
            }
        }
    }
    let descs = layers
        .iter()
        .map(|(b, _)| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size}))
        .collect();
    let m = oci::manifest_json(config_digest, config_len, descs);
    (oci::MANIFEST_TYPES[0].to_string(), m.into_bytes())
}
