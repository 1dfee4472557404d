//! Hostile and broken archives: each fails with an error naming the entry
//! and the reason, writes nothing outside the store, and leaves the store
//! as it was.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use strata_driver::import::{import, ImportOptions};
use strata_driver::testing::{privileged, TestStore};
use tar::{EntryType, Header};

/// A raw tar entry: the name is written as given, `..` and all (the tar
/// crate's own path setters refuse such names, as they should).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: EntryType, link: &str, data: &[u8]) {
    let mut h = Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn case(entries: &[(&str, EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        raw_entry(&mut out, name, *kind, link, data);
    }
    finish(out)
}

fn assert_refused(ts: &TestStore, name: &str, tar: &[u8], expect: &[&str], outside: &Path) {
    let path = ts.dir.join(format!("{name}.tar"));
    fs::write(&path, tar).unwrap();
    let err = import(
        &ts.store,
        path.to_str().unwrap(),
        &ImportOptions {
            name: Some(name.into()),
            progress: false,
        },
    )
    .expect_err(&format!("{name} was accepted"))
    .to_string();
    for e in expect {
        assert!(
            err.contains(e),
            "{name}: error {err:?} does not mention {e:?}"
        );
    }
    assert!(
        ts.store.layers().unwrap().is_empty(),
        "{name}: a layer was stored"
    );
    assert!(
        ts.store.images().unwrap().is_empty(),
        "{name}: an image was stored"
    );
    assert_eq!(
        fs::read_dir(ts.store.tmp_dir()).unwrap().count(),
        0,
        "{name}: staging left behind"
    );
    let leaked: Vec<PathBuf> = fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        leaked.is_empty(),
        "{name}: wrote outside the store: {leaked:?}"
    );
}

/// `/etc/x` in a layer tar is `etc/x` of the layer, as docker, containerd
/// and GNU tar extract it; so is a hardlink to `/etc/x`.
#[test]
fn absolute_member_names_land_inside_the_layer() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    use EntryType::*;
    let tar = case(&[
        ("/etc/", Directory, "", b""),
        ("/etc/x", Regular, "", b"inside"),
        ("//twice", Regular, "", b"2"),
        ("/etc/hl", Link, "/etc/x", b""),
    ]);
    let path = ts.dir.join("absolute.tar");
    fs::write(&path, tar).unwrap();
    let report = import(
        &ts.store,
        path.to_str().unwrap(),
        &ImportOptions {
            name: Some("absolute".into()),
            progress: false,
        },
    )
    .unwrap();
    let diff = ts.store.layer_diff(&report.image.layers[0]);
    assert_eq!(fs::read(diff.join("etc/x")).unwrap(), b"inside");
    assert_eq!(fs::read(diff.join("twice")).unwrap(), b"2");
    let (x, hl) = (
        fs::metadata(diff.join("etc/x")).unwrap(),
        fs::metadata(diff.join("etc/hl")).unwrap(),
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&x),
        std::os::unix::fs::MetadataExt::ino(&hl)
    );
    assert!(
        !Path::new("/twice").exists(),
        "written at the host's root, not the layer's"
    );
}

#[test]
fn hostile_archives_are_refused_with_the_entry_named() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let outside = ts.scratch("outside");
    let target = outside.to_str().unwrap().to_string();
    use EntryType::*;
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "dotdot",
            case(&[("../../escape", Regular, "", b"x")]),
            vec!["../../escape", "`..`"],
        ),
        (
            "absolute-dotdot",
            case(&[("/../../escape", Regular, "", b"x")]),
            vec!["/../../escape", "`..`"],
        ),
        (
            "symlink-escape",
            case(&[
                ("link", Symlink, &target, b""),
                ("link/pwned", Regular, "", b"x"),
            ]),
            vec!["link/pwned", "symlink"],
        ),
        (
            "hardlink-outside",
            case(&[("hl", Link, "../../etc/passwd", b"")]),
            vec!["hl", "`..`"],
        ),
        (
            "hardlink-forward",
            case(&[("hl", Link, "later", b""), ("later", Regular, "", b"x")]),
            vec!["hl", "earlier"],
        ),
        (
            "whiteout-dotdot",
            case(&[(".wh...", Regular, "", b"")]),
            vec![".wh...", "whiteout"],
        ),
        (
            "duplicate",
            case(&[("dup", Regular, "", b"1"), ("dup", Regular, "", b"2")]),
            vec!["dup", "duplicate"],
        ),
        (
            "truncated",
            case(&[("big", Regular, "", &[1u8; 4096])])[..1024].to_vec(),
            vec!["big"],
        ),
    ];
    for (name, tar, expect) in cases {
        assert_refused(&ts, name, &tar, &expect, &outside);
    }
    // Corrupt compression: a gzip header followed by garbage.
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    gz.extend_from_slice(&[0xff; 200]);
    assert_refused(&ts, "corrupt-gzip", &gz, &["corrupt"], &outside);
    let mut zst = vec![0x28, 0xb5, 0x2f, 0xfd];
    zst.extend_from_slice(&[0x00; 64]);
    assert_refused(&ts, "corrupt-zstd", &zst, &[], &outside);
}

