//! Where an image's files are read from: a directory (an OCI layout, a
//! `docker save` directory), or the members of an uncompressed archive
//! file, read in place. An archive is indexed in one pass over its headers
//! (seeking past the data); its manifest, config and layer blobs are then
//! byte ranges of the file, so a 200 MB `docker save` is never copied
//! into staging before its layers are extracted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::{inside, invalid, SMALL_MAX};
use crate::archive::apply::clean_entry_path;
use crate::error::{IoContext, Result};

/// A blob: a whole file, or `len` bytes of `path` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub path: PathBuf,
    pub range: Option<(u64, u64)>,
}

impl Blob {
    pub fn file(path: PathBuf) -> Blob {
        Blob { path, range: None }
    }
}

impl super::LayerSource for Blob {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        let mut f = File::open(&self.path)?;
        Ok(match self.range {
            None => Box::new(f),
            Some((offset, len)) => {
                f.seek(SeekFrom::Start(offset))?;
                Box::new(f.take(len))
            }
        })
    }

    fn size(&self) -> Option<u64> {
        match self.range {
            Some((_, len)) => Some(len),
            None => std::fs::metadata(&self.path).ok().map(|m| m.len()),
        }
    }
}

impl std::fmt::Display for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.range {
            None => write!(f, "{}", self.path.display()),
            Some((offset, _)) => write!(f, "{} at byte {offset}", self.path.display()),
        }
    }
}

/// An archive member as the index keeps it.
#[derive(Debug, Clone)]
enum Member {
    Data {
        offset: u64,
        len: u64,
    },
    /// A symlink's target, relative to the member's directory (docker 25+
    /// links `<id>/layer.tar` to `blobs/sha256/<hex>`).
    Symlink(String),
    /// A hardlink's target member.
    Hardlink(String),
}

/// An image's files, in a directory or in an archive.
pub struct ImageFiles(Place);

enum Place {
    Dir(PathBuf),
    Archive {
        path: PathBuf,
        members: HashMap<String, Member>,
    },
}

/// Symlinks followed from one name before giving up (a loop).
const MAX_LINKS: usize = 16;

impl ImageFiles {
    pub fn dir(dir: PathBuf) -> ImageFiles {
        ImageFiles(Place::Dir(dir))
    }

    /// Indexes the members of uncompressed archive `path`. None when it
    /// cannot be read in place (a sparse member); Err when it is not a
    /// readable tar.
    pub fn index_archive(path: &Path) -> Result<Option<ImageFiles>> {
        let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        let file_len = f
            .metadata()
            .ctx(|| format!("stat {}", path.display()))?
            .len();
        let mut archive = tar::Archive::new(f);
        let mut members = HashMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| invalid(path, format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| invalid(path, format!("corrupt tar: {e}")))?;
            let raw = entry.path_bytes();
            let Ok(comps) = clean_entry_path(&raw) else {
                continue; // never named by a manifest we accept
            };
            let name = join(&comps);
            if entry.raw_file_position().saturating_add(entry.size()) > file_len {
                // Seeking past it would fail without saying which member.
                return Err(invalid(
                    path,
                    format!(
                        "member {name:?} claims {} bytes, past the end of the archive",
                        entry.size()
                    ),
                ));
            }
            let link = || {
                entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default()
            };
            let member = match entry.header().entry_type() {
                EntryType::Regular | EntryType::Continuous => Member::Data {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                },
                EntryType::Symlink => Member::Symlink(link()),
                EntryType::Link => Member::Hardlink(link()),
                EntryType::GNUSparse => return Ok(None),
                _ => continue,
            };
            members.insert(name, member);
        }
        Ok(Some(ImageFiles(Place::Archive {
            path: path.to_path_buf(),
            members,
        })))
    }

    /// Top-level names: what tells an OCI layout from a docker archive.
    pub fn has(&self, name: &str) -> bool {
        match &self.0 {
            Place::Dir(dir) => dir.join(name).is_file(),
            Place::Archive { members, .. } => members.contains_key(name),
        }
    }

    /// A blob named by a manifest, relative to the image's root.
    pub fn blob(&self, rel: &str, src: &Path) -> Result<Blob> {
        match &self.0 {
            Place::Dir(dir) => {
                let p = inside(dir, rel, src)?;
                if !p.is_file() {
                    return Err(invalid(src, format!("{rel:?} is not a file")));
                }
                Ok(Blob::file(p))
            }
            Place::Archive { path, members } => {
                let mut name = normalize(rel, src)?;
                for _ in 0..MAX_LINKS {
                    match members.get(&name) {
                        Some(Member::Data { offset, len }) => {
                            return Ok(Blob {
                                path: path.clone(),
                                range: Some((*offset, *len)),
                            })
                        }
                        Some(Member::Hardlink(target)) => name = normalize(target, src)?,
                        Some(Member::Symlink(target)) => {
                            let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                            name = resolve_relative(dir, target).ok_or_else(|| {
                                invalid(src, format!("{rel:?} links outside the archive"))
                            })?;
                        }
                        None => return Err(invalid(src, format!("{rel:?} names a missing file"))),
                    }
                }
                Err(invalid(src, format!("{rel:?}: too many links")))
            }
        }
    }

    /// A small JSON document (manifest, index, config), read up to one
    /// byte past the cap, so that a bigger one is refused without being
    /// read whole.
    pub fn read_small(&self, rel: &str, src: &Path) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        super::LayerSource::open(&self.blob(rel, src)?)
            .and_then(|r| r.take(SMALL_MAX + 1).read_to_end(&mut data))
            .ctx(|| format!("reading {rel} in {}", src.display()))?;
        if data.len() as u64 > SMALL_MAX {
            return Err(invalid(src, format!("{rel} is larger than 16 MiB")));
        }
        Ok(data)
    }
}

fn join(comps: &[&std::ffi::OsStr]) -> String {
    comps
        .iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A manifest's path as the index names members.
fn normalize(rel: &str, src: &Path) -> Result<String> {
    clean_entry_path(rel.as_bytes())
        .map(|c| join(&c))
        .map_err(|r| invalid(src, format!("path {rel:?}: {r}")))
}

/// `target` from directory `dir`, `..` allowed while it stays inside.
fn resolve_relative(dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::resolve_relative;

    #[test]
    fn links_resolve_inside_the_archive_only() {
        assert_eq!(
            resolve_relative("abc", "../blobs/sha256/ff").as_deref(),
            Some("blobs/sha256/ff")
        );
        assert_eq!(resolve_relative("", "x/./y").as_deref(), Some("x/y"));
        assert_eq!(resolve_relative("a", "../../etc/passwd"), None);
    }
}
