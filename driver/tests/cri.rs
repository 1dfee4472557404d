//! Kubernetes' CRI driven for real: containerd 1.7's CRI plugin on
//! strata (`snapshotter = "strata"`, the remote-snapshotter labels on),
//! called as kubelet calls it by the `strata-cri` client, one call at a
//! time, each answer checked against strata's own view of the store.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_driver::pull::{PullOptions, RemoteImage};
use strata_driver::sizes::dir_usage;
use strata_driver::testing::containerd::{
    big_file_image, push_pause_image, Containerd, CriConfig, SNAPSHOTTER,
};
use strata_driver::testing::registry::{Registry, RegistryConfig};
use strata_driver::testing::{privileged, stdout_of_success, TestStore};
use strata_driver::Store;

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

/// Inodes in strata's store as containerd's Usage counts them: every
/// entry of each layer and each writable layer (see sizes::dir_usage).
fn store_inodes(store: &Store) -> u64 {
    let layers = store
        .layers()
        .unwrap()
        .into_iter()
        .map(|l| store.layer_diff(&l.chain_id));
    let uppers = store
        .containers()
        .unwrap()
        .into_iter()
        .map(|c| store.upper_dir(&c.id));
    layers
        .chain(uppers)
        .map(|d| dir_usage(&d).unwrap().inodes)
        .sum()
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
            snapshotter: SNAPSHOTTER.into(),
            stats_period: 1,
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
    let store = c.store();
    let record = store
        .containers()
        .unwrap()
        .into_iter()
        .find(|r| r.snapshot.as_deref().is_some_and(|k| k.ends_with(&ctr)))
        .unwrap();
    let upper_inodes = dir_usage(&store.upper_dir(&record.id)).unwrap().inodes;
    assert_eq!(num(&wl["inodes_used"]["value"]), upper_inodes, "{stats}");
    let listed = c.cri_ok(&["list-stats"]);
    assert!(listed.to_string().contains(&ctr), "{listed}");

    // ImageFsInfo: containerd sums every snapshot's Usage, so the image
    // filesystem's bytes are strata's disk use: layers once, and the
    // writable layers.
    let image_fs_matches = || {
        let info = c.cri_ok(&["fs-info"]);
        let used = num(&info["image_filesystems"][0]["used_bytes"]["value"]);
        let ours = num(&strata_json(&root, &["system", "df"])["disk_used"]);
        let inodes = num(&info["image_filesystems"][0]["inodes_used"]["value"]);
        let our_inodes = store_inodes(&c.store());
        ok_or(used == ours && inodes == our_inodes, || {
            format!("{info} vs strata's disk_used {ours} and {our_inodes} inodes")
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

/// A CRI node of the test's own with the pause image and `apps`
/// (big_file_image of each size, pushed as test/app-N:v1) in the
/// registry; returns the node and the apps' references.
fn node(ts: &TestStore, reg: &Registry, apps: &[u64]) -> (Containerd, Vec<String>) {
    let pause = push_pause_image(reg, &ts.scratch("pause"));
    let refs = apps
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let tar = big_file_image(&ts.scratch(&format!("app-{i}")), size);
            reg.push(
                &format!("docker-archive:{}", tar.display()),
                &format!("test/app-{i}:v1"),
                &[],
            );
            format!("{}/test/app-{i}:v1", reg.host)
        })
        .collect();
    let c = Containerd::start_cri(
        &ts.dir.join("node"),
        env!("CARGO_BIN_EXE_strata").as_ref(),
        CriConfig {
            sandbox_image: pause,
            registry: reg.host.clone(),
            snapshotter: SNAPSHOTTER.into(),
            stats_period: 1,
        },
    );
    (c, refs)
}

/// A pod running `image`'s sleep; (pod, container) ids.
fn run_pod(c: &Containerd, name: &str, image: &str) -> (String, String) {
    let uid = format!("uid-{name}");
    let pod = c.cri_ok(&["run-pod", name, "default", &uid])["pod_sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ctr = c.cri_ok(&[
        "create",
        &pod,
        name,
        "default",
        &uid,
        "main",
        image,
        "/bin/busybox",
        "sleep",
        "600",
    ])["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.cri_ok(&["start", &ctr]);
    (pod, ctr)
}

fn image_fs_used(c: &Containerd) -> u64 {
    num(&c.cri_ok(&["fs-info"])["image_filesystems"][0]["used_bytes"]["value"])
}

/// kubelet's image garbage collection, replayed: above its high
/// threshold it lists the images, keeps those a container uses, and
/// removes the others least recently used first until usage is under
/// the low threshold; ImageFsInfo (strata's disk use) falls with each.
#[test]
fn kubelet_s_image_gc_through_cri_frees_what_strata_stored() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let (c, apps) = node(&ts, &reg, &[4 << 20, 6 << 20, 8 << 20]);
    let root = c.store_root();
    for app in &apps {
        c.cri_ok(&["pull", app]);
    }
    // The newest image is in use; the two older ones are not.
    let (pod, ctr) = run_pod(&c, "busy", &apps[2]);
    let disk_used = || num(&strata_json(&root, &["system", "df"])["disk_used"]);
    wait_for("ImageFsInfo to count all three", || {
        let (used, ours) = (image_fs_used(&c), disk_used());
        ok_or(used == ours, || format!("{used} vs strata's {ours}"))
    });
    let full = image_fs_used(&c);
    // Thresholds as if the disk held just this: high is passed, low
    // needs the oldest two gone.
    let low = full - (4 << 20) - (6 << 20);

    let images = c.cri_ok(&["list-images"]);
    let listed = images["images"].as_array().unwrap();
    assert!(
        apps.iter().all(|a| images.to_string().contains(a)),
        "{images}"
    );
    assert!(
        listed.len() >= 4,
        "three apps and the pause image: {images}"
    );
    for app in &apps[..2] {
        if image_fs_used(&c) <= low {
            break;
        }
        let before = image_fs_used(&c);
        c.cri_ok(&["rmi", app]);
        wait_for("ImageFsInfo to fall with the image", || {
            let (used, ours) = (image_fs_used(&c), disk_used());
            ok_or(used < before && used == ours, || {
                format!("{used} (was {before}) vs strata's {ours}")
            })
        });
    }
    let after = image_fs_used(&c);
    assert!(
        after <= low + (1 << 20),
        "{after} > {low}: the LRU images went"
    );
    // The one in use stays, and its container still runs.
    let status = c.cri_ok(&["image-status", &apps[2]]);
    assert!(status["image"].is_object(), "{status}");
    let exec = c.cri_ok(&["exec", &ctr, "/bin/busybox", "true"]);
    assert_eq!(exec["exit_code"].as_i64().unwrap_or(0), 0, "{exec}");
    c.cri_ok(&["stop", &ctr]);
    c.cri_ok(&["rm", &ctr]);
    c.cri_ok(&["stop-pod", &pod]);
    c.cri_ok(&["rm-pod", &pod]);
    assert!(c.store().check(false).unwrap().is_empty());
}

/// The snapshotter restarted under a running pod: the pod runs on, and
/// new pods start once it is back. containerd killed mid-PullImage: the
/// next PullImage completes without fetching a complete layer again.
#[test]
fn a_running_pod_outlives_a_snapshotter_restart_and_a_killed_pull_resumes() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let (mut c, apps) = node(&ts, &reg, &[1 << 20, 48 << 20]);
    c.cri_ok(&["pull", &apps[0]]);
    let (_pod, ctr) = run_pod(&c, "steady", &apps[0]);

    c.kill_snapshotter();
    c.start_snapshotter();
    let exec = c.cri_ok(&[
        "exec",
        &ctr,
        "/bin/sh",
        "-c",
        "echo alive > /alive && busybox cat /alive",
    ]);
    assert_eq!(exec["exit_code"].as_i64().unwrap_or(0), 0, "{exec}");
    // containerd reconnects to the snapshotter on its next call.
    wait_for("a new pod after the restart", || {
        c.cri(&["run-pod", "after", "default", "uid-after"])
            .map(drop)
    });

    // Killed mid-pull: strata's fetch runs in the snapshotter, which
    // lives on and finishes the layers it started.
    let mut pull = Command::new(strata_driver::testing::containerd::cri_client_binary())
        .arg(c.address())
        .args(["pull", &apps[1]])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.kill_containerd();
    let _ = pull.wait();
    c.start_containerd();
    wait_for("PullImage after containerd's restart", || {
        c.cri(&["pull", &apps[1]]).map(drop)
    });
    // Every layer's blob came whole from the registry once at most (a
    // resumed one would be a 206), and none through containerd.
    let remote = RemoteImage::resolve(&apps[1], &PullOptions::default()).unwrap();
    for layer in remote.layer_digests() {
        let get = format!("\"GET /v2/test/app-1/blobs/{layer} ");
        assert!(
            reg.requests(&[&get, "\" 200 "]) <= 1,
            "{layer} again:\n{}",
            reg.log()
        );
        assert_eq!(reg.requests(&[&get, "containerd/"]), 0, "{}", reg.log());
    }
    let size = c.cri_ok(&["image-status", &apps[1]]);
    assert!(size["image"].is_object(), "{size}");
    assert!(c.store().check(false).unwrap().is_empty());
}

