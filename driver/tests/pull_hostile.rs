//! A registry that lies, stalls or attacks: every pull fails with an
//! error naming the registry and the problem, and leaves the store as it
//! was; what can be retried is, and a cut-off blob resumes by Range, in
//! one pull and across a pull killed with SIGKILL.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_driver::digest::Digest;
use strata_driver::image::build::LayerTar;
use strata_driver::image::config::new_config;
use strata_driver::image::oci::manifest_json;
use strata_driver::pull::{pull, PullOptions};
use strata_driver::testing::{privileged, TestStore};
use strata_driver::Store;
use support::hostile::{Hostile, Image, Reply, Request, Script};

/// A layer tar built by `build`.
fn layer_tar(dir: &Path, build: impl FnOnce(&mut LayerTar)) -> Vec<u8> {
    let mut t = LayerTar::create(&dir.join("layer.tar")).unwrap();
    build(&mut t);
    fs::read(t.finish().unwrap()).unwrap()
}

fn image(tar: &[u8], layers_in_manifest: usize) -> Image {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = Digest::of_bytes(&layer);
    let config = new_config(None, &[Digest::of_bytes(tar)], "hostile test");
    let config_digest = Digest::of_bytes(&config);
    let desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": layer_digest, "size": layer.len(),
    });
    let manifest =
        manifest_json(&config_digest, config.len(), vec![desc; layers_in_manifest]).into_bytes();
    Image {
        manifest_digest: Digest::of_bytes(&manifest),
        manifest,
        config,
        config_digest,
        layer,
        layer_digest,
    }
}

fn normal_image(dir: &Path) -> Image {
    image(
        &layer_tar(dir, |t| {
            t.pattern_file("data/big", 1 << 20, 7).unwrap();
            t.file("etc/motd", b"hi\n", 0o644).unwrap();
        }),
        1,
    )
}

fn quick() -> PullOptions {
    let mut o = PullOptions::default();
    o.registry.transport.backoff = Duration::from_millis(20);
    o.registry.transport.read_timeout = Duration::from_secs(1);
    o.registry.transport.attempts = 3;
    o
}

/// Answers the requests whose path contains `part` with `reply`, every
/// other one as a well-behaved registry would.
fn on(part: &str, reply: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Script {
    let part = part.to_string();
    Box::new(move |r, _| {
        if r.path.contains(&part) {
            reply(r)
        } else {
            Reply::Normal
        }
    })
}

fn is_layer(r: &Request, img_layer: &Digest) -> bool {
    r.path.ends_with(&format!("blobs/{img_layer}"))
}

/// Nothing stored, nothing staged, nothing for check to find.
fn assert_untouched(store: &Store) {
    assert!(store.images().unwrap().is_empty(), "an image was stored");
    assert_eq!(
        fs::read_dir(store.layers_dir()).unwrap().count(),
        0,
        "a layer was stored"
    );
    assert_eq!(
        fs::read_dir(store.tmp_dir()).unwrap().count(),
        0,
        "staging was left"
    );
    assert!(store.check(false).unwrap().is_empty());
}

/// Pulls from a registry running `script` over the normal image; the
/// error, after checking it names the registry and the store is as it
/// was.
fn failing_pull(ts: &TestStore, img: Image, script: Script, opts: &PullOptions) -> String {
    let reg = Hostile::start(img, script);
    let e = pull(&ts.store, &reg.reference(), opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&reg.host),
        "the error does not name the registry: {e}"
    );
    assert_untouched(&ts.store);
    e
}

#[test]
fn lies_about_content_are_caught_and_store_nothing() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("src");

    // A blob whose bytes are not its digest's.
    let mut img = normal_image(&dir);
    let n = img.layer.len();
    img.layer[n / 2] ^= 0xff;
    let e = failing_pull(&ts, img, Box::new(|_, _| Reply::Normal), &quick());
    assert!(e.contains("mismatch") || e.contains("corrupt"), "{e}");

    // A manifest whose bytes are not the digest pulled by.
    let img = normal_image(&dir);
    let reg = Hostile::start(img, Box::new(|_, _| Reply::Normal));
    let wrong = Digest::of_bytes(b"another manifest");
    let e = pull(
        &ts.store,
        &format!("{}/test/app@{wrong}", reg.host),
        &quick(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&reg.host) && e.contains(&format!("not {wrong}")),
        "{e}"
    );
    assert_untouched(&ts.store);

    // A manifest by tag that is not what the registry says it is.
    let e = failing_pull(
        &ts,
        normal_image(&dir),
        on("/manifests/", |_| {
            let said = Digest::of_bytes(b"x").to_string();
            let headers = vec![("Docker-Content-Digest".into(), said)];
            Reply::Status(200, headers, br#"{"schemaVersion":2}"#.to_vec())
        }),
        &quick(),
    );
    assert!(e.contains("hash to"), "{e}");
}

#[test]
fn oversized_documents_too_many_layers_and_hostile_tars_are_refused() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("src");

    let huge = on("/manifests/", |_| {
        Reply::Status(200, vec![], vec![b' '; 5 << 20])
    });
    let e = failing_pull(&ts, normal_image(&dir), huge, &quick());
    assert!(e.contains("larger than the 4 MiB limit"), "{e}");

    let tar = layer_tar(&dir, |t| {
        t.file("x", b"x", 0o644).unwrap();
    });
    let e = failing_pull(
        &ts,
        image(&tar, 501),
        Box::new(|_, _| Reply::Normal),
        &quick(),
    );
    assert!(e.contains("501 layers, more than the 500"), "{e}");

    // A layer that climbs out of itself: nothing lands outside the store.
    let outside = ts.dir.join("escaped");
    let tar = layer_tar(&dir, |t| {
        let path = format!("../../../../../../../..{}", outside.display());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        {
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
        }
        h.set_cksum();
        t.raw().append(&h, &b"evil"[..]).unwrap();
    });
    let e = failing_pull(
        &ts,
        image(&tar, 1),
        Box::new(|_, _| Reply::Normal),
        &quick(),
    );
    assert!(e.contains("..") || e.contains("outside"), "{e}");
    assert!(!outside.exists(), "the layer wrote outside the store");
}

