//! Containers on real overlay mounts: the reference drivers' checks.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use strata_driver::changes::Change;
use strata_driver::containers::CreateOptions;
use strata_driver::testing::{layer, privileged, snapshot, TestStore};
use strata_driver::{commit, Error};

fn changes(ts: &TestStore, id: &str) -> Vec<(char, String)> {
    ts.store
        .container_changes(id)
        .unwrap()
        .into_iter()
        .map(|Change { kind, path }| (kind.letter(), path))
        .collect()
}

#[test]
fn base_and_snap_keep_odd_modes_and_owners() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    // create-empty: an image with no files at all still mounts.
    ts.image("empty", vec![layer(|_| {})]);
    let (_, empty) = ts.container("empty");
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);

    // base: a 0705+sticky directory owned 1:2 and a 0222+setuid file.
    ts.image(
        "base",
        vec![layer(|t| {
            t.dir("a", 0o1705, 1, 2).unwrap();
            t.file_owned("a/f", b"content", 0o4222, 0, 0).unwrap();
        })],
    );
    let (id, merged) = ts.container("base");
    let dir = fs::symlink_metadata(merged.join("a")).unwrap();
    assert_eq!(dir.mode() & 0o7777, 0o1705);
    assert_eq!((dir.uid(), dir.gid()), (1, 2));
    let file = fs::symlink_metadata(merged.join("a/f")).unwrap();
    assert_eq!(file.mode() & 0o7777, 0o4222);
    assert_eq!(fs::read(merged.join("a/f")).unwrap(), b"content");

    // snap: commit the container unchanged but for one file, and the odd
    // modes survive into the new layer's image.
    fs::write(merged.join("added"), b"x").unwrap();
    commit::commit(&ts.store, &id, "snap").unwrap();
    let (_, snap) = ts.container("snap");
    let dir = fs::symlink_metadata(snap.join("a")).unwrap();
    assert_eq!((dir.mode() & 0o7777, dir.uid(), dir.gid()), (0o1705, 1, 2));
    assert_eq!(
        fs::symlink_metadata(snap.join("a/f")).unwrap().mode() & 0o7777,
        0o4222
    );
    assert_eq!(fs::read(snap.join("added")).unwrap(), b"x");
}

#[test]
fn reads_through_128_layers_with_an_id_chain() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let layers = (0..128)
        .map(|i| {
            layer(move |t| {
                t.file(&format!("layer-{i}"), format!("{i}").as_bytes(), 0o644)
                    .unwrap();
                t.file("id", format!("{i}").as_bytes(), 0o644).unwrap();
                if i > 0 {
                    t.file(
                        &format!("parent-of-{i}"),
                        format!("{}", i - 1).as_bytes(),
                        0o644,
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    ts.image("deep", layers);
    let (_, merged) = ts.container("deep");
    // The top layer's id wins; every layer's own file is visible and each
    // link of the chain points to the layer below it.
    assert_eq!(fs::read_to_string(merged.join("id")).unwrap(), "127");
    for i in 0..128 {
        assert_eq!(
            fs::read_to_string(merged.join(format!("layer-{i}"))).unwrap(),
            i.to_string()
        );
        if i > 0 {
            let parent: usize = fs::read_to_string(merged.join(format!("parent-of-{i}")))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(parent, i - 1);
        }
    }
}

#[test]
fn more_layers_than_the_kernel_can_mount_is_refused() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let layers = (0..501)
        .map(|i| {
            layer(move |t| {
                t.file(&format!("f{i}"), b"x", 0o644).unwrap();
            })
        })
        .collect();
    ts.image("too-deep", layers);
    let err = ts
        .store
        .create_container("too-deep", &CreateOptions::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooManyLayers {
                count: 501,
                limit: 500
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("too many layers"));
}

#[test]
fn echo_1_is_two_bytes_and_virtual_adds_the_image() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            t.file("big", &[7u8; 10_000], 0o644).unwrap();
        })],
    );
    let (id, merged) = ts.container("img");
    fs::write(merged.join("test"), b"1\n").unwrap();
    let c = ts.store.find_container(&id).unwrap();
    let usage = ts.store.container_usage(&c).unwrap();
    assert_eq!(usage.size, 2);
    assert_eq!(usage.virtual_size, 10_002);
    // A hardlink is counted once.
    fs::hard_link(merged.join("test"), merged.join("test2")).unwrap();
    assert_eq!(ts.store.container_usage(&c).unwrap().size, 2);
}

