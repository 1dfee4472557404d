//! Docker Engine 26 runs on strata: a private dockerd with the containerd
//! image store (`"features": {"containerd-snapshotter": true}`,
//! `"storage-driver": "strata"`) on a private containerd 1.7 whose proxy
//! snapshotter is `strata snapshotter`. What docker reports is checked
//! against strata's own view of the same store: layers, container sizes,
//! diffs, disk use, and an empty store once docker has pruned it all.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_driver::testing::containerd::{big_file_image, Containerd, BOTTOM, IMAGE};
use strata_driver::testing::docker::{Dockerd, Storage};
use strata_driver::testing::registry::{Registry, RegistryConfig};
use strata_driver::testing::{privileged, TestStore};

const BIG: u64 = 8 << 20;

/// dockerd first: it is dropped (and stops its containers) before the
/// containerd it runs on.
struct Engine {
    docker: Dockerd,
    ctrd: Containerd,
}

impl Engine {
    fn start(dir: &Path) -> Engine {
        let ctrd = Containerd::start_for_docker(&dir.join("ctrd"), strata_bin());
        let docker = Dockerd::start_26(&dir.join("docker"), &ctrd, Storage::Snapshotter("strata"));
        Engine { docker, ctrd }
    }

    fn strata_json(&self, args: &[&str]) -> Value {
        let out = Command::new(strata_bin())
            .arg("--root")
            .arg(self.ctrd.store_root())
            .args(args)
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "strata {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// strata's `ps -a -s` entry for docker container `id` (docker keys
    /// its writable snapshot by the container ID).
    fn strata_container(&self, id: &str) -> Value {
        let all = self.strata_json(&["ps", "-a", "-s"]);
        all.as_array()
            .unwrap()
            .iter()
            .find(|c| c["container"]["snapshot"].as_str().unwrap().ends_with(id))
            .unwrap_or_else(|| panic!("no strata container for {id}: {all}"))
            .clone()
    }

    /// docker's own numbers for container `id` (`ps -a -s`, in bytes).
    fn docker_sizes(&self, id: &str) -> (u64, u64) {
        let all = self.docker.api_get("/containers/json?all=1&size=1");
        let c = all
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["Id"] == id)
            .unwrap_or_else(|| panic!("docker lists no {id}: {all}"))
            .clone();
        (
            c["SizeRw"].as_u64().unwrap_or(0),
            c["SizeRootFs"].as_u64().unwrap(),
        )
    }

    fn load(&self, tar: &Path) {
        let out = self
            .docker
            .docker_ok(&["load", "-i", tar.to_str().unwrap()]);
        let familiar = IMAGE.trim_start_matches("docker.io/library/");
        assert!(out.contains(familiar), "{out}");
    }
}

fn strata_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

