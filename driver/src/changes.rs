//! `strata diff`: what a container changed, from its writable layer alone.
//!
//! The upper directory is walked; whiteouts are deletions, opaque
//! directories hide what lay below. Whether an upper entry is an addition
//! or a change is one lookup of that path down the lower layers, never a
//! walk of the image.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::write::{is_whiteout, xattr_is};
use crate::archive::OVERLAY_OPAQUE_XATTR;
use crate::error::{IoContext, Result};
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ChangeKind {
    #[serde(rename = "A")]
    Added,
    #[serde(rename = "C")]
    Changed,
    #[serde(rename = "D")]
    Deleted,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    /// Absolute path inside the container.
    pub path: String,
}

/// The lower layers of a container, top first.
pub struct Lowers(Vec<PathBuf>);

impl Lowers {
    /// Is `rel` visible in the lower stack (before the upper applies)?
    pub fn exists(&self, rel: &Path) -> bool {
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
                    return false;
                }
                let last = i + 1 == comps.len();
                if last {
                    return true;
                }
                if !md.is_dir() {
                    return false;
                }
                if xattr_is(&p, OVERLAY_OPAQUE_XATTR, b"y") {
                    hidden_below = true;
                }
            }
            if hidden_below {
                return false;
            }
        }
        false
    }

    /// Names visible in lower directory `rel` (for an opaque upper dir,
    /// these are what it deleted).
    fn list(&self, rel: &Path) -> Vec<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut whited = std::collections::HashSet::new();
        for layer in &self.0 {
            let dir = layer.join(rel);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
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

impl Store {
    pub fn container_changes(&self, reference: &str) -> Result<Vec<Change>> {
        let _lock = self.lock_shared()?;
        let c = self.find_container(reference)?;
        let lowers = Lowers(c.layers.iter().rev().map(|l| self.layer_diff(l)).collect());
        let mut out = Vec::new();
        walk(
            &self.upper_dir(&c.id),
            Path::new(""),
            &lowers,
            true,
            &mut out,
        )?;
        Ok(out)
    }
}

/// `parent_in_lower`: whether `rel` exists below. When it does not, nothing
/// under it can, so its whole subtree is additions and no lookup is made.
fn walk(
    upper: &Path,
    rel: &Path,
    lowers: &Lowers,
    parent_in_lower: bool,
    out: &mut Vec<Change>,
) -> Result<()> {
    let dir = upper.join(rel);
    let mut entries: Vec<(std::ffi::OsString, fs::FileType)> = fs::read_dir(&dir)
        .ctx(|| format!("reading {}", dir.display()))?
        .map(|e| e.and_then(|e| Ok((e.file_name(), e.file_type()?))))
        .collect::<std::io::Result<_>>()
        .ctx(|| format!("reading {}", dir.display()))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, file_type) in entries {
        let relp = rel.join(&name);
        let abs = upper.join(&relp);
        let shown = format!("/{}", relp.display());
        // Only a character device can be a whiteout: the type readdir gave
        // spares a stat for everything else.
        if std::os::unix::fs::FileTypeExt::is_char_device(&file_type) {
            let md = fs::symlink_metadata(&abs).ctx(|| format!("stat {}", abs.display()))?;
            if is_whiteout(&md) {
                out.push(Change {
                    kind: ChangeKind::Deleted,
                    path: shown,
                });
                continue;
            }
        }
        let in_lower = parent_in_lower && lowers.exists(&relp);
        out.push(Change {
            kind: if in_lower {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            },
            path: shown.clone(),
        });
        if file_type.is_dir() {
            if in_lower && xattr_is(&abs, OVERLAY_OPAQUE_XATTR, b"y") {
                for gone in lowers.list(&relp) {
                    if fs::symlink_metadata(abs.join(&gone)).is_err() {
                        out.push(Change {
                            kind: ChangeKind::Deleted,
                            path: format!("{shown}/{gone}"),
                        });
                    }
                }
            }
            walk(upper, &relp, lowers, in_lower, out)?;
        }
    }
    Ok(())
}
