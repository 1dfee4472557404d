//! strata-prof on the overlays other engines make: a docker 20.10 daemon,
//! docker 26 on strata (its containerd image store on strata's proxy
//! snapshotter), podman and containerd (`ctr run`, overlayfs
//! snapshotter), each started
//! by the test on directories of its own. Each copy-up made inside a
//! container is caught once, named by the engine's container id, with
//! size, layer depth and directory depth as the engine built them; and
//! `record --container` sees that container's copy-ups and no other's.

use std::fs;
use std::path::Path;

use serde_json::Value;
use strata_driver::testing::containerd::{
    busybox_image, push_pause_image, Containerd, CriConfig, BOTTOM, IMAGE, SNAPSHOTTER,
};
use strata_driver::testing::docker::{Dockerd, Storage};
use strata_driver::testing::podman::Podman;
use strata_driver::testing::registry::{Registry, RegistryConfig};
use strata_driver::testing::{docker_save_tar, layer, privileged, LayerFn, TestStore};

mod common;
use common::*;

/// What `COPY_UPS` copies up in busybox_image's three layers: (path,
/// size, depth below the image's top layer, directory depth).
const EXPECTED: [(&str, usize, u64, u64); 3] = [
    ("data/file", BOTTOM.len(), 3, 1),
    ("opq/new", 4, 2, 1),
    ("top", 10, 1, 0),
];
const COPY_UPS: &str = "echo x >> /data/file; echo y >> /opq/new; echo z >> /top";

/// The copy-up events of a recording, checked against `EXPECTED`: each
/// once, owned by `engine`'s container `id`, on a stack of `extra` more
/// layers below the writable one than the image has (docker's init
/// layer), all on the overlay mounted at the same mount point.
fn check(stdout: &str, engine: &str, id: &str, image_layers: u64, extra: u64) {
    let lines = json_lines(stdout);
    let events: Vec<&Value> = lines.iter().filter(|v| v["type"] == "copy_up").collect();
    assert_eq!(events.len(), EXPECTED.len(), "{stdout}");
    let mount = events[0]["mount"].as_str().expect("no mount").to_string();
    for (rel, size, depth, dirs) in EXPECTED {
        let path = Path::new(&mount).join(rel);
        let e = events
            .iter()
            .find(|e| e["path"].as_str() == path.to_str())
            .unwrap_or_else(|| panic!("no event for {rel}: {stdout}"));
        assert_eq!(e["container"]["engine"], engine, "{e}");
        assert_eq!(e["container"]["id"], id, "{e}");
        assert_eq!(e["file_size"], size as u64, "{e}");
        assert_eq!(e["layer_depth"], depth + image_layers - 3 + extra, "{e}");
        assert_eq!(e["stack_height"], image_layers + extra, "{e}");
        assert_eq!(e["dir_depth"], dirs, "{e}");
        assert!(e["latency_ns"].as_u64().unwrap() > 0, "{e}");
    }
    let summary = lines.iter().find(|v| v["type"] == "summary").unwrap();
    assert_eq!(summary["copy_ups"], EXPECTED.len(), "{summary}");
}

/// busybox_image's files in three layers, with `deeper` one-file layers
/// on top; returns the `docker save` tar.
fn deep_image(work: &Path, tag: &str, deeper: usize) -> std::path::PathBuf {
    fs::create_dir_all(work.join("deep")).unwrap();
    let busybox = fs::read("/bin/busybox").unwrap();
    let mut layers: Vec<LayerFn> = vec![layer(move |t| {
        t.dir("bin", 0o755, 0, 0).unwrap();
        t.file("bin/busybox", &busybox, 0o755).unwrap();
        t.symlink("bin/sh", "busybox").unwrap();
        for d in ["data", "opq", "proc", "sys", "dev", "etc"] {
            t.dir(d, 0o755, 0, 0).unwrap();
        }
        t.file("data/file", BOTTOM, 0o644).unwrap();
    })];
    layers.push(layer(|t| {
        t.file("opq/new", b"new\n", 0o644).unwrap();
    }));
    layers.push(layer(|t| {
        t.file("top", b"top layer\n", 0o644).unwrap();
    }));
    for i in 0..deeper {
        layers.push(layer(move |t| {
            t.file(&format!("filler-{i}"), b"f\n", 0o644).unwrap();
        }));
    }
    docker_save_tar(&work.join("deep"), tag, layers)
}

/// The overlay options docker mounted container `id` with.
fn mount_options(mount_point: &str) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mount_point))
        .unwrap_or_else(|| panic!("{mount_point} not in mountinfo"));
    line.split(" - ").nth(1).unwrap().to_string()
}

