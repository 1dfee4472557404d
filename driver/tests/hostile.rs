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
            "absolute",
            case(&[("/abs-file", Regular, "", b"x")]),
            vec!["/abs-file", "absolute"],
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
