//! `filelog` receiver: log lines from files as OTLP log records, with the collector's
//! `filelog` settings and stanza `operators`.
//!
//! ```yaml
//! receivers:
//!   filelog:
//!     include: [/var/log/app/*.log]   # globs (`*`, `?`, `[..]`, `**`)
//!     exclude: []
//!     start_at: end                   # end | beginning: where files found on the first poll start
//!     poll_interval: 200ms
//!     include_file_name: true         # attribute log.file.name
//!     include_file_path: false        # attribute log.file.path
//!     max_log_size: 1MiB              # longer lines are cut into pieces (counted)
//!     fingerprint_size: 1kb           # first bytes that identify a file across renames
//!     encoding: utf-8                 # utf-8 | utf-16le | utf-16be | ascii | nop
//!     force_flush_period: 500ms       # an unterminated last line leaves after this without growth
//!     storage_dir: /var/lib/celeriac  # offsets kept here (<dir>/<receiver id>.filelog.json)
//!     operators:                      # stanza operators, run in order (see [`operators`])
//!       - type: json_parser
//!         timestamp: { parse_from: attributes.timestamp, layout: '%Y-%m-%dT%H:%M:%S.%fZ' }
//!         severity: { parse_from: attributes.level }
//! ```
//!
//! Which files, rotation and restarts: [`tail`]. Without `storage_dir` offsets live in memory
//! only (a restart starts again at `start_at`, as the collector does without `storage`). The
//! collector's `storage: <extension id>` is refused with a pointer to `storage_dir` until the
//! `file_storage` extension can hand a directory to receivers.
//!
//! Each record: body = the line; `log.file.name`/`log.file.path`; observed time = when read;
//! then the operators. Parser failures follow `on_error` (default: the entry goes on unchanged)
//! and are counted in `celeriac_filelog_operator_errors_total{operator}` — a line that is not
//! JSON under `json_parser` stays as the body. Offsets are saved after the batch holding their
//! lines was handed downstream, so a crash may repeat the last batch but never skips one; a
//! clean stop repeats nothing.

mod operators;
mod tail;
mod timefmt;

pub use operators::{Entry, Field, Op, OperatorConfig};
pub use tail::{Checkpoint, Encoding, Line, TailSettings, TailStats, Tailer};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::component::{
    BoxRun, BuildResult, ComponentError, Context, Factory, Output, Receiver, Registration,
};
use crate::config::{self, types, DecodeError, Value};
use crate::otlp::{str_kv, unix_nanos};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::Throttle;

pub const REGISTRATION: Registration = Registration {
    type_name: "filelog",
    factory: Factory::Receiver {
        produces: &[SignalKind::Logs],
        build,
    },
    defaults: crate::component::defaults::<FilelogConfig>,
};

/// Records per batch sent downstream.
const BATCH: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

/// A size in bytes, written as a number or with a unit (`1MiB`, `16KiB`, `1kb`, `1mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<u64, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1000,
            "kib" | "ki" => 1024,
            "mb" | "m" => 1_000_000,
            "mib" | "mi" => 1 << 20,
            "gb" | "g" => 1_000_000_000,
            "gib" | "gi" => 1 << 30,
            u => return Err(format!("unknown size unit {u:?} in {s:?}")),
        };
        Ok((n * mult as f64) as u64)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % (1 << 20) == 0 && self.0 > 0 {
            s.serialize_str(&format!("{}MiB", self.0 >> 20))
        } else if self.0 % 1000 == 0 && self.0 > 0 {
            s.serialize_str(&format!("{}kb", self.0 / 1000))
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilelogConfig {
    #[serde(deserialize_with = "globs")]
    pub include: Vec<String>,
    #[serde(deserialize_with = "globs")]
    pub exclude: Vec<String>,
    pub start_at: StartAt,
    #[serde(with = "types::duration")]
    pub poll_interval: Duration,
    pub include_file_name: bool,
    pub include_file_path: bool,
    pub max_log_size: ByteSize,
    pub fingerprint_size: ByteSize,
    pub encoding: Encoding,
    #[serde(with = "types::duration")]
    pub force_flush_period: Duration,
    /// Where offsets are kept across restarts (celeriac's setting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_dir: Option<PathBuf>,
    /// The collector's storage extension id (not wired yet: refused with a hint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    pub operators: Vec<OperatorConfig>,
}

impl Default for FilelogConfig {
    fn default() -> Self {
        FilelogConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            start_at: StartAt::End,
            poll_interval: Duration::from_millis(200),
            include_file_name: true,
            include_file_path: false,
            max_log_size: ByteSize(1 << 20),
            fingerprint_size: ByteSize(1000),
            encoding: Encoding::Utf8,
            force_flush_period: Duration::from_millis(500),
            storage_dir: None,
            storage: None,
            operators: Vec::new(),
        }
    }
}