/// doctor's entry for the overlay mounted at `mount_point`.
fn census_entry(mount_point: &str) -> Value {
    let d = doctor();
    d["overlay_mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mount_point"] == mount_point)
        .unwrap_or_else(|| panic!("doctor does not list {mount_point}: {d}"))
        .clone()
}

#[test]
fn docker_containers_shallow_and_deep() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    let dockerd = Dockerd::start(&ts.dir.join("docker"));
    let work = ts.scratch("images");
    // 64 more layers: the absolute lowerdir list no longer fits a page,
    // and docker mounts from its home with relative `l/...` names.
    let deep = deep_image(&work, "deep:latest", 64);
    dockerd.docker_ok(&["load", "-i", deep.to_str().unwrap()]);
    let shallow = busybox_image(&ts.scratch("shallow"), 0);
    dockerd.docker_ok(&["load", "-i", shallow.to_str().unwrap()]);
    let root = dockerd.data_root();
    for (image, layers, relative) in [(IMAGE, 3, false), ("deep:latest", 67, true)] {
        let run = |name: &str| {
            dockerd.docker_ok(&[
                "run",
                "-d",
                "--network=none",
                "--name",
                name,
                image,
                "/bin/busybox",
                "sleep",
                "600",
            ])
        };
        let (id, other) = (run("watched"), run("other"));
        // By docker name on one image, by full docker id on the other.
        let which = if relative { id.as_str() } else { "watched" };
        let recording = Recording::start(&[
            "--json".as_ref(),
            "--container".as_ref(),
            which.as_ref(),
            "--docker-root".as_ref(),
            root.as_os_str(),
        ]);
        dockerd.docker_ok(&["exec", "other", "/bin/sh", "-c", COPY_UPS]);
        dockerd.docker_ok(&["exec", "watched", "/bin/sh", "-c", COPY_UPS]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let stdout = recording.stop();
        check(&stdout, "docker", &id, layers, 1);
        let mount = json_lines(&stdout)
            .iter()
            .find(|v| v["type"] == "copy_up")
            .unwrap()["mount"]
            .as_str()
            .unwrap()
            .to_string();
        let options = mount_options(&mount);
        assert_eq!(
            options.contains("lowerdir=l/"),
            relative,
            "{image}: {options}"
        );
        assert!(!stdout.contains(&other), "the other container's copy-ups");
        let seen = census_entry(&mount);
        assert_eq!(seen["engine"], "docker", "{seen}");
        assert_eq!(seen["container"], &id[..12], "{seen}");
        dockerd.docker_ok(&["rm", "-f", "watched", "other"]);
    }
}

#[test]
fn docker_26_containers_on_strata() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    let strata = Path::new(BIN).with_file_name("strata");
    let ctrd = Containerd::start_for_docker(&ts.dir.join("containerd"), &strata);
    let dockerd = Dockerd::start_26(
        &ts.dir.join("docker"),
        &ctrd,
        Storage::Snapshotter("strata"),
    );
    let tar = busybox_image(&ts.scratch("image"), 0);
    dockerd.docker_ok(&["load", "-i", tar.to_str().unwrap()]);
    let run = |name: &str| {
        dockerd.docker_ok(&[
            "run",
            "-d",
            "--network=none",
            "--name",
            name,
            IMAGE,
            "/bin/busybox",
            "sleep",
            "600",
        ])
    };
    let (id, other) = (run("watched"), run("other"));
    let root = dockerd.data_root();
    let recording = Recording::start(&[
        "--json".as_ref(),
        "--container".as_ref(),
        "watched".as_ref(),
        "--docker-root".as_ref(),
        root.as_os_str(),
    ]);
    dockerd.docker_ok(&["exec", "other", "/bin/sh", "-c", COPY_UPS]);
    dockerd.docker_ok(&["exec", "watched", "/bin/sh", "-c", COPY_UPS]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stdout = recording.stop();
    // Docker 26 stacks an `-init` layer under the writable one here too.
    check(&stdout, "docker", &id, 3, 1);
    assert!(!stdout.contains(&other), "the other container's copy-ups");
    dockerd.docker_ok(&["rm", "-f", "watched", "other"]);
}

