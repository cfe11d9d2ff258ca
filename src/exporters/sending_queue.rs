//! The durable part of the network exporters' `sending_queue`: where batches wait for their
//! backend, in memory (the default) or in files that outlive the process.
//!
//! This module owns the `storage`/`directory`/`max_size_mib` settings shared by the `otlp` and
//! `prometheus_remote_write` exporters, and [`FileQueue`], an append-only FIFO of opaque
//! records on disk with at-least-once delivery. The exporters own what a record means (an
//! encoded OTLP request, a compressed remote-write body) and how it is sent.
//!
//! # On disk
//!
//! A queue is one directory (`<directory>/<component id>`, so exporters may share `directory`):
//!
//! * segment files `00000000000000000001.seg`, … written in order. Each starts with the 8-byte
//!   magic `CLRQSEG1`, then records: `len: u32 LE`, `items: u32 LE`, `crc32(items ‖ payload):
//!   u32 LE`, `payload: len bytes`. A segment is closed once it passes ⅛ of `max_size_mib`
//!   (64 KiB to 64 MiB), and deleted once every record in it has been acknowledged;
//! * `cursor`: the position of the first record not yet acknowledged (segment, offset), written
//!   in place after each acknowledgement into one of two 32-byte slots, alternately:
//!   `generation: u64`, `segment: u64`, `offset: u64`, `crc32: u32`, 4 zero bytes (all LE). The
//!   valid slot with the highest generation counts, so a torn write leaves the previous one.
//!
//! Records are handed out in order; the cursor advances over the longest acknowledged prefix, so
//! a record sent by a concurrent consumer after an older one still in flight is replayed after a
//! crash (at-least-once; duplicates are possible, loss of acknowledged data is not).
//!
//! # Durability (fsync policy)
//!
//! Every record is written with one `write(2)` before the batch counts as queued, so it survives
//! the agent being killed (`kill -9`, OOM killer, panic): the data is in the kernel's page cache.
//! A segment is `fsync`ed when it is closed and when the queue is dropped; the cursor is not
//! synced. A power loss or kernel crash can therefore lose the unsynced tail of the newest
//! segment and replay records already sent; it cannot produce a corrupt record, because:
//!
//! * on open every segment is scanned; at the first torn or corrupt record (short header, short
//!   payload, CRC mismatch) the segment is truncated there, and what was cut is reported
//!   ([`OpenReport`]) for the exporter to count;
//! * a segment with a bad magic is deleted and reported the same way.
//!
//! # Full
//!
//! When the segments exceed `max_size_mib`, the oldest segment is deleted and its records that
//! were not yet sent are returned by [`FileQueue::push`] so the exporter counts them
//! (`reason="queue_full"`): the oldest data goes first, never silently.
//!
//! # Failed writes
//!
//! A record that cannot be written whole (disk full, I/O error) is not queued: [`FileQueue::push`]
//! returns the error for the exporter to count (`reason="queue_error"`), and the bytes the failed
//! write left are cut off again (the segment is truncated back to its last whole record), so the
//! records queued before and after it stay readable. If even the truncation fails, the next
//! push starts a new segment and nothing is ever appended after the torn piece; the next open
//! cuts it off. Records accepted before or after a failed write are never lost.
//!
//! The queue does blocking file I/O; the async [`DiskQueue`] handle runs it on tokio's blocking
//! pool. Two agents must not share a queue directory.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::DecodeError;

/// Where queued batches are kept.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// In the agent's memory: lost on restart.
    #[default]
    Memory,
    /// In segment files under `directory`: survive an outage, a crash and a restart.
    File,
}

/// Default `max_size_mib` of a file queue.
pub const DEFAULT_MAX_SIZE_MIB: u64 = 256;

/// A `sending_queue` with only the storage keys (`prometheus_remote_write`, whose in-memory
/// queue is sized by `remote_write_queue`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub storage: Storage,
    pub directory: Option<PathBuf>,
    pub max_size_mib: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            storage: Storage::Memory,
            directory: None,
            max_size_mib: DEFAULT_MAX_SIZE_MIB,
        }
    }
}

