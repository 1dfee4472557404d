//! Docker Engine 26 on strata against the same dockerd binary on
//! containerd's overlayfs snapshotter and on its classic overlay2 driver:
//! load, pull from the bench's registry, `run --rm`, commit, `ps -a -s`
//! over 100 containers and a cold multi-stage build. Each engine has its
//! own containerd 1.7, dockerd and store, all on one fresh ext4.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_driver::testing::containerd::{busybox_image, Containerd, IMAGE};
use strata_driver::testing::docker::{Dockerd, Storage};
use strata_driver::testing::registry::{Registry, RegistryConfig};

use crate::fixtures::{sh, Env, LoopFs};
use crate::harness::{compare_with_faster, BenchResult, Timed};
use crate::peers::run;

/// The bars (issue 25): load and pull against the faster other engine;
/// run, commit and `ps -s` no slower than it.
const TRANSFER_BAR: f64 = 0.5;
const SAME_BAR: f64 = 1.05;

/// One dockerd on a containerd of its own (dropped first).
struct Engine {
    label: &'static str,
    docker: Dockerd,
    ctrd: Containerd,
    /// The containerd snapshotter it keeps images in; None: overlay2.
    snapshotter: Option<&'static str>,
    /// The snapshots before the first load: what remove_image leaves.
    kept: std::cell::Cell<Option<Vec<String>>>,
}

impl Engine {
    fn start(env: &Env, fs: &Path, label: &'static str, storage: Storage<'static>) -> Engine {
        let dir = fs.join(label.replace(' ', "-"));
        let ctrd = Containerd::start_for_docker(&dir.join("ctrd"), &env.strata);
        let docker = Dockerd::start_26(&dir.join("docker"), &ctrd, storage);
        let snapshotter = match storage {
            Storage::Snapshotter(s) => Some(s),
            Storage::Overlay2 => None,
        };
        Engine {
            label,
            docker,
            ctrd,
            snapshotter,
            kept: std::cell::Cell::new(None),
        }
    }

    fn docker(&self, args: &[&str]) -> Result<()> {
        run(
            self.docker.docker_command(args),
            &format!("docker {}", args[0]),
        )
    }

    /// `docker rmi -f`, then its snapshots removed (children first) if
    /// containerd's collector has not yet: the next load or pull is cold.
    /// What stood before the first call (the run image) stays.
    fn remove_image(&self, image: &str) -> Result<()> {
        let _ = self.docker.docker(&["rmi", "-f", image]);
        let Some(sn) = self.snapshotter else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.ctrd.ctr_ok(&["snapshots", "--snapshotter", sn, "ls"]);
            let names: Vec<String> = out
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect();
            let kept = self.kept.take().unwrap_or_else(|| names.clone());
            let extra: Vec<&String> = names.iter().filter(|n| !kept.contains(n)).collect();
            let done = extra.is_empty();
            for name in extra {
                // Refused while it has children: the next round.
                let _ = self
                    .ctrd
                    .ctr(&["snapshots", "--snapshotter", sn, "rm", name]);
            }
            self.kept.set(Some(kept));
            if done {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{}: snapshots left after rmi {image}:\n{out}", self.label);
            }
        }
    }
}

pub fn all(env: &Env, cache: &Path) -> Result<Vec<BenchResult>> {
    let dir = env.dir("docker");
    let fs = LoopFs::ext4(&dir.join("fs.img"), &dir.join("fs"), 16 << 30)?;
    let reg = Registry::start(&dir.join("registry"), &RegistryConfig::default());
    let layout = crate::fixtures::debian_image(cache).map_err(anyhow::Error::msg)?;
    let debian_tar = dir.join("debian.tar");
    sh(
        "tar",
        &[
            "-C",
            layout.to_str().unwrap(),
            "-cf",
            debian_tar.to_str().unwrap(),
            ".",
        ],
    )?;
    reg.push(
        &format!("oci:{}:bookworm", layout.display()),
        "bench/debian:bookworm",
        &[],
    );
    let pulled = format!("{}/bench/debian:bookworm", reg.host);
    let busybox = busybox_image(&fs.mount, 0);
    reg.push(
        &format!("docker-archive:{}", busybox.display()),
        "bench/busybox:v1",
        &[],
    );
    let busybox = format!("{}/bench/busybox:v1", reg.host);

    let engines = [
        Engine::start(env, &fs.mount, "strata", Storage::Snapshotter("strata")),
        Engine::start(
            env,
            &fs.mount,
            "overlayfs snapshotter",
            Storage::Snapshotter("overlayfs"),
        ),
        Engine::start(env, &fs.mount, "overlay2", Storage::Overlay2),
    ];
    // Pulled, not loaded: Debian's dockerd 26.1.5 with overlay2 fails
    // every `docker load` ("open .../docker-import-N/blobs/json"), so its
    // load is left out below.
    for e in &engines {
        e.docker(&["pull", "-q", &busybox])?;
        e.docker(&["tag", &busybox, IMAGE])?;
    }
    let mut out = Vec::new();
    out.extend(transfer(
        env,
        &engines[..2],
        "docker load (Debian)",
        "debian:bookworm",
        &|e| e.docker(&["load", "-q", "-i", debian_tar.to_str().unwrap()]),
    )?);
    out.extend(transfer(
        env,
        &engines,
        "docker pull (Debian)",
        &pulled,
        &|e| e.docker(&["pull", "-q", &pulled]),
    )?);
    out.extend(run_rm(env, &engines)?);
    out.extend(commit(env, &engines)?);
    out.extend(ps_size(env, &engines)?);
    out.extend(build(env, &engines, &dir)?);
    drop(engines);
    drop(reg);
    drop(fs);
    Ok(out)
}