/// A Kubernetes pod's container on strata through containerd's CRI
/// plugin: its copy-ups are CRI's, named by the pod's uid and by
/// namespace/pod/container as kubectl names them, and `record
/// --container` takes that name.
#[test]
fn cri_container_on_strata() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let pause = push_pause_image(&reg, &ts.scratch("pause"));
    let tar = busybox_image(&ts.scratch("image"), 0);
    reg.push(
        &format!("docker-archive:{}", tar.display()),
        "test/app:v1",
        &[],
    );
    let app = format!("{}/test/app:v1", reg.host);
    let strata = Path::new(BIN).with_file_name("strata");
    let c = Containerd::start_cri(
        &ts.dir.join("node"),
        &strata,
        CriConfig {
            sandbox_image: pause,
            registry: reg.host.clone(),
            snapshotter: SNAPSHOTTER.into(),
            stats_period: 10,
        },
    );
    let uid = "6b1f7c52-1c1d-4c57-9a0a-5e0a1c2b3d4e";
    c.cri_ok(&["pull", &app]);
    let pod = c.cri_ok(&["run-pod", "web", "shop", uid])["pod_sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();
    let id = c.cri_ok(&[
        "create",
        &pod,
        "web",
        "shop",
        uid,
        "server",
        &app,
        "/bin/busybox",
        "sleep",
        "600",
    ])["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.cri_ok(&["start", &id]);
    let recording = Recording::start(&[
        "--json".as_ref(),
        "--container".as_ref(),
        "shop/web/server".as_ref(),
    ]);
    c.cri_ok(&["exec", &id, "/bin/sh", "-c", COPY_UPS]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stdout = recording.stop();
    check(&stdout, "cri", &id, 3, 0);
    let ev = json_lines(&stdout)
        .into_iter()
        .find(|v| v["type"] == "copy_up")
        .unwrap();
    let owner = &ev["container"];
    assert_eq!(owner["pod"], uid, "{ev}");
    assert_eq!(owner["namespace"], "shop", "{ev}");
    assert_eq!(owner["pod_name"], "web", "{ev}");
    assert_eq!(owner["name"], "server", "{ev}");
    c.cri_ok(&["stop", &id]);
    c.cri_ok(&["rm", &id]);
    c.cri_ok(&["stop-pod", &pod]);
    c.cri_ok(&["rm-pod", &pod]);
}

#[test]
fn podman_container() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    let podman = Podman::new(&ts.dir.join("podman"));
    let tar = busybox_image(&ts.scratch("image"), 0);
    podman.ok(&["load", "-i", tar.to_str().unwrap()]);
    let id = podman.run_detached("watched", IMAGE, &["/bin/busybox", "sleep", "600"]);
    podman.run_detached("other", IMAGE, &["/bin/busybox", "sleep", "600"]);
    // By a unique prefix of its id.
    let recording =
        Recording::start(&["--json".as_ref(), "--container".as_ref(), id[..10].as_ref()]);
    podman.ok(&["exec", "other", "/bin/sh", "-c", COPY_UPS]);
    podman.ok(&["exec", "watched", "/bin/sh", "-c", COPY_UPS]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stdout = recording.stop();
    check(&stdout, "podman", &id, 3, 0);
    let lines = json_lines(&stdout);
    let mount = lines.iter().find(|v| v["type"] == "copy_up").unwrap()["mount"]
        .as_str()
        .unwrap();
    let seen = census_entry(mount);
    assert_eq!(seen["engine"], "podman", "{seen}");
    assert_eq!(seen["container"], &id[..12], "{seen}");
}

#[test]
fn containerd_container_on_the_overlayfs_snapshotter() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    // containerd also serves strata's proxy snapshotter; this container
    // uses containerd's own overlayfs one.
    let strata = Path::new(BIN).with_file_name("strata");
    let ctrd = Containerd::start(&ts.dir.join("containerd"), &strata);
    let tar = busybox_image(&ts.scratch("image"), 0);
    let tar = tar.to_str().unwrap();
    ctrd.ctr_ok(&["images", "import", "--snapshotter", "overlayfs", tar]);
    for id in ["watched", "other"] {
        ctrd.ctr_ok(&[
            "run",
            "-d",
            "--snapshotter",
            "overlayfs",
            IMAGE,
            id,
            "/bin/busybox",
            "sleep",
            "600",
        ]);
    }
    let recording = Recording::start(&[
        "--json".as_ref(),
        "--container".as_ref(),
        "watched".as_ref(),
    ]);
    for (id, exec) in [("other", "e1"), ("watched", "e2")] {
        ctrd.ctr_ok(&[
            "task",
            "exec",
            "--exec-id",
            exec,
            id,
            "/bin/sh",
            "-c",
            COPY_UPS,
        ]);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stdout = recording.stop();
    check(&stdout, "containerd", "watched", 3, 0);
    let ev = json_lines(&stdout)
        .into_iter()
        .find(|v| v["type"] == "copy_up")
        .unwrap();
    assert_eq!(
        ev["container"]["namespace"],
        ctrd.namespace.as_str(),
        "{ev}"
    );
}
