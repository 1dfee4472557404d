//! `strata image pull` from a real registry (the CNCF distribution
//! registry, on 127.0.0.1): every layer compression, multi-platform
//! indexes, TLS verified with a CA made for the run, basic auth, and
//! layers the store has already not fetched again.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use strata_driver::archive::compression::Compression;
use strata_driver::image::build::{write_oci_layout, LayerTar};
use strata_driver::image::platform::Platform;
use strata_driver::import::{import, ImportOptions};
use strata_driver::pull::{pull, PullOptions, RemoteImage};
use strata_driver::registry::credentials::Credentials;
use strata_driver::testing::registry::{Registry, RegistryConfig};
use strata_driver::testing::{edit_snapshot_db, privileged, snapshot, TestStore};
use strata_driver::Store;

/// A base layer with files, a directory and a hardlink; a top layer that
/// whites one file out and makes a directory opaque.
fn layers(dir: &Path, seed: u8) -> Vec<PathBuf> {
    let mut a = LayerTar::create(&dir.join("a.tar")).unwrap();
    a.dir("etc", 0o755, 0, 0).unwrap();
    a.file(
        "etc/os-release",
        format!("ID=strata{seed}\n").as_bytes(),
        0o644,
    )
    .unwrap();
    a.pattern_file("usr/bin/tool", 700_000, seed).unwrap();
    a.hardlink("usr/bin/tool-link", "usr/bin/tool").unwrap();
    a.file("var/cache/old", b"old\n", 0o644).unwrap();
    a.file("opt/app/stale", b"stale\n", 0o644).unwrap();
    let mut b = LayerTar::create(&dir.join("b.tar")).unwrap();
    b.whiteout("var/cache/old").unwrap();
    b.opaque("opt/app").unwrap();
    b.file("opt/app/fresh", b"fresh\n", 0o600).unwrap();
    vec![a.finish().unwrap(), b.finish().unwrap()]
}

/// What a container of `image` sees, and the image's ID.
fn view(store: &Store, image: &str) -> (std::collections::BTreeMap<String, String>, String) {
    let img = store.find_image(image).unwrap();
    let seen = in_container(store, image, snapshot);
    (seen, img.id.to_string())
}

/// `f` of the merged view of a new container of `image`.
fn in_container<T>(store: &Store, image: &str, f: impl FnOnce(&Path) -> T) -> T {
    let c = store.create_container(image, &Default::default()).unwrap();
    let merged = store.mount_container(&c.id).unwrap();
    let out = f(&merged);
    store.remove_container(&c.id, true).unwrap();
    out
}

fn blob_gets(reg: &Registry, repo: &str) -> usize {
    reg.requests(&[&format!("\"GET /v2/{repo}/blobs/"), "strata/"])
}

#[test]
fn a_pull_stores_what_an_import_of_the_same_image_stores() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let imported = TestStore::new();
    for (i, compression) in [Compression::Gzip, Compression::Zstd, Compression::None]
        .into_iter()
        .enumerate()
    {
        let work = ts.scratch(&format!("src{i}"));
        let layout = work.join("layout");
        write_oci_layout(&layout, "v1", &layers(&work, i as u8), compression).unwrap();
        let repo = format!("test/c{i}");
        reg.push(
            &format!("oci:{}:v1", layout.display()),
            &format!("{repo}:v1"),
            &[],
        );

        let reference = format!("{}/{repo}:v1", reg.host);
        let report = pull(&ts.store, &reference, &PullOptions::default()).unwrap();
        assert!(report.layers.iter().all(|l| !l.shared), "{compression:?}");
        assert_eq!(
            blob_gets(&reg, &repo),
            3,
            "config + 2 layers: {}",
            reg.log()
        );
        let name = format!("{}:v1", layout.display());
        let ours = import(
            &imported.store,
            &name,
            &ImportOptions {
                name: Some(format!("imp{i}")),
                progress: false,
            },
        )
        .unwrap();
        let (pulled_view, pulled_id) = view(&ts.store, &reference);
        let (imported_view, imported_id) = view(&imported.store, &format!("imp{i}"));
        assert_eq!(
            pulled_id, imported_id,
            "{compression:?}: same config, same ID"
        );
        assert_eq!(pulled_view, imported_view, "{compression:?}");
        assert_eq!(report.image.id, ours.image.id);
        assert!(pulled_view["opt/app/fresh"].contains("mode=100600"));
        assert!(!pulled_view.contains_key("var/cache/old"));
        assert!(!pulled_view.contains_key("opt/app/stale"));

        // Pulled again (by digest this time): nothing is fetched but the
        // manifest and the config.
        let by_digest = format!("{}/{repo}@{}", reg.host, report.manifest_digest);
        let again = pull(&ts.store, &by_digest, &PullOptions::default()).unwrap();
        assert!(again.layers.iter().all(|l| l.shared));
        assert_eq!(blob_gets(&reg, &repo), 4, "only the config again");
        assert_eq!(again.image.id, report.image.id);
        let img = ts.store.find_image(&by_digest).unwrap();
        assert_eq!(
            img.repo_digests,
            vec![format!("{}/{repo}@{}", reg.host, report.manifest_digest)]
        );
    }
    assert!(ts.store.check(false).unwrap().is_empty());
    assert_eq!(
        fs::read_dir(ts.store.downloads_dir()).unwrap().count(),
        0,
        "no partial blob left"
    );
}