/// Each engine's Timed from `timed`, strata's first.
fn contestants<'a>(
    engines: &'a [Engine],
    timed: impl Fn(&'a Engine) -> Timed<'a>,
) -> (Timed<'a>, Vec<(&'a str, Timed<'a>)>) {
    let (strata, rest) = engines.split_first().expect("strata and its peers");
    let peers = rest.iter().map(|e| (e.label, timed(e))).collect();
    (timed(strata), peers)
}

/// Load or pull of `image` into an engine that does not have it.
fn transfer(
    env: &Env,
    engines: &[Engine],
    name: &str,
    image: &str,
    bring: &dyn Fn(&Engine) -> Result<()>,
) -> Result<Vec<BenchResult>> {
    let (candidate, peers) = contestants(engines, |e| {
        Timed::new(move || e.remove_image(image), move || bring(e)).settled()
    });
    compare_with_faster(name, env.reps, candidate, peers, Some(TRANSFER_BAR))
}

/// Start-to-exit of `docker run --rm IMAGE true`.
fn run_rm(env: &Env, engines: &[Engine]) -> Result<Vec<BenchResult>> {
    let (candidate, peers) = contestants(engines, |e| {
        Timed::just(move || e.docker(&["run", "--rm", IMAGE, "/bin/busybox", "true"]))
    });
    compare_with_faster(
        "docker run --rm (busybox true)",
        env.reps,
        candidate,
        peers,
        Some(SAME_BAR),
    )
}

/// `docker commit` of a container that changed one file.
fn commit(env: &Env, engines: &[Engine]) -> Result<Vec<BenchResult>> {
    let (candidate, peers) = contestants(engines, |e| {
        let n = std::rc::Rc::new(std::cell::Cell::new(0));
        let m = n.clone();
        let name = |n: usize| format!("commit-{n}");
        Timed::new(
            move || {
                n.set(n.get() + 1);
                let c = name(n.get());
                e.docker(&[
                    "run",
                    "--name",
                    &c,
                    IMAGE,
                    "sh",
                    "-c",
                    "echo changed > /data/file",
                ])
            },
            move || {
                let c = name(m.get());
                e.docker(&["commit", &c, &format!("committed:{}", m.get())])
            },
        )
    });
    compare_with_faster(
        "docker commit (one file changed)",
        env.reps,
        candidate,
        peers,
        Some(SAME_BAR),
    )
}

/// `docker ps -a -s` over 100 containers, each with a file of its own.
fn ps_size(env: &Env, engines: &[Engine]) -> Result<Vec<BenchResult>> {
    for e in engines {
        for i in 0..100 {
            let script = format!("echo {i} > /data/mine");
            e.docker(&[
                "run",
                "--name",
                &format!("ps-{i}"),
                IMAGE,
                "sh",
                "-c",
                &script,
            ])?;
        }
    }
    let (candidate, peers) = contestants(engines, |e| {
        Timed::just(move || e.docker(&["ps", "-a", "-s", "--format", "{{.ID}} {{.Size}}"]))
    });
    compare_with_faster(
        "docker ps -a -s (100 containers)",
        env.reps,
        candidate,
        peers,
        Some(SAME_BAR),
    )
}

/// A two-stage build from the busybox image, BuildKit's cache pruned
/// before each sample.
fn build(env: &Env, engines: &[Engine], dir: &Path) -> Result<Vec<BenchResult>> {
    let ctx = dir.join("context");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(ctx.join("hello.txt"), "hello\n")?;
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {IMAGE} AS first\n\
             RUN echo made > /made && busybox rm -r /pad && busybox mkdir /d\n\
             COPY hello.txt /hello.txt\n\
             FROM {IMAGE}\n\
             COPY --from=first /made /hello.txt /out/\n"
        ),
    )?;
    let ctx = ctx.to_str().context("UTF-8 path")?.to_string();
    let (candidate, peers) = contestants(engines, |e| {
        let ctx = ctx.clone();
        Timed::new(
            move || {
                e.docker(&["builder", "prune", "-a", "-f"])?;
                let _ = e.docker.docker(&["rmi", "-f", "built:1"]);
                Ok(())
            },
            move || e.docker(&["build", "-q", "--network", "host", "-t", "built:1", &ctx]),
        )
        .settled()
    });
    compare_with_faster(
        "docker build (2 stages, cold cache)",
        env.reps,
        candidate,
        peers,
        None,
    )
}
