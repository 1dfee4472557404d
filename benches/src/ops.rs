//! Driver operations against what a user would otherwise run.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Result;

use crate::fixtures::{
    deep_image, hand_mount, image, layer_dirs, sh, unmount_all_beneath, Env, LoopFs,
};
use crate::harness::{compare, BenchResult, Timed};

/// Imports, each vs `tar -x` of its layers.
pub fn imports(env: &Env, cache: &std::path::Path) -> Result<Vec<BenchResult>> {
    let mut out = Vec::new();
    let shape = if env.quick { (4, 300) } else { (6, 2000) };
    for (fs_name, fs) in fresh_filesystems(env, "import-fs")? {
        out.extend(import(env, &fs.mount, fs_name, shape, &[false, true])?);
        if !env.quick {
            // 1 GiB, for the memory bound (64 MiB) as much as the time.
            out.extend(import(env, &fs.mount, fs_name, (6, 5300), &[true])?);
        }
    }
    if !env.quick {
        for (fs_name, fs) in fresh_filesystems(env, "import-debian-fs")? {
            out.extend(import_debian(env, cache, &fs.mount, fs_name)?);
            out.push(import_debian_docker_archive(
                env, cache, &fs.mount, fs_name,
            )?);
        }
    }
    Ok(out)
}

/// A container's life (create --mount, copy-up, commit, rm) on each fresh
/// filesystem, then the commands that only read (ps, diff, lookups).
pub fn containers(env: &Env) -> Result<Vec<BenchResult>> {
    let mut out = Vec::new();
    for (fs_name, fs) in fresh_filesystems(env, "containers-fs")? {
        out.extend(lifecycle(env, &fs.mount, fs_name)?);
    }
    out.extend(ps(env)?);
    out.extend(diff(env)?);
    out.extend(lookups(env)?);
    Ok(out)
}

/// `strata image import SRC --name NAME` into a fresh store at `root`,
/// keeping the largest peak RSS seen in `peak_rss`.
pub(crate) fn strata_import<'a>(
    env: &'a Env,
    root: &'a std::path::Path,
    src: &'a str,
    name: &'a str,
    peak_rss: &'a std::cell::Cell<u64>,
) -> Timed<'a> {
    Timed::new(
        move || {
            let _ = fs::remove_dir_all(root);
            Ok(())
        },
        move || {
            let rss = env.strata_peak_rss(root, &["image", "import", src, "--name", name])?;
            peak_rss.set(peak_rss.get().max(rss));
            Ok(())
        },
    )
}

/// A fresh ext4 and a fresh XFS, loop-mounted for `name`: what creates
/// files is measured on a filesystem made for the run, never on the root
/// filesystem (here a journal-less ext4 whose inode allocator, after the
/// mass deletes of earlier repetitions, dominates every import).
pub(crate) fn fresh_filesystems(env: &Env, name: &str) -> Result<Vec<(&'static str, LoopFs)>> {
    let dir = env.dir(name);
    let mut out = Vec::new();
    for (fs_name, mkfs) in [
        ("ext4", &["mkfs.ext4", "-q", "-F"][..]),
        ("XFS", &["mkfs.xfs", "-q", "-f"][..]),
    ] {
        let image = dir.join(format!("{fs_name}.img"));
        let mount = dir.join(fs_name);
        out.push((fs_name, LoopFs::make(&image, &mount, 8 << 30, mkfs, &[])?));
    }
    Ok(out)
}

