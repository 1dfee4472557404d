//! Importing real image formats, sharing layers, verifying digests,
//! listing, history and removal.

use std::fs;
use std::path::{Path, PathBuf};

use strata_driver::archive::compression::Compression;
use strata_driver::archive::write_layer_tar;
use strata_driver::image::build::{write_docker_archive, write_oci_layout, LayerTar};
use strata_driver::import::{import, ImportOptions};
use strata_driver::testing::{privileged, TestStore};
use strata_driver::Error;

fn opts(name: &str) -> ImportOptions {
    ImportOptions {
        name: Some(name.into()),
        progress: false,
    }
}

/// Two layer tars: a base with a file and a dir, and one on top.
fn two_layers(dir: &Path) -> Vec<PathBuf> {
    let mut a = LayerTar::create(&dir.join("a.tar")).unwrap();
    a.dir("etc", 0o755, 0, 0).unwrap();
    a.file("etc/os-release", b"ID=strata\n", 0o644).unwrap();
    a.pattern_file("bin/tool", 300_000, 3).unwrap();
    let mut b = LayerTar::create(&dir.join("b.tar")).unwrap();
    b.file("etc/hostname", b"box\n", 0o644).unwrap();
    vec![a.finish().unwrap(), b.finish().unwrap()]
}

/// Packs a directory into a tar file (an OCI tarball or docker archive).
fn tar_dir(dir: &Path, out: &Path) {
    write_layer_tar(dir, fs::File::create(out).unwrap()).unwrap();
}

#[test]
fn every_source_format_imports_to_the_same_content() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let mut expected = None;
    for (i, kind) in [
        "oci-none",
        "oci-gzip",
        "oci-zstd",
        "oci-tarball",
        "docker-dir",
        "docker-tar",
    ]
    .iter()
    .enumerate()
    {
        let work = ts.scratch(&format!("src{i}"));
        let layers = two_layers(&work);
        let src = match *kind {
            "oci-none" | "oci-gzip" | "oci-zstd" | "oci-tarball" => {
                let c = match *kind {
                    "oci-gzip" | "oci-tarball" => Compression::Gzip,
                    "oci-zstd" => Compression::Zstd,
                    _ => Compression::None,
                };
                let layout = work.join("layout");
                write_oci_layout(&layout, "v1", &layers, c).unwrap();
                if *kind == "oci-tarball" {
                    tar_dir(&layout, &work.join("layout.tar"));
                    work.join("layout.tar")
                } else {
                    layout
                }
            }
            _ => {
                let archive = work.join("archive");
                write_docker_archive(&archive, "demo:v1", &layers).unwrap();
                if *kind == "docker-tar" {
                    tar_dir(&archive, &work.join("archive.tar"));
                    work.join("archive.tar")
                } else {
                    archive
                }
            }
        };
        let report = import(&ts.store, src.to_str().unwrap(), &opts(&format!("img{i}"))).unwrap();
        assert_eq!(report.image.layers.len(), 2, "{kind}");
        // The same layers, whatever the packaging: after the first import
        // they are shared, never stored twice.
        let shared: Vec<bool> = report.layers.iter().map(|l| l.shared).collect();
        assert_eq!(
            shared,
            if i == 0 {
                vec![false, false]
            } else {
                vec![true, true]
            },
            "{kind}"
        );
        let chain: Vec<_> = report.image.layers.clone();
        if let Some(e) = &expected {
            assert_eq!(&chain, e, "{kind} produced other layers");
        }
        expected = Some(chain);
        let (_, m) = ts.container(&format!("img{i}"));
        assert_eq!(
            fs::read_to_string(m.join("etc/os-release")).unwrap(),
            "ID=strata\n"
        );
        assert_eq!(fs::read_to_string(m.join("etc/hostname")).unwrap(), "box\n");
        assert_eq!(fs::metadata(m.join("bin/tool")).unwrap().len(), 300_000);
    }
    assert_eq!(ts.store.layers().unwrap().len(), 2);
}

#[test]
fn plain_directories_and_tars_are_one_layer_images() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let src = ts.scratch("plain");
    fs::create_dir_all(src.join("usr/share")).unwrap();
    fs::write(src.join("usr/share/doc"), b"docs").unwrap();
    let r = import(&ts.store, src.to_str().unwrap(), &opts("fromdir")).unwrap();
    assert_eq!(r.image.layers.len(), 1);
    let tar = ts.dir.join("plain.tar");
    tar_dir(&src, &tar);
    let r2 = import(&ts.store, tar.to_str().unwrap(), &opts("fromtar")).unwrap();
    assert_eq!(
        r2.image.layers, r.image.layers,
        "the same tree is the same layer"
    );
    assert!(r2.layers[0].shared);
    let (_, m) = ts.container("fromtar");
    assert_eq!(fs::read(m.join("usr/share/doc")).unwrap(), b"docs");
    let history =
        strata_driver::image::config::layer_history(&ts.store.image_config(&r2.image.id).unwrap());
    assert_eq!(history.len(), 1);
    assert!(history[0].contains("strata image import"), "{history:?}");
}

