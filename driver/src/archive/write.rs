//! Writing a layer directory (a lower layer, or a container's upper) as an
//! OCI layer tar: overlay whiteouts become `.wh.NAME`, opaque directories get
//! a `.wh..wh..opq` marker, hardlinks are kept, xattrs go in PAX records.
//! A container's upper may hold what only its overlay understands
//! (metacopy files, redirected directories): write_upper_tar resolves them.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use super::{OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_PREFIX};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{get_xattr, xattr_is};
use crate::lowerstack::{is_metacopy, is_redirected, origin_of, Lowers};

/// Streams `dir` as a layer tar into `out`, in sorted (reproducible) order.
pub fn write_layer_tar<W: Write>(dir: &Path, out: W) -> Result<W> {
    write_tar(dir, None, out)
}

/// Streams a container's upper directory as a layer tar, resolving what
/// only overlayfs knows against `lowers`: a metacopy file's data comes
/// from its lower file, and a directory renamed with redirect_dir becomes
/// an opaque directory holding everything it brought from its origin.
pub fn write_upper_tar<W: Write>(upper: &Path, lowers: &Lowers, out: W) -> Result<W> {
    write_tar(upper, Some(lowers), out)
}

fn write_tar<W: Write>(dir: &Path, lowers: Option<&Lowers>, out: W) -> Result<W> {
    let mut w = LayerWriter {
        builder: Builder::new(out),
        links: HashMap::new(),
        lowers,
    };
    w.builder.follow_symlinks(false);
    w.walk(dir, Path::new(""), Path::new(""), false)?;
    w.builder.into_inner().ctx(|| "finishing tar stream".into())
}

struct LayerWriter<'a, W: Write> {
    builder: Builder<W>,
    /// (dev, ino) of multiply-linked files already written -> their path.
    links: HashMap<(u64, u64), PathBuf>,
    /// Set for an upper directory: the layers its overlay xattrs refer to.
    lowers: Option<&'a Lowers>,
}

impl<W: Write> LayerWriter<'_, W> {
    /// Writes directory `abs` (at `rel` in the layer), whose lower
    /// contents are at `origin`. With `moved`, the directory was written
    /// opaque because it or a parent was renamed here: what it has below
    /// at `origin` and not in `abs` is written too.
    fn walk(&mut self, abs: &Path, rel: &Path, origin: &Path, moved: bool) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(abs)
            .ctx(|| format!("reading {}", abs.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .ctx(|| format!("reading {}", abs.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        if let (true, Some(lowers)) = (moved, self.lowers) {
            for name in lowers.list(origin) {
                if names
                    .binary_search_by(|n| n.as_bytes().cmp(name.as_bytes()))
                    .is_err()
                {
                    self.lower_tree(lowers, &origin.join(&name), &rel.join(&name))?;
                }
            }
        }
        for name in names {
            let path = abs.join(&name);
            let relp = rel.join(&name);
            let md = fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                if !moved {
                    let wh = rel.join(format!("{WHITEOUT_PREFIX}{}", name.to_string_lossy()));
                    self.empty_file(&wh, &md)?;
                }
                continue;
            }
            let xattrs = read_xattrs(&path)?;
            let (child_origin, data) = match self.lowers {
                Some(lowers) => {
                    let o = origin_of(&path, &name, origin)?;
                    let data = if ft.is_file() && is_metacopy(&path)? {
                        lowers.find(&o).ok_or_else(|| {
                            Error::Invalid(format!(
                                "{}: metacopy file without its data in a lower layer",
                                path.display()
                            ))
                        })?
                    } else {
                        path.clone()
                    };
                    (o, data)
                }
                None => (relp.clone(), path.clone()),
            };
            self.entry(&path, &data, &relp, &md, &xattrs)?;
            if ft.is_dir() {
                let opaque = xattr_is(&path, OVERLAY_OPAQUE_XATTR, b"y");
                let renamed = self.lowers.is_some() && !opaque && is_redirected(&path)?;
                if opaque || renamed {
                    self.empty_file(&relp.join(OPAQUE_MARKER), &md)?;
                }
                self.walk(&path, &relp, &child_origin, !opaque && (moved || renamed))?;
            }
        }
        Ok(())
    }

    /// Writes lower entry `origin`, and everything beneath it as the lower
    /// stack shows it, at `rel`.
    fn lower_tree(&mut self, lowers: &Lowers, origin: &Path, rel: &Path) -> Result<()> {
        let Some(abs) = lowers.find(origin) else {
            return Ok(());
        };
        let md = fs::symlink_metadata(&abs).ctx(|| format!("stat {}", abs.display()))?;
        self.entry(&abs, &abs, rel, &md, &read_xattrs(&abs)?)?;
        if md.is_dir() {
            for name in lowers.list(origin) {
                self.lower_tree(lowers, &origin.join(&name), &rel.join(&name))?;
            }
        }
        Ok(())
    }

    /// Writes the entry for `abs` at `rel`; a regular file's data is read
    /// from `data` (`abs` itself, or a metacopy file's lower file).
    fn entry(
        &mut self,
        abs: &Path,
        data: &Path,
        rel: &Path,
        md: &Metadata,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let ctx = || format!("archiving {}", abs.display());
        if !xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .ctx(ctx)?;
        }
        let mut h = Header::new_gnu();
        h.set_metadata_in_mode(md, tar::HeaderMode::Complete);
        h.set_mode(md.mode() & 0o7777);
        let ft = md.file_type();
        if ft.is_file() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = self.links.get(&key) {
                h.set_entry_type(EntryType::Link);
                h.set_size(0);
                let first = first.clone();
                return self.builder.append_link(&mut h, rel, &first).ctx(ctx);
            }
            self.links.insert(key, rel.to_path_buf());
        }
        if ft.is_file() {
            let f = File::open(data).ctx(ctx)?;
            self.builder.append_data(&mut h, rel, f).ctx(ctx)
        } else if ft.is_symlink() {
            let target = fs::read_link(abs).ctx(ctx)?;
            h.set_size(0);
            self.builder.append_link(&mut h, rel, &target).ctx(ctx)
        } else {
            h.set_size(0);
            if ft.is_char_device() || ft.is_block_device() {
                let (maj, min) = (libc::major(md.rdev()), libc::minor(md.rdev()));
                h.set_device_major(maj).ctx(ctx)?;
                h.set_device_minor(min).ctx(ctx)?;
            }
            self.builder.append_data(&mut h, rel, io::empty()).ctx(ctx)
        }
    }

    fn empty_file(&mut self, rel: &Path, md: &Metadata) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(0);
        h.set_mtime(md.mtime().max(0) as u64);
        self.builder
            .append_data(&mut h, rel, io::empty())
            .ctx(|| format!("archiving {}", rel.display()))
    }
}

fn path_cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths from readdir have no NUL")
}

/// All xattrs of `path` (not following symlinks), minus overlayfs's own.
pub fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let c = path_cstr(path);
    let ctx = || format!("listing xattrs of {}", path.display());
    // SAFETY: NUL-terminated path; a null buffer asks for the size.
    let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e).ctx(ctx),
        };
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: buffer of the size the kernel asked for.
    let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error()).ctx(ctx);
    }
    let mut out = Vec::new();
    for name in names[..len as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        if let Some(v) = get_xattr(path, &name)? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}
