//! `--hdr-log FILE`: an HdrHistogram interval log, one tagged histogram
//! per (dimension, key) and interval, readable by HdrHistogram's own
//! tools (HistogramLogAnalyzer, hdr-plot).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;

use super::{Interval, Sink, Summary};
use crate::events::CopyUp;
use crate::histograms::Histograms;

pub struct HdrLogSink {
    file: BufWriter<File>,
    serializer: V2DeflateSerializer,
    /// Where the interval now ending started, since the recording began.
    interval_start: Duration,
}

impl HdrLogSink {
    /// Creates the log and writes its header (start time, what values mean).
    pub fn create(path: &Path) -> Result<HdrLogSink> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut sink = HdrLogSink {
            file: BufWriter::new(file),
            serializer: V2DeflateSerializer::new(),
            interval_start: Duration::ZERO,
        };
        IntervalLogWriterBuilder::new()
            .add_comment("strata-prof copy-up latency, ns; tags are dimension=bucket")
            .with_start_time(SystemTime::now())
            .begin_log_with(&mut sink.file, &mut sink.serializer)
            .context("writing the HdrHistogram log header")?;
        Ok(sink)
    }

    fn write(&mut self, hists: &Histograms, elapsed: Duration) -> Result<()> {
        let start = self.interval_start;
        // A header-less writer per interval: the header went out once, and
        // the writer borrows the file, which this sink owns.
        let mut log = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.serializer)
            .context("writing the HdrHistogram log")?;
        for ((dim, bucket), h) in &hists.by_key {
            let label = format!("{dim:?}={}", bucket.label(*dim)).replace([' ', ',', '.'], "_");
            let tag = Tag::new(&label).with_context(|| format!("bad HdrHistogram tag {label}"))?;
            log.write_histogram(h, start, elapsed - start, Some(tag))
                .map_err(|e| anyhow::anyhow!("writing the HdrHistogram log: {e}"))?;
        }
        self.interval_start = elapsed;
        Ok(())
    }
}

impl Sink for HdrLogSink {
    fn copy_up(&mut self, _event: &CopyUp) -> Result<()> {
        Ok(())
    }

    fn interval(&mut self, iv: &Interval<'_>) -> Result<()> {
        self.write(iv.histograms, iv.elapsed)
    }

    fn summary(&mut self, _summary: &Summary<'_>) -> Result<()> {
        self.file.flush()?;
        Ok(())
    }
}
