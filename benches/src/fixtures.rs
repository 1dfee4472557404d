//! What the benches run on: generated images, stores, processes.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use strata_driver::image::build::{write_docker_archive, LayerTar};

pub struct Env {
    /// Scratch space on a disk filesystem.
    pub work: PathBuf,
    pub strata: PathBuf,
    pub prof: PathBuf,
    pub quick: bool,
    pub reps: usize,
}

impl Env {
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.work.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// `strata --root ROOT ARGS...`, to run.
    fn strata_command(&self, root: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.strata);
        cmd.arg("--root").arg(root).args(args);
        cmd
    }

    /// Runs `strata --root ROOT ARGS...`, returning stdout.
    pub fn strata(&self, root: &Path, args: &[&str]) -> Result<String> {
        let out = self
            .strata_command(root, args)
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running {}", self.strata.display()))?;
        if !out.status.success() {
            bail!("strata {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs strata like `strata`, returning its peak RSS (KiB) instead of
    /// its output: wait4's rusage of that one child.
    pub fn strata_peak_rss(&self, root: &Path, args: &[&str]) -> Result<u64> {
        let child = self
            .strata_command(root, args)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("running {}", self.strata.display()))?;
        let mut status = 0;
        // SAFETY: zeroed rusage is valid; wait4 fills it for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a pid we spawned and have not waited for; valid pointers.
        let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        if pid < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("strata {args:?} failed (status {status:#x})");
        }
        Ok(usage.ru_maxrss as u64)
    }
}

/// Runs a command to completion, its output discarded.
pub fn sh(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {args:?}: {status}");
    }
    Ok(())
}

/// An image of `layers` layers of `files` files each (sizes cycling
/// through 1..64 KiB, spread over 20 directories), as layer tars plus a
/// docker-archive directory.
pub struct Image {
    pub archive: PathBuf,
    pub layer_tars: Vec<PathBuf>,
    pub bytes: u64,
}

pub fn image(dir: &Path, layers: usize, files: usize, tag: &str) -> Result<Image> {
    std::fs::create_dir_all(dir)?;
    let mut tars = Vec::new();
    let mut bytes = 0;
    for l in 0..layers {
        let p = dir.join(format!("layer{l}.tar"));
        let mut t = LayerTar::create(&p)?;
        for d in 0..20 {
            t.dir(&format!("l{l}d{d}"), 0o755, 0, 0)?;
        }
        for f in 0..files {
            let size = 1024 * (1 + (f as u64 * 7919) % 64);
            t.pattern_file(&format!("l{l}d{}/f{f}", f % 20), size, (f % 251) as u8 + 1)?;
            bytes += size;
        }
        tars.push(t.finish()?);
    }
    let archive = dir.join("archive");
    write_docker_archive(&archive, tag, &tars)?;
    Ok(Image {
        archive,
        layer_tars: tars,
        bytes,
    })
}

/// One file per layer, plus `bottom_files` small files in the bottom one.
pub fn deep_image(dir: &Path, layers: usize, bottom_files: usize, tag: &str) -> Result<PathBuf> {
    let mut tars = Vec::new();
    for l in 0..layers {
        let p = dir.join(format!("deep{l}.tar"));
        let mut t = LayerTar::create(&p)?;
        if l == 0 {
            t.dir("data", 0o755, 0, 0)?;
            for f in 0..bottom_files {
                t.file(&format!("data/f{f}"), format!("file {f}").as_bytes(), 0o644)?;
            }
        }
        t.file(&format!("layer{l}"), b"x", 0o644)?;
        tars.push(t.finish()?);
    }
    let archive = dir.join(format!("archive-{layers}"));
    write_docker_archive(&archive, tag, &tars)?;
    Ok(archive)
}

pub fn layer_dirs(store_root: &Path, image_ref: &str) -> Result<Vec<PathBuf>> {
    let store = strata_driver::Store::open(store_root)?;
    let img = store.find_image(image_ref)?;
    Ok(img
        .layers
        .iter()
        .rev()
        .map(|l| store.layer_diff(l))
        .collect())
}

pub fn unmount_all_beneath(dir: &Path) {
    strata_driver::testing::unmount_beneath(dir);
}

