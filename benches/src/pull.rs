//! `strata image pull` from a registry on 127.0.0.1 (the distribution
//! registry the tests use), cold store, against the physical floor (curl
//! of every blob at once, each through the same decompressor into `tar
//! -x`, then `sync -f`) and against the engines' own pulls of the same
//! image from the same registry: `podman pull`, `ctr images pull`
//! (overlayfs) and `docker pull` (overlay2). Every store and extraction
//! is on the same fresh filesystem; the registry's own storage is only
//! read, and read alike by every side.

use std::cell::Cell;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use strata_driver::archive::compression::Compression;
use strata_driver::image::build::write_oci_layout;
use strata_driver::pull::{PullOptions, RemoteImage};
use strata_driver::testing::containerd::{Containerd, Release, SNAPSHOTTER};
use strata_driver::testing::docker::Dockerd;
use strata_driver::testing::podman::Podman;
use strata_driver::testing::registry::{Registry, RegistryConfig};

use crate::fixtures::{image, Env};
use crate::harness::{compare, BenchResult, Timed};
use crate::peers::{load_afresh, run};

/// The bars (issue 24): against the physical floor, and against the
/// fastest engine.
const FLOOR_BAR: f64 = 1.2;
const PEER_BAR: f64 = 0.5;

/// An image pushed into the bench's registry.
struct Pushed {
    label: String,
    reference: String,
}

/// Every pull bench; with `only_containerd` (`--only containerd-pull`),
/// the containerd pulls alone.
pub fn all(env: &Env, cache: &Path, only_containerd: bool) -> Result<Vec<BenchResult>> {
    let reg = Registry::start(&env.dir("registry"), &RegistryConfig::default());
    let mut images = vec![synthetic(
        env,
        &reg,
        if env.quick { (4, 300) } else { (6, 2000) },
    )?];
    if !env.quick {
        let layout = crate::fixtures::debian_image(cache)
            .map_err(|why| anyhow::anyhow!("the Debian image: {why}"))?;
        reg.push(
            &format!("oci:{}:bookworm", layout.display()),
            "bench/debian:bookworm",
            &[],
        );
        images.push(Pushed {
            label: "Debian".into(),
            reference: format!("{}/bench/debian:bookworm", reg.host),
        });
    }
    let mut out = Vec::new();
    for (fs_name, fs) in crate::ops::fresh_filesystems(env, "pull-fs")? {
        for img in &images {
            out.push(through_containerd(env, &fs.mount, fs_name, img)?);
            if only_containerd {
                continue;
            }
            out.push(against_floor(env, &fs.mount, fs_name, img)?);
            if !env.quick {
                out.extend(against_peers(env, &fs.mount, fs_name, img)?);
            }
        }
        if !env.quick && !only_containerd && fs_name == "ext4" {
            // 1 GiB, for the memory bound (64 MiB) as much as the time.
            let big = synthetic(env, &reg, (6, 5300))?;
            out.push(against_floor(env, &fs.mount, fs_name, &big)?);
        }
    }
    Ok(out)
}

/// A `layers` x `files` image (fixtures::image) pushed with gzip layers.
fn synthetic(env: &Env, reg: &Registry, (layers, files): (usize, usize)) -> Result<Pushed> {
    let dir = env.dir(&format!("pull-src-{layers}x{files}"));
    let img = image(&dir, layers, files, "bench:pull")?;
    let layout = dir.join("layout");
    write_oci_layout(&layout, "v1", &img.layer_tars, Compression::Gzip)?;
    let repo = format!("bench/synthetic-{layers}x{files}");
    reg.push(
        &format!("oci:{}:v1", layout.display()),
        &format!("{repo}:v1"),
        &[],
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Pushed {
        label: format!("{layers}x{files} files ({} MB)", img.bytes / 1_000_000),
        reference: format!("{}/{repo}:v1", reg.host),
    })
}

/// strata's pull into a fresh store under `fs`, every sample cold; the
/// largest peak RSS kept in `peak_rss`.
fn strata_pull<'a>(
    env: &'a Env,
    fs: &'a Path,
    reference: &'a str,
    peak_rss: &'a Cell<u64>,
) -> Timed<'a> {
    let root = fs.join("strata");
    Timed::new(
        {
            let root = root.clone();
            move || {
                let _ = std::fs::remove_dir_all(&root);
                Ok(())
            }
        },
        move || {
            let rss = env.strata_peak_rss(&root, &["image", "pull", "--quiet", reference])?;
            peak_rss.set(peak_rss.get().max(rss));
            Ok(())
        },
    )
    .settled()
}

