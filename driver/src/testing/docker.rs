//! A private dockerd with its own data-root, exec-root and socket and no
//! network setup (`--iptables=false --bridge=none`): bookworm's 20.10
//! (`docker.io`, unpacked under target/docker.io by `cargo xtask setup`)
//! with the overlay2 driver and a containerd of its own, or trixie's 26
//! (under target/docker-26) on a test's containerd 1.7, with its
//! containerd image store on a snapshotter (strata, or containerd's
//! overlayfs) or, for comparison, the classic overlay2 driver. Dropping
//! it (on panic too) kills dockerd and every process it left, and
//! unmounts what it left beneath its directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::containerd::Containerd;

/// Where setup unpacked a release's packages.
fn root_of(package_dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(package_dir)
        .join("root")
}

/// Where a Docker Engine 26 keeps its images and containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage<'a> {
    /// The containerd image store on this containerd snapshotter
    /// (`"storage-driver"` names it, with the containerd-snapshotter
    /// feature on).
    Snapshotter(&'a str),
    /// The classic graph driver.
    Overlay2,
}

pub struct Dockerd {
    pub dir: PathBuf,
    /// target/docker.io or target/docker-26: its CLI goes with it.
    package: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd 20.10 under `dir` (on a disk filesystem: overlay2
    /// cannot put its layers on tmpfs-backed overlay) and waits until it
    /// answers.
    pub fn start(dir: &Path) -> Dockerd {
        let package = root_of("docker.io");
        let mut cmd = Dockerd::command(dir, &package);
        cmd.arg("--storage-driver=overlay2")
            .env("PATH", path_with(&[&package]));
        Dockerd::spawn(dir, package, cmd)
    }

    /// Starts dockerd 26 under `dir` on `containerd` (see
    /// Containerd::start_for_docker), in containerd's test namespace, with
    /// its images and containers in `storage`.
    pub fn start_26(dir: &Path, containerd: &Containerd, storage: Storage) -> Dockerd {
        let package = root_of("docker-26");
        std::fs::create_dir_all(dir).unwrap();
        let (feature, driver) = match storage {
            Storage::Snapshotter(name) => (true, name),
            Storage::Overlay2 => (false, "overlay2"),
        };
        let config = dir.join("daemon.json");
        std::fs::write(
            &config,
            format!(r#"{{"features": {{"containerd-snapshotter": {feature}}}, "storage-driver": "{driver}"}}"#),
        )
        .unwrap();
        let mut cmd = Dockerd::command(dir, &package);
        let ns = &containerd.namespace;
        cmd.arg("--config-file")
            .arg(&config)
            .arg("--containerd")
            .arg(containerd.address())
            .args(["--containerd-namespace", ns])
            .args(["--containerd-plugins-namespace", &format!("{ns}-plugins")]);
        let shim = containerd.bin_dir().unwrap_or_default();
        cmd.env("PATH", path_with(&[&package, &shim]));
        Dockerd::spawn(dir, package, cmd)
    }

    /// dockerd from `package` with everything of its own under `dir`.
    fn command(dir: &Path, package: &Path) -> Command {
        std::fs::create_dir_all(dir).unwrap();
        let bin = package.join("usr/sbin/dockerd");
        assert!(
            bin.exists(),
            "{} missing: run `cargo xtask setup`",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"]);
        cmd
    }

    fn spawn(dir: &Path, package: PathBuf, mut cmd: Command) -> Dockerd {
        // The CLI finds buildx (docker build's BuildKit client) among
        // its config directory's plugins.
        let plugins = dir.join("cli/cli-plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let buildx = package.join("usr/libexec/docker/cli-plugins/docker-buildx");
        if buildx.exists() && !plugins.join("docker-buildx").exists() {
            std::os::unix::fs::symlink(&buildx, plugins.join("docker-buildx")).unwrap();
        }
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Dockerd {
            dir: dir.to_path_buf(),
            package,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited: {status}; see {}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// kill -9: dockerd gets no chance to clean up; its containers'
    /// shims live on under containerd.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The package's own docker CLI against this daemon.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.package.join("usr/bin/docker"));
        cmd.env("DOCKER_CONFIG", self.dir.join("cli"))
            .arg("--host")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args);
        cmd
    }

    /// GET `path` of the Engine API, as JSON: the exact numbers the CLI
    /// rounds (`/system/df`'s bytes).
    pub fn api_get(&self, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sf", "--unix-socket"])
            .arg(self.dir.join("docker.sock"))
            .arg(format!("http://localhost{path}"))
            .output()
            .unwrap();
        let body = super::stdout_of_success(out, &format!("GET {path}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_command(args).output().unwrap()
    }

    /// Runs `docker`, panicking with its output unless it succeeds;
    /// returns stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let what = format!("docker {args:?}");
        super::stdout_of_success(self.docker(args), &what)
            .trim()
            .to_string()
    }
}

/// dockerd finds containerd, its shim, runc and docker-init on PATH:
/// `dirs` (a package root, or a bin directory) first, then the host's.
fn path_with(dirs: &[&Path]) -> String {
    let mut path = Vec::new();
    for d in dirs {
        path.extend([d.join("usr/sbin"), d.join("usr/bin"), d.to_path_buf()]);
    }
    let mut joined = std::env::join_paths(path).unwrap().into_string().unwrap();
    joined.push(':');
    joined.push_str(&std::env::var("PATH").unwrap_or_default());
    joined
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, while dockerd can still stop them.
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        super::kill_processes_naming(&self.dir);
        crate::mount::unmount_beneath(&self.dir);
    }
}
