//! Crash states of containerd snapshots that a kill -9 only sometimes
//! hits, made by hand: recovery must turn each into a consistent store.

use std::collections::BTreeMap;
use std::fs;

use strata_driver::digest::Digest;
use strata_driver::layers::LayerRecord;
use strata_driver::snapshots::SnapshotState;
use strata_driver::testing::{edit_snapshot_db, privileged, TestStore};
use strata_driver::Store;

fn active_container(ts: &TestStore, key: &str) -> String {
    match &ts.store.snapshot_db().unwrap().require(key).unwrap().state {
        SnapshotState::Active { container } => container.clone(),
        other => panic!("{key} is {other:?}"),
    }
}

#[test]
fn a_commit_cut_short_after_its_rename_is_rolled_back() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let s = &ts.store;
    s.create_snapshot(false, "ns/1/extract", "", BTreeMap::new())
        .unwrap();
    let c = active_container(&ts, "ns/1/extract");
    fs::write(s.upper_dir(&c).join("payload"), b"extracted").unwrap();

    // What Commit does before it records anything: the layer's record,
    // then the upper renamed into it; then the process dies.
    let chain = Digest::of_bytes(b"a commit that never finished");
    let dir = s.layer_dir(&chain);
    fs::create_dir(&dir).unwrap();
    let rec = LayerRecord {
        chain_id: chain.clone(),
        diff_id: chain.clone(),
        parent: None,
        size: 9,
        link: "zzzzzz".into(),
        created: 0,
        from_container: Some(c.clone()),
    };
    fs::write(dir.join("layer.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
    fs::rename(s.upper_dir(&c), dir.join("diff")).unwrap();
    fs::write(s.tmp_dir().join("txn-snapshot-commit-dead"), b"").unwrap();

    let fixed = s.recover_if_needed().unwrap();
    assert!(fixed.iter().all(|p| p.repaired), "{fixed:?}");
    assert_eq!(
        fs::read(s.upper_dir(&c).join("payload")).unwrap(),
        b"extracted",
        "the diff went back to the writable layer"
    );
    assert!(!dir.exists(), "the half-made layer is gone");
    assert_eq!(active_container(&ts, "ns/1/extract"), c);
    assert!(s.check(false).unwrap().is_empty());
    // And the commit can now be done for real.
    s.commit_snapshot("sha256:layer", "ns/1/extract", BTreeMap::new())
        .unwrap();
    assert_eq!(s.layers().unwrap().len(), 1);
}

#[test]
fn an_active_snapshot_whose_writable_layer_vanished_is_made_again_empty_by_repair() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let s = &ts.store;
    s.create_snapshot(false, "ns/1/base", "", BTreeMap::new())
        .unwrap();
    s.commit_snapshot("base", "ns/1/base", BTreeMap::new())
        .unwrap();
    s.create_snapshot(false, "ns/2/ctr", "base", BTreeMap::new())
        .unwrap();
    // A power loss can take the unsynced writable layer with it.
    let container = active_container(&ts, "ns/2/ctr");
    fs::remove_dir_all(s.container_dir(&container)).unwrap();

    let found = s.check(false).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].what.contains("ns/2/ctr") && found[0].repairable);
    assert!(
        s.recover_if_needed().unwrap().is_empty(),
        "no CLI command looks"
    );
    // The snapshotter's start, which containerd's next Mounts waits for.
    let repaired = s.recover_for_snapshotter().unwrap();
    assert!(
        !repaired.is_empty() && repaired.iter().all(|p| p.repaired),
        "{repaired:?}"
    );
    assert!(s.recover_for_snapshotter().unwrap().is_empty());
    assert_eq!(active_container(&ts, "ns/2/ctr"), container);
    assert_eq!(fs::read_dir(s.upper_dir(&container)).unwrap().count(), 0);
    let c = s.find_container(&container).unwrap();
    assert_eq!(c.snapshot.as_deref(), Some("ns/2/ctr"));
    assert_eq!(c.layers.len(), 1, "over its parent's layer");
    assert!(s.check(false).unwrap().is_empty());
}

/// The record a Prepare wrote, lost (never synced) while the data in the
/// writable layer was: rebuilt from the snapshot, the data kept.
#[test]
fn a_writable_layer_that_lost_its_record_gets_it_back_from_its_snapshot() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let s = &ts.store;
    s.create_snapshot(false, "ns/1/ctr", "", BTreeMap::new())
        .unwrap();
    let container = active_container(&ts, "ns/1/ctr");
    fs::write(s.upper_dir(&container).join("kept"), b"data").unwrap();
    fs::write(s.container_dir(&container).join("container.json"), b"").unwrap();

    let found = s.check(false).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].what.contains("lost its record"), "{found:?}");
    let repaired = s.recover_for_snapshotter().unwrap();
    assert!(
        !repaired.is_empty() && repaired.iter().all(|p| p.repaired),
        "{repaired:?}"
    );
    assert_eq!(
        s.find_container(&container).unwrap().snapshot.as_deref(),
        Some("ns/1/ctr")
    );
    assert_eq!(
        fs::read(s.upper_dir(&container).join("kept")).unwrap(),
        b"data"
    );
    assert!(s.check(false).unwrap().is_empty());
}