/// The config digest and diffIDs of the image in a `docker save` tar,
/// from the directory docker_save_tar packed it from.
fn archive_config(tar: &Path) -> (String, Vec<String>) {
    let archive = tar.parent().unwrap().join("archive");
    let read = |member: &str| -> Value {
        serde_json::from_slice(&fs::read(archive.join(member)).unwrap()).unwrap()
    };
    let manifest = read("manifest.json");
    let config_file = manifest[0]["Config"].as_str().unwrap();
    let diff_ids = read(config_file)["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    let digest = format!("sha256:{}", config_file.trim_end_matches(".json"));
    (digest, diff_ids)
}

fn inspect_layers(docker: &Dockerd, image: &str) -> Vec<String> {
    let json = docker.docker_ok(&[
        "image",
        "inspect",
        image,
        "--format",
        "{{json .RootFS.Layers}}",
    ]);
    serde_json::from_str(&json).unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn docker_load_run_ps_diff_and_df_agree_with_strata() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let tar = big_file_image(&ts.scratch("image"), BIG);
    let e = Engine::start(&ts.dir.join("engine"));
    let info = e
        .docker
        .docker_ok(&["info", "--format", "{{.Driver}} {{json .DriverStatus}}"]);
    assert!(
        info.starts_with("strata ") && info.contains("io.containerd.snapshotter.v1"),
        "{info}"
    );

    e.load(&tar);
    assert_eq!(inspect_layers(&e.docker, IMAGE), archive_config(&tar).1);
    assert_eq!(
        fs::read_dir(e.ctrd.store().layers_dir()).unwrap().count(),
        3,
        "the 3 layers are strata's"
    );

    let script = "busybox cat /data/file; busybox ls /etc /opq; \
                  echo more >> /data/big; echo new > /new; busybox rm /top";
    let out = e
        .docker
        .docker_ok(&["run", "--name", "cow", IMAGE, "sh", "-c", script]);
    assert!(
        out.starts_with(std::str::from_utf8(BOTTOM).unwrap()),
        "{out}"
    );
    assert!(
        !out.contains("gone") && !out.contains("old"),
        "whiteout and opaque dir: {out}"
    );
    assert!(out.contains("new"), "{out}");
    let id = e
        .docker
        .docker_ok(&["inspect", "cow", "--format", "{{.Id}}"]);

    // SIZE is the writable layer (the 8 MiB copy-up in it), VIRTUAL the
    // image on top: docker's numbers are strata's.
    let (size_rw, virtual_size) = e.docker_sizes(&id);
    let ours = e.strata_container(&id);
    assert!(size_rw > BIG, "the copy-up shows in SIZE: {size_rw}");
    assert_eq!(size_rw, ours["size"].as_u64().unwrap(), "{ours}");
    assert_eq!(
        virtual_size,
        ours["virtual_size"].as_u64().unwrap(),
        "{ours}"
    );

    let diff: BTreeSet<String> = e
        .docker
        .docker_ok(&["diff", "cow"])
        .lines()
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = ["C /data", "C /data/big", "A /new", "D /top"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(diff, want);

    // Disk use. Docker's containerd image store sums the Usage of every
    // snapshot (daemon/containerd/service.go, LayerDiskUsage), writable
    // ones included: strata's layers once plus containers' layers.
    let df = e.docker.api_get("/system/df");
    let ours = e.strata_json(&["system", "df"]);
    assert_eq!(df["LayersSize"], ours["disk_used"], "{df}\n{ours}");
    let containers: u64 = df["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["SizeRw"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        containers,
        ours["containers_size"].as_u64().unwrap(),
        "{df}\n{ours}"
    );
}

#[test]
fn docker_volumes_commit_and_prunes_leave_strata_empty() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let tar = big_file_image(&ts.scratch("image"), 1 << 20);
    let e = Engine::start(&ts.dir.join("engine"));
    e.load(&tar);

    // Volumes are outside copy-on-write: what is written there is not in
    // SIZE, and outlives the container.
    let host_dir = ts.scratch("host-dir");
    e.docker.docker_ok(&["volume", "create", "vol"]);
    let bind = format!("{}:/hostdir", host_dir.display());
    let script = "busybox dd if=/dev/zero of=/vol/f bs=1M count=2 && echo h > /hostdir/h";
    e.docker.docker_ok(&[
        "run", "--name", "vols", "-v", "vol:/vol", "-v", &bind, IMAGE, "sh", "-c", script,
    ]);
    let id = e
        .docker
        .docker_ok(&["inspect", "vols", "--format", "{{.Id}}"]);
    let (size_rw, _) = e.docker_sizes(&id);
    assert!(
        size_rw < 64 << 10,
        "volume writes stay out of SIZE: {size_rw}"
    );
    assert_eq!(size_rw, e.strata_container(&id)["size"].as_u64().unwrap());
    e.docker.docker_ok(&["rm", "vols"]);
    let mountpoint =
        e.docker
            .docker_ok(&["volume", "inspect", "vol", "--format", "{{.Mountpoint}}"]);
    assert_eq!(
        fs::metadata(Path::new(&mountpoint).join("f"))
            .unwrap()
            .len(),
        2 << 20
    );
    assert_eq!(fs::read_to_string(host_dir.join("h")).unwrap(), "h\n");

    // commit: the change becomes a layer of strata's, and runs.
    e.docker.docker_ok(&[
        "run",
        "--name",
        "committer",
        IMAGE,
        "sh",
        "-c",
        "echo committed > /c",
    ]);
    e.docker.docker_ok(&["commit", "committer", "committed:1"]);
    let out = e
        .docker
        .docker_ok(&["run", "--rm", "committed:1", "busybox", "cat", "/c"]);
    assert_eq!(out, "committed");
    assert_eq!(inspect_layers(&e.docker, "committed:1").len(), 4);
    // Docker commits over the container's `-init` layer (its /etc/hosts
    // and the like): 3 + init + the commit, each a layer of strata's.
    let snaps = e
        .ctrd
        .ctr_ok(&["snapshots", "--snapshotter", "strata", "ls"]);
    let committed = snaps
        .lines()
        .filter(|l| l.split_whitespace().last() == Some("Committed"))
        .count();
    assert_eq!(committed, 5, "{snaps}");
    assert_eq!(
        fs::read_dir(e.ctrd.store().layers_dir()).unwrap().count(),
        committed
    );

    // Everything docker can prune, pruned: nothing of it stays in strata.
    e.docker.docker_ok(&["rm", "-f", "committer"]);
    e.docker.docker_ok(&["rmi", "committed:1"]);
    e.docker.docker_ok(&["image", "prune", "-a", "-f"]);
    e.docker.docker_ok(&["builder", "prune", "-a", "-f"]);
    e.docker
        .docker_ok(&["system", "prune", "-a", "-f", "--volumes"]);
    e.docker.docker_ok(&["volume", "rm", "vol"]);
    let store = e.ctrd.store();
    wait_until("containerd's GC to empty the store", || {
        fs::read_dir(store.layers_dir()).unwrap().count() == 0
    });
    let left = e
        .ctrd
        .ctr_ok(&["snapshots", "--snapshotter", "strata", "ls"]);
    assert_eq!(left.lines().count(), 1, "only the header is left: {left}");
    assert_eq!(e.strata_json(&["ps", "-a"]), Value::Array(vec![]));
    assert!(store.check(false).unwrap().is_empty());
}

/// Layer-blob GETs (blobs but `config`) in the registry's log from user
/// agents naming `agent`.
fn layer_gets(reg: &Registry, repo: &str, agent: &str, config: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/{repo}/blobs/sha256:")) && l.contains(agent))
        .filter(|l| !l.contains(config))
        .count()
}

#[test]
fn docker_pulls_through_strata_builds_pushes_and_pulls_back() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let tar = big_file_image(&ts.scratch("image"), 1 << 20);
    reg.push(
        &format!("docker-archive:{}", tar.display()),
        "test/bb:v1",
        &[],
    );
    let image = format!("{}/test/bb:v1", reg.host);
    let e = Engine::start(&ts.dir.join("engine"));

    // docker fetches the config; strata every layer, straight into its
    // store and into containerd's content store, which docker lists from.
    e.docker.docker_ok(&["pull", &image]);
    let (config, diff_ids) = archive_config(&tar);
    assert_eq!(
        layer_gets(&reg, "test/bb", "docker/", &config),
        0,
        "{}",
        reg.log()
    );
    assert_eq!(
        layer_gets(&reg, "test/bb", "strata/", &config),
        3,
        "each layer once"
    );
    let listed = e
        .docker
        .docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.lines().any(|l| l == image), "{listed}");
    assert_eq!(inspect_layers(&e.docker, &image), diff_ids);

    // BuildKit inside dockerd: a multi-stage build on the pulled image.
    let ctx = ts.scratch("context");
    fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {image} AS first\n\
             RUN echo made > /made && busybox rm /data/big && busybox mkdir /d\n\
             COPY hello.txt /hello.txt\n\
             FROM {image}\n\
             COPY --from=first /made /hello.txt /out/\n"
        ),
    )
    .unwrap();
    let built = format!("{}/test/built:v1", reg.host);
    e.docker.docker_ok(&[
        "build",
        "--network",
        "host",
        "-q",
        "-t",
        &built,
        ctx.to_str().unwrap(),
    ]);
    let out = e.docker.docker_ok(&[
        "run",
        "--rm",
        &built,
        "busybox",
        "cat",
        "/out/made",
        "/out/hello.txt",
    ]);
    assert_eq!(out, "made\nhello");
    let layers = inspect_layers(&e.docker, &built);
    assert_eq!(layers.len(), 4, "the base's 3 and the COPY's: {layers:?}");

    // Pushed, then pulled back by a fresh daemon on a fresh store.
    e.docker.docker_ok(&["push", "-q", &built]);
    let fresh = Engine::start(&ts.dir.join("fresh"));
    fresh.docker.docker_ok(&["pull", &built]);
    assert_eq!(inspect_layers(&fresh.docker, &built), layers);
    let digests = |d: &Dockerd| d.docker_ok(&["image", "inspect", &built, "--format", "{{.Id}}"]);
    assert_eq!(digests(&fresh.docker), digests(&e.docker));
    let out = fresh
        .docker
        .docker_ok(&["run", "--rm", &built, "busybox", "cat", "/out/made"]);
    assert_eq!(out, "made");
}

