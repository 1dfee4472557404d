//! `image save` in both formats: podman (from Debian's packages, installed
//! by `cargo xtask setup`) loads the result, and strata re-imports it to
//! the same tree.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_driver::export::{save, SaveFormat};
use strata_driver::image::build::write_docker_archive;
use strata_driver::import::{import, ImportOptions};
use strata_driver::testing::{
    layer, privileged, set_xattr, snapshot, stdout_of_success, TestStore,
};
use strata_driver::{commit, Store};

/// `podman load` into a throwaway storage root; returns the ID and layer
/// count podman reports for `tag`, which the archive must carry.
fn podman_load(dir: &Path, archive: &Path, tag: &str) -> (String, usize) {
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("podman is installed by `cargo xtask setup`");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    podman(&["load", "-i", archive.to_str().unwrap()]);
    let id = podman(&["image", "inspect", "--format", "{{.Id}}", tag]);
    let layers = podman(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        tag,
    ]);
    (id, layers.parse().unwrap())
}

#[test]
fn saved_images_load_in_podman_and_back_into_strata() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "base",
        vec![
            layer(|t| {
                t.dir("etc", 0o755, 0, 0).unwrap();
                t.file("etc/os-release", b"ID=strata\n", 0o644).unwrap();
                t.file("etc/gone", b"x", 0o644).unwrap();
                t.dir("opq", 0o755, 0, 0).unwrap();
                t.file("opq/old", b"o", 0o644).unwrap();
            }),
            layer(|t| {
                t.whiteout("etc/gone").unwrap();
                t.opaque("opq").unwrap();
                t.file("opq/new", b"n", 0o644).unwrap();
            }),
        ],
    );
    let (id, m) = ts.container("base");
    fs::write(m.join("etc/added"), b"a").unwrap();
    fs::remove_file(m.join("etc/os-release")).unwrap();
    commit::commit(&ts.store, &id, "saved").unwrap();
    let (_, original) = ts.container("saved");
    let expected = snapshot(&original);

    for (i, format) in [SaveFormat::DockerArchive, SaveFormat::Oci]
        .into_iter()
        .enumerate()
    {
        let archive = ts.dir.join(format!("saved-{i}.tar"));
        let digest = save(&ts.store, "saved", &archive, format).unwrap();
        let (podman_id, podman_layers) =
            podman_load(&ts.scratch(&format!("podman{i}")), &archive, "saved");
        assert_eq!(
            podman_id,
            digest.hex(),
            "{format:?}: podman sees another image"
        );
        assert_eq!(podman_layers, 3, "{format:?}");

        let again = Store::open(ts.dir.join(format!("again{i}"))).unwrap();
        let report = import(
            &again,
            archive.to_str().unwrap(),
            &ImportOptions {
                name: Some("back".into()),
                progress: false,
            },
        )
        .unwrap();
        assert_eq!(
            report.image.id, digest,
            "{format:?}: the re-imported config differs"
        );
        let c = again
            .create_container("back", &strata_driver::containers::CreateOptions::default())
            .unwrap();
        let merged = again.mount_container(&c.id).unwrap();
        assert_eq!(
            snapshot(&merged),
            expected,
            "{format:?}: the round trip changed the tree"
        );
        again.remove_container(&c.id, true).unwrap();
    }
    let err = save(&ts.store, "nope", &ts.dir.join("x.tar"), SaveFormat::Oci).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(!ts.dir.join("x.tar").exists());
}

/// Runs `script` with bash in `dir`; it must succeed.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .args(["-euc", script])
        .current_dir(dir)
        .output()
        .unwrap();
    stdout_of_success(out, script)
}

/// Two layer tars written by GNU tar, unlike anything strata writes: the
/// first in GNU format (long-name records, a hardlink, 10 KiB record
/// padding, and with `sparse` a GNU sparse file, which Go's archive/tar
/// and so podman cannot read), the second POSIX (PAX headers with an
/// xattr, a whiteout).
fn gnu_tar_layers(work: &Path, sparse: bool) -> Vec<PathBuf> {
    if sparse {
        sh(
            work,
            "mkdir -p r1 && truncate -s 4M r1/sparse
             printf data | dd of=r1/sparse bs=1 seek=1048576 conv=notrunc status=none",
        );
    }
    sh(
        work,
        "long=r1/long/$(printf 'd%.0s' {1..120}) && mkdir -p r1/etc r1/bin $long
         echo 'ID=gnu' > r1/etc/os-release
         ln -s os-release r1/etc/alias
         echo tool > r1/bin/tool && chmod 4755 r1/bin/tool && ln r1/bin/tool r1/bin/tool-link
         echo deep > $long/file-with-a-long-name
         tar --format=gnu --sparse --numeric-owner -C r1 -cf l1.tar .
         mkdir -p r2/etc && echo 'ID=gnu2' > r2/etc/os-release && : > r2/etc/.wh.alias",
    );
    set_xattr(&work.join("r2/etc/os-release"), "user.note", b"kept");
    sh(
        work,
        "tar --format=posix --xattrs --numeric-owner -C r2 -cf l2.tar .",
    );
    vec![work.join("l1.tar"), work.join("l2.tar")]
}

/// The members of a saved archive, by name.
fn members(archive: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let mut out = std::collections::HashMap::new();
    let mut tar = tar::Archive::new(fs::File::open(archive).unwrap());
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(name, data);
    }
    out
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by `cargo xtask setup`");
    serde_json::from_str(&stdout_of_success(out, "skopeo inspect")).unwrap()
}

