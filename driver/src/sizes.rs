//! Sizes as `docker ps -s` and `docker system df` report them.
//!
//! A layer's size is the apparent size of what it holds: regular files and
//! symlinks (their target's length), each inode once however many
//! hardlinks it has, directories not counted. A container's SIZE is that of
//! its writable layer; VIRTUAL adds its image. Shared layers count once on
//! disk.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use crate::containers::ContainerRecord;
use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::images::ImageRecord;
use crate::lowerstack::is_metacopy;
use crate::store::Store;

pub fn apparent_size(dir: &Path) -> Result<u64> {
    dir_usage(dir).map(|u| u.bytes)
}

/// Apparent bytes as above, and inodes (every entry below `dir`, each
/// hardlinked inode once): containerd's usage of a snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub fn dir_usage(dir: &Path) -> Result<DirUsage> {
    let mut seen = HashSet::new();
    let mut total = DirUsage::default();
    walk(dir, &mut seen, &mut total)?;
    Ok(total)
}

fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut DirUsage) -> Result<()> {
    for entry in fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let entry = entry.ctx(|| format!("reading {}", dir.display()))?;
        // DirEntry::metadata is an fstatat on the open directory: no path walk.
        let md = entry
            .metadata()
            .ctx(|| format!("stat {}", entry.path().display()))?;
        let first_link = md.nlink() == 1 || md.is_dir() || seen.insert((md.dev(), md.ino()));
        if first_link {
            total.inodes += 1;
        }
        if md.is_dir() {
            walk(&entry.path(), seen, total)?;
        } else if first_link && !data_elsewhere(&entry.path(), &md)? {
            total.bytes += md.len();
        }
    }
    Ok(())
}

/// A metacopy file (a chmod'ed lower file in a metacopy container) has
/// its size but no data blocks: the data is the lower layer's, counted
/// there. Only files with fewer blocks than bytes (its xattrs may take a
/// block) are worth the xattr lookup.
fn data_elsewhere(path: &Path, md: &fs::Metadata) -> Result<bool> {
    Ok(md.is_file() && md.blocks() * 512 < md.len() && is_metacopy(path)?)
}

#[derive(Debug, Serialize)]
pub struct ImageUsage {
    pub image: ImageRecord,
    pub size: u64,
    /// Bytes in layers some other image also uses.
    pub shared: u64,
    pub unique: u64,
    pub containers: usize,
}

#[derive(Debug, Serialize)]
pub struct ContainerUsage {
    pub container: ContainerRecord,
    pub size: u64,
    pub virtual_size: u64,
}

#[derive(Debug, Serialize)]
pub struct VolumeUsage {
    pub name: String,
    pub size: u64,
    pub containers: usize,
}

#[derive(Debug, Serialize)]
pub struct SystemDf {
    pub images: Vec<ImageUsage>,
    pub containers: Vec<ContainerUsage>,
    pub volumes: Vec<VolumeUsage>,
    /// Every stored layer once.
    pub layers_size: u64,
    pub containers_size: u64,
    pub volumes_size: u64,
    /// layers_size + containers_size: what the driver's area really uses.
    pub disk_used: u64,
}

impl Store {
    fn layer_sizes(&self) -> Result<HashMap<Digest, u64>> {
        Ok(self
            .layers()?
            .into_iter()
            .map(|l| (l.chain_id, l.size))
            .collect())
    }

    pub fn image_usage(&self) -> Result<Vec<ImageUsage>> {
        let images = self.images()?;
        let sizes = self.layer_sizes()?;
        let containers = self.containers()?;
        let mut users: HashMap<&Digest, usize> = HashMap::new();
        for img in &images {
            for l in img.layers.iter().collect::<HashSet<_>>() {
                *users.entry(l).or_default() += 1;
            }
        }
        Ok(images
            .iter()
            .map(|img| {
                let unique_layers: HashSet<&Digest> = img.layers.iter().collect();
                let size: u64 = unique_layers
                    .iter()
                    .map(|l| sizes.get(*l).copied().unwrap_or(0))
                    .sum();
                let shared: u64 = unique_layers
                    .iter()
                    .filter(|l| users.get(**l).copied().unwrap_or(0) > 1)
                    .map(|l| sizes.get(*l).copied().unwrap_or(0))
                    .sum();
                ImageUsage {
                    image: img.clone(),
                    size,
                    shared,
                    unique: size - shared,
                    containers: containers
                        .iter()
                        .filter(|c| c.image.as_ref() == Some(&img.id))
                        .count(),
                }
            })
            .collect())
    }

    pub fn container_usage(&self, c: &ContainerRecord) -> Result<ContainerUsage> {
        let sizes = self.layer_sizes()?;
        let image: u64 = c
            .layers
            .iter()
            .collect::<HashSet<_>>()
            .iter()
            .map(|l| sizes.get(*l).copied().unwrap_or(0))
            .sum();
        // A capped layer's quota knows its usage: no walk.
        let size = match c.quota {
            Some(q) => crate::quota::usage(&self.upper_dir(&c.id), q.project)?,
            None => apparent_size(&self.upper_dir(&c.id))?,
        };
        Ok(ContainerUsage {
            container: c.clone(),
            size,
            virtual_size: image + size,
        })
    }

    pub fn system_df(&self) -> Result<SystemDf> {
        let _lock = self.lock_shared()?;
        let images = self.image_usage()?;
        let containers = self
            .containers()?
            .iter()
            .map(|c| self.container_usage(c))
            .collect::<Result<Vec<_>>>()?;
        let volumes = self
            .volumes()?
            .into_iter()
            .map(|v| {
                Ok(VolumeUsage {
                    size: apparent_size(&self.volume_data(&v.name))?,
                    containers: self.volume_users(&v.name)?.len(),
                    name: v.name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let layers_size: u64 = self.layer_sizes()?.values().sum();
        let containers_size: u64 = containers.iter().map(|c| c.size).sum();
        let volumes_size = volumes.iter().map(|v| v.size).sum();
        Ok(SystemDf {
            images,
            containers,
            volumes,
            layers_size,
            containers_size,
            volumes_size,
            disk_used: layers_size + containers_size,
        })
    }
}

/// Sizes as docker prints them: SI units, three significant digits.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    // Like Go's %.3g: three significant digits, trailing zeros dropped.
    let decimals = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}
