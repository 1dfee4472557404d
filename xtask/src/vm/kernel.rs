//! Guest kernels: stock Debian cloud kernels, fetched from the apt sources
//! with `apt-get download`, unpacked with `dpkg -x` and cached under
//! target/vm/kernels. Only the kernel image and the few modules the guest
//! needs are used.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run;

/// Kernels `vm-test` knows: (name, apt package that depends on the newest
/// image of that series).
pub const KERNELS: &[(&str, &str)] = &[
    // Debian 12's own kernel: overlay is a module, no `lowerdir+`.
    ("debian-6.1", "linux-image-cloud-amd64"),
    // Debian 12's newer series (from bookworm-security): has `lowerdir+`.
    ("debian-6.12", "linux-image-6.12-cloud-amd64"),
];

/// Modules the guest loads, in no particular order; dependencies are added
/// from modules.dep. A module built into a kernel is simply absent.
/// xfs and quota_v2 (ext4's quota file format) for the quota tests.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "overlay",
    "loop",
    "xfs",
    "quota_v2",
];

pub struct Kernel {
    pub name: String,
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Uncompressed module files, dependencies first.
    pub modules: Vec<PathBuf>,
}

/// Fetches (once) and unpacks the kernel called `name`.
pub fn fetch(name: &str, cache: &Path) -> Result<Kernel> {
    let Some((_, meta)) = KERNELS.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = KERNELS.iter().map(|(n, _)| *n).collect();
        bail!("unknown kernel {name:?}; known: {}", known.join(", "));
    };
    let package = image_package(meta)?;
    let dir = cache.join(&package);
    let unpacked = dir.join("root");
    if !unpacked.join("boot").is_dir() {
        fs::create_dir_all(&dir)?;
        run(Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(&dir))
        .with_context(|| format!("downloading {package}"))?;
        let deb = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| format!("apt-get download left no .deb for {package}"))?;
        let staging = dir.join("root.partial");
        let _ = fs::remove_dir_all(&staging);
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&staging))?;
        fs::rename(&staging, &unpacked)?;
        fs::remove_file(&deb)?;
    }
    let release = fs::read_dir(unpacked.join("lib/modules"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{package} has no lib/modules"))?;
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{release}"));
    let moddir = unpacked.join("lib/modules").join(&release);
    if !moddir.join("modules.dep").exists() {
        // The package leaves the dependency index to its install script.
        run(Command::new("depmod")
            .arg("-b")
            .arg(&unpacked)
            .arg(&release))?;
    }
    let modules = resolve_modules(&moddir, &dir)?;
    Ok(Kernel {
        name: name.to_string(),
        release,
        vmlinuz,
        modules,
    })
}

/// The versioned image package a meta package points at today.
fn image_package(meta: &str) -> Result<String> {
    let depends = || -> Result<Option<String>> {
        let out = Command::new("apt-cache")
            .args(["depends", meta])
            .output()
            .context("running apt-cache")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_string))
    };
    if let Some(p) = depends()? {
        return Ok(p);
    }
    // A fresh machine may have no package lists yet.
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    depends()?.with_context(|| format!("apt sources offer no {meta}"))
}

/// Orders the wanted modules after their dependencies (modules.dep) and
/// decompresses them into `dir`: busybox's insmod takes plain ELF only.
fn resolve_modules(moddir: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let dep_file = fs::read_to_string(moddir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", moddir.display()))?;
    let deps: BTreeMap<&str, Vec<&str>> = dep_file
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m, d.split_whitespace().collect()))
        .collect();
    let by_name = |name: &str| {
        deps.keys().copied().find(|path| {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.split('.').next() == Some(name)
        })
    };
    let mut order: Vec<&str> = Vec::new();
    fn visit<'a>(m: &'a str, deps: &BTreeMap<&'a str, Vec<&'a str>>, order: &mut Vec<&'a str>) {
        if order.contains(&m) {
            return;
        }
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, order);
        }
        order.push(m);
    }
    for name in MODULES {
        if let Some(path) = by_name(name) {
            visit(path, &deps, &mut order);
        }
    }
    let out = dir.join("modules");
    fs::create_dir_all(&out)?;
    order
        .iter()
        .map(|rel| {
            let src = moddir.join(rel);
            let file = src.file_name().unwrap().to_string_lossy();
            let stem = file.split(".ko").next().unwrap();
            let dst = out.join(format!("{stem}.ko"));
            if !dst.exists() {
                decompress(&src, &dst)?;
            }
            Ok(dst)
        })
        .collect()
}

fn decompress(src: &Path, dst: &Path) -> Result<()> {
    let tool = match src.extension().and_then(|e| e.to_str()) {
        Some("xz") => Some("xz"),
        Some("zst") => Some("zstd"),
        Some("gz") => Some("gzip"),
        _ => None,
    };
    let Some(tool) = tool else {
        fs::copy(src, dst)?;
        return Ok(());
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(src)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", src.display());
    }
    fs::write(dst, out.stdout)?;
    Ok(())
}