/// One glob or a list of them (an empty list is allowed here; `include` is checked at start).
fn globs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

fn build(v: &Value) -> BuildResult<dyn Receiver> {
    let cfg: FilelogConfig = config::decode(v)?;
    Ok(Box::new(Filelog::new(cfg)?))
}

pub struct Filelog {
    cfg: FilelogConfig,
    settings: TailSettings,
    ops: Arc<Vec<Op>>,
}

impl Filelog {
    pub fn new(cfg: FilelogConfig) -> Result<Filelog, DecodeError> {
        for (i, p) in cfg.include.iter().enumerate() {
            glob::Pattern::new(p)
                .map_err(|e| DecodeError::new(format!("include[{i}]"), e.to_string()))?;
        }
        let exclude = cfg
            .exclude
            .iter()
            .enumerate()
            .map(|(i, p)| {
                glob::Pattern::new(p)
                    .map_err(|e| DecodeError::new(format!("exclude[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if cfg.poll_interval.is_zero() {
            return Err(DecodeError::new("poll_interval", "must be greater than 0s"));
        }
        if cfg.max_log_size.0 < 16 {
            return Err(DecodeError::new(
                "max_log_size",
                "must be at least 16 bytes",
            ));
        }
        if cfg.max_log_size.0 > 64 << 20 {
            return Err(DecodeError::new("max_log_size", "must be at most 64MiB"));
        }
        if !(16..=1 << 20).contains(&cfg.fingerprint_size.0) {
            return Err(DecodeError::new(
                "fingerprint_size",
                "must be between 16 bytes and 1MiB",
            ));
        }
        if let Some(s) = &cfg.storage {
            return Err(DecodeError::new(
                "storage",
                format!("storage extension {s:?} cannot hold filelog offsets yet; set storage_dir to a directory instead"),
            ));
        }
        let ops = cfg
            .operators
            .iter()
            .enumerate()
            .map(|(i, c)| Op::build(c, i))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = TailSettings {
            include: cfg.include.clone(),
            exclude,
            start_at_end: cfg.start_at == StartAt::End,
            fingerprint_size: cfg.fingerprint_size.0 as usize,
            max_log_size: cfg.max_log_size.0 as usize,
            encoding: cfg.encoding,
            force_flush_period: cfg.force_flush_period,
        };
        Ok(Filelog {
            cfg,
            settings,
            ops: Arc::new(ops),
        })
    }
}

/// A record's body as text, for failure reports.
fn body_text(e: &Entry) -> String {
    e.record
        .body
        .as_ref()
        .and_then(operators::as_text)
        .unwrap_or_default()
}

/// Operator failures of one conversion, by operator.
#[derive(Debug, Default)]
pub struct OpFailures {
    pub by_op: Vec<(&'static str, u64, bool)>,
    pub dropped: u64,
    pub first: Option<String>,
}

impl OpFailures {
    fn note(&mut self, op: &'static str, dropped: bool, quiet: bool, reason: &str, line: &str) {
        match self
            .by_op
            .iter_mut()
            .find(|(o, _, d)| *o == op && *d == dropped)
        {
            Some((_, n, _)) => *n += 1,
            None => self.by_op.push((op, 1, dropped)),
        }
        self.dropped += u64::from(dropped);
        if !quiet && self.first.is_none() {
            let sample: String = line.chars().take(120).collect();
            self.first = Some(format!("{op}: {reason} (line: {sample:?})"));
        }
    }
}

/// Lines → records through the operators, grouped by resource, in batches of [`BATCH`].
pub fn to_logs(
    lines: Vec<Line>,
    ops: &[Op],
    include_name: bool,
    include_path: bool,
    fails: &mut OpFailures,
) -> Vec<ResourceLogs> {
    let observed = unix_nanos();
    let mut out: Vec<ResourceLogs> = Vec::new();
    let mut count = 0usize;
    'lines: for line in lines {
        let mut attributes = Vec::with_capacity(2);
        if include_name {
            if let Some(n) = line.path.file_name() {
                attributes.push(str_kv("log.file.name", n.to_string_lossy().into_owned()));
            }
        }
        if include_path {
            attributes.push(str_kv(
                "log.file.path",
                line.path.to_string_lossy().into_owned(),
            ));
        }
        let mut e = Entry {
            record: LogRecord {
                observed_time_unix_nano: observed,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(line.text)),
                }),
                attributes,
                ..Default::default()
            },
            resource: Vec::new(),
        };
        for op in ops {
            match op.apply(&mut e) {
                Ok(()) => {}
                Err(operators::OpError::Sent { op, reason, quiet }) => {
                    let body = body_text(&e);
                    fails.note(op, false, quiet, &reason, &body);
                }
                Err(operators::OpError::Dropped { op, reason, quiet }) => {
                    let body = body_text(&e);
                    fails.note(op, true, quiet, &reason, &body);
                    continue 'lines;
                }
            }
        }
        let start_new = match out.last() {
            None => true,
            Some(last) => {
                count >= BATCH || last.resource.as_ref().map(|r| &r.attributes) != Some(&e.resource)
            }
        };
        if start_new {
            count = 0;
            out.push(ResourceLogs {
                resource: Some(crate::otlp::resource(e.resource)),
                scope_logs: vec![ScopeLogs::default()],
                ..Default::default()
            });
        }
        if let Some(last) = out.last_mut() {
            last.scope_logs[0].log_records.push(e.record);
            count += 1;
        }
    }
    out
}

/// Where this receiver's offsets are saved.
fn checkpoint_path(dir: &std::path::Path, id: &str) -> PathBuf {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.filelog.json"))
}

fn load_checkpoint(path: &std::path::Path) -> Result<Option<Checkpoint>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn save_checkpoint(path: &std::path::Path, c: &Checkpoint) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec(c).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

impl Receiver for Filelog {
    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            // Checked here, not at build, so the printed defaults (no files) still build.
            if self.cfg.include.is_empty() {
                return Err(ComponentError::Other(format!(
                    "{}: include names no files",
                    ctx.id
                )));
            }
            let label = [("component", &*ctx.id)];
            let t = &ctx.telemetry;
            let lines_c = t.counter(
                "celeriac_filelog_lines_total",
                "Lines read from files.",
                &label,
            );
            let truncated_c = t.counter(
                "celeriac_filelog_lines_truncated_total",
                "Lines longer than max_log_size, cut into pieces.",
                &label,
            );
            let invalid_c = t.counter(
                "celeriac_filelog_invalid_encoding_total",
                "Lines with bytes invalid in the encoding (kept, with U+FFFD).",
                &label,
            );
            let errors_c = t.counter(
                "celeriac_filelog_read_errors_total",
                "Files that could not be opened, read or examined.",
                &label,
            );
            let files_c = t.counter(
                "celeriac_filelog_files_opened_total",
                "Files first seen.",
                &label,
            );
            let dropped_c = t.counter(
                "celeriac_filelog_records_dropped_total",
                "Records dropped by an operator's on_error: drop.",
                &label,
            );
            let ckpt_fail_c = t.counter(
                "celeriac_filelog_checkpoint_errors_total",
                "Offsets that could not be saved to storage_dir.",
                &label,
            );
            let ckpt_path = self
                .cfg
                .storage_dir
                .as_ref()
                .map(|d| checkpoint_path(d, &ctx.id));
            let saved = match &ckpt_path {
                Some(p) => {
                    if let Some(dir) = p.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            ComponentError::Other(format!("storage_dir {}: {e}", dir.display()))
                        })?;
                    }
                    match load_checkpoint(p) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(component = %ctx.id, error = %e, "Saved filelog offsets are unreadable; starting at start_at.");
                            None
                        }
                    }
                }
                None => None,
            };
            let mut tailer = Some(Tailer::new(self.settings.clone(), saved));
            let mut last = TailStats::default();
            let mut warn_read = Throttle::new(Duration::from_secs(10));
            let mut warn_ops = Throttle::new(Duration::from_secs(10));
            let mut warn_lines = Throttle::new(Duration::from_secs(10));
            let mut warn_ckpt = Throttle::new(Duration::from_secs(10));
            let op_counters = |op: &str| {
                t.counter(
                    "celeriac_filelog_operator_errors_total",
                    "Entries an operator could not process (sent on unchanged or dropped, per on_error).",
                    &[("component", &*ctx.id), ("operator", op)],
                )
            };
            loop {
                let Some(mut tl) = tailer.take() else { break };
                let ops = self.ops.clone();
                let (name, path) = (self.cfg.include_file_name, self.cfg.include_file_path);
                let polled = tokio::task::spawn_blocking(move || {
                    let (lines, more) = tl.poll(Instant::now());
                    let mut fails = OpFailures::default();
                    let logs = to_logs(lines, &ops, name, path, &mut fails);
                    (tl, logs, more, fails)
                })
                .await;
                let (tl, logs, more, fails) = match polled {
                    Ok(x) => x,
                    Err(e) => {
                        return Err(ComponentError::Other(format!("file reader failed: {e}")))
                    }
                };
                let s = tl.stats;
                lines_c.add(s.lines - last.lines);
                truncated_c.add(s.truncated - last.truncated);
                invalid_c.add(s.invalid_encoding - last.invalid_encoding);
                errors_c.add(s.read_errors - last.read_errors);
                files_c.add(s.files_opened - last.files_opened);
                let odd =
                    (s.truncated - last.truncated) + (s.invalid_encoding - last.invalid_encoding);
                if odd > 0 {
                    if let Some(held) = warn_lines.ready_for(odd) {
                        tracing::warn!(component = %ctx.id, truncated = s.truncated - last.truncated, invalid_encoding = s.invalid_encoding - last.invalid_encoding, earlier = held, "Lines longer than max_log_size were cut, or held bytes invalid in the encoding (replaced); they are sent as read.");
                    }
                }
                for e in &tl.errors {
                    if let Some(held) = warn_read.ready() {
                        tracing::warn!(component = %ctx.id, error = %e, earlier = held, "Reading a log file failed; the others go on.");
                    }
                }
                last = s;
                for (op, n, _) in &fails.by_op {
                    op_counters(op).add(*n);
                }
                dropped_c.add(fails.dropped);
                if let Some(first) = &fails.first {
                    let n: u64 = fails.by_op.iter().map(|(_, n, _)| n).sum();
                    if let Some(held) = warn_ops.ready_for(n) {
                        tracing::warn!(component = %ctx.id, entries = n, earlier = held, first = %first, "Operators could not process some entries; see on_error.");
                    }
                }
                let mut delivered = true;
                for batch in logs {
                    tokio::select! {
                        biased;
                        r = out.send(Signal::Logs(Arc::new(vec![batch]))) => {
                            if r.is_err() { delivered = false; break; }
                        }
                        _ = ctx.shutdown.cancelled() => { delivered = false; break; }
                    }
                }
                if !delivered {
                    // Offsets stay where the last delivered batch left them: lines read now
                    // are read again after a restart.
                    break;
                }
                if let Some(p) = &ckpt_path {
                    if let Err(e) = save_checkpoint(p, &tl.checkpoint()) {
                        ckpt_fail_c.inc();
                        if let Some(held) = warn_ckpt.ready() {
                            tracing::warn!(component = %ctx.id, path = %p.display(), error = %e, earlier = held, "Cannot save filelog offsets; a restart may read lines again.");
                        }
                    }
                }
                tailer = Some(tl);
                if !more {
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("1MiB"), Ok(1 << 20));
        assert_eq!(ByteSize::parse("1kb"), Ok(1000));
        assert_eq!(ByteSize::parse("16KiB"), Ok(16384));
        assert_eq!(ByteSize::parse("512"), Ok(512));
        assert!(ByteSize::parse("1 parsec").is_err());
    }

    #[test]
    fn collector_config_decodes() {
        let v: Value = serde_yaml_ng::from_str(
            r#"
include: [ /var/log/app/*.log ]
exclude: /var/log/app/skip.log
start_at: beginning
poll_interval: 100ms
include_file_path: true
max_log_size: 2MiB
encoding: utf-16le
storage_dir: /tmp/x
operators:
  - type: json_parser
    id: parse
    timestamp: { parse_from: attributes.timestamp, layout_type: gotime, layout: '2006-01-02T15:04:05Z07:00' }
    severity: { parse_from: attributes.level }
  - { type: move, from: attributes.event, to: body }
"#,
        )
        .unwrap();
        let f = Filelog::new(config::decode(&v).unwrap()).unwrap();
        assert_eq!(f.settings.max_log_size, 2 << 20);
        assert_eq!(f.ops.len(), 2);
        let v: Value = serde_yaml_ng::from_str("{include: [x], storage: file_storage}").unwrap();
        let e = Filelog::new(config::decode(&v).unwrap()).err().unwrap();
        assert!(e.to_string().contains("storage_dir"), "{e}");
        let v: Value = serde_yaml_ng::from_str("{include: ['[']}").unwrap();
        assert!(Filelog::new(config::decode(&v).unwrap()).is_err());
    }

    #[test]
    fn non_json_lines_kept_and_counted() {
        let c: OperatorConfig = serde_yaml_ng::from_str("type: json_parser").unwrap();
        let ops = vec![Op::build(&c, 0).unwrap()];
        let path: Arc<std::path::Path> = std::path::PathBuf::from("/x/app.log").into();
        let lines = ["{\"a\":1}", "not json", "{\"task_id\":\"t\"}"]
            .iter()
            .map(|s| Line {
                text: s.to_string(),
                path: path.clone(),
            })
            .collect();
        let mut fails = OpFailures::default();
        let out = to_logs(lines, &ops, true, false, &mut fails);
        let recs = &out[0].scope_logs[0].log_records;
        assert_eq!(recs.len(), 3);
        assert_eq!(fails.by_op, vec![("json_parser", 1, false)]);
        assert!(fails.first.as_deref().unwrap().contains("not json"));
        assert_eq!(recs[0].attributes[0].key, "log.file.name");
        assert_eq!(
            recs[1]
                .body
                .as_ref()
                .and_then(operators::as_text)
                .as_deref(),
            Some("not json")
        );
    }
}
