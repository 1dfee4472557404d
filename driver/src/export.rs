//! `strata image save`: an image out as a `docker save` archive or an OCI
//! image layout tarball, loadable by docker and podman.
//!
//! Layers are stored extracted. An imported layer is rebuilt into the very
//! tar it came from (its tar-split, archive::split), so the image keeps
//! its diffIDs, config and ID. A layer strata made (commit) is written as
//! a canonical tar (write_layer_tar); the exported config then lists the
//! new diffIDs and the exported image ID differs accordingly.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tar::{Builder, EntryType, Header};

use crate::archive::{split, write_layer_tar};
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::StagingDir;
use crate::image::config::host_arch;
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

/// A layer written out for export.
struct ExportedLayer {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

pub fn save(store: &Store, reference: &str, out: &Path, format: SaveFormat) -> Result<Digest> {
    let image = {
        let _lock = store.lock_shared()?;
        store.find_image(reference)?
    };
    let work = StagingDir::create(&store.tmp_dir(), "save")?;
    let mut layers = Vec::new();
    for (i, chain) in image.layers.iter().enumerate() {
        let path = work.path().join(format!("layer{i}.tar"));
        layers.push(export_layer(store, chain, &image.diff_ids[i], path)?);
    }
    let exported: Vec<&Digest> = layers.iter().map(|l| &l.digest).collect();
    let config = store.image_config(&image.id)?;
    let config = if exported.iter().copied().eq(image.diff_ids.iter()) {
        // Every layer is the tar it was imported as: the config, and so
        // the image ID, stay the source's, byte for byte.
        config
    } else {
        let mut config: Value = serde_json::from_slice(&config).map_err(|e| Error::Corrupt {
            path: store.image_dir(&image.id),
            reason: e.to_string(),
        })?;
        config["rootfs"] = json!({"type": "layers", "diff_ids": exported});
        serde_json::to_vec(&config).expect("JSON values serialise")
    };
    let config_digest = Digest::of_bytes(&config);
    let tag = image.names.first().cloned();

    // Written beside the destination, renamed over it when complete.
    let tmp = out.with_extension("strata-partial");
    let file = File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    let mut tar = Builder::new(BufWriter::new(file));
    match format {
        SaveFormat::DockerArchive => {
            let mut names = Vec::new();
            for l in &layers {
                let name = format!("{}/layer.tar", l.digest.hex());
                append_file(&mut tar, &name, &l.path)?;
                names.push(name);
            }
            append_bytes(&mut tar, &format!("{}.json", config_digest.hex()), &config)?;
            let manifest = json!([{"Config": format!("{}.json", config_digest.hex()), "RepoTags": tag.iter().collect::<Vec<_>>(), "Layers": names}]);
            append_bytes(&mut tar, "manifest.json", manifest.to_string().as_bytes())?;
        }
        SaveFormat::Oci => {
            append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            let mut descs = Vec::new();
            for l in &layers {
                append_file(
                    &mut tar,
                    &format!("blobs/sha256/{}", l.digest.hex()),
                    &l.path,
                )?;
                descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.digest, "size": l.size}));
            }
            append_bytes(
                &mut tar,
                &format!("blobs/sha256/{}", config_digest.hex()),
                &config,
            )?;
            let manifest = crate::image::oci::manifest_json(&config_digest, config.len(), descs);
            let manifest_digest = Digest::of_bytes(manifest.as_bytes());
            append_bytes(
                &mut tar,
                &format!("blobs/sha256/{}", manifest_digest.hex()),
                manifest.as_bytes(),
            )?;
            let mut entry = json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "platform": {"architecture": host_arch(), "os": "linux"},
            });
            if let Some(t) = &tag {
                entry["annotations"] =
                    json!({"org.opencontainers.image.ref.name": t, "io.containerd.image.name": t});
            }
            append_bytes(
                &mut tar,
                "index.json",
                json!({"schemaVersion": 2, "manifests": [entry]})
                    .to_string()
                    .as_bytes(),
            )?;
        }
    }
    let mut w = tar.into_inner().ctx(|| "finishing archive".into())?;
    w.flush().ctx(|| "writing archive".into())?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .ctx(|| "syncing archive".into())?;
    std::fs::rename(&tmp, out).ctx(|| format!("renaming into {}", out.display()))?;
    Ok(config_digest)
}

/// Writes layer `chain` as a tar at `path`: the very tar it was imported
/// from where its tar-split says how (verified against `diff_id`), else a
/// canonical one.
fn export_layer(
    store: &Store,
    chain: &Digest,
    diff_id: &Digest,
    path: PathBuf,
) -> Result<ExportedLayer> {
    let f = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
    let mut out = HashingWriter::new(BufWriter::new(f));
    let rebuilt = split::rebuild(&store.layer_dir(chain), &mut out)?;
    let out = if rebuilt {
        out
    } else {
        write_layer_tar(&store.layer_diff(chain), out)?
    };
    let (buf, digest, size) = out.finish();
    buf.into_inner()
        .map_err(|e| e.into_error())
        .ctx(|| "writing layer tar".into())?;
    if rebuilt && &digest != diff_id {
        return Err(Error::Corrupt {
            path: store.layer_dir(chain),
            reason: format!(
                "the layer's files no longer rebuild its tar: diffID {diff_id} recorded, {digest} rebuilt"
            ),
        });
    }
    Ok(ExportedLayer { path, digest, size })
}

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

fn append_file<W: Write>(tar: &mut Builder<W>, name: &str, path: &Path) -> Result<()> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let len = f.metadata().ctx(|| "stat".into())?.len();
    tar.append_data(&mut header(len), name, io::BufReader::new(f))
        .ctx(|| format!("archiving {name}"))
}
