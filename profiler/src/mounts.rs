//! Overlay mounts on this host and their layer lists, from mountinfo:
//! what turns a copied-up path into a layer depth.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct OverlayMount {
    pub mount_point: PathBuf,
    /// The overlay superblock's device in the kernel's encoding (major
    /// << 20 | minor): what the kernel programs read from a dentry.
    pub dev: u32,
    /// The mount shows the overlay's root (not a directory bind-mounted
    /// from inside it).
    pub whole: bool,
    /// Lower directories, top (nearest the upper) first.
    pub lowers: Vec<PathBuf>,
    /// The writable layer, if the mount has one.
    pub upper: Option<PathBuf>,
    /// Every lower (and the upper) names an existing directory. Options
    /// given relative to the mounting process's cwd, which mountinfo does
    /// not keep, may resolve nowhere: then the kernel's word is all there
    /// is about this mount's layers.
    pub lowers_found: bool,
}

impl OverlayMount {
    /// Whether the overlay this entry was read for is still mounted at
    /// its mount point (the device there is still `dev`).
    pub fn is_current(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.mount_point).is_ok_and(|md| {
            let (major, minor) = (libc::major(md.dev()), libc::minor(md.dev()));
            (major << 20) | minor == self.dev
        })
    }

    /// 1-based depth below the upper layer of the lower layer that holds
    /// `rel`, or None if no lower has it (a new file, not a copy-up).
    pub fn layer_of(&self, rel: &Path) -> Option<usize> {
        self.lowers
            .iter()
            .position(|l| std::fs::symlink_metadata(l.join(rel)).is_ok())
            .map(|i| i + 1)
    }
}

pub fn overlay_mounts() -> Vec<OverlayMount> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<OverlayMount> {
    let (pre, post) = line.split_once(" - ")?;
    let mut post = post.split(' ');
    if post.next()? != "overlay" {
        return None;
    }
    let fields: Vec<&str> = pre.split(' ').collect();
    let mount_point = unescape(fields.get(4)?);
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let dev = (major.parse::<u32>().ok()? << 20) | minor.parse::<u32>().ok()?;
    let whole = *fields.get(3)? == "/";
    let options = post.nth(1)?;
    let opts = split_unescaped(options, ',');
    let upper = opts.iter().find_map(|o| o.strip_prefix("upperdir="));
    // Top first; `lowerdir=` is split on ':' the kernel did not escape.
    let lowers: Vec<String> = opts
        .iter()
        .flat_map(|o| {
            if let Some(v) = o.strip_prefix("lowerdir+=") {
                vec![v.to_string()]
            } else if let Some(v) = o.strip_prefix("lowerdir=") {
                split_unescaped(v, ':')
            } else {
                Vec::new()
            }
        })
        .filter(|p| !p.is_empty())
        .collect();
    let (base, lowers_found) = relative_base(&mount_point, upper, &lowers);
    let abs = |p: &str| {
        let p = unescape(p);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    Some(OverlayMount {
        upper: upper.map(abs),
        lowers: lowers.iter().map(|p| abs(p)).collect(),
        mount_point,
        dev,
        whole,
        lowers_found,
    })
}

/// Where relative layer options are relative to: the mounting process's
/// cwd, which mountinfo does not keep. Tries where engines mount from and
/// takes the first where every layer is an existing directory: strata's
/// store `l/` (three levels above a container's upper or merged), the
/// parent of a hand-made mount made from its own directory, and docker's
/// and containers/storage's home (two above `<id>/merged`). Returns the
/// base, and whether every layer was found.
fn relative_base(mount_point: &Path, upper: Option<&str>, lowers: &[String]) -> (PathBuf, bool) {
    let layers: Vec<PathBuf> = upper
        .into_iter()
        .chain(lowers.iter().map(String::as_str))
        .map(unescape)
        .collect();
    let exists_under =
        |base: &Path| layers.iter().all(|l| base.join(l).is_dir()) && !layers.is_empty();
    if layers.iter().all(|l| l.is_absolute()) {
        return (PathBuf::new(), exists_under(Path::new("/")));
    }
    let upper_abs = upper.map(unescape).filter(|u| u.is_absolute());
    let strata = |p: &Path| p.ancestors().nth(3).map(|root| root.join("l"));
    let candidates: Vec<PathBuf> = [
        upper_abs.as_deref().and_then(strata),
        strata(mount_point),
        mount_point.parent().map(Path::to_path_buf),
        mount_point.ancestors().nth(2).map(Path::to_path_buf),
    ]
    .into_iter()
    .flatten()
    .collect();
    match candidates.iter().find(|b| exists_under(b)) {
        Some(b) => (b.clone(), true),
        None => (candidates.into_iter().next().unwrap_or_default(), false),
    }
}

/// Splits on `sep` except where the kernel escaped it with a backslash.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                if n != sep {
                    out.last_mut().unwrap().push('\\');
                }
                out.last_mut().unwrap().push(n);
            }
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out
}

