//! `strata image save`: an image out as a `docker save` archive or an OCI
//! image layout tarball, loadable by docker and podman.
//!
//! Layers are stored extracted, so each is written out again as a tar in
//! canonical order (write_layer_tar). Its digest is the diffID the exported
//! config lists; where that differs from the imported tar's (another tool
//! ordered entries differently), the exported config says so and the
//! exported image ID differs accordingly.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{json, Value};
use tar::{Builder, EntryType, Header};

use crate::archive::write_layer_tar;
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
    path: std::path::PathBuf,
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
        let f = File::create(&path).ctx(|| format!("creating {}", path.display()))?;
        let w = write_layer_tar(
            &store.layer_diff(chain),
            HashingWriter::new(BufWriter::new(f)),
        )?;
        let (buf, digest, size) = w.finish();
        buf.into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| "writing layer tar".into())?;
        layers.push(ExportedLayer { path, digest, size });
    }
    let mut config: Value =
        serde_json::from_slice(&store.image_config(&image.id)?).map_err(|e| Error::Corrupt {
            path: store.image_dir(&image.id),
            reason: e.to_string(),
        })?;
    config["rootfs"] =
        json!({"type": "layers", "diff_ids": layers.iter().map(|l| &l.digest).collect::<Vec<_>>()});
    let config = serde_json::to_vec(&config).expect("JSON values serialise");
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