#[test]
fn server_errors_are_retried_with_backoff_then_reported() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("src");

    // 503, then 429 with Retry-After: 1, then the blob: the pull succeeds
    // and waited as asked.
    let img = normal_image(&dir);
    let layer = img.layer_digest.clone();
    let reg = Hostile::start(
        img,
        Box::new(move |r, n| match (is_layer(r, &layer), n) {
            (true, 1) => Reply::Status(503, vec![], vec![]),
            (true, 2) => Reply::Status(429, vec![("Retry-After".into(), "1".into())], vec![]),
            _ => Reply::Normal,
        }),
    );
    let started = Instant::now();
    pull(&ts.store, &reg.reference(), &quick()).unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert_eq!(
        reg.requests_for("blobs/sha256").len(),
        4,
        "config + three tries of the layer"
    );

    let ts = TestStore::new();
    let e = failing_pull(
        &ts,
        normal_image(&dir),
        Box::new(|_, _| Reply::Status(500, vec![], vec![])),
        &quick(),
    );
    assert!(e.contains("answered 500 after 3 tries"), "{e}");
}

#[test]
fn redirect_loops_and_scheme_changes_are_refused() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("src");
    let to_self = on("/blobs/", |r| {
        Reply::Status(307, vec![("Location".into(), r.path.clone())], vec![])
    });
    let e = failing_pull(&ts, normal_image(&dir), to_self, &quick());
    assert!(e.contains("redirects (a loop?)"), "{e}");
    let to_ftp = on("/blobs/", |_| {
        let location = vec![("Location".into(), "ftp://127.0.0.1/blob".into())];
        Reply::Status(302, location, vec![])
    });
    let e = failing_pull(&ts, normal_image(&dir), to_ftp, &quick());
    assert!(e.contains("refused a redirect from http to ftp"), "{e}");
}

#[test]
fn a_blob_cut_off_resumes_by_range_and_one_that_stalls_times_out() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("src");

    let img = normal_image(&dir);
    let layer = img.layer_digest.clone();
    let half = img.layer.len() / 2;
    let reg = Hostile::start(
        img,
        Box::new(move |r, n| match (is_layer(r, &layer), n) {
            (true, 1) => Reply::CutAfter(half),
            _ => Reply::Normal,
        }),
    );
    pull(&ts.store, &reg.reference(), &quick()).unwrap();
    let tries = reg
        .requests_for("blobs/sha256")
        .into_iter()
        .filter(|r| r.headers.contains_key("range"))
        .collect::<Vec<_>>();
    assert_eq!(tries.len(), 1, "one resumed request");
    assert_eq!(tries[0].headers["range"], format!("bytes={half}-"));

    // Cut off every time: a clear error after the tries.
    let ts = TestStore::new();
    let img = normal_image(&dir);
    let always = on(&format!("blobs/{}", img.layer_digest), |_| {
        Reply::CutAfter(1000)
    });
    let e = failing_pull(&ts, img, always, &quick());
    // Each try resumed where the last was cut: 1000 bytes further each.
    assert!(
        e.contains("at byte 3000 of") && e.contains("3 times"),
        "{e}"
    );

    // A registry that stops sending: the read times out, no hang.
    let ts = TestStore::new();
    let img = normal_image(&dir);
    let stall = on(&format!("blobs/{}", img.layer_digest), |_| {
        Reply::StallAfter(1000)
    });
    let started = Instant::now();
    let e = failing_pull(&ts, img, stall, &quick());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        e.contains("timed out") || e.contains("Timeout") || e.contains("timeout"),
        "{e}"
    );
}

#[test]
fn a_pull_killed_mid_blob_resumes_from_its_partial_copy() {
    if !privileged() {
        return;
    }
    let ts = TestStore::new();
    let dir = ts.scratch("src");
    let img = normal_image(&dir);
    let layer = img.layer_digest.clone();
    let size = img.layer.len() as u64;
    let part = img.layer.len() * 2 / 3;
    let partial = ts.store.downloads_dir().join(layer.hex());
    let reg = Hostile::start(
        img,
        Box::new(move |r, n| match (is_layer(r, &layer), n) {
            (true, 1) => Reply::StallAfter(part),
            _ => Reply::Normal,
        }),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(ts.store.root())
        .args(["image", "pull", "--quiet", &reg.reference()])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < part as u64 {
        assert!(
            Instant::now() < deadline,
            "the pull never got {part} bytes in"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Consistent after the kill: the next command rolls the staging back.
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(ts.store.root())
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(ts.store.images().unwrap().is_empty());

    pull(&ts.store, &reg.reference(), &quick()).unwrap();
    let ranged: Vec<_> = reg
        .requests_for("blobs/sha256")
        .into_iter()
        .filter(|r| r.headers.contains_key("range"))
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:?}");
    assert_eq!(ranged[0].headers["range"], format!("bytes={part}-"));
    assert_eq!(
        reg.layer_bytes_sent
            .load(std::sync::atomic::Ordering::SeqCst),
        size,
        "every byte sent once"
    );
    assert!(!partial.exists(), "the partial copy outlived its layer");
    assert!(ts.store.check(false).unwrap().is_empty());
}
