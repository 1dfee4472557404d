//! The changes made since the last checkpoint (see slots): entries
//! written one after another into a file made at its full size, so that
//! writing one is an overwrite within the file's blocks, one data flush
//! and no journal commit of the filesystem's, and costs what the change
//! is, not what the whole metadata is.
//!
//! Each entry carries the generation it makes and a CRC-32 of itself; a
//! reader takes entries while each is whole and its generation the next
//! one. So the end is found without a length stored anywhere: a torn
//! entry, the zeros never written, or an entry left from before the last
//! checkpoint (whose generation is older) all end it.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::fsutil::{self, KeptOpen};

const MAGIC: &[u8; 4] = b"SJ01";
/// magic, generation (u64 LE), body length (u32 LE), CRC-32 (u32 LE) of
/// generation, length and body.
const HEADER_LEN: usize = 4 + 8 + 4 + 4;
/// The file's size. When an entry does not fit, the caller checkpoints
/// and the next entry starts at 0 again.
pub const CAPACITY: u64 = 512 << 10;
/// How much a reader takes at once: most reads find one entry or none.
const WINDOW: usize = 16 << 10;

pub struct Journal {
    path: PathBuf,
    /// Where the file is made before it is renamed into place: the
    /// store's tmp/, whose leftovers recovery removes.
    staging: PathBuf,
    reader: KeptOpen,
}

/// One change, the generation it makes, and where the next entry goes.
pub struct Entry {
    pub generation: u64,
    pub body: Vec<u8>,
    pub end: u64,
}

impl Journal {
    pub fn new(path: &Path, staging: &Path) -> Journal {
        Journal {
            path: path.to_path_buf(),
            staging: staging.to_path_buf(),
            reader: KeptOpen::default(),
        }
    }

    /// The entries from `offset` on whose generations follow `after` one
    /// by one; none if the file does not exist.
    pub fn read_from(&self, mut offset: u64, after: u64) -> Result<Vec<Entry>> {
        let Some(f) = self.reader.get(&self.path)? else {
            return Ok(Vec::new());
        };
        let mut entries: Vec<Entry> = Vec::new();
        let mut window = Window::default();
        loop {
            let generation = entries.last().map_or(after, |e| e.generation) + 1;
            let header = window.get(&f, offset, HEADER_LEN).ctx(|| self.reading())?;
            let Some((len, crc)) = parse_header(header, generation) else {
                return Ok(entries);
            };
            if offset + (HEADER_LEN + len) as u64 > CAPACITY {
                return Ok(entries);
            }
            let whole = window
                .get(&f, offset, HEADER_LEN + len)
                .ctx(|| self.reading())?;
            if whole.len() < HEADER_LEN + len
                || checksum(&whole[4..16], &whole[HEADER_LEN..]) != crc
            {
                return Ok(entries);
            }
            offset += whole.len() as u64;
            entries.push(Entry {
                generation,
                body: whole[HEADER_LEN..].to_vec(),
                end: offset,
            });
        }
    }

    /// Writes the entry making `generation` at `offset` and flushes it.
    /// Returns where the next one goes, or None where it does not fit:
    /// then nothing was written, and the caller checkpoints instead.
    /// Call with the store lock held.
    pub fn append(&self, offset: u64, generation: u64, body: &[u8]) -> Result<Option<u64>> {
        let end = offset + (HEADER_LEN + body.len()) as u64;
        if end > CAPACITY {
            return Ok(None);
        }
        let mut entry = Vec::with_capacity(HEADER_LEN + body.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&generation.to_le_bytes());
        entry.extend_from_slice(&(body.len() as u32).to_le_bytes());
        entry.extend_from_slice(&checksum(&entry[4..16], body).to_le_bytes());
        entry.extend_from_slice(body);
        let f = self.open_for_writing()?;
        f.write_all_at(&entry, offset)
            .ctx(|| format!("writing {}", self.path.display()))?;
        f.sync_data()
            .ctx(|| format!("syncing {}", self.path.display()))?;
        Ok(Some(end))
    }