/// An OCI layout whose one entry is an index of an amd64 and an arm64
/// image, each with its own /etc/arch.
fn multi_platform_layout(work: &Path) -> PathBuf {
    let layout = work.join("multi");
    for arch in ["amd64", "arm64"] {
        let mut l = LayerTar::create(&work.join(format!("{arch}.tar"))).unwrap();
        l.file("etc/arch", arch.as_bytes(), 0o644).unwrap();
        write_oci_layout(&layout, arch, &[l.finish().unwrap()], Compression::Gzip).unwrap();
    }
    let index_path = layout.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let mut entries = index["manifests"].as_array().unwrap().clone();
    for e in &mut entries {
        let arch = e["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap()
            .to_string();
        e["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        e.as_object_mut().unwrap().remove("annotations");
    }
    let inner = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    })
    .to_string();
    let digest = strata_driver::digest::Digest::of_bytes(inner.as_bytes());
    fs::write(layout.join("blobs/sha256").join(digest.hex()), &inner).unwrap();
    let outer = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": inner.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    fs::write(&index_path, outer.to_string()).unwrap();
    layout
}

#[test]
fn a_multi_platform_index_gives_the_platform_asked_for() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let layout = multi_platform_layout(&ts.scratch("src"));
    reg.push(
        &format!("oci:{}:multi", layout.display()),
        "test/multi:v1",
        &["--all"],
    );
    let reference = format!("{}/test/multi:v1", reg.host);

    let arch = |image: &str| {
        in_container(&ts.store, image, |m| {
            fs::read_to_string(m.join("etc/arch")).unwrap()
        })
    };
    let host = pull(&ts.store, &reference, &PullOptions::default()).unwrap();
    assert_eq!(arch(&reference), Platform::host().architecture);

    let arm = PullOptions {
        platform: Platform::parse("linux/arm64").unwrap(),
        ..Default::default()
    };
    let other = pull(&ts.store, &reference, &arm).unwrap();
    assert_ne!(other.image.id, host.image.id);
    assert_eq!(arch(other.image.id.as_str()), "arm64");

    let s390 = PullOptions {
        platform: Platform::parse("linux/s390x").unwrap(),
        ..Default::default()
    };
    let e = pull(&ts.store, &reference, &s390).unwrap_err().to_string();
    assert!(
        e.contains("no image for linux/s390x") && e.contains("linux/amd64, linux/arm64"),
        "{e}"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in
/// `dir`: (ca.crt, server.crt, server.key).
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    );
    fs::write(&paths.0, ca.pem()).unwrap();
    fs::write(&paths.1, cert.pem()).unwrap();
    fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn one_layer_layout(work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let mut l = LayerTar::create(&work.join("l.tar")).unwrap();
    l.file("hello", b"hello\n", 0o644).unwrap();
    write_oci_layout(&layout, "v1", &[l.finish().unwrap()], Compression::Gzip).unwrap();
    layout
}

