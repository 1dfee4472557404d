//! The mount path of kernels before 6.7 (no `lowerdir+`): the legacy
//! option string with short link names, forced here with
//! STRATA_MOUNT_API=legacy. Its own test binary, so the variable touches
//! no other test.

use std::fs;

use strata_driver::containers::CreateOptions;
use strata_driver::testing::{layer, privileged, TestStore};
use strata_driver::Error;

#[test]
fn legacy_option_string_mounts_128_layers_and_refuses_what_does_not_fit() {
    if !privileged() {
        return;
    }
    std::env::set_var("STRATA_MOUNT_API", "legacy");
    let ts = TestStore::new();
    let layers = (0..128)
        .map(|i| {
            layer(move |t| {
                t.file(&format!("f{i}"), b"x", 0o644).unwrap();
            })
        })
        .collect();
    ts.image("deep", layers);
    let (_, merged) = ts.container("deep");
    assert_eq!(fs::read_dir(&merged).unwrap().count(), 128);
    let line = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(merged.to_str().unwrap()))
        .unwrap()
        .to_string();
    assert!(
        line.contains("lowerdir=") && !line.contains("lowerdir+="),
        "{line}"
    );

    // 200 layers do not fit in a page even with short links.
    let layers = (0..200)
        .map(|i| {
            layer(move |t| {
                t.file(&format!("g{i}"), b"y", 0o644).unwrap();
            })
        })
        .collect();
    ts.image("deeper", layers);
    let c = ts
        .store
        .create_container(
            "deeper",
            &CreateOptions {
                name: None,
                volumes: vec![],
                volatile: false,
            },
        )
        .unwrap();
    let err = ts.store.mount_container(&c.id).unwrap_err();
    assert!(
        matches!(err, Error::TooManyLayers { count: 200, .. }),
        "{err}"
    );
    assert!(
        !strata_driver::mount::is_mountpoint(&ts.store.merged_dir(&c.id)),
        "no truncated stack mounted"
    );
}
