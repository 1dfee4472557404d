//! `strata-prof serve` against a real Prometheus server (Debian's 2.42,
//! unpacked under target/prometheus by `cargo xtask setup`), on real
//! copy-ups in strata containers.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_common::log2_floor;
use strata_driver::testing::{layer, privileged, TestStore};
use strata_prof::exporter::classes::MAX_COPY_UP_SERIES;

const BIN: &str = env!("CARGO_BIN_EXE_strata-prof");

/// One test at a time: each attaches probes, and the quantile check times
/// real copy-ups.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn prometheus_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/prometheus/root/usr/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask setup` unpacks Debian's prometheus there",
        p.display()
    );
    p
}

/// A running `serve`, killed (SIGKILL) on drop, panics included.
struct Serve {
    child: Child,
    /// host:port of /metrics.
    addr: String,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("serve: {line}");
                let _ = tx.send(line);
            }
        });
        let mut serve = Serve {
            child,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while serve.addr.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("serve did not start");
            if let Some(url) = line.split("serving http://").nth(1) {
                serve.addr = url.trim_end_matches("/metrics").to_string();
            }
        }
        serve
    }

    fn scrape(&self, accept: &str) -> (String, String) {
        let resp = ureq::get(&format!("http://{}/metrics", self.addr))
            .set("Accept", accept)
            .call()
            .unwrap();
        let content_type = resp.header("Content-Type").unwrap_or_default().to_string();
        (content_type, resp.into_string().unwrap())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus server on its own TSDB, scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = PathBuf::from(format!(
            "/var/tmp/strata-tests/prometheus-{}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: strata\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(prometheus_bin("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        let prom = Prometheus {
            child,
            url: format!("http://{listen}"),
            _dir: tempdir::Dir(dir),
        };
        wait_for(Duration::from_secs(30), "prometheus ready", || {
            ureq::get(&format!("{}/-/ready", prom.url)).call().ok()
        });
        prom
    }

    /// An instant query's single value, or None while it has no result.
    fn value(&self, query: &str) -> Option<f64> {
        let body: Value = ureq::get(&format!("{}/api/v1/query", self.url))
            .query("query", query)
            .call()
            .ok()?
            .into_json()
            .ok()?;
        assert_eq!(body["status"], "success", "{query}: {body}");
        let result = body["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{query}: {body}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` evaluates to `want`.
    fn wait_value(&self, query: &str, want: f64) {
        wait_for(Duration::from_secs(30), query, || {
            (self.value(query) == Some(want)).then_some(())
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Copies `path` up as a user would (a write-mode open), timed.
fn copy_up(path: &Path) -> Duration {
    let started = Instant::now();
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(0)
        .open(path)
        .unwrap();
    let took = started.elapsed();
    drop(f);
    took
}

/// The value of the sample `name{labels}` in a text scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const BIG: usize = 4 << 20;

/// Bottom layer: 5 files of 60 KB two directories down, and one that is
/// only read; top layer: 7 files of 4 MiB at the root.
fn prometheus_test_image(ts: &TestStore) {
    ts.image(
        "prom",
        vec![
            layer(|t| {
                t.dir("a", 0o755, 0, 0).unwrap();
                t.dir("a/b", 0o755, 0, 0).unwrap();
                for i in 0..5 {
                    t.file(&format!("a/b/small{i}"), &[b's'; 60_000], 0o644)
                        .unwrap();
                }
                t.file("read-only", b"never copied up", 0o644).unwrap();
            }),
            layer(|t| {
                for i in 0..7 {
                    t.file(&format!("big{i}"), &vec![b'b'; BIG], 0o644).unwrap();
                }
            }),
        ],
    );
}

#[test]
fn prometheus_sees_every_copy_up_and_its_median() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    prometheus_test_image(&ts);
    let c = ts
        .store
        .create_container("prom", &Default::default())
        .unwrap();
    let merged = ts.store.mount_container(&c.id).unwrap();
    let store_root = ts.store.root().to_str().unwrap().to_string();
    let serve = Serve::start(&[
        "--container",
        &c.name,
        "--store-root",
        &store_root,
        "--vfs",
        "--probe-cost",
    ]);
    let prom = Prometheus::start(&serve.addr);
    prom.wait_value("up{job=\"strata\"}", 1.0);

    let stopwatch: Vec<Duration> = (0..7)
        .map(|i| copy_up(&merged.join(format!("big{i}"))))
        .collect();
    for i in 0..5 {
        copy_up(&merged.join(format!("a/b/small{i}")));
    }
    prom.wait_value("sum(strata_copy_ups_total)", 12.0);
    prom.wait_value(
        "sum(strata_copy_up_bytes_total)",
        (7 * BIG + 5 * 60_000) as f64,
    );
    prom.wait_value(
        "sum(strata_copy_up_duration_seconds_count{size=\"le_64KiB\",layer_depth=\"2-4\",dir_depth=\"1-3\"})",
        5.0,
    );

    // --vfs: reads of a file two layers down are lower-backed opens at
    // depth 2; --probe-cost: the kernel counted the probes' runs.
    for _ in 0..3 {
        fs::read(merged.join("read-only")).unwrap();
    }
    prom.wait_value(
        "sum(strata_vfs_lower_open_duration_seconds_count{layer_depth=\"2-4\"}) >= bool 3",
        1.0,
    );
    prom.wait_value(
        "sum(strata_vfs_duration_seconds_count{op=\"read\",backing=\"lower\"}) >= bool 3",
        1.0,
    );
    prom.wait_value("sum(strata_prof_probe_runs_total) > bool 0", 1.0);

    assert_p50_in_stopwatch_bucket(&prom, stopwatch);

    // The target is healthy, and promtool accepts what serve exposes.
    let targets: Value = ureq::get(&format!("{}/api/v1/targets", prom.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let health = &targets["data"]["activeTargets"][0]["health"];
    assert_eq!(health, "up", "{targets}");
    let (content_type, text) = serve.scrape("text/plain");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_promtool_accepts(&text);
    let (content_type, om) = serve.scrape("application/openmetrics-text;version=1.0.0");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
}

/// Prometheus' p50 of the 4 MiB class lands in the log2 bucket of the
/// stopwatch median (or below it, as far as the kernel may time less than
/// the stopwatch: the sweep's truth bar, 10% or 50 us).
fn assert_p50_in_stopwatch_bucket(prom: &Prometheus, mut stopwatch: Vec<Duration>) {
    stopwatch.sort();
    let median_ns = stopwatch[3].as_nanos() as u64;
    let slack = (median_ns / 10).max(50_000);
    let q = prom
        .value("histogram_quantile(0.5, sum by (le) (strata_copy_up_duration_seconds_bucket{size=\"le_4MiB\"}))")
        .expect("a p50 for the 4 MiB class");
    let q_slot = log2_floor((q * 1e9).ceil() as u64);
    let slots = log2_floor(median_ns.saturating_sub(slack))..=log2_floor(median_ns);
    assert!(
        slots.contains(&q_slot),
        "p50 {q} s is in log2 slot {q_slot}; the stopwatch median {median_ns} ns allows {slots:?}"
    );
}

/// `promtool check metrics` (Prometheus' own linter) passes a scrape.
fn assert_promtool_accepts(text: &str) {
    let mut check = Command::new(prometheus_bin("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `path` at `depth` directories below the root: d/d/.../name.
fn at_depth(depth: usize, name: &str) -> String {
    let mut p = "d/".repeat(depth);
    p.push_str(name);
    p
}

#[test]
fn ten_thousand_copy_ups_stay_within_the_documented_series() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    const FILES: usize = 10_000;
    const LAYERS: usize = 3;
    const MAX_DIR: usize = 40;
    // File n: in layer n % 3, at directory depth n % 41, of 2^(n % 14) bytes.
    let place = |n: usize| (n % LAYERS, n % (MAX_DIR + 1), 1usize << (n % 14));
    let layers = (0..LAYERS)
        .map(|l| {
            layer(move |t| {
                for depth in 1..=MAX_DIR {
                    t.dir(&"d/".repeat(depth), 0o755, 0, 0).unwrap();
                }
                for n in (0..FILES).filter(|n| place(*n).0 == l) {
                    let (_, depth, size) = place(n);
                    t.file(&at_depth(depth, &format!("f{n}")), &vec![b'x'; size], 0o644)
                        .unwrap();
                }
            })
        })
        .collect();
    let ts = TestStore::new();
    ts.image("many", layers);
    let (_, merged) = ts.container("many");
    let serve = Serve::start(&["--mount", merged.to_str().unwrap()]);
    let mut expected = std::collections::BTreeSet::new();
    for n in 0..FILES {
        let (l, depth, size) = place(n);
        copy_up(&merged.join(at_depth(depth, &format!("f{n}"))));
        // Layer 0 is the bottom: LAYERS layers down.
        expected.insert((
            strata_prof::exporter::classes::size_class(Some(size as u64)),
            strata_prof::exporter::classes::layer_class(Some(LAYERS - l)),
            strata_prof::exporter::classes::dir_class(Some(depth)),
        ));
    }
    let text = wait_for(Duration::from_secs(30), "10,000 copy-ups scraped", || {
        let (_, text) = serve.scrape("text/plain");
        (sample(&text, "strata_copy_ups_total{trigger=\"open-write\"}") == Some(FILES as f64))
            .then_some(text)
    });
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("strata_copy_up_duration_seconds_count{"))
        .collect();
    assert!(series.len() <= MAX_COPY_UP_SERIES, "{}", series.len());
    assert_eq!(
        series.len(),
        expected.len(),
        "{series:#?}\nexpected {expected:?}"
    );
    for (size, layer, dir) in &expected {
        let labels = format!("size=\"{size}\",layer_depth=\"{layer}\",dir_depth=\"{dir}\"");
        assert!(
            series.iter().any(|s| s.contains(&labels)),
            "{labels} missing"
        );
    }
    for reason in ["ring_buffer_full", "in_flight_table_full"] {
        let lost = format!("strata_prof_events_lost_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &lost), Some(0.0), "{lost}");
    }
}

/// Program ids of the BPF programs strata-prof loaded (named strata_*).
fn strata_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("strata_")))
        .map(|p| p.id())
        .collect()
}

/// No program of ours is loaded, no link runs one, nothing is pinned.
fn assert_nothing_left_of(ours: &[u32]) {
    wait_for(Duration::from_secs(10), "strata programs unloaded", || {
        strata_programs().is_empty().then_some(())
    });
    let links: Vec<_> = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| ours.contains(&l.program_id()))
        .map(|l| l.id())
        .collect();
    assert!(
        links.is_empty(),
        "links of a killed serve's programs: {links:?}"
    );
    let pinned: Vec<_> = fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("strata"))
        .collect();
    assert!(pinned.is_empty(), "{pinned:?}");
}

#[test]
fn a_scrape_storm_loses_no_event_and_a_killed_serve_leaves_no_probe() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    const FILES: usize = 3_000;
    let ts = TestStore::new();
    ts.image(
        "storm",
        vec![layer(|t| {
            for n in 0..FILES {
                t.file(&format!("f{n}"), &[b's'; 5000], 0o644).unwrap();
            }
        })],
    );
    let (_, merged) = ts.container("storm");
    assert!(
        strata_programs().is_empty(),
        "another strata-prof is running"
    );
    let serve = Serve::start(&["--mount", merged.to_str().unwrap()]);
    let ours = strata_programs();
    assert!(!ours.is_empty());

    // 20 scrapers for 30 s, while copy-ups run through the whole storm.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapers: Vec<_> = (0..20)
        .map(|_| {
            let (url, stop) = (format!("http://{}/metrics", serve.addr), stop.clone());
            std::thread::spawn(move || {
                let mut scrapes = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = ureq::get(&url).call().unwrap().into_string().unwrap();
                    assert!(text.contains("strata_prof_info"));
                    scrapes += 1;
                }
                scrapes
            })
        })
        .collect();
    let storm = Duration::from_secs(30);
    let started = Instant::now();
    for n in 0..FILES {
        // Spread over the storm.
        let due = storm.mul_f64(n as f64 / FILES as f64);
        std::thread::sleep(due.saturating_sub(started.elapsed()));
        copy_up(&merged.join(format!("f{n}")));
    }
    std::thread::sleep(storm.saturating_sub(started.elapsed()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes: u32 = scrapers.into_iter().map(|s| s.join().unwrap()).sum();
    assert!(scrapes >= 20 * 30, "only {scrapes} scrapes in 30 s");

    let (_, text) = serve.scrape("text/plain");
    let copied = sample(&text, "strata_copy_ups_total{trigger=\"open-write\"}");
    assert_eq!(copied, Some(FILES as f64), "{scrapes} scrapes");
    for reason in ["ring_buffer_full", "in_flight_table_full"] {
        let lost = format!("strata_prof_events_lost_total{{reason=\"{reason}\"}}");
        assert_eq!(
            sample(&text, &lost),
            Some(0.0),
            "{lost} after {scrapes} scrapes"
        );
    }

    // SIGKILL: no clean detach, yet the kernel keeps nothing of ours.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(serve);
    assert_nothing_left_of(&ours);
}

#[test]
fn per_container_labels_follow_live_containers() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let ts = TestStore::new();
    ts.image(
        "two",
        vec![layer(|t| {
            t.file("a", b"first", 0o644).unwrap();
            t.file("b", b"second", 0o644).unwrap();
        })],
    );
    let one = ts
        .store
        .create_container("two", &Default::default())
        .unwrap();
    let other = ts
        .store
        .create_container("two", &Default::default())
        .unwrap();
    let one_root = ts.store.mount_container(&one.id).unwrap();
    let store_root = ts.store.root().to_str().unwrap().to_string();
    let serve = Serve::start(&["--per-container", "--store-root", &store_root]);
    // Mounted after serve started: found on its first event.
    let other_root = ts.store.mount_container(&other.id).unwrap();
    copy_up(&one_root.join("a"));
    copy_up(&one_root.join("b"));
    copy_up(&other_root.join("a"));
    let series = |c: &str| {
        format!(
            "strata_copy_ups_total{{trigger=\"open-write\",container=\"{c}\",engine=\"strata\"}}"
        )
    };
    let text = wait_for(Duration::from_secs(10), "both containers' copy-ups", || {
        let (_, text) = serve.scrape("text/plain");
        (sample(&text, &series(&other.name)) == Some(1.0)).then_some(text)
    });
    assert_eq!(sample(&text, &series(&one.name)), Some(2.0), "{text}");

    // The other container goes: its series go with it (checked every 5 s).
    // The first is only unmounted (stopped): its series stay.
    ts.store.unmount_container(&other.id).unwrap();
    ts.store.remove_container(&other.id, false).unwrap();
    ts.store.unmount_container(&one.id).unwrap();
    let text = wait_for(
        Duration::from_secs(15),
        "the removed container's series dropped",
        || {
            let (_, text) = serve.scrape("text/plain");
            (!text.contains(&format!("container=\"{}\"", other.name))).then_some(text)
        },
    );
    assert_eq!(sample(&text, &series(&one.name)), Some(2.0), "{text}");
}
