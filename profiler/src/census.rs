//! doctor's census of the overlay mounts on this host: for each, the
//! engine and container it belongs to, or why it cannot be attributed.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::containers::ContainerNames;
use crate::engines;
use crate::mounts::{self, OverlayMount};

#[derive(Debug, Serialize)]
pub struct MountReport {
    pub mount_point: PathBuf,
    /// Lower layers, where the mount options name real directories.
    pub lower_layers: Option<usize>,
    /// "docker", "podman", "containerd", "cri" or "strata" (or, known by
    /// its path alone, "containers/storage"); None where unknown.
    pub engine: Option<String>,
    /// The engine's container (for strata: its name).
    pub container: Option<String>,
    /// Why the container (or the engine) is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unattributed: Option<String>,
}

/// Every whole overlay mount, attributed.
pub fn overlay_mounts(store_root: &Path) -> Vec<MountReport> {
    let strata = ContainerNames::new(store_root);
    mounts::overlay_mounts()
        .into_iter()
        .filter(|m| m.whole)
        .map(|m| report(&m, &strata))
        .collect()
}

fn report(m: &OverlayMount, strata: &ContainerNames) -> MountReport {
    let mut r = MountReport {
        mount_point: m.mount_point.clone(),
        lower_layers: m.lowers_found.then_some(m.lowers.len()),
        engine: None,
        container: None,
        unattributed: None,
    };
    if let Some(owner) = engines::owner_of_overlay(m.dev) {
        r.engine = Some(owner.engine.name().to_string());
        r.container = Some(owner.display_name());
        return r;
    }
    if let Some(name) = strata.of_mount(&m.mount_point) {
        r.engine = Some("strata".into());
        r.container = Some(name.to_string());
        return r;
    }
    let (engine, why) = match engine_by_layout(&m.mount_point) {
        Some(engine) => (
            Some(engine.to_string()),
            format!(
                "{engine}'s layout, but no process runs on it: a stopped container, \
                 a build step, or a mount the engine keeps for itself"
            ),
        ),
        None => (
            None,
            "no process runs on it and its path follows no engine's layout: \
             mounted by hand or by a tool strata-prof does not know"
                .to_string(),
        ),
    };
    r.engine = engine;
    r.unattributed = Some(why);
    r
}

/// The engine whose directory layout the mount point follows: docker's
/// `<home>/overlay2/<id>/merged`, containers/storage's
/// `<root>/overlay/<id>/merged` (podman, buildah, CRI-O), containerd's
/// task bundle `.../io.containerd.runtime.v2.task/<ns>/<id>/rootfs`.
fn engine_by_layout(mount_point: &Path) -> Option<&'static str> {
    let comps: Vec<&str> = mount_point.iter().filter_map(|c| c.to_str()).collect();
    let n = comps.len();
    if n >= 4 && comps[n - 4].starts_with("io.containerd.runtime") && comps[n - 1] == "rootfs" {
        return Some("containerd");
    }
    if n >= 3 && comps[n - 1] == "merged" {
        return match comps[n - 3] {
            "overlay2" => Some("docker"),
            "overlay" => Some("containers/storage"),
            _ => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_layouts() {
        let e = |p: &str| engine_by_layout(Path::new(p));
        assert_eq!(e("/var/lib/docker/overlay2/abc/merged"), Some("docker"));
        assert_eq!(
            e("/var/lib/containers/storage/overlay/abc/merged"),
            Some("containers/storage")
        );
        assert_eq!(
            e("/run/containerd/io.containerd.runtime.v2.task/default/web/rootfs"),
            Some("containerd")
        );
        assert_eq!(e("/srv/ov/merged"), None);
    }
}
