//! A private containerd (Debian's 1.6, installed by `cargo xtask setup`)
//! whose proxy snapshotter `strata` is a `strata snapshotter` process on a
//! store of its own: for the engine tests and the benches. Everything
//! lives under one directory; dropping it (on panic too) kills containerd,
//! the snapshotter and every shim they started, and unmounts what they
//! left beneath it.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::testing::{layer, LayerFn};
use crate::Store;

pub const SNAPSHOTTER: &str = "strata";
/// The name `busybox_image` is tagged with.
pub const IMAGE: &str = "docker.io/library/strata-engine-test:latest";
/// The bottom layer's /data/file.
pub const BOTTOM: &[u8] = b"written in the bottom layer\n";

/// Which containerd: bookworm's 1.6 (installed by setup), or trixie's 1.7
/// (unpacked under target/containerd-1.7 by setup), whose unpacker
/// speaks the remote-snapshotter protocol with AppendInfoHandlerWrapper's
/// labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    V1_6,
    V1_7,
}

impl Release {
    /// Where its binaries (and shims) are; None: on PATH.
    fn bin_dir(self) -> Option<PathBuf> {
        match self {
            Release::V1_6 => None,
            Release::V1_7 => Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/containerd-1.7/root/usr/bin"),
            ),
        }
    }

    fn command(self, name: &str) -> Command {
        match self.bin_dir() {
            None => Command::new(name),
            Some(dir) => {
                let mut cmd = Command::new(dir.join(name));
                // Its own shim first; runc stays bookworm's, on PATH.
                let path = std::env::var("PATH").unwrap_or_default();
                cmd.env("PATH", format!("{}:{path}", dir.display()));
                cmd
            }
        }
    }
}

/// The Go client that pulls through containerd as CRI does (built by
/// `cargo xtask setup` from trixie's containerd 1.7 sources).
pub fn cri_style_pull_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-bin/strata-containerd-pull")
}

pub struct Containerd {
    pub dir: PathBuf,
    pub release: Release,
    /// containerd namespace of this instance's images and containers. runc
    /// keeps its state per namespace under one global directory, so each
    /// instance has its own and deletes it when dropped.
    pub namespace: String,
    strata: PathBuf,
    /// The snapshotter writes the blobs it fetches to containerd's
    /// content store (`--containerd`), as Docker needs.
    writes_content: bool,
    /// More proxy snapshotters to register: (name, socket).
    extra_proxies: Vec<(String, PathBuf)>,
    /// containerd's CRI plugin on, as a Kubernetes node runs it.
    cri: Option<CriConfig>,
    snapshotter: Option<SnapshotterProcess>,
    containerd: Option<Child>,
}

/// A running `strata snapshotter`; killed (-9) on drop, on panic too.
pub struct SnapshotterProcess {
    child: Child,
}

impl SnapshotterProcess {
    /// Serves the store at `root` on `socket`, once it listens. Its output
    /// is appended to `log`, or shown with the test's.
    pub fn start(strata: &Path, root: &Path, socket: &Path, log: Option<&Path>) -> Self {
        Self::start_with(strata, root, socket, log, &[])
    }

    /// The same with more `strata snapshotter` flags.
    pub fn start_with(
        strata: &Path,
        root: &Path,
        socket: &Path,
        log: Option<&Path>,
        flags: &[&std::ffi::OsStr],
    ) -> Self {
        let mut cmd = Command::new(strata);
        cmd.arg("--root")
            .arg(root)
            .args(["snapshotter", "--address"])
            .arg(socket)
            .args(flags)
            .stdin(Stdio::null());
        if let Some(log) = log {
            let f = fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            cmd.stdout(f.try_clone().unwrap()).stderr(f);
        }
        let mut child = cmd.spawn().unwrap();
        wait_for_socket(socket, "strata snapshotter", &mut child);
        SnapshotterProcess { child }
    }