#[test]
fn tls_is_verified_against_the_ca_given_and_never_skipped() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let certs = ts.scratch("certs");
    let (ca, cert, key) = make_certs(&certs);
    let reg = Registry::start(
        &ts.scratch("registry"),
        &RegistryConfig {
            tls: Some((cert, key)),
            ..Default::default()
        },
    );
    let layout = one_layer_layout(&ts.scratch("src"));
    reg.push(&format!("oci:{}:v1", layout.display()), "test/tls:v1", &[]);
    let reference = format!("{}/test/tls:v1", reg.host);

    let mut opts = PullOptions::default();
    opts.registry.transport.certs_dirs.clear();
    let e = pull(&ts.store, &reference, &opts).unwrap_err().to_string();
    assert!(
        e.contains("certificate not trusted") && e.contains("--tls-ca"),
        "{e}"
    );
    assert!(ts.store.images().unwrap().is_empty());

    opts.registry.transport.ca_files = vec![ca.clone()];
    pull(&ts.store, &reference, &opts).unwrap();

    // The same CA as certs.d/HOST:PORT/ca.crt, as docker keeps it.
    let certs_d = ts.scratch("certs.d");
    fs::create_dir_all(certs_d.join(&reg.host)).unwrap();
    fs::copy(&ca, certs_d.join(&reg.host).join("ca.crt")).unwrap();
    let other = TestStore::new();
    let mut opts = PullOptions::default();
    opts.registry.transport.certs_dirs = vec![certs_d];
    pull(&other.store, &reference, &opts).unwrap();

    // Marked insecure, the certificate is not checked.
    let third = TestStore::new();
    let mut opts = PullOptions::default();
    opts.registry.transport.certs_dirs.clear();
    opts.registry.transport.insecure = vec![reg.host.clone()];
    pull(&third.store, &reference, &opts).unwrap();
}

#[test]
fn basic_auth_takes_credentials_from_the_flag_or_an_auth_file_and_never_shows_them() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("auth");
    let htpasswd = dir.join("htpasswd");
    let hash = bcrypt::hash("pa55-word", 5).unwrap();
    fs::write(&htpasswd, format!("tester:{hash}\n")).unwrap();
    let reg = Registry::start(
        &ts.scratch("registry"),
        &RegistryConfig {
            htpasswd: Some(htpasswd),
            ..Default::default()
        },
    );
    let layout = one_layer_layout(&ts.scratch("src"));
    reg.push(
        &format!("oci:{}:v1", layout.display()),
        "test/private:v1",
        &["--dest-creds", "tester:pa55-word"],
    );
    let reference = format!("{}/test/private:v1", reg.host);

    let e = pull(&ts.store, &reference, &PullOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs credentials"), "{e}");
    let mut wrong = PullOptions::default();
    wrong.registry.credentials = Some(Credentials::new("tester", "not-it"));
    let e = pull(&ts.store, &reference, &wrong).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        shown.contains("refused the credentials of \"tester\""),
        "{shown}"
    );
    assert!(!shown.contains("not-it"), "the password leaked: {shown}");

    let mut right = PullOptions::default();
    right.registry.credentials = Some(Credentials::parse("tester:pa55-word").unwrap());
    pull(&ts.store, &reference, &right).unwrap();

    use base64::Engine as _;
    let auth_file = dir.join("auth.json");
    let b64 = base64::engine::general_purpose::STANDARD.encode("tester:pa55-word");
    fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host),
    )
    .unwrap();
    let other = TestStore::new();
    let mut from_file = PullOptions::default();
    from_file.registry.auth_files = vec![dir.join("missing.json"), auth_file];
    pull(&other.store, &reference, &from_file).unwrap();
    assert_eq!(other.store.images().unwrap().len(), 1);
}

