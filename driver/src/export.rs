//! `strata image save`: an image out as a `docker save` archive or an OCI
//! image layout tarball, loadable by docker and podman.
//!
//! Layers are stored extracted. An imported layer is rebuilt into the very
//! tar it came from (its tar-split, archive::split), so the image keeps
//! its diffIDs, config and ID. A layer strata made (commit) is written as
//! a canonical tar (write_layer_tar); the exported config then lists the
//! new diffIDs and the exported image ID differs accordingly.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use tar::{Builder, EntryType, Header};

use crate::archive::{split, write_layer_tar};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::image::config::{self, host_arch};
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    DockerArchive,
    Oci,
}

impl std::str::FromStr for SaveFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<SaveFormat> {
        match s {
            "docker-archive" => Ok(SaveFormat::DockerArchive),
            "oci" | "oci-archive" => Ok(SaveFormat::Oci),
            _ => Err(Error::Invalid(format!(
                "save format {s:?}: use docker-archive or oci"
            ))),
        }
    }
}

/// A layer written into the archive.
struct ExportedLayer {
    digest: Digest,
    size: u64,
}

/// What the archive's index files describe, once the layers are in.
struct SavedImage {
    config_digest: Digest,
    config: Vec<u8>,
    layers: Vec<ExportedLayer>,
    tag: Option<String>,
}