#[test]
fn a_layout_with_several_images_needs_a_tag() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let work = ts.scratch("multi");
    let layout = work.join("layout");
    let l1 = two_layers(&work);
    write_oci_layout(&layout, "one", &l1[..1], Compression::Gzip).unwrap();
    write_oci_layout(&layout, "two", &l1, Compression::Gzip).unwrap();
    let err = import(&ts.store, layout.to_str().unwrap(), &opts("x"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pick one with DIR:TAG") && err.contains("one") && err.contains("two"),
        "{err}"
    );
    let one = import(
        &ts.store,
        &format!("{}:one", layout.display()),
        &opts("x:1"),
    )
    .unwrap();
    let two = import(
        &ts.store,
        &format!("{}:two", layout.display()),
        &opts("x:2"),
    )
    .unwrap();
    assert_eq!((one.image.layers.len(), two.image.layers.len()), (1, 2));
    assert!(two.layers[0].shared && !two.layers[1].shared);
    let err = import(
        &ts.store,
        &format!("{}:three", layout.display()),
        &opts("x:3"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("three"), "{err}");
}

#[test]
fn a_corrupted_blob_or_diff_id_stores_nothing() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let work = ts.scratch("bad");
    let layers = two_layers(&work);
    // Docker archive whose config names a different diffID for layer 2.
    let archive = work.join("archive");
    write_docker_archive(&archive, "bad:1", &layers).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(archive.join("manifest.json")).unwrap()).unwrap();
    let config_path = archive.join(manifest[0]["Config"].as_str().unwrap());
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config["rootfs"]["diff_ids"][1] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    fs::write(&config_path, config.to_string()).unwrap();
    let err = import(&ts.store, archive.to_str().unwrap(), &opts("bad")).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("layer 2 of 2"), "{err}");
    assert!(
        ts.store.layers().unwrap().is_empty(),
        "layer 1 must not be stored either"
    );
    assert!(ts.store.images().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(ts.store.tmp_dir()).unwrap().count(),
        0,
        "staging left behind"
    );

    // OCI layout whose layer blob was altered after its digest was taken.
    let layout = work.join("layout");
    write_oci_layout(&layout, "v", &layers, Compression::None).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(mdigest)).unwrap())
            .unwrap();
    let blob = layout.join("blobs/sha256").join(
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let mut data = fs::read(&blob).unwrap();
    let n = data.len();
    data[n - 2000] ^= 0xff; // inside the trailing zero padding: tar still parses
    fs::write(&blob, data).unwrap();
    let err = import(&ts.store, layout.to_str().unwrap(), &opts("bad2")).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(ts.store.layers().unwrap().is_empty());
}

#[test]
fn ls_sizes_history_and_rm_free_only_unshared_layers() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let work = ts.scratch("x");
    let layers = two_layers(&work);
    let a = work.join("a-only");
    write_docker_archive(&a, "base:1", &layers[..1]).unwrap();
    import(&ts.store, a.to_str().unwrap(), &opts("base")).unwrap();
    let both = work.join("both");
    write_docker_archive(&both, "full:1", &layers).unwrap();
    import(&ts.store, both.to_str().unwrap(), &opts("full")).unwrap();

    let usage = ts.store.image_usage().unwrap();
    let base = usage
        .iter()
        .find(|u| u.image.names == ["base:latest"])
        .unwrap();
    let full = usage
        .iter()
        .find(|u| u.image.names == ["full:latest"])
        .unwrap();
    let base_layer = 10 + 300_000; // os-release + tool
    assert_eq!(
        (base.size, base.shared, base.unique),
        (base_layer, base_layer, 0)
    );
    assert_eq!(
        (full.size, full.shared, full.unique),
        (base_layer + 4, base_layer, 4)
    );
    let df = ts.store.system_df().unwrap();
    assert_eq!(df.layers_size, base_layer + 4, "shared layers count once");

    // rm is refused while a container uses the image.
    let (id, _) = ts.container("full");
    let err = ts.store.remove_image("full").unwrap_err();
    assert!(matches!(err, Error::InUse(_)), "{err}");
    ts.store.remove_container(&id, true).unwrap();
    let freed = ts.store.remove_image("full").unwrap();
    assert_eq!(freed.len(), 1, "only the layer base does not use");
    assert_eq!(ts.store.layers().unwrap().len(), 1);
    let (_, m) = ts.container("base");
    assert!(m.join("etc/os-release").exists());
}

