//! A private dockerd 20.10 (Debian's `docker.io`, unpacked under
//! target/docker.io by `cargo xtask setup`) with its own data-root,
//! exec-root and socket, no network setup (`--iptables=false
//! --bridge=none`) and the overlay2 driver; it starts its own containerd.
//! Dropping it (on panic too) kills dockerd and every process it left,
//! and unmounts what it left beneath its directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where setup unpacked the package.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/docker.io/root")
}

pub struct Dockerd {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd under `dir` (on a disk filesystem: overlay2 cannot
    /// put its layers on tmpfs-backed overlay) and waits until it answers.
    pub fn start(dir: &Path) -> Dockerd {
        std::fs::create_dir_all(dir).unwrap();
        let bin = root().join("usr/sbin/dockerd");
        assert!(
            bin.exists(),
            "{} missing: run `cargo xtask setup`",
            bin.display()
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new(bin)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=overlay2",
            ])
            .env("PATH", path_with_package())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Dockerd {
            dir: dir.to_path_buf(),
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The package's own docker CLI against this daemon.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(root().join("usr/bin/docker"));
        cmd.arg("--host")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()))
            .args(args);
        cmd
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

/// dockerd finds containerd, runc and docker-init on PATH.
fn path_with_package() -> String {
    let r = root();
    format!(
        "{}:{}:{}",
        r.join("usr/sbin").display(),
        r.join("usr/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
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
