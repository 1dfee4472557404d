//! Import of the same file by strata and by each engine a user would load
//! it with: `podman load`, `buildah pull`, `ctr images import` (overlayfs
//! snapshotter) and `docker load` (overlay2), for the Debian image as a
//! docker-archive and as an OCI archive with gzip layers (which docker
//! 20.10 cannot load). Every store, strata's and each peer's, is on the
//! same freshly made filesystem, in the same run; each peer's image is
//! removed between samples so that every sample writes its layers again.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use strata_driver::testing::containerd::Containerd;
use strata_driver::testing::docker::Dockerd;
use strata_driver::testing::podman::Podman;

use crate::fixtures::Env;
use crate::harness::{compare, BenchResult, Timed};
use crate::ops::strata_import;

/// The bar (issue 14): at most half the fastest peer's time.
const BAR: f64 = 0.5;
/// The tag the Debian docker-archive carries.
const TAG: &str = "debian:bookworm";

/// The Debian image as one `docker save` file (skopeo converts the
/// debootstrap-made OCI layout once; cached).
pub fn debian_docker_archive(cache: &Path) -> Result<PathBuf, String> {
    cached_from_layout(cache, "debian-docker-archive.tar", |layout, out| {
        let mut skopeo = Command::new("skopeo");
        skopeo
            .arg("copy")
            .arg(format!("oci:{}:bookworm", layout.display()))
            .arg(format!("docker-archive:{}:{TAG}", out.display()))
            .stdout(Stdio::null());
        skopeo
    })
}

/// The Debian image's OCI layout (gzip layers, as umoci wrote it) as one
/// OCI archive file: what `podman load`, `buildah pull oci-archive:` and
/// `ctr images import` take. Cached.
pub fn debian_oci_archive(cache: &Path) -> Result<PathBuf, String> {
    cached_from_layout(cache, "debian-oci-archive.tar", |layout, out| {
        let mut tar = Command::new("tar");
        tar.arg("-cf").arg(out).arg("-C").arg(layout).arg(".");
        tar
    })
}

/// `cache/name`, made once from the Debian OCI layout by the command
/// `make(layout, partial)` returns, which writes `partial`.
fn cached_from_layout(
    cache: &Path,
    name: &str,
    make: impl FnOnce(&Path, &Path) -> Command,
) -> Result<PathBuf, String> {
    let out = cache.join(name);
    if out.exists() {
        return Ok(out);
    }
    let layout = crate::fixtures::debian_image(cache)?;
    let partial = cache.join(format!("{name}.partial"));
    let _ = std::fs::remove_file(&partial);
    let mut cmd = make(&layout, &partial);
    let status = cmd
        .status()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !status.success() {
        return Err(format!("{:?} making {name}: {status}", cmd.get_program()));
    }
    std::fs::rename(&partial, &out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// One file every peer imports, and how each names its format.
struct Source {
    /// In the bench's name: "docker-archive", "OCI archive (gzip)".
    label: &'static str,
    file: PathBuf,
    /// buildah's transport for it.
    buildah_transport: &'static str,
    /// docker 20.10 loads only docker-archives.
    docker_loads_it: bool,
}

/// Runs `cmd`, which must succeed.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// strata's import of `src` into a store under `fs`, vs one peer.
fn against(
    env: &Env,
    fs: &Path,
    fs_name: &str,
    src: &Source,
    peer: &str,
    load: Timed<'_>,
) -> Result<BenchResult> {
    let root = fs.join("strata");
    let file = src.file.to_str().context("non-UTF-8 path")?.to_string();
    let peak_rss = Cell::new(0);
    Ok(compare(
        &format!("import Debian {} on fresh {fs_name}", src.label),
        env.reps,
        strata_import(env, &root, &file, "debian", &peak_rss).settled(),
        peer,
        load.settled(),
        Some(BAR),
    )?
    .with_peak_rss(peak_rss.get()))
}

/// A peer's load, whose image is removed (by `remove`) before every
/// sample but the first, so that each sample writes its layers again.
pub(crate) fn load_afresh<'a>(
    remove: impl Fn() -> Result<()> + 'a,
    load: impl Fn() -> Result<()> + 'a,
) -> Timed<'a> {
    let loaded = std::rc::Rc::new(Cell::new(false));
    let after = loaded.clone();
    Timed::new(
        move || {
            if loaded.replace(false) {
                remove()?;
            }
            Ok(())
        },
        move || {
            load()?;
            after.set(true);
            Ok(())
        },
    )
}

