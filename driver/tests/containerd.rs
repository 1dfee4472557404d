//! containerd runs on strata: a private containerd 1.6 with `strata
//! snapshotter` as its proxy snapshotter imports a multi-layer image
//! (whiteouts, an opaque directory) into the store, runs a container with
//! runc on it, survives kill -9 of the snapshotter mid-import, and its
//! garbage collector empties the store again.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_driver::testing::containerd::{busybox_image, Containerd, IMAGE};
use strata_driver::testing::{privileged, TestStore};

fn strata(root: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn strata_json(root: &Path, args: &[&str]) -> Value {
    let (ok, out) = strata(root, &[args, &["--format", "json"]].concat());
    assert!(ok, "strata {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Imports, retrying while containerd's client has not yet reconnected
/// to a restarted snapshotter (gRPC backs off between dials): what a
/// user retrying the import sees.
fn import_retrying(ctrd: &Containerd, tar: &Path) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctrd.import(tar);
        let unavailable = String::from_utf8_lossy(&out.stderr).contains("unavailable");
        if out.status.success() || !unavailable || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Mounts anything of the store's still in the mount table.
fn store_mounts(root: &Path) -> Vec<String> {
    let needle = root.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn containerd_imports_runs_and_collects_on_strata() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let tar = busybox_image(&ts.scratch("image"), 8);
    let ctrd = Containerd::start(
        &ts.dir.join("engine"),
        Path::new(env!("CARGO_BIN_EXE_strata")),
    );
    let root = ctrd.store_root();

    let out = ctrd.import(&tar);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = ctrd.store();
    let layers = store.layers().unwrap();
    assert_eq!(layers.len(), 3, "one stored layer per image layer");
    let df = strata_json(&root, &["system", "df"]);
    let layer_bytes: u64 = layers.iter().map(|l| l.size).sum();
    assert_eq!(df["layers_size"].as_u64(), Some(layer_bytes), "{df}");
    // The snapshotter makes the committed layers durable on its own,
    // shortly after containerd commits them.
    wait_until("the committed layers to be flushed", || {
        store
            .snapshot_db()
            .unwrap()
            .snapshots
            .values()
            .all(|r| r.unflushed_boot.is_none())
    });
    let busybox = fs::metadata("/bin/busybox").unwrap().len();
    assert!(layer_bytes >= busybox + 8 * (16 << 10), "{layer_bytes}");

    // The container reads the bottom layer's file, checks the whiteout and
    // the opaque directory, and rewrites the file (a copy-up).
    let script = "test \"$(cat /data/file)\" = 'written in the bottom layer' \
                  && test ! -e /etc/gone && test ! -e /opq/old && test -e /opq/new \
                  && test -e /top && echo rewritten > /data/file";
    ctrd.run_sh("c1", script, false);

    let ps = strata_json(&root, &["ps", "-a", "-s"]);
    let rows = ps.as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| {
            r["container"]["snapshot"]
                .as_str()
                .is_some_and(|k| k.ends_with("/c1"))
        })
        .unwrap_or_else(|| panic!("no writable layer for c1 in {ps}"));
    assert_eq!(
        row["size"].as_u64(),
        Some(b"rewritten\n".len() as u64),
        "{row}"
    );
    let name = row["container"]["name"].as_str().unwrap();
    let diff = strata_json(&root, &["diff", name]);
    assert!(
        diff.as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "/data/file" && c["kind"] == "C"),
        "{diff}"
    );
    let (refused, out) = strata(&root, &["rm", "-f", name]);
    assert!(!refused && out.contains("through containerd"), "{out}");

    ctrd.ctr_ok(&["containers", "rm", "c1"]);
    ctrd.ctr_ok(&["images", "rm", "--sync", IMAGE]);
    // The collector removes, then cleans up; both are asynchronous.
    wait_until("containerd's GC to empty the store", || {
        store.layers().unwrap().is_empty()
            && store.containers().unwrap().is_empty()
            && store.snapshot_db().unwrap().snapshots.is_empty()
            && fs::read_dir(store.trash_dir()).unwrap().next().is_none()
    });
    let (clean, out) = strata(&root, &["check"]);
    assert!(clean, "{out}");
    assert!(store_mounts(&root).is_empty(), "{:?}", store_mounts(&root));
}

#[test]
fn import_survives_kill_9_of_the_snapshotter() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    // Enough files that the kill lands inside the extraction.
    let tar = busybox_image(&ts.scratch("image"), 1500);
    let mut ctrd = Containerd::start(
        &ts.dir.join("engine"),
        Path::new(env!("CARGO_BIN_EXE_strata")),
    );
    let root = ctrd.store_root();
    let mut interrupted = 0;
    for delay_ms in [30u64, 120, 300, 600] {
        let mut child = ctrd
            .import_command(&tar)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        ctrd.kill_snapshotter();
        if !child.wait().unwrap().success() {
            interrupted += 1;
        }
        ctrd.start_snapshotter();
        let out = import_retrying(&ctrd, &tar);
        assert!(
            out.status.success(),
            "import after kill -9 at {delay_ms} ms: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (clean, report) = strata(&root, &["check"]);
        assert!(clean, "after kill -9 at {delay_ms} ms: {report}");
        assert!(store_mounts(&root).is_empty(), "{:?}", store_mounts(&root));
        assert_eq!(ctrd.store().layers().unwrap().len(), 3);
        ctrd.ctr_ok(&["images", "rm", "--sync", IMAGE]);
    }
    assert!(interrupted > 0, "no kill landed inside an import");
    // A clean stop removes the socket.
    assert!(ctrd.stop_snapshotter().success());
    assert!(!ctrd.snapshotter_socket().exists());
}
