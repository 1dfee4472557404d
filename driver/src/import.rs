//! `strata image import`: any supported source to a stored image.
//!
//! Every new layer is extracted into staging while its blob digest and
//! diffID are computed; only when all layers verified does the import take
//! the store lock and publish them, then the image. A mismatch anywhere
//! leaves the store as it was.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::apply::settle_implied_dirs;
use crate::archive::compression::Compression;
use crate::archive::{apply_layer, compression, write_layer_tar};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::extract::{extract_layer, Extracted};
use crate::fsutil::{self, StagingDir, Txn};
use crate::image::files::{Blob, ImageFiles};
use crate::image::{self, config, SourceImage, SourceKind};
use crate::images::{normalize_name, ImageRecord};
use crate::layers::now_secs;
use crate::progress::{Progress, Silent, TotalBar};
use crate::store::{Store, SyncMode};

#[derive(Debug, Default)]
pub struct ImportOptions {
    pub name: Option<String>,
    /// Show a progress bar (only honoured on a terminal).
    pub progress: bool,
}

/// How a parsed source becomes a stored image: the front doors' common
/// ground (import, pull).
pub(crate) struct Publish<'a> {
    /// Names the image gets (normalised already).
    pub names: Vec<String>,
    /// `host/repo@sha256:...` it was pulled by, if it was.
    pub repo_digests: Vec<String>,
    /// Layers read and extracted at once.
    pub jobs: usize,
    pub progress: &'a dyn Progress,
    /// Publish the layers without flushing them first, for the caller to
    /// record them unflushed and the snapshotter's flusher to make them
    /// durable soon after, many at once (containerd's snapshots: see
    /// snapshots::flush). Images are always flushed before they appear.
    pub defer_flush: bool,
}

#[derive(Debug, Serialize)]
pub struct ImportedLayer {
    pub chain_id: Digest,
    pub diff_id: Digest,
    pub size: u64,
    /// Already in the store (same chain); not stored again.
    pub shared: bool,
}

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub image: ImageRecord,
    pub layers: Vec<ImportedLayer>,
}

pub fn import(store: &Store, src: &str, opts: &ImportOptions) -> Result<ImportReport> {
    let (path, tag) = image::split_tag(src);
    let meta = std::fs::metadata(&path).map_err(|e| image::invalid(&path, e.to_string()))?;
    // What had to be unpacked or made in staging; it goes when we return.
    let mut unpacked: Option<StagingDir> = None;
    let (kind, files) = if meta.is_dir() {
        (image::detect_dir(&path), ImageFiles::dir(path.clone()))
    } else {
        open_archive(store, &path, &mut unpacked)?
    };
    let source = match kind {
        SourceKind::OciLayout => image::oci::parse(&files, tag.as_deref(), &path)?,
        SourceKind::DockerArchive => image::docker::parse(&files, tag.as_deref(), &path)?,
        SourceKind::PlainTar => plain(path.clone()),
        SourceKind::PlainDir => {
            // A directory becomes a one-layer image: tar it into staging.
            let staged = StagingDir::create(&store.tmp_dir(), "plain")?;
            let tar_path = staged.path().join("layer.tar");
            let out = File::create(&tar_path).ctx(|| format!("creating {}", tar_path.display()))?;
            write_layer_tar(&path, io::BufWriter::new(out))?;
            unpacked = Some(staged);
            plain(tar_path)
        }
    };
    // --name replaces the tags the source carries.
    let names = match &opts.name {
        Some(n) => vec![normalize_name(n)?],
        None => source
            .tags
            .iter()
            .map(|t| normalize_name(t))
            .collect::<Result<_>>()?,
    };
    let total: u64 = source.layers.iter().filter_map(|l| l.blob.size()).sum();
    let bar = TotalBar::new(total);
    let silent = Silent;
    let how = Publish {
        names,
        repo_digests: Vec::new(),
        jobs: cores(),
        progress: if opts.progress { &bar } else { &silent },
        defer_flush: false,
    };
    let report = store_source(store, &source, &path, &how);
    drop(unpacked);
    report
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |c| c.get())
}

