//! Snapshot calls through containerd, timed call by call from a gRPC
//! client of containerd's own snapshots service: strata's proxy
//! snapshotter against a null proxy (the `null-snapshotter` bin, every
//! call answered from memory: the floor of the protocol's hop and
//! containerd's metadata) and against containerd's built-in overlayfs.
//! `ctr` would time its own process start; this times the calls.

use std::path::Path;
use std::process::{Child, Command};

use anyhow::{Context, Result};
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    UsageRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::Request;
use strata_driver::testing::containerd::{Containerd, SNAPSHOTTER};

use crate::fixtures::{Env, LoopFs};
use crate::harness::{compare, BenchResult, Timed};

/// Calls per sample.
const CALLS: usize = 100;
/// The bar (issue 27): each call within 1.1x the null proxy's.
const NULL_BAR: f64 = 1.1;
const NULL: &str = "null";
/// strata makes committed layers durable 200 ms after a Commit, off the
/// call (snapshotter FLUSH_DELAY); a sample waits this long after the
/// commits before it, so that it does not pay for their flush.
const FLUSH_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);
const BUILTIN: &str = "overlayfs";

/// A running null-snapshotter; killed on drop.
struct NullProxy(Child);

impl Drop for NullProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client of containerd's snapshots service in one namespace.
struct Client {
    rt: tokio::runtime::Runtime,
    inner: SnapshotsClient<Channel>,
    namespace: String,
}

impl Client {
    fn connect(c: &Containerd) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = rt.block_on(containerd_client::connect(c.address()))?;
        Ok(Client {
            rt,
            inner: SnapshotsClient::new(channel),
            namespace: c.namespace.clone(),
        })
    }

    /// What ctr labels its snapshots with: containerd's collector keeps
    /// them although no image or lease refers to them.
    fn gc_root() -> std::collections::HashMap<String, String> {
        [("containerd.io/gc.root".to_string(), "bench".to_string())].into()
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("containerd-namespace", self.namespace.parse().unwrap());
        r
    }

    fn prepare(&mut self, sn: &str, key: &str, parent: &str) -> Result<()> {
        let r = self.req(PrepareSnapshotRequest {
            snapshotter: sn.into(),
            key: key.into(),
            parent: parent.into(),
            labels: Self::gc_root(),
        });
        self.rt.block_on(self.inner.prepare(r))?;
        Ok(())
    }

    fn commit(&mut self, sn: &str, name: &str, key: &str) -> Result<()> {
        let r = self.req(CommitSnapshotRequest {
            snapshotter: sn.into(),
            name: name.into(),
            key: key.into(),
            labels: Self::gc_root(),
        });
        self.rt.block_on(self.inner.commit(r))?;
        Ok(())
    }

    fn remove(&mut self, sn: &str, key: &str) -> Result<()> {
        let r = self.req(RemoveSnapshotRequest {
            snapshotter: sn.into(),
            key: key.into(),
        });
        self.rt.block_on(self.inner.remove(r))?;
        Ok(())
    }

    fn stat(&mut self, sn: &str, key: &str) -> Result<()> {
        let r = self.req(StatSnapshotRequest {
            snapshotter: sn.into(),
            key: key.into(),
        });
        self.rt.block_on(self.inner.stat(r))?;
        Ok(())
    }

    fn usage(&mut self, sn: &str, key: &str) -> Result<()> {
        let r = self.req(UsageRequest {
            snapshotter: sn.into(),
            key: key.into(),
        });
        self.rt.block_on(self.inner.usage(r))?;
        Ok(())
    }
}

pub fn all(env: &Env) -> Result<Vec<BenchResult>> {
    let dir = env.dir("snapshot-rpc");
    let fs = LoopFs::ext4(&dir.join("fs.img"), &dir.join("fs"), 2 << 30)?;
    let out = on(env, &fs.mount);
    drop(fs);
    out
}

fn on(env: &Env, fs: &Path) -> Result<Vec<BenchResult>> {
    let null_bin = env.strata.with_file_name("null-snapshotter");
    let socket = fs.join("null.sock");
    let null = NullProxy(
        Command::new(&null_bin)
            .arg(&socket)
            .spawn()
            .with_context(|| format!("starting {}", null_bin.display()))?,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the null proxy did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let c = Containerd::start_with_proxies(&fs.join("rpc"), &env.strata, &[(NULL, &socket)]);
    let client = std::cell::RefCell::new(Client::connect(&c)?);
    for sn in [SNAPSHOTTER, NULL, BUILTIN] {
        let mut cl = client.borrow_mut();
        cl.prepare(sn, "base", "")
            .and_then(|_| cl.commit(sn, "base-committed", "base"))
            .and_then(|_| cl.prepare(sn, "active", "base-committed"))
            .with_context(|| format!("{sn}: the snapshots the calls work on"))?;
    }
    let mut out = Vec::new();
    for op in ["stat", "usage", "prepare", "commit", "remove"] {
        let timed = |sn: &'static str| calls(&client, sn, op);
        let name = format!("snapshot {op} x{CALLS} through containerd");
        out.push(compare(
            &name,
            env.reps,
            timed(SNAPSHOTTER),
            "null proxy snapshotter",
            timed(NULL),
            Some(NULL_BAR),
        )?);
        out.push(compare(
            &format!("{name} vs overlayfs"),
            env.reps,
            timed(SNAPSHOTTER),
            "containerd's overlayfs (built in)",
            timed(BUILTIN),
            None,
        )?);
    }
    drop(c);
    drop(null);
    Ok(out)
}

/// CALLS calls of `op` on `sn`; what they need made (or cleared) untimed.
fn calls<'a>(
    client: &'a std::cell::RefCell<Client>,
    sn: &'static str,
    op: &'static str,
) -> Timed<'a> {
    let key = move |i: usize| format!("{op}-{i}");
    Timed::new(
        move || {
            let mut c = client.borrow_mut();
            for i in 0..CALLS {
                // Whatever the last sample left, gone; then what this
                // one works on.
                let _ = c.remove(sn, &key(i));
                let _ = c.remove(sn, &format!("{}-c", key(i)));
                match op {
                    "commit" => c.prepare(sn, &key(i), "base-committed")?,
                    "remove" => {
                        c.prepare(sn, &format!("{}-a", key(i)), "base-committed")?;
                        c.commit(sn, &key(i), &format!("{}-a", key(i)))?;
                    }
                    _ => {}
                }
            }
            if matches!(op, "commit" | "remove") {
                std::thread::sleep(FLUSH_SETTLE);
            }
            Ok(())
        },
        move || {
            let mut c = client.borrow_mut();
            for i in 0..CALLS {
                let _: () = match op {
                    "stat" => c
                        .stat(sn, "base-committed")
                        .with_context(|| format!("{sn} stat"))?,
                    "usage" => c.usage(sn, "active")?,
                    "prepare" => c.prepare(sn, &key(i), "base-committed")?,
                    "commit" => c.commit(sn, &format!("{}-c", key(i)), &key(i))?,
                    _ => c.remove(sn, &key(i))?,
                };
            }
            Ok(())
        },
    )
}