/// Check the storage keys of a `sending_queue` and say where the file queue goes, if any.
/// `component` is the exporter's id (`otlp/tempo`): its queue gets a directory of its own.
pub fn file_settings(
    storage: Storage,
    directory: Option<&Path>,
    max_size_mib: u64,
) -> Result<Option<(PathBuf, u64)>, DecodeError> {
    match (storage, directory) {
        (Storage::Memory, None) => Ok(None),
        (Storage::Memory, Some(_)) => Err(DecodeError::new(
            "sending_queue.directory",
            "sending_queue.directory is only used with `storage: file`",
        )),
        (Storage::File, None) => Err(DecodeError::new(
            "sending_queue.directory",
            "sending_queue.directory is required with `storage: file`",
        )),
        (Storage::File, Some(d)) => {
            if d.as_os_str().is_empty() {
                return Err(DecodeError::new("sending_queue.directory", "is empty"));
            }
            if max_size_mib == 0 {
                return Err(DecodeError::new(
                    "sending_queue.max_size_mib",
                    "must be at least 1",
                ));
            }
            Ok(Some((
                d.to_path_buf(),
                max_size_mib.saturating_mul(1 << 20),
            )))
        }
    }
}

/// The directory of one component's queue under the configured `directory`.
pub fn component_dir(base: &Path, component: &str) -> PathBuf {
    let name: String = component
        .trim_start_matches("exporter/")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.join(name)
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("a {len}-byte batch does not fit in a queue of {max} bytes")]
    TooLarge { len: usize, max: u64 },
}

const MAGIC: &[u8; 8] = b"CLRQSEG1";
const HEADER: u64 = 12;
const CURSOR: &str = "cursor";
const SLOT: usize = 32;
/// A header claiming more than this is corruption, not a batch.
const MAX_RECORD: u64 = 1 << 30;

/// A position in the queue: segment sequence number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    seq: u64,
    offset: u64,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    bytes: u64,
    /// Records at or after the read position, and their items.
    unread_records: u64,
    unread_items: u64,
}

/// What [`FileQueue::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Records waiting to be sent (left by a previous run).
    pub records: u64,
    pub items: u64,
    /// Bytes cut off torn or corrupt segment tails, and deleted unreadable segments.
    pub truncated_bytes: u64,
    /// Items of the cut records whose header was still readable.
    pub truncated_items: u64,
}

/// Records and items pushed out of a full queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub records: u64,
    pub items: u64,
}

/// A record handed out by [`FileQueue::pop`], to be acknowledged with [`FileQueue::ack`].
#[derive(Debug)]
pub struct Popped {
    pub ticket: u64,
    pub items: u32,
    pub payload: Vec<u8>,
}

/// An append-only, CRC-checked FIFO of records in segment files (see the module docs).
pub struct FileQueue {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; the last is the one written to.
    segments: VecDeque<Segment>,
    writer: File,
    reader: Option<(u64, File)>,
    read: Pos,
    committed: Pos,
    /// Handed out, by ticket: where the record ends, and whether it was acknowledged.
    inflight: BTreeMap<u64, (Pos, bool)>,
    next_ticket: u64,
    total_bytes: u64,
    cursor: Cursor,
    /// A failed write left bytes after the segment's last record that could not be cut off.
    torn: bool,
    /// Test hook: the next write stores this many bytes of the record, then fails (ENOSPC).
    #[cfg(test)]
    fail_next_write: Option<usize>,
}

fn seg_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