/// Import of a `layers` x `files` image vs `tar -x` of the same layers,
/// without and/or with a sync (`durable`: strata's import is durable when
/// it returns), both on `target`, a fresh `fs_name`; with strata's peak
/// RSS.
fn import(
    env: &Env,
    target: &std::path::Path,
    fs_name: &str,
    (layers, files): (usize, usize),
    durable: &[bool],
) -> Result<Vec<BenchResult>> {
    let dir = env.dir(&format!("import-{layers}x{files}"));
    let img = image(&dir, layers, files, "bench:import")?;
    let root = target.join("store");
    let extract = target.join("extract");
    let archive = img.archive.to_str().unwrap().to_string();
    let mut out = Vec::new();
    let peak_rss = std::cell::Cell::new(0);
    for &durable in durable {
        out.push(
            compare(
                &format!(
                    "import {layers}x{files} files ({} MB) on fresh {fs_name}{}",
                    img.bytes / 1_000_000,
                    if durable { " (vs durable tar)" } else { "" }
                ),
                env.reps,
                strata_import(env, &root, &archive, "bench", &peak_rss).settled(),
                if durable {
                    "tar -x of the layers + sync -f"
                } else {
                    "tar -x of the layers"
                },
                tar_x_layers(&img.layer_tars, &extract, durable).settled(),
                // The bar (issue 14) is against the durable tar: an import is
                // durable when it returns.
                durable.then_some(1.2),
            )?
            .with_peak_rss(peak_rss.get()),
        );
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(out)
}

/// `tar -x` of each of `tars` into its own directory under `extract`,
/// then (`durable`) `sync -f`: what an import is measured against.
fn tar_x_layers<'a>(tars: &'a [PathBuf], extract: &'a std::path::Path, durable: bool) -> Timed<'a> {
    Timed::new(
        move || {
            let _ = fs::remove_dir_all(extract);
            Ok(())
        },
        move || {
            for (i, t) in tars.iter().enumerate() {
                let d = extract.join(i.to_string());
                fs::create_dir_all(&d)?;
                sh(
                    "tar",
                    &["-xf", t.to_str().unwrap(), "-C", d.to_str().unwrap()],
                )?;
            }
            if durable {
                sh("sync", &["-f", extract.to_str().unwrap()])?;
            }
            Ok(())
        },
    )
}

/// The Debian image as `docker save` writes it (uncompressed layer tars)
/// vs `tar -x` of those layer tars + `sync -f`.
fn import_debian_docker_archive(
    env: &Env,
    cache: &std::path::Path,
    target: &std::path::Path,
    fs_name: &str,
) -> Result<BenchResult> {
    let archive = crate::peers::debian_docker_archive(cache)
        .map_err(|why| anyhow::anyhow!("the Debian docker-archive: {why}"))?;
    // Its layer tars as files, for tar to read: unpacked once, untimed.
    let unpacked = env.dir("debian-docker-archive");
    sh(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            unpacked.to_str().unwrap(),
        ],
    )?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("manifest.json"))?)?;
    let tars: Vec<PathBuf> = manifest[0]["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(|l| unpacked.join(l)))
        .collect();
    let peak_rss = std::cell::Cell::new(0);
    let extract = target.join("extract");
    let result = compare(
        &format!("import Debian bookworm minbase (docker-archive) on fresh {fs_name}"),
        env.reps,
        strata_import(
            env,
            &target.join("store"),
            archive.to_str().unwrap(),
            "debian",
            &peak_rss,
        )
        .settled(),
        "tar -x of its layer tars + sync -f",
        tar_x_layers(&tars, &extract, true).settled(),
        Some(1.2),
    )?
    .with_peak_rss(peak_rss.get());
    let _ = fs::remove_dir_all(&unpacked);
    Ok(result)
}

/// Import of a real Debian rootfs (OCI, one gzip layer) vs extracting the
/// same layer with tar (decompressing too) + `sync -f`.
fn import_debian(
    env: &Env,
    cache: &std::path::Path,
    target: &std::path::Path,
    fs_name: &str,
) -> Result<Vec<BenchResult>> {
    let layout = match crate::fixtures::debian_image(cache) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("  skipped the Debian image import: {why}");
            return Ok(Vec::new());
        }
    };
    let root = target.join("store");
    let extract = target.join("extract");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let digest = |v: &serde_json::Value| {
        v["digest"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("sha256:")
            .to_string()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(
        layout
            .join("blobs/sha256")
            .join(digest(&index["manifests"][0])),
    )?)?;
    let blob = layout
        .join("blobs/sha256")
        .join(digest(&manifest["layers"][0]));
    let src = format!("{}:bookworm", layout.display());
    let peak_rss = std::cell::Cell::new(0);
    Ok(vec![compare(
        &format!("import Debian bookworm minbase (OCI, gzip) on fresh {fs_name}"),
        env.reps,
        strata_import(env, &root, &src, "debian", &peak_rss).settled(),
        // tar -x knows a gzip stream by its magic, as tar -xz would.
        "tar -x of the same gzip layer + sync -f",
        tar_x_layers(std::slice::from_ref(&blob), &extract, true).settled(),
        Some(1.2),
    )?
    .with_peak_rss(peak_rss.get())])
}