#[test]
fn change_list_for_modify_add_delete() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            t.dir("etc", 0o755, 0, 0).unwrap();
            t.file("etc/keep", b"k", 0o644).unwrap();
            t.file("etc/modify", b"m", 0o644).unwrap();
            t.file("etc/delete", b"d", 0o644).unwrap();
            t.dir("gone", 0o755, 0, 0).unwrap();
            t.file("gone/inner", b"i", 0o644).unwrap();
        })],
    );
    let (id, m) = ts.container("img");
    fs::write(m.join("etc/modify"), b"changed").unwrap();
    fs::write(m.join("etc/new"), b"n").unwrap();
    fs::remove_file(m.join("etc/delete")).unwrap();
    fs::remove_dir_all(m.join("gone")).unwrap();
    fs::create_dir(m.join("fresh")).unwrap();
    assert_eq!(
        changes(&ts, &id),
        vec![
            ('C', "/etc".into()),
            ('D', "/etc/delete".into()),
            ('C', "/etc/modify".into()),
            ('A', "/etc/new".into()),
            ('A', "/fresh".into()),
            ('D', "/gone".into()),
        ]
    );
}

#[test]
fn delete_and_recreate_at_directory_depths_0_to_9() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            let mut p = String::new();
            for d in 0..10 {
                if d > 0 {
                    p.push_str(&format!("d{d}/"));
                    t.dir(p.trim_end_matches('/'), 0o755, 0, 0).unwrap();
                }
                t.file(&format!("{p}f"), format!("old {d}").as_bytes(), 0o644)
                    .unwrap();
            }
        })],
    );
    let (id, m) = ts.container("img");
    let mut p = m.clone();
    for d in 0..10 {
        if d > 0 {
            p = p.join(format!("d{d}"));
        }
        fs::remove_file(p.join("f")).unwrap();
        assert!(!p.join("f").exists());
        fs::write(p.join("f"), format!("new {d}")).unwrap();
    }
    let mut p = m.clone();
    for d in 0..10 {
        if d > 0 {
            p = p.join(format!("d{d}"));
        }
        assert_eq!(fs::read_to_string(p.join("f")).unwrap(), format!("new {d}"));
    }
    // Recreated files are changes of existing paths, never deletions.
    let list = changes(&ts, &id);
    assert!(list.iter().all(|(k, _)| *k == 'C'), "{list:?}");
    assert_eq!(list.iter().filter(|(_, p)| p.ends_with("/f")).count(), 10);
}

#[test]
fn hardlinks_renames_and_nested_chown_through_commit() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            t.dir("a", 0o755, 0, 0).unwrap();
            t.dir("a/b", 0o755, 0, 0).unwrap();
            t.dir("a/b/c", 0o755, 0, 0).unwrap();
            t.file("a/orig", b"shared", 0o644).unwrap();
            t.dir("x", 0o755, 0, 0).unwrap();
            t.hardlink("x/link", "a/orig").unwrap();
            t.file("a/b/c/deep", b"d", 0o644).unwrap();
        })],
    );
    let (id, m) = ts.container("img");
    // The image's cross-directory hardlink is one inode in the container.
    let (a, x) = (
        fs::metadata(m.join("a/orig")).unwrap(),
        fs::metadata(m.join("x/link")).unwrap(),
    );
    assert_eq!(a.ino(), x.ino());
    fs::rename(m.join("a/b/c/deep"), m.join("x/moved")).unwrap();
    fs::hard_link(m.join("x/moved"), m.join("a/again")).unwrap();
    for d in ["a", "a/b", "a/b/c"] {
        nix::unistd::chown(
            &m.join(d),
            Some(nix::unistd::Uid::from_raw(1000)),
            Some(nix::unistd::Gid::from_raw(1000)),
        )
        .unwrap();
    }
    let before = snapshot(&m);
    commit::commit(&ts.store, &id, "snap").unwrap();
    let (_, snap) = ts.container("snap");
    assert_eq!(snapshot(&snap), before);
    assert_eq!(
        fs::metadata(snap.join("x/moved")).unwrap().ino(),
        fs::metadata(snap.join("a/again")).unwrap().ino()
    );
    assert_eq!(fs::metadata(snap.join("a/b/c")).unwrap().uid(), 1000);
}

