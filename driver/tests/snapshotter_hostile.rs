//! Hostile clients of `strata snapshotter`, over its real gRPC socket:
//! every bad request gets the gRPC code containerd's errdefs expects and a
//! message naming the problem, and nothing is written outside the store.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use containerd_snapshots::api::snapshots::v1::snapshots_client::SnapshotsClient;
use containerd_snapshots::api::snapshots::v1::*;
use containerd_snapshots::tonic::transport::{Channel, Endpoint};
use containerd_snapshots::tonic::{Code, Status};
use strata_driver::testing::containerd::SnapshotterProcess;
use strata_driver::testing::{privileged, snapshot, TestStore};

fn snapshotter(root: &Path, socket: &Path) -> SnapshotterProcess {
    SnapshotterProcess::start(Path::new(env!("CARGO_BIN_EXE_strata")), root, socket, None)
}

async fn client(socket: &Path) -> SnapshotsClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            tokio::net::UnixStream::connect(socket.clone())
        }))
        .await
        .unwrap();
    SnapshotsClient::new(channel)
}

fn prepare(key: &str, parent: &str) -> PrepareSnapshotRequest {
    PrepareSnapshotRequest {
        snapshotter: "strata".into(),
        key: key.into(),
        parent: parent.into(),
        labels: HashMap::new(),
    }
}

fn commit(name: &str, key: &str) -> CommitSnapshotRequest {
    CommitSnapshotRequest {
        snapshotter: "strata".into(),
        name: name.into(),
        key: key.into(),
        labels: HashMap::new(),
    }
}

fn expect_code<T: std::fmt::Debug>(what: &str, r: Result<T, Status>, code: Code, words: &str) {
    match r {
        Err(s) if s.code() == code && s.message().contains(words) => {}
        other => panic!("{what}: expected {code:?} naming {words:?}, got {other:?}"),
    }
}

/// Everything under `dir` except the store: must not change.
fn outside_store(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("store") && !p.starts_with("/store"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_the_right_grpc_errors() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("hostile");
    std::fs::write(dir.join("canary"), b"outside the store").unwrap();
    let socket = dir.join("strata.sock");
    let _server = snapshotter(&dir.join("store"), &socket);
    let before = outside_store(&dir);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let mut c = client(&socket).await;

    // Path-like keys are names: they succeed, and stay inside the store.
    for key in ["..", "../../canary", "/etc/passwd", "a/../../b"] {
        let r = c.prepare(prepare(key, "")).await;
        assert!(r.is_ok(), "{key}: {r:?}");
    }
    let base = c.prepare(prepare("base", "")).await.unwrap();
    let upper = &base.get_ref().mounts[0].source;
    std::fs::write(Path::new(upper).join("f"), b"x").unwrap();
    c.commit(commit("layer", "base")).await.unwrap();
    c.prepare(prepare("child", "layer")).await.unwrap();

    let nul = c.prepare(prepare("a\0b", "")).await;
    expect_code("NUL key", nul, Code::InvalidArgument, "NUL");
    let long = c.prepare(prepare(&"k".repeat(64 << 10), "")).await;
    expect_code("64 KiB key", long, Code::InvalidArgument, "bytes");
    let mut big_label = prepare("labelled", "");
    big_label.labels.insert("l".into(), "v".repeat(64 << 10));
    expect_code(
        "64 KiB label",
        c.prepare(big_label).await,
        Code::InvalidArgument,
        "label",
    );
    let orphan = c.prepare(prepare("orphan", "no-such-parent")).await;
    expect_code("missing parent", orphan, Code::NotFound, "no-such-parent");
    let dup = c.prepare(prepare("child", "layer")).await;
    expect_code("duplicate key", dup, Code::AlreadyExists, "child");
    let not_committed = c.prepare(prepare("x", "child")).await;
    expect_code(
        "active parent",
        not_committed,
        Code::InvalidArgument,
        "not a committed",
    );

    c.view(ViewSnapshotRequest {
        snapshotter: "strata".into(),
        key: "view".into(),
        parent: "layer".into(),
        labels: HashMap::new(),
    })
    .await
    .unwrap();
    let r = c.commit(commit("from-view", "view")).await;
    expect_code(
        "commit of a view",
        r,
        Code::FailedPrecondition,
        "not active",
    );
    let r = c.commit(commit("layer", "child")).await;
    expect_code("commit onto a taken name", r, Code::AlreadyExists, "layer");
    let r = c
        .remove(RemoveSnapshotRequest {
            snapshotter: "strata".into(),
            key: "layer".into(),
        })
        .await;
    expect_code(
        "remove with children",
        r,
        Code::FailedPrecondition,
        "remove",
    );
    let r = c
        .mounts(MountsRequest {
            snapshotter: "strata".into(),
            key: "layer".into(),
        })
        .await;
    expect_code(
        "mounts of a committed",
        r,
        Code::FailedPrecondition,
        "committed",
    );
    let r = c
        .stat(StatSnapshotRequest {
            snapshotter: "strata".into(),
            key: "nope".into(),
        })
        .await;
    expect_code("stat of a missing key", r, Code::NotFound, "nope");
    let mut list = c
        .list(ListSnapshotsRequest {
            snapshotter: "strata".into(),
            filters: vec!["kind=active".into()],
        })
        .await;
    if let Ok(stream) = &mut list {
        let first = stream.get_mut().message().await;
        list = first.map(|_| panic!("bad filter accepted"));
    }
    expect_code("bad filter", list, Code::InvalidArgument, "kind=active");

    // Two Prepares of one key racing: exactly one wins.
    let (mut c1, mut c2) = (client(&socket).await, client(&socket).await);
    let (a, b) = tokio::join!(
        c1.prepare(prepare("race", "layer")),
        c2.prepare(prepare("race", "layer")),
    );
    let codes: Vec<Code> = [a.map(|_| ()), b.map(|_| ())]
        .into_iter()
        .map(|r| r.err().map_or(Code::Ok, |s| s.code()))
        .collect();
    assert!(
        codes.contains(&Code::Ok) && codes.contains(&Code::AlreadyExists),
        "{codes:?}"
    );

    assert_eq!(
        outside_store(&dir),
        before,
        "something was written outside the store"
    );
}

#[test]
fn a_live_socket_or_store_is_refused_and_a_stale_one_replaced() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("sockets");
    let socket = dir.join("s.sock");
    let first = snapshotter(&dir.join("store"), &socket);
    for (store, sock) in [
        ("store", "s.sock"),
        ("store", "other.sock"),
        ("other", "s.sock"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--root")
            .arg(dir.join(store))
            .args(["snapshotter", "--address"])
            .arg(dir.join(sock))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && (err.contains("another") || err.contains("served")),
            "{store} on {sock}: {err}"
        );
    }
    // kill -9 leaves the socket file behind; the next start replaces it.
    first.kill();
    assert!(socket.exists());
    let _second = snapshotter(&dir.join("store"), &socket);
    assert!(UnixStream::connect(&socket).is_ok(), "served again");
    std::fs::write(dir.join("plain"), b"").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(dir.join("third"))
        .args(["snapshotter", "--address"])
        .arg(dir.join("plain"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
}