    /// kill -9: no chance to clean anything up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and how it exited.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for SnapshotterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_socket(path: &Path, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(path).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited before listening on {}: {status}",
                path.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Containerd {
    /// Starts both under `dir` (on a disk filesystem), `strata` being the
    /// CLI binary.
    pub fn start(dir: &Path, strata: &Path) -> Containerd {
        Containerd::start_release(dir, strata, Release::V1_6)
    }

    /// The same with containerd `release`.
    pub fn start_release(dir: &Path, strata: &Path, release: Release) -> Containerd {
        Containerd::start_full(dir, strata, release, false)
    }

    /// containerd 1.7 for a Docker Engine: the snapshotter writes the
    /// blobs it fetches into containerd's content store too.
    pub fn start_for_docker(dir: &Path, strata: &Path) -> Containerd {
        Containerd::start_full(dir, strata, Release::V1_7, true)
    }

    /// containerd 1.6 with more proxy snapshotters registered beside
    /// strata's: (name, socket), each already serving.
    pub fn start_with_proxies(dir: &Path, strata: &Path, extra: &[(&str, &Path)]) -> Containerd {
        let extra = extra
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_path_buf()))
            .collect();
        Containerd::start_configured(dir, strata, Release::V1_6, false, extra)
    }

    /// containerd 1.7 with its CRI plugin serving on the same socket, as
    /// kubelet's node runs it: images on strata (with the remote
    /// snapshotter labels), host-network pods, the pause image and a
    /// plain-HTTP registry from `cri`. CRI keeps everything in namespace
    /// `k8s.io`, which becomes this instance's.
    pub fn start_cri(dir: &Path, strata: &Path, cri: CriConfig) -> Containerd {
        fs::create_dir_all(dir).unwrap();
        let mut c = Containerd {
            dir: dir.to_path_buf(),
            release: Release::V1_7,
            namespace: "k8s.io".into(),
            strata: strata.to_path_buf(),
            writes_content: false,
            extra_proxies: Vec::new(),
            cri: Some(cri),
            snapshotter: None,
            containerd: None,
        };
        c.start_snapshotter();
        c.start_containerd();
        c
    }

    fn start_full(dir: &Path, strata: &Path, release: Release, writes_content: bool) -> Containerd {
        Containerd::start_configured(dir, strata, release, writes_content, Vec::new())
    }

    fn start_configured(
        dir: &Path,
        strata: &Path,
        release: Release,
        writes_content: bool,
        extra_proxies: Vec<(String, PathBuf)>,
    ) -> Containerd {
        fs::create_dir_all(dir).unwrap();
        let mut c = Containerd {
            dir: dir.to_path_buf(),
            release,
            namespace: format!("strata-test-{}", crate::fsutil::random_hex(4)),
            strata: strata.to_path_buf(),
            writes_content,
            extra_proxies,
            cri: None,
            snapshotter: None,
            containerd: None,
        };
        c.start_snapshotter();
        c.start_containerd();
        c
    }

    /// Starts containerd itself (again, after kill_containerd), its log
    /// appended to.
    pub fn start_containerd(&mut self) {
        assert!(self.containerd.is_none(), "containerd already running");
        let config = self.dir.join("containerd.toml");
        fs::write(&config, self.config()).unwrap();
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let mut child = self
            .release
            .command("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is installed by `cargo xtask setup`");
        wait_for_socket(&self.address(), "containerd", &mut child);
        self.containerd = Some(child);
    }

    /// kill -9 of containerd alone: its shims, and their containers, live on.
    pub fn kill_containerd(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn config(&self) -> String {
        let d = self.dir.display();
        let disabled = match self.cri {
            Some(_) => String::new(),
            None => r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#.to_string(),
        };
        let mut config = format!(
            r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
{disabled}

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[proxy_plugins]
  [proxy_plugins.{SNAPSHOTTER}]
    type = "snapshot"
    address = "{}"
"#,
            self.snapshotter_socket().display()
        );
        if let Some(cri) = &self.cri {
            config.push_str(&cri.section(&self.dir));
        }
        for (name, socket) in &self.extra_proxies {
            let _ = write!(
                config,
                "  [proxy_plugins.{name}]\n    type = \"snapshot\"\n    address = \"{}\"\n",
                socket.display()
            );
        }
        config
    }

    pub fn address(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    pub fn snapshotter_socket(&self) -> PathBuf {
        self.dir.join("strata.sock")
    }
    /// strata's CRI image service (a CRI node's), kubelet's
    /// imageServiceEndpoint.
    pub fn cri_images_socket(&self) -> PathBuf {
        self.dir.join("strata-cri-images.sock")
    }
    pub fn store_root(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn store(&self) -> Store {
        Store::open(self.store_root()).unwrap()
    }

    pub fn start_snapshotter(&mut self) {
        assert!(self.snapshotter.is_none(), "snapshotter already running");
        let address = self.address();
        let images = self.cri_images_socket();
        let mut flags: Vec<&std::ffi::OsStr> = Vec::new();
        if self.writes_content {
            flags.extend(["--containerd".as_ref(), address.as_os_str()]);
        }
        if self.cri.is_some() {
            // kubelet's imageServiceEndpoint, in front of containerd's CRI.
            flags.extend(["--cri-listen".as_ref(), images.as_os_str()]);
            flags.extend(["--cri-upstream".as_ref(), address.as_os_str()]);
        }
        self.snapshotter = Some(SnapshotterProcess::start_with(
            &self.strata,
            &self.store_root(),
            &self.snapshotter_socket(),
            Some(&self.dir.join("snapshotter.log")),
            &flags,
        ));
    }

    /// kill -9: no chance to clean anything up.
    pub fn kill_snapshotter(&mut self) {
        if let Some(p) = self.snapshotter.take() {
            p.kill();
        }
    }

    /// SIGTERM, and how it exited.
    pub fn stop_snapshotter(&mut self) -> std::process::ExitStatus {
        self.snapshotter.take().expect("snapshotter running").stop()
    }

    /// Pulls `reference` onto strata as CRI does (see
    /// cri_style_pull_binary); the image's manifest digest.
    pub fn pull_as_cri(&self, reference: &str) -> String {
        self.pull_as_cri_into(SNAPSHOTTER, reference)
    }

    /// The same into `snapshotter` (`overlayfs`: containerd's own).
    pub fn pull_as_cri_into(&self, snapshotter: &str, reference: &str) -> String {
        let out = Command::new(cri_style_pull_binary())
            .arg(self.address())
            .arg(&self.namespace)
            .arg(snapshotter)
            .arg(reference)
            .output()
            .expect("strata-containerd-pull is built by `cargo xtask setup`");
        super::stdout_of_success(out, &format!("strata-containerd-pull {reference}"))
            .trim()
            .to_string()
    }

    /// `ctr images import` of `tar` onto strata, to run or spawn.
    pub fn import_command(&self, tar: &Path) -> Command {
        self.ctr_command(&[
            "images",
            "import",
            "--snapshotter",
            SNAPSHOTTER,
            tar.to_str().unwrap(),
        ])
    }

    /// `ctr images import` of `tar` onto strata.
    pub fn import(&self, tar: &Path) -> Output {
        self.import_command(tar)
            .output()
            .expect("ctr is installed with containerd")
    }
    /// A `ctr` command against this containerd, in the test namespace.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.release.command("ctr");
        cmd.arg("--address")
            .arg(self.address())
            .args(["--namespace", &self.namespace])
            .args(args);
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args)
            .output()
            .expect("ctr is installed with containerd")
    }

    /// Runs `ctr`, panicking with its stderr unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        super::stdout_of_success(self.ctr(args), &format!("ctr {args:?}"))
    }

    /// `ctr run` of `/bin/sh -c script` as container `id`, on strata, from
    /// IMAGE (see busybox_image); `detach` returns once it started.
    pub fn run_sh(&self, id: &str, script: &str, detach: bool) -> String {
        self.run_sh_from(IMAGE, id, script, detach)
    }

    /// The same from `image`.
    pub fn run_sh_from(&self, image: &str, id: &str, script: &str, detach: bool) -> String {
        let mut args = vec!["run"];
        if detach {
            args.push("-d");
        }
        args.extend([
            "--snapshotter",
            SNAPSHOTTER,
            image,
            id,
            "/bin/sh",
            "-c",
            script,
        ]);
        self.ctr_ok(&args)
    }
}

