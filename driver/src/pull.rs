//! `strata image pull`: an image from a registry to a stored one, through
//! the same staging and publishing as `image import`. Each layer the store
//! lacks is streamed from the registry straight through its digest, the
//! inflater, its diffID and extraction (see registry::fetcher and
//! extract), several at once; layers whose chain is stored already are
//! not downloaded. The image appears only when every layer and the
//! config are verified and durable.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::Result;
use crate::image::platform::Platform;
use crate::image::{SourceImage, SourceLayer};
use crate::images::ImageRecord;
use crate::import::{store_source, ImportedLayer, Publish};
use crate::progress::Progress;
use crate::registry::fetcher::RemoteBlob;
use crate::registry::reference::Reference;
use crate::registry::resolver::{resolve, Resolved};
use crate::registry::{Registry, RegistryOptions};
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

    /// Fetches what the store lacks and stores the image under the
    /// reference's name.
    pub fn store(&self, store: &Store, progress: &dyn Progress) -> Result<PullReport> {
        let (attempts, backoff) = self.registry.blob_retries();
        let source = SourceImage {
            config: Some(self.resolved.config.clone()),
            layers: self
                .resolved
                .layers
                .iter()
                .map(|l| SourceLayer {
                    blob: Box::new(RemoteBlob {
                        registry: self.registry.clone(),
                        repository: self.reference.repository.clone(),
                        digest: l.digest.clone(),
                        size: l.size,
                        partial: store.downloads_dir().join(l.digest.hex()),
                        attempts,
                        backoff,
                    }),
                    digest: Some(l.digest.clone()),
                })
                .collect(),
            tags: Vec::new(),
        };
        let r = &self.reference;
        let how = Publish {
            names: vec![r.image_name()],
            repo_digests: vec![format!(
                "{}/{}@{}",
                r.registry, r.repository, self.resolved.manifest_digest
            )],
            jobs: self.jobs,
            progress,
        };
        let shown = r.to_string();
        let report = store_source(store, &source, Path::new(&shown), &how)?;
        Ok(PullReport {
            reference: shown,
            manifest_digest: self.resolved.manifest_digest.clone(),
            image: report.image,
            layers: report.layers,
        })
    }
}

/// Resolves and stores `reference` without progress output.
pub fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<PullReport> {
    RemoteImage::resolve(reference, opts)?.store(store, &crate::progress::Silent)
}