/// Stores `source`. Layers found already stored are not extracted; if a
/// concurrent `image rm` frees one before this takes the lock, it runs
/// again (extracting it this time).
pub(crate) fn store_source(
    store: &Store,
    source: &SourceImage,
    src: &Path,
    how: &Publish,
) -> Result<ImportReport> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match import_source(store, source, src, how) {
            Err(Error::Conflict(_)) if attempts < 3 => continue,
            other => return other,
        }
    }
}

/// An archive file: an uncompressed one is read in place (its members are
/// byte ranges of it); a compressed one (`docker save | gzip`) cannot be,
/// and is unpacked into staging (`unpacked`) first.
fn open_archive(
    store: &Store,
    path: &Path,
    unpacked: &mut Option<StagingDir>,
) -> Result<(SourceKind, ImageFiles)> {
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let (compression, _) =
        compression::decompress(f).ctx(|| format!("reading {}", path.display()))?;
    if compression == Compression::None {
        if let Some(files) = ImageFiles::index_archive(path)? {
            let kind = image::kind_from_names(|name| files.has(name), SourceKind::PlainTar);
            return Ok((kind, files));
        }
    }
    let kind = image::detect_tar(path)?;
    if kind == SourceKind::PlainTar {
        return Ok((kind, ImageFiles::dir(path.to_path_buf())));
    }
    let staged = StagingDir::create(&store.tmp_dir(), "unpack")?;
    let dir = staged.path().join("content");
    std::fs::create_dir(&dir).ctx(|| format!("creating {}", dir.display()))?;
    let f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let (_, reader) = compression::decompress(f).ctx(|| format!("reading {}", path.display()))?;
    // Scratch, read once and deleted: never synced file by file.
    apply_layer(reader, &dir, &[], SyncMode::Filesystem, None)
        .map_err(|e| image::invalid(path, e.to_string()))?;
    *unpacked = Some(staged);
    Ok((kind, ImageFiles::dir(dir)))
}

fn plain(path: PathBuf) -> SourceImage {
    SourceImage {
        config: None,
        layers: vec![image::SourceLayer {
            blob: Box::new(Blob::file(path)),
            digest: None,
        }],
        tags: Vec::new(),
    }
}

pub(crate) struct Staged {
    dir: Option<StagingDir>,
    pub chain_id: Digest,
    pub diff_id: Digest,
    parent: Option<Digest>,
    size: u64,
}

impl Staged {
    /// Where this layer's contents are now: staging, or the store.
    pub fn diff_dir(&self, store: &Store) -> PathBuf {
        match &self.dir {
            Some(d) => d.path().join("diff"),
            None => store.layer_diff(&self.chain_id),
        }
    }
}

fn import_source(
    store: &Store,
    source: &SourceImage,
    src: &Path,
    how: &Publish,
) -> Result<ImportReport> {
    let staged = stage_image(store, source, src, how)?;
    let id = Digest::of_bytes(&staged.config);
    let _lock = store.lock()?;
    // From the first publish to the image record: if this process dies in
    // between, the next command finds this abandoned and rolls back.
    let txn = Txn::begin(&store.tmp_dir(), "import")?;
    let layers = publish_layers(store, staged.layers)?;
    let image = ImageRecord {
        id,
        names: how.names.clone(),
        layers: layers.iter().map(|l| l.chain_id.clone()).collect(),
        diff_ids: staged.diff_ids,
        created: now_secs(),
        repo_digests: how.repo_digests.clone(),
    };
    // A layer it shares may be one the snapshotter fetched and has not
    // flushed yet: an image never stands on data a crash can tear.
    store.sync_unflushed_layers(&image.layers)?;
    store.put_image(&image, &staged.config)?;
    txn.done();
    for layer in &source.layers {
        layer.blob.stored();
    }
    let image = store.find_image(image.id.as_str())?;
    Ok(ImportReport { image, layers })
}