#[test]
fn token_auth_is_anonymous_where_allowed_and_one_token_serves_a_pull() {
    if !privileged() {
        return;
    }
    use support::token::{TokenServer, ISSUER, SERVICE, USER};
    let ts = TestStore::new();
    let tokens = TokenServer::start(&ts.scratch("token"));
    let reg = Registry::start(
        &ts.scratch("registry"),
        &RegistryConfig {
            token: Some((
                tokens.realm.clone(),
                SERVICE.into(),
                ISSUER.into(),
                tokens.bundle.clone(),
            )),
            ..Default::default()
        },
    );
    let work = ts.scratch("src");
    let layout = work.join("layout");
    write_oci_layout(&layout, "v1", &layers(&work, 9), Compression::Gzip).unwrap();
    let creds = format!("{}:{}", USER.0, USER.1);
    for repo in ["public/app:v1", "private/app:v1"] {
        reg.push(
            &format!("oci:{}:v1", layout.display()),
            repo,
            &["--dest-creds", &creds],
        );
    }

    // Anonymous: the token server grants pull of public/* only.
    let before = tokens.issued.load(Ordering::SeqCst);
    pull(
        &ts.store,
        &format!("{}/public/app:v1", reg.host),
        &PullOptions::default(),
    )
    .unwrap();
    assert_eq!(
        tokens.issued.load(Ordering::SeqCst) - before,
        1,
        "one token for manifest, config and both layers"
    );
    let private = format!("{}/private/app:v1", reg.host);
    let e = pull(&ts.store, &private, &PullOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs credentials"), "{e}");

    let mut wrong = PullOptions::default();
    wrong.registry.credentials = Some(Credentials::new(USER.0, "nope"));
    let e = pull(&ts.store, &private, &wrong).unwrap_err().to_string();
    assert!(
        e.contains("refused the credentials") && !e.contains("nope"),
        "{e}"
    );

    let mut right = PullOptions::default();
    right.registry.credentials = Some(Credentials::new(USER.0, USER.1));
    let report = pull(&ts.store, &private, &right).unwrap();
    assert!(
        report.layers.iter().all(|l| l.shared),
        "the same layers as public/app's"
    );
}

fn uploads(reg: &Registry, repo: &str) -> usize {
    reg.requests(&[&format!("\"PATCH /v2/{repo}/blobs/uploads/"), "strata/"])
}

#[test]
fn a_pulled_image_pushes_unchanged_without_uploading_and_a_commit_uploads_one_layer() {
    if !privileged() {
        return;
    }
    use strata_driver::push::{push, Sent};
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let work = ts.scratch("src");
    let layout = work.join("layout");
    write_oci_layout(&layout, "v1", &layers(&work, 3), Compression::Gzip).unwrap();
    reg.push(&format!("oci:{}:v1", layout.display()), "test/orig:v1", &[]);
    let orig = format!("{}/test/orig:v1", reg.host);
    let pulled = pull(&ts.store, &orig, &PullOptions::default()).unwrap();
    let opts = PullOptions::default();

    // The same repository: every blob is there. Another one: mounted.
    let same = push(&ts.store, &orig, None, &opts.registry).unwrap();
    assert!(
        same.layers.iter().all(|l| l.sent == Sent::Exists),
        "{same:?}"
    );
    assert_eq!(
        same.manifest_digest, pulled.manifest_digest,
        "the manifest it was pulled by"
    );
    let copy = format!("{}/test/copy:v2", reg.host);
    let copied = push(&ts.store, &orig, Some(&copy), &opts.registry).unwrap();
    assert!(
        copied.layers.iter().all(|l| l.sent == Sent::Mounted),
        "{copied:?}"
    );
    assert_eq!(copied.manifest_digest, pulled.manifest_digest);
    assert_eq!(uploads(&reg, "test/copy"), 0, "no layer was uploaded");

    // A commit adds one layer: only that one is uploaded, and a fresh
    // store pulls back the same image.
    let c = ts
        .store
        .create_container(&orig, &Default::default())
        .unwrap();
    let merged = ts.store.mount_container(&c.id).unwrap();
    fs::write(merged.join("etc/added"), b"by the commit\n").unwrap();
    ts.store.unmount_container(&c.id).unwrap();
    let committed = format!("{}/test/committed:v1", reg.host);
    let img = strata_driver::commit::commit(&ts.store, &c.id, &committed).unwrap();
    let pushed = push(&ts.store, &committed, None, &opts.registry).unwrap();
    let sent: Vec<Sent> = pushed.layers.iter().map(|l| l.sent).collect();
    assert_eq!(sent, [Sent::Mounted, Sent::Mounted, Sent::Uploaded]);
    assert_eq!(
        pushed.config_digest, img.id,
        "the commit's config, unchanged"
    );
    let fresh = TestStore::new();
    let back = pull(&fresh.store, &committed, &PullOptions::default()).unwrap();
    assert_eq!(back.manifest_digest, pushed.manifest_digest);
    assert_eq!(back.image.id, img.id);
    let seen = in_container(&fresh.store, &committed, |m| {
        fs::read_to_string(m.join("etc/added")).unwrap()
    });
    assert_eq!(seen, "by the commit\n");

    // Pushed again: the new layer is known now, nothing is uploaded.
    let before = uploads(&reg, "test/committed");
    let again = push(&ts.store, &committed, None, &opts.registry).unwrap();
    assert!(again.layers.iter().all(|l| l.sent == Sent::Exists));
    assert_eq!(uploads(&reg, "test/committed"), before);
    assert!(ts.store.check(false).unwrap().is_empty());
}

fn unflushed_marks(store: &Store) -> Vec<Option<String>> {
    let db = store.snapshot_db().unwrap();
    db.snapshots
        .values()
        .map(|r| r.unflushed_boot.clone())
        .collect()
}

/// The machine went down before the flusher ran: every mark as if
/// written in an earlier boot.
fn as_if_rebooted(store: &Store) {
    edit_snapshot_db(store, |db| {
        for rec in db.snapshots.values_mut() {
            if rec.unflushed_boot.is_some() {
                rec.unflushed_boot = Some("an-earlier-boot".into());
            }
        }
    });
}

#[test]
fn layers_fetched_for_containerd_are_unflushed_until_the_flusher_and_an_image_makes_them_durable() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let work = ts.scratch("src");
    let layout = work.join("layout");
    write_oci_layout(&layout, "v1", &layers(&work, 7), Compression::Gzip).unwrap();
    reg.push(&format!("oci:{}:v1", layout.display()), "test/f:v1", &[]);
    let reference = format!("{}/test/f:v1", reg.host);
    let remote = RemoteImage::resolve(&reference, &PullOptions::default()).unwrap();
    let s = &ts.store;
    let boot = strata_driver::snapshots::boot_id().unwrap();

    // Fetched as containerd's snapshots: recorded before any flush, as a
    // Commit is; a crash before the flusher drops them, layers and all.
    let names = remote
        .store_as_snapshots(s, &Default::default(), &|_, b| b)
        .unwrap();
    assert_eq!(names.len(), 2);
    assert_eq!(unflushed_marks(s), vec![Some(boot.clone()); 2]);
    as_if_rebooted(s);
    assert!(s.recover_if_needed().unwrap().iter().all(|p| p.repaired));
    assert!(s.list_snapshots(&[]).unwrap().is_empty());
    assert!(s.layers().unwrap().is_empty(), "torn layers are not shared");
    assert!(s.check(false).unwrap().is_empty());

    // Fetched again, then flushed: durable, nothing left marked.
    remote
        .store_as_snapshots(s, &Default::default(), &|_, b| b)
        .unwrap();
    assert_eq!(
        blob_gets(&reg, "test/f"),
        5,
        "the config once, 2 layers twice"
    );
    assert_eq!(s.flush_snapshots().unwrap(), 2);
    assert_eq!(unflushed_marks(s), vec![None; 2]);

    // An image that shares unflushed fetched layers survives a crash
    // though their snapshots do not.
    let other = TestStore::new();
    let o = &other.store;
    remote
        .store_as_snapshots(o, &Default::default(), &|_, b| b)
        .unwrap();
    let report = pull(o, &reference, &PullOptions::default()).unwrap();
    assert!(report.layers.iter().all(|l| l.shared), "nothing downloaded");
    as_if_rebooted(o);
    assert!(o.recover_if_needed().unwrap().iter().all(|p| p.repaired));
    assert!(o.list_snapshots(&[]).unwrap().is_empty());
    assert_eq!(o.layers().unwrap().len(), 2, "the image keeps its layers");
    assert!(o.check(false).unwrap().is_empty());
    let seen = in_container(o, &reference, snapshot);
    assert!(seen["opt/app/fresh"].contains("mode=100600"), "{seen:?}");
}

