//! What the benches run on: generated images, stores, processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use strata_driver::image::build::{write_docker_archive, LayerTar};

pub struct Env {
    /// Scratch space on a disk filesystem.
    pub work: PathBuf,
    pub strata: PathBuf,
    pub prof: PathBuf,
    pub quick: bool,
    pub reps: usize,
}

impl Env {
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.work.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// Runs `strata --root ROOT ARGS...`, returning stdout.
    pub fn strata(&self, root: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.strata)
            .arg("--root")
            .arg(root)
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running {}", self.strata.display()))?;
        if !out.status.success() {
            bail!("strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Runs a command to completion, its output discarded.
pub fn sh(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {args:?}: {status}");
    }
    Ok(())
}

/// An image of `layers` layers of `files` files each (sizes cycling
/// through 1..64 KiB, spread over 20 directories), as layer tars plus a
/// docker-archive directory.
pub struct Image {
    pub archive: PathBuf,
    pub layer_tars: Vec<PathBuf>,
    pub bytes: u64,
}

pub fn image(dir: &Path, layers: usize, files: usize, tag: &str) -> Result<Image> {
    std::fs::create_dir_all(dir)?;
    let mut tars = Vec::new();
    let mut bytes = 0;
    for l in 0..layers {
        let p = dir.join(format!("layer{l}.tar"));
        let mut t = LayerTar::create(&p)?;
        for d in 0..20 {
            t.dir(&format!("l{l}d{d}"), 0o755, 0, 0)?;
        }
        for f in 0..files {
            let size = 1024 * (1 + (f as u64 * 7919) % 64);
            t.pattern_file(&format!("l{l}d{}/f{f}", f % 20), size, (f % 251) as u8 + 1)?;
            bytes += size;
        }
        tars.push(t.finish()?);
    }
    let archive = dir.join("archive");
    write_docker_archive(&archive, tag, &tars)?;
    Ok(Image {
        archive,
        layer_tars: tars,
        bytes,
    })
}

/// One file per layer, plus `bottom_files` small files in the bottom one.
pub fn deep_image(dir: &Path, layers: usize, bottom_files: usize, tag: &str) -> Result<PathBuf> {
    let mut tars = Vec::new();
    for l in 0..layers {
        let p = dir.join(format!("deep{l}.tar"));
        let mut t = LayerTar::create(&p)?;
        if l == 0 {
            t.dir("data", 0o755, 0, 0)?;
            for f in 0..bottom_files {
                t.file(&format!("data/f{f}"), format!("file {f}").as_bytes(), 0o644)?;
            }
        }
        t.file(&format!("layer{l}"), b"x", 0o644)?;
        tars.push(t.finish()?);
    }
    let archive = dir.join(format!("archive-{layers}"));
    write_docker_archive(&archive, tag, &tars)?;
    Ok(archive)
}

pub fn layer_dirs(store_root: &Path, image_ref: &str) -> Result<Vec<PathBuf>> {
    let store = strata_driver::Store::open(store_root)?;
    let img = store.find_image(image_ref)?;
    Ok(img
        .layers
        .iter()
        .rev()
        .map(|l| store.layer_diff(l))
        .collect())
}

pub fn unmount_all_beneath(dir: &Path) {
    strata_driver::testing::unmount_beneath(dir);
}
