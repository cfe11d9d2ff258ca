//! Following files: which files to read, from where, and what was read — the `filelog`
//! receiver's equivalent of the collector's stanza `fileconsumer`.
//!
//! A file is known by its fingerprint, the first `fingerprint_size` bytes, not by its path: a
//! renamed file (rotation by rename) keeps its fingerprint and is read on from its offset under
//! its new name; a file whose first bytes changed at the same path (copytruncate, or a new file
//! after rename) is a new file, read from its start. A reader keeps its file open between polls,
//! so a file renamed out of `include` or deleted is still read to its end (then dropped, the
//! rest of a last unterminated line included). Files that were known when the agent stopped are
//! found again by fingerprint and read on from the saved offset ([`Checkpoint`]); files never
//! seen start at `start_at` on the first poll and at their beginning afterwards (also on the
//! first poll after a restart with saved state, so lines written while the agent was down are
//! not skipped — stanza applies `start_at` there again).
//!
//! Lines end at `\n` (`\r\n` is trimmed). A line longer than `max_log_size` is cut into pieces
//! of at most that size (counted). An unterminated last line waits for its newline, and leaves
//! alone after `force_flush_period` without growth. Memory per poll is bounded by
//! [`READ_BUDGET`]; a poll that hits it is followed at once by another.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Bytes read per poll (all files) before the poll returns what it has.
pub const READ_BUDGET: usize = 8 << 20;
/// Polls an unmatched file is remembered for (a file briefly missing from the glob is not
/// re-read from the start when it returns).
const REMEMBER_POLLS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "utf-16le", alias = "utf16le")]
    Utf16le,
    #[serde(rename = "utf-16be", alias = "utf16be")]
    Utf16be,
    #[serde(rename = "ascii")]
    Ascii,
    /// Bytes as Latin-1 (each byte one character); the collector's `nop` keeps bytes.
    #[serde(rename = "nop", alias = "latin1", alias = "iso-8859-1")]
    Nop,
}

#[derive(Debug, Clone)]
pub struct TailSettings {
    pub include: Vec<String>,
    pub exclude: Vec<glob::Pattern>,
    pub start_at_end: bool,
    pub fingerprint_size: usize,
    pub max_log_size: usize,
    pub encoding: Encoding,
    pub force_flush_period: Duration,
}

/// One line read, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub path: std::sync::Arc<Path>,
}

/// What went wrong reading, for counters and warnings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TailStats {
    pub lines: u64,
    /// Lines cut at `max_log_size`.
    pub truncated: u64,
    /// Lines with bytes invalid in the encoding (replaced by U+FFFD).
    pub invalid_encoding: u64,
    /// Open/read/stat failures.
    pub read_errors: u64,
    /// Files that shrank under their reader (copytruncate seen on the same handle).
    pub truncated_files: u64,
    /// Files first seen.
    pub files_opened: u64,
}

struct Reader {
    fp: Vec<u8>,
    offset: u64,
    path: std::sync::Arc<Path>,
    file: Option<File>,
    /// Polls since this reader's file was last matched.
    missed: u32,
    /// End of file and when an unterminated last line was first seen there.
    partial_since: Option<(u64, Instant)>,
}

/// Saved state: enough to find each known file again and read on without loss or repetition.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    pub version: u32,
    pub files: Vec<SavedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedFile {
    /// Fingerprint, hex.
    pub fingerprint: String,
    pub offset: u64,
    pub path: String,
}

pub struct Tailer {
    s: TailSettings,
    readers: Vec<Reader>,
    first_poll: bool,
    pub stats: TailStats,
    /// Errors of the last poll, for the caller to warn about.
    pub errors: Vec<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn read_prefix(f: &mut File, n: usize) -> std::io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

impl Tailer {
    pub fn new(s: TailSettings, saved: Option<Checkpoint>) -> Tailer {
        let readers: Vec<Reader> = saved
            .map(|c| c.files)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| {
                Some(Reader {
                    fp: unhex(&f.fingerprint).filter(|fp| !fp.is_empty())?,
                    offset: f.offset,
                    path: PathBuf::from(f.path).into(),
                    file: None,
                    missed: 0,
                    partial_since: None,
                })
            })
            .collect();
        Tailer {
            s,
            // With saved state this is a restart: files new since then are read from their
            // start whatever start_at says, so nothing written while the agent was down is lost.
            first_poll: readers.is_empty(),
            readers,
            stats: TailStats::default(),
            errors: Vec::new(),
        }
    }

