//! Which engine's container a copy-up happened in: docker, podman,
//! containerd (`ctr`, or CRI under Kubernetes). The kernel event carries
//! the writing task's cgroup id; the cgroup's path says who made it, in
//! each engine's own naming:
//!
//! | engine | systemd cgroup driver | cgroupfs driver |
//! |---|---|---|
//! | docker | `docker-<id>.scope` | `/docker/<id>` |
//! | podman | `libpod-<id>.scope[/container]` | `/libpod_parent/libpod-<id>` |
//! | CRI (containerd) | `kubepods-…-pod<uid>.slice/cri-containerd-<id>.scope` | `/kubepods/…/pod<uid>/<id>` |
//! | containerd (`ctr run`) | | `/<namespace>/<id>` |
//!
//! `/<namespace>/<id>` is only containerd's where the cgroup's tasks are
//! children of a containerd shim: the pattern alone would claim any
//! two-level cgroup.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Docker,
    Podman,
    Containerd,
    /// containerd's CRI plugin: a Kubernetes pod's container.
    Cri,
    /// strata's own container, known by its overlay mount (it runs no
    /// task of its own: an engine runs them, or nothing does).
    Strata,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
            Engine::Containerd => "containerd",
            Engine::Cri => "cri",
            Engine::Strata => "strata",
        }
    }
}

