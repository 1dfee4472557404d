//! `strata image import`: any supported source to a stored image.
//!
//! Every new layer is extracted into staging while its blob digest and
//! diffID are computed; only when all layers verified does the import take
//! the store lock and publish them, then the image. A mismatch anywhere
//! leaves the store as it was.

use std::fs::File;
use std::io::{self, IsTerminal};
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
use crate::store::{Store, SyncMode};

#[derive(Debug, Default)]
pub struct ImportOptions {
    pub name: Option<String>,
    /// Show a progress bar (only honoured on a terminal).
    pub progress: bool,
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
    // Layers found already stored are not extracted; if a concurrent
    // `image rm` frees one before this import takes the lock, the import
    // runs again (extracting it this time).
    let mut attempts = 0;
    let report = loop {
        attempts += 1;
        match import_source(store, &source, &path, opts) {
            Err(Error::Conflict(_)) if attempts < 3 => continue,
            other => break other,
        }
    };
    drop(unpacked);
    report
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
            blob: Blob::file(path),
            digest: None,
        }],
        tags: Vec::new(),
    }
}

struct Staged {
    dir: Option<StagingDir>,
    chain_id: Digest,
    diff_id: Digest,
    parent: Option<Digest>,
    size: u64,
}

impl Staged {
    /// Where this layer's contents are now: staging, or the store.
    fn diff_dir(&self, store: &Store) -> PathBuf {
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
    opts: &ImportOptions,
) -> Result<ImportReport> {
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
    let total: u64 = source
        .layers
        .iter()
        .filter_map(|l| l.blob.size().ok())
        .sum();
    let progress = Progress::new(opts.progress, total);

    let staged = stage_layers(store, source, expected_diff_ids.as_deref(), &progress, src)?;
    progress.finish();

    let diff_ids: Vec<Digest> = staged.iter().map(|s| s.diff_id.clone()).collect();
    let config_bytes = match &source.config {
        Some(c) => c.clone(),
        None => config::new_config(
            None,
            &diff_ids,
            &format!("strata image import {}", src.display()),
        ),
    };
    let id = Digest::of_bytes(&config_bytes);
    let mut names = Vec::new();
    if let Some(n) = &opts.name {
        names.push(normalize_name(n)?);
    } else {
        for t in &source.tags {
            names.push(normalize_name(t)?);
        }
    }

    // Durable before visible: one syncfs covers every staged file.
    fsutil::syncfs(&store.tmp_dir())?;
    let _lock = store.lock()?;
    // From the first publish to the image record: if this process dies in
    // between, the next command finds this abandoned and rolls back.
    let txn = Txn::begin(&store.tmp_dir(), "import")?;
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
    let image = ImageRecord {
        id,
        names,
        layers: layers.iter().map(|l| l.chain_id.clone()).collect(),
        diff_ids,
        created: now_secs(),
    };
    store.put_image(&image, &config_bytes)?;
    txn.done();
    let image = store.find_image(image.id.as_str())?;
    Ok(ImportReport { image, layers })
}

/// Every layer of `source`, bottom first: shared where its chain (from
/// the config's diffIDs) is stored already, else extracted into staging,
/// side by side, verified, and settled on the layers below it.
fn stage_layers(
    store: &Store,
    source: &SourceImage,
    expected_diff_ids: Option<&[Digest]>,
    progress: &Progress,
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
        extract_verified(layer, expected, staged, sync, progress, (&what, src))
    };
    let mut extracted = side_by_side(todo.len(), &extract)?.into_iter();
    let mut dirs = dirs.into_iter();

    let mut staged: Vec<Staged> = Vec::new();
    let mut parent: Option<Digest> = None;
    for (i, layer) in source.layers.iter().enumerate() {
        if let Some(rec) = &stored[i] {
            progress.advance(layer.blob.size().unwrap_or(0));
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
    progress: &Progress,
    (what, src): (&str, &Path),
) -> Result<Extracted> {
    let ex = extract_layer(
        &layer.blob,
        staged,
        &[],
        sync,
        &|n| progress.advance(n),
        (what, src),
    )?;
    let mismatch = |kind: &str, expected: &Digest, actual: &Digest| Error::DigestMismatch {
        what: format!("{kind} of {what}"),
        expected: expected.to_string(),
        actual: actual.to_string(),
    };
    if let Some(expected) = expected.filter(|e| **e != ex.diff_id) {
        return Err(mismatch("diffID", expected, &ex.diff_id));
    }
    if let Some(expected) = layer.digest.as_ref().filter(|e| **e != ex.blob_digest) {
        return Err(mismatch("blob", expected, &ex.blob_digest));
    }
    Ok(ex)
}

/// Runs `job(0..n)` on as many threads as there are cores (each
/// extraction also has its reading thread), in order of index. Returns
/// the results in index order, or the first error by index; after an
/// error no new job starts.
fn side_by_side<T: Send>(n: usize, job: &(dyn Fn(usize) -> Result<T> + Sync)) -> Result<Vec<T>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism()
        .map_or(1, |c| c.get())
        .min(n);
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

/// A byte-count progress bar on stderr, only when it is a terminal.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(wanted: bool, total: u64) -> Progress {
        if !wanted || !io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} importing [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        Progress(Some(bar))
    }
    fn advance(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