pub fn save(store: &Store, reference: &str, out: &Path, format: SaveFormat) -> Result<Digest> {
    let image = {
        let _lock = store.lock_shared()?;
        store.find_image(reference)?
    };
    // Written beside the destination, renamed over it when complete.
    let partial = PartialFile::beside(out);
    let file =
        File::create(&partial.path).ctx(|| format!("creating {}", partial.path.display()))?;
    let mut tar = Builder::new(BufWriter::new(file));
    if format == SaveFormat::Oci {
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let mut layers = Vec::new();
    for (chain, diff_id) in image.layers.iter().zip(&image.diff_ids) {
        layers.push(append_layer(&mut tar, store, chain, diff_id, format)?);
    }
    let exported: Vec<&Digest> = layers.iter().map(|l| &l.digest).collect();
    let config = store.image_config(&image.id)?;
    let exported: Vec<Digest> = exported.into_iter().cloned().collect();
    // Every layer the tar it was imported as: the config, and so the
    // image ID, stay the source's, byte for byte.
    let config = config::with_diff_ids(&config, &exported).map_err(|e| Error::Corrupt {
        path: store.image_dir(&image.id),
        reason: e.to_string(),
    })?;
    let saved = SavedImage {
        config_digest: Digest::of_bytes(&config),
        config,
        layers,
        tag: image.names.first().cloned(),
    };
    match format {
        SaveFormat::DockerArchive => append_docker_index(&mut tar, &saved)?,
        SaveFormat::Oci => append_oci_index(&mut tar, &saved)?,
    }
    let mut w = tar.into_inner().ctx(|| "finishing archive".into())?;
    w.flush().ctx(|| "writing archive".into())?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .ctx(|| "syncing archive".into())?;
    partial.rename_to(out)?;
    Ok(saved.config_digest)
}

/// The archive being written; removed unless it was renamed into place,
/// so a failed save leaves nothing behind.
struct PartialFile {
    path: PathBuf,
    renamed: bool,
}

impl PartialFile {
    fn beside(out: &Path) -> PartialFile {
        PartialFile {
            path: out.with_extension("strata-partial"),
            renamed: false,
        }
    }

    fn rename_to(mut self, out: &Path) -> Result<()> {
        std::fs::rename(&self.path, out).ctx(|| format!("renaming into {}", out.display()))?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The member a layer is stored as, named by its digest.
fn layer_member(format: SaveFormat, digest: &Digest) -> String {
    match format {
        SaveFormat::DockerArchive => format!("{}/layer.tar", digest.hex()),
        SaveFormat::Oci => format!("blobs/sha256/{}", digest.hex()),
    }
}

/// Streams layer `chain` into the archive: the very tar it was imported
/// from where its tar-split says how (verified against `diff_id`), else a
/// canonical one.
///
/// The member's name (its digest) and size are known only once its data
/// is written, so a placeholder header goes first and is rewritten in
/// place afterwards (the archive is a file, and a tar header is one fixed
/// block): each layer is written once, not to a scratch file and copied.
fn append_layer(
    tar: &mut Builder<BufWriter<File>>,
    store: &Store,
    chain: &Digest,
    diff_id: &Digest,
    format: SaveFormat,
) -> Result<ExportedLayer> {
    let w = tar.get_mut();
    let start = writing(w.stream_position())?;
    writing(w.write_all(&[0; BLOCK]))?;
    let (w, digest, size) = write_stored_layer(store, chain, diff_id, &mut *w)?;
    let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
    writing(w.write_all(&[0; BLOCK][..padding]))?;
    let mut h = header(size);
    let name = layer_member(format, &digest);
    h.set_path(&name).ctx(|| format!("naming {name}"))?;
    h.set_cksum();
    writing(w.seek(SeekFrom::Start(start)))?;
    writing(w.write_all(h.as_bytes()))?;
    writing(w.seek(SeekFrom::End(0)))?;
    Ok(ExportedLayer { digest, size })
}

/// Writes layer `chain` as a tar into `out`: the very tar it came as
/// (rebuilt from its tar-split and checked against `diff_id`), or, for a
/// layer strata made, a canonical tar. Returns `out`, the tar's digest
/// and size. What save and push send.
pub(crate) fn write_stored_layer<W: Write>(
    store: &Store,
    chain: &Digest,
    diff_id: &Digest,
    out: W,
) -> Result<(W, Digest, u64)> {
    let mut data = HashingWriter::new(out);
    let rebuilt = split::rebuild(&store.layer_dir(chain), &mut data)?;
    let data = if rebuilt {
        data
    } else {
        write_layer_tar(&store.layer_diff(chain), data)?
    };
    let (out, digest, size) = data.finish();
    if rebuilt && &digest != diff_id {
        return Err(Error::Corrupt {
            path: store.layer_dir(chain),
            reason: format!(
                "the layer's files no longer rebuild its tar: diffID {diff_id} recorded, {digest} rebuilt"
            ),
        });
    }
    Ok((out, digest, size))
}

/// docker save's config and manifest.json, after the layers.
fn append_docker_index(tar: &mut Builder<BufWriter<File>>, image: &SavedImage) -> Result<()> {
    let config_name = format!("{}.json", image.config_digest.hex());
    append_bytes(tar, &config_name, &image.config)?;
    let names: Vec<String> = image
        .layers
        .iter()
        .map(|l| layer_member(SaveFormat::DockerArchive, &l.digest))
        .collect();
    let manifest = json!([{"Config": config_name, "RepoTags": image.tag.iter().collect::<Vec<_>>(), "Layers": names}]);
    append_bytes(tar, "manifest.json", manifest.to_string().as_bytes())
}

/// The OCI layout's config, manifest and index.json, after the layers.
fn append_oci_index(tar: &mut Builder<BufWriter<File>>, image: &SavedImage) -> Result<()> {
    let config_digest = &image.config_digest;
    append_bytes(
        tar,
        &format!("blobs/sha256/{}", config_digest.hex()),
        &image.config,
    )?;
    let descs = image
        .layers
        .iter()
        .map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.digest, "size": l.size}))
        .collect();
    let manifest = crate::image::oci::manifest_json(config_digest, image.config.len(), descs);
    let manifest_digest = Digest::of_bytes(manifest.as_bytes());
    append_bytes(
        tar,
        &format!("blobs/sha256/{}", manifest_digest.hex()),
        manifest.as_bytes(),
    )?;
    let mut entry = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest.len(),
        "platform": {"architecture": host_arch(), "os": "linux"},
    });
    if let Some(t) = &image.tag {
        entry["annotations"] =
            json!({"org.opencontainers.image.ref.name": t, "io.containerd.image.name": t});
    }
    let index = json!({"schemaVersion": 2, "manifests": [entry]});
    append_bytes(tar, "index.json", index.to_string().as_bytes())
}

/// A tar block: headers and the padding after data.
const BLOCK: usize = 512;

fn header(size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn append_bytes<W: Write>(tar: &mut Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    tar.append_data(&mut header(data.len() as u64), name, data)
        .ctx(|| format!("archiving {name}"))
}

fn writing<T>(r: io::Result<T>) -> Result<T> {
    r.ctx(|| "writing archive".into())
}
