//! Getting back to a consistent store after a crash, a kill -9 or a
//! hand-made mess, and `strata check [--repair]`.
//!
//! Every operation stages its work under `tmp/` (owner-locked, see
//! `StagingDir`) and makes it visible by rename; multi-step publishes
//! (import, commit, image rm, create --mount, mount, umount, rm) also
//! leave a `txn-*` marker from their first visible change to their last.
//! So an interrupted operation always leaves an abandoned entry in `tmp/`,
//! and the next command that sees one runs the full recovery under the
//! store lock:
//! - abandoned staging is deleted (the operation rolls back), as are
//!   directories renamed in for deletion (rm rolls forward);
//! - layers no image or container references are deleted (a half-published
//!   import or commit rolls back, a half-done image rm rolls forward);
//! - short links are re-made or dropped, mount counts re-read from the
//!   mount table, metadata temp files removed.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use serde::Serialize;

use crate::containers::ContainerRecord;
use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::fsutil;
use crate::layers::{now_secs, LayerRecord};
use crate::mount;
use crate::sizes::apparent_size;
use crate::snapshots::SnapshotState;
use crate::store::Store;

/// Problems found so far; with `repair`, each is fixed as it is found.
struct Findings {
    repair: bool,
    problems: Vec<Problem>,
}

impl Findings {
    fn add(&mut self, what: String, repairable: bool, fix: impl FnOnce() -> Result<()>) {
        let repaired = self.repair && repairable && fix().is_ok();
        self.problems.push(Problem {
            what,
            repairable,
            repaired,
        });
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    /// Whether --repair can fix it.
    pub repairable: bool,
    /// Set once --repair fixed it.
    pub repaired: bool,
}

impl Store {
    /// Runs the full recovery if an operation was interrupted (an abandoned
    /// entry in tmp/). Returns what it did; empty when nothing was needed.
    /// After a reboot, containerd snapshots left unflushed (see
    /// snapshots::flush) need it too, though nothing was interrupted.
    pub fn recover_if_needed(&self) -> Result<Vec<Problem>> {
        if self.needs_recovery()? {
            let _lock = self.lock()?;
            // Re-checked under the lock: another process may have recovered.
            if self.needs_recovery()? {
                return self.scan(true);
            }
        }
        Ok(Vec::new())
    }

    /// The snapshotter's start: as recover_if_needed, and also where an
    /// active snapshot lost its writable layer to a power cut after its
    /// Prepare (see check_snapshot_data). Only containerd reaches those,
    /// through the snapshotter, so only it pays a look at each.
    pub fn recover_for_snapshotter(&self) -> Result<Vec<Problem>> {
        let needed =
            || -> Result<bool> { Ok(self.needs_recovery()? || self.some_writable_layer_lost()?) };
        if needed()? {
            let _lock = self.lock()?;
            if needed()? {
                return self.scan(true);
            }
        }
        Ok(Vec::new())
    }

    /// What the scan would find: an upper gone, or a record read_record
    /// takes for none (missing, or emptied by the power cut).
    fn some_writable_layer_lost(&self) -> Result<bool> {
        let lost = |container: &str| {
            !self.upper_dir(container).is_dir()
                || matches!(
                    crate::containers::read_record(&self.container_dir(container)),
                    Ok(None)
                )
        };
        Ok(self
            .snapshot_db()?
            .snapshots
            .values()
            .any(|r| matches!(&r.state, SnapshotState::Active { container } if lost(container))))
    }

    /// Asked at every command's start: the boot id is read only when some
    /// snapshot is still unflushed.
    fn needs_recovery(&self) -> Result<bool> {
        if !self.abandoned_tmp()?.is_empty() {
            return Ok(true);
        }
        let db = self.snapshot_db()?;
        if !db.snapshots.values().any(|r| r.unflushed_boot.is_some()) {
            return Ok(false);
        }
        Ok(!db.torn_snapshots(&crate::snapshots::boot_id()?).is_empty())
    }

    /// `strata check`: every problem found, fixed too with `repair`.
    pub fn check(&self, repair: bool) -> Result<Vec<Problem>> {
        let _lock = self.lock()?;
        self.scan(repair)
    }

