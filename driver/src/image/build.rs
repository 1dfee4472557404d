//! Writing images: layer tars generated in code, packed as a `docker save`
//! directory or an OCI image layout. The sweep, the benches and the tests
//! build their images with it; nothing here needs a registry.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use tar::{Builder, EntryType, Header};

use crate::archive::compression::Compression;
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::error::{IoContext, Result};
use crate::image::config::{host_arch, new_config};

/// A layer tar being written.
pub struct LayerTar {
    builder: Builder<BufWriter<File>>,
    path: PathBuf,
}

impl LayerTar {
    pub fn create(path: &Path) -> Result<LayerTar> {
        let f = File::create(path).ctx(|| format!("creating {}", path.display()))?;
        Ok(LayerTar {
            builder: Builder::new(BufWriter::with_capacity(1 << 20, f)),
            path: path.to_path_buf(),
        })
    }

    fn header(kind: EntryType, mode: u32, uid: u64, gid: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Result<&mut Self> {
        let mut h = Self::header(EntryType::Directory, mode, uid, gid);
        self.builder
            .append_data(&mut h, path, io::empty())
            .ctx(|| format!("tar dir {path}"))?;
        Ok(self)
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<&mut Self> {
        self.file_owned(path, data, mode, 0, 0)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Result<&mut Self> {
        let mut h = Self::header(EntryType::Regular, mode, uid, gid);
        h.set_size(data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .ctx(|| format!("tar file {path}"))?;
        Ok(self)
    }

    /// A file of `size` bytes of a non-zero pattern, streamed.
    pub fn pattern_file(&mut self, path: &str, size: u64, seed: u8) -> Result<&mut Self> {
        let mut h = Self::header(EntryType::Regular, 0o644, 0, 0);
        h.set_size(size);
        let reader = Pattern {
            left: size,
            next: seed.max(1),
        }
        .take(size);
        self.builder
            .append_data(&mut h, path, reader)
            .ctx(|| format!("tar file {path}"))?;
        Ok(self)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let mut h = Self::header(EntryType::Symlink, 0o777, 0, 0);
        self.builder
            .append_link(&mut h, path, target)
            .ctx(|| format!("tar symlink {path}"))?;
        Ok(self)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let mut h = Self::header(EntryType::Link, 0o644, 0, 0);
        self.builder
            .append_link(&mut h, path, target)
            .ctx(|| format!("tar hardlink {path}"))?;
        Ok(self)
    }

    /// OCI whiteout of `path`.
    pub fn whiteout(&mut self, path: &str) -> Result<&mut Self> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"", 0o600)
    }

    /// Marks directory `dir` opaque.
    pub fn opaque(&mut self, dir: &str) -> Result<&mut Self> {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o600)
    }

    pub fn raw(&mut self) -> &mut Builder<BufWriter<File>> {
        &mut self.builder
    }

    pub fn finish(self) -> Result<PathBuf> {
        let w = self.builder.into_inner().ctx(|| "finishing tar".into())?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| "flushing tar".into())?;
        Ok(self.path)
    }
}

/// Endless non-zero bytes (so nothing is mistaken for a sparse hole).
struct Pattern {
    left: u64,
    next: u8,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            *b = self.next;
            self.next = self.next.wrapping_mul(13).wrapping_add(7) | 1;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn file_digest(path: &Path) -> Result<Digest> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    Ok(HashingReader::new(f)
        .finish()
        .ctx(|| format!("reading {}", path.display()))?
        .0)
}

/// Writes a `docker save` directory (manifest.json, config, layer tars)
/// from uncompressed layer tars, bottom first, which stay where they are.
/// Returns the image ID.
pub fn write_docker_archive(dir: &Path, tag: &str, layers: &[PathBuf]) -> Result<Digest> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let mut diff_ids = Vec::new();
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let d = file_digest(l)?;
        let name = format!("{}/layer.tar", d.hex());
        let dest = dir.join(&name);
        fs::create_dir_all(dest.parent().unwrap()).ctx(|| "creating layer dir".into())?;
        // A hard link costs nothing for big layers and leaves `l` in place.
        if fs::hard_link(l, &dest).is_err() {
            fs::copy(l, &dest).ctx(|| format!("copying layer {i}"))?;
        }
        diff_ids.push(d);
        names.push(name);
    }
    let config = new_config(None, &diff_ids, "strata image build");
    let id = Digest::of_bytes(&config);
    fs::write(dir.join(format!("{}.json", id.hex())), &config).ctx(|| "writing config".into())?;
    let manifest =
        json!([{"Config": format!("{}.json", id.hex()), "RepoTags": [tag], "Layers": names}]);
    fs::write(dir.join("manifest.json"), manifest.to_string())
        .ctx(|| "writing manifest.json".into())?;
    Ok(id)
}

/// Writes an OCI image layout holding one image tagged `tag`, its layers
/// compressed as asked. Returns the manifest digest.
pub fn write_oci_layout(
    dir: &Path,
    tag: &str,
    layers: &[PathBuf],
    compression: Compression,
) -> Result<Digest> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).ctx(|| format!("creating {}", blobs.display()))?;
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for l in layers {
        diff_ids.push(file_digest(l)?);
        let tmp = blobs.join("incoming");
        let out = HashingWriter::new(BufWriter::new(
            File::create(&tmp).ctx(|| "creating blob".into())?,
        ));
        let mut src = File::open(l).ctx(|| format!("opening {}", l.display()))?;
        let (media, out) = match compression {
            Compression::None => {
                let mut out = out;
                io::copy(&mut src, &mut out).ctx(|| "writing blob".into())?;
                ("application/vnd.oci.image.layer.v1.tar", out)
            }
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                io::copy(&mut src, &mut enc).ctx(|| "compressing blob".into())?;
                (
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    enc.finish().ctx(|| "compressing".into())?,
                )
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, 1).ctx(|| "zstd".into())?;
                io::copy(&mut src, &mut enc).ctx(|| "compressing blob".into())?;
                (
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                    enc.finish().ctx(|| "compressing".into())?,
                )
            }
        };
        let (w, digest, size) = out.finish();
        w.into_inner()
            .map_err(|e| e.into_error())
            .ctx(|| "flushing blob".into())?;
        fs::rename(&tmp, blobs.join(digest.hex())).ctx(|| "naming blob".into())?;
        descs.push(json!({"mediaType": media, "digest": digest, "size": size}));
    }
    let config = new_config(None, &diff_ids, "strata image build");
    let config_digest = put_blob(&blobs, &config)?;
    let manifest = crate::image::oci::manifest_json(&config_digest, config.len(), descs);
    let manifest_digest = put_blob(&blobs, manifest.as_bytes())?;
    let mut index: serde_json::Value = fs::read(dir.join("index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "manifests": []}));
    index["manifests"]
        .as_array_mut()
        .expect("index has manifests")
        .push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": host_arch(), "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
    fs::write(dir.join("index.json"), index.to_string()).ctx(|| "writing index.json".into())?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .ctx(|| "writing oci-layout".into())?;
    Ok(manifest_digest)
}

fn put_blob(blobs: &Path, data: &[u8]) -> Result<Digest> {
    let d = Digest::of_bytes(data);
    let mut f = File::create(blobs.join(d.hex())).ctx(|| "writing blob".into())?;
    f.write_all(data).ctx(|| "writing blob".into())?;
    Ok(d)
}
