//! OCI image layout directories: `oci-layout`, `index.json`, `blobs/`.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use super::files::ImageFiles;
use super::platform::Platform;
use super::{invalid, SourceImage, SourceLayer};
use crate::digest::Digest;
use crate::error::Result;

pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
pub const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
pub const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
/// An image manifest: the config's descriptor and the layers'.
pub fn manifest_json(config_digest: &Digest, config_len: usize, layers: Vec<Value>) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPES[0],
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
        "layers": layers,
    })
    .to_string()
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn parse(files: &ImageFiles, tag: Option<&str>, src: &Path) -> Result<SourceImage> {
    let index: Value = json(files, "index.json", src)?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(src, "index.json has no manifests"))?;
    let chosen = match tag {
        Some(t) => manifests
            .iter()
            .find(|m| {
                m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
                    .and_then(Value::as_str)
                    == Some(t)
            })
            .ok_or_else(|| invalid(src, format!("no image tagged {t:?} in the layout")))?,
        None if manifests.len() == 1 => &manifests[0],
        None => {
            let tags: Vec<&str> = manifests
                .iter()
                .filter_map(|m| m.get("annotations")?.get(REF_NAME)?.as_str())
                .collect();
            return Err(invalid(
                src,
                format!(
                    "the layout holds {} images; pick one with DIR:TAG (tags: {})",
                    manifests.len(),
                    tags.join(", ")
                ),
            ));
        }
    };
    let tags = chosen
        .get("annotations")
        .and_then(|a| a.get(REF_NAME))
        .and_then(Value::as_str)
        .map(|t| vec![t.to_string()])
        .unwrap_or_default();
    let mut seen = HashSet::new();
    let manifest = resolve(files, chosen, src, &mut seen)?;

    let config_desc = manifest
        .get("config")
        .ok_or_else(|| invalid(src, "manifest has no config"))?;
    let config_digest = digest_of(config_desc, src)?;
    let config = files.read_small(&blob_path(&config_digest), src)?;
    verify_bytes(&config, &config_digest, src)?;

    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(src, "manifest has no layers"))?
        .iter()
        .map(|l| {
            let mt = l.get("mediaType").and_then(Value::as_str).unwrap_or("");
            if !LAYER_TYPES.contains(&mt) {
                return Err(invalid(
                    src,
                    format!("layer media type {mt:?} is not a layer tar"),
                ));
            }
            let digest = digest_of(l, src)?;
            let blob = files
                .blob(&blob_path(&digest), src)
                .map_err(|_| invalid(src, format!("manifest names missing blob {digest}")))?;
            Ok(SourceLayer {
                blob: Box::new(blob),
                digest: Some(digest),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SourceImage {
        config: Some(config),
        layers,
        tags,
    })
}

/// Follows image indexes down to one image manifest for this platform.
fn resolve(
    files: &ImageFiles,
    desc: &Value,
    src: &Path,
    seen: &mut HashSet<Digest>,
) -> Result<Value> {
    let digest = digest_of(desc, src)?;
    if !seen.insert(digest.clone()) || seen.len() > 16 {
        return Err(invalid(
            src,
            format!("image index cycle or nesting too deep at {digest}"),
        ));
    }
    let data = files.read_small(&blob_path(&digest), src)?;
    verify_bytes(&data, &digest, src)?;
    let doc: Value = serde_json::from_slice(&data)
        .map_err(|e| invalid(src, format!("{digest}: not JSON: {e}")))?;
    let mt = desc
        .get("mediaType")
        .or_else(|| doc.get("mediaType"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if MANIFEST_TYPES.contains(&mt) {
        return Ok(doc);
    }
    if !INDEX_TYPES.contains(&mt) {
        return Err(invalid(
            src,
            format!("{digest}: media type {mt:?} is neither a manifest nor an index"),
        ));
    }
    let entries = doc
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(src, format!("index {digest} has no manifests")))?;
    let platform = Platform::host();
    let pick = platform
        .pick(entries)
        .or_else(|| (entries.len() == 1).then(|| &entries[0]))
        .ok_or_else(|| invalid(src, format!("index {digest} has no {platform} image")))?;
    resolve(files, pick, src, seen)
}

fn json(files: &ImageFiles, rel: &str, src: &Path) -> Result<Value> {
    let data = files.read_small(rel, src)?;
    serde_json::from_slice(&data).map_err(|e| invalid(src, format!("{rel}: not JSON: {e}")))
}

fn digest_of(desc: &Value, src: &Path) -> Result<Digest> {
    let s = desc
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(src, "descriptor without a digest"))?;
    Digest::parse(s).map_err(|e| invalid(src, e.to_string()))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn verify_bytes(data: &[u8], expected: &Digest, src: &Path) -> Result<()> {
    let actual = Digest::of_bytes(data);
    if &actual != expected {
        return Err(crate::error::Error::DigestMismatch {
            what: format!("blob in {}", src.display()),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}