fn crc(items: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&items.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// What [`read_record`] found at the reader's position.
enum Next {
    /// A clean end of the data.
    End,
    Record {
        items: u32,
        payload: Vec<u8>,
    },
    /// A torn or corrupt record; `claimed_items` from its header when that was readable.
    Bad {
        claimed_items: u64,
    },
}

fn read_record(r: &mut impl Read) -> io::Result<Next> {
    let mut h = [0u8; HEADER as usize];
    let mut got = 0;
    while got < h.len() {
        match r.read(&mut h[got..])? {
            0 => break,
            n => got += n,
        }
    }
    if got == 0 {
        return Ok(Next::End);
    }
    if got < h.len() {
        return Ok(Next::Bad { claimed_items: 0 });
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
    let items = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let sum = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if len > MAX_RECORD {
        return Ok(Next::Bad { claimed_items: 0 });
    }
    let mut payload = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut payload)?;
    if payload.len() as u64 != len || crc(items, &payload) != sum {
        return Ok(Next::Bad {
            claimed_items: items as u64,
        });
    }
    Ok(Next::Record { items, payload })
}

impl FileQueue {
    /// Open (or create) the queue in `dir`, recovering what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(FileQueue, OpenReport), QueueError> {
        let io_err = |source| QueueError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let mut seqs = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let name = entry.map_err(io_err)?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".seg")
                .and_then(|s| s.parse::<u64>().ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let (cursor, generation) = read_cursor(dir);
        let cursor_file = Cursor::open(dir, generation).map_err(io_err)?;
        let start = match cursor {
            Some(c) => c,
            None => Pos {
                seq: seqs.first().copied().unwrap_or(1),
                offset: MAGIC.len() as u64,
            },
        };
        let mut report = OpenReport::default();
        let mut segments = VecDeque::new();
        for seq in seqs {
            let path = dir.join(seg_name(seq));
            if seq < start.seq {
                // Fully acknowledged before the last run ended.
                fs::remove_file(&path).map_err(io_err)?;
                continue;
            }
            let from = if seq == start.seq { start.offset } else { 0 };
            match scan_segment(&path, from).map_err(io_err)? {
                // Nothing left to send in it (acknowledged, or empty).
                Some(s) if s.records == 0 => {
                    report.truncated_bytes += s.truncated_bytes;
                    report.truncated_items += s.truncated_items;
                    fs::remove_file(&path).map_err(io_err)?;
                }
                Some(s) => {
                    report.records += s.records;
                    report.items += s.items;
                    report.truncated_bytes += s.truncated_bytes;
                    report.truncated_items += s.truncated_items;
                    segments.push_back(Segment {
                        seq,
                        bytes: s.len,
                        unread_records: s.records,
                        unread_items: s.items,
                    });
                }
                None => {
                    report.truncated_bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(&path).map_err(io_err)?;
                }
            }
        }
        // Where reading resumes: the cursor if its segment survived, else the oldest segment.
        let read = match segments.front() {
            Some(s) if s.seq == start.seq => Pos {
                seq: s.seq,
                offset: start.offset.clamp(MAGIC.len() as u64, s.bytes),
            },
            Some(s) => Pos {
                seq: s.seq,
                offset: MAGIC.len() as u64,
            },
            None => Pos {
                seq: start.seq + 1,
                offset: MAGIC.len() as u64,
            },
        };
        // Always write to a fresh segment: nothing is ever appended after a recovered tail.
        let write_seq = segments.back().map_or(read.seq, |s| s.seq + 1);
        let writer = new_segment(dir, write_seq).map_err(io_err)?;
        segments.push_back(Segment {
            seq: write_seq,
            bytes: MAGIC.len() as u64,
            unread_records: 0,
            unread_items: 0,
        });
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let q = FileQueue {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 << 10, 64 << 20),
            segments,
            writer,
            reader: None,
            read,
            committed: read,
            inflight: BTreeMap::new(),
            next_ticket: 0,
            total_bytes,
            cursor: cursor_file,
            torn: false,
            #[cfg(test)]
            fail_next_write: None,
        };
        Ok((q, report))
    }

    fn io_err(&self, source: io::Error) -> QueueError {
        QueueError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Records waiting to be handed out.
    pub fn unread_records(&self) -> u64 {
        self.segments.iter().map(|s| s.unread_records).sum()
    }

    /// Items waiting to be handed out.
    pub fn unread_items(&self) -> u64 {
        self.segments.iter().map(|s| s.unread_items).sum()
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Append a record of `items` items; returns what had to be evicted to stay under the size
    /// limit (the oldest segments, unsent records included).
    pub fn push(&mut self, payload: &[u8], items: u32) -> Result<Evicted, QueueError> {
        let len = payload.len() as u64 + HEADER;
        if len + MAGIC.len() as u64 > self.max_bytes || payload.len() as u64 > MAX_RECORD {
            return Err(QueueError::TooLarge {
                len: payload.len(),
                max: self.max_bytes,
            });
        }
        if self.torn {
            // The last failed write could not be taken back: never append after it.
            self.roll()?;
        }
        let last = self.segments.back().map_or(0, |s| s.bytes);
        if last > MAGIC.len() as u64 && last + len > self.segment_bytes {
            self.roll()?;
        }
        let mut rec = Vec::with_capacity(len as usize);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&items.to_le_bytes());
        rec.extend_from_slice(&crc(items, payload).to_le_bytes());
        rec.extend_from_slice(payload);
        // One write: a crash leaves the record whole or a torn tail the next open cuts off.
        if let Err(e) = self.write_record(&rec) {
            // Disk full or an I/O error part-way: take the torn piece back out of the segment
            // so that the next record lands where the segment really ends (see `Failed writes`).
            self.undo_write();
            return Err(self.io_err(e));
        }
        if let Some(s) = self.segments.back_mut() {
            s.bytes += len;
            s.unread_records += 1;
            s.unread_items += items as u64;
        }
        self.total_bytes += len;
        let mut evicted = Evicted::default();
        while self.total_bytes > self.max_bytes && self.segments.len() > 1 {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            evicted.records += old.unread_records;
            evicted.items += old.unread_items;
            self.total_bytes -= old.bytes;
            if self.read.seq <= old.seq {
                let next = self.segments.front().map_or(old.seq + 1, |s| s.seq);
                self.read = Pos {
                    seq: next,
                    offset: MAGIC.len() as u64,
                };
                self.reader = None;
            }
            fs::remove_file(self.dir.join(seg_name(old.seq))).map_err(|e| self.io_err(e))?;
        }
        Ok(evicted)
    }

    fn write_record(&mut self, rec: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(keep) = self.fail_next_write.take() {
            // A disk that fills up part-way through the record.
            self.writer.write_all(&rec[..keep.min(rec.len())])?;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.writer.write_all(rec)
    }

    /// After a failed append: cut the segment back to its last whole record, or, when even
    /// that fails, make the next push start a new segment.
    fn undo_write(&mut self) {
        let end = self.segments.back().map_or(MAGIC.len() as u64, |s| s.bytes);
        let undone = self
            .writer
            .set_len(end)
            .and_then(|()| self.writer.seek(SeekFrom::Start(end)).map(drop));
        if let Err(e) = undone {
            tracing::warn!(dir = %self.dir.display(), error = %e, "Cannot cut a failed write out of the sending queue; starting a new segment with the next batch.");
            self.torn = true;
        }
    }

    fn roll(&mut self) -> Result<(), QueueError> {
        if let Err(e) = self.writer.sync_data() {
            if !self.torn {
                return Err(self.io_err(e));
            }
        }
        let seq = self.segments.back().map_or(1, |s| s.seq + 1);
        self.writer = new_segment(&self.dir, seq).map_err(|e| self.io_err(e))?;
        self.torn = false;
        self.segments.push_back(Segment {
            seq,
            bytes: MAGIC.len() as u64,
            unread_records: 0,
            unread_items: 0,
        });
        self.total_bytes += MAGIC.len() as u64;
        Ok(())
    }

    /// The next record in order, or `None` when every record has been handed out.
    pub fn pop(&mut self) -> Result<Option<Popped>, QueueError> {
        loop {
            let Some(idx) = self.segments.iter().position(|s| s.seq >= self.read.seq) else {
                return Ok(None);
            };
            let seg = &self.segments[idx];
            if seg.seq != self.read.seq {
                self.read = Pos {
                    seq: seg.seq,
                    offset: MAGIC.len() as u64,
                };
                self.reader = None;
            }
            let is_last = idx + 1 == self.segments.len();
            if self.read.offset >= seg.bytes {
                if is_last {
                    return Ok(None);
                }
                self.read = Pos {
                    seq: seg.seq + 1,
                    offset: MAGIC.len() as u64,
                };
                continue;
            }
            if self
                .reader
                .as_ref()
                .is_none_or(|(s, _)| *s != self.read.seq)
            {
                let mut f = File::open(self.dir.join(seg_name(self.read.seq)))
                    .map_err(|e| self.io_err(e))?;
                f.seek(SeekFrom::Start(self.read.offset))
                    .map_err(|e| self.io_err(e))?;
                self.reader = Some((self.read.seq, f));
            }
            let Some((_, f)) = self.reader.as_mut() else {
                continue;
            };
            let rec = read_record(f).map_err(|e| self.io_err(e))?;
            let seg = &mut self.segments[idx];
            match rec {
                Next::Record { items, payload } => {
                    let end = Pos {
                        seq: self.read.seq,
                        offset: self.read.offset + HEADER + payload.len() as u64,
                    };
                    self.read = end;
                    seg.unread_records = seg.unread_records.saturating_sub(1);
                    seg.unread_items = seg.unread_items.saturating_sub(items as u64);
                    let ticket = self.next_ticket;
                    self.next_ticket += 1;
                    self.inflight.insert(ticket, (end, false));
                    return Ok(Some(Popped {
                        ticket,
                        items,
                        payload,
                    }));
                }
                // Scanned on open and written by us since: only a file changed under us gets
                // here. Skip the rest of the segment.
                Next::End | Next::Bad { .. } => {
                    tracing::warn!(dir = %self.dir.display(), segment = seg.seq, offset = self.read.offset, "Unreadable record in the sending queue; skipping the rest of its segment.");
                    self.read.offset = seg.bytes;
                    seg.unread_records = 0;
                    seg.unread_items = 0;
                }
            }
        }
    }

    /// Mark a record done (sent, or dropped and counted). The cursor moves over the longest
    /// done prefix and segments behind it are deleted.
    pub fn ack(&mut self, ticket: u64) -> Result<(), QueueError> {
        if let Some(e) = self.inflight.get_mut(&ticket) {
            e.1 = true;
        }
        let mut moved = None;
        while let Some(entry) = self.inflight.first_entry() {
            if !entry.get().1 {
                break;
            }
            moved = Some(entry.remove().0);
        }
        let Some(pos) = moved else { return Ok(()) };
        self.committed = pos;
        self.cursor.write(pos).map_err(|e| self.io_err(e))?;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.seq < pos.seq) {
            if let Some(old) = self.segments.pop_front() {
                self.total_bytes -= old.bytes;
                fs::remove_file(self.dir.join(seg_name(old.seq))).map_err(|e| self.io_err(e))?;
            }
        }
        Ok(())
    }

    /// Make everything written so far durable (also done on drop).
    pub fn sync(&mut self) -> Result<(), QueueError> {
        self.writer.sync_data().map_err(|e| self.io_err(e))
    }
}

