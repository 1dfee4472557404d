//! containerd on strata against containerd on its own overlayfs
//! snapshotter: one containerd, both snapshotters, the same images and
//! commands, interleaved. Everything (containerd's root, strata's store)
//! sits on an ext4 made for the run: the root filesystem's inode
//! allocator would dominate the imports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use strata_driver::testing::containerd::{busybox_image, Containerd, IMAGE, SNAPSHOTTER};

use crate::fixtures::{image, sh, Env, LoopFs};
use crate::harness::{compare, BenchResult, Timed};

const BUILTIN: &str = "overlayfs";

fn ctr(c: &Containerd, args: &[&str]) -> Result<String> {
    let out = c.ctr(args);
    if !out.status.success() {
        bail!("ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn all(env: &Env, cache: &Path) -> Result<Vec<BenchResult>> {
    let dir = env.dir("containerd");
    let fs = LoopFs::ext4(&dir.join("fs.img"), &dir.join("fs"), 8 << 30)?;
    let ctrd = Containerd::start(&fs.mount.join("engine"), &env.strata);
    let (tar, name) = import_subject(env, cache, &dir)?;
    let mut out = vec![import(env, &ctrd, &tar, &name)?];
    let run_image = busybox_image(&fs.mount, 0);
    for sn in [SNAPSHOTTER, BUILTIN] {
        ctr(
            &ctrd,
            &[
                "images",
                "import",
                "--snapshotter",
                sn,
                run_image.to_str().unwrap(),
            ],
        )?;
    }
    out.push(run(env, &ctrd)?);
    out.push(usage(env, &ctrd)?);
    drop(ctrd);
    drop(fs);
    Ok(out)
}

/// The Debian rootfs image (full runs), or a 4-layer synthetic one
/// (--quick), as a tar `ctr images import` takes, and its name.
fn import_subject(env: &Env, cache: &Path, dir: &Path) -> Result<(PathBuf, String)> {
    let tar = dir.join("import.tar");
    if env.quick {
        let img = image(dir, 4, 300, "docker.io/library/bench:import")?;
        sh(
            "tar",
            &[
                "-C",
                img.archive.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        )?;
        return Ok((tar, "docker.io/library/bench:import".into()));
    }
    let layout = crate::fixtures::debian_image(cache).map_err(anyhow::Error::msg)?;
    sh(
        "tar",
        &[
            "-C",
            layout.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    )?;
    Ok((tar, "docker.io/library/debian:bookworm".into()))
}

fn import(env: &Env, c: &Containerd, tar: &Path, name: &str) -> Result<BenchResult> {
    let tar = tar.to_str().context("tar path")?;
    let timed = |sn: &'static str| {
        Timed::new(
            move || {
                // Image, content and snapshots go; the next import is cold.
                let _ = c.ctr(&["images", "rm", "--sync", name]);
                Ok(())
            },
            move || {
                ctr(
                    c,
                    &[
                        "images",
                        "import",
                        "--base-name",
                        "docker.io/library/debian",
                        "--snapshotter",
                        sn,
                        tar,
                    ],
                )
                .map(drop)
            },
        )
    };
    compare(
        &format!("ctr images import ({name})"),
        env.reps,
        timed(SNAPSHOTTER),
        "ctr images import, overlayfs snapshotter",
        timed(BUILTIN),
        Some(1.0),
    )
}

fn run(env: &Env, c: &Containerd) -> Result<BenchResult> {
    let timed = |sn: &'static str| {
        let mut n = 0;
        Timed::just(move || {
            n += 1;
            let id = format!("bench-{sn}-{n}");
            ctr(
                c,
                &[
                    "run",
                    "--rm",
                    "--snapshotter",
                    sn,
                    IMAGE,
                    &id,
                    "/bin/busybox",
                    "true",
                ],
            )
            .map(drop)
        })
    };
    compare(
        "ctr run --rm (busybox true)",
        env.reps,
        timed(SNAPSHOTTER),
        "ctr run --rm, overlayfs snapshotter",
        timed(BUILTIN),
        Some(1.0),
    )
}

/// `ctr snapshots usage` over 50 active snapshots on the image, each
/// holding a few files.
fn usage(env: &Env, c: &Containerd) -> Result<BenchResult> {
    for sn in [SNAPSHOTTER, BUILTIN] {
        let parent = top_committed(c, sn)?;
        for i in 0..50 {
            let key = format!("usage-{i}");
            let mounts = ctr(
                c,
                &[
                    "snapshots",
                    "--snapshotter",
                    sn,
                    "prepare",
                    "--mounts",
                    &key,
                    &parent,
                ],
            )?;
            let upper = upper_of(&mounts).with_context(|| format!("no upperdir in {mounts}"))?;
            for f in 0..20 {
                std::fs::write(upper.join(format!("f{f}")), vec![b'x'; 4096])?;
            }
        }
    }
    // containerd's collector would skip (and so not time) any snapshot it
    // no longer tracks: every sample must list all 50.
    let timed = |sn: &'static str| {
        Timed::just(move || {
            let out = ctr(c, &["snapshots", "--snapshotter", sn, "usage"])?;
            let listed = out.lines().filter(|l| l.starts_with("usage-")).count();
            if listed != 50 {
                bail!("{sn}: usage listed {listed} of the 50 active snapshots");
            }
            Ok(())
        })
    };
    compare(
        "ctr snapshots usage (50 active)",
        env.reps,
        timed(SNAPSHOTTER),
        "ctr snapshots usage, overlayfs snapshotter",
        timed(BUILTIN),
        Some(1.0),
    )
}

/// The committed snapshot at the top of the unpacked image.
fn top_committed(c: &Containerd, sn: &str) -> Result<String> {
    let chain = ctr(c, &["snapshots", "--snapshotter", sn, "ls"])?;
    // KEY PARENT KIND: the committed snapshot no other committed one names as parent.
    let rows: Vec<Vec<&str>> = chain
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    rows.iter()
        .filter(|r| r.last() == Some(&"Committed"))
        .map(|r| r[0])
        .find(|k| !rows.iter().any(|r| r.len() == 3 && r[1] == *k))
        .map(str::to_string)
        .context("no committed snapshot")
}

/// `ctr snapshots prepare --mounts` prints the mounts as JSON.
fn upper_of(mounts: &str) -> Option<PathBuf> {
    let mounts: serde_json::Value = serde_json::from_str(mounts).ok()?;
    mounts[0]["Options"]
        .as_array()?
        .iter()
        .find_map(|o| o.as_str()?.strip_prefix("upperdir="))
        .map(PathBuf::from)
}
