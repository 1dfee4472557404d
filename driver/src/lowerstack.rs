//! A container's lower layers as overlayfs sees them: which layer a path
//! comes from, what a directory lists once whiteouts and opaque
//! directories have had their say, and where a redirected directory or a
//! metacopy file of the upper layer takes its contents from.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fsutil::{get_xattr, xattr_is};

/// overlayfs's xattr on an upper directory (or metacopy file) that was
/// renamed: where in the lower layers its contents are.
pub const OVERLAY_REDIRECT_XATTR: &str = "trusted.overlay.redirect";
/// overlayfs's xattr on an upper file whose data is still in a lower layer
/// (metadata-only copy-up).
pub const OVERLAY_METACOPY_XATTR: &str = "trusted.overlay.metacopy";

/// The xattr overlayfs reads to make a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Is `md` an overlay whiteout (a 0/0 character device)?
pub fn is_whiteout(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    md.file_type().is_char_device() && md.rdev() == 0
}

/// The lower layers, top first.
pub struct Lowers(pub Vec<PathBuf>);

impl Lowers {
    /// The file or directory `rel` resolves to in the lower stack (the
    /// topmost layer that has it, unless a whiteout or an opaque
    /// directory above hides it).
    pub fn find(&self, rel: &Path) -> Option<PathBuf> {
        let comps: Vec<_> = rel.components().collect();
        for layer in &self.0 {
            let mut p = layer.clone();
            let mut hidden_below = false;
            for (i, comp) in comps.iter().enumerate() {
                p.push(comp);
                let Ok(md) = fs::symlink_metadata(&p) else {
                    break; // not in this layer; maybe in a lower one
                };
                if is_whiteout(&md) {
                    return None;
                }
                if i + 1 == comps.len() {
                    return Some(p);
                }
                if !md.is_dir() {
                    return None;
                }
                if xattr_is(&p, OVERLAY_OPAQUE_XATTR, b"y") {
                    hidden_below = true;
                }
            }
            if hidden_below {
                return None;
            }
        }
        None
    }

    /// Is `rel` visible in the lower stack (before the upper applies)?
    pub fn exists(&self, rel: &Path) -> bool {
        self.find(rel).is_some()
    }

    /// Names visible in lower directory `rel`, sorted.
    pub fn list(&self, rel: &Path) -> Vec<std::ffi::OsString> {
        let mut names = BTreeSet::new();
        let mut whited = HashSet::new();
        for layer in &self.0 {
            let dir = layer.join(rel);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                match e.metadata() {
                    Ok(md) if is_whiteout(&md) => {
                        whited.insert(name);
                    }
                    Ok(_) if !whited.contains(&name) => {
                        names.insert(name);
                    }
                    _ => {}
                }
            }
            if xattr_is(&dir, OVERLAY_OPAQUE_XATTR, b"y") {
                break;
            }
        }
        names
            .into_iter()
            .filter(|n| self.exists(&rel.join(n)))
            .collect()
    }
}

/// Where upper entry `abs` (named `name`, in a directory whose lower
/// contents are at `parent_origin`) takes its lower contents from: its
/// redirect if it has one (absolute from the root, or a name beside the
/// parent's origin), else the same name there.
pub fn origin_of(abs: &Path, name: &OsStr, parent_origin: &Path) -> Result<PathBuf> {
    Ok(match get_xattr(abs, OVERLAY_REDIRECT_XATTR)? {
        Some(r) if r.starts_with(b"/") => PathBuf::from(OsStr::from_bytes(&r))
            .strip_prefix("/")
            .unwrap()
            .to_path_buf(),
        Some(r) => parent_origin.join(OsStr::from_bytes(&r)),
        None => parent_origin.join(name),
    })
}

/// Is `abs` a directory overlayfs redirected (renamed with redirect_dir)?
pub fn is_redirected(abs: &Path) -> Result<bool> {
    Ok(get_xattr(abs, OVERLAY_REDIRECT_XATTR)?.is_some())
}

/// Is `abs` a metacopy file (its data still in a lower layer)?
pub fn is_metacopy(abs: &Path) -> Result<bool> {
    Ok(get_xattr(abs, OVERLAY_METACOPY_XATTR)?.is_some())
}