impl Drop for FileQueue {
    fn drop(&mut self) {
        if let Err(e) = self.writer.sync_data() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "Cannot sync the sending queue.");
        }
    }
}

fn new_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join(seg_name(seq)))?;
    f.write_all(MAGIC)?;
    Ok(f)
}

struct Scan {
    len: u64,
    records: u64,
    items: u64,
    truncated_bytes: u64,
    truncated_items: u64,
}

/// Validate a segment, truncating it at its first torn or corrupt record; count the records
/// from offset `from` on. `None`: not a segment (bad magic).
fn scan_segment(path: &Path, from: u64) -> io::Result<Option<Scan>> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let file_len = f.metadata()?.len();
    let mut magic = [0u8; 8];
    if f.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(None);
    }
    let mut r = io::BufReader::new(&mut f);
    let mut pos = MAGIC.len() as u64;
    let (mut records, mut items, mut truncated_items) = (0, 0, 0);
    loop {
        match read_record(&mut r)? {
            Next::Record { items: n, payload } => {
                if pos >= from {
                    records += 1;
                    items += n as u64;
                }
                pos += HEADER + payload.len() as u64;
            }
            Next::End => break,
            Next::Bad { claimed_items } => {
                truncated_items = claimed_items;
                break;
            }
        }
    }
    drop(r);
    if pos < file_len {
        f.set_len(pos)?;
        f.sync_data()?;
        tracing::warn!(segment = %path.display(), offset = pos, bytes = file_len - pos, "Truncated a torn or corrupt tail of the sending queue.");
    }
    Ok(Some(Scan {
        len: pos,
        records,
        items,
        truncated_bytes: file_len - pos,
        truncated_items,
    }))
}