/// create --mount, the copy-up write, commit and rm, each vs its baseline,
/// everything on `target`, a fresh `fs_name`.
fn lifecycle(env: &Env, target: &std::path::Path, fs_name: &str) -> Result<Vec<BenchResult>> {
    let dir = target.join("containers");
    fs::create_dir_all(&dir)?;
    let root = dir.join("store");
    let files = if env.quick { 2000 } else { 20000 };
    let img = image(&dir, 3, files / 3, "bench:big")?;
    env.strata(
        &root,
        &[
            "image",
            "import",
            img.archive.to_str().unwrap(),
            "--name",
            "big",
        ],
    )?;
    let lowers = layer_dirs(&root, "big")?;
    let mut out = Vec::new();

    let hand = dir.join("hand");
    let by_hand = || {
        Timed::new(
            || {
                unmount_all_beneath(&hand);
                let _ = fs::remove_dir_all(&hand);
                Ok(())
            },
            || hand_mount(&hand, &lowers),
        )
    };
    out.push(compare(
        &format!("create --mount on fresh {fs_name}"),
        env.reps,
        Timed::just(|| env.strata(&root, &["create", "--mount", "big"]).map(drop)),
        "mkdir + mount -t overlay",
        by_hand(),
        Some(1.5),
    )?);
    // What a script typing two commands pays (a second process and lock).
    out.push(compare(
        &format!("create, then mount, on fresh {fs_name}"),
        env.reps,
        Timed::just(|| {
            let id = env.strata(&root, &["create", "big"])?;
            env.strata(&root, &["mount", &id]).map(drop)
        }),
        "mkdir + mount -t overlay",
        by_hand(),
        None,
    )?);
    unmount_all_beneath(&hand);
    out.extend(copy_up(env, &dir, fs_name)?);
    out.extend(commit_and_rm(env, &root, &dir, fs_name)?);
    Ok(out)
}

/// Opening a lower 1 MiB file for writing (overlayfs copies it up) vs
/// `cp` of the same bytes, without and with fsync.
fn copy_up(env: &Env, dir: &std::path::Path, fs_name: &str) -> Result<Vec<BenchResult>> {
    let root = dir.join("cow-store");
    // Each candidate sample copies up a file of its own: two comparisons of
    // `reps` samples plus a warm-up each.
    let n = 2 * (env.reps + 1);
    let work = dir.join("cow-src");
    fs::create_dir_all(&work)?;
    let tar = work.join("l.tar");
    let mut t = strata_driver::image::build::LayerTar::create(&tar)?;
    for i in 0..n {
        t.pattern_file(&format!("f{i}"), 1 << 20, i as u8 + 1)?;
    }
    t.finish()?;
    strata_driver::image::build::write_docker_archive(&work.join("a"), "cow:1", &[tar])?;
    env.strata(
        &root,
        &[
            "image",
            "import",
            work.join("a").to_str().unwrap(),
            "--name",
            "cow",
        ],
    )?;
    let id = env.strata(&root, &["create", "cow"])?;
    let merged = PathBuf::from(env.strata(&root, &["mount", &id])?);
    let lower = layer_dirs(&root, "cow")?[0].clone();
    let copies = dir.join("copies");
    fs::create_dir_all(&copies)?;
    let next_up = std::cell::Cell::new(0usize);
    let next_copy = std::cell::Cell::new(0usize);
    let mut out = Vec::new();
    for fsync in [false, true] {
        out.push(compare(
            &format!(
                "copy-up write of 1 MiB on fresh {fs_name} (vs cp{})",
                if fsync { "+fsync" } else { "" }
            ),
            env.reps,
            Timed::just(|| {
                let i = next_up.replace(next_up.get() + 1);
                let f = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(merged.join(format!("f{i}")))?;
                drop(f);
                Ok(())
            }),
            if fsync {
                "cp + fsync of the same bytes"
            } else {
                "cp of the same bytes"
            },
            Timed::just(|| {
                let i = next_copy.replace(next_copy.get() + 1);
                let dst = copies.join(format!("c{i}"));
                fs::copy(lower.join(format!("f{}", i % n)), &dst)?;
                if fsync {
                    fs::File::open(&dst)?.sync_all()?;
                }
                Ok(())
            }),
            None,
        )?);
    }
    env.strata(&root, &["rm", "-f", &id])?;
    Ok(out)
}