/// A container as its engine names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub engine: Engine,
    /// The engine's container id (64 hex digits for docker, podman and
    /// CRI; any name for `ctr run`).
    pub id: String,
    /// The Kubernetes pod's uid (CRI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// containerd's namespace (`ctr run`), or the pod's Kubernetes
    /// namespace (CRI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's name (CRI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The container's name, where known (strata's, CRI's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Owner {
    pub fn new(engine: Engine, id: &str) -> Owner {
        Owner {
            engine,
            id: id.to_string(),
            pod: None,
            namespace: None,
            pod_name: None,
            name: None,
        }
    }

    /// The container as its engine's CLI shows it: docker's and podman's
    /// short id, containerd's namespace/id, CRI's short id and pod,
    /// strata's name.
    pub fn display_name(&self) -> String {
        if let (Some(ns), Some(pod), Some(name)) = (&self.namespace, &self.pod_name, &self.name) {
            return format!("{ns}/{pod}/{name}"); // CRI's, as kubectl names it
        }
        match (&self.namespace, &self.pod, &self.name) {
            (Some(ns), _, _) => format!("{ns}/{}", self.id),
            (_, Some(pod), _) => format!("{} (pod {pod})", self.short_id()),
            (_, _, Some(name)) => name.clone(),
            _ => self.short_id().to_string(),
        }
    }

    /// The id as `docker ps` shows it: 12 digits of a 64-digit id.
    pub fn short_id(&self) -> &str {
        if is_hex_id(&self.id) {
            &self.id[..12]
        } else {
            &self.id
        }
    }
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container a cgroup path (relative to the cgroup root, or absolute
/// under it) names. `shim_child` says whether the cgroup's tasks are
/// children of a containerd shim; it is asked only for the ambiguous
/// `/<namespace>/<id>` form.
pub fn owner_of_path(path: &str, shim_child: impl FnOnce() -> bool) -> Option<Owner> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // Podman's runtime puts the container's tasks in a `container` child.
    let comps = match comps.split_last() {
        Some((&"container", rest)) => rest,
        _ => &comps[..],
    };
    let (&leaf, parents) = comps.split_last()?;
    let parent = parents.last().copied().unwrap_or("");
    let scoped = |prefix: &str| {
        leaf.strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(".scope"))
            .filter(|id| is_hex_id(id))
    };
    if let Some(id) = scoped("docker-") {
        return Some(Owner::new(Engine::Docker, id));
    }
    if parent == "docker" && is_hex_id(leaf) {
        return Some(Owner::new(Engine::Docker, leaf));
    }
    if let Some(id) = scoped("libpod-") {
        return Some(Owner::new(Engine::Podman, id));
    }
    if parent == "libpod_parent" {
        if let Some(id) = leaf.strip_prefix("libpod-").filter(|id| is_hex_id(id)) {
            return Some(Owner::new(Engine::Podman, id));
        }
    }
    if comps.iter().any(|c| c.starts_with("kubepods")) {
        let id = scoped("cri-containerd-").or(is_hex_id(leaf).then_some(leaf))?;
        let mut owner = Owner::new(Engine::Cri, id);
        owner.pod = parents.iter().rev().find_map(|c| pod_uid(c));
        return Some(owner);
    }
    if parents.len() == 1
        && !parent.ends_with(".slice")
        && !leaf.ends_with(".scope")
        && shim_child()
    {
        let mut owner = Owner::new(Engine::Containerd, leaf);
        owner.namespace = Some(parent.to_string());
        return Some(owner);
    }
    None
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid with _>.slice`.
fn pod_uid(comp: &str) -> Option<String> {
    let at = comp.rfind("pod")?;
    let uid = comp[at + 3..].trim_end_matches(".slice");
    (uid.len() >= 32).then(|| uid.replace('_', "-"))
}

/// Whether `pid` descends from a containerd shim (`containerd-shim-runc-v2`
/// and kin): a container's init is the shim's child, what it runs the
/// init's descendants.
fn under_shim(pid: u32) -> bool {
    shim_of(pid).is_some()
}

/// The containerd shim `pid` descends from.
fn shim_of(pid: u32) -> Option<u32> {
    let mut pid = pid;
    for _ in 0..16 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<u32>().ok())
            .filter(|p| *p > 1)?;
        let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
        if comm.starts_with("containerd-shim") {
            return Some(ppid);
        }
        pid = ppid;
    }
    None
}

/// A CRI container's Kubernetes names (namespace, pod, container), from
/// the annotations containerd's CRI plugin writes into its OCI spec: the
/// bundle of container `id` sits beside the one its pod's shim runs in
/// (`STATE/io.containerd.runtime.v2.task/k8s.io/ID/config.json`).
fn with_cri_names(mut owner: Owner, pid: u32) -> Owner {
    if owner.engine != Engine::Cri {
        return owner;
    }
    let names = shim_of(pid).and_then(|shim| {
        let bundle = std::fs::read_link(format!("/proc/{shim}/cwd")).ok()?;
        let spec = std::fs::read(bundle.parent()?.join(&owner.id).join("config.json")).ok()?;
        let spec: serde_json::Value = serde_json::from_slice(&spec).ok()?;
        let a = |k: &str| spec["annotations"][k].as_str().map(str::to_string);
        Some((
            a("io.kubernetes.cri.sandbox-namespace")?,
            a("io.kubernetes.cri.sandbox-name")?,
            a("io.kubernetes.cri.container-name")?,
        ))
    });
    if let Some((ns, pod, name)) = names {
        (owner.namespace, owner.pod_name, owner.name) = (Some(ns), Some(pod), Some(name));
    }
    owner
}

/// Whether a task in the cgroup directory `dir` descends from a shim.
fn cgroup_under_shim(dir: &Path) -> bool {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    procs.lines().filter_map(|p| p.parse().ok()).any(under_shim)
}

/// The container task `pid` is in, from its cgroups (the v2 one and, on
/// a host still on cgroup v1, each controller's: engines name their
/// containers the same way in both).
pub fn owner_of_task(pid: u32) -> Option<Owner> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let owner = cgroups.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        owner_of_path(path, || under_shim(pid))
    })?;
    Some(with_cri_names(owner, pid))
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/
/// unified` on a hybrid host), from the mount table.
fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split(' ').next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(pre.split(' ').nth(4)?))
    })
}

