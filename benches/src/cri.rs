//! Kubernetes' CRI on strata against containerd's own overlayfs
//! snapshotter, through the same CRI client (`strata-cri`, one call per
//! process, as the tests drive it): a cold PullImage of the Debian image
//! and of the synthetic one, a pod start (RunPodSandbox, CreateContainer
//! and StartContainer of a cached image) and ListContainerStats over 100
//! containers. One containerd 1.7 with CRI per side, both on one fresh
//! ext4, the same registry.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;
use strata_driver::image::build::write_oci_layout;
use strata_driver::testing::containerd::{
    busybox_image, push_pause_image, Containerd, CriConfig, SNAPSHOTTER,
};
use strata_driver::testing::registry::{Registry, RegistryConfig};

use crate::fixtures::{image, Env, LoopFs};
use crate::harness::{compare, BenchResult, Timed};

/// The bars (issue 26).
const PULL_BAR: f64 = 0.5;
const POD_START_BAR: f64 = 1.05;
const STATS_BAR: f64 = 1.0;
const BUILTIN: &str = "overlayfs";

/// One CRI node.
struct Node {
    c: Containerd,
    snapshotter: &'static str,
    /// The snapshots that stay between pulls (the pause and run images).
    kept: std::cell::RefCell<Option<Vec<String>>>,
}

impl Node {
    fn cri(&self, args: &[&str]) -> Result<Value> {
        self.c
            .cri(args)
            .map_err(|e| anyhow::anyhow!("CRI {args:?}: {e}"))
    }

