//! `strata image pull`: an image from a registry to a stored one, through
//! the same staging and publishing as `image import`. Each layer the store
//! lacks is streamed from the registry straight through its digest, the
//! inflater, its diffID and extraction (see registry::fetcher and
//! extract), several at once; layers whose chain is stored already are
//! not downloaded. The image appears only when every layer and the
//! config are verified and durable.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::blobs::KnownBlob;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fsutil::Txn;
use crate::image::config;
use crate::image::platform::Platform;
use crate::image::{LayerSource, SourceImage, SourceLayer};
use crate::images::ImageRecord;
use crate::import::{
    publish_layers, stage_image, store_source, ImportedLayer, Publish, StagedImage,
};
use crate::progress::{Progress, Silent};
use crate::registry::fetcher::RemoteBlob;
use crate::registry::reference::Reference;
use crate::registry::resolver::{resolve, Resolved};
use crate::registry::{Registry, RegistryOptions};
use crate::sizes;
use crate::snapshots::FetchedLayer;
use crate::store::Store;

/// docker's default `max-concurrent-downloads`.
pub const DEFAULT_JOBS: usize = 3;

#[derive(Clone, Debug)]
pub struct PullOptions {
    pub registry: RegistryOptions,
    pub platform: Platform,
    /// Layers downloaded (and extracted) at once.
    pub jobs: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            registry: RegistryOptions::default(),
            platform: Platform::host(),
            jobs: DEFAULT_JOBS,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PullReport {
    pub reference: String,
    pub manifest_digest: Digest,
    pub image: ImageRecord,
    pub layers: Vec<ImportedLayer>,
}

/// An image resolved on its registry and not yet fetched: what a front
/// door shows progress for.
pub struct RemoteImage {
    pub reference: Reference,
    pub resolved: Resolved,
    registry: Arc<Registry>,
    jobs: usize,
}

impl RemoteImage {
    pub fn resolve(reference: &str, opts: &PullOptions) -> Result<RemoteImage> {
        let reference = Reference::parse(reference)?;
        let registry = Arc::new(Registry::connect(reference.api_host(), &opts.registry)?);
        let resolved = resolve(&registry, &reference, &opts.platform)?;
        Ok(RemoteImage {
            reference,
            resolved,
            registry,
            jobs: opts.jobs.max(1),
        })
    }

    /// The layers' blob digests, bottom first.
    pub fn layer_digests(&self) -> Vec<String> {
        self.resolved
            .layers
            .iter()
            .map(|l| l.digest.to_string())
            .collect()
    }

    /// The chain IDs of the layers, bottom first, from the config's
    /// diffIDs: what containerd names their snapshots.
    pub fn chain_ids(&self) -> Result<Vec<Digest>> {
        let mut chain: Option<Digest> = None;
        Ok(config::diff_ids(&self.resolved.config)?
            .iter()
            .map(|d| {
                let c = Digest::chain(chain.as_ref(), d);
                chain = Some(c.clone());
                c
            })
            .collect())
    }

    /// Fetches what the store lacks and stores the image under the
    /// reference's name.
    pub fn store(&self, store: &Store, progress: &dyn Progress) -> Result<PullReport> {
        let source = self.source(store);
        let r = &self.reference;
        let how = Publish {
            names: vec![r.image_name()],
            repo_digests: vec![format!(
                "{}/{}@{}",
                r.registry, r.repository, self.resolved.manifest_digest
            )],
            jobs: self.jobs,
            progress,
            defer_flush: false,
        };
        let shown = r.to_string();
        let report = store_source(store, &source, Path::new(&shown), &how)?;
        let chains: Vec<Digest> = report.layers.iter().map(|l| l.chain_id.clone()).collect();
        self.remember(store, &chains)?;
        store.keep_image_manifest(&report.image.id, &self.resolved.manifest)?;
        Ok(PullReport {
            reference: shown,
            manifest_digest: self.resolved.manifest_digest.clone(),
            image: report.image,
            layers: report.layers,
        })
    }