/// An image's layers extracted, verified and durable in staging (or found
/// stored), with its config: ready to publish under the store lock.
pub(crate) struct StagedImage {
    pub layers: Vec<Staged>,
    pub diff_ids: Vec<Digest>,
    pub config: Vec<u8>,
}

/// Stages every layer of `source` (see stage_layers) and flushes them.
pub(crate) fn stage_image(
    store: &Store,
    source: &SourceImage,
    src: &Path,
    how: &Publish,
) -> Result<StagedImage> {
    let expected_diff_ids = match &source.config {
        Some(c) => {
            let ids = config::diff_ids(c).map_err(|e| image::invalid(src, e.to_string()))?;
            if ids.len() != source.layers.len() {
                return Err(image::invalid(
                    src,
                    format!(
                        "config lists {} diff_ids for {} layers",
                        ids.len(),
                        source.layers.len()
                    ),
                ));
            }
            Some(ids)
        }
        None => None,
    };
    let layers = stage_layers(store, source, expected_diff_ids.as_deref(), how, src)?;
    how.progress.finish();
    let diff_ids: Vec<Digest> = layers.iter().map(|s| s.diff_id.clone()).collect();
    let config = match &source.config {
        Some(c) => c.clone(),
        None => config::new_config(
            None,
            &diff_ids,
            &format!("strata image import {}", src.display()),
        ),
    };
    // Durable before visible: one syncfs covers every staged file.
    if !how.defer_flush {
        fsutil::syncfs(&store.tmp_dir())?;
    }
    Ok(StagedImage {
        layers,
        diff_ids,
        config,
    })
}

/// Publishes the staged layers, bottom first; the caller holds the store
/// lock inside a transaction. A layer found stored when staging that is
/// gone now (a concurrent `image rm`) is a Conflict: the caller tries
/// again.
pub(crate) fn publish_layers(store: &Store, staged: Vec<Staged>) -> Result<Vec<ImportedLayer>> {
    for s in staged.iter().filter(|s| s.dir.is_none()) {
        if store.layer(&s.chain_id)?.is_none() {
            return Err(Error::Conflict(format!("layer {}", s.chain_id)));
        }
    }
    let mut layers = Vec::new();
    for s in staged {
        let shared = match s.dir {
            Some(dir) => {
                store
                    .publish_layer(dir, &s.chain_id, &s.diff_id, s.parent.as_ref(), s.size)?
                    .1
            }
            None => true,
        };
        layers.push(ImportedLayer {
            chain_id: s.chain_id,
            diff_id: s.diff_id,
            size: s.size,
            shared,
        });
    }
    Ok(layers)
}