/// A pull killed after a layer's download was complete but before the
/// layer was published leaves the whole blob as its partial copy: the
/// next pull extracts it from there, fetching none of it again (asking
/// for bytes past its end would be answered 416).
#[test]
fn a_blob_downloaded_whole_before_a_kill_is_not_fetched_again() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let reg = Registry::start(&ts.scratch("registry"), &RegistryConfig::default());
    let work = ts.scratch("src");
    let layout = work.join("layout");
    write_oci_layout(&layout, "v1", &layers(&work, 3), Compression::Gzip).unwrap();
    reg.push(
        &format!("oci:{}:v1", layout.display()),
        "test/whole:v1",
        &[],
    );
    let reference = format!("{}/test/whole:v1", reg.host);
    let remote = RemoteImage::resolve(&reference, &PullOptions::default()).unwrap();
    let layer = &remote.resolved.layers[0].digest;
    let blob = layout.join("blobs/sha256").join(layer.hex());
    fs::create_dir_all(ts.store.downloads_dir()).unwrap();
    fs::copy(&blob, ts.store.downloads_dir().join(layer.hex())).unwrap();

    pull(&ts.store, &reference, &PullOptions::default()).unwrap();
    let layer_gets = reg.requests(&[&format!("GET /v2/test/whole/blobs/{layer}"), "strata/"]);
    assert_eq!(layer_gets, 0, "{}", reg.log());
    assert_eq!(
        blob_gets(&reg, "test/whole"),
        3,
        "the config twice (the test's resolve, the pull's) and the other layer"
    );
    assert!(ts.store.check(false).unwrap().is_empty());
    assert_eq!(fs::read_dir(ts.store.downloads_dir()).unwrap().count(), 0);
}
