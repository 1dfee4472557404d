//! A filesystem made for one test or bench run: a sparse file, `mkfs`,
//! loop-mounted. Dropping it (on panic too) unmounts everything beneath it
//! and deletes the image.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct LoopFs {
    pub mount: PathBuf,
    image: PathBuf,
}

fn run(program: &str, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl LoopFs {
    /// A fresh ext4 of `bytes` at `mount`.
    pub fn ext4(image: &Path, mount: &Path, bytes: u64) -> std::io::Result<LoopFs> {
        LoopFs::make(image, mount, bytes, &["mkfs.ext4", "-q", "-F"], &[])
    }

    /// `mkfs` (program and its options; the image path is appended) on a
    /// sparse file of `bytes`, mounted at `mount` with `-o loop` and
    /// `options`. Fails with mount's own words where the kernel refuses
    /// an option.
    pub fn make(
        image: &Path,
        mount: &Path,
        bytes: u64,
        mkfs: &[&str],
        options: &[&str],
    ) -> std::io::Result<LoopFs> {
        std::fs::File::create(image)?.set_len(bytes)?;
        let img = image.to_str().expect("UTF-8 test path");
        let mut args = mkfs[1..].to_vec();
        args.push(img);
        run(mkfs[0], &args)?;
        std::fs::create_dir_all(mount)?;
        let opts = ["loop"].iter().chain(options).copied().collect::<Vec<_>>();
        let mounted = run(
            "mount",
            &["-o", &opts.join(","), img, mount.to_str().unwrap()],
        );
        if let Err(e) = mounted {
            let _ = std::fs::remove_file(image);
            return Err(e);
        }
        Ok(LoopFs {
            mount: mount.to_path_buf(),
            image: image.to_path_buf(),
        })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        super::unmount_beneath(&self.mount);
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.image);
    }
}
