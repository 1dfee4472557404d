//! containerd's content store, as its client: where the snapshotter
//! writes the compressed blob of each layer it fetches for containerd,
//! as it streams past the extraction. CRI needs no blobs once the
//! snapshots exist, but Docker's containerd image store does: it lists,
//! saves and pushes only images whose every blob containerd holds
//! (moby 26 daemon/containerd/image_manifest.go, CheckContentAvailable,
//! called from image_list.go's imageSummary), so without them a `docker
//! pull` served by strata would leave an image `docker images` hides.

// A Write stream ends in tonic::Status, a large type, as service.rs's do.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    AbortRequest, InfoRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::transport::{Channel, Endpoint};
use containerd_client::tonic::{Code, Request, Status};
use tokio::runtime::Handle;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::LayerSource;

/// Bytes per Write message: containerd answers each one.
const MESSAGE: usize = 1 << 20;
/// Messages queued ahead of the gRPC stream.
const QUEUED: usize = 4;

/// containerd's content service on its socket, reached from blocking
/// threads through the snapshotter's runtime.
#[derive(Clone)]
pub struct ContentStore {
    client: ContentClient<Channel>,
    runtime: Handle,
}

/// What a blob is committed as.
#[derive(Clone, Debug)]
pub struct BlobTarget {
    /// containerd namespace (Docker's is `moby`).
    pub namespace: String,
    pub digest: Digest,
    pub size: u64,
    /// Written with the commit, as containerd's own fetch would
    /// (`containerd.io/distribution.source.HOST`, `containerd.io/uncompressed`).
    pub labels: HashMap<String, String>,
}

impl ContentStore {
    /// A client of containerd at `address`, connected on first use, from
    /// inside the runtime that will carry its calls.
    pub fn connect_lazy(address: &Path) -> Result<ContentStore> {
        let path = address.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:50051")
            .map_err(|e| Error::Invalid(format!("containerd endpoint: {e}")))?
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                tokio::net::UnixStream::connect(path.clone())
            }));
        Ok(ContentStore {
            client: ContentClient::new(channel),
            runtime: Handle::current(),
        })
    }

    /// `inner`, whose bytes are also written to containerd as `target`
    /// while it is read.
    pub fn tee(&self, inner: Box<dyn LayerSource>, target: BlobTarget) -> Box<dyn LayerSource> {
        Box::new(TeeSource {
            inner,
            content: self.clone(),
            target,
        })
    }

    /// Whether containerd holds `target`'s blob already.
    pub fn has(&self, target: &BlobTarget) -> Result<bool> {
        let mut client = self.client.clone();
        let mut req = Request::new(InfoRequest {
            digest: target.digest.to_string(),
        });
        let ns = target
            .namespace
            .parse()
            .map_err(|_| Error::Invalid(format!("containerd namespace {:?}", target.namespace)))?;
        req.metadata_mut().insert("containerd-namespace", ns);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(client.info(req).await.map(drop));
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(true),
            Ok(Err(s)) if s.code() == Code::NotFound => Ok(false),
            Ok(Err(s)) => Err(Error::Io {
                context: format!("asking containerd for blob {}", target.digest),
                source: io::Error::other(s.message().to_string()),
            }),
            Err(_) => Err(Error::Io {
                context: format!("asking containerd for blob {}", target.digest),
                source: io::Error::other("the content client stopped"),
            }),
        }
    }

    /// `blob`, read to its end, written to containerd as `target`: a
    /// layer strata holds already but containerd's content store lacks.
    pub fn copy_in(&self, blob: &dyn LayerSource, target: &BlobTarget) -> Result<()> {
        let mut reader = TeeReader {
            inner: blob.open().map_err(|e| Error::Io {
                context: format!("fetching blob {}", target.digest),
                source: e,
            })?,
            writer: Some(self.writer(target)),
        };
        io::copy(&mut reader, &mut io::sink()).map_err(|e| Error::Io {
            context: format!("copying blob {} into containerd", target.digest),
            source: e,
        })?;
        Ok(())
    }

    /// Starts the Write stream of `target` under a ref of its own: a
    /// concurrent fetch of the same blob by containerd holds its own ref.
    fn writer(&self, target: &BlobTarget) -> BlobWriter {
        let reference = format!(
            "strata-{}-{}",
            target.digest.hex(),
            crate::fsutil::random_hex(4)
        );
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUED);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let mut client = self.client.clone();
        let namespace = target.namespace.clone();
        self.runtime.spawn(async move {
            let _ = done_tx.send(write_stream(&mut client, &namespace, rx).await);
        });
        BlobWriter {
            tx: Some(tx),
            done,
            outcome: None,
            buf: Vec::with_capacity(MESSAGE),
            offset: 0,
            reference,
            target: target.clone(),
            content: self.clone(),
        }
    }
}

