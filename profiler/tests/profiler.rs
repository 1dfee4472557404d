//! strata-prof, black-box: real probes on this kernel, real overlay
//! mounts made by the driver, real copy-ups.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strata_common::names::program;
use strata_driver::containers::CreateOptions;
use strata_driver::testing::containerd::{busybox_image, Containerd, BOTTOM};
use strata_driver::testing::{layer, privileged, set_xattr, TestStore};
use strata_prof::links::{kernel_links, KernelLink};

mod common;
use common::*;

#[test]
fn doctor_tells_which_backends_work_and_why() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let d = doctor();
    let backend = |name: &str| {
        d["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["backend"] == name)
            .unwrap()
            .clone()
    };
    let check = |what: &str| {
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["what"].as_str().unwrap().starts_with(what))
            .unwrap()
            .clone()
    };
    // The tracepoint backend is what every kernel with BTF and syscall
    // tracepoints has, this one included.
    assert_eq!(backend("tracepoint")["available"], true);
    // The kprobe programs pass the verifier whether or not kprobes exist.
    assert_eq!(check("kprobe program load")["ok"], true, "{d:#}");
    for name in ["fentry", "kprobe"] {
        let b = backend(name);
        assert!(!b["why"].as_str().unwrap().is_empty());
        if b["available"] == false {
            // Never silently missing: the reason is one of the checks'.
            let why = b["why"].as_str().unwrap();
            assert!(
                why.contains("EPERM")
                    || why.contains("not permitted")
                    || why.contains("not compiled")
                    || why.contains("module")
                    || why.contains("traceable"),
                "{why}"
            );
        }
    }
    let chosen = d["chosen"].as_str().unwrap();
    let first_available = ["fentry", "kprobe", "tracepoint"]
        .into_iter()
        .find(|b| backend(b)["available"] == true)
        .unwrap();
    assert_eq!(chosen, first_available);
}

#[test]
fn forcing_a_backend_the_kernel_lacks_fails_clearly() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    for b in doctor()["backends"].as_array().unwrap() {
        if b["available"] == true {
            continue;
        }
        let name = b["backend"].as_str().unwrap();
        let out = Command::new(BIN)
            .args(["record", "--backend", name, "--duration", "1s"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{name} forced on a kernel without it succeeded"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("loading") || err.contains("attaching"),
            "{name}: {err}"
        );
    }
}

/// The truth bar, on every backend this kernel has.
#[test]
fn sweep_catches_every_copy_up_and_attributes_it() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let backends = available_backends();
    assert!(backends.contains(&"tracepoint".to_string()), "{backends:?}");
    for backend in backends {
        eprintln!("sweep on the {backend} backend");
        sweep_truth(&backend);
    }
}