/// Every layer of `source`, bottom first: shared where its chain (from
/// the config's diffIDs) is stored already, else extracted into staging,
/// side by side, verified, and settled on the layers below it.
fn stage_layers(
    store: &Store,
    source: &SourceImage,
    expected_diff_ids: Option<&[Digest]>,
    how: &Publish,
    src: &Path,
) -> Result<Vec<Staged>> {
    // A layer whose chain (from the config's diffIDs) is stored already
    // is shared, not extracted again.
    let mut stored = Vec::new();
    let mut chain: Option<Digest> = None;
    for diff_id in expected_diff_ids.into_iter().flatten() {
        let c = Digest::chain(chain.as_ref(), diff_id);
        stored.push(store.layer(&c)?);
        chain = Some(c);
    }
    stored.resize_with(source.layers.len(), || None);
    let todo: Vec<usize> = (0..source.layers.len())
        .filter(|i| stored[*i].is_none())
        .collect();
    let sync = store.options().sync;
    let dirs = todo
        .iter()
        .map(|_| store.stage_layer())
        .collect::<Result<Vec<_>>>()?;
    let extract = |k: usize| {
        let i = todo[k];
        let layer = &source.layers[i];
        let what = format!(
            "layer {} of {} ({})",
            i + 1,
            source.layers.len(),
            layer.blob
        );
        let expected = expected_diff_ids.map(|ids| &ids[i]);
        let staged = dirs[k].path();
        how.progress.started(i, layer.blob.size());
        let ex = extract_verified(
            layer,
            expected,
            staged,
            sync,
            &|n| how.progress.advanced(i, n),
            (&what, src),
        )?;
        how.progress.done(i);
        Ok(ex)
    };
    for i in (0..source.layers.len()).filter(|i| stored[*i].is_some()) {
        how.progress.exists(i, source.layers[i].blob.size());
    }
    let mut extracted = side_by_side(todo.len(), how.jobs, &extract)?.into_iter();
    let mut dirs = dirs.into_iter();

    let mut staged: Vec<Staged> = Vec::new();
    let mut parent: Option<Digest> = None;
    for stored in &stored {
        if let Some(rec) = stored {
            parent = Some(rec.chain_id.clone());
            staged.push(Staged {
                dir: None,
                chain_id: rec.chain_id.clone(),
                diff_id: rec.diff_id.clone(),
                parent: rec.parent.clone(),
                size: rec.size,
            });
            continue;
        }
        let (dir, ex) = (dirs.next(), extracted.next());
        let (dir, ex) = (dir.expect("one per layer"), ex.expect("one per layer"));
        // Now that the layers below exist, directories this one only
        // implied take their metadata from them.
        let lowers: Vec<PathBuf> = staged.iter().rev().map(|s| s.diff_dir(store)).collect();
        settle_implied_dirs(&dir.path().join("diff"), &ex.applied.implied_dirs, &lowers)?;
        let chain = Digest::chain(parent.as_ref(), &ex.diff_id);
        staged.push(Staged {
            dir: Some(dir),
            chain_id: chain.clone(),
            diff_id: ex.diff_id,
            parent: parent.clone(),
            size: ex.applied.size,
        });
        parent = Some(chain);
    }
    Ok(staged)
}

/// Extracts one layer (without its lowers: see settle_implied_dirs) and
/// checks its diffID against the config's and its blob against the
/// manifest's digest.
fn extract_verified(
    layer: &image::SourceLayer,
    expected: Option<&Digest>,
    staged: &Path,
    sync: SyncMode,
    read: &(dyn Fn(u64) + Sync),
    (what, src): (&str, &Path),
) -> Result<Extracted> {
    let ex = extract_layer(layer.blob.as_ref(), staged, &[], sync, read, (what, src)).inspect_err(
        |e| {
            // A registry that went away leaves good bytes behind, worth
            // resuming from; anything else means they are not.
            if !matches!(e, Error::Registry { .. }) {
                layer.blob.discard();
            }
        },
    )?;
    let mismatch = |kind: &str, expected: &Digest, actual: &Digest| Error::DigestMismatch {
        what: format!("{kind} of {what}"),
        expected: expected.to_string(),
        actual: actual.to_string(),
    };
    // The blob first: wrong bytes explain a wrong diffID too.
    if let Some(expected) = layer.digest.as_ref().filter(|e| **e != ex.blob_digest) {
        layer.blob.discard();
        return Err(mismatch("blob", expected, &ex.blob_digest));
    }
    if let Some(expected) = expected.filter(|e| **e != ex.diff_id) {
        return Err(mismatch("diffID", expected, &ex.diff_id));
    }
    Ok(ex)
}

/// Runs `job(0..n)` on `workers` threads (an import's are the cores; each
/// extraction also has its reading thread), in order of index. Returns
/// the results in index order, or the first error by index; after an
/// error no new job starts.
fn side_by_side<T: Send>(
    n: usize,
    workers: usize,
    job: &(dyn Fn(usize) -> Result<T> + Sync),
) -> Result<Vec<T>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let workers = workers.clamp(1, n.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<std::sync::Mutex<Option<Result<T>>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= n || failed.load(Ordering::SeqCst) {
                    return;
                }
                let r = job(k);
                failed.fetch_or(r.is_err(), Ordering::SeqCst);
                *slots[k].lock().expect("no job panics") = Some(r);
            });
        }
    });
    // Jobs start in index order, so any never started come after the
    // first error.
    slots
        .into_iter()
        .map_while(|m| m.into_inner().expect("no job panics"))
        .collect()
}
