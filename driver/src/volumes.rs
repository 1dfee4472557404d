//! Volumes: plain directories outside the layer area, bind-mounted into a
//! container's merged view. They bypass copy-on-write entirely and outlive
//! the containers that use them.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, StagingDir};
use crate::layers::now_secs;
use crate::store::Store;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub created: u64,
}

/// `-v VOLUME:/path[:ro]` on `strata create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub volume: String,
    /// Absolute path inside the container.
    pub path: String,
    pub readonly: bool,
}

impl VolumeMount {
    /// Where it is bound in a container mounted at `merged`.
    pub fn target_in(&self, merged: &Path) -> PathBuf {
        merged.join(self.path.trim_start_matches('/'))
    }
}

impl std::str::FromStr for VolumeMount {
    type Err = Error;
    fn from_str(s: &str) -> Result<VolumeMount> {
        let parts: Vec<&str> = s.split(':').collect();
        let (volume, path, readonly) = match parts.as_slice() {
            [v, p] => (*v, *p, false),
            [v, p, "ro"] => (*v, *p, true),
            [v, p, "rw"] => (*v, *p, false),
            _ => {
                return Err(Error::Invalid(format!(
                    "volume spec {s:?} is not VOLUME:/path[:ro]"
                )))
            }
        };
        validate_name(volume)?;
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(Error::Invalid(format!(
                "volume path {path:?} must be absolute, without `..`"
            )));
        }
        Ok(VolumeMount {
            volume: volume.into(),
            path: path.into(),
            readonly,
        })
    }
}

pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "volume name {name:?}: use [A-Za-z0-9][A-Za-z0-9_.-]*"
        )))
    }
}

impl Store {
    pub fn volume_data(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name).join("_data")
    }

    pub fn create_volume(&self, name: &str) -> Result<VolumeRecord> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let dir = self.volumes_dir().join(name);
        if dir.exists() {
            return Err(Error::AlreadyExists(format!("volume {name}")));
        }
        let staged = StagingDir::create(&self.tmp_dir(), "volume")?;
        fs::create_dir(staged.path().join("_data")).ctx(|| "creating volume data".into())?;
        let rec = VolumeRecord {
            name: name.into(),
            created: now_secs(),
        };
        fsutil::write_json_atomic(&staged.path().join("volume.json"), &rec)?;
        let from = staged.keep();
        fs::rename(&from, &dir).ctx(|| format!("publishing volume {}", dir.display()))?;
        Ok(rec)
    }

    pub fn volume(&self, name: &str) -> Result<VolumeRecord> {
        validate_name(name)?;
        let p = self.volumes_dir().join(name).join("volume.json");
        if !p.exists() {
            return Err(Error::NotFound {
                kind: "volume",
                name: name.into(),
            });
        }
        fsutil::read_json(&p)
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let dir = self.volumes_dir();
        let mut out: Vec<VolumeRecord> = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let p = e
                .ctx(|| "reading volumes".into())?
                .path()
                .join("volume.json");
            if p.exists() {
                out.push(fsutil::read_json(&p)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Containers that name this volume.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| c.volumes.iter().any(|v| v.volume == name))
            .map(|c| c.name)
            .collect())
    }

    /// Removes a volume and its data; refused while a container uses it.
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        self.volume(name)?;
        let _lock = self.lock()?;
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(Error::InUse(format!(
                "volume {name} is used by {}",
                users.join(", ")
            )));
        }
        let dir = self.volumes_dir().join(name);
        let doomed = self
            .tmp_dir()
            .join(format!("rm-volume-{}", fsutil::random_hex(8)));
        fs::rename(&dir, &doomed).ctx(|| format!("removing volume {}", dir.display()))?;
        fsutil::remove_tree(&doomed)
    }
}
