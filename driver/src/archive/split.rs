//! tar-split: everything in a layer tar except its regular files' data
//! (headers, PAX and GNU long-name records, padding, the end-of-archive
//! blocks and whatever trails them), recorded while the layer is imported,
//! so that `image save` can rebuild the tar byte for byte from the
//! extracted layer. That keeps the layer's diffID, and with it the image
//! ID, of an image another tool made (docker keeps the same for the same
//! reason).
//!
//! The record is a zstd stream beside the layer's `diff` (TAR_SPLIT_FILE):
//! MAGIC, then records `R len:u32 bytes` (raw tar bytes), `F len:u32 path
//! size:u64` (the next `size` bytes are the data of the layer file `path`)
//! and one final `E total:u64`. Headers are mostly zeros, so a 6,700-entry
//! layer records in a few hundred KB. Rebuilding is verified by its user:
//! the tar must hash to the layer's diffID.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::beneath::open_beneath;
use crate::error::{Error, IoContext, Result};

/// The file beside a layer's `diff` that holds its tar-split.
pub const TAR_SPLIT_FILE: &str = "tar-split.zst";

const MAGIC: &[u8] = b"strata tar-split 1\n";
const RAW: u8 = b'R';
const FILE: u8 = b'F';
const END: u8 = b'E';
/// Raw bytes go out in records of at most this size, so memory stays
/// bounded whatever passes through unreferenced (a sparse file's data).
const MAX_RAW: usize = 1 << 20;
/// A layer path longer than Linux's PATH_MAX cannot have been extracted.
const MAX_PATH: usize = 4096;

type Encoder = zstd::stream::write::Encoder<'static, BufWriter<File>>;

struct Recording {
    /// Bytes of the tar stream seen so far.
    pos: u64,
    /// Where the data of the last referenced file ends: bytes before it
    /// are in the layer's files, not in the record.
    data_end: u64,
    raw: Vec<u8>,
    out: Option<Encoder>,
    path: PathBuf,
    /// Why the recording was given up; save then writes a canonical tar.
    abandoned: Option<String>,
}

impl Recording {
    fn take(&mut self, bytes: &[u8]) -> io::Result<()> {
        let start = self.pos;
        self.pos += bytes.len() as u64;
        if self.abandoned.is_some() {
            return Ok(());
        }
        let skip = (self.data_end.saturating_sub(start) as usize).min(bytes.len());
        self.raw.extend_from_slice(&bytes[skip..]);
        if self.raw.len() >= MAX_RAW {
            self.flush_raw()?;
        }
        Ok(())
    }

    fn flush_raw(&mut self) -> io::Result<()> {
        let out = self.out.as_mut().expect("open until finish");
        for chunk in self.raw.chunks(MAX_RAW) {
            out.write_all(&[RAW])?;
            out.write_all(&(chunk.len() as u32).to_le_bytes())?;
            out.write_all(chunk)?;
        }
        self.raw.clear();
        Ok(())
    }
}

/// A tar-split being recorded. Clones share one recording: the reader
/// half sees the bytes, the applier names the entries that are files.
#[derive(Clone)]
pub struct TarSplit(Rc<RefCell<Recording>>);

impl TarSplit {
    pub fn create(path: &Path) -> Result<TarSplit> {
        let f = File::create(path).ctx(|| format!("creating {}", path.display()))?;
        let mut out = Encoder::new(BufWriter::new(f), 3).ctx(|| "starting zstd".into())?;
        out.write_all(MAGIC)
            .ctx(|| format!("writing {}", path.display()))?;
        Ok(TarSplit(Rc::new(RefCell::new(Recording {
            pos: 0,
            data_end: 0,
            raw: Vec::new(),
            out: Some(out),
            path: path.to_path_buf(),
            abandoned: None,
        }))))
    }

    /// Wraps the decompressed layer stream. Everything the tar reader
    /// pulls through it, and everything after (drain it to the end), is
    /// recorded unless a file's data.
    pub fn reader<R: Read>(&self, inner: R) -> SplitReader<R> {
        SplitReader {
            inner,
            recording: self.0.clone(),
        }
    }

    /// The entry whose data starts at stream offset `offset` and runs
    /// `size` bytes is extracted, verbatim, as layer file `path`.
    pub fn file(&self, offset: u64, size: u64, path: &OsStr) -> io::Result<()> {
        let mut rec = self.0.borrow_mut();
        if rec.abandoned.is_some() {
            return Ok(());
        }
        if offset != rec.pos || path.len() > MAX_PATH {
            // The tar reader read ahead of the entry it handed out: the
            // record could not say where this file's data is.
            rec.abandoned = Some(format!(
                "entry data at offset {offset}, reader at {}",
                rec.pos
            ));
            return Ok(());
        }
        rec.flush_raw()?;
        let out = rec.out.as_mut().expect("open until finish");
        out.write_all(&[FILE])?;
        out.write_all(&(path.len() as u32).to_le_bytes())?;
        out.write_all(path.as_bytes())?;
        out.write_all(&size.to_le_bytes())?;
        rec.data_end = offset + size;
        Ok(())
    }