/// Commit of a one-file change to a large image vs tarring the upper
/// directory; rm of a mounted container vs umount + rm -rf.
fn commit_and_rm(
    env: &Env,
    root: &std::path::Path,
    dir: &std::path::Path,
    fs_name: &str,
) -> Result<Vec<BenchResult>> {
    let mut out = Vec::new();
    let prepare = || -> Result<(String, PathBuf)> {
        let id = env.strata(root, &["create", "big"])?;
        let merged = PathBuf::from(env.strata(root, &["mount", &id])?);
        fs::write(merged.join("l0d0/f0"), b"changed")?;
        fs::write(merged.join("added"), b"new")?;
        Ok((id, merged))
    };
    let (id, _) = prepare()?;
    let upper = root.join("containers").join(&id).join("upper");
    let tarball = dir.join("upper.tar");
    let n = std::cell::Cell::new(0);
    out.push(compare(
        &format!("commit of a small change to a large image on fresh {fs_name}"),
        env.reps,
        Timed::just(|| {
            n.set(n.get() + 1);
            env.strata(root, &["commit", &id, &format!("committed:{}", n.get())])
                .map(drop)
        }),
        // A commit is durable when it returns: so is the baseline's tar.
        "tar of the upper directory + sync -f",
        Timed::just(|| {
            sh(
                "tar",
                &[
                    "-cf",
                    tarball.to_str().unwrap(),
                    "-C",
                    upper.to_str().unwrap(),
                    ".",
                ],
            )?;
            sh("sync", &["-f", tarball.to_str().unwrap()])
        }),
        Some(2.0),
    )?);
    let victims = std::cell::RefCell::new(Vec::new());
    let hand = dir.join("hand-rm");
    out.push(compare(
        &format!("rm -f of a mounted container on fresh {fs_name}"),
        env.reps,
        Timed::new(
            || {
                victims.borrow_mut().push(prepare()?.0);
                Ok(())
            },
            || {
                let id = victims.borrow_mut().pop().unwrap();
                env.strata(root, &["rm", "-f", &id]).map(drop)
            },
        ),
        "umount + rm -rf of a hand-made mount",
        Timed::new(
            || {
                hand_mount(&hand, &layer_dirs(root, "big")?)?;
                fs::write(hand.join("merged/l0d0/f0"), b"changed")?;
                Ok(())
            },
            || {
                sh("umount", &[hand.join("merged").to_str().unwrap()])?;
                sh("rm", &["-rf", hand.to_str().unwrap()])
            },
        ),
        None,
    )?);
    Ok(out)
}

