//! containerd's remote snapshotter protocol, as stargz and nydus speak
//! it, served by strata's own puller. When containerd's unpacker prepares
//! a layer with `containerd.io/snapshot.ref` (its chain ID) and the image
//! labels CRI, Docker's containerd image store and nerdctl add
//! (`containerd.io/snapshot/cri.image-ref`, `cri.layer-digest`,
//! `cri.manifest-digest`), strata fetches and unpacks the whole image
//! itself, every layer at once (the prefetch `cri.image-layers` asks
//! for), records each layer as the committed snapshot of its chain ID
//! and answers AlreadyExists: containerd then neither downloads nor
//! applies the layer. With containerd's socket (`--containerd`), each
//! blob is also written to containerd's content store on its way, as
//! Docker's image store needs (see content). Whatever strata cannot serve (no such labels, a
//! chain that does not match, a registry it cannot reach) falls back to
//! an ordinary Prepare, and containerd fetches the layer itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::content::{BlobTarget, ContentStore};
use super::cri::PullSecrets;
use crate::digest::Digest;
use crate::error::Result;
use crate::image::config;
use crate::pull::{PullOptions, RemoteImage};
use crate::registry::reference::Reference;
use crate::snapshots::TARGET_REF_LABEL;
use crate::store::Store;

pub const IMAGE_REF_LABEL: &str = "containerd.io/snapshot/cri.image-ref";
pub const LAYER_DIGEST_LABEL: &str = "containerd.io/snapshot/cri.layer-digest";
pub const MANIFEST_DIGEST_LABEL: &str = "containerd.io/snapshot/cri.manifest-digest";

/// A Prepare strata may serve itself.
#[derive(Debug)]
pub struct LayerRequest {
    /// The chain ID the snapshot is to be committed as.
    pub target: String,
    pub image_ref: String,
    pub layer: Digest,
    pub manifest: Option<Digest>,
}

impl LayerRequest {
    pub fn from_labels(labels: &HashMap<String, String>) -> Option<LayerRequest> {
        Some(LayerRequest {
            target: labels.get(TARGET_REF_LABEL)?.clone(),
            image_ref: labels.get(IMAGE_REF_LABEL)?.clone(),
            layer: Digest::parse(labels.get(LAYER_DIGEST_LABEL)?).ok()?,
            manifest: labels
                .get(MANIFEST_DIGEST_LABEL)
                .and_then(|d| Digest::parse(d).ok()),
        })
    }
}

/// What the remote path did, for the snapshotter's log and the tests.
#[derive(Debug, Default)]
pub struct RemoteCounters {
    /// Images fetched and unpacked by strata for containerd.
    pub images_fetched: AtomicU64,
    /// Prepares answered AlreadyExists from a strata-fetched snapshot.
    pub layers_served: AtomicU64,
    /// Prepares handed back to containerd to fetch itself.
    pub fallbacks: AtomicU64,
}

pub struct RemotePuller {
    opts: PullOptions,
    /// Where the fetched blobs are written too, if anywhere.
    content: Option<ContentStore>,
    /// Credentials kubelet gave the pulls under way (see cri).
    secrets: Option<Arc<PullSecrets>>,
    /// One fetch per image at a time; the Prepares of its other layers
    /// wait for it and then find their snapshots.
    fetching: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pub counters: RemoteCounters,
}

impl RemotePuller {
    pub fn new(
        opts: PullOptions,
        content: Option<ContentStore>,
        secrets: Option<Arc<PullSecrets>>,
    ) -> RemotePuller {
        RemotePuller {
            opts,
            content,
            secrets,
            fetching: Mutex::new(HashMap::new()),
            counters: RemoteCounters::default(),
        }
    }

    /// Serves `req` (a Prepare over `parent`, in containerd `namespace`):
    /// true when the snapshot `req.target` now exists (answer
    /// AlreadyExists), false when containerd should prepare and apply the
    /// layer itself.
    pub fn prepare(
        &self,
        store: &Store,
        req: &LayerRequest,
        parent: &str,
        namespace: &str,
    ) -> bool {
        let outcome = self.try_prepare(store, req, parent, namespace);
        self.forget_idle_gate(&req.image_ref);
        match outcome {
            Ok(true) => {
                self.counters.layers_served.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(false) => {
                self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(e) => {
                self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "strata snapshotter: containerd fetches layer {} of {} itself: {e}",
                    req.layer, req.image_ref
                );
                false
            }
        }
    }

    /// Drops the image's gate once no Prepare holds it, so a snapshotter
    /// that serves for months keeps no entry per image it ever pulled.
    fn forget_idle_gate(&self, image_ref: &str) {
        let mut gates = self.fetching.lock().expect("no panics under the lock");
        if gates
            .get(image_ref)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(image_ref);
        }
    }