/// The cursor and its generation: `(None, 0)` when there is none or neither slot is valid.
fn read_cursor(dir: &Path) -> (Option<Pos>, u64) {
    let Ok(b) = fs::read(dir.join(CURSOR)) else {
        return (None, 0);
    };
    let best = b
        .chunks_exact(SLOT)
        .take(2)
        .filter_map(|slot| {
            let word = |i: usize| {
                u64::from_le_bytes(slot[i * 8..i * 8 + 8].try_into().unwrap_or_default())
            };
            let sum = u32::from_le_bytes(slot[24..28].try_into().unwrap_or_default());
            (crc32fast::hash(&slot[..24]) == sum).then(|| {
                (
                    word(0),
                    Pos {
                        seq: word(1),
                        offset: word(2),
                    },
                )
            })
        })
        .max_by_key(|(generation, _)| *generation);
    match best {
        Some((generation, pos)) => (Some(pos), generation),
        None => {
            tracing::warn!(dir = %dir.display(), "Ignoring an unreadable sending-queue cursor; replaying the queue from its oldest record.");
            (None, 0)
        }
    }
}

/// The open cursor file (see the module docs).
struct Cursor {
    file: File,
    generation: u64,
}

impl Cursor {
    fn open(dir: &Path, generation: u64) -> io::Result<Cursor> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(CURSOR))?;
        if file.metadata()?.len() != 2 * SLOT as u64 {
            // Written out, not a sparse `set_len`: overwriting the slots then needs no new
            // block, so acknowledgements still work on a full disk.
            use std::os::unix::fs::FileExt;
            file.set_len(0)?;
            file.write_all_at(&[0u8; 2 * SLOT], 0)?;
        }
        Ok(Cursor { file, generation })
    }

    /// Overwrite the older slot: one small positioned write, no new file.
    fn write(&mut self, pos: Pos) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.generation += 1;
        let mut b = [0u8; SLOT];
        b[0..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8..16].copy_from_slice(&pos.seq.to_le_bytes());
        b[16..24].copy_from_slice(&pos.offset.to_le_bytes());
        let sum = crc32fast::hash(&b[..24]);
        b[24..28].copy_from_slice(&sum.to_le_bytes());
        let at = (self.generation % 2) * SLOT as u64;
        self.file.write_all_at(&b, at)
    }
}

