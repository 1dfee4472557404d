//! Crash states of containerd snapshots that a kill -9 only sometimes
//! hits, made by hand: recovery must turn each into a consistent store.

use std::collections::BTreeMap;
use std::fs;

use strata_driver::digest::Digest;
use strata_driver::layers::LayerRecord;
use strata_driver::snapshots::SnapshotState;
use strata_driver::testing::{privileged, TestStore};

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
fn an_active_snapshot_whose_writable_layer_vanished_is_dropped_by_repair() {
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
    fs::remove_dir_all(s.container_dir(&active_container(&ts, "ns/2/ctr"))).unwrap();

    let found = s.check(false).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].what.contains("ns/2/ctr") && found[0].repairable);
    let repaired = s.check(true).unwrap();
    assert!(repaired.iter().all(|p| p.repaired), "{repaired:?}");
    assert!(s.stat_snapshot("ns/2/ctr").is_err());
    assert!(
        s.stat_snapshot("base").is_ok(),
        "the committed parent stays"
    );
    assert!(s.check(false).unwrap().is_empty());
}