    fn snapshots(&self) -> Vec<String> {
        self.c
            .ctr_ok(&["snapshots", "--snapshotter", self.snapshotter, "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// RemoveImage, then what containerd's collector has not removed yet
    /// removed by hand (children first): the next pull is cold.
    fn remove_image(&self, image: &str) -> Result<()> {
        let _ = self.cri(&["rmi", image]);
        let kept = self
            .kept
            .borrow_mut()
            .get_or_insert_with(|| self.snapshots())
            .clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let extra: Vec<String> = self
                .snapshots()
                .into_iter()
                .filter(|s| !kept.contains(s))
                .collect();
            if extra.is_empty() {
                return Ok(());
            }
            for s in &extra {
                let _ = self
                    .c
                    .ctr(&["snapshots", "--snapshotter", self.snapshotter, "rm", s]);
            }
            if Instant::now() > deadline {
                bail!("{}: snapshots left after rmi {image}", self.snapshotter);
            }
        }
    }
}

pub fn all(env: &Env, cache: &Path) -> Result<Vec<BenchResult>> {
    let dir = env.dir("cri");
    let fs = LoopFs::ext4(&dir.join("fs.img"), &dir.join("fs"), 16 << 30)?;
    let reg = Registry::start(&dir.join("registry"), &RegistryConfig::default());
    for sub in ["pause", "run", "synthetic"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let pause = push_pause_image(&reg, &dir.join("pause"));
    let run_image = busybox_image(&dir.join("run"), 0);
    reg.push(
        &format!("docker-archive:{}", run_image.display()),
        "bench/busybox:v1",
        &[],
    );
    let run_image = format!("{}/bench/busybox:v1", reg.host);
    let mut pulls = vec![synthetic(env, &reg, &dir)?];
    if !env.quick {
        let layout = crate::fixtures::debian_image(cache).map_err(anyhow::Error::msg)?;
        reg.push(
            &format!("oci:{}:bookworm", layout.display()),
            "bench/debian:bookworm",
            &[],
        );
        pulls.push((
            "Debian".into(),
            format!("{}/bench/debian:bookworm", reg.host),
        ));
    }
    let node = |snapshotter: &'static str| Node {
        c: Containerd::start_cri(
            &fs.mount.join(snapshotter),
            &env.strata,
            CriConfig {
                sandbox_image: pause.clone(),
                registry: reg.host.clone(),
                snapshotter: snapshotter.into(),
                // containerd's default, as on a node.
                stats_period: 10,
            },
        ),
        snapshotter,
        kept: Default::default(),
    };
    let nodes = [node(SNAPSHOTTER), node(BUILTIN)];
    for n in &nodes {
        n.cri(&["pull", &pause])?;
        n.cri(&["pull", &run_image])?;
    }
    let mut out = Vec::new();
    for (label, reference) in &pulls {
        out.push(compare(
            &format!("CRI PullImage {label} (cold)"),
            env.reps,
            timed_on(&nodes[0], reference),
            "PullImage, overlayfs snapshotter",
            timed_on(&nodes[1], reference),
            Some(PULL_BAR),
        )?);
    }
    out.push(pod_start(env, &nodes, &run_image)?);
    out.push(list_stats(env, &nodes, &run_image)?);
    drop(nodes);
    drop(reg);
    drop(fs);
    Ok(out)
}

/// A 6 x 2000-file image (4 x 300 with --quick), gzip layers, pushed.
fn synthetic(env: &Env, reg: &Registry, dir: &Path) -> Result<(String, String)> {
    let (layers, files) = if env.quick { (4, 300) } else { (6, 2000) };
    let src = dir.join("synthetic");
    let img = image(&src, layers, files, "bench:cri")?;
    let layout = src.join("layout");
    write_oci_layout(
        &layout,
        "v1",
        &img.layer_tars,
        strata_driver::archive::compression::Compression::Gzip,
    )?;
    reg.push(
        &format!("oci:{}:v1", layout.display()),
        "bench/synthetic:v1",
        &[],
    );
    Ok((
        format!("{layers}x{files} files"),
        format!("{}/bench/synthetic:v1", reg.host),
    ))
}

/// A cold PullImage of `reference` on `n`.
fn timed_on<'a>(n: &'a Node, reference: &'a str) -> Timed<'a> {
    Timed::new(
        move || n.remove_image(reference),
        move || n.cri(&["pull", reference]).map(drop),
    )
    .settled()
}

/// The id a CRI answer gives under `field`.
fn id(answer: Value, field: &str) -> Result<String> {
    match answer[field].as_str() {
        Some(id) => Ok(id.to_string()),
        None => bail!("no {field} in {answer}"),
    }
}

/// A new pod with one container of `image`, started.
fn start_pod(n: &Node, name: &str, image: &str) -> Result<(String, String)> {
    let uid = format!("uid-{name}");
    let pod = id(n.cri(&["run-pod", name, "bench", &uid])?, "pod_sandbox_id")?;
    let ctr = id(
        n.cri(&[
            "create",
            &pod,
            name,
            "bench",
            &uid,
            "main",
            image,
            "/bin/busybox",
            "sleep",
            "600",
        ])?,
        "container_id",
    )?;
    n.cri(&["start", &ctr])?;
    Ok((pod, ctr))
}

/// RunPodSandbox + CreateContainer + StartContainer of a cached image.
fn pod_start(env: &Env, nodes: &[Node; 2], image: &str) -> Result<BenchResult> {
    compare(
        "CRI pod start (RunPodSandbox + CreateContainer + StartContainer)",
        env.reps,
        starts(&nodes[0], "strata", image),
        "pod start, overlayfs snapshotter",
        starts(&nodes[1], "overlayfs", image),
        Some(POD_START_BAR),
    )
}

/// ListContainerStats over 100 running containers (one pod each).
fn list_stats(env: &Env, nodes: &[Node; 2], image: &str) -> Result<BenchResult> {
    for n in nodes {
        for i in 0..100 {
            start_pod(n, &format!("stats-{i}"), image)?;
        }
    }
    compare(
        "CRI ListContainerStats (100+ containers)",
        env.reps,
        stats_of(&nodes[0]),
        "ListContainerStats, overlayfs snapshotter",
        stats_of(&nodes[1]),
        Some(STATS_BAR),
    )
}

/// One more pod started on `node` per sample.
fn starts<'a>(node: &'a Node, tag: &'static str, image: &'a str) -> Timed<'a> {
    let count = std::cell::Cell::new(0usize);
    Timed::just(move || {
        count.set(count.get() + 1);
        start_pod(node, &format!("start-{tag}-{}", count.get()), image).map(drop)
    })
}

/// ListContainerStats on `node`, every container listed.
fn stats_of(node: &Node) -> Timed<'_> {
    Timed::just(move || {
        let stats = node.cri(&["list-stats"])?;
        let listed = stats["stats"].as_array().map_or(0, Vec::len);
        if listed < 100 {
            bail!("ListContainerStats listed {listed} containers, not 100 or more");
        }
        Ok(())
    })
}