impl Containerd {
    /// Where its shim and ctr are, for a dockerd's PATH.
    pub fn bin_dir(&self) -> Option<PathBuf> {
        self.release.bin_dir()
    }

    /// runc's record of this namespace's containers (their processes die
    /// with it), which would otherwise outlive the test under /run.
    fn delete_runc_state(&self) {
        let root = match self.cri {
            Some(_) => self.dir.join("runc").join(&self.namespace),
            None => Path::new("/run/containerd/runc").join(&self.namespace),
        };
        for e in fs::read_dir(&root).into_iter().flatten().flatten() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
        }
        let _ = fs::remove_dir_all(&root);
    }
}

/// What a CRI-enabled containerd is given (see Containerd::start_cri).
#[derive(Clone, Debug)]
pub struct CriConfig {
    /// The pod sandbox image (kubelet's `--pod-infra-container-image`).
    pub sandbox_image: String,
    /// A plain-HTTP registry (`127.0.0.1:PORT`) containerd may reach.
    pub registry: String,
    /// Where CRI keeps images and containers: strata, or containerd's
    /// own `overlayfs` for comparison.
    pub snapshotter: String,
    /// How often containerd refreshes its snapshot usage (seconds):
    /// its own default is 10; tests that compare stats right after a
    /// change take 1.
    pub stats_period: u32,
}

impl CriConfig {
    fn section(&self, dir: &Path) -> String {
        let d = dir.display();
        let (sandbox, host, sn) = (&self.sandbox_image, &self.registry, &self.snapshotter);
        let period = self.stats_period;
        for sub in ["cni/bin", "cni/conf"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  stats_collect_period = {period}
  # The sandbox lacks CAP_SYS_RESOURCE: the pause container's -998 would
  # fail in runc ("failed to update /proc/self/oom_score_adj").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{sn}"
    disable_snapshot_annotations = false
  # runc's state of this node's own: CRI's namespace (k8s.io) is every
  # node's, and each test's cleanup deletes what runc keeps there.
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{host}"]
    endpoint = ["http://{host}"]
"#
        )
    }
}