/// A real Debian rootfs as a one-layer OCI image: debootstrap (minbase
/// bookworm, from the Debian mirror apt uses) packed by umoci. Built once,
/// then cached under `cache`. None, with the reason, when the tools or the
/// mirror are not there.
pub fn debian_image(cache: &Path) -> Result<PathBuf, String> {
    let layout = cache.join("debian-oci");
    if layout.join("index.json").exists() {
        return Ok(layout);
    }
    for tool in ["debootstrap", "umoci"] {
        if Command::new("which")
            .arg(tool)
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Err(format!("{tool} is not installed"));
        }
    }
    let work = cache.join("debian-build");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let rootfs = work.join("rootfs");
    let step = |program: &str, args: &[&str]| -> Result<(), String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        Ok(())
    };
    eprintln!(
        "  building the Debian image (debootstrap, once; cached in {})",
        cache.display()
    );
    step(
        "debootstrap",
        &[
            "--variant=minbase",
            "bookworm",
            rootfs.to_str().unwrap(),
            "http://deb.debian.org/debian",
        ],
    )?;
    let oci = work.join("oci");
    let img = format!("{}:bookworm", oci.display());
    step("umoci", &["init", "--layout", oci.to_str().unwrap()])?;
    step("umoci", &["new", "--image", &img])?;
    let bundle = work.join("bundle");
    step(
        "umoci",
        &["unpack", "--image", &img, bundle.to_str().unwrap()],
    )?;
    step(
        "cp",
        &[
            "-a",
            &format!("{}/.", rootfs.display()),
            bundle.join("rootfs").to_str().unwrap(),
        ],
    )?;
    step(
        "umoci",
        &["repack", "--image", &img, bundle.to_str().unwrap()],
    )?;
    std::fs::rename(&oci, &layout).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(layout)
}

/// What a user would type instead of strata: mkdir + mount -t overlay of
/// `lowers` (top first) at `dir`/merged.
pub fn hand_mount(dir: &Path, lowers: &[PathBuf]) -> Result<()> {
    let p = |d: &str| {
        dir.join(d)
            .to_str()
            .expect("UTF-8 scratch paths")
            .to_string()
    };
    sh("mkdir", &["-p", &p("upper"), &p("work"), &p("merged")])?;
    let lowerdir = lowers
        .iter()
        .map(|l| l.to_str().expect("UTF-8 layer paths"))
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        p("upper"),
        p("work")
    );
    sh(
        "mount",
        &["-t", "overlay", "overlay", "-o", &opts, &p("merged")],
    )
}

pub use strata_driver::testing::loopfs::LoopFs;

/// A running strata-prof (`record` or `serve`), started and waited on
/// until it attached (and, for serve, says where it listens). Its stdout
/// is collected as it comes (a full pipe would stall it); killed on drop.
pub struct ProfilerProcess {
    child: Child,
    /// serve's /metrics address.
    pub addr: Option<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl ProfilerProcess {
    pub fn start(prof: &Path, args: &[&str]) -> Result<ProfilerProcess> {
        let mut child = Command::new(prof)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting strata-prof")?;
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut addr = None;
        let serving = args[0] == "serve";
        let mut line = String::new();
        while stderr.read_line(&mut line)? > 0 {
            if let Some(url) = line.trim().split("serving http://").nth(1) {
                addr = Some(url.trim_end_matches("/metrics").to_string());
            }
            if line.contains("backend") && !serving || addr.is_some() {
                break;
            }
            line.clear();
        }
        if !line.contains("backend") && addr.is_none() {
            bail!("strata-prof did not start");
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let mut out = child.stdout.take().unwrap();
        let stdout = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }));
        Ok(ProfilerProcess {
            child,
            addr,
            stdout,
        })
    }

    /// CPU time so far of all its threads, in ns (schedstat: exact,
    /// where /proc's utime and stime count 10 ms ticks).
    pub fn cpu_ns(&self) -> Result<u64> {
        let mut total = 0;
        for task in fs::read_dir(format!("/proc/{}/task", self.child.id()))? {
            let stat = fs::read_to_string(task?.path().join("schedstat"))?;
            total += stat
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse::<u64>()?;
        }
        Ok(total)
    }

    pub fn scrape(&self) -> Result<String> {
        let addr = self.addr.as_deref().context("not serve")?;
        Ok(ureq::get(&format!("http://{addr}/metrics"))
            .call()?
            .into_string()?)
    }

    /// SIGINT, as Ctrl-C: it drains, detaches and prints its summary;
    /// returns all it printed.
    pub fn interrupt(mut self) -> Result<String> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )?;
        self.child.wait()?;
        Ok(self.stdout.take().unwrap().join().unwrap_or_default())
    }
}

impl Drop for ProfilerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