impl Engine {
    /// kill -9 of dockerd, containerd and the snapshotter at once.
    fn kill_all(&mut self) {
        self.docker.kill();
        self.ctrd.kill_containerd();
        self.ctrd.kill_snapshotter();
    }

    /// All three started again on what they left.
    fn restart(self, dir: &Path) -> Engine {
        let Engine { docker, mut ctrd } = self;
        drop(docker);
        ctrd.start_snapshotter();
        ctrd.start_containerd();
        let docker = Dockerd::start_26(&dir.join("docker"), &ctrd, Storage::Snapshotter("strata"));
        Engine { docker, ctrd }
    }
}

#[test]
fn docker_containerd_and_strata_killed_mid_run_and_mid_pull_agree_after_restart() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let tar = big_file_image(&ts.scratch("image"), 1 << 20);
    // Layers of its own: containerd's unpacker skips a layer whose chain
    // is there already (containerd#8973), and the pull must be strata's.
    let big = big_file_image(&ts.scratch("pulled"), 32 << 20);
    reg.push(
        &format!("docker-archive:{}", big.display()),
        "test/big:v1",
        &[],
    );
    let pulled = format!("{}/test/big:v1", reg.host);
    let dir = ts.dir.join("engine");
    let mut e = Engine::start(&dir);
    e.load(&tar);
    e.docker.docker_ok(&[
        "run",
        "--name",
        "before",
        IMAGE,
        "sh",
        "-c",
        "echo kept > /kept",
    ]);

    // A run and a pull under way when all three die.
    let mut run = e
        .docker
        .docker_command(&[
            "run",
            "--name",
            "during",
            IMAGE,
            "sh",
            "-c",
            "echo x >> /data/big",
        ])
        .spawn()
        .unwrap();
    let mut pull = e
        .docker
        .docker_command(&["pull", "-q", &pulled])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    e.kill_all();
    let _ = (run.wait(), pull.wait());
    let e = e.restart(&dir);

    // strata's store is whole, and docker's view agrees with it: every
    // container docker lists has its layer in strata, every image runs.
    assert!(e.ctrd.store().check(false).unwrap().is_empty());
    let ids = e.docker.docker_ok(&["ps", "-a", "-q", "--no-trunc"]);
    assert!(ids.lines().count() >= 1, "{ids}");
    for id in ids.lines() {
        e.strata_container(id);
    }
    let kept = e
        .docker
        .docker_ok(&["run", "--rm", IMAGE, "busybox", "cat", "/data/file"]);
    assert_eq!(kept.as_bytes(), BOTTOM.strip_suffix(b"\n").unwrap());
    let diff = e.docker.docker_ok(&["diff", "before"]);
    assert_eq!(diff, "A /kept");

    // The interrupted pull completes on the next try, and runs.
    e.docker.docker_ok(&["pull", "-q", &pulled]);
    let listed = e
        .docker
        .docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let log = fs::read_to_string(e.ctrd.dir.join("snapshotter.log")).unwrap();
    assert!(
        listed.lines().any(|l| l == pulled),
        "{listed}\n{}\n{log}",
        e.ctrd.ctr_ok(&["content", "ls"]),
    );
    assert!(
        log.contains(&format!("fetched {pulled}")),
        "strata's fetch: {log}"
    );
    let size = e.docker.docker_ok(&[
        "run",
        "--rm",
        &pulled,
        "busybox",
        "stat",
        "-c",
        "%s",
        "/data/big",
    ]);
    assert_eq!(size, (32u64 << 20).to_string());
    assert!(e.ctrd.store().check(false).unwrap().is_empty());
}
