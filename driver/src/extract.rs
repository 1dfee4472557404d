//! Extracting one layer blob into staging, on two threads: one reads the
//! blob, hashes it (its digest), inflates it and hashes the tar (its
//! diffID); the other applies the tar to the layer directory and records
//! its tar-split. The first is CPU (inflate, sha256), the second mostly
//! the kernel's (creating files), so on two cores they overlap; a bounded
//! queue of chunks between them keeps memory flat whatever the blob's size.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::archive::apply::{apply_layer, read_full, AppliedLayer};
use crate::archive::compression::{self, Compression};
use crate::archive::split::{TarSplit, TAR_SPLIT_FILE};
use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::fsutil::SyncMode;
use crate::image::{invalid, LayerSource, SourceFailed};

/// Bytes per chunk handed between the threads, and chunks in flight:
/// 2 MiB at most, below malloc's mmap threshold per chunk.
const CHUNK: usize = 64 * 1024;
const IN_FLIGHT: usize = 32;
/// How the reading thread says it stopped because the applier had.
const STOPPED: io::ErrorKind = io::ErrorKind::BrokenPipe;

pub struct Extracted {
    pub applied: AppliedLayer,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Digest of the blob as stored, every byte of it (trailing bytes
    /// after the compressed stream included).
    pub blob_digest: Digest,
}

/// Extracts `blob` into `staged`/diff, its tar-split beside it. `lowers`
/// are the layers below, top first; `read` is told how many blob bytes
/// each read took (for a progress bar). Errors name `what` of `src`.
pub fn extract_layer(
    blob: &dyn LayerSource,
    staged: &Path,
    lowers: &[PathBuf],
    sync: SyncMode,
    read: &(dyn Fn(u64) + Sync),
    (what, src): (&str, &Path),
) -> Result<Extracted> {
    let (tx, rx) = sync_channel(IN_FLIGHT);
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(blob, read, tx));
        let applied = apply(rx, staged, lowers, sync);
        let produced = producer.join().expect("the reading thread does not panic");
        match (produced, applied) {
            // The reader's own failure explains the applier's (a stream
            // cut short), unless it only stopped because the applier did.
            (Err(e), _) if e.kind() != STOPPED => Err(match fetch_failure(e) {
                Ok(registry) => registry,
                Err(e) => invalid(src, format!("{what}: corrupt data: {e}")),
            }),
            (_, Err(e @ Error::Io { .. })) => Err(e),
            (_, Err(e)) => Err(invalid(src, format!("{what}: {e}"))),
            (Err(e), Ok(_)) => Err(invalid(src, format!("{what}: {e}"))),
            (Ok((diff_id, blob_digest)), Ok(applied)) => Ok(Extracted {
                applied,
                diff_id,
                blob_digest,
            }),
        }
    })
}

/// A source that failed mid-blob (a registry) is that source's error,
/// not the blob's corruption.
fn fetch_failure(e: io::Error) -> std::result::Result<Error, io::Error> {
    if e.get_ref().is_some_and(|i| i.is::<SourceFailed>()) {
        let inner = e.into_inner().expect("checked above");
        return Ok(inner.downcast::<SourceFailed>().expect("checked above").0);
    }
    Err(e)
}

/// The reading thread: blob -> blob digest -> inflate -> diffID -> queue.
/// `None` on the queue marks the end; a queue that closes without it
/// means this thread failed.
fn produce(
    blob: &dyn LayerSource,
    read: &(dyn Fn(u64) + Sync),
    tx: SyncSender<Option<Vec<u8>>>,
) -> io::Result<(Digest, Digest)> {
    let mut raw = HashingReader::new(Counting {
        inner: blob.open()?,
        read,
    });
    let diff_id = {
        let (compression, inflated) = compression::decompress(&mut raw)?;
        if compression == Compression::None {
            // The blob is the tar: its digest is the diffID, and hashing
            // the same bytes twice cost a third of a docker-archive's
            // import (sha256 was half of all samples).
            send_all(inflated, &tx)?;
            None
        } else {
            let mut tar = HashingReader::new(inflated);
            send_all(&mut tar, &tx)?;
            Some(tar.finish()?.0)
        }
    };
    let _ = tx.send(None);
    // Whatever follows the compressed stream is part of the blob too.
    let (blob_digest, _) = raw.finish()?;
    Ok((diff_id.unwrap_or_else(|| blob_digest.clone()), blob_digest))
}

/// Everything `tar` yields, in chunks, onto the queue.
fn send_all(mut tar: impl Read, tx: &SyncSender<Option<Vec<u8>>>) -> io::Result<()> {
    loop {
        let mut chunk = vec![0; CHUNK];
        let n = read_full(&mut tar, &mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        chunk.truncate(n);
        if tx.send(Some(chunk)).is_err() {
            // The applier stopped, and has its own error to tell.
            return Err(io::Error::new(STOPPED, "extraction stopped"));
        }
    }
}

/// The applying thread: queue -> tar-split -> layer directory, then the
/// stream's tail (padding, end blocks) drained through the split.
fn apply(
    rx: Receiver<Option<Vec<u8>>>,
    staged: &Path,
    lowers: &[PathBuf],
    sync: SyncMode,
) -> Result<AppliedLayer> {
    let split = TarSplit::create(&staged.join(TAR_SPLIT_FILE))?;
    let mut stream = split.reader(Queued {
        rx,
        chunk: Vec::new(),
        at: 0,
        ended: false,
    });
    let applied = apply_layer(
        &mut stream,
        &staged.join("diff"),
        lowers,
        sync,
        Some(&split),
    )?;
    io::copy(&mut stream, &mut io::sink()).map_err(|e| Error::Io {
        context: "reading the end of the layer tar".into(),
        source: e,
    })?;
    drop(stream);
    split.finish()?;
    Ok(applied)
}

/// The blob's reader, telling `read` what each read took.
struct Counting<'a> {
    inner: Box<dyn Read + 'a>,
    read: &'a (dyn Fn(u64) + Sync),
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.read)(n as u64);
        Ok(n)
    }
}

/// The tar stream as the reading thread queued it.
struct Queued {
    rx: Receiver<Option<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    /// The end mark came: every later read is the end too.
    ended: bool,
}

impl Read for Queued {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Some(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(None) => self.ended = true,
                // Closed without the end mark: the reading thread failed,
                // and says why when joined.
                Err(_) => return Err(io::Error::other("the blob could not be read")),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
