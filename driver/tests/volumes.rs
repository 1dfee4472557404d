//! Volumes: bind-mounted, outside copy-on-write, outliving containers.

use std::fs;

use strata_driver::containers::CreateOptions;
use strata_driver::testing::{layer, privileged, TestStore};
use strata_driver::Error;

#[test]
fn volume_io_bypasses_the_writable_layer_and_outlives_containers() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            t.dir("data", 0o755, 0, 0).unwrap();
            t.file("data/from-image", b"hidden by the volume", 0o644)
                .unwrap();
            t.file("etc-file", b"e", 0o644).unwrap();
        })],
    );
    ts.store.create_volume("shared").unwrap();
    let create = |vols: &[&str]| {
        let volumes = vols.iter().map(|v| v.parse().unwrap()).collect();
        let c = ts
            .store
            .create_container(
                "img",
                &CreateOptions {
                    volumes,
                    ..Default::default()
                },
            )
            .unwrap();
        let merged = ts.store.mount_container(&c.id).unwrap();
        (c.id, merged)
    };
    let (a, ma) = create(&["shared:/data"]);
    assert!(
        !ma.join("data/from-image").exists(),
        "the volume is mounted over the image's /data"
    );
    fs::write(ma.join("data/log"), b"first").unwrap();
    fs::write(ma.join("data/log"), b"rewritten").unwrap();
    // No copy-up, no upper entry: the writable layer holds nothing.
    assert_eq!(fs::read_dir(ts.store.upper_dir(&a)).unwrap().count(), 0);
    assert!(ts.store.container_changes(&a).unwrap().is_empty());
    assert_eq!(
        fs::read(ts.store.volume_data("shared").join("log")).unwrap(),
        b"rewritten"
    );

    // Shared by a second container, read-only there.
    let (b, mb) = create(&["shared:/data:ro"]);
    assert_eq!(fs::read(mb.join("data/log")).unwrap(), b"rewritten");
    let err = fs::write(mb.join("data/other"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    // A mount point the image lacks is created as an empty directory.
    let (c, mc) = create(&["shared:/mnt/deep/vol"]);
    assert_eq!(fs::read(mc.join("mnt/deep/vol/log")).unwrap(), b"rewritten");
    assert_eq!(
        fs::read_dir(ts.store.upper_dir(&c).join("mnt/deep/vol"))
            .unwrap()
            .count(),
        0
    );

    let err = ts.store.remove_volume("shared").unwrap_err();
    assert!(matches!(err, Error::InUse(_)), "{err}");
    for id in [&a, &b, &c] {
        ts.store.remove_container(id, true).unwrap();
    }
    assert_eq!(
        fs::read(ts.store.volume_data("shared").join("log")).unwrap(),
        b"rewritten",
        "data outlives its containers"
    );
    let usage = ts.store.system_df().unwrap();
    assert_eq!(usage.volumes_size, 9);
    ts.store.remove_volume("shared").unwrap();
    assert!(ts.store.volumes().unwrap().is_empty());
}

#[test]
fn bad_volume_specs_and_names_are_refused() {
    for bad in [
        "noslash",
        "v:relative",
        "v:/a/../b",
        "v:/x:rx",
        "bad name:/x",
        "../v:/x",
    ] {
        assert!(
            bad.parse::<strata_driver::volumes::VolumeMount>().is_err(),
            "{bad} accepted"
        );
    }
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    assert!(ts.store.create_volume("../escape").is_err());
    ts.store.create_volume("v1").unwrap();
    assert!(matches!(
        ts.store.create_volume("v1"),
        Err(Error::AlreadyExists(_))
    ));
    let err = ts
        .store
        .create_container(
            "nope",
            &CreateOptions {
                volumes: vec!["missing:/x".parse().unwrap()],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}