    /// Fetches what the store lacks and records every layer as the
    /// committed snapshot containerd names by its chain ID, with `labels`:
    /// the remote snapshotter's answer (see snapshotter::remote). `wrap`
    /// gets each layer's blob (and its index) on its way to extraction,
    /// to copy it elsewhere. Returns the snapshot names, bottom first.
    pub fn store_as_snapshots(
        &self,
        store: &Store,
        labels: &BTreeMap<String, String>,
        wrap: &dyn Fn(usize, Box<dyn LayerSource>) -> Box<dyn LayerSource>,
    ) -> Result<Vec<String>> {
        let mut source = self.source(store);
        source.layers = std::mem::take(&mut source.layers)
            .into_iter()
            .enumerate()
            .map(|(i, l)| SourceLayer {
                blob: wrap(i, l.blob),
                digest: l.digest,
            })
            .collect();
        let how = Publish {
            names: Vec::new(),
            repo_digests: Vec::new(),
            jobs: self.jobs,
            progress: &Silent,
            defer_flush: true,
        };
        let shown = self.reference.to_string();
        let mut attempts = 0;
        let names = loop {
            attempts += 1;
            let staged = stage_image(store, &source, Path::new(&shown), &how)?;
            match publish_as_snapshots(store, staged, labels) {
                Err(Error::Conflict(_)) if attempts < 3 => continue,
                other => break other?,
            }
        };
        for layer in &source.layers {
            layer.blob.stored();
        }
        self.remember(store, &self.chain_ids()?)?;
        Ok(names)
    }

    /// Each layer is known as its blob in this repository (see blobs).
    fn remember(&self, store: &Store, chains: &[Digest]) -> Result<()> {
        let repository = format!("{}/{}", self.reference.registry, self.reference.repository);
        for (chain, l) in chains.iter().zip(&self.resolved.layers) {
            let blob = KnownBlob {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                repository: repository.clone(),
            };
            store.remember_blobs(chain, &[blob])?;
        }
        Ok(())
    }

    /// Layer `i`'s blob, streamed from the registry (resumably, through
    /// the store's downloads directory).
    pub fn layer_blob(&self, store: &Store, i: usize) -> Box<dyn LayerSource> {
        let (attempts, backoff) = self.registry.blob_retries();
        let l = &self.resolved.layers[i];
        Box::new(RemoteBlob {
            registry: self.registry.clone(),
            repository: self.reference.repository.clone(),
            digest: l.digest.clone(),
            size: l.size,
            partial: store.downloads_dir().join(l.digest.hex()),
            attempts,
            backoff,
        })
    }

    /// The image as a source whose layers stream from the registry.
    fn source(&self, store: &Store) -> SourceImage {
        SourceImage {
            config: Some(self.resolved.config.clone()),
            layers: (0..self.resolved.layers.len())
                .map(|i| SourceLayer {
                    blob: self.layer_blob(store, i),
                    digest: Some(self.resolved.layers[i].digest.clone()),
                })
                .collect(),
            tags: Vec::new(),
        }
    }
}

/// Publishes `staged`'s layers and records each as the committed
/// snapshot of its chain ID, in one transaction. The layers it extracted
/// are not flushed yet: their snapshots say so, as a Commit's do, until
/// the snapshotter's flusher has run (see snapshots::flush).
fn publish_as_snapshots(
    store: &Store,
    staged: StagedImage,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    // Measured before the lock: containerd's Usage of a committed
    // snapshot reports its inodes.
    let inodes = staged
        .layers
        .iter()
        .map(|s| sizes::dir_usage(&s.diff_dir(store)).map(|u| u.inodes))
        .collect::<Result<Vec<_>>>()?;
    let boot = crate::snapshots::boot_id()?;
    let _lock = store.lock()?;
    let txn = Txn::begin(&store.tmp_dir(), "snapshot-fetch")?;
    let layers = publish_layers(store, staged.layers)?;
    let fetched: Vec<FetchedLayer> = layers
        .into_iter()
        .zip(inodes)
        .map(|(l, inodes)| FetchedLayer {
            unflushed_boot: (!l.shared).then(|| boot.clone()),
            chain_id: l.chain_id,
            inodes,
        })
        .collect();
    let names = store.record_fetched_snapshots(&fetched, labels)?;
    txn.done();
    Ok(names)
}

/// Resolves and stores `reference` without progress output.
pub fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<PullReport> {
    RemoteImage::resolve(reference, opts)?.store(store, &crate::progress::Silent)
}