// ---------------------------------------------------------------------------------------------
// Async handle

/// A [`FileQueue`] shared by an exporter's input loop and its senders: the file I/O runs on
/// the blocking pool, and [`DiskQueue::pop`] waits for a record.
#[derive(Clone)]
pub struct DiskQueue {
    inner: Arc<Mutex<FileQueue>>,
    state: Arc<(Mutex<bool>, Notify)>,
    dir: Arc<Path>,
}

impl DiskQueue {
    pub fn new(q: FileQueue) -> Self {
        DiskQueue {
            dir: q.dir.as_path().into(),
            inner: Arc::new(Mutex::new(q)),
            state: Arc::new((Mutex::new(false), Notify::new())),
        }
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut FileQueue) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut q = inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut q)
        })
        .await
        .unwrap_or_else(|e| {
            Err(QueueError::Io {
                dir: self.dir.to_path_buf(),
                source: io::Error::other(e),
            })
        })
    }

    pub async fn push(&self, payload: Vec<u8>, items: u32) -> Result<Evicted, QueueError> {
        let r = self.with(move |q| q.push(&payload, items)).await;
        // Wake every waiting sender: one takes the record, the others wait again.
        self.state.1.notify_waiters();
        r
    }

    /// The next record; `None` once [`DiskQueue::close`] was called and nothing is left.
    pub async fn pop(&self) -> Result<Option<Popped>, QueueError> {
        loop {
            let notified = self.state.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.with(|q| q.pop()).await? {
                return Ok(Some(p));
            }
            if *self.state.0.lock().unwrap_or_else(|e| e.into_inner()) {
                return Ok(None);
            }
            notified.await;
        }
    }

    pub async fn ack(&self, ticket: u64) -> Result<(), QueueError> {
        self.with(move |q| q.ack(ticket)).await
    }

    /// No more pushes: [`DiskQueue::pop`] returns `None` once the queue is empty.
    pub fn close(&self) {
        *self.state.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.state.1.notify_waiters();
    }

    pub fn unread_items(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unread_items()
    }
}

#[cfg(test)]
mod tests;
