//! What an import or a pull tells its user while it runs: one interface,
//! `Progress`, and its printers. A bar for the whole import on a terminal;
//! for a pull, docker's one line per layer (bars on a terminal, plain
//! lines elsewhere), JSON events for scripts, or nothing.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use crate::sizes::human;

/// Events by the index of the layer in the image, bottom first. Called
/// from the extraction threads, so implementations are Sync.
pub trait Progress: Sync {
    /// Layer `index` is being read: `size` blob bytes where known.
    fn started(&self, index: usize, size: Option<u64>);
    /// `bytes` more of it were read.
    fn advanced(&self, index: usize, bytes: u64);
    /// It is extracted and verified.
    fn done(&self, index: usize);
    /// The store has it already: it is not read at all.
    fn exists(&self, index: usize, size: Option<u64>);
    /// Everything is read (publishing follows).
    fn finish(&self) {}
}

/// No output (`--quiet`, and the library's own callers).
pub struct Silent;

impl Progress for Silent {
    fn started(&self, _: usize, _: Option<u64>) {}
    fn advanced(&self, _: usize, _: u64) {}
    fn done(&self, _: usize) {}
    fn exists(&self, _: usize, _: Option<u64>) {}
}

/// One bar for all the bytes of an import, on a terminal only.
pub struct TotalBar(Option<indicatif::ProgressBar>);

impl TotalBar {
    pub fn new(total: u64) -> TotalBar {
        if !io::stderr().is_terminal() {
            return TotalBar(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} importing [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        TotalBar(Some(bar))
    }
}

impl Progress for TotalBar {
    fn started(&self, _: usize, _: Option<u64>) {}
    fn advanced(&self, _: usize, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }
    fn done(&self, _: usize) {}
    fn exists(&self, index: usize, size: Option<u64>) {
        self.advanced(index, size.unwrap_or(0));
    }
    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// A layer as the per-layer printers name it: its blob digest's first 12
/// hex digits, as docker shows it.
fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Per layer: bytes read and when it started; what the per-layer
/// printers report when a layer is done.
struct LayerClock(Mutex<Vec<(u64, Option<Instant>)>>);

impl LayerClock {
    fn new(layers: usize) -> LayerClock {
        LayerClock(Mutex::new(vec![(0, None); layers]))
    }
    fn start(&self, index: usize) {
        self.0.lock().expect("no panics under the lock")[index].1 = Some(Instant::now());
    }
    fn add(&self, index: usize, n: u64) {
        self.0.lock().expect("no panics under the lock")[index].0 += n;
    }
    /// Bytes read and seconds since the start.
    fn so_far(&self, index: usize) -> (u64, f64) {
        let (read, since) = self.0.lock().expect("no panics under the lock")[index];
        (read, since.map_or(0.0, |t| t.elapsed().as_secs_f64()))
    }
}

/// docker's per-layer pull lines: a bar each on a terminal; elsewhere a
/// plain line when a layer starts and one when it is done, with its rate.
pub struct LayerLines {
    digests: Vec<String>,
    bars: Option<(indicatif::MultiProgress, Vec<indicatif::ProgressBar>)>,
    clock: LayerClock,
}

impl LayerLines {
    /// `digests`: the layers' blob digests, bottom first. Bars only when
    /// stderr is a terminal.
    pub fn new(digests: Vec<String>) -> LayerLines {
        let clock = LayerClock::new(digests.len());
        let bars = io::stderr().is_terminal().then(|| {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template(
                "{prefix}: {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("static template")
            .progress_chars("=> ");
            let bars = digests
                .iter()
                .map(|d| {
                    let b = multi.add(indicatif::ProgressBar::new(0));
                    b.set_style(style.clone());
                    b.set_prefix(short(d).to_string());
                    b.set_message("waiting");
                    b
                })
                .collect();
            (multi, bars)
        });
        LayerLines {
            digests,
            bars,
            clock,
        }
    }

    fn line(&self, index: usize, what: &str) {
        let _ = writeln!(io::stderr(), "{}: {what}", short(&self.digests[index]));
    }
}

impl Progress for LayerLines {
    fn started(&self, index: usize, size: Option<u64>) {
        self.clock.start(index);
        match &self.bars {
            Some((_, bars)) => {
                bars[index].set_length(size.unwrap_or(0));
                bars[index].set_message("downloading");
            }
            None => self.line(index, &format!("downloading {}", human(size.unwrap_or(0)))),
        }
    }
    fn advanced(&self, index: usize, n: u64) {
        self.clock.add(index, n);
        if let Some((_, bars)) = &self.bars {
            bars[index].inc(n);
        }
    }
    fn done(&self, index: usize) {
        let (read, secs) = self.clock.so_far(index);
        match &self.bars {
            Some((_, bars)) => bars[index].finish_with_message("pull complete"),
            None => self.line(
                index,
                &format!(
                    "pull complete, {} in {secs:.2}s ({}/s)",
                    human(read),
                    human((read as f64 / secs.max(1e-3)) as u64)
                ),
            ),
        }
    }
    fn exists(&self, index: usize, _: Option<u64>) {
        match &self.bars {
            Some((_, bars)) => bars[index].finish_with_message("already exists"),
            None => self.line(index, "already exists"),
        }
    }
}

/// One JSON object per line on stderr per event, for scripts:
/// `{"event":"started"|"done"|"exists","layer":DIGEST,...}`.
pub struct JsonEvents {
    digests: Vec<String>,
    clock: LayerClock,
}

impl JsonEvents {
    pub fn new(digests: Vec<String>) -> JsonEvents {
        JsonEvents {
            clock: LayerClock::new(digests.len()),
            digests,
        }
    }

    fn emit(&self, v: serde_json::Value) {
        let _ = writeln!(io::stderr(), "{v}");
    }
}

impl Progress for JsonEvents {
    fn started(&self, index: usize, size: Option<u64>) {
        self.clock.start(index);
        self.emit(
            serde_json::json!({"event": "started", "layer": self.digests[index], "size": size}),
        );
    }
    fn advanced(&self, index: usize, n: u64) {
        self.clock.add(index, n);
    }
    fn done(&self, index: usize) {
        let (read, secs) = self.clock.so_far(index);
        self.emit(serde_json::json!({"event": "done", "layer": self.digests[index], "bytes": read, "seconds": secs}));
    }
    fn exists(&self, index: usize, size: Option<u64>) {
        self.emit(
            serde_json::json!({"event": "exists", "layer": self.digests[index], "size": size}),
        );
    }
}
