//! The copy-up cost matrix (durable and --volatile mounts) and the
//! profiler's overhead on copy-up-heavy work (hot_path.rs has the
//! overhead on work that never copies up).

use std::cell::{Cell, RefCell};
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use strata_driver::image::build::{write_docker_archive, LayerTar};

use crate::fixtures::{Env, LoopFs, ProfilerProcess};
use crate::harness::{compare, BenchResult, Timed};
use crate::ops::fresh_filesystems;

/// One matrix cell's image: `reps` files of `size` bytes `dirs` deep,
/// under `layers - 1` small layers.
pub(crate) fn cell_image(
    env: &Env,
    root: &Path,
    size: u64,
    layers: usize,
    dirs: usize,
    files: usize,
) -> Result<String> {
    let work = env.dir("cow-build");
    let prefix: String = (0..dirs).map(|i| format!("d{i}/")).collect();
    let mut tars = Vec::new();
    let mut t = LayerTar::create(&work.join("0.tar"))?;
    for f in 0..files {
        t.pattern_file(&format!("{prefix}f{f}"), size, f as u8 + 1)?;
    }
    tars.push(t.finish()?);
    for l in 1..layers {
        let mut t = LayerTar::create(&work.join(format!("{l}.tar")))?;
        t.file(&format!("filler{l}"), b"x", 0o644)?;
        tars.push(t.finish()?);
    }
    let name = format!("cow-{size}-{layers}-{dirs}");
    write_docker_archive(&work.join("a"), &name, &tars)?;
    env.strata(
        root,
        &[
            "image",
            "import",
            work.join("a").to_str().unwrap(),
            "--name",
            &name,
        ],
    )?;
    Ok(name)
}

/// Durable vs volatile copy-up per cell, on a fresh ext4 and a fresh XFS
/// (copy-up writes the upper filesystem). Also writes each filesystem's
/// cells as JSON lines that `strata-prof report` plots
/// (`cow-matrix-ext4.jsonl`, `cow-matrix-xfs.jsonl`).
pub fn matrix(env: &Env, out_dir: &Path) -> Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    for (fs_name, fs) in fresh_filesystems(env, "cow-matrix-fs")? {
        results.extend(matrix_on(env, &fs.mount, fs_name, out_dir)?);
    }
    Ok(results)
}

fn matrix_on(env: &Env, target: &Path, fs_name: &str, out_dir: &Path) -> Result<Vec<BenchResult>> {
    let dir = target.join("cow-matrix");
    let root = dir.join("store");
    let (sizes, layers, dirs): (&[u64], &[usize], &[usize]) = if env.quick {
        (&[4096, 1 << 20], &[1, 32], &[0, 16])
    } else {
        (
            &[4096, 64 << 10, 1 << 20, 16 << 20],
            &[1, 8, 32, 128],
            &[0, 4, 16, 32],
        )
    };
    let mut results = Vec::new();
    let mut cells = String::new();
    let mut grid = Vec::new();
    for &s in sizes {
        grid.push((s, layers[0], dirs[0]));
    }
    for &l in &layers[1..] {
        grid.push((sizes[0], l, dirs[0]));
    }
    for &d in &dirs[1..] {
        grid.push((sizes[0], layers[0], d));
    }
    for (size, l, d) in grid {
        let files = 2 * (env.reps + 1);
        let image = cell_image(env, &root, size, l, d, files)?;
        let prefix: String = (0..d).map(|i| format!("d{i}/")).collect();
        let mount = |volatile: bool| -> Result<PathBuf> {
            let mut args = vec!["create", image.as_str()];
            if volatile {
                args.push("--volatile");
            }
            let id = env.strata(&root, &args)?;
            Ok(PathBuf::from(env.strata(&root, &["mount", &id])?))
        };
        let (durable, volatile) = (mount(false)?, mount(true)?);
        let (nd, nv) = (Cell::new(0usize), Cell::new(0usize));
        let open_next = |m: &Path, n: &Cell<usize>| -> Result<()> {
            let i = n.replace(n.get() + 1);
            drop(
                fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(m.join(format!("{prefix}f{i}")))?,
            );
            Ok(())
        };
        let r = compare(
            &format!(
                "copy-up {} at layer {l}, dir depth {d} on fresh {fs_name}",
                human(size)
            ),
            env.reps,
            Timed::just(|| open_next(&durable, &nd)),
            "the same on a --volatile mount",
            Timed::just(|| open_next(&volatile, &nv)),
            None,
        )?;
        cells += &format!(
            "{}\n",
            serde_json::json!({"type": "cell", "file_size": size, "layer_depth": l, "dir_depth": d,
                "p50": r.candidate.median_ns, "p99": r.candidate.max_ns, "volatile_p50": r.baseline.median_ns})
        );
        results.push(r);
    }
    // Names the kernel in the plot's title (a stopwatch, not a backend,
    // timed these).
    cells += &format!(
        "{}\n",
        serde_json::json!({"type": "sweep", "kernel_release": strata_prof::backend::kernel_release()})
    );
    fs::create_dir_all(out_dir)?;
    let plot_data = format!("cow-matrix-{}.jsonl", fs_name.to_lowercase());
    fs::write(out_dir.join(plot_data), cells)?;
    crate::fixtures::unmount_all_beneath(&dir);
    Ok(results)
}

