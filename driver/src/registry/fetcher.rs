//! One layer blob from a registry, as a reader the extraction consumes
//! like a file: streamed, never staged whole. A connection lost or cut
//! short mid-blob is resumed with `Range` from the byte reached (or, if
//! the registry ignores ranges, read again and skipped up to it), a
//! bounded number of times. The bytes are also appended to a partial
//! copy under `downloads/`, so that a pull killed part-way resumes where
//! it stopped next time; the copy goes once its layer is stored, or when
//! its bytes prove wrong.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::transport::registry_error;
use super::Registry;
use crate::digest::Digest;
use crate::error::Error;
use crate::image::{LayerSource, SourceFailed};

pub struct RemoteBlob {
    pub registry: Arc<Registry>,
    pub repository: String,
    pub digest: Digest,
    pub size: u64,
    /// Where the partial copy lives (`ROOT/downloads/HEX`).
    pub partial: PathBuf,
    /// Tries after a connection is lost mid-blob.
    pub attempts: u32,
    pub backoff: Duration,
}

impl std::fmt::Debug for RemoteBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteBlob({self})")
    }
}

impl std::fmt::Display for RemoteBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}@{}",
            self.registry.name(),
            self.repository,
            self.digest
        )
    }
}

impl LayerSource for RemoteBlob {
    fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(Download::start(self)?))
    }
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }
    fn stored(&self) {
        let _ = std::fs::remove_file(&self.partial);
    }
    fn discard(&self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

fn fetch_failed(e: Error) -> io::Error {
    io::Error::other(SourceFailed(e))
}

struct Download<'a> {
    blob: &'a RemoteBlob,
    /// The partial copy, locked; None when another pull holds it.
    copy: Option<File>,
    /// Bytes of the copy still to hand out before the network.
    replay: u64,
    body: Option<Box<dyn Read + Send + Sync>>,
    /// Bytes handed out so far.
    at: u64,
    failures: u32,
}

impl<'a> Download<'a> {
    fn start(blob: &'a RemoteBlob) -> io::Result<Download<'a>> {
        let copy = open_partial(&blob.partial, blob.size)?;
        let replay = match &copy {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        Ok(Download {
            blob,
            copy,
            replay,
            body: None,
            at: 0,
            failures: 0,
        })
    }

    /// GET the blob from byte `at`.
    fn connect(&mut self) -> Result<(), Error> {
        let b = self.blob;
        let range = [("Range", format!("bytes={}-", self.at))];
        let headers: &[(&str, String)] = if self.at > 0 { &range } else { &[] };
        let resp = b
            .registry
            .get(&b.repository, &format!("blobs/{}", b.digest), headers)?;
        let body = match resp.status {
            206 if content_range_start(resp.header("Content-Range")) == Some(self.at) => {
                resp.into_reader()
            }
            200 => {
                // No ranges here: read it again up to where we were.
                let mut body = resp.into_reader();
                let skipped = io::copy(&mut (&mut body).take(self.at), &mut io::sink())
                    .map_err(|e| registry_error(b.registry.name(), format!("{b}: {e}")))?;
                if skipped < self.at {
                    return Err(registry_error(
                        b.registry.name(),
                        format!("{b}: shorter than before"),
                    ));
                }
                body
            }
            404 => {
                return Err(registry_error(
                    b.registry.name(),
                    format!("{b}: blob unknown (404)"),
                ))
            }
            s => {
                return Err(registry_error(
                    b.registry.name(),
                    format!("{b}: blob request answered {s}"),
                ))
            }
        };
        // One byte past the size tells a registry sending too much.
        let left = b.size - self.at + 1;
        self.body = Some(Box::new(body.take(left)));
        Ok(())
    }

    fn read_network(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.body.is_none() {
                if let Err(e) = self.connect() {
                    return Err(fetch_failed(e));
                }
            }
            let body = self.body.as_mut().expect("connected");
            let outcome = match body.read(buf) {
                Ok(0) if self.at == self.blob.size => return Ok(0),
                Ok(0) => format!(
                    "the connection ended at byte {} of {}",
                    self.at, self.blob.size
                ),
                Ok(n) if self.at + n as u64 > self.blob.size => {
                    return Err(fetch_failed(registry_error(
                        self.blob.registry.name(),
                        format!(
                            "{}: more bytes than the manifest's {}",
                            self.blob, self.blob.size
                        ),
                    )))
                }
                Ok(n) => return Ok(n),
                Err(e) => format!(
                    "the connection failed at byte {} of {}: {e}",
                    self.at, self.blob.size
                ),
            };
            self.body = None;
            self.failures += 1;
            if self.failures >= self.blob.attempts {
                return Err(fetch_failed(registry_error(
                    self.blob.registry.name(),
                    format!("{}: {outcome}, {} times", self.blob, self.failures),
                )));
            }
            std::thread::sleep(self.blob.backoff * self.failures);
        }
    }
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.replay {
            let want = buf.len().min((self.replay - self.at) as usize);
            let copy = self.copy.as_mut().expect("replaying a copy");
            copy.seek(SeekFrom::Start(self.at))?;
            let n = copy.read(&mut buf[..want])?;
            self.at += n as u64;
            if n == 0 {
                self.replay = self.at; // shorter than it was: fetch the rest
            }
            return Ok(n);
        }
        if self.at == self.blob.size {
            // The copy was whole (a pull killed after its download, before
            // the layer was published): asking for bytes past the end
            // would only get 416. The digest still checks every byte.
            return Ok(0);
        }
        let n = self.read_network(buf)?;
        if let Some(copy) = &mut self.copy {
            // Best effort: a copy that cannot be written only costs the
            // resume, never the pull.
            if copy
                .seek(SeekFrom::Start(self.at))
                .and_then(|_| copy.write_all(&buf[..n]))
                .is_err()
            {
                self.copy = None;
            }
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// Opens (creating) the partial copy and takes its lock; None if another
/// pull holds it (it then downloads without one). A copy longer than the
/// blob is not a prefix of it, and starts over.
fn open_partial(path: &std::path::Path, size: u64) -> io::Result<Option<File>> {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: a valid fd; flock has no memory-safety preconditions.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(None);
    }
    if f.metadata()?.len() > size {
        f.set_len(0)?;
    }
    Ok(Some(f))
}

/// `bytes START-END/TOTAL` -> START.
fn content_range_start(h: Option<&str>) -> Option<u64> {
    h?.trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_range_start_is_read() {
        assert_eq!(
            super::content_range_start(Some("bytes 100-199/200")),
            Some(100)
        );
        assert_eq!(super::content_range_start(Some("bytes */200")), None);
        assert_eq!(super::content_range_start(None), None);
    }
}