/// `ps -s` over N containers vs `du -sb` over their upper directories.
fn ps(env: &Env) -> Result<Vec<BenchResult>> {
    let dir = env.dir("ps");
    let root = dir.join("store");
    let img = image(&dir, 1, 50, "bench:small")?;
    env.strata(
        &root,
        &[
            "image",
            "import",
            img.archive.to_str().unwrap(),
            "--name",
            "small",
        ],
    )?;
    let mut out = Vec::new();
    let mut uppers: Vec<String> = Vec::new();
    let counts: &[usize] = if env.quick { &[10, 50] } else { &[10, 50, 100] };
    for &n in counts {
        while uppers.len() < n {
            let id = env.strata(&root, &["create", "small"])?;
            let upper = root.join("containers").join(&id).join("upper");
            // A writable layer with something in it: 30 files, 4 KiB each.
            for f in 0..30 {
                fs::create_dir_all(upper.join(format!("d{}", f % 5)))?;
                fs::write(upper.join(format!("d{}/f{f}", f % 5)), vec![1u8; 4096])?;
            }
            uppers.push(upper.to_str().unwrap().to_string());
        }
        let args: Vec<&str> = std::iter::once("-sb")
            .chain(uppers.iter().map(String::as_str))
            .collect();
        out.push(compare(
            &format!("ps -a -s over {n} containers"),
            env.reps,
            Timed::just(|| {
                env.strata(&root, &["ps", "-a", "-s", "--format", "json"])
                    .map(drop)
            }),
            "du -sb over their uppers",
            Timed::just(|| sh("du", &args)),
            (n == 50).then_some(1.5),
        )?);
    }
    Ok(out)
}

/// `strata diff` with bottom/top file counts vs walking the upper dir.
fn diff(env: &Env) -> Result<Vec<BenchResult>> {
    let dir = env.dir("diff");
    let root = dir.join("store");
    let mut out = Vec::new();
    let big = if env.quick { 2000 } else { 10000 };
    for (bottom, top) in [(10, 10), (10, big), (big, 10)] {
        let img = image(
            &dir.join(format!("{bottom}-{top}")),
            1,
            bottom,
            "bench:diff",
        )?;
        let name = format!("diff{bottom}-{top}");
        env.strata(
            &root,
            &[
                "image",
                "import",
                img.archive.to_str().unwrap(),
                "--name",
                &name,
            ],
        )?;
        let id = env.strata(&root, &["create", &name])?;
        let merged = PathBuf::from(env.strata(&root, &["mount", &id])?);
        for f in 0..top {
            fs::create_dir_all(merged.join(format!("new{}", f % 20)))?;
            fs::write(merged.join(format!("new{}/f{f}", f % 20)), b"x")?;
        }
        let upper = root.join("containers").join(&id).join("upper");
        out.push(compare(
            &format!("diff, {bottom} files below / {top} changed"),
            env.reps,
            Timed::just(|| env.strata(&root, &["diff", &id]).map(drop)),
            "find over the upper directory",
            Timed::just(|| sh("find", &[upper.to_str().unwrap()])),
            None,
        )?);
        env.strata(&root, &["rm", "-f", &id])?;
    }
    Ok(out)
}

/// Reading files that live in the bottom of 20 and 128 layers vs the same
/// files in a one-layer image, on a fresh mount each time.
fn lookups(env: &Env) -> Result<Vec<BenchResult>> {
    let dir = env.dir("lookups");
    let root = dir.join("store");
    let files = 200;
    let one = deep_image(&dir, 1, files, "bench:deep1")?;
    env.strata(
        &root,
        &["image", "import", one.to_str().unwrap(), "--name", "deep1"],
    )?;
    let mut out = Vec::new();
    for layers in [20, 128] {
        let deep = deep_image(&dir, layers, files, "bench:deep")?;
        let name = format!("deep{layers}");
        env.strata(
            &root,
            &["image", "import", deep.to_str().unwrap(), "--name", &name],
        )?;
        let mounted = std::cell::RefCell::new(PathBuf::new());
        let fresh = |image: &str| -> Result<()> {
            let id = env.strata(&root, &["create", image])?;
            *mounted.borrow_mut() = PathBuf::from(env.strata(&root, &["mount", &id])?);
            Ok(())
        };
        let read_all = || -> Result<()> {
            let m = mounted.borrow();
            for f in 0..files {
                fs::read(m.join(format!("data/f{f}")))?;
            }
            Ok(())
        };
        out.push(compare(
            &format!("read {files} files through {layers} layers"),
            env.reps,
            Timed::new(|| fresh(&name), read_all),
            "the same through 1 layer",
            Timed::new(|| fresh("deep1"), read_all),
            None,
        )?);
    }
    Ok(out)
}