/// A mountinfo field as a path (the kernel escapes it as \ooo).
fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(
        &strata_driver::mount::unescape_mountinfo(s),
    ))
}

/// The overlay mount whose writable layer is `upper`: how a container is
/// found wherever its engine mounted it (strata's CLI under the store,
/// containerd under its own state directory).
pub fn mount_with_upper(upper: &Path) -> Option<OverlayMount> {
    let want = upper.canonicalize().ok()?;
    overlay_mounts()
        .into_iter()
        .find(|m| m.upper.as_deref().and_then(|u| u.canonicalize().ok()) == Some(want.clone()))
}

/// A mount of the whole overlay whose superblock is `dev`, the first
/// made where it is mounted more than once.
pub fn mount_with_dev(mounts: &[OverlayMount], dev: u32) -> Option<&OverlayMount> {
    mounts.iter().find(|m| dev != 0 && m.dev == dev && m.whole)
}

/// The overlay mount whose mount point is the longest prefix of `path`.
pub fn mount_of<'a>(
    mounts: &'a [OverlayMount],
    path: &Path,
) -> Option<(&'a OverlayMount, PathBuf)> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .map(|m| (m, path.strip_prefix(&m.mount_point).unwrap().to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_lowerdir_forms() {
        let plus = "50 27 0:42 / /s/containers/c/merged rw - overlay none rw,lowerdir+=/s/layers/a/diff,lowerdir+=/s/layers/b/diff,upperdir=/s/containers/c/upper,workdir=/w";
        let m = parse_line(plus).unwrap();
        assert_eq!(
            m.lowers,
            vec![
                PathBuf::from("/s/layers/a/diff"),
                PathBuf::from("/s/layers/b/diff")
            ]
        );
        let legacy = "51 27 0:43 / /s/containers/c/merged rw - overlay overlay rw,lowerdir=AB:CD,upperdir=/s/containers/c/upper,workdir=/w";
        let m = parse_line(legacy).unwrap();
        assert_eq!(
            m.lowers,
            vec![PathBuf::from("/s/l/AB"), PathBuf::from("/s/l/CD")]
        );
        // containerd mounts strata's snapshots under its own state dir,
        // from the common parent of the l/ links when the list is long.
        let containerd = "52 27 0:44 / /run/ctrd/t/ns/c1/rootfs rw - overlay overlay rw,index=off,workdir=/s/containers/c/work,upperdir=/s/containers/c/upper,lowerdir=AB:CD";
        let m = parse_line(containerd).unwrap();
        assert_eq!(m.upper, Some(PathBuf::from("/s/containers/c/upper")));
        assert_eq!(
            m.lowers,
            vec![PathBuf::from("/s/l/AB"), PathBuf::from("/s/l/CD")]
        );
        assert!(parse_line("52 27 0:44 / /x rw - ext4 /dev/vda rw").is_none());
        // The kernel's encoding of the superblock device, as the kernel
        // programs read it.
        assert_eq!(m.dev, 44);
        let big = parse_line("53 27 259:1048575 / /m rw - overlay o rw,lowerdir=/l").unwrap();
        assert_eq!(big.dev, (259 << 20) | 0xfffff);
        let sub = parse_line("54 27 0:44 /sub /m2 rw - overlay o rw,lowerdir=/l").unwrap();
        assert!(m.whole && !sub.whole);
        assert_eq!(
            mount_with_dev(&[sub, m.clone()], 44).unwrap().mount_point,
            m.mount_point
        );
    }
}