    /// The file, made at its full size on first use, in zeros (see
    /// fsutil::write_zeros), so that no later write allocates.
    fn open_for_writing(&self) -> Result<File> {
        match OpenOptions::new().write(true).open(&self.path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("opening {}", self.path.display()))
            }
            Err(_) => {}
        }
        let dir = self.path.parent().expect("journal paths have a parent");
        let staged = self
            .staging
            .join(format!("journal-{}", fsutil::random_hex(8)));
        let f = File::create(&staged).ctx(|| format!("creating {}", staged.display()))?;
        fsutil::write_zeros(&f, 0, CAPACITY)
            .and_then(|()| f.sync_all())
            .ctx(|| format!("writing {}", staged.display()))?;
        std::fs::rename(&staged, &self.path)
            .ctx(|| format!("renaming {} into place", self.path.display()))?;
        fsutil::sync_dir(dir)?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reading(&self) -> String {
        format!("reading {}", self.path.display())
    }
}

fn parse_header(header: &[u8], generation: u64) -> Option<(usize, u32)> {
    if header.len() < HEADER_LEN || &header[..4] != MAGIC {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap());
    let written = u64::from_le_bytes(header[4..12].try_into().unwrap());
    (written == generation).then(|| (word(12) as usize, word(16)))
}

fn checksum(header: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.update(body);
    h.finalize()
}

/// The part of the file last read, so that a run of small entries costs
/// one read.
#[derive(Default)]
struct Window {
    start: u64,
    data: Vec<u8>,
}

impl Window {
    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    fn get(&mut self, f: &File, offset: u64, len: usize) -> std::io::Result<&[u8]> {
        let covered =
            offset >= self.start && offset + len as u64 <= self.start + self.data.len() as u64;
        if !covered {
            self.start = offset;
            self.data.resize(len.max(WINDOW), 0);
            let n = fsutil::read_full_at(f, &mut self.data, offset)?;
            self.data.truncate(n);
        }
        let from = (offset - self.start) as usize;
        let to = (from + len).min(self.data.len());
        Ok(&self.data[from.min(to)..to])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestStore;

    fn generations(j: &Journal, offset: u64, after: u64) -> Vec<u64> {
        let entries = j.read_from(offset, after).unwrap();
        entries.iter().map(|e| e.generation).collect()
    }

    #[test]
    fn entries_are_read_back_while_their_generations_follow() {
        let ts = TestStore::new();
        let j = Journal::new(&ts.scratch("j").join("log"), &ts.scratch("staging"));
        assert!(j.read_from(0, 0).unwrap().is_empty());
        let mut at = 0;
        for g in 1..=3 {
            at = j.append(at, g, &vec![g as u8; 20_000]).unwrap().unwrap();
        }
        let entries = j.read_from(0, 0).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].body, vec![3; 20_000]);
        assert_eq!(entries[2].end, at);
        // From the second entry on, as a reader that has the first.
        assert_eq!(generations(&j, entries[0].end, 1), [2, 3]);
        // After a checkpoint at generation 3, entries written from 0
        // again end where the older ones begin.
        j.append(0, 4, b"after the checkpoint").unwrap().unwrap();
        assert_eq!(generations(&j, 0, 3), [4]);
    }

    #[test]
    fn a_torn_entry_ends_the_journal_and_one_that_does_not_fit_is_refused() {
        let ts = TestStore::new();
        let path = ts.scratch("j").join("log");
        let j = Journal::new(&path, &ts.scratch("staging"));
        let end = j.append(0, 1, b"one").unwrap().unwrap();
        j.append(end, 2, b"two").unwrap().unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"X", end + HEADER_LEN as u64).unwrap();
        assert_eq!(generations(&j, 0, 0), [1]);
        assert_eq!(j.append(end, 2, &vec![0; CAPACITY as usize]).unwrap(), None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), CAPACITY);
    }
}