#[test]
fn a_name_over_the_kernel_limit_is_refused() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let outside = ts.scratch("outside");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(1);
    let long = "x".repeat(300); // NAME_MAX is 255
    b.append_data(&mut h, &long, &b"x"[..]).unwrap();
    let mut tar = b.into_inner().unwrap();
    tar.flush().unwrap();
    assert_refused(&ts, "long-name", &tar, &["xxxx", "name too long"], &outside);
}

/// Broken image metadata: each fails naming the problem, stores nothing.
#[test]
fn broken_manifests_and_layouts_are_refused() {
    use strata_driver::archive::compression::Compression;
    use strata_driver::image::build::{write_docker_archive, write_oci_layout, LayerTar};
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let work = ts.scratch("broken");
    let mut t = LayerTar::create(&work.join("l.tar")).unwrap();
    t.file("f", b"x", 0o644).unwrap();
    let tar = t.finish().unwrap();
    let import_err = |src: &Path| -> String {
        let e = import(
            &ts.store,
            src.to_str().unwrap(),
            &ImportOptions {
                name: Some("x".into()),
                progress: false,
            },
        )
        .expect_err("accepted")
        .to_string();
        assert!(
            ts.store.layers().unwrap().is_empty() && ts.store.images().unwrap().is_empty(),
            "{e}"
        );
        e
    };
    let json =
        |p: &Path| -> serde_json::Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let blob = |layout: &Path, d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };

    // OCI: a manifest naming a blob that is not there.
    let layout = work.join("missing-blob");
    write_oci_layout(&layout, "v", std::slice::from_ref(&tar), Compression::None).unwrap();
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(
        &layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    fs::remove_file(blob(
        &layout,
        manifest["layers"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let e = import_err(&layout);
    assert!(e.contains("missing blob"), "{e}");

    // OCI: a layer of a media type that is not a layer tar.
    let layout = work.join("bad-media");
    write_oci_layout(&layout, "v", std::slice::from_ref(&tar), Compression::None).unwrap();
    let index = json(&layout.join("index.json"));
    let mpath = blob(&layout, index["manifests"][0]["digest"].as_str().unwrap());
    let mut manifest = json(&mpath);
    manifest["layers"][0]["mediaType"] = "application/vnd.example.evil".into();
    let body = manifest.to_string();
    let d = strata_driver::digest::Digest::of_bytes(body.as_bytes());
    fs::write(blob(&layout, d.as_str()), &body).unwrap();
    let mut index2 = index.clone();
    index2["manifests"][0]["digest"] = d.as_str().into();
    index2["manifests"][0]["size"] = body.len().into();
    fs::write(layout.join("index.json"), index2.to_string()).unwrap();
    let e = import_err(&layout);
    assert!(e.contains("application/vnd.example.evil"), "{e}");

    // OCI: an index that points at itself.
    let layout = work.join("cycle");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    // A self-referencing index needs its own digest inside it: impossible
    // with sha256, so two indexes point at each other's digests instead.
    let a_body = |b: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{b}","size":1}}]}}"#
        )
    };
    let b_body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let b_digest = strata_driver::digest::Digest::of_bytes(b_body.as_bytes());
    let a = a_body(b_digest.as_str());
    let a_digest = strata_driver::digest::Digest::of_bytes(a.as_bytes());
    fs::write(blob(&layout, a_digest.as_str()), &a).unwrap();
    // b, as stored, points back at a (so its bytes no longer match its
    // digest: the cycle must be refused either way, before any loop).
    let b_loop = a_body(a_digest.as_str());
    fs::write(blob(&layout, b_digest.as_str()), &b_loop).unwrap();
    fs::write(
        layout.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{a_digest}","size":1}}]}}"#),
    )
    .unwrap();
    let e = import_err(&layout);
    assert!(e.contains("digest mismatch") || e.contains("cycle"), "{e}");

    // docker-archive: a manifest whose layer path leaves the archive.
    let archive = work.join("escape");
    write_docker_archive(&archive, "e:1", std::slice::from_ref(&tar)).unwrap();
    let mut m = json(&archive.join("manifest.json"));
    m[0]["Layers"][0] = "../../../../etc/passwd".into();
    fs::write(archive.join("manifest.json"), m.to_string()).unwrap();
    let e = import_err(&archive);
    assert!(e.contains("`..`") && e.contains("etc/passwd"), "{e}");
    // ... or reaches out through a symlink inside the archive.
    let mut m = json(&archive.join("manifest.json"));
    std::os::unix::fs::symlink("/etc", archive.join("sneaky")).unwrap();
    m[0]["Layers"][0] = "sneaky/passwd".into();
    fs::write(archive.join("manifest.json"), m.to_string()).unwrap();
    let e = import_err(&archive);
    assert!(e.contains("outside the archive"), "{e}");

    // A tar header claiming an absurd size (far beyond the data): the
    // stream ends first, and the entry is named.
    let mut absurd = Vec::new();
    let mut h = Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(1 << 50);
    h.set_cksum();
    absurd.extend_from_slice(h.as_bytes());
    absurd.extend_from_slice(&[0u8; 4096]);
    let p = work.join("absurd.tar");
    fs::write(&p, &absurd).unwrap();
    let e = import_err(&p);
    assert!(e.contains("huge"), "{e}");

    // A whiteout of the layer root itself.
    let p = work.join("wh-root.tar");
    fs::write(&p, case(&[(".wh.", EntryType::Regular, "", b"")])).unwrap();
    let e = import_err(&p);
    assert!(e.contains("whiteout of the root"), "{e}");
}