/// `strata-prof sweep ARGS --json` with its store in `ts` and its plot at
/// `svg`; it must succeed. Returns its JSON lines and its stdout.
fn sweep(ts: &TestStore, args: &[&str], svg: &Path) -> (Vec<Value>, String) {
    let out = Command::new(BIN)
        .arg("sweep")
        .args(args)
        .args(["--json", "--root"])
        .arg(ts.dir.join("sweep-store"))
        .arg("--svg")
        .arg(svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (json_lines(&stdout), stdout)
}

fn sweep_truth(backend: &str) {
    let ts = TestStore::new();
    let svg = ts.dir.join("sweep.svg");
    let (lines, _) = sweep(
        &ts,
        &[
            "--sizes",
            "4K,2M",
            "--layers",
            "1,24",
            "--dirs",
            "0,9",
            "--reps",
            "3",
            "--backend",
            backend,
        ],
        &svg,
    );
    let cells: Vec<&Value> = lines.iter().filter(|v| v["type"] == "cell").collect();
    assert_eq!(
        cells.len(),
        4,
        "one axis at a time: 4K/1/0, 2M/1/0, 4K/24/0, 4K/1/9"
    );
    for c in &cells {
        assert_eq!(c["count"], 3, "{c}");
        for k in ["file_size", "layer_depth", "dir_depth", "p50", "p99", "max"] {
            assert!(c[k].is_u64(), "{k} missing in {c}");
        }
        assert!(
            c["p50"].as_u64().unwrap() <= c["user_p50"].as_u64().unwrap(),
            "{c}"
        );
    }
    let p50 = |size: u64| {
        cells
            .iter()
            .find(|c| c["file_size"] == size && c["layer_depth"] == 1 && c["dir_depth"] == 0)
            .unwrap()["p50"]
            .as_u64()
            .unwrap()
    };
    assert!(
        p50(2 << 20) > p50(4096),
        "copying 2 MiB up must cost more than 4 KiB"
    );
    let summary = lines.iter().find(|v| v["type"] == "sweep").unwrap();
    assert_eq!(summary["violations"], serde_json::json!([]), "{summary}");
    for why in summary["retried"].as_array().unwrap() {
        println!("{backend}: a cell was measured again after: {why}");
    }
    assert_eq!(summary["backend"], backend);
    let plot = fs::read_to_string(&svg).unwrap();
    assert!(
        plot.contains("<svg") && plot.contains("polyline"),
        "no lines in the plot"
    );
    assert!(
        !ts.dir.join("sweep-store").exists(),
        "sweep store not removed"
    );
}

/// `--triggers chmod --metacopy both`: the truth bar holds for
/// metadata-only copy-ups too, and the plot shows what metacopy saves: a
/// chmod's copy-up no longer grows with the file. One backend (the one a
/// user gets by default) keeps the guests' run short.
#[test]
fn sweep_of_chmod_shows_what_metacopy_saves() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    let svg = ts.dir.join("metacopy.svg");
    let (lines, stdout) = sweep(
        &ts,
        &[
            "--sizes",
            "4K,1M",
            "--layers",
            "1",
            "--dirs",
            "0",
            "--reps",
            "3",
            "--triggers",
            "chmod",
            "--metacopy",
            "both",
        ],
        &svg,
    );
    let summary = lines.iter().find(|v| v["type"] == "sweep").unwrap();
    assert_eq!(summary["violations"], serde_json::json!([]), "{summary}");
    let p50 = |size: u64, metacopy: bool| {
        let cell = lines
            .iter()
            .find(|c| {
                c["type"] == "cell"
                    && c["trigger"] == "chmod"
                    && c["file_size"] == size
                    && c["metacopy"] == metacopy
            })
            .unwrap_or_else(|| panic!("no cell {size} metacopy={metacopy}: {stdout}"));
        assert_eq!(cell["count"], 3, "{cell}");
        cell["p50"].as_u64().unwrap()
    };
    let (plain_1m, meta_1m) = (p50(1 << 20, false), p50(1 << 20, true));
    assert!(
        meta_1m * 4 < plain_1m,
        "chmod of 1 MiB: {meta_1m}ns with metacopy, {plain_1m}ns without"
    );
    let plain_4k = p50(4096, false);
    assert!(
        meta_1m < plain_4k * 2,
        "with metacopy a 1 MiB chmod ({meta_1m}ns) should cost no more than copying 4 KiB ({plain_4k}ns)"
    );
    let plot = fs::read_to_string(&svg).unwrap();
    assert!(
        plot.contains("\nchmod, metacopy\n"),
        "the plot names no metacopy line"
    );
}

/// The hand-made overlay's files: (layer dir, path below it, size); l3 is
/// the top lower (depth 1). The first four are opened for writing (timed),
/// then one is truncated by path and one chmod-ed by fd.
const HAND_MADE_FILES: [(&str, &str, usize); 6] = [
    ("l3", "f4k", 4 << 10),
    ("l2", "a/f64k", 64 << 10),
    ("l1", "f1m", 1 << 20),
    ("l1", "a/b/c/f8m", 8 << 20),
    ("l2", "t/trunc", 20_000),
    ("l1", "x/y/fchmod", 30_000),
];

/// An overlay made by hand with relative options, from its own directory
/// (as docker's overlay2 mounts deep images): mountinfo shows `l3:l2:l1`,
/// which names nothing from here. Every copy-up is still caught once,
/// with size, layer depth and directory depth as built, on every backend.
#[test]
fn record_sees_a_hand_made_overlay_mounted_with_relative_options() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    let ov = ts.scratch("hand-made");
    for (layer, rel, size) in HAND_MADE_FILES {
        let p = ov.join(layer).join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, vec![b'z'; size]).unwrap();
    }
    let merged = ov.join("merged");
    // The kernel matrix runs it on the function backends, which this
    // host lacks; the tracepoint one runs here (and in the guests' sweep).
    let backends = available_backends()
        .into_iter()
        .filter(|b| std::env::var_os("STRATA_KERNEL_MATRIX").is_none() || b != "tracepoint");
    for (i, backend) in backends.enumerate() {
        mount_relative(&ov);
        if i == 0 {
            // Once: doctor loads every backend's probes, which takes
            // seconds under emulation.
            doctor_sees_no_owner(&merged);
        }
        let recording = Recording::start(&[
            "--json".as_ref(),
            "--backend".as_ref(),
            backend.as_ref(),
            "--mount".as_ref(),
            merged.as_os_str(),
        ]);
        let walks = !recording.ready.contains("refused the dentry walk");
        let stopwatch = copy_up_hand_made(&merged);
        let stdout = recording.stop();
        nix::mount::umount(&merged).unwrap();
        for dir in ["u", "w"] {
            fs::remove_dir_all(ov.join(dir)).unwrap();
        }
        check_hand_made(&backend, &stdout, &merged, walks, &stopwatch);
    }
}