fn against_floor(env: &Env, fs: &Path, fs_name: &str, img: &Pushed) -> Result<BenchResult> {
    let remote = RemoteImage::resolve(&img.reference, &PullOptions::default())?;
    let host = &remote.reference.registry;
    let blobs: Vec<(String, &'static str)> = remote
        .resolved
        .layers
        .iter()
        .map(|l| {
            let url = format!(
                "http://{host}/v2/{}/blobs/{}",
                remote.reference.repository, l.digest
            );
            let inflate = if l.media_type.ends_with("gzip") {
                "gzip -dc"
            } else if l.media_type.ends_with("zstd") {
                "zstd -dc"
            } else {
                "cat"
            };
            (url, inflate)
        })
        .collect();
    let extract = fs.join("floor");
    let peak_rss = Cell::new(0);
    let floor = Timed::new(
        || {
            let _ = std::fs::remove_dir_all(&extract);
            Ok(())
        },
        || curl_tar_all(&blobs, &extract),
    )
    .settled();
    Ok(compare(
        &format!("pull {} on fresh {fs_name}", img.label),
        env.reps,
        strata_pull(env, fs, &img.reference, &peak_rss),
        "curl, inflate, tar -x of every blob at once + sync -f",
        floor,
        Some(FLOOR_BAR),
    )?
    .with_peak_rss(peak_rss.get()))
}

/// Every blob at once: `curl URL | INFLATE | tar -x -C extract/N`; then
/// one `sync -f`.
fn curl_tar_all(blobs: &[(String, &str)], extract: &Path) -> Result<()> {
    let children: Vec<Child> = blobs
        .iter()
        .enumerate()
        .map(|(i, (url, inflate))| {
            let dir = extract.join(i.to_string());
            std::fs::create_dir_all(&dir)?;
            Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "set -o pipefail; curl -sSf '{url}' | {inflate} | tar -x -C '{}'",
                    dir.display()
                ))
                .stdin(Stdio::null())
                .spawn()
                .context("starting curl | tar")
        })
        .collect::<Result<_>>()?;
    for mut c in children {
        if !c.wait()?.success() {
            bail!("curl | tar failed");
        }
    }
    crate::fixtures::sh("sync", &["-f", extract.to_str().context("UTF-8 path")?])
}

/// containerd 1.7 pulling as CRI does (the Go client: unpack, image
/// labels) into strata, which fetches the layers itself, against the same
/// containerd pulling into its own overlayfs snapshotter; the image
/// removed (`--sync`: content and snapshots too) before every sample.
fn through_containerd(env: &Env, fs: &Path, fs_name: &str, img: &Pushed) -> Result<BenchResult> {
    let c = Containerd::start_release(&fs.join("ctrd-1.7"), &env.strata, Release::V1_7);
    let r = img.reference.as_str();
    let c = &c;
    let pull_into = |snapshotter: &'static str| {
        load_afresh(
            move || {
                run(
                    c.ctr_command(&["images", "rm", "--sync", r]),
                    "ctr images rm",
                )
            },
            move || {
                c.pull_as_cri_into(snapshotter, r);
                Ok(())
            },
        )
        .settled()
    };
    let result = compare(
        &format!("containerd pull {} on fresh {fs_name}", img.label),
        env.reps,
        pull_into(SNAPSHOTTER),
        "containerd pull into overlayfs",
        pull_into("overlayfs"),
        Some(PEER_BAR),
    );
    let _ = run(
        c.ctr_command(&["images", "rm", "--sync", r]),
        "ctr images rm",
    );
    result
}

fn against_peers(env: &Env, fs: &Path, fs_name: &str, img: &Pushed) -> Result<Vec<BenchResult>> {
    if !strata_driver::mount::is_mountpoint(fs) {
        bail!("{} is no longer the fresh {fs_name}", fs.display());
    }
    let peak_rss = Cell::new(0);
    let name = |peer: &str| format!("pull {} on fresh {fs_name} vs {peer}", img.label);
    let r = img.reference.as_str();
    let mut out = Vec::new();

    let podman = Podman::new(&fs.join("podman"));
    let rmi = |p: &Podman| run(p.command(&["rmi", "-a", "-f"]), "podman rmi");
    out.push(compare(
        &name("podman"),
        env.reps,
        strata_pull(env, fs, r, &peak_rss),
        "podman pull",
        load_afresh(
            || rmi(&podman),
            || {
                run(
                    podman.command(&["pull", "-q", "--tls-verify=false", r]),
                    "podman pull",
                )
            },
        )
        .settled(),
        Some(PEER_BAR),
    )?);
    rmi(&podman)?;

    let c = Containerd::start(&fs.join("ctr"), &env.strata);
    let ctr_rm = || {
        run(
            c.ctr_command(&["images", "rm", "--sync", r]),
            "ctr images rm",
        )
    };
    out.push(compare(
        &name("ctr"),
        env.reps,
        strata_pull(env, fs, r, &peak_rss),
        "ctr images pull (overlayfs)",
        load_afresh(ctr_rm, || {
            run(
                c.ctr_command(&[
                    "images",
                    "pull",
                    "--plain-http",
                    "--snapshotter",
                    "overlayfs",
                    r,
                ]),
                "ctr images pull",
            )
        })
        .settled(),
        Some(PEER_BAR),
    )?);
    let _ = ctr_rm();
    drop(c);

    let d = Dockerd::start(&fs.join("docker"));
    out.push(compare(
        &name("docker"),
        env.reps,
        strata_pull(env, fs, r, &peak_rss),
        "docker pull (overlay2)",
        load_afresh(
            || run(d.docker_command(&["rmi", "-f", r]), "docker rmi"),
            || run(d.docker_command(&["pull", "-q", r]), "docker pull"),
        )
        .settled(),
        Some(PEER_BAR),
    )?);
    drop(d);
    Ok(out)
}
