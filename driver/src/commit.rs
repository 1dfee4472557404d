//! `strata commit`: a container's writable layer becomes a new read-only
//! layer on top of its image (overlay whiteouts turn back into OCI `.wh.`
//! entries on the way), and NAME names image + that layer.

use std::fs::File;
use std::io::{BufReader, BufWriter};

use crate::archive::apply_layer;
use crate::archive::write::write_upper_tar;
use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{self, StagingDir, Txn};
use crate::image::config;
use crate::images::{normalize_name, ImageRecord};
use crate::layers::now_secs;
use crate::store::Store;

pub fn commit(store: &Store, container: &str, name: &str) -> Result<ImageRecord> {
    let name = normalize_name(name)?;
    let c = store.find_container(container)?;
    c.refuse_if_snapshot("commit")?;
    let image = c.image.as_ref().ok_or_else(|| {
        Error::Invalid(format!("container {} has no image to commit onto", c.name))
    })?;
    let base = store.find_image(image.as_str())?;
    let base_config = store.image_config(&base.id)?;

    // The layer tar is the canonical form: its digest is the diffID, and
    // the stored layer is applied from it exactly as an import would be.
    let work = StagingDir::create(&store.tmp_dir(), "commit")?;
    let tar_path = work.path().join("layer.tar");
    let out = File::create(&tar_path).ctx(|| format!("creating {}", tar_path.display()))?;
    let lowers = store.lowers_of(&c.layers);
    let hashing = write_upper_tar(
        &store.upper_dir(&c.id),
        &lowers,
        HashingWriter::new(BufWriter::new(out)),
    )?;
    let (writer, diff_id, _) = hashing.finish();
    // Not synced: the tar is scratch; the layer applied from it is what
    // the syncfs below makes durable.
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .ctx(|| format!("writing {}", tar_path.display()))?;

    let staged = store.stage_layer()?;
    let tar = File::open(&tar_path).ctx(|| format!("opening {}", tar_path.display()))?;
    let lowers: Vec<_> = base
        .layers
        .iter()
        .rev()
        .map(|l| store.layer_diff(l))
        .collect();
    let applied = apply_layer(
        BufReader::new(tar),
        &staged.path().join("diff"),
        &lowers,
        store.options().sync,
        // A committed layer's tar is canonical: rebuilt the same on save.
        None,
    )?;
    fsutil::syncfs(&store.tmp_dir())?;

    let parent = base.layers.last().cloned();
    let chain = Digest::chain(parent.as_ref(), &diff_id);
    let mut diff_ids = base.diff_ids.clone();
    diff_ids.push(diff_id.clone());
    let config = config::new_config(
        Some(&base_config),
        &diff_ids,
        &format!("strata commit {}", c.name),
    );
    let mut layers = base.layers.clone();
    layers.push(chain.clone());
    let record = ImageRecord {
        id: Digest::of_bytes(&config),
        names: vec![name],
        layers,
        diff_ids,
        created: now_secs(),
        repo_digests: Vec::new(),
    };

    let _lock = store.lock()?;
    let txn = Txn::begin(&store.tmp_dir(), "commit")?;
    store.publish_layer(staged, &chain, &diff_id, parent.as_ref(), applied.size)?;
    store.put_image(&record, &config)?;
    txn.done();
    Ok(record)
}