/// On a fresh ext4 and a fresh XFS. Not in --quick runs: each peer
/// takes seconds per sample.
pub fn all(env: &Env, cache: &Path) -> Result<Vec<BenchResult>> {
    if env.quick {
        return Ok(Vec::new());
    }
    let sources = [
        Source {
            label: "docker-archive",
            file: debian_docker_archive(cache)
                .map_err(|why| anyhow::anyhow!("the Debian docker-archive: {why}"))?,
            buildah_transport: "docker-archive",
            docker_loads_it: true,
        },
        Source {
            label: "OCI archive (gzip)",
            file: debian_oci_archive(cache)
                .map_err(|why| anyhow::anyhow!("the Debian OCI archive: {why}"))?,
            buildah_transport: "oci-archive",
            docker_loads_it: false,
        },
    ];
    let mut out = Vec::new();
    for (fs_name, fs) in crate::ops::fresh_filesystems(env, "peers-fs")? {
        // Dropping `fs` unmounts the peers' own mounts (c/storage binds
        // its overlay dir) before the filesystem itself.
        for src in &sources {
            out.extend(on(env, &fs.mount, fs_name, src)?);
        }
    }
    Ok(out)
}

fn on(env: &Env, fs: &Path, fs_name: &str, src: &Source) -> Result<Vec<BenchResult>> {
    // Never the root filesystem under a fresh filesystem's name.
    if !strata_driver::mount::is_mountpoint(fs) {
        bail!("{} is no longer the fresh {fs_name}", fs.display());
    }
    let mut out = Vec::new();
    let file = src.file.to_str().context("non-UTF-8 path")?;

    // Where podman and buildah unpack an OCI archive before reading it:
    // on the fresh filesystem too, not the root filesystem's /var/tmp.
    let scratch = fs.join("peer-tmp");
    std::fs::create_dir_all(&scratch)?;
    let podman = Podman::new(&fs.join("podman"));
    let rmi = |p: &Podman| run(p.command(&["rmi", "-a", "-f"]), "podman rmi");
    out.push(against(
        env,
        fs,
        fs_name,
        src,
        "podman load",
        load_afresh(
            || rmi(&podman),
            || {
                let mut load = podman.command(&["load", "-q", "-i", file]);
                load.env("TMPDIR", &scratch);
                run(load, "podman load")
            },
        ),
    )?);
    rmi(&podman)?;

    let buildah = |args: &[&str]| {
        let mut cmd = Command::new("buildah");
        let d = fs.join("buildah");
        cmd.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "overlay"])
            .args(args)
            .env("TMPDIR", &scratch);
        cmd
    };
    let pull = format!("{}:{file}", src.buildah_transport);
    out.push(against(
        env,
        fs,
        fs_name,
        src,
        "buildah pull",
        load_afresh(
            || run(buildah(&["rmi", "-a", "-f"]), "buildah rmi"),
            || run(buildah(&["pull", "-q", &pull]), "buildah pull"),
        ),
    )?);
    run(buildah(&["rmi", "-a", "-f"]), "buildah rmi")?;

    out.push(ctr_import(env, fs, fs_name, src)?);
    if src.docker_loads_it {
        out.push(docker_load(env, fs, fs_name, src)?);
    }
    Ok(out)
}

/// `ctr images import` with containerd's own overlayfs snapshotter, its
/// root on the same filesystem.
fn ctr_import(env: &Env, fs: &Path, fs_name: &str, src: &Source) -> Result<BenchResult> {
    let c = Containerd::start(&fs.join("ctr"), &env.strata);
    let file = src.file.to_str().context("non-UTF-8 path")?;
    // Whatever name the archive gave it; --sync: its content and
    // snapshots are gone too.
    let rmi_all = || -> Result<()> {
        let listed = c.ctr(&["images", "ls", "-q"]);
        for name in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            run(c.ctr_command(&["images", "rm", "--sync", name]), "ctr rm")?;
        }
        Ok(())
    };
    let result = against(
        env,
        fs,
        fs_name,
        src,
        "ctr images import",
        load_afresh(rmi_all, || {
            let import = ["images", "import", "--snapshotter", "overlayfs", file];
            run(c.ctr_command(&import), "ctr images import")
        }),
    );
    let _ = rmi_all();
    drop(c);
    result
}

/// `docker load` (overlay2), its data root on the same filesystem.
fn docker_load(env: &Env, fs: &Path, fs_name: &str, src: &Source) -> Result<BenchResult> {
    let d = Dockerd::start(&fs.join("docker"));
    let file = src.file.to_str().context("non-UTF-8 path")?;
    let result = against(
        env,
        fs,
        fs_name,
        src,
        "docker load",
        load_afresh(
            || run(d.docker_command(&["rmi", "-f", TAG]), "docker rmi"),
            || run(d.docker_command(&["load", "-q", "-i", file]), "docker load"),
        ),
    );
    drop(d);
    result
}
