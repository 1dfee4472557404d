//! The guest's two images.
//!
//! - A per-kernel initramfs: static busybox, the kernel's modules and an
//!   init that loads them, mounts the disk and switches to it.
//! - One ext4 disk for every kernel, booted as a throwaway snapshot: the
//!   test binaries at the same absolute paths as on the host (their
//!   `CARGO_BIN_EXE_*` paths are compiled in), their shared libraries, the
//!   few tools the tests call, and the runner script. The tests' stores
//!   live on it, under /var/tmp, on ext4 as on the host.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::kernel::Kernel;
use crate::run;

const BUSYBOX: &str = "/bin/busybox";

/// Marks the guest prints around each test binary; the host parses them.
pub const MARK: &str = "@@strata-vm";

/// Host tools the tests run by name (busybox covers the rest).
/// mkfs.xfs for the quota tests' XFS.
const TOOLS: &[&str] = &["/usr/sbin/mkfs.ext4", "/usr/sbin/mkfs.xfs"];

/// The initramfs: `/init` loads the modules in order and hands over to the
/// disk's runner.
pub fn initramfs(kernel: &Kernel, out: &Path) -> Result<()> {
    // The initramfs carries no libraries: a dynamic busybox (Debian's
    // plain `busybox` package) cannot run there.
    if !shared_libraries(Path::new(BUSYBOX))?.is_empty() {
        bail!("{BUSYBOX} is dynamically linked; install busybox-static");
    }
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "modules"] {
        cpio.dir(dir);
    }
    cpio.file("bin/busybox", &fs::read(BUSYBOX)?, 0o755);
    let mut init = String::from(INIT_HEAD);
    for (i, m) in kernel.modules.iter().enumerate() {
        let name = format!(
            "modules/{i:02}-{}",
            m.file_name().unwrap().to_string_lossy()
        );
        cpio.file(&name, &fs::read(m)?, 0o644);
        init.push_str(&format!(
            "insmod /{name} || echo \"{MARK} insmod {name} failed\"\n"
        ));
    }
    init.push_str(INIT_TAIL);
    cpio.file("init", init.as_bytes(), 0o755);
    fs::write(out, cpio.finish()).with_context(|| format!("writing {}", out.display()))
}

const INIT_HEAD: &str = "#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
";

const INIT_TAIL: &str = "i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
mount -t ext4 /dev/vda /newroot || { echo '@@strata-vm no disk'; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /strata-vm/run
";

/// What runs in the guest: each line of `plan` is `NAME PATH ARGS...`.
/// /tmp and /run stay the disk's own directories: the checkout (and so
/// the binaries' paths) may well be under /tmp, and a tmpfs would hide it.
const RUNNER: &str = "#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CI=true RUST_BACKTRACE=1 STRATA_KERNEL_MATRIX=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo \"@@strata-vm kernel $(uname -r)\"
while read -r name bin args; do
  echo \"@@strata-vm begin $name\"
  $bin $args 2>&1
  echo \"@@strata-vm end $name rc=$?\"
done < /strata-vm/plan
echo '@@strata-vm done'
sync
poweroff -f
";

/// One line of the runner's plan.
pub struct PlannedBinary {
    pub name: String,
    pub path: PathBuf,
    pub args: Vec<String>,
}

/// Builds the disk from scratch in `staging`, then `disk`.
pub fn disk(
    binaries: &[PlannedBinary],
    extra_bins: &[PathBuf],
    staging: &Path,
    disk: &Path,
) -> Result<()> {
    if staging.exists() {
        fs::remove_dir_all(staging)?;
    }
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "etc",
        "var/tmp",
        "strata-vm",
    ] {
        fs::create_dir_all(staging.join(dir))?;
    }
    fs::set_permissions(staging.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(staging.join("var/tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy(BUSYBOX, staging.join("bin/busybox"))?;
    for applet in busybox_applets()? {
        let link = staging.join("bin").join(&applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    fs::write(
        staging.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )?;
    fs::write(staging.join("etc/group"), "root:x:0:\n")?;
    let _ = fs::copy("/etc/mke2fs.conf", staging.join("etc/mke2fs.conf"));

    let mut elves: Vec<PathBuf> = binaries.iter().map(|b| b.path.clone()).collect();
    elves.extend(extra_bins.iter().cloned());
    elves.extend(TOOLS.iter().map(PathBuf::from));
    let mut libs = Vec::new();
    for elf in &elves {
        let dst = beneath(staging, elf);
        fs::create_dir_all(dst.parent().unwrap())?;
        // Debug info is most of a test binary; symbols stay for backtraces.
        run(Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dst)
            .arg(elf))?;
        for lib in shared_libraries(elf)? {
            if !libs.contains(&lib) {
                libs.push(lib);
            }
        }
    }
    for lib in &libs {
        let dst = beneath(staging, lib);
        fs::create_dir_all(dst.parent().unwrap())?;
        fs::copy(lib, &dst).with_context(|| format!("copying {}", lib.display()))?;
    }

    let runner = staging.join("strata-vm/run");
    fs::write(&runner, RUNNER)?;
    fs::set_permissions(&runner, fs::Permissions::from_mode(0o755))?;
    let mut plan = String::new();
    for b in binaries {
        plan.push_str(&format!(
            "{} {} {}\n",
            b.name,
            b.path.display(),
            b.args.join(" ")
        ));
    }
    fs::write(staging.join("strata-vm/plan"), plan)?;

    let _ = fs::remove_file(disk);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "strata-vm", "-d"])
        .arg(staging)
        .arg(disk)
        .arg("6G"))
}

fn beneath(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap_or(abs))
}

fn busybox_applets() -> Result<Vec<String>> {
    let out = Command::new(BUSYBOX).arg("--list").output()?;
    if !out.status.success() {
        bail!("{BUSYBOX} --list failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|a| *a != "busybox")
        .map(str::to_string)
        .collect())
}

/// The libraries `ldd` says `elf` loads, the dynamic loader included.
fn shared_libraries(elf: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(elf)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// A cpio archive in the kernel's "newc" format.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, data: &[u8], mode: u32) {
        self.entry(name, 0o100000 | mode, data);
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}
