//! From a reference to what to fetch: the manifest (through an index to
//! the chosen platform's), every digest verified, and the config blob.
//! Nothing here touches the store.

use serde::Deserialize;
use serde_json::Value;

use super::reference::Reference;
use super::transport::registry_error;
use super::Registry;
use crate::digest::Digest;
use crate::error::Result;
use crate::image::oci::{INDEX_TYPES, LAYER_TYPES, MANIFEST_TYPES};
use crate::image::platform::Platform;

/// The cap on a manifest, an index or a config from a registry.
pub const DOCUMENT_MAX: u64 = 4 << 20;
/// Layers a pulled image may have: what overlayfs can stack.
pub const MAX_LAYERS: usize = crate::mount::MAX_LAYERS;

const SCHEMA1_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Layers served from elsewhere than the registry (Windows base layers).
const FOREIGN_TYPES: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ManifestDoc {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// An image as a registry serves it, ready to fetch.
#[derive(Debug)]
pub struct Resolved {
    /// The digest of the image manifest (not of an index above it).
    pub manifest_digest: Digest,
    /// Its bytes, as the registry served them.
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<Descriptor>,
}

pub fn resolve(reg: &Registry, r: &Reference, platform: &Platform) -> Result<Resolved> {
    let mut wanted = r.manifest_ref();
    let mut pinned = r.digest.clone();
    for _depth in 0..3 {
        let (body, media_type, digest) =
            fetch_manifest(reg, &r.repository, &wanted, pinned.as_ref())?;
        if INDEX_TYPES.contains(&media_type.as_str()) {
            let next = pick_from_index(reg, &body, &digest, platform)?;
            wanted = next.to_string();
            pinned = Some(next);
            continue;
        }
        if SCHEMA1_TYPES.contains(&media_type.as_str()) {
            return Err(registry_error(
                reg.name(),
                format!("{r} has a schema 1 manifest, which registries deprecated in 2019; push it again with a current client"),
            ));
        }
        if !MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(registry_error(
                reg.name(),
                format!("{r}: manifest media type {media_type:?} is not an image manifest"),
            ));
        }
        return image_manifest(reg, r, &body, digest);
    }
    Err(registry_error(
        reg.name(),
        format!("{r}: indexes nested too deep"),
    ))
}

/// GETs one manifest or index: its bytes, media type and digest, which
/// must be `pinned` when the reference named one, and what the registry
/// says it is when it says.
fn fetch_manifest(
    reg: &Registry,
    repo: &str,
    wanted: &str,
    pinned: Option<&Digest>,
) -> Result<(Vec<u8>, String, Digest)> {
    let accept = [MANIFEST_TYPES, INDEX_TYPES, SCHEMA1_TYPES]
        .concat()
        .join(", ");
    let resp = reg.get(repo, &format!("manifests/{wanted}"), &[("Accept", accept)])?;
    if resp.status == 404 {
        return Err(registry_error(
            reg.name(),
            format!("{repo}:{wanted}: manifest unknown (404)"),
        ));
    }
    if resp.status != 200 {
        return Err(registry_error(
            reg.name(),
            format!("{repo}:{wanted}: manifest request answered {}", resp.status),
        ));
    }
    let said = resp.header("Docker-Content-Digest").map(str::to_string);
    let content_type = resp.header("Content-Type").unwrap_or("").to_string();
    let body = resp.read_small(DOCUMENT_MAX, "the manifest", reg.name())?;
    let actual = Digest::of_bytes(&body);
    let mismatch = |claimed: &str| {
        registry_error(
            reg.name(),
            format!("{repo}:{wanted}: the manifest's bytes hash to {actual}, not {claimed}"),
        )
    };
    if let Some(p) = pinned.filter(|p| **p != actual) {
        return Err(mismatch(p.as_str()));
    }
    if let Some(s) = said.filter(|s| *s != actual.as_str()) {
        return Err(mismatch(&s));
    }
    let doc: Value = serde_json::from_slice(&body).map_err(|e| {
        registry_error(
            reg.name(),
            format!("{repo}:{wanted}: manifest is not JSON: {e}"),
        )
    })?;
    let media_type = doc
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        });
    Ok((body, media_type, actual))
}

fn pick_from_index(
    reg: &Registry,
    body: &[u8],
    digest: &Digest,
    platform: &Platform,
) -> Result<Digest> {
    let doc: Value = serde_json::from_slice(body).expect("parsed once already");
    let entries = doc
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| registry_error(reg.name(), format!("index {digest} has no manifests")))?;
    let Some(entry) = platform.pick(entries) else {
        let offered: Vec<String> = entries
            .iter()
            .filter_map(|e| {
                let p = e.get("platform")?;
                let os = p.get("os")?.as_str()?;
                let arch = p.get("architecture")?.as_str()?;
                Some(match p.get("variant").and_then(Value::as_str) {
                    Some(v) => format!("{os}/{arch}/{v}"),
                    None => format!("{os}/{arch}"),
                })
            })
            .collect();
        return Err(registry_error(
            reg.name(),
            format!(
                "index {digest} has no image for {platform} (it has: {}); choose one with --platform",
                offered.join(", ")
            ),
        ));
    };
    let d = entry.get("digest").and_then(Value::as_str).unwrap_or("");
    Digest::parse(d).map_err(|e| registry_error(reg.name(), format!("index {digest}: {e}")))
}

fn image_manifest(reg: &Registry, r: &Reference, body: &[u8], digest: Digest) -> Result<Resolved> {
    let doc: ManifestDoc = serde_json::from_slice(body)
        .map_err(|e| registry_error(reg.name(), format!("{r}: manifest {digest}: {e}")))?;
    if doc.layers.len() > MAX_LAYERS {
        return Err(registry_error(
            reg.name(),
            format!(
                "{r} has {} layers, more than the {MAX_LAYERS} overlayfs can stack",
                doc.layers.len()
            ),
        ));
    }
    for (i, l) in doc.layers.iter().enumerate() {
        let mt = l.media_type.as_str();
        if FOREIGN_TYPES.contains(&mt) || !l.urls.is_empty() {
            return Err(registry_error(
                reg.name(),
                format!("{r}: layer {} ({}) is non-distributable ({mt}): its blob is not served by registries, and strata pulls only distributable layers", i + 1, l.digest),
            ));
        }
        if !LAYER_TYPES.contains(&mt) {
            return Err(registry_error(
                reg.name(),
                format!(
                    "{r}: layer {} has media type {mt:?}, not a layer tar",
                    i + 1
                ),
            ));
        }
    }
    if doc.config.size > DOCUMENT_MAX {
        return Err(registry_error(
            reg.name(),
            format!(
                "{r}: the config is {} bytes, over the {} MiB limit",
                doc.config.size,
                DOCUMENT_MAX >> 20
            ),
        ));
    }
    let config = reg.fetch_small_blob(&r.repository, &doc.config.digest, "the config")?;
    Ok(Resolved {
        manifest: body.to_vec(),
        manifest_digest: digest,
        config,
        config_digest: doc.config.digest,
        layers: doc.layers,
    })
}