/// One Write call: every queued message out, every answer in, until
/// containerd answers the commit.
async fn write_stream(
    client: &mut ContentClient<Channel>,
    namespace: &str,
    rx: tokio::sync::mpsc::Receiver<WriteContentRequest>,
) -> std::result::Result<(), Status> {
    let mut req = Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let ns = namespace
        .parse()
        .map_err(|_| Status::invalid_argument(format!("namespace {namespace:?}")))?;
    req.metadata_mut().insert("containerd-namespace", ns);
    let mut answers = client.write(req).await?.into_inner();
    while let Some(answer) = answers.message().await? {
        if answer.action == WriteAction::Commit as i32 {
            return Ok(());
        }
    }
    Err(Status::aborted(
        "containerd ended the write before the commit",
    ))
}

/// The blob's bytes on their way to containerd, in MESSAGE-sized writes.
struct BlobWriter {
    tx: Option<tokio::sync::mpsc::Sender<WriteContentRequest>>,
    done: std::sync::mpsc::Receiver<std::result::Result<(), Status>>,
    /// How the stream ended, once it has.
    outcome: Option<std::result::Result<(), Status>>,
    buf: Vec<u8>,
    offset: u64,
    reference: String,
    target: BlobTarget,
    content: ContentStore,
}

impl BlobWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(MESSAGE - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == MESSAGE {
                self.send(WriteAction::Write)?;
            }
        }
        Ok(())
    }

    /// Sends what is buffered; after the stream ended, only says how.
    fn send(&mut self, action: WriteAction) -> io::Result<()> {
        if self.outcome.is_none() {
            let data = std::mem::replace(&mut self.buf, Vec::with_capacity(MESSAGE));
            let commit = action == WriteAction::Commit;
            let req = WriteContentRequest {
                action: action as i32,
                r#ref: self.reference.clone(),
                total: self.target.size as i64,
                expected: self.target.digest.to_string(),
                offset: self.offset as i64,
                labels: if commit {
                    self.target.labels.clone()
                } else {
                    HashMap::new()
                },
                data,
            };
            self.offset += req.data.len() as u64;
            let tx = self.tx.as_ref().expect("sending before the commit");
            if tx.blocking_send(req).is_err() || commit {
                // The stream ended early (an error, or AlreadyExists), or
                // this was its last message.
                self.tx = None;
                self.outcome = Some(
                    self.done
                        .recv()
                        .unwrap_or_else(|_| Err(Status::aborted("the content writer stopped"))),
                );
            }
        }
        self.buf.clear();
        match &self.outcome {
            // The blob is there already (containerd's own, or another
            // fetch's): nothing more to write.
            Some(Err(s)) if s.code() == Code::AlreadyExists => Ok(()),
            Some(Err(s)) => Err(io::Error::other(format!(
                "writing blob {} to containerd: {}",
                self.target.digest,
                s.message()
            ))),
            _ => Ok(()),
        }
    }

    fn commit(&mut self) -> io::Result<()> {
        self.send(WriteAction::Commit)
    }
}

impl Drop for BlobWriter {
    /// A blob not read to its end leaves no ingest behind in containerd.
    fn drop(&mut self) {
        if self.tx.take().is_some() {
            let mut client = self.content.client.clone();
            let (namespace, reference) = (self.target.namespace.clone(), self.reference.clone());
            self.content.runtime.spawn(async move {
                let mut req = Request::new(AbortRequest { r#ref: reference });
                if let Ok(ns) = namespace.parse() {
                    req.metadata_mut().insert("containerd-namespace", ns);
                }
                let _ = client.abort(req).await;
            });
        }
    }
}

/// A layer's blob whose reader also writes it to containerd, committing
/// it there when read to its end (containerd checks the digest again).
struct TeeSource {
    inner: Box<dyn LayerSource>,
    content: ContentStore,
    target: BlobTarget,
}

impl std::fmt::Display for TeeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::fmt::Debug for TeeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TeeSource({:?} -> containerd)", self.inner)
    }
}

impl LayerSource for TeeSource {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(TeeReader {
            inner: self.inner.open()?,
            writer: Some(self.content.writer(&self.target)),
        }))
    }
    fn size(&self) -> Option<u64> {
        self.inner.size()
    }
    fn stored(&self) {
        self.inner.stored()
    }
    fn discard(&self) {
        self.inner.discard()
    }
}

struct TeeReader<'a> {
    inner: Box<dyn Read + 'a>,
    /// None once committed.
    writer: Option<BlobWriter>,
}

impl Read for TeeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = &mut self.writer {
            if n > 0 {
                w.write(&buf[..n])?;
            } else {
                w.commit()?;
                self.writer = None;
            }
        }
        Ok(n)
    }
}