    fn abandoned_tmp(&self) -> Result<Vec<std::path::PathBuf>> {
        let dir = self.tmp_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let p = e.ctx(|| "reading tmp".into())?.path();
            if fsutil::is_abandoned(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Call with the store lock held.
    fn scan(&self, repair: bool) -> Result<Vec<Problem>> {
        let mut found = Findings {
            repair,
            problems: Vec::new(),
        };
        for p in self.abandoned_tmp()? {
            found.add(
                format!("leftover of an interrupted operation: {}", p.display()),
                true,
                || {
                    // A removed container's merged dir may still be mounted
                    // (volumes too): never delete into a mount.
                    mount::unmount_beneath(&p);
                    fsutil::remove_tree(&p)
                },
            );
        }
        for dir in [
            self.images_dir(),
            self.containers_dir(),
            self.layers_dir(),
            self.volumes_dir(),
        ] {
            for e in fs::read_dir(&dir)
                .ctx(|| format!("reading {}", dir.display()))?
                .flatten()
            {
                for f in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') && name.contains(".tmp-") {
                        let p = f.path();
                        found.add(
                            format!("half-written metadata: {}", p.display()),
                            true,
                            || fs::remove_file(&p).ctx(|| "removing".into()),
                        );
                    }
                }
            }
        }

        // Before the layers are judged: dropping a torn snapshot orphans
        // its layer and writable layers, which the rest of this scan removes.
        self.check_torn_snapshots(&mut found)?;
        self.check_snapshot_containers(&mut found)?;
        self.check_unfinished_containers(&mut found)?;
        let images = self.images()?;
        let containers = self.containers()?;
        let referenced = self.referenced_layers()?;
        let mut present = HashSet::new();
        for e in fs::read_dir(self.layers_dir())
            .ctx(|| "reading layers".into())?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let Ok(chain) = Digest::parse(&format!("sha256:{name}")) else {
                found.add(
                    format!("stray entry in layers/: {}", path.display()),
                    true,
                    || fsutil::remove_tree(&path),
                );
                continue;
            };
            if !referenced.contains(&chain) {
                found.add(
                    format!("orphan layer {chain}: no image, container or snapshot uses it"),
                    true,
                    || {
                        self.undo_snapshot_commit(&path)?;
                        self.remove_layer_dir(&path)
                    },
                );
                continue;
            }
            if self.layer(&chain).is_err() || !path.join("layer.json").exists() {
                found.add(format!("layer {chain} has lost its metadata"), true, || {
                    self.rebuild_layer_record(&chain)
                });
            }
            present.insert(chain);
        }
        for img in &images {
            for l in img.layers.iter().filter(|l| !present.contains(*l)) {
                let name = img
                    .names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| img.id.to_string());
                found.add(
                    format!("image {name} references missing layer {l}"),
                    false,
                    || Ok(()),
                );
            }
        }

