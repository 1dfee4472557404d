//! containerd pulls through strata's own fetch-and-unpack: containerd
//! 1.7's unpacker, driven as CRI drives it (the labels of
//! AppendInfoHandlerWrapper), prepares each layer with its chain ID and
//! the image's labels; strata fetches the image from the registry itself,
//! records each layer as a committed snapshot and answers AlreadyExists,
//! so containerd downloads no layer blob and applies none. The image
//! runs with `ctr run --snapshotter strata`, and containerd's garbage
//! collector empties the store again.

use std::fs;

use strata_driver::pull::{PullOptions, RemoteImage};
use strata_driver::testing::containerd::{busybox_image, Containerd, Release, BOTTOM};
use strata_driver::testing::registry::{Registry, RegistryConfig};
use strata_driver::testing::{privileged, TestStore};

/// Layer-blob GETs in the registry's access log whose user agent names
/// `agent` (containerd's resolver says `containerd/1.7...`, strata's
/// `strata/...`).
fn layer_gets(reg: &Registry, repo: &str, agent: &str, config: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/{repo}/blobs/sha256:")) && l.contains(agent))
        .filter(|l| !l.contains(config))
        .count()
}

#[test]
fn a_cri_style_pull_is_fetched_and_unpacked_by_strata_not_containerd() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let tar = busybox_image(&ts.scratch("image"), 8);
    reg.push(
        &format!("docker-archive:{}", tar.display()),
        "test/busybox:v1",
        &[],
    );
    let reference = format!("{}/test/busybox:v1", reg.host);

    let c = Containerd::start_release(
        &ts.scratch("ctrd"),
        env!("CARGO_BIN_EXE_strata").as_ref(),
        Release::V1_7,
    );
    c.pull_as_cri(&reference);

    let store = c.store();
    let config = RemoteImage::resolve(&reference, &PullOptions::default())
        .unwrap()
        .resolved
        .config_digest
        .to_string();
    assert_eq!(
        layer_gets(&reg, "test/busybox", "containerd/", &config),
        0,
        "containerd fetched a layer:\n{}",
        gets(&reg)
    );
    assert_eq!(
        layer_gets(&reg, "test/busybox", "strata/", &config),
        3,
        "strata fetched each of the 3 layers once"
    );
    let log = fs::read_to_string(c.dir.join("snapshotter.log")).unwrap();
    assert!(
        log.contains(&format!("fetched {reference} (3 layers) for containerd")),
        "{log}"
    );

    // Committed snapshots by chain ID, content-addressed layers in the
    // store, and containerd's own view of the image agrees.
    let snaps = c.ctr_ok(&["snapshots", "--snapshotter", "strata", "ls"]);
    assert_eq!(
        snaps.lines().filter(|l| l.contains("Committed")).count(),
        3,
        "{snaps}"
    );
    assert_eq!(fs::read_dir(store.layers_dir()).unwrap().count(), 3);
    let out = c.run_sh_from(&reference, "pulled", "cat /data/file; ls /etc /opq", false);
    assert!(
        out.starts_with(std::str::from_utf8(BOTTOM).unwrap()),
        "{out}"
    );
    assert!(
        !out.contains("gone") && !out.contains("old"),
        "whiteout and opaque dir: {out}"
    );

    // containerd's GC removes what it no longer references.
    c.ctr_ok(&["containers", "rm", "pulled"]);
    c.ctr_ok(&["images", "rm", "--sync", &reference]);
    let left = c.ctr_ok(&["snapshots", "--snapshotter", "strata", "ls"]);
    assert_eq!(left.lines().count(), 1, "only the header is left: {left}");
    assert!(store.check(false).unwrap().is_empty());
    assert_eq!(fs::read_dir(store.layers_dir()).unwrap().count(), 0);
}

fn gets(reg: &Registry) -> String {
    reg.log()
        .lines()
        .filter(|l| l.contains("\"GET "))
        .collect::<Vec<_>>()
        .join("\n")
}
