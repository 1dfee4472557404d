//! Kubernetes' CRI driven for real: containerd 1.7's CRI plugin on
//! strata (`snapshotter = "strata"`, the remote-snapshotter labels on),
//! called as kubelet calls it by the `strata-cri` client, one call at a
//! time, each answer checked against strata's own view of the store.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_driver::testing::containerd::{big_file_image, busybox_image, Containerd, CriConfig};
use strata_driver::testing::registry::{Registry, RegistryConfig};
use strata_driver::testing::{privileged, stdout_of_success, TestStore};

const BIG: u64 = 8 << 20;

fn strata_json(root: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(root)
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    serde_json::from_slice(&stdout_of_success(out, &format!("strata {args:?}")).into_bytes())
        .unwrap()
}

/// busybox with `sleep` for its entrypoint, pushed as the pod sandbox
/// ("pause") image: CRI runs the image's own command.
fn push_pause_image(reg: &Registry, work: &Path) -> String {
    let tar = busybox_image(work, 0);
    let layout = work.join("pause-layout");
    let sh = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        stdout_of_success(out, &format!("{cmd:?}"));
    };
    sh(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("docker-archive:{}", tar.display()))
        .arg(format!("oci:{}:3.9", layout.display())));
    sh(Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:3.9", layout.display()))
        .args(["--config.entrypoint", "/bin/busybox"])
        .args(["--config.cmd", "sleep", "--config.cmd", "2147483647"]));
    reg.push(
        &format!("oci:{}:3.9", layout.display()),
        "test/pause:3.9",
        &[],
    );
    format!("{}/test/pause:3.9", reg.host)
}

/// Layer-blob GETs by user agents naming `agent`, the config's left out.
fn layer_gets(reg: &Registry, repo: &str, agent: &str, config: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/{repo}/blobs/sha256:")) && l.contains(agent))
        .filter(|l| !l.contains(config))
        .count()
}

fn config_digest(tar: &Path) -> String {
    let archive: PathBuf = tar.parent().unwrap().join("archive");
    let manifest: Value =
        serde_json::from_slice(&fs::read(archive.join("manifest.json")).unwrap()).unwrap();
    let file = manifest[0]["Config"].as_str().unwrap();
    format!("sha256:{}", file.trim_end_matches(".json"))
}

/// Until `check` passes; its last complaint if it never does.
fn wait_for(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(why) = check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {why}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `ok`, or `why` for wait_for.
fn ok_or(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

fn num(v: &Value) -> u64 {
    // CRI's uint64 values come as JSON numbers from Go's encoder.
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_pod_lives_on_strata_through_cri_and_its_numbers_are_strata_s() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let pause = push_pause_image(&reg, &ts.scratch("pause"));
    let tar = big_file_image(&ts.scratch("image"), BIG);
    reg.push(
        &format!("docker-archive:{}", tar.display()),
        "test/app:v1",
        &[],
    );
    let app = format!("{}/test/app:v1", reg.host);
    let c = Containerd::start_cri(
        &ts.dir.join("node"),
        env!("CARGO_BIN_EXE_strata").as_ref(),
        CriConfig {
            sandbox_image: pause.clone(),
            registry: reg.host.clone(),
        },
    );
    let root = c.store_root();

    // PullImage is strata's fetch: containerd downloads no layer blob.
    let pulled = c.cri_ok(&["pull", &app]);
    let image_ref = pulled["image_ref"].as_str().unwrap().to_string();
    let config = config_digest(&tar);
    assert_eq!(
        layer_gets(&reg, "test/app", "containerd/", &config),
        0,
        "{}",
        reg.log()
    );
    assert_eq!(layer_gets(&reg, "test/app", "strata/", &config), 3);
    let status = c.cri_ok(&["image-status", &app]);
    assert_eq!(status["image"]["id"], image_ref.as_str(), "{status}");
    let listed = c.cri_ok(&["list-images"]);
    assert!(listed.to_string().contains(&app), "{listed}");

    // A pod and its container; the container rewrites the 8 MiB file of
    // the bottom layer and deletes one of the image's files.
    let pod = c.cri_ok(&["run-pod", "web", "default", "uid-1"])["pod_sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ctr = c.cri_ok(&[
        "create",
        &pod,
        "web",
        "default",
        "uid-1",
        "app",
        &app,
        "/bin/busybox",
        "sleep",
        "600",
    ])["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.cri_ok(&["start", &ctr]);
    let exec = c.cri_ok(&[
        "exec",
        &ctr,
        "/bin/sh",
        "-c",
        "echo more >> /data/big && busybox rm /top",
    ]);
    assert_eq!(exec["exit_code"].as_i64().unwrap_or(0), 0, "{exec}");

    // writable_layer is the container's snapshot Usage: strata ps -s.
    let ours = || {
        let all = strata_json(&root, &["ps", "-a", "-s"]);
        all.as_array()
            .unwrap()
            .iter()
            .find(|e| e["container"]["snapshot"].as_str().unwrap().ends_with(&ctr))
            .unwrap_or_else(|| panic!("no strata container for {ctr}: {all}"))
            .clone()
    };
    let mut stats = Value::Null;
    wait_for("ContainerStats to see the copy-up", || {
        stats = c.cri_ok(&["stats", &ctr]);
        let used = stats["stats"]["writable_layer"]["used_bytes"]["value"].as_u64();
        ok_or(used.is_some_and(|b| b > BIG), || stats.to_string())
    });
    let wl = &stats["stats"]["writable_layer"];
    let mine = ours();
    assert_eq!(
        num(&wl["used_bytes"]["value"]),
        num(&mine["size"]),
        "{stats}\n{mine}"
    );
    let listed = c.cri_ok(&["list-stats"]);
    assert!(listed.to_string().contains(&ctr), "{listed}");

    // ImageFsInfo: containerd sums every snapshot's Usage, so the image
    // filesystem's bytes are strata's disk use: layers once, and the
    // writable layers.
    let image_fs_matches = || {
        let info = c.cri_ok(&["fs-info"]);
        let used = num(&info["image_filesystems"][0]["used_bytes"]["value"]);
        let ours = num(&strata_json(&root, &["system", "df"])["disk_used"]);
        ok_or(used == ours, || {
            format!("{info} vs strata's disk_used {ours}")
        })
    };
    wait_for("ImageFsInfo to equal strata's disk use", image_fs_matches);

    // Everything removed as kubelet removes it; containerd's collector
    // empties the store.
    c.cri_ok(&["stop", &ctr]);
    c.cri_ok(&["rm", &ctr]);
    c.cri_ok(&["stop-pod", &pod]);
    c.cri_ok(&["rm-pod", &pod]);
    c.cri_ok(&["rmi", &app]);
    // Falls with the image: the pause image's layers are all that is left.
    let store = c.store();
    let layers = || fs::read_dir(store.layers_dir()).unwrap().count();
    wait_for("the app's layers to go", || {
        ok_or(layers() == 3, || format!("{} layers", layers()))
    });
    wait_for("ImageFsInfo to follow", image_fs_matches);
    c.cri_ok(&["rmi", &pause]);
    wait_for("the store to empty", || {
        ok_or(layers() == 0, || format!("{} layers", layers()))
    });
    assert!(store.check(false).unwrap().is_empty());
    assert_eq!(strata_json(&root, &["ps", "-a"]), Value::Array(vec![]));
}