#[test]
fn a_committed_snapshot_layer_that_lost_its_record_is_rebuilt() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let s = &ts.store;
    for (key, name, parent) in [("k1", "one", ""), ("k2", "two", "one")] {
        s.create_snapshot(false, key, parent, BTreeMap::new())
            .unwrap();
        let c = active_container(&ts, key);
        fs::write(s.upper_dir(&c).join(name), name.as_bytes()).unwrap();
        s.commit_snapshot(name, key, BTreeMap::new()).unwrap();
    }
    let layer = |name: &str| match &s.snapshot_db().unwrap().require(name).unwrap().state {
        SnapshotState::Committed { layer, .. } => layer.clone(),
        other => panic!("{other:?}"),
    };
    let (one, two) = (layer("one"), layer("two"));
    let before = s.require_layer(&two).unwrap();
    fs::remove_file(s.layer_dir(&two).join("layer.json")).unwrap();

    let found = s.check(false).unwrap();
    assert!(
        found
            .iter()
            .any(|p| p.what.contains("lost its metadata") && p.repairable),
        "{found:?}"
    );
    assert!(s.check(true).unwrap().iter().all(|p| p.repaired));
    let rebuilt = s.require_layer(&two).unwrap();
    assert_eq!(rebuilt.parent, Some(one), "the parent snapshot's layer");
    assert_eq!(rebuilt.size, before.size);
    assert_eq!(rebuilt.link, before.link, "the short link is kept");
    assert!(s.check(false).unwrap().is_empty());
    // And a child still mounts through it.
    let mounts = s
        .create_snapshot(false, "k3", "two", BTreeMap::new())
        .unwrap();
    assert!(mounts[0].options.iter().any(|o| o.starts_with("lowerdir=")));
}

fn unflushed(ts: &TestStore, key: &str) -> Option<String> {
    ts.store
        .snapshot_db()
        .unwrap()
        .require(key)
        .unwrap()
        .unflushed_boot
        .clone()
}

#[test]
fn a_commit_is_durable_once_flushed_and_not_a_problem_before() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let s = &ts.store;
    s.create_snapshot(false, "k", "", BTreeMap::new()).unwrap();
    s.commit_snapshot("layer", "k", BTreeMap::new()).unwrap();
    let boot = strata_driver::snapshots::boot_id().unwrap();
    assert_eq!(unflushed(&ts, "layer"), Some(boot), "marked until flushed");
    assert!(
        s.check(false).unwrap().is_empty(),
        "pending in this boot is fine"
    );
    assert_eq!(s.flush_snapshots().unwrap(), 1);
    assert_eq!(unflushed(&ts, "layer"), None);
    assert_eq!(s.flush_snapshots().unwrap(), 0, "nothing left to flush");
}

#[test]
fn snapshots_unflushed_in_an_earlier_boot_are_dropped_with_their_descendants() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let s = &ts.store;
    s.create_snapshot(false, "k1", "", BTreeMap::new()).unwrap();
    s.commit_snapshot("durable", "k1", BTreeMap::new()).unwrap();
    s.flush_snapshots().unwrap();
    s.create_snapshot(false, "k2", "durable", BTreeMap::new())
        .unwrap();
    s.commit_snapshot("torn", "k2", BTreeMap::new()).unwrap();
    s.create_snapshot(false, "ctr", "torn", BTreeMap::new())
        .unwrap();
    s.create_snapshot(true, "view", "torn", BTreeMap::new())
        .unwrap();
    // The machine went down before the flush: rewrite the mark as if
    // written in an earlier boot.
    edit_snapshot_db(s, |db| {
        db.snapshots.get_mut("torn").unwrap().unflushed_boot = Some("an-earlier-boot".into())
    });

    // Any command's start (the snapshotter's too) sees it, though no
    // operation was interrupted; here it is looked at before repairing.
    let found = s.check(false).unwrap();
    assert!(
        found.iter().any(|p| p.what.contains("\"torn\"")
            && p.what.contains("\"ctr\"")
            && p.what.contains("\"view\"")),
        "{found:?}"
    );
    let recovered = s.recover_if_needed().unwrap();
    assert!(
        !recovered.is_empty() && recovered.iter().all(|p| p.repaired),
        "{recovered:?}"
    );
    let left: Vec<String> = s
        .list_snapshots(&[])
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(left, vec!["durable".to_string()]);
    assert_eq!(s.layers().unwrap().len(), 1, "the torn layer is gone");
    assert!(
        s.containers().unwrap().is_empty(),
        "so is ctr's writable layer"
    );
    assert!(s.check(false).unwrap().is_empty());
}

/// A store written before the slots kept its snapshot metadata in one
/// `metadata.json`: it is read as it is, and the first change moves it
/// into the slots and removes it.
#[test]
fn metadata_of_a_store_made_before_the_slots_is_read_and_moved_into_them() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let s = &ts.store;
    s.create_snapshot(false, "k1", "", BTreeMap::new()).unwrap();
    s.commit_snapshot("old", "k1", BTreeMap::new()).unwrap();
    let db = s.snapshot_db().unwrap();
    let dir = s.snapshots_dir();
    for slot in ["metadata.0", "metadata.1", "metadata.journal"] {
        let _ = fs::remove_file(dir.join(slot));
    }
    let legacy = dir.join("metadata.json");
    fs::write(&legacy, serde_json::to_vec_pretty(&*db).unwrap()).unwrap();

    let reopened = Store::open(s.root()).unwrap();
    let info = reopened.stat_snapshot("old").unwrap();
    assert_eq!(info.name, "old");
    reopened
        .create_snapshot(false, "k2", "old", BTreeMap::new())
        .unwrap();
    assert!(!legacy.exists(), "the legacy file outlived the move");
    assert!(dir.join("metadata.0").is_file());
    let again = Store::open(s.root()).unwrap();
    let keys: Vec<String> = again
        .snapshot_db()
        .unwrap()
        .snapshots
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["k2", "old"]);
    assert!(again.check(false).unwrap().is_empty());
}