/// containerd's snapshot pattern: apply each step to the stack (a
/// container, committed into a new layer after every step) and to a plain
/// directory, then compare the trees, over many layers.
#[test]
fn stack_matches_a_flat_reference_over_many_layers() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let flat = ts.scratch("flat");
    ts.image(
        "step-0",
        vec![layer(|t| {
            t.dir("root", 0o755, 0, 0).unwrap();
        })],
    );
    fs::create_dir(flat.join("root")).unwrap();
    let steps = 24;
    for step in 1..=steps {
        let (id, m) = ts.container(&format!("step-{}", step - 1));
        for target in [&m, &flat] {
            mutate(target, step);
        }
        assert_eq!(
            snapshot(&m),
            snapshot(&flat),
            "after step {step} in the container"
        );
        commit::commit(&ts.store, &id, &format!("step-{step}")).unwrap();
        ts.store.remove_container(&id, true).unwrap();
    }
    let (_, last) = ts.container(&format!("step-{steps}"));
    assert_eq!(
        snapshot(&last),
        snapshot(&flat),
        "the {steps}-layer stack differs from the flat tree"
    );
    assert_eq!(
        ts.store
            .find_image(&format!("step-{steps}"))
            .unwrap()
            .layers
            .len(),
        steps + 1
    );
}

/// One step of changes: adds, rewrites, deletes (files and whole
/// directories), recreations, renames, links, mode and owner changes.
fn mutate(root: &Path, step: usize) {
    let r = root.join("root");
    fs::create_dir_all(r.join(format!("dir{}", step % 5))).unwrap();
    fs::write(
        r.join(format!("dir{}/file{step}", step % 5)),
        format!("step {step}"),
    )
    .unwrap();
    fs::write(r.join("counter"), step.to_string()).unwrap();
    if step.is_multiple_of(3) {
        let victim = r.join(format!("dir{}", (step + 1) % 5));
        if victim.exists() {
            fs::remove_dir_all(&victim).unwrap();
        }
    }
    if step.is_multiple_of(4) {
        let from = r.join(format!("dir{}/file{step}", step % 5));
        fs::rename(&from, r.join(format!("renamed{step}"))).unwrap();
        fs::hard_link(
            r.join(format!("renamed{step}")),
            r.join(format!("link{step}")),
        )
        .unwrap();
    }
    if step.is_multiple_of(5) {
        fs::set_permissions(r.join("counter"), fs::Permissions::from_mode(0o4750)).unwrap();
        std::os::unix::fs::symlink(format!("dir{}", step % 5), r.join(format!("sym{step}")))
            .unwrap();
    }
    if step.is_multiple_of(7) {
        nix::unistd::chown(&r, Some(nix::unistd::Uid::from_raw(step as u32)), None).unwrap();
        if r.join("counter").exists() {
            fs::remove_file(r.join("counter")).unwrap();
        }
    }
}

#[test]
fn mounts_are_reference_counted_and_rm_refuses_while_mounted() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            t.file("f", b"x", 0o644).unwrap();
        })],
    );
    let (id, merged) = ts.container("img");
    assert_eq!(ts.store.mount_container(&id).unwrap(), merged);
    ts.store.unmount_container(&id).unwrap();
    assert!(
        merged.join("f").exists(),
        "still mounted after one of two umounts"
    );
    let err = ts.store.remove_container(&id, false).unwrap_err();
    assert!(matches!(err, Error::InUse(_)), "{err}");
    ts.store.unmount_container(&id).unwrap();
    assert!(!merged.join("f").exists());
    ts.store.remove_container(&id, false).unwrap();
    assert!(!ts.store.container_dir(&id).exists());
    assert!(matches!(
        ts.store.find_container(&id),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn rm_force_unmounts_and_removes_the_writable_layer() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            t.file("f", b"x", 0o644).unwrap();
        })],
    );
    let (id, merged) = ts.container("img");
    fs::write(merged.join("new"), b"y").unwrap();
    let upper = ts.store.upper_dir(&id);
    assert!(upper.join("new").exists());
    ts.store.remove_container(&id, true).unwrap();
    assert!(!upper.exists());
    assert!(!strata_driver::mount::is_mountpoint(&merged));
    // The image is untouched.
    let (_, again) = ts.container("img");
    assert!(!again.join("new").exists());
}
