//! `strata diff`: what a container changed, from its writable layer alone.
//!
//! The upper directory is walked; whiteouts are deletions, opaque
//! directories hide what lay below. Whether an upper entry is an addition
//! or a change is one lookup of that path down the lower layers, never a
//! walk of the image. A directory renamed with redirect_dir (metacopy
//! containers) is an addition, with everything it brought along.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::archive::OVERLAY_OPAQUE_XATTR;
use crate::error::{IoContext, Result};
use crate::fsutil::xattr_is;
use crate::lowerstack::is_whiteout;
use crate::lowerstack::{is_redirected, origin_of, Lowers};
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

impl Store {
    pub fn container_changes(&self, reference: &str) -> Result<Vec<Change>> {
        let _lock = self.lock_shared()?;
        let c = self.find_container(reference)?;
        let lowers = self.lowers_of(&c.layers);
        let mut out = Vec::new();
        walk(
            &self.upper_dir(&c.id),
            Path::new(""),
            Path::new(""),
            &lowers,
            Below::Same,
            &mut out,
        )?;
        Ok(out)
    }
}

/// How an upper directory relates to the lower layers at its own path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Below {
    /// The path exists below: entries are changes or additions.
    Same,
    /// Nothing exists below: everything here is an addition, and no
    /// lookup is made.
    Nothing,
    /// A directory renamed here (redirect_dir): everything in it is an
    /// addition, including what it brought from its origin below, and its
    /// whiteouts delete nothing that was here.
    Moved,
}

fn walk(
    upper: &Path,
    rel: &Path,
    origin: &Path,
    lowers: &Lowers,
    below: Below,
    out: &mut Vec<Change>,
) -> Result<()> {
    let dir = upper.join(rel);
    let mut entries: Vec<(std::ffi::OsString, fs::FileType)> = fs::read_dir(&dir)
        .ctx(|| format!("reading {}", dir.display()))?
        .map(|e| e.and_then(|e| Ok((e.file_name(), e.file_type()?))))
        .collect::<std::io::Result<_>>()
        .ctx(|| format!("reading {}", dir.display()))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    if below == Below::Moved {
        let here: HashSet<_> = entries.iter().map(|(n, _)| n.clone()).collect();
        for name in lowers.list(origin) {
            if !here.contains(&name) {
                added_tree(&rel.join(&name), &origin.join(&name), lowers, out);
            }
        }
    }
    for (name, file_type) in entries {
        let relp = rel.join(&name);
        let abs = upper.join(&relp);
        let shown = format!("/{}", relp.display());
        // Only a character device can be a whiteout: the type readdir gave
        // spares a stat for everything else.
        if std::os::unix::fs::FileTypeExt::is_char_device(&file_type) {
            let md = fs::symlink_metadata(&abs).ctx(|| format!("stat {}", abs.display()))?;
            if is_whiteout(&md) {
                if below != Below::Moved {
                    out.push(Change {
                        kind: ChangeKind::Deleted,
                        path: shown,
                    });
                }
                continue;
            }
        }
        let in_lower = below == Below::Same && lowers.exists(&relp);
        out.push(Change {
            kind: if in_lower {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            },
            path: shown.clone(),
        });
        if !file_type.is_dir() {
            continue;
        }
        let opaque = xattr_is(&abs, OVERLAY_OPAQUE_XATTR, b"y");
        if in_lower && opaque {
            for gone in lowers.list(&relp) {
                if fs::symlink_metadata(abs.join(&gone)).is_err() {
                    out.push(Change {
                        kind: ChangeKind::Deleted,
                        path: format!("{shown}/{}", gone.to_string_lossy()),
                    });
                }
            }
        }
        let child_below = if opaque {
            if in_lower {
                Below::Same
            } else {
                Below::Nothing
            }
        } else if below == Below::Moved || is_redirected(&abs)? {
            Below::Moved
        } else if in_lower {
            Below::Same
        } else {
            Below::Nothing
        };
        let child_origin = origin_of(&abs, &name, origin)?;
        walk(upper, &relp, &child_origin, lowers, child_below, out)?;
    }
    Ok(())
}

/// Lower entry `origin`, and all beneath it, brought to `rel` by a rename.
fn added_tree(rel: &Path, origin: &Path, lowers: &Lowers, out: &mut Vec<Change>) {
    out.push(Change {
        kind: ChangeKind::Added,
        path: format!("/{}", rel.display()),
    });
    if lowers
        .find(origin)
        .is_some_and(|p| p.is_dir() && !p.is_symlink())
    {
        for name in lowers.list(origin) {
            added_tree(&rel.join(&name), &origin.join(&name), lowers, out);
        }
    }
}