fn human(v: u64) -> String {
    if v >= 1 << 20 {
        format!("{} MiB", v >> 20)
    } else {
        format!("{} KiB", v >> 10)
    }
}

/// strata-prof attached for the candidate samples, detached for the
/// baseline ones.
struct Profiler<'a> {
    bin: &'a Path,
    running: RefCell<Option<ProfilerProcess>>,
}

impl Profiler<'_> {
    fn attach(&self) -> Result<()> {
        if self.running.borrow().is_none() {
            let args = ["record", "--json", "--interval", "1h"];
            *self.running.borrow_mut() = Some(ProfilerProcess::start(self.bin, &args)?);
        }
        Ok(())
    }

    fn detach(&self) -> Result<()> {
        if let Some(p) = self.running.borrow_mut().take() {
            p.interrupt()?;
        }
        Ok(())
    }
}

/// On a fresh ext4: the profiler's cost per copy-up does not depend on the
/// upper filesystem, but the root filesystem's allocator would drown it.
pub fn profiler_overhead(env: &Env) -> Result<Vec<BenchResult>> {
    let fs = LoopFs::ext4(
        &env.dir("overhead-fs").join("ext4.img"),
        &env.work.join("overhead-fs/ext4"),
        8 << 30,
    )?;
    let root = fs.mount.join("store");
    let prof = Profiler {
        bin: &env.prof,
        running: RefCell::new(None),
    };
    let per_sample = if env.quick { 50 } else { 200 };
    let samples = 2 * (env.reps + 1);
    let image = cell_image(env, &root, 64 << 10, 1, 2, per_sample * samples)?;
    let id = env.strata(&root, &["create", &image])?;
    let merged = PathBuf::from(env.strata(&root, &["mount", &id])?);
    let next = Cell::new(0usize);
    let copy_ups = || -> Result<()> {
        for _ in 0..per_sample {
            let i = next.replace(next.get() + 1);
            drop(
                fs::OpenOptions::new()
                    .write(true)
                    .open(merged.join(format!("d0/d1/f{i}")))?,
            );
        }
        Ok(())
    };
    // Each side copies up files of its own: the first `samples` batches
    // go to whichever runs; the image has enough for both.
    let out = vec![compare(
        &format!("{per_sample} copy-ups of 64 KiB on fresh ext4, profiler attached"),
        env.reps,
        Timed::new(|| prof.attach(), copy_ups),
        "the same without the profiler",
        Timed::new(|| prof.detach(), copy_ups),
        Some(1.02),
    )?];
    prof.detach()?;
    env.strata(&root, &["rm", "-f", &id])?;
    Ok(out)
}