    /// Ends the record. Returns false (and removes the file) when it was
    /// given up, so that save falls back to a canonical tar.
    pub fn finish(self) -> Result<bool> {
        let mut rec = self.0.borrow_mut();
        let path = rec.path.clone();
        if rec.abandoned.is_some() {
            drop(rec.out.take());
            std::fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
            return Ok(false);
        }
        let write = |rec: &mut Recording| -> io::Result<()> {
            rec.flush_raw()?;
            let total = rec.pos;
            let mut out = rec.out.take().expect("finished once");
            out.write_all(&[END])?;
            out.write_all(&total.to_le_bytes())?;
            out.finish()?.into_inner().map_err(|e| e.into_error())?;
            Ok(())
        };
        write(&mut rec).ctx(|| format!("writing {}", path.display()))?;
        Ok(true)
    }
}

/// The reading half of a TarSplit.
pub struct SplitReader<R> {
    inner: R,
    recording: Rc<RefCell<Recording>>,
}

impl<R: Read> Read for SplitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.recording.borrow_mut().take(&buf[..n])?;
        Ok(n)
    }
}

/// Rebuilds the tar that `layer_dir`'s tar-split was recorded from into
/// `out`, taking file data from the layer's `diff`. Ok(false) when the
/// layer has none (a layer made by commit, or imported before strata kept
/// them); then nothing is written.
pub fn rebuild(layer_dir: &Path, out: &mut impl Write) -> Result<bool> {
    let path = layer_dir.join(TAR_SPLIT_FILE);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).ctx(|| format!("opening {}", path.display())),
    };
    let diff = layer_dir.join("diff");
    let root = File::open(&diff)
        .map(OwnedFd::from)
        .ctx(|| format!("opening {}", diff.display()))?;
    let corrupt = |reason: String| Error::Corrupt {
        path: path.clone(),
        reason,
    };
    let mut input = zstd::stream::read::Decoder::with_buffer(BufReader::new(f))
        .ctx(|| format!("reading {}", path.display()))?;
    let mut magic = [0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|e| corrupt(format!("no tar-split header: {e}")))?;
    if magic != MAGIC {
        return Err(corrupt("not a strata tar-split".into()));
    }
    let mut written = 0u64;
    loop {
        let tag = read_array::<1>(&mut input).map_err(|e| corrupt(format!("truncated: {e}")))?;
        match tag[0] {
            RAW => {
                let len = read_len(&mut input, MAX_RAW).map_err(corrupt)?;
                let n = io::copy(&mut (&mut input).take(len as u64), out)
                    .ctx(|| "writing layer tar".into())?;
                if n != len as u64 {
                    return Err(corrupt("truncated raw record".into()));
                }
                written += n;
            }
            FILE => {
                let len = read_len(&mut input, MAX_PATH).map_err(corrupt)?;
                let mut name = vec![0; len];
                input
                    .read_exact(&mut name)
                    .map_err(|e| corrupt(format!("truncated path: {e}")))?;
                let size = u64::from_le_bytes(
                    read_array(&mut input).map_err(|e| corrupt(format!("truncated: {e}")))?,
                );
                written += copy_layer_file(&root, OsStr::from_bytes(&name), size, out).map_err(
                    |reason| Error::Corrupt {
                        path: diff.join(OsStr::from_bytes(&name)),
                        reason,
                    },
                )?;
            }
            END => {
                let total = u64::from_le_bytes(
                    read_array(&mut input).map_err(|e| corrupt(format!("truncated: {e}")))?,
                );
                if total != written {
                    return Err(corrupt(format!(
                        "records make {written} bytes, the tar had {total}"
                    )));
                }
                return Ok(true);
            }
            other => return Err(corrupt(format!("unknown record type {other:#x}"))),
        }
    }
}

/// Copies exactly `size` bytes of layer file `name` (beneath `root`, no
/// symlinks) to `out`; the file must be a regular file of that size.
fn copy_layer_file(
    root: &OwnedFd,
    name: &OsStr,
    size: u64,
    out: &mut impl Write,
) -> std::result::Result<u64, String> {
    let fd = open_beneath(root.as_fd(), name, libc::O_RDONLY | libc::O_NOFOLLOW)
        .map_err(|e| format!("layer file recorded in its tar-split: {e}"))?;
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() != size {
        return Err(format!(
            "the layer's tar recorded a {size}-byte file here; it is now {} bytes{}",
            meta.len(),
            if meta.is_file() {
                ""
            } else {
                " and not a file"
            }
        ));
    }
    let n = io::copy(&mut (&mut file).take(size), out).map_err(|e| e.to_string())?;
    if n != size {
        return Err(format!("read {n} of {size} bytes"));
    }
    Ok(n)
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_len(r: &mut impl Read, max: usize) -> std::result::Result<usize, String> {
    let len = u32::from_le_bytes(read_array(r).map_err(|e| format!("truncated: {e}"))?) as usize;
    if len > max {
        return Err(format!("record of {len} bytes exceeds {max}"));
    }
    Ok(len)
}