    /// What to save now so a restart reads on exactly after what was returned so far.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            version: 1,
            files: self
                .readers
                .iter()
                .map(|r| SavedFile {
                    fingerprint: hex(&r.fp),
                    offset: r.offset,
                    path: r.path.to_string_lossy().into_owned(),
                })
                .collect(),
        }
    }

    /// Files matching `include` and not `exclude`, sorted, without duplicates.
    fn matching(&mut self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for pat in &self.s.include {
            let paths = match glob::glob(pat) {
                Ok(p) => p,
                Err(e) => {
                    self.errors.push(format!("include pattern {pat:?}: {e}"));
                    continue;
                }
            };
            for p in paths.flatten() {
                if self.s.exclude.iter().any(|x| x.matches_path(&p)) || !p.is_file() {
                    continue;
                }
                if seen.insert(p.clone()) {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// One poll: find files, read what is new in each up to the budget. Returns the lines and
    /// whether the budget stopped it (poll again at once).
    pub fn poll(&mut self, now: Instant) -> (Vec<Line>, bool) {
        self.errors.clear();
        let mut lines = Vec::new();
        let mut budget = READ_BUDGET;
        let paths = self.matching();
        let mut matched = vec![false; self.readers.len()];
        let mut order: Vec<usize> = Vec::new();
        for path in paths {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    self.stats.read_errors += 1;
                    self.errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let fp = match read_prefix(&mut f, self.s.fingerprint_size) {
                Ok(fp) => fp,
                Err(e) => {
                    self.stats.read_errors += 1;
                    self.errors.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if fp.is_empty() {
                continue;
            }
            // The reader whose fingerprint this file starts with: the same path first, then
            // the longest fingerprint.
            let found = self
                .readers
                .iter()
                .enumerate()
                .filter(|(i, r)| !matched[*i] && fp.starts_with(&r.fp))
                .max_by_key(|(_, r)| (*r.path == *path, r.fp.len()))
                .map(|(i, _)| i);
            let i = match found {
                Some(i) => {
                    let r = &mut self.readers[i];
                    r.fp = fp;
                    r.path = path.into();
                    r.file = Some(f);
                    r.missed = 0;
                    i
                }
                None => {
                    let offset = if self.first_poll && self.s.start_at_end {
                        f.metadata().map(|m| m.len()).unwrap_or(0)
                    } else {
                        0
                    };
                    self.stats.files_opened += 1;
                    self.readers.push(Reader {
                        fp,
                        offset,
                        path: path.into(),
                        file: Some(f),
                        missed: 0,
                        partial_since: None,
                    });
                    matched.push(false);
                    self.readers.len() - 1
                }
            };
            matched[i] = true;
            order.push(i);
        }
        self.first_poll = false;
        // Files gone from the glob (renamed away, deleted) are read to their end first: their
        // lines come before those of the file that replaced them.
        let mut more = false;
        for (r, _) in self.readers.iter_mut().zip(&matched).filter(|(_, m)| !**m) {
            r.missed += 1;
            if r.file.is_some() {
                let unfinished = read_reader(
                    &self.s,
                    r,
                    &mut lines,
                    &mut budget,
                    &mut self.stats,
                    &mut self.errors,
                    now,
                    true,
                );
                more |= unfinished;
                if !unfinished {
                    r.file = None;
                }
            }
        }
        for i in order {
            more |= read_reader(
                &self.s,
                &mut self.readers[i],
                &mut lines,
                &mut budget,
                &mut self.stats,
                &mut self.errors,
                now,
                false,
            );
        }
        self.readers
            .retain(|r| r.file.is_some() || r.missed <= REMEMBER_POLLS);
        (lines, more)
    }
}

/// Read `r` from its offset to EOF (or until the budget runs out → true). `gone`: the file left
/// the glob, so an unterminated last line is flushed too.
#[allow(clippy::too_many_arguments)]
fn read_reader(
    s: &TailSettings,
    r: &mut Reader,
    lines: &mut Vec<Line>,
    budget: &mut usize,
    stats: &mut TailStats,
    errors: &mut Vec<String>,
    now: Instant,
    gone: bool,
) -> bool {
    let Some(f) = r.file.as_mut() else {
        return false;
    };
    let len = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            stats.read_errors += 1;
            errors.push(format!("{}: {e}", r.path.display()));
            return false;
        }
    };
    if len < r.offset {
        stats.truncated_files += 1;
        if gone {
            // copytruncate without the copy in the glob: the content now at this inode is
            // read by the new reader of its path.
            return false;
        }
        errors.push(format!(
            "{}: file shrank from {} to {len} bytes under its reader (truncated); reading from the start",
            r.path.display(),
            r.offset
        ));
        r.offset = 0;
        r.partial_since = None;
    }
    if len == r.offset {
        return false;
    }
    let want = ((len - r.offset) as usize).min(*budget);
    let mut buf = vec![0u8; want];
    let got = match f
        .seek(SeekFrom::Start(r.offset))
        .and_then(|_| read_full(f, &mut buf))
    {
        Ok(n) => n,
        Err(e) => {
            stats.read_errors += 1;
            errors.push(format!("{}: {e}", r.path.display()));
            return false;
        }
    };
    buf.truncate(got);
    *budget -= got;
    let hit_budget = *budget == 0 && r.offset + (got as u64) < len;
    let nl = newline(s.encoding);
    let mut pos = 0usize;
    loop {
        let rest = &buf[pos..];
        match find_newline(rest, &nl) {
            Some(i) if i <= s.max_log_size => {
                emit(s, &rest[..i], &r.path, lines, stats, false);
                pos += i + nl.len();
            }
            _ if rest.len() > s.max_log_size => {
                // Too long: a piece of exactly max_log_size (aligned to the code unit).
                let cut = s.max_log_size - s.max_log_size % nl.len();
                emit(s, &rest[..cut.max(nl.len())], &r.path, lines, stats, true);
                pos += cut.max(nl.len());
            }
            _ => break,
        }
    }
    r.offset += pos as u64;
    let tail = got - pos;
    if tail > 0 && !hit_budget {
        let eof = r.offset + tail as u64;
        let flush = gone
            || match r.partial_since {
                Some((at, since)) if at == eof => now.duration_since(since) >= s.force_flush_period,
                _ => {
                    r.partial_since = Some((eof, now));
                    false
                }
            };
        if flush {
            emit(s, &buf[pos..], &r.path, lines, stats, false);
            r.offset = eof;
            r.partial_since = None;
        }
    } else {
        r.partial_since = None;
    }
    hit_budget
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn newline(e: Encoding) -> Vec<u8> {
    match e {
        Encoding::Utf16le => vec![b'\n', 0],
        Encoding::Utf16be => vec![0, b'\n'],
        _ => vec![b'\n'],
    }
}

fn find_newline(b: &[u8], nl: &[u8]) -> Option<usize> {
    if nl.len() == 1 {
        return memchr::memchr(nl[0], b);
    }
    b.chunks_exact(2).position(|c| c == nl).map(|i| i * 2)
}

fn emit(
    s: &TailSettings,
    raw: &[u8],
    path: &std::sync::Arc<Path>,
    lines: &mut Vec<Line>,
    stats: &mut TailStats,
    truncated: bool,
) {
    let (text, bad) = decode(s.encoding, raw);
    stats.lines += 1;
    stats.truncated += u64::from(truncated);
    stats.invalid_encoding += u64::from(bad);
    lines.push(Line {
        text,
        path: path.clone(),
    });
}

/// Bytes of one line → text, and whether some were invalid.
pub fn decode(e: Encoding, raw: &[u8]) -> (String, bool) {
    match e {
        Encoding::Utf8 | Encoding::Ascii => {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            match std::str::from_utf8(raw) {
                Ok(t) => (t.to_string(), e == Encoding::Ascii && !t.is_ascii()),
                Err(_) => (String::from_utf8_lossy(raw).into_owned(), true),
            }
        }
        Encoding::Nop => {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            (raw.iter().map(|b| *b as char).collect(), false)
        }
        Encoding::Utf16le | Encoding::Utf16be => {
            let units: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| {
                    if e == Encoding::Utf16le {
                        u16::from_le_bytes([c[0], c[1]])
                    } else {
                        u16::from_be_bytes([c[0], c[1]])
                    }
                })
                .collect();
            let units = units.strip_suffix(&[13]).unwrap_or(&units);
            let mut bad = raw.len() % 2 != 0;
            let text = char::decode_utf16(units.iter().copied())
                .map(|c| {
                    c.unwrap_or_else(|_| {
                        bad = true;
                        char::REPLACEMENT_CHARACTER
                    })
                })
                .collect();
            (text, bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn settings(dir: &Path, pattern: &str) -> TailSettings {
        TailSettings {
            include: vec![dir.join(pattern).to_string_lossy().into_owned()],
            exclude: Vec::new(),
            start_at_end: false,
            fingerprint_size: 1000,
            max_log_size: 1 << 20,
            encoding: Encoding::Utf8,
            force_flush_period: Duration::from_millis(500),
        }
    }

    fn append(p: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn texts(t: &mut Tailer) -> Vec<String> {
        t.poll(Instant::now())
            .0
            .into_iter()
            .map(|l| l.text)
            .collect()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("celeriac-tail-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn rename_rotation_loses_and_repeats_nothing() {
        let d = tmp("rename");
        let log = d.join("app.log");
        let mut t = Tailer::new(settings(&d, "app.log"), None);
        append(&log, "a1\na2\n");
        assert_eq!(texts(&mut t), ["a1", "a2"]);
        append(&log, "a3\n");
        std::fs::rename(&log, d.join("app.log.1")).unwrap();
        append(&log, "b1\n");
        assert_eq!(texts(&mut t), ["a3", "b1"]);
        append(&log, "b2\n");
        assert_eq!(texts(&mut t), ["b2"]);
    }

    #[test]
    fn copytruncate_with_the_copy_in_the_glob() {
        let d = tmp("copytruncate");
        let log = d.join("app.log");
        let mut t = Tailer::new(settings(&d, "app.log*"), None);
        append(&log, "a1\n");
        assert_eq!(texts(&mut t), ["a1"]);
        append(&log, "a2\n");
        std::fs::copy(&log, d.join("app.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&log)
            .unwrap();
        append(&log, "b1\n");
        let mut got = texts(&mut t);
        got.sort();
        assert_eq!(got, ["a2", "b1"]);
        assert!(texts(&mut t).is_empty());
    }

    #[test]
    fn restart_reads_on_from_the_checkpoint() {
        let d = tmp("restart");
        let log = d.join("app.log");
        append(&log, "old\n");
        let mut s = settings(&d, "app.log*");
        s.start_at_end = true;
        let mut t = Tailer::new(s.clone(), None);
        assert!(texts(&mut t).is_empty(), "start_at: end");
        append(&log, "a1\n");
        assert_eq!(texts(&mut t), ["a1"]);
        let saved = t.checkpoint();
        drop(t);
        // While the agent is down: more lines, and a rotation.
        append(&log, "a2\n");
        std::fs::rename(&log, d.join("app.log.1")).unwrap();
        append(&log, "b1\n");
        let json = serde_json::to_string(&saved).unwrap();
        let mut t = Tailer::new(s, Some(serde_json::from_str(&json).unwrap()));
        let mut got = texts(&mut t);
        got.sort();
        assert_eq!(
            got,
            ["a2", "b1"],
            "a new file after a restart is read from its start"
        );
    }

    #[test]
    fn long_lines_are_cut_and_partial_lines_wait() {
        let d = tmp("long");
        let log = d.join("app.log");
        let mut s = settings(&d, "app.log");
        s.max_log_size = 4;
        s.force_flush_period = Duration::from_millis(0);
        let mut t = Tailer::new(s, None);
        append(&log, "abcdefghij\nxy");
        let now = Instant::now();
        let got: Vec<_> = t.poll(now).0.into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["abcd", "efgh", "ij"]);
        assert_eq!(t.stats.truncated, 2);
        // The unterminated "xy" leaves on the next poll without growth.
        let got: Vec<_> = t.poll(now).0.into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["xy"]);
    }

    #[test]
    fn binary_junk_is_decoded_lossily_and_counted() {
        let d = tmp("junk");
        let log = d.join("app.log");
        std::fs::write(&log, b"ok\n\xff\xfe\x00junk\nok2\r\n").unwrap();
        let mut t = Tailer::new(settings(&d, "app.log"), None);
        let got = texts(&mut t);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], "ok2");
        assert_eq!(t.stats.invalid_encoding, 1);
    }

    #[test]
    fn deleted_while_read_is_read_to_its_end() {
        let d = tmp("deleted");
        let log = d.join("app.log");
        append(&log, "a1\n");
        let mut t = Tailer::new(settings(&d, "app.log"), None);
        assert_eq!(texts(&mut t), ["a1"]);
        append(&log, "a2\nlast-unterminated");
        std::fs::remove_file(&log).unwrap();
        assert_eq!(texts(&mut t), ["a2", "last-unterminated"]);
        assert!(texts(&mut t).is_empty());
    }

    #[test]
    fn utf16() {
        let (t, bad) = decode(Encoding::Utf16le, &[b'h', 0, b'i', 0, 13, 0]);
        assert_eq!((t.as_str(), bad), ("hi", false));
        let d = tmp("utf16");
        let log = d.join("app.log");
        std::fs::write(&log, [b'a', 0, b'\n', 0, b'b', 0, b'\n', 0]).unwrap();
        let mut s = settings(&d, "app.log");
        s.encoding = Encoding::Utf16le;
        let mut t = Tailer::new(s, None);
        assert_eq!(texts(&mut t), ["a", "b"]);
    }
}