    fn try_prepare(
        &self,
        store: &Store,
        req: &LayerRequest,
        parent: &str,
        namespace: &str,
    ) -> Result<bool> {
        if store.stat_snapshot(&req.target).is_ok() {
            self.backfill_content(store, req, namespace)?;
            return Ok(true);
        }
        let gate = self
            .fetching
            .lock()
            .expect("no panics under the lock")
            .entry(req.image_ref.clone())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().expect("no panics under the lock");
        if store.stat_snapshot(&req.target).is_ok() {
            // Fetched while we waited.
            self.backfill_content(store, req, namespace)?;
            return Ok(true);
        }
        let remote = RemoteImage::resolve(&pinned(req)?, &self.opts_for(req))?;
        let chains = remote.chain_ids()?;
        let Some(i) = remote
            .resolved
            .layers
            .iter()
            .position(|l| l.digest == req.layer)
        else {
            return Ok(false);
        };
        let expected_parent = if i == 0 {
            String::new()
        } else {
            chains[i - 1].to_string()
        };
        if chains[i].as_str() != req.target || parent != expected_parent {
            return Ok(false);
        }
        let started = Instant::now();
        let labels = BTreeMap::from([(IMAGE_REF_LABEL.to_string(), req.image_ref.clone())]);
        let targets = self.content_targets(&remote, namespace)?;
        remote.store_as_snapshots(
            store,
            &labels,
            &|i, blob| match (&self.content, targets.get(i)) {
                (Some(content), Some(target)) => content.tee(blob, target.clone()),
                _ => blob,
            },
        )?;
        self.counters.images_fetched.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "strata snapshotter: fetched {} ({} layers) for containerd in {:.2}s",
            req.image_ref,
            chains.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(store.stat_snapshot(&req.target).is_ok())
    }
}

impl RemotePuller {
    /// The pull options for `req`: the credentials of kubelet's PullImage
    /// of that image where the CRI proxy holds some, else strata's own.
    fn opts_for(&self, req: &LayerRequest) -> PullOptions {
        let mut opts = self.opts.clone();
        if let Some(creds) = self
            .secrets
            .as_ref()
            .and_then(|s| s.for_image(&req.image_ref))
        {
            opts.registry.credentials = Some(creds);
        }
        opts
    }

    /// The blob of a layer strata holds already (an earlier image's, or a
    /// fetch killed before its blobs reached containerd), written to
    /// containerd's content store if that lacks it: Docker would hide the
    /// image otherwise (see content). Only the blob is fetched.
    fn backfill_content(&self, store: &Store, req: &LayerRequest, namespace: &str) -> Result<()> {
        let Some(content) = &self.content else {
            return Ok(());
        };
        let remote = RemoteImage::resolve(&pinned(req)?, &self.opts_for(req))?;
        let targets = self.content_targets(&remote, namespace)?;
        let Some(i) = targets.iter().position(|t| t.digest == req.layer) else {
            return Ok(());
        };
        if content.has(&targets[i])? {
            return Ok(());
        }
        let blob = remote.layer_blob(store, i);
        content.copy_in(blob.as_ref(), &targets[i])?;
        blob.stored();
        Ok(())
    }

    /// What each layer's blob is committed as in containerd: the labels
    /// containerd's own pull gives it (its source, for cross-repository
    /// pushes; its diffID). None without a content store.
    fn content_targets(&self, remote: &RemoteImage, namespace: &str) -> Result<Vec<BlobTarget>> {
        if self.content.is_none() {
            return Ok(Vec::new());
        }
        let diff_ids = config::diff_ids(&remote.resolved.config)?;
        let source = format!(
            "containerd.io/distribution.source.{}",
            hostname(&remote.reference.registry)
        );
        Ok(remote
            .resolved
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(l, diff_id)| BlobTarget {
                namespace: namespace.to_string(),
                digest: l.digest.clone(),
                size: l.size,
                labels: HashMap::from([
                    (source.clone(), remote.reference.repository.clone()),
                    ("containerd.io/uncompressed".into(), diff_id.to_string()),
                ]),
            })
            .collect())
    }
}

/// `host[:port]` without the port, as containerd keys its
/// distribution-source labels.
fn hostname(registry: &str) -> &str {
    match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.split(':').next().unwrap_or(registry),
    }
}

/// The image by the manifest digest containerd resolved, where it says:
/// the same image, whatever the tag points at now.
fn pinned(req: &LayerRequest) -> Result<String> {
    let r = Reference::parse(&req.image_ref)?;
    Ok(match &req.manifest {
        Some(d) => format!("{}/{}@{d}", r.registry, r.repository),
        None => req.image_ref.clone(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn distribution_source_labels_name_the_host_without_its_port() {
        assert_eq!(super::hostname("127.0.0.1:5055"), "127.0.0.1");
        assert_eq!(super::hostname("docker.io"), "docker.io");
        assert_eq!(super::hostname("[::1]:5000"), "::1");
    }
}