/// Mounts `ov`/merged from inside `ov` with relative options, and checks
/// that mountinfo shows them so.
fn mount_relative(ov: &Path) {
    for dir in ["u", "w", "merged"] {
        fs::create_dir_all(ov.join(dir)).unwrap();
    }
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg("lowerdir=l3:l2:l1,upperdir=u,workdir=w")
        .arg("merged")
        .current_dir(ov)
        .status()
        .unwrap();
    assert!(st.success());
    let merged = ov.join("merged");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(merged.to_str().unwrap()))
        .unwrap();
    assert!(line.contains("lowerdir=l3:l2:l1,"), "{line}");
}

/// doctor lists the mount, with its layers, and says why it has no owner.
fn doctor_sees_no_owner(merged: &Path) {
    let census = doctor()["overlay_mounts"].clone();
    let seen = census
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mount_point"] == merged.to_str().unwrap())
        .unwrap_or_else(|| panic!("{census}"));
    assert_eq!(seen["lower_layers"], 3, "{seen}");
    assert!(
        seen["container"].is_null() && seen["unattributed"].as_str().unwrap().contains("by hand"),
        "{seen}"
    );
}

/// Copies every HAND_MADE_FILES file up (and makes one new file); returns
/// the stopwatch's time of each timed open.
fn copy_up_hand_made(merged: &Path) -> Vec<u64> {
    let mut stopwatch = Vec::new();
    for (_, rel, _) in &HAND_MADE_FILES[..4] {
        let t0 = std::time::Instant::now();
        drop(
            fs::OpenOptions::new()
                .write(true)
                .open(merged.join(rel))
                .unwrap(),
        );
        stopwatch.push(t0.elapsed().as_nanos() as u64);
    }
    nix::unistd::truncate(&merged.join("t/trunc"), 10).unwrap();
    let read_only = fs::File::open(merged.join("x/y/fchmod")).unwrap();
    nix::sys::stat::fchmod(
        std::os::fd::AsRawFd::as_raw_fd(&read_only),
        nix::sys::stat::Mode::from_bits(0o600).unwrap(),
    )
    .unwrap();
    drop(read_only);
    fs::write(merged.join("brand-new"), b"n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stopwatch
}

/// Each copy-up once, attributed as built; the new file is none.
fn check_hand_made(backend: &str, stdout: &str, merged: &Path, walks: bool, stopwatch: &[u64]) {
    let lines = json_lines(stdout);
    let events: Vec<&Value> = lines.iter().filter(|v| v["type"] == "copy_up").collect();
    assert_eq!(events.len(), HAND_MADE_FILES.len(), "{backend}: {stdout}");
    for (i, (layer, rel, size)) in HAND_MADE_FILES.iter().enumerate() {
        let path = merged.join(rel);
        // A kernel whose verifier refused the exit's dentry walk (6.1)
        // gives an fd call no path: its chmod is found by trigger.
        let by_fd = *rel == "x/y/fchmod" && !walks;
        let e = events
            .iter()
            .find(|e| {
                e["path"].as_str() == path.to_str()
                    || by_fd && e["trigger"] == "chmod" && e["path"].is_null()
            })
            .unwrap_or_else(|| panic!("{backend}: no event for {rel}: {stdout}"));
        let depth = 4 - layer[1..].parse::<u64>().unwrap();
        assert_eq!(e["layer_depth"], depth, "{backend}: {e}");
        assert_eq!(e["stack_height"], 3, "{backend}: {e}");
        assert_eq!(e["file_size"], *size as u64, "{backend}: {e}");
        if !by_fd {
            let dirs = Path::new(rel).components().count() - 1;
            assert_eq!(e["dir_depth"], dirs, "{backend}: {e}");
        }
        assert_eq!(e["mount"], merged.to_str().unwrap(), "{backend}: {e}");
        // The kernel's time lies inside the stopwatch's.
        if let Some(user_ns) = stopwatch.get(i) {
            let ns = e["latency_ns"].as_u64().unwrap();
            assert!(ns > 0 && ns <= *user_ns, "{backend}: {ns} > {user_ns}: {e}");
        }
    }
    let summary = lines.iter().find(|v| v["type"] == "summary").unwrap();
    assert_eq!(summary["unnamed_mount"], 0, "{summary}");
}

/// Every kind of trigger, plus the calls that must not count: a second
/// open of a copied-up file, a read-only open, a new file, a volume write.
#[test]
fn record_streams_one_event_per_copy_up_with_its_trigger() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            t.dir("d", 0o755, 0, 0).unwrap();
            for name in [
                "open", "trunc", "chmod", "chown", "xattr", "utimes", "rename", "link", "readonly",
            ] {
                t.file(&format!("d/{name}"), &[b'x'; 3000], 0o644).unwrap();
            }
            t.dir("vol", 0o755, 0, 0).unwrap();
            t.dir("fresh", 0o755, 0, 0).unwrap();
        })],
    );
    ts.store.create_volume("v").unwrap();
    let c = ts
        .store
        .create_container(
            "img",
            &CreateOptions {
                volumes: vec!["v:/vol".parse().unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
    let m = ts.store.mount_container(&c.id).unwrap();
    let hdr = ts.dir.join("record.hlog");
    let recording = Recording::start(&[
        "--json".as_ref(),
        "--interval".as_ref(),
        "500ms".as_ref(),
        "--mount".as_ref(),
        m.as_os_str(),
        "--hdr-log".as_ref(),
        hdr.as_os_str(),
        "--probe-cost".as_ref(),
        "--store-root".as_ref(),
        ts.store.root().as_os_str(),
    ]);
    // "strata-prof: <backend> backend: ..."
    let backend = recording
        .ready
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();

    let d = m.join("d");
    let open_w = |p: &Path| {
        drop(
            fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(p)
                .unwrap(),
        )
    };
    open_w(&d.join("open"));
    open_w(&d.join("open")); // already up: no second event
    nix::unistd::truncate(&d.join("trunc"), 10).unwrap();
    fs::set_permissions(
        d.join("chmod"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    nix::unistd::chown(&d.join("chown"), Some(nix::unistd::Uid::from_raw(7)), None).unwrap();
    set_xattr(&d.join("xattr"), "user.k", b"v");
    nix::sys::stat::utimensat(
        None,
        &d.join("utimes"),
        &nix::sys::time::TimeSpec::new(1, 0),
        &nix::sys::time::TimeSpec::new(1, 0),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    fs::rename(d.join("rename"), d.join("renamed")).unwrap();
    fs::hard_link(d.join("link"), d.join("linked")).unwrap();
    drop(fs::File::open(d.join("readonly")).unwrap());
    fs::write(d.join("brand-new"), b"n").unwrap();
    // A new file in a directory only the image has: the directory is
    // copied up, but the file is a creation, counted apart.
    fs::write(m.join("fresh/brand-new"), b"n").unwrap();
    fs::write(m.join("vol/in-volume"), b"v").unwrap();

    std::thread::sleep(Duration::from_millis(300));
    // Ctrl-C: everything already queued must still be reported.
    let stdout = recording.stop();
    let lines = json_lines(&stdout);
    let events: Vec<&Value> = lines.iter().filter(|v| v["type"] == "copy_up").collect();
    let mut got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap();
            (
                Path::new(path)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                e["trigger"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    // The copy-up function backends also see the copy-up of `fresh`
    // itself (a directory, copied up so that a new file can go in it);
    // the tracepoint backend sees that open as a call that made a new file.
    let function_level = backend != "tracepoint";
    let mut want: Vec<(String, String)> = [
        ("chmod", "chmod"),
        ("chown", "chown"),
        ("link", "link"),
        ("open", "open-write"),
        ("rename", "rename"),
        ("trunc", "truncate"),
        ("utimes", "utimes"),
        ("xattr", "setxattr"),
    ]
    .iter()
    .chain(function_level.then_some(&("fresh", "open-write")))
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want, "{stdout}");
    let timed = if function_level {
        "copy-up-function"
    } else {
        "syscall"
    };
    for e in events
        .iter()
        .filter(|e| !e["path"].as_str().unwrap().ends_with("fresh"))
    {
        assert_eq!(e["layer_depth"], 1, "{e}");
        assert_eq!(e["dir_depth"], 1, "{e}");
        assert_eq!(e["file_size"], 3000, "{e}");
        assert_eq!(e["timed"], timed, "{e}");
        assert!(e["latency_ns"].as_u64().unwrap() > 0);
        assert!(e["cgroup_id"].as_u64().unwrap() > 0, "{e}");
        // Made by no engine: the container is strata's own, by its mount.
        assert_eq!(e["container"]["engine"], "strata", "{e}");
        assert_eq!(e["container"]["id"], c.id.as_str(), "{e}");
        assert_eq!(e["container"]["name"], c.name.as_str(), "{e}");
    }
    let summary = lines
        .iter()
        .find(|v| v["type"] == "summary")
        .expect("no summary after Ctrl-C");
    assert_eq!(summary["copy_ups"], want.len());
    assert_eq!(summary["kernel"]["ringbuf_drops"], 0);
    assert_eq!(
        summary["new_files"],
        if function_level { 0 } else { 1 },
        "brand-new is a creation, not a copy-up"
    );
    // What each probe cost, from the kernel's own run-time stats: the
    // tracepoint backend's syscall programs ran for every watched call;
    // a function backend has no syscall program, and its copy-up function
    // probes ran for every call of the function.
    let costs: Vec<&Value> = lines.iter().filter(|v| v["type"] == "probe_cost").collect();
    for c in &costs {
        println!(
            "probe cost on the {backend} backend: {} ran {} times, {} ns/run",
            c["program"], c["runs"], c["ns_per_run"]
        );
    }
    let runs = |prog: &str| {
        costs
            .iter()
            .find(|c| c["program"] == prog)
            .map_or(0, |c| c["runs"].as_u64().unwrap())
    };
    let watched = summary["kernel"]["watched_calls"].as_u64().unwrap();
    // The tracepoint backend enters openat through a program of its own.
    let (enter, exit) = match backend.as_str() {
        "fentry" => (program::FENTRY_COPY_UP, program::FEXIT_COPY_UP),
        "kprobe" => (program::KPROBE_COPY_UP, program::KRETPROBE_COPY_UP),
        _ => (program::SYS_ENTER, program::SYS_EXIT),
    };
    let entries = runs(enter) + runs(program::SYS_ENTER_OPENAT);
    assert!(entries >= watched && watched >= 9, "{costs:?}");
    // Where the verifier refuses the exit's dentry walk, its twin runs.
    let exits = runs(exit) + runs(program::SYS_EXIT_NO_WALK);
    assert!(exits >= watched, "{costs:?}");
    if function_level {
        let syscall_programs = [
            program::SYS_ENTER,
            program::SYS_ENTER_OPENAT,
            program::SYS_EXIT,
            program::SYS_EXIT_NO_WALK,
        ];
        assert_eq!(syscall_programs.map(runs), [0, 0, 0, 0], "{costs:?}");
    }
    for c in &costs {
        assert!(c["ns_per_run"].as_u64().unwrap() > 0, "{c}");
    }
    let hlog = fs::read_to_string(&hdr).unwrap();
    assert!(
        hlog.contains("StartTime") && hlog.contains("Tag=Trigger=open-write"),
        "{hlog}"
    );

    // report plots the recorded events.
    let events_file = ts.dir.join("events.jsonl");
    fs::write(&events_file, &stdout).unwrap();
    let (svg, html) = (ts.dir.join("report.svg"), ts.dir.join("report.html"));
    let out = Command::new(BIN)
        .arg("report")
        .arg(&events_file)
        .arg("--svg")
        .arg(&svg)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Titled with the backend that recorded, ticks in units.
    let backend = summary["backend"].as_str().unwrap();
    let plot = fs::read_to_string(&svg).unwrap();
    assert!(plot.contains(&format!("{backend} backend")), "{plot}");
    let latency_tick = plot.lines().any(|l| {
        let l = l.trim();
        l.starts_with(|c: char| c.is_ascii_digit())
            && ["ns", "µs", "ms"].iter().any(|u| l.ends_with(u))
    });
    assert!(plot.contains("KiB") && latency_tick, "{plot}");
    let page = fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("by trigger"),
        "{page}"
    );
    assert!(page.contains("<td>open-write</td>"), "{page}");
}

/// Copy-ups per backend in `backends_attach_only_what_they_need`.
const LINK_TEST_COPY_UPS: usize = 40;

/// The kernel's own list of attached links, read while `record` runs on
/// each backend this kernel has: the copy-up function backends attach no
/// syscall tracepoint (nothing moves syscalls onto the slow path), the
/// tracepoint backend one per watched syscall. Also what each backend's
/// probes cost per copy-up, from the kernel's run-time stats.
#[test]
fn backends_attach_only_what_they_need() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            for i in 0..LINK_TEST_COPY_UPS {
                t.file(&format!("f{i}"), &[b'x'; 4096], 0o644).unwrap();
            }
        })],
    );
    for backend in available_backends() {
        let c = ts
            .store
            .create_container("img", &CreateOptions::default())
            .unwrap();
        let m = ts.store.mount_container(&c.id).unwrap();
        let before: Vec<u32> = kernel_links().unwrap().iter().map(|l| l.link_id).collect();
        let recording = Recording::start(&[
            "--backend".as_ref(),
            backend.as_ref(),
            "--json".as_ref(),
            "--probe-cost".as_ref(),
            "--interval".as_ref(),
            "1h".as_ref(),
            "--mount".as_ref(),
            m.as_os_str(),
        ]);
        let ours: Vec<KernelLink> = kernel_links()
            .unwrap()
            .into_iter()
            .filter(|l| !before.contains(&l.link_id) && l.program.starts_with("strata_"))
            .collect();
        for i in 0..LINK_TEST_COPY_UPS {
            drop(
                fs::OpenOptions::new()
                    .write(true)
                    .open(m.join(format!("f{i}")))
                    .unwrap(),
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        let lines = json_lines(&recording.stop());
        let copy_ups = lines.iter().filter(|v| v["type"] == "copy_up").count();
        assert_eq!(copy_ups, LINK_TEST_COPY_UPS, "{backend}");
        check_links(&backend, &ours);
        print_cost_per_event(&backend, &lines);
        ts.store.remove_container(&c.id, true).unwrap();
    }
}

/// kernel `enum bpf_prog_type` values.
const PROG_KPROBE: u32 = 2;
const PROG_TRACEPOINT: u32 = 5;
const PROG_TRACING: u32 = 26;

fn check_links(backend: &str, ours: &[KernelLink]) {
    let mut programs: Vec<&str> = ours.iter().map(|l| l.program.as_str()).collect();
    programs.dedup();
    println!(
        "{backend} backend: {} kernel links, of programs {programs:?}",
        ours.len()
    );
    // Kernels from 6.6 name a perf link's tracepoint; older ones only its
    // program (names cut to 15 bytes).
    let named = ours.iter().any(|l| l.tracepoint.is_some());
    let syscall_tp = |l: &&KernelLink| {
        l.tracepoint
            .as_deref()
            .is_some_and(|t| t.starts_with("sys_"))
            || (!named && l.program.starts_with("strata_sys_"))
    };
    let tracepoint_links = ours
        .iter()
        .filter(|l| l.program_type == PROG_TRACEPOINT)
        .count();
    if backend == "tracepoint" {
        assert!(ours.iter().filter(syscall_tp).count() >= 20, "{ours:?}");
        if named {
            assert!(ours
                .iter()
                .any(|l| l.tracepoint.as_deref() == Some("sys_enter_openat")));
        }
        return;
    }
    assert_eq!(ours.iter().filter(syscall_tp).count(), 0, "{ours:?}");
    // inode creation, plus the upper filesystem's fsync pair where traced.
    assert!((1..=3).contains(&tracepoint_links), "{ours:?}");
    let function_type = if backend == "fentry" {
        PROG_TRACING
    } else {
        PROG_KPROBE
    };
    assert_eq!(
        ours.iter()
            .filter(|l| l.program_type == function_type)
            .count(),
        2,
        "entry and exit of the copy-up function: {ours:?}"
    );
}

/// What the backend's own entry and exit programs cost per run, as
/// `record --probe-cost` measured it from the kernel's run-time stats
/// (`cargo xtask vm-test` logs it per kernel): per copy-up on the function
/// backends, per watched syscall on the tracepoint one. The programs all
/// backends share (inode creation, fsync) are listed apart.
fn print_cost_per_event(backend: &str, lines: &[Value]) {
    let costs: Vec<&Value> = lines.iter().filter(|v| v["type"] == "probe_cost").collect();
    let cost = |prog: &str| {
        costs
            .iter()
            .find(|c| c["program"] == prog)
            .map_or((0, 0), |c| {
                (
                    c["runs"].as_u64().unwrap(),
                    c["run_time_ns"].as_u64().unwrap(),
                )
            })
    };
    let (enter, exit) = match backend {
        "fentry" => (program::FENTRY_COPY_UP, program::FEXIT_COPY_UP),
        "kprobe" => (program::KPROBE_COPY_UP, program::KRETPROBE_COPY_UP),
        _ => (program::SYS_ENTER, program::SYS_EXIT),
    };
    let ((mut runs, mut enter_ns), (_, exit_ns)) = (cost(enter), cost(exit));
    if backend == "tracepoint" {
        let (openat_runs, openat_ns) = cost(program::SYS_ENTER_OPENAT);
        (runs, enter_ns) = (runs + openat_runs, enter_ns + openat_ns);
    }
    assert!(runs > 0, "{backend}: {enter} never ran: {costs:?}");
    let shared: Vec<String> = costs
        .iter()
        .filter(|c| {
            ![enter, exit, program::SYS_ENTER_OPENAT].contains(&c["program"].as_str().unwrap())
        })
        .map(|c| format!("{} {} ns/run", c["program"], c["ns_per_run"]))
        .collect();
    println!(
        "probe cost, {backend} backend: {} ns per {} ({runs} runs of {enter} and {exit}), \
         {} ns per copy-up; shared: {}",
        (enter_ns + exit_ns) / runs,
        if backend == "tracepoint" {
            "watched syscall"
        } else {
            "copy-up function call"
        },
        (enter_ns + exit_ns) / LINK_TEST_COPY_UPS as u64,
        shared.join(", ")
    );
}

/// The --vfs view: calls split by what backs the file, and opens of
/// lower-backed files by how deep the file lives. Filtered to this test
/// process, and the profiler tests run one at a time, so the counts are
/// this test's own.
#[test]
fn vfs_view_splits_by_backing_and_layer_depth() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    ts.image(
        "three",
        vec![
            layer(|t| {
                t.file("deep", b"in the bottom layer", 0o644).unwrap();
                t.dir("vol", 0o755, 0, 0).unwrap();
            }),
            layer(|t| {
                t.file("middle", b"m", 0o644).unwrap();
            }),
            layer(|t| {
                t.file("top", b"t", 0o644).unwrap();
            }),
        ],
    );
    ts.store.create_volume("vv").unwrap();
    let c = ts
        .store
        .create_container(
            "three",
            &CreateOptions {
                volumes: vec!["vv:/vol".parse().unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
    let m = ts.store.mount_container(&c.id).unwrap();
    fs::write(m.join("vol/v"), b"volume").unwrap();
    let me = std::process::id().to_string();
    let recording = Recording::start(&[
        "--vfs".as_ref(),
        "--json".as_ref(),
        "--interval".as_ref(),
        "1h".as_ref(),
        "--pid".as_ref(),
        me.as_ref(),
    ]);

    for _ in 0..3 {
        assert_eq!(fs::read(m.join("deep")).unwrap(), b"in the bottom layer");
    }
    fs::read(m.join("middle")).unwrap();
    fs::write(m.join("fresh"), b"upper").unwrap();
    fs::read(m.join("fresh")).unwrap();
    fs::read(m.join("vol/v")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = recording.stop();
    let rows: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|v| v["type"] == "vfs")
        .collect();
    let count = |op: &str, backing: &str, layer: u64| -> u64 {
        rows.iter()
            .filter(|r| r["op"] == op && r["backing"] == backing && r["layer"] == layer)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        count("open", "overlay, lower layer", 3),
        3,
        "deep is 3 layers down:\n{out}"
    );
    assert_eq!(
        count("open", "overlay, lower layer", 2),
        1,
        "middle is 2 layers down:\n{out}"
    );
    assert!(count("read", "overlay, lower layer", 0) >= 4, "{out}");
    assert!(count("read", "overlay, writable layer", 0) >= 1, "{out}");
    assert!(count("write", "overlay, writable layer", 0) >= 1, "{out}");
    assert!(
        count("read", "not overlay", 0) >= 1,
        "the volume read bypasses overlay:\n{out}"
    );
}

/// The fsync part of a copy-up: there on a durable mount, absent on a
/// volatile one (overlayfs skips the sync), where ext4 traces its fsync.
#[test]
fn copy_up_fsync_part_shows_durable_versus_volatile() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    ts.image(
        "img",
        vec![layer(|t| {
            t.pattern_file("big", 4 << 20, 9).unwrap();
        })],
    );
    let mount = |volatile: bool| {
        let c = ts
            .store
            .create_container(
                "img",
                &CreateOptions {
                    volatile,
                    ..Default::default()
                },
            )
            .unwrap();
        ts.store.mount_container(&c.id).unwrap()
    };
    let (durable, volatile) = (mount(false), mount(true));
    let me = std::process::id().to_string();
    let recording = Recording::start(&[
        "--json".as_ref(),
        "--interval".as_ref(),
        "1h".as_ref(),
        "--pid".as_ref(),
        me.as_ref(),
    ]);
    for m in [&durable, &volatile] {
        drop(
            fs::OpenOptions::new()
                .write(true)
                .open(m.join("big"))
                .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = recording.stop();
    let events: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|v| v["type"] == "copy_up")
        .collect();
    let fsync_of = |m: &Path| {
        let e = events
            .iter()
            .find(|e| e["mount"].as_str() == m.to_str())
            .unwrap_or_else(|| panic!("no copy-up event for {}:\n{out}", m.display()));
        assert!(e["latency_ns"].as_u64().unwrap() > 0);
        e["fsync_ns"].clone()
    };
    if !Path::new("/sys/kernel/tracing/events/ext4/ext4_sync_file_enter").exists() {
        // Not measured here, and the events say so rather than 0.
        assert!(fsync_of(&durable).is_null() && fsync_of(&volatile).is_null());
        return;
    }
    let d = fsync_of(&durable).as_u64().expect("measured");
    let v = fsync_of(&volatile).as_u64().expect("measured");
    assert!(d > 0, "a durable copy-up fsyncs the copy");
    assert_eq!(v, 0, "a volatile mount skips the fsync");
}

/// A containerd container on strata (`strata snapshotter`, runc): record
/// finds it by its strata name, wherever containerd mounted it, and sees
/// the one copy-up the container makes, attributed to the bottom layer.
#[test]
fn record_follows_a_containerd_container() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    let strata = Path::new(BIN).with_file_name("strata");
    assert!(
        strata.exists(),
        "{} is built by cargo test --workspace",
        strata.display()
    );
    let ctrd = Containerd::start(&ts.dir.join("engine"), &strata);
    let tar = busybox_image(&ts.scratch("image"), 0);
    let out = ctrd.import(&tar);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Waits for /go, then appends to a bottom-layer file (one copy-up).
    let script = "while [ ! -e /go ]; do sleep 0.05; done; \
                  echo more >> /data/file; touch /done; sleep 600";
    ctrd.run_sh("c1", script, true);
    let store = ctrd.store();
    let c = store
        .containers()
        .unwrap()
        .into_iter()
        .find(|c| c.snapshot.as_deref().is_some_and(|k| k.ends_with("/c1")))
        .expect("c1's writable layer is a strata container");
    let upper = store.upper_dir(&c.id);
    let rootfs = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(&format!("upperdir={}", upper.display())))
        .and_then(|l| l.split(' ').nth(4).map(std::path::PathBuf::from))
        .expect("containerd mounted c1's rootfs");

    let root = ctrd.store_root();
    let recording = Recording::start(&[
        "--json".as_ref(),
        "--interval".as_ref(),
        "500ms".as_ref(),
        "--container".as_ref(),
        c.name.as_ref(),
        "--store-root".as_ref(),
        root.as_os_str(),
    ]);
    fs::write(rootfs.join("go"), b"").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !rootfs.join("done").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(600));
    let stdout = recording.stop();
    ctrd.ctr(&["tasks", "kill", "-s", "SIGKILL", "c1"]);

    let lines = json_lines(&stdout);
    let events: Vec<&Value> = lines.iter().filter(|v| v["type"] == "copy_up").collect();
    assert_eq!(events.len(), 1, "{stdout}");
    let e = events[0];
    assert!(e["path"].as_str().unwrap().ends_with("data/file"), "{e}");
    assert_eq!(e["layer_depth"], 3, "the bottom of three layers: {e}");
    assert_eq!(e["file_size"], BOTTOM.len(), "{e}");
}