/// The cgroup v2 directory whose id (its kernfs inode) is `id`, found
/// with one `open_by_handle_at` (a cgroup's file handle is its id), as
/// systemd and bpftool do: no walk of the hierarchy.
fn cgroup_dir(root: &Path, id: u64) -> Option<PathBuf> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// struct file_handle with the 8 bytes of a kernfs handle.
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        id: u64,
    }
    /// FILEID_KERNFS (include/linux/exportfs.h).
    const FILEID_KERNFS: i32 = 0xfe;
    let root = std::fs::File::open(root).ok()?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` is a file_handle header followed by its 8 bytes;
    // the kernel reads no further. The returned fd, if any, is ours.
    let fd = unsafe {
        libc::open_by_handle_at(
            root.as_raw_fd(),
            (&mut handle as *mut KernfsHandle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// A task whose root directory is the overlay `dev` (kernel encoding):
/// a process of the container that runs on it.
fn task_rooted_in(dev: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let md = std::fs::metadata(e.path().join("root")).ok()?;
        let (major, minor) = (libc::major(md.dev()), libc::minor(md.dev()));
        ((major << 20) | minor == dev).then_some(pid)
    })
}

/// The container whose processes run on the overlay `dev`.
pub fn owner_of_overlay(dev: u32) -> Option<Owner> {
    task_rooted_in(dev).and_then(owner_of_task)
}

/// Names the container of each copy-up: by the event's cgroup id (which
/// outlives its task), else by the task's cgroups (a cgroup v1 host,
/// where the v2 id says nothing), else by a task running on the same
/// overlay (the writer already gone).
pub struct Owners {
    cgroup2: Option<PathBuf>,
    /// Looked up once: a cgroup id is not reused while the system runs.
    by_cgroup: HashMap<u64, Option<Owner>>,
    /// Overlay device -> the container on it, or none (a scan of /proc
    /// per event would cost more than the event), until the mount table is
    /// read again (a device number is reused after an unmount).
    by_overlay: HashMap<u32, Option<Owner>>,
}

impl Default for Owners {
    fn default() -> Owners {
        Owners {
            cgroup2: cgroup2_root(),
            by_cgroup: HashMap::new(),
            by_overlay: HashMap::new(),
        }
    }
}

impl Owners {
    pub fn of_event(&mut self, cgroup_id: u64, pid: u32, overlay_dev: u32) -> Option<Owner> {
        if let Some(owner) = self.of_cgroup(cgroup_id) {
            return Some(owner);
        }
        if let Some(owner) = owner_of_task(pid) {
            return Some(owner);
        }
        if overlay_dev == 0 {
            return None;
        }
        self.by_overlay
            .entry(overlay_dev)
            .or_insert_with(|| owner_of_overlay(overlay_dev))
            .clone()
    }

    fn of_cgroup(&mut self, id: u64) -> Option<Owner> {
        let root = self.cgroup2.as_deref()?;
        if id <= 1 {
            return None; // the root cgroup: no container's
        }
        self.by_cgroup
            .entry(id)
            .or_insert_with(|| {
                let dir = cgroup_dir(root, id)?;
                let rel = dir.strip_prefix(root).ok()?.to_str()?.to_string();
                let owner = owner_of_path(&rel, || cgroup_under_shim(&dir))?;
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                Some(match procs.lines().find_map(|p| p.parse().ok()) {
                    Some(pid) => with_cri_names(owner, pid),
                    None => owner,
                })
            })
            .clone()
    }

    /// The mount table was read again: overlay devices may name others.
    pub fn forget_overlays(&mut self) {
        self.by_overlay.clear();
    }
}

/// Every engine container with a task on this host now, and one of its
/// tasks.
pub fn running() -> Vec<(Owner, u32)> {
    let mut out: Vec<(Owner, u32)> = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        if let Some(owner) = owner_of_task(pid) {
            if !out.iter().any(|(o, _)| *o == owner) {
                out.push((owner, pid));
            }
        }
    }
    out
}

/// Where engines keep the metadata that names their containers.
#[derive(Clone, Debug)]
pub struct EngineRoots {
    /// dockerd's data-root (`<root>/containers/<id>/config.v2.json`).
    pub docker: PathBuf,
    /// containers/storage's graph root (`<root>/overlay-containers/
    /// containers.json`), podman's.
    pub podman: PathBuf,
}

