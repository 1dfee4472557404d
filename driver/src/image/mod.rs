//! Image formats strata imports: OCI image layouts (directory or tarball),
//! `docker save` archives, and plain directories or tars (one layer).
//!
//! Each format is parsed into a `SourceImage`: a config, the layer blobs in
//! order with the digests they must have, and the tags it carries.

pub mod build;
pub mod config;
pub mod docker;
pub mod files;
pub mod oci;
pub mod platform;

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::archive::{apply::clean_path, compression};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// Where a layer's blob is read from: a file (or a byte range of one,
/// see `files`), or a registry (see `registry::fetcher`). The extraction
/// reads every source the same way.
pub trait LayerSource: std::fmt::Display + std::fmt::Debug + Send + Sync {
    /// The blob from its first byte.
    fn open(&self) -> std::io::Result<Box<dyn std::io::Read + '_>>;
    /// Its size in bytes, where known before reading it.
    fn size(&self) -> Option<u64>;
    /// The layer it holds is stored: a download's partial copy can go.
    fn stored(&self) {}
    /// Its bytes proved wrong: forget any copy of them.
    fn discard(&self) {}
}

/// A source that failed to deliver its bytes (a registry gone away, say),
/// inside the io::Error its reader returns: the extraction reports this
/// error itself rather than calling the blob corrupt.
#[derive(Debug)]
pub struct SourceFailed(pub Error);

impl std::fmt::Display for SourceFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for SourceFailed {}

#[derive(Debug)]
pub struct SourceLayer {
    pub blob: Box<dyn LayerSource>,
    /// Digest of the blob as stored (compressed), where the format has one.
    pub digest: Option<Digest>,
}

#[derive(Debug)]
pub struct SourceImage {
    /// Raw config JSON; None for plain layers (strata writes one).
    pub config: Option<Vec<u8>>,
    pub layers: Vec<SourceLayer>,
    pub tags: Vec<String>,
}

/// What SRC turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum SourceKind {
    OciLayout,
    DockerArchive,
    PlainDir,
    PlainTar,
}

/// Splits `PATH:TAG`, but only when PATH exists and PATH:TAG does not.
pub fn split_tag(src: &str) -> (PathBuf, Option<String>) {
    if Path::new(src).exists() {
        return (PathBuf::from(src), None);
    }
    if let Some((path, tag)) = src.rsplit_once(':') {
        if !tag.contains('/') && Path::new(path).exists() {
            return (PathBuf::from(path), Some(tag.to_string()));
        }
    }
    (PathBuf::from(src), None)
}

/// What a source is by the top-level names it `has`: an OCI layout, a
/// `docker save` archive, or else `plain` (one layer).
pub fn kind_from_names(has: impl Fn(&str) -> bool, plain: SourceKind) -> SourceKind {
    if has("oci-layout") && has("index.json") {
        SourceKind::OciLayout
    } else if has("manifest.json") {
        SourceKind::DockerArchive
    } else {
        plain
    }
}

pub fn detect_dir(dir: &Path) -> SourceKind {
    kind_from_names(|name| dir.join(name).is_file(), SourceKind::PlainDir)
}

/// Looks at a tar file's top-level names (one streaming pass, nothing
/// written) to tell an image archive from a plain layer tar.
pub fn detect_tar(path: &Path) -> Result<SourceKind> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let (_, reader) = compression::decompress(f).ctx(|| format!("reading {}", path.display()))?;
    let mut archive = tar::Archive::new(reader);
    let mut names = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| invalid(path, format!("not a tar archive: {e}")))?;
    let mut last = String::from("<start of archive>");
    for entry in entries {
        let entry = entry.map_err(|e| {
            invalid(
                path,
                format!("corrupt or truncated tar after entry {last:?}: {e}"),
            )
        })?;
        let raw = entry.path_bytes();
        last = String::from_utf8_lossy(&raw).into_owned();
        if let Ok(comps) = clean_path(&raw) {
            if comps.len() == 1 {
                names.push(comps[0].as_encoded_bytes().to_vec());
            }
        }
    }
    let has = |name: &str| names.iter().any(|n| n == name.as_bytes());
    Ok(kind_from_names(has, SourceKind::PlainTar))
}

pub fn invalid(src: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidImage {
        source_name: src.display().to_string(),
        reason: reason.into(),
    }
}

/// The cap on a manifest, index or config: a hostile archive cannot make
/// us allocate gigabytes.
pub const SMALL_MAX: u64 = 16 << 20;

/// Resolves `rel` (from a manifest) inside `root`, refusing anything that
/// leads outside it, symlinks included.
pub fn inside(root: &Path, rel: &str, src: &Path) -> Result<PathBuf> {
    let comps =
        clean_path(rel.as_bytes()).map_err(|r| invalid(src, format!("path {rel:?}: {r}")))?;
    let mut p = root.to_path_buf();
    p.extend(comps);
    let real = p
        .canonicalize()
        .map_err(|e| invalid(src, format!("{rel:?} names a missing file: {e}")))?;
    let real_root = root
        .canonicalize()
        .ctx(|| format!("resolving {}", root.display()))?;
    if !real.starts_with(&real_root) {
        return Err(invalid(src, format!("{rel:?} points outside the archive")));
    }
    Ok(real)
}
