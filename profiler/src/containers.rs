//! strata's containers as the profiler sees them: the overlay mount a
//! container is (`--container`), and the container a mount is (the
//! `container` label of `serve --per-container`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use strata_driver::Store;

use crate::engines::{Engine, Owner};
use crate::mounts;

/// The mount point of a strata container's overlay, by ID or name,
/// whoever mounted it (strata, or containerd through `strata snapshotter`).
pub fn mount_point(store_root: &Path, id: &str) -> Result<PathBuf> {
    let store = Store::open(store_root)?;
    let c = store.find_container(id)?;
    if let Some(m) = mounts::mount_with_upper(&store.upper_dir(&c.id)) {
        return Ok(m.mount_point);
    }
    match &c.snapshot {
        Some(key) => bail!(
            "container {} (containerd snapshot {key:?}) has no overlay mount: \
             containerd has not mounted it, or it has no parent layers \
             (a plain bind, where nothing is copied up)",
            c.name
        ),
        None => bail!(
            "container {} is not mounted (strata mount {})",
            c.name,
            c.name
        ),
    }
}

/// Names the strata container behind each overlay mount point. Live
/// containers only: `refresh` forgets the ones that went.
pub struct ContainerNames {
    store_root: PathBuf,
    /// Every container in the store (mounted or not), as of the last
    /// refresh.
    live: HashSet<String>,
    /// Mount point -> (container id, name), as of the last refresh.
    by_mount: HashMap<PathBuf, (String, String)>,
    /// Mounts seen since the last refresh that are no container of the
    /// store's (docker's, hand-made): not worth another look until the
    /// next refresh.
    strangers: HashSet<PathBuf>,
}

impl ContainerNames {
    pub fn new(store_root: &Path) -> ContainerNames {
        let mut names = ContainerNames {
            store_root: store_root.to_path_buf(),
            live: HashSet::new(),
            by_mount: HashMap::new(),
            strangers: HashSet::new(),
        };
        names.refresh();
        names
    }

    /// Re-reads the store's containers and the mount table. Where there
    /// is no store, nothing is named (and none is created).
    pub fn refresh(&mut self) {
        self.live.clear();
        self.by_mount.clear();
        self.strangers.clear();
        if !self.store_root.join("containers").is_dir() {
            return;
        }
        let Ok(containers) = Store::open(&self.store_root).and_then(|s| {
            let uppers = s.containers()?.into_iter().map(|c| {
                let upper = s.upper_dir(&c.id);
                (upper.canonicalize().unwrap_or(upper), (c.id, c.name))
            });
            Ok(uppers.collect::<HashMap<_, _>>())
        }) else {
            return;
        };
        for m in mounts::overlay_mounts() {
            let upper = m.upper.as_deref().and_then(|u| u.canonicalize().ok());
            if let Some(c) = upper.and_then(|u| containers.get(&u)) {
                self.by_mount.insert(m.mount_point, c.clone());
            }
        }
        self.live = containers.into_values().map(|(_, name)| name).collect();
    }

    pub fn of_mount(&self, mount: &Path) -> Option<&str> {
        self.by_mount.get(mount).map(|(_, name)| name.as_str())
    }

    /// The strata container mounted at `mount`, looking again (once until
    /// the next refresh) where the mount is new.
    pub fn owner_of_mount(&mut self, mount: &Path) -> Option<Owner> {
        if !self.by_mount.contains_key(mount) && !self.strangers.contains(mount) {
            // A container mounted since the last look.
            self.refresh();
            if !self.by_mount.contains_key(mount) {
                self.strangers.insert(mount.to_path_buf());
            }
        }
        let (id, name) = self.by_mount.get(mount)?;
        let mut owner = Owner::new(Engine::Strata, id);
        owner.name = Some(name.clone());
        Some(owner)
    }

    /// Whether a container of this name is still in the store (as of the
    /// last refresh): an unmounted one keeps its series, a removed one
    /// does not.
    pub fn is_live(&self, name: &str) -> bool {
        self.live.contains(name)
    }
}