/// Container names -> ids from docker's and podman's metadata on disk.
fn names(roots: &EngineRoots) -> Vec<(Engine, String, String)> {
    let mut out = Vec::new();
    if let Ok(dirs) = std::fs::read_dir(roots.docker.join("containers")) {
        for d in dirs.flatten() {
            let cfg = std::fs::read(d.path().join("config.v2.json")).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&cfg).unwrap_or_default();
            if let (Some(id), Some(name)) = (v["ID"].as_str(), v["Name"].as_str()) {
                let name = name.trim_start_matches('/').to_string();
                out.push((Engine::Docker, name, id.to_string()));
            }
        }
    }
    let json = std::fs::read(roots.podman.join("overlay-containers/containers.json"));
    let v: serde_json::Value =
        serde_json::from_slice(&json.unwrap_or_default()).unwrap_or_default();
    for c in v.as_array().into_iter().flatten() {
        let id = c["id"].as_str().unwrap_or_default();
        for n in c["names"].as_array().into_iter().flatten() {
            if let Some(n) = n.as_str() {
                out.push((Engine::Podman, n.to_string(), id.to_string()));
            }
        }
    }
    out
}

/// The running engine container `spec` names: its id, a unique prefix of
/// it, (docker, podman) its name, or (CRI) `namespace/pod/container`.
pub fn resolve(spec: &str, roots: &EngineRoots) -> Result<Owner> {
    let running = running();
    let by_name: Vec<String> = names(roots)
        .into_iter()
        .filter(|(_, name, _)| name == spec)
        .map(|(_, _, id)| id)
        .collect();
    let mut found: Vec<&Owner> = running
        .iter()
        .map(|(o, _)| o)
        .filter(|o| o.id.starts_with(spec) || by_name.contains(&o.id) || o.display_name() == spec)
        .collect();
    found.dedup();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no running container of docker, podman or containerd is named {spec:?} \
             or has an id starting with it (and no strata container either)"
        ),
        many => bail!(
            "{spec:?} matches {} running containers ({}): give more of the id",
            many.len(),
            many.iter()
                .map(|o| format!("{} {}", o.engine.name(), o.short_id()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn owner(path: &str) -> Option<Owner> {
        owner_of_path(path, || true)
    }

    #[test]
    fn each_engine_is_named_by_its_own_cgroup_layout() {
        let docker = Owner::new(Engine::Docker, ID);
        assert_eq!(owner(&format!("/docker/{ID}")), Some(docker.clone()));
        assert_eq!(
            owner(&format!("/system.slice/docker-{ID}.scope")),
            Some(docker)
        );
        let podman = Owner::new(Engine::Podman, ID);
        assert_eq!(
            owner(&format!("/machine.slice/libpod-{ID}.scope/container")),
            Some(podman.clone())
        );
        assert_eq!(owner(&format!("/libpod_parent/libpod-{ID}")), Some(podman));
        assert_eq!(
            owner(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        let uid = "8f2b6c1e-1111-2222-3333-444455556666";
        let cri = owner(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        ))
        .unwrap();
        assert_eq!((cri.engine, cri.id.as_str()), (Engine::Cri, ID));
        assert_eq!(cri.pod.as_deref(), Some(uid));
        let cri = owner(&format!("/kubepods/besteffort/pod{uid}/{ID}")).unwrap();
        assert_eq!((cri.engine, cri.pod.as_deref()), (Engine::Cri, Some(uid)));
        let ctr = owner("/default/web-1").unwrap();
        assert_eq!(
            (ctr.engine, ctr.id.as_str(), ctr.namespace.as_deref()),
            (Engine::Containerd, "web-1", Some("default"))
        );
        assert_eq!(ctr.short_id(), "web-1");
    }

    #[test]
    fn two_level_cgroups_are_containerd_only_under_a_shim() {
        assert_eq!(owner_of_path("/default/web-1", || false), None);
        assert_eq!(owner("/system.slice/cron.service"), None);
        assert_eq!(owner("/user.slice/user-0.slice/session-1.scope"), None);
        assert_eq!(owner("/init.scope"), None);
        assert_eq!(owner("/"), None);
    }

    /// A cgroup made for the test is found by its id alone.
    #[test]
    fn a_cgroup_is_found_by_its_id() {
        use std::os::unix::fs::MetadataExt;
        if !strata_driver::testing::privileged() {
            return; // open_by_handle_at needs CAP_DAC_READ_SEARCH
        }
        let root = cgroup2_root().expect("no cgroup2 mount");
        let dir = root.join(format!("strata-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let id = std::fs::metadata(&dir).unwrap().ino();
        let found = cgroup_dir(&root, id);
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(found, Some(dir));
    }
}