/// busybox with `sleep` for its entrypoint, pushed as the pod sandbox
/// ("pause") image: CRI runs the image's own command.
pub fn push_pause_image(reg: &super::registry::Registry, work: &Path) -> String {
    let tar = busybox_image(work, 0);
    let layout = work.join("pause-layout");
    let sh = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        super::stdout_of_success(out, &format!("{cmd:?}"));
    };
    sh(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("docker-archive:{}", tar.display()))
        .arg(format!("oci:{}:3.9", layout.display())));
    sh(Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:3.9", layout.display()))
        .args(["--config.entrypoint", "/bin/busybox"])
        .args(["--config.cmd", "sleep", "--config.cmd", "2147483647"]));
    reg.push(
        &format!("oci:{}:3.9", layout.display()),
        "test/pause:3.9",
        &[],
    );
    format!("{}/test/pause:3.9", reg.host)
}

/// The CRI client the tests drive containerd's CRI plugin with, call by
/// call (built by `cargo xtask setup` from trixie's cri-api sources).
pub fn cri_client_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-bin/strata-cri")
}

impl Containerd {
    /// One CRI call through `strata-cri`: its JSON answer, or its error.
    pub fn cri(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        self.cri_at(&self.address(), args)
    }

    /// The same to the CRI endpoint at `socket` (containerd's, or
    /// strata's image service).
    pub fn cri_at(&self, socket: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
        let out = Command::new(cri_client_binary())
            .arg(socket)
            .args(args)
            .output()
            .expect("strata-cri is built by `cargo xtask setup`");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// The same, panicking with the call and its error unless it succeeds.
    pub fn cri_ok(&self, args: &[&str]) -> serde_json::Value {
        self.cri(args)
            .unwrap_or_else(|e| panic!("CRI {args:?}: {e}\n{}", self.log()))
    }

    /// containerd's log so far, and runc's of each task, for a failing
    /// test's message.
    pub fn log(&self) -> String {
        let mut log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let tasks = self
            .dir
            .join("containerd/state/io.containerd.runtime.v2.task");
        for ns in fs::read_dir(tasks).into_iter().flatten().flatten() {
            for task in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let runc = fs::read_to_string(task.path().join("log.json")).unwrap_or_default();
                log.push_str(&format!("\nrunc, {}:\n{runc}", task.path().display()));
            }
        }
        log
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_snapshotter();
        // containerd's shims outlive containerd itself.
        super::kill_processes_naming(&self.dir);
        self.delete_runc_state();
        crate::mount::unmount_beneath(&self.dir);
    }
}

/// Three layers: a static busybox (Debian's busybox-static, installed by
/// setup) and files, `pad_files` 16 KiB files among them; a whiteout and
/// an opaque directory over them; one more file. Tagged IMAGE; returns
/// the `docker save` tar.
pub fn busybox_image(work: &Path, pad_files: usize) -> PathBuf {
    super::docker_save_tar(work, IMAGE, busybox_layers(pad_files, 0))
}

/// The bottom layer's file of `big_file_image`.
pub const BIG_FILE: &str = "data/big";

/// busybox_image with a `big` byte file BIG_FILE in the bottom layer: a
/// copy-up that shows in a container's size.
pub fn big_file_image(work: &Path, big: u64) -> PathBuf {
    super::docker_save_tar(work, IMAGE, busybox_layers(0, big))
}

fn busybox_layers(pad_files: usize, big: u64) -> Vec<LayerFn> {
    let busybox = fs::read("/bin/busybox").expect("busybox-static is installed by setup");
    vec![
        layer(move |t| {
            t.dir("bin", 0o755, 0, 0).unwrap();
            t.file("bin/busybox", &busybox, 0o755).unwrap();
            t.symlink("bin/sh", "busybox").unwrap();
            for d in ["data", "etc", "opq", "proc", "sys", "dev", "pad"] {
                t.dir(d, 0o755, 0, 0).unwrap();
            }
            t.file("data/file", BOTTOM, 0o644).unwrap();
            t.file("etc/gone", b"deleted above\n", 0o644).unwrap();
            t.file("opq/old", b"hidden by an opaque dir\n", 0o644)
                .unwrap();
            for i in 0..pad_files {
                t.pattern_file(&format!("pad/{i}"), 16 << 10, i as u8)
                    .unwrap();
            }
            if big > 0 {
                t.pattern_file(BIG_FILE, big, 7).unwrap();
            }
        }),
        layer(|t| {
            t.whiteout("etc/gone").unwrap();
            t.dir("opq", 0o755, 0, 0).unwrap();
            t.opaque("opq").unwrap();
            t.file("opq/new", b"new\n", 0o644).unwrap();
        }),
        layer(|t| {
            t.file("top", b"top layer\n", 0o644).unwrap();
        }),
    ]
}
