//! A proxy snapshotter that does nothing: every call answered from a map
//! in memory, no filesystem touched. What containerd's snapshot protocol
//! itself costs through a proxy plugin (the gRPC hop and containerd's
//! metadata), the floor strata's snapshotter is benched against.
//!
//!     null-snapshotter SOCKET

// The trait fixes tonic::Status, a large type, as every call's error.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::tonic::transport::Server;
use containerd_snapshots::tonic::{self, Status};
use containerd_snapshots::{Info, Kind, Snapshotter, Usage};

#[derive(Clone)]
struct Entry {
    kind: u8,
    parent: String,
    labels: HashMap<String, String>,
}

const ACTIVE: u8 = 0;
const VIEW: u8 = 1;
const COMMITTED: u8 = 2;

#[derive(Default)]
struct NullSnapshotter {
    snapshots: Mutex<HashMap<String, Entry>>,
}

impl NullSnapshotter {
    fn info(name: &str, e: &Entry) -> Info {
        Info {
            kind: match e.kind {
                ACTIVE => Kind::Active,
                VIEW => Kind::View,
                _ => Kind::Committed,
            },
            name: name.to_string(),
            parent: e.parent.clone(),
            labels: e.labels.clone(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn get(&self, key: &str) -> Result<Entry, Status> {
        self.snapshots
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("snapshot {key} does not exist")))
    }

    /// The mounts a real snapshotter would describe; nothing is made.
    fn mounts_of(key: &str) -> Vec<Mount> {
        vec![Mount {
            r#type: "bind".into(),
            source: format!("/nonexistent/null-snapshotter/{key}"),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        }]
    }

    fn create(
        &self,
        kind: u8,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Status> {
        let mut map = self.snapshots.lock().unwrap();
        if map.contains_key(&key) {
            return Err(Status::already_exists(format!("snapshot {key} exists")));
        }
        if !parent.is_empty() && map.get(&parent).map(|p| p.kind) != Some(COMMITTED) {
            return Err(Status::not_found(format!(
                "parent {parent} is not committed"
            )));
        }
        let mounts = Self::mounts_of(&key);
        map.insert(
            key,
            Entry {
                kind,
                parent,
                labels,
            },
        );
        Ok(mounts)
    }
}

#[tonic::async_trait]
impl Snapshotter for NullSnapshotter {
    type Error = Status;

    async fn stat(&self, key: String) -> Result<Info, Status> {
        Ok(Self::info(&key, &self.get(&key)?))
    }

    async fn update(&self, info: Info, _paths: Option<Vec<String>>) -> Result<Info, Status> {
        let mut map = self.snapshots.lock().unwrap();
        let e = map
            .get_mut(&info.name)
            .ok_or_else(|| Status::not_found(info.name.clone()))?;
        e.labels = info.labels;
        Ok(Self::info(&info.name, e))
    }

    async fn usage(&self, key: String) -> Result<Usage, Status> {
        self.get(&key).map(|_| Usage::default())
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>, Status> {
        self.get(&key).map(|_| Self::mounts_of(&key))
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Status> {
        self.create(ACTIVE, key, parent, labels)
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Status> {
        self.create(VIEW, key, parent, labels)
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<(), Status> {
        let mut map = self.snapshots.lock().unwrap();
        let mut e = match map.get(&key) {
            Some(e) if e.kind == ACTIVE => e.clone(),
            _ => return Err(Status::not_found(format!("no active snapshot {key}"))),
        };
        if map.contains_key(&name) {
            return Err(Status::already_exists(name));
        }
        map.remove(&key);
        e.kind = COMMITTED;
        e.labels = labels;
        map.insert(name, e);
        Ok(())
    }

    async fn remove(&self, key: String) -> Result<(), Status> {
        let mut map = self.snapshots.lock().unwrap();
        if map.values().any(|e| e.parent == key) {
            return Err(Status::failed_precondition(format!("{key} has children")));
        }
        map.remove(&key)
            .map(drop)
            .ok_or_else(|| Status::not_found(key))
    }

    type InfoStream = futures::stream::Iter<std::vec::IntoIter<Result<Info, Status>>>;

    async fn list(&self, _sn: String, _filters: Vec<String>) -> Result<Self::InfoStream, Status> {
        let map = self.snapshots.lock().unwrap();
        let all: Vec<_> = map.iter().map(|(k, e)| Ok(Self::info(k, e))).collect();
        Ok(futures::stream::iter(all))
    }
}

fn main() -> anyhow::Result<()> {
    let socket = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: null-snapshotter SOCKET"))?;
    let _ = std::fs::remove_file(&socket);
    // One thread, as strata's snapshotter answers metadata calls.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&socket)?;
        Server::builder()
            .add_service(containerd_snapshots::server(Arc::new(
                NullSnapshotter::default(),
            )))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await?;
        Ok(())
    })
}