/// A `docker save` file is read in place, docker 25's layout included
/// (`<id>/layer.tar` a symlink to `blobs/sha256/<hex>`), and a gzipped one
/// through staging; a member linking out of the archive is refused.
#[test]
fn archives_are_read_in_place_links_and_all() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let work = ts.scratch("archives");
    let layers = two_layers(&work);
    let archive = work.join("archive");
    write_docker_archive(&archive, "demo:v1", &layers).unwrap();
    let linked = |target_of: &dyn Fn(&str) -> String| {
        let dir = work.join(format!("linked-{}", fs::read_dir(&work).unwrap().count()));
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        for e in fs::read_dir(&archive).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if e.path().is_dir() {
                fs::rename(
                    e.path().join("layer.tar"),
                    dir.join("blobs/sha256").join(&name),
                )
                .unwrap();
                fs::create_dir(dir.join(&name)).unwrap();
                std::os::unix::fs::symlink(target_of(&name), dir.join(&name).join("layer.tar"))
                    .unwrap();
            } else {
                fs::copy(e.path(), dir.join(&name)).unwrap();
            }
        }
        dir
    };
    let plain_tar = work.join("plain.tar");
    tar_dir(&archive, &plain_tar);
    let docker25 = work.join("docker25.tar");
    tar_dir(&linked(&|hex| format!("../blobs/sha256/{hex}")), &docker25);
    write_docker_archive(&archive, "demo:v1", &two_layers(&work)).unwrap();
    let gzipped = work.join("plain.tar.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c {} > {}",
            plain_tar.display(),
            gzipped.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());

    for (i, src) in [&plain_tar, &docker25, &gzipped].into_iter().enumerate() {
        let store = strata_driver::Store::open(ts.dir.join(format!("store{i}"))).unwrap();
        let report = import(&store, src.to_str().unwrap(), &opts("demo")).unwrap();
        assert!(
            report.layers.iter().all(|l| !l.shared),
            "{src:?}: layers extracted"
        );
        let diff = store.layer_diff(&report.image.layers[0]);
        assert_eq!(
            fs::read_to_string(diff.join("etc/os-release")).unwrap(),
            "ID=strata\n",
            "{src:?}"
        );
        assert_eq!(fs::metadata(diff.join("bin/tool")).unwrap().len(), 300_000);
    }

    let escaping = work.join("escaping.tar");
    tar_dir(&linked(&|_| "../../../../etc/passwd".into()), &escaping);
    let err = import(&ts.store, escaping.to_str().unwrap(), &opts("bad")).unwrap_err();
    assert!(err.to_string().contains("outside the archive"), "{err}");
    assert!(ts.store.images().unwrap().is_empty());
}

/// A directory a layer only implies (it holds entries, but has no entry of
/// its own) keeps the mode, owner and mtime the layers below give it, even
/// though layers are extracted side by side; one that has its own entry,
/// even after its children, keeps the archive's.
#[test]
fn directories_a_layer_only_implies_keep_the_metadata_below() {
    use std::os::unix::fs::MetadataExt;
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let work = ts.scratch("implied");
    let layer = |name: &str, f: &dyn Fn(&mut LayerTar)| {
        let mut t = LayerTar::create(&work.join(name)).unwrap();
        f(&mut t);
        t.finish().unwrap()
    };
    let layers = vec![
        layer("0.tar", &|t| {
            t.dir("etc", 0o750, 7, 8).unwrap();
            t.file("etc/a", b"a", 0o644).unwrap();
        }),
        layer("1.tar", &|t| {
            t.file("etc/deep/b", b"b", 0o644).unwrap();
        }),
        layer("2.tar", &|t| {
            t.whiteout("etc/a").unwrap();
        }),
        layer("3.tar", &|t| {
            t.file("etc/c", b"c", 0o644).unwrap();
            t.dir("etc", 0o755, 0, 0).unwrap();
        }),
    ];
    let archive = work.join("archive");
    write_docker_archive(&archive, "implied:1", &layers).unwrap();
    let report = import(&ts.store, archive.to_str().unwrap(), &opts("implied")).unwrap();
    let etc = |i: usize| {
        let md = fs::metadata(ts.store.layer_diff(&report.image.layers[i]).join("etc")).unwrap();
        (md.mode() & 0o7777, md.uid(), md.gid(), md.mtime())
    };
    let below = (0o750, 7, 8, 1_700_000_000);
    assert_eq!(etc(0), below);
    assert_eq!(etc(1), below, "layer 1 only implies /etc");
    assert_eq!(etc(2), below, "layer 2 only implies /etc");
    assert_eq!(
        etc(3),
        (0o755, 0, 0, 1_700_000_000),
        "layer 3 names /etc itself"
    );
    let deep = fs::metadata(
        ts.store
            .layer_diff(&report.image.layers[1])
            .join("etc/deep"),
    )
    .unwrap();
    assert_eq!(
        (deep.mode() & 0o7777, deep.uid()),
        (0o755, 0),
        "nothing below has etc/deep"
    );
}
