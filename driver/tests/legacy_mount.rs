//! The mount path of kernels before 6.7 (no `lowerdir+`): the legacy
//! option string with short link names, forced here by the store option.

use std::fs;

use strata_driver::containers::CreateOptions;
use strata_driver::mount::MountApi;
use strata_driver::store::StoreOptions;
use strata_driver::testing::{layer, privileged, TestStore};
use strata_driver::{Error, Store};

#[test]
fn legacy_option_string_mounts_500_layers_and_refuses_what_does_not_fit() {
    if !privileged() {
        return;
    }
    let ts = TestStore::with_options(StoreOptions {
        mount_api: Some(MountApi::Legacy),
        ..Default::default()
    });
    // The kernel's own maximum, through one page of options: 6-character
    // link names, mounted from inside l/.
    let layers = (0..500)
        .map(|i| {
            layer(move |t| {
                t.file(&format!("f{i}"), b"x", 0o644).unwrap();
            })
        })
        .collect();
    ts.image("deep", layers);
    let (_, merged) = ts.container("deep");
    assert_eq!(fs::read_dir(&merged).unwrap().count(), 500);
    assert_eq!(fs::read(merged.join("f0")).unwrap(), b"x");
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

    // A store so deep in the tree that its upper and work paths leave
    // room for fewer layers than the stack has: refused, nothing mounted.
    let deep_root = ts.dir.join(vec!["p".repeat(250); 7].join("/"));
    let store = Store::open_with(&deep_root, *ts.store.options()).unwrap();
    let layers = (0..100)
        .map(|i| {
            layer(move |t| {
                t.file(&format!("g{i}"), b"y", 0o644).unwrap();
            })
        })
        .collect();
    ts.image_into(&store, "far", layers);
    let c = store
        .create_container("far", &CreateOptions::default())
        .unwrap();
    let err = store.mount_container(&c.id).unwrap_err();
    match err {
        Error::TooManyLayers { count: 100, limit } => {
            assert!(limit > 0 && limit < 100, "limit {limit}")
        }
        _ => panic!("{err}"),
    }
    assert!(err.to_string().contains("too many layers"), "{err}");
    assert!(
        !strata_driver::mount::is_mountpoint(&store.merged_dir(&c.id)),
        "no truncated stack mounted"
    );
}
