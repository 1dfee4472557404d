//! `create --metacopy`: a chmod copies up metadata only, a renamed lower
//! directory is a redirect, and diff, commit and `ps -s` still see the
//! container exactly as it is mounted (a committed layer is saved like any
//! other: tests/export.rs).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use strata_driver::changes::{Change, ChangeKind};
use strata_driver::commit::commit;
use strata_driver::containers::CreateOptions;
use strata_driver::lowerstack::{is_metacopy, is_redirected};
use strata_driver::testing::{layer, privileged, snapshot, TestStore};

/// Big enough that copying its data would show in blocks; small enough
/// for the emulated guests of the kernel matrix.
const BIG: u64 = 2 << 20;

fn change(kind: ChangeKind, path: &str) -> Change {
    Change {
        kind,
        path: path.into(),
    }
}

#[test]
fn metacopy_containers_copy_metadata_only_and_commit_whole() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "base",
        vec![
            layer(|t| {
                t.dir("data", 0o755, 0, 0).unwrap();
                t.pattern_file("data/big", BIG, 3).unwrap();
                t.dir("tree", 0o755, 0, 0).unwrap();
                t.dir("tree/sub", 0o750, 0, 0).unwrap();
                t.file("tree/sub/a", b"a", 0o644).unwrap();
                t.pattern_file("tree/b", 256 << 10, 5).unwrap();
                t.file("tree/gone", b"g", 0o644).unwrap();
            }),
            layer(|t| {
                t.file("tree/sub/from-layer-2", b"2", 0o644).unwrap();
            }),
        ],
    );
    let opts = CreateOptions {
        metacopy: true,
        ..Default::default()
    };
    let c = ts.store.create_container("base", &opts).unwrap();
    let m = ts.store.mount_container(&c.id).unwrap();
    let upper = ts.store.upper_dir(&c.id);

    fs::set_permissions(m.join("data/big"), fs::Permissions::from_mode(0o600)).unwrap();
    let up = fs::symlink_metadata(upper.join("data/big")).unwrap();
    assert!(
        is_metacopy(&upper.join("data/big")).unwrap(),
        "chmod copied up data"
    );
    assert_eq!(up.len(), BIG);
    assert!(up.blocks() * 512 <= 4096, "{} blocks copied", up.blocks());

    fs::rename(m.join("tree"), m.join("moved")).unwrap();
    assert!(is_redirected(&upper.join("moved")).unwrap());
    fs::remove_file(m.join("moved/gone")).unwrap();
    fs::set_permissions(m.join("moved/b"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(m.join("moved/new"), b"n").unwrap();
    let expected = snapshot(&m);

    let mut changes = ts.store.container_changes(&c.id).unwrap();
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    use ChangeKind::*;
    let want = [
        change(Changed, "/data"),
        change(Changed, "/data/big"),
        change(Added, "/moved"),
        change(Added, "/moved/b"),
        change(Added, "/moved/new"),
        change(Added, "/moved/sub"),
        change(Added, "/moved/sub/a"),
        change(Added, "/moved/sub/from-layer-2"),
        change(Deleted, "/tree"),
    ];
    assert_eq!(changes, want);

    let usage = ts.store.container_usage(&c).unwrap();
    assert!(
        usage.size < 1 << 20,
        "ps -s counts lower data a chmod did not copy: {}",
        usage.size
    );

    commit(&ts.store, &c.id, "committed").unwrap();
    let (_, committed) = ts.container("committed");
    assert_eq!(
        snapshot(&committed),
        expected,
        "commit lost what the overlay showed"
    );

    // Mounted again, the container still reads its metacopy files.
    ts.store.unmount_container(&c.id).unwrap();
    let m = ts.store.mount_container(&c.id).unwrap();
    assert_eq!(snapshot(&m), expected);
}
