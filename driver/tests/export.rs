//! `image save` in both formats: podman (from Debian's packages, installed
//! by `cargo xtask setup`) loads the result, and strata re-imports it to
//! the same tree.

use std::fs;
use std::path::Path;
use std::process::Command;

use strata_driver::export::{save, SaveFormat};
use strata_driver::import::{import, ImportOptions};
use strata_driver::testing::{layer, privileged, snapshot, TestStore};
use strata_driver::{commit, Store};

/// `podman load` into a throwaway storage root; returns the loaded image's
/// ID and layer count as podman reports them.
fn podman_load(dir: &Path, archive: &Path) -> (String, usize) {
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
    let id = podman(&["image", "inspect", "--format", "{{.Id}}", "saved"]);
    let layers = podman(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}",
        "saved",
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
        let (podman_id, podman_layers) = podman_load(&ts.scratch(&format!("podman{i}")), &archive);
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