        // Short links: one per layer, pointing at it.
        let mut wanted = HashSet::new();
        for chain in &present {
            if let Ok(Some(rec)) = self.layer(chain) {
                let link = self.links_dir().join(&rec.link);
                if fs::symlink_metadata(&link).is_err() {
                    found.add(
                        format!("missing short link l/{} for layer {chain}", rec.link),
                        true,
                        || {
                            symlink(format!("../layers/{}/diff", chain.hex()), &link)
                                .ctx(|| "re-making link".into())
                        },
                    );
                }
                wanted.insert(rec.link);
            }
        }
        for e in fs::read_dir(self.links_dir())
            .ctx(|| "reading l/".into())?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !wanted.contains(&name) || fs::metadata(e.path()).is_err() {
                let p = e.path();
                found.add(format!("dangling short link l/{name}"), true, || {
                    fs::remove_file(&p).ctx(|| "removing link".into())
                });
            }
        }

        self.check_snapshot_data(&mut found)?;
        for c in &containers {
            self.check_mounts(c, &mut found);
        }
        Ok(found.problems)
    }

    fn check_mounts(&self, c: &ContainerRecord, found: &mut Findings) {
        let merged = self.merged_dir(&c.id);
        let mounted = mount::is_mountpoint(&merged);
        if mounted && c.mount_count == 0 {
            found.add(
                format!(
                    "leaked mount of container {} at {}",
                    c.name,
                    merged.display()
                ),
                true,
                || self.unmount_all(c, true),
            );
        } else if !mounted && c.mount_count > 0 {
            found.add(
                format!(
                    "container {} counts {} mounts but is not mounted",
                    c.name, c.mount_count
                ),
                true,
                || self.zero_mount_count(c),
            );
        } else if mounted {
            // A mount killed between the overlay and its volumes' binds:
            // what the container writes there would land in its layer.
            let unbound: Vec<&str> = c
                .volumes
                .iter()
                .filter(|v| !mount::is_mountpoint(&v.target_in(&merged)))
                .map(|v| v.path.as_str())
                .collect();
            if !unbound.is_empty() {
                found.add(
                    format!(
                        "container {} is mounted without its volumes at {}",
                        c.name,
                        unbound.join(", ")
                    ),
                    true,
                    || {
                        self.unmount_all(c, true)?;
                        self.zero_mount_count(c)
                    },
                );
            }
        }
    }

    fn zero_mount_count(&self, c: &ContainerRecord) -> Result<()> {
        let mut fixed = c.clone();
        fixed.mount_count = 0;
        fsutil::write_json_atomic(&self.container_dir(&c.id).join("container.json"), &fixed)
    }

    /// A container directory without a record is what a power cut leaves
    /// of a `create` that never returned: removed while its writable layer
    /// is empty (no one knew its ID to write there); anything else in it
    /// is reported and kept.
    fn check_unfinished_containers(&self, found: &mut Findings) -> Result<()> {
        let db = self.snapshot_db()?;
        for dir in self.unfinished_containers()? {
            let id = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(key) = id.as_deref().and_then(|id| db.key_of_container(id)) {
                // Prepare does not sync the record (see check_snapshot_data):
                // the snapshot says what it was.
                found.add(
                    format!("writable layer of containerd snapshot {key:?} lost its record: rebuilt from the snapshot"),
                    true,
                    || {
                        let record = self.expected_writable_layer(key)?;
                        fsutil::write_json_atomic(&dir.join("container.json"), &record)
                    },
                );
                continue;
            }
            let untouched = fs::read_dir(dir.join("upper"))
                .map(|mut entries| entries.next().is_none())
                .unwrap_or(true);
            // CLI containers sync their record before create returns, so
            // data without one is a containerd snapshot's writable layer
            // (never synced, by design) torn by a power cut, or damage:
            // which of them only the user can tell.
            let what = if untouched {
                "leftover of a create that never returned"
            } else {
                "data in it but no record (a containerd snapshot torn by a power cut, \
                 or a damaged record): remove it by hand once nothing in it is wanted"
            };
            found.add(
                format!("container directory {}: {what}", dir.display()),
                untouched,
                || {
                    mount::unmount_beneath(&dir);
                    fsutil::remove_tree(&dir)
                },
            );
        }
        Ok(())
    }

    /// A containerd snapshot's writable layer that no snapshot names was
    /// left by a Prepare or Commit interrupted after its first step (or a
    /// Remove after its metadata change): nothing can reach it.
    ///
    /// Runs before the layers are judged: a writable layer removed here no
    /// longer holds its lower layers.
    fn check_snapshot_containers(&self, found: &mut Findings) -> Result<()> {
        let db = self.snapshot_db()?;
        for c in &self.containers()? {
            let Some(key) = &c.snapshot else { continue };
            if db.key_of_container(&c.id) != Some(key.as_str()) {
                found.add(
                    format!("writable layer of removed containerd snapshot {key:?}"),
                    true,
                    || {
                        mount::unmount_beneath(&self.container_dir(&c.id));
                        self.move_to_trash(&self.container_dir(&c.id))
                    },
                );
            }
        }
        Ok(())
    }

    /// Snapshots whose data is gone. Runs after the layers are judged:
    /// that is where a half-committed diff goes back and a lost layer
    /// record is rebuilt.
    fn check_snapshot_data(&self, found: &mut Findings) -> Result<()> {
        for (key, rec) in &self.snapshot_db()?.snapshots {
            match &rec.state {
                // Prepare syncs the snapshot's record, not its directories,
                // which a power loss may take. Had anything in them been
                // fsynced, the filesystem's log would hold the directories
                // too (ext4, XFS): gone, they held nothing durable, so the
                // snapshot Prepare promised, empty, is made again.
                SnapshotState::Active { container } if !self.upper_dir(container).is_dir() => found
                    .add(
                        format!("active containerd snapshot {key:?} lost its writable layer: made again, empty"),
                        true,
                        || self.remake_writable_layer(key),
                    ),
                SnapshotState::Committed { layer, .. }
                    if self.layer(layer).ok().flatten().is_none() =>
                {
                    found.add(
                        format!("committed containerd snapshot {key:?} has lost its layer"),
                        false,
                        || Ok(()),
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Snapshots committed unflushed in an earlier boot (see
    /// snapshots::flush) are dropped with their descendants.
    fn check_torn_snapshots(&self, found: &mut Findings) -> Result<()> {
        let boot = crate::snapshots::boot_id()?;
        let torn = self.snapshot_db()?.torn_snapshots(&boot);
        if torn.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = torn.iter().map(|k| format!("{k:?}")).collect();
        found.add(
            format!(
                "containerd snapshots not yet flushed when the machine went down, \
                 dropped for containerd to extract again: {}",
                names.join(", ")
            ),
            true,
            || {
                let mut db = (*self.snapshot_db()?).clone();
                db.snapshots.retain(|k, _| !torn.contains(k));
                self.save_snapshot_db(db)
            },
        );
        Ok(())
    }

    /// An unreferenced layer made from a snapshot whose container still
    /// lacks its upper is a commit cut short: the diff goes back.
    fn undo_snapshot_commit(&self, layer_dir: &Path) -> Result<()> {
        let Ok(rec) = fsutil::read_json::<LayerRecord>(&layer_dir.join("layer.json")) else {
            return Ok(());
        };
        let Some(container) = rec.from_container else {
            return Ok(());
        };
        let upper = self.upper_dir(&container);
        let diff = layer_dir.join("diff");
        if self.container_dir(&container).is_dir() && !upper.exists() && diff.is_dir() {
            fs::rename(&diff, &upper).ctx(|| format!("moving {} back", diff.display()))?;
            fsutil::sync_dir(&self.container_dir(&container))?;
        }
        Ok(())
    }

    fn remove_layer_dir(&self, path: &Path) -> Result<()> {
        let doomed = self
            .tmp_dir()
            .join(format!("rm-layer-{}", fsutil::random_hex(8)));
        fs::rename(path, &doomed).ctx(|| format!("removing {}", path.display()))?;
        fsutil::remove_tree(&doomed)
    }

    /// Rebuilds layer.json from what uses the layer (see layer_lineage);
    /// its size is measured again.
    /// A layer's diffID and parent, from an image that uses it (its config
    /// has them) or else the committed snapshot it is (its parent
    /// snapshot's layer; snapshot layers carry their chain ID as diffID).
    fn layer_lineage(&self, chain: &Digest) -> Result<(Digest, Option<Digest>)> {
        if let Some(img) = self
            .images()?
            .into_iter()
            .find(|i| i.layers.contains(chain))
        {
            let i = img.layers.iter().position(|l| l == chain).expect("found");
            return Ok((
                img.diff_ids[i].clone(),
                i.checked_sub(1).map(|p| img.layers[p].clone()),
            ));
        }
        let db = self.snapshot_db()?;
        let snapshot = db
            .snapshots
            .values()
            .find(|r| matches!(&r.state, SnapshotState::Committed { layer, .. } if layer == chain));
        match snapshot {
            Some(rec) => Ok((chain.clone(), db.layer_chain(rec.parent.as_deref())?.pop())),
            None => Err(crate::Error::NotFound {
                kind: "image or snapshot using layer",
                name: chain.to_string(),
            }),
        }
    }

    fn rebuild_layer_record(&self, chain: &Digest) -> Result<()> {
        let (diff_id, parent) = self.layer_lineage(chain)?;
        let existing_link = fs::read_dir(self.links_dir())
            .ctx(|| "reading l/".into())?
            .flatten()
            .find(|e| {
                fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains(chain.hex()))
            })
            .map(|e| e.file_name().to_string_lossy().into_owned());
        let rec = LayerRecord {
            chain_id: chain.clone(),
            diff_id,
            parent,
            size: apparent_size(&self.layer_diff(chain))?,
            link: existing_link
                .unwrap_or_else(|| fsutil::random_name(crate::layers::LINK_NAME_LEN)),
            created: now_secs(),
            from_container: None,
        };
        fsutil::write_json_atomic(&self.layer_dir(chain).join("layer.json"), &rec)
    }
}
