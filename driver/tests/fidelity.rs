//! Tar to layer, full fidelity, checked through a mounted container.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use strata_driver::fsutil::get_xattr;
use strata_driver::image::build::LayerTar;
use strata_driver::testing::{layer, privileged, TestStore};
use tar::{EntryType, Header};

const MTIME: i64 = 1_700_000_000;

/// security.capability granting cap_net_bind_service (bit 10), effective:
/// vfs_cap_data revision 2.
fn net_bind_cap() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v
}

fn special(t: &mut LayerTar, path: &str, kind: EntryType, major: u32, minor: u32) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o640);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(MTIME as u64);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    t.raw().append_data(&mut h, path, std::io::empty()).unwrap();
}

/// A GNU sparse entry: 4 KiB of data at 0 and at 1 MiB, 1 MiB + 4 KiB long.
fn sparse(t: &mut LayerTar, path: &str) {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME as u64);
    h.set_size(8192);
    let g = h.as_gnu_mut().unwrap();
    g.sparse[0].set_offset(0);
    g.sparse[0].set_length(4096);
    g.sparse[1].set_offset(1 << 20);
    g.sparse[1].set_length(4096);
    g.set_real_size((1 << 20) + 4096);
    h.set_cksum();
    let data = [0xabu8; 8192];
    t.raw().append_data(&mut h, path, &data[..]).unwrap();
}

#[test]
fn every_entry_type_and_attribute_survives() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "full",
        vec![
            layer(|t| {
                t.dir("d", 0o2775, 3, 4).unwrap();
                t.file("d/suid", b"#!/bin/true\n", 0o4755).unwrap();
                t.file("d/sgid", b"g", 0o2755).unwrap();
                t.dir("tmp", 0o1777, 0, 0).unwrap();
                t.raw()
                    .append_pax_extensions([("SCHILY.xattr.user.note", &b"hello"[..])])
                    .unwrap();
                t.file("noted", b"n", 0o644).unwrap();
                let cap = net_bind_cap();
                t.raw()
                    .append_pax_extensions([("SCHILY.xattr.security.capability", cap.as_slice())])
                    .unwrap();
                t.file("d/ping", b"p", 0o755).unwrap();
                t.symlink("d/link", "suid").unwrap();
                t.symlink("abs", "/etc/passwd").unwrap();
                t.dir("other", 0o755, 0, 0).unwrap();
                t.hardlink("other/hl", "d/suid").unwrap();
                t.dir("dev", 0o755, 0, 0).unwrap();
                special(t, "dev/null", EntryType::Char, 1, 3);
                special(t, "dev/loop9", EntryType::Block, 7, 9);
                special(t, "dev/fifo", EntryType::Fifo, 0, 0);
                sparse(t, "sparse");
                t.dir("opq", 0o755, 0, 0).unwrap();
                t.file("opq/old", b"o", 0o644).unwrap();
                t.dir("opq2", 0o755, 0, 0).unwrap();
                t.file("opq2/old", b"o", 0o644).unwrap();
            }),
            layer(|t| {
                t.whiteout("d/sgid").unwrap();
                // Marker before its directory's entry ...
                t.opaque("opq").unwrap();
                t.dir("opq", 0o750, 0, 0).unwrap();
                t.file("opq/new", b"n", 0o644).unwrap();
                // ... and after it.
                t.dir("opq2", 0o755, 0, 0).unwrap();
                t.file("opq2/new", b"n", 0o644).unwrap();
                t.opaque("opq2").unwrap();
            }),
        ],
    );
    let (_, m) = ts.container("full");
    let md = |p: &str| fs::symlink_metadata(m.join(p)).unwrap();

    assert_eq!(
        (md("d").mode() & 0o7777, md("d").uid(), md("d").gid()),
        (0o2775, 3, 4)
    );
    assert_eq!(md("d/suid").mode() & 0o7777, 0o4755);
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(md("d/suid").mtime(), MTIME);
    assert_eq!(
        md("d").mtime(),
        MTIME,
        "directory mtimes are set after their children"
    );
    assert_eq!(
        get_xattr(&m.join("noted"), "user.note").unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        get_xattr(&m.join("d/ping"), "security.capability").unwrap(),
        Some(net_bind_cap())
    );
    assert_eq!(
        fs::read_link(m.join("d/link")).unwrap().to_str(),
        Some("suid")
    );
    assert_eq!(
        fs::read_link(m.join("abs")).unwrap().to_str(),
        Some("/etc/passwd")
    );
    assert_eq!(
        md("other/hl").ino(),
        md("d/suid").ino(),
        "hardlink across directories"
    );
    assert_eq!(md("d/suid").nlink(), 2);
    assert!(md("dev/null").file_type().is_char_device());
    assert_eq!(
        (
            libc::major(md("dev/null").rdev()),
            libc::minor(md("dev/null").rdev())
        ),
        (1, 3)
    );
    assert!(md("dev/loop9").file_type().is_block_device());
    assert_eq!(
        (
            libc::major(md("dev/loop9").rdev()),
            libc::minor(md("dev/loop9").rdev())
        ),
        (7, 9)
    );
    assert!(md("dev/fifo").file_type().is_fifo());
    let sp = md("sparse");
    assert_eq!(sp.len(), (1 << 20) + 4096);
    assert!(
        sp.blocks() * 512 < 64 * 1024,
        "holes were written out: {} blocks",
        sp.blocks()
    );
    let data = fs::read(m.join("sparse")).unwrap();
    assert!(data[..4096].iter().all(|b| *b == 0xab) && data[4096..1 << 20].iter().all(|b| *b == 0));
    assert!(data[1 << 20..].iter().all(|b| *b == 0xab));

    // Whiteouts and opaque directories, whichever order the marker came in.
    assert!(!m.join("d/sgid").exists());
    assert!(!m.join("opq/old").exists() && m.join("opq/new").exists());
    assert!(!m.join("opq2/old").exists() && m.join("opq2/new").exists());
    assert_eq!(md("opq").mode() & 0o7777, 0o750);
}