#[test]
fn images_from_other_tools_keep_their_identity() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    for sparse in [false, true] {
        let work = ts.scratch(if sparse { "sparse" } else { "gnu" });
        let layer_tars = gnu_tar_layers(&work, sparse);
        let id = write_docker_archive(&work.join("archive"), "gnu:tar", &layer_tars).unwrap();
        let source = work.join("source.tar");
        sh(&work, "tar -C archive -cf source.tar .");
        let report = import(
            &ts.store,
            source.to_str().unwrap(),
            &ImportOptions::default(),
        )
        .unwrap();
        assert_eq!(report.image.id, id);

        let saved = work.join("saved.tar");
        let digest = save(&ts.store, id.as_str(), &saved, SaveFormat::DockerArchive).unwrap();
        assert_eq!(digest, id, "saving changed the image ID");
        let saved_members = members(&saved);
        for (i, l) in layer_tars.iter().enumerate() {
            let diff_id = &report.image.diff_ids[i];
            let rebuilt = &saved_members[&format!("{}/layer.tar", diff_id.hex())];
            assert!(
                rebuilt == &fs::read(l).unwrap(),
                "layer {i} is not the GNU tar it was imported from (sparse: {sparse})"
            );
        }
        let inspect = |a: &Path| {
            skopeo_json(&["inspect", &format!("docker-archive:{}", a.display())])["Layers"].clone()
        };
        assert_eq!(
            inspect(&saved),
            inspect(&source),
            "skopeo sees other layers"
        );
        if !sparse {
            let (podman_source, _) = podman_load(&ts.scratch("ps"), &source, "gnu:tar");
            let (podman_saved, layers) = podman_load(&ts.scratch("pv"), &saved, "gnu:tar");
            assert_eq!(podman_saved, podman_source, "podman sees another image");
            assert_eq!((podman_saved.as_str(), layers), (id.hex(), 2));
        }

        let oci = work.join("saved-oci.tar");
        assert_eq!(
            save(&ts.store, id.as_str(), &oci, SaveFormat::Oci).unwrap(),
            id
        );
        let oci_ref = format!("oci-archive:{}", oci.display());
        let config = skopeo_json(&["inspect", "--config", &oci_ref]);
        let diff_ids: Vec<String> = report
            .image
            .diff_ids
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
    }
}

/// umoci (Go's archive/tar, gzip) makes an OCI layout; saved again as OCI,
/// each layer is its blob decompressed and the config is umoci's own.
#[test]
fn oci_layouts_keep_their_identity() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let work = ts.scratch("umoci");
    sh(
        &work,
        "umoci init --layout oci && umoci new --image oci:img
         umoci unpack --image oci:img bundle
         mkdir -p bundle/rootfs/etc && echo 'ID=umoci' > bundle/rootfs/etc/os-release
         ln -s os-release bundle/rootfs/etc/alias && chmod 2755 bundle/rootfs/etc
         umoci repack --image oci:img bundle",
    );
    let manifest = skopeo_json(&[
        "inspect",
        "--raw",
        &format!("oci:{}/oci:img", work.display()),
    ]);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layout = work.join("oci");
    let report = import(
        &ts.store,
        &format!("{}:img", layout.display()),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(report.image.id.to_string(), config_digest);

    let saved = work.join("saved.tar");
    let digest = save(&ts.store, report.image.id.as_str(), &saved, SaveFormat::Oci).unwrap();
    assert_eq!(
        digest.to_string(),
        config_digest,
        "saving changed the image ID"
    );
    let blob = fs::File::open(
        layout
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:")),
    )
    .unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .read_to_end(&mut tar)
        .unwrap();
    let saved_members = members(&saved);
    let diff_id = report.image.diff_ids[0].hex();
    assert!(
        saved_members[&format!("blobs/sha256/{diff_id}")] == tar,
        "the saved layer is not umoci's, decompressed"
    );
}

/// A layer whose files changed after import cannot be rebuilt: save says
/// which and writes nothing, rather than export other bytes under the
/// recorded diffID.
#[test]
fn save_refuses_a_layer_that_no_longer_rebuilds() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let work = ts.scratch("gnu");
    let layer_tars = gnu_tar_layers(&work, false);
    let id = write_docker_archive(&work.join("archive"), "gnu:tar", &layer_tars).unwrap();
    import(
        &ts.store,
        work.join("archive").to_str().unwrap(),
        &ImportOptions::default(),
    )
    .unwrap();
    let image = ts.store.find_image(id.as_str()).unwrap();
    let file = ts.store.layer_diff(&image.layers[0]).join("etc/os-release");
    let out = work.join("out.tar");

    fs::write(&file, b"ID=GNU\n").unwrap(); // same size, other bytes
    let err = save(&ts.store, id.as_str(), &out, SaveFormat::DockerArchive).unwrap_err();
    assert!(err.to_string().contains("no longer rebuild"), "{err}");
    assert!(!out.exists());

    fs::write(&file, b"ID=gnu, longer\n").unwrap();
    let err = save(&ts.store, id.as_str(), &out, SaveFormat::DockerArchive).unwrap_err();
    assert!(
        err.to_string().contains("etc/os-release") && err.to_string().contains("7-byte file"),
        "{err}"
    );
    assert!(!out.exists());
    // Nor the archive it was streaming into.
    let left: Vec<_> = fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("out"))
        .collect();
    assert!(left.is_empty(), "a failed save left {left:?}");
}
