//! `docker save` archives: `manifest.json` naming a config and layer tars.

use std::path::Path;

use serde::Deserialize;

use super::files::ImageFiles;
use super::{invalid, SourceImage, SourceLayer};
use crate::digest::Digest;
use crate::error::Result;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub fn parse(files: &ImageFiles, tag: Option<&str>, src: &Path) -> Result<SourceImage> {
    let data = files.read_small("manifest.json", src)?;
    let entries: Vec<Entry> =
        serde_json::from_slice(&data).map_err(|e| invalid(src, format!("manifest.json: {e}")))?;
    let entry = match tag {
        Some(t) => entries
            .iter()
            .find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|rt| rt == t || rt.ends_with(&format!(":{t}")))
            })
            .ok_or_else(|| invalid(src, format!("no image tagged {t:?} in the archive")))?,
        None if entries.len() == 1 => &entries[0],
        None => {
            return Err(invalid(
                src,
                format!(
                    "the archive holds {} images; pick one with FILE:TAG",
                    entries.len()
                ),
            ))
        }
    };
    let config = files.read_small(&entry.config, src)?;
    let layers = entry
        .layers
        .iter()
        .map(|l| {
            // docker >= 25 stores layers as content-addressed blobs: verify those.
            let digest = l
                .strip_prefix("blobs/sha256/")
                .and_then(|h| Digest::parse(&format!("sha256:{h}")).ok());
            Ok(SourceLayer {
                blob: Box::new(files.blob(l, src)?),
                digest,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SourceImage {
        config: Some(config),
        layers,
        tags: entry.repo_tags.clone().unwrap_or_default(),
    })
}