/// kubelet's imagePullSecrets, in PullImageRequest.auth, reach strata's
/// own fetch through its CRI image service (kubelet's
/// imageServiceEndpoint): a registry that wants basic auth serves every
/// layer to strata, none to containerd, and the password shows up in no
/// log.
#[test]
fn pull_credentials_from_kubelet_sign_in_strata_s_fetch_and_are_never_logged() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let htpasswd = ts.scratch("auth").join("htpasswd");
    let hash = bcrypt::hash("s3cret-pw", 5).unwrap();
    fs::write(&htpasswd, format!("kube:{hash}\n")).unwrap();
    let reg = Registry::start(
        &ts.scratch("registry"),
        &RegistryConfig {
            htpasswd: Some(htpasswd),
            ..Default::default()
        },
    );
    let creds = ["--dest-creds", "kube:s3cret-pw"];
    // No pod runs here: the sandbox image is never pulled.
    let pause = format!("{}/test/pause:3.9", reg.host);
    let tar = big_file_image(&ts.scratch("image"), 1 << 20);
    reg.push(
        &format!("docker-archive:{}", tar.display()),
        "test/private:v1",
        &creds,
    );
    let app = format!("{}/test/private:v1", reg.host);
    let c = Containerd::start_cri(
        &ts.dir.join("node"),
        env!("CARGO_BIN_EXE_strata").as_ref(),
        CriConfig {
            sandbox_image: pause,
            registry: reg.host.clone(),
            snapshotter: SNAPSHOTTER.into(),
            stats_period: 1,
        },
    );
    let images = c.cri_images_socket();
    c.cri_at(&images, &["pull", &app, "kube", "s3cret-pw"])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    let config = config_digest(&tar);
    assert_eq!(
        layer_gets(&reg, "test/private", "containerd/", &config),
        0,
        "{}",
        reg.log()
    );
    let signed_in = reg
        .log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/test/private/blobs/sha256:") && l.contains("strata/"))
        .filter(|l| !l.contains(&config) && l.contains("\" 200 "))
        .count();
    assert_eq!(
        signed_in,
        3,
        "strata fetched each layer, signed in:\n{}",
        reg.log()
    );
    // Through the proxy the other image calls are containerd's own.
    let status = c.cri_at(&images, &["image-status", &app]).unwrap();
    assert!(status["image"].is_object(), "{status}");
    for log in ["snapshotter.log", "containerd.log"] {
        let text = fs::read_to_string(c.dir.join(log)).unwrap_or_default();
        assert!(!text.contains("s3cret-pw"), "the password is in {log}");
    }
    // Without credentials, strata's fetch is refused; the pull still
    // fails cleanly (containerd is refused too) and leaves nothing.
    c.cri_ok(&["rmi", &app]);
    let e = c.cri_at(&images, &["pull", &app]).unwrap_err();
    assert!(!e.contains("s3cret-pw"), "{e}");
    assert!(c.store().check(false).unwrap().is_empty());
}
