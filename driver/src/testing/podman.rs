//! podman (Debian's, installed by `cargo xtask setup`) on a storage root,
//! run root and tmp dir of the test's own, with the cgroupfs manager and
//! file events (no systemd needed) and no network. Dropping it (on panic
//! too) removes its containers, kills what they left and unmounts what is
//! beneath its directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Podman {
    pub dir: PathBuf,
}

impl Podman {
    pub fn new(dir: &Path) -> Podman {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        Podman {
            dir: dir.to_path_buf(),
        }
    }

    /// containers/storage's root: where its metadata names containers.
    pub fn storage_root(&self) -> PathBuf {
        self.dir.join("storage")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.storage_root())
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args([
                "--cgroup-manager=cgroupfs",
                "--events-backend=file",
                "--storage-driver=overlay",
            ])
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("podman is installed by setup")
    }

    /// Runs podman, panicking with its output unless it succeeds; returns
    /// stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let what = format!("podman {args:?}");
        super::stdout_of_success(self.run(args), &what)
            .trim()
            .to_string()
    }

    /// `podman run -d` of `cmd` in `image` as `name`; returns its id.
    /// Its rlimits are lowered explicitly: podman otherwise raises
    /// RLIMIT_NPROC, which fails where root lacks CAP_SYS_RESOURCE (a
    /// container sandbox, such as this project's CI).
    pub fn run_detached(&self, name: &str, image: &str, cmd: &[&str]) -> String {
        let mut args = vec![
            "run",
            "-d",
            "--network=none",
            "--ulimit=nofile=1024:1024",
            "--ulimit=nproc=1024:1024",
            "--name",
            name,
            image,
        ];
        args.extend(cmd);
        self.ok(&args)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        super::kill_processes_naming(&self.dir);
        crate::mount::unmount_beneath(&self.dir);
    }
}
