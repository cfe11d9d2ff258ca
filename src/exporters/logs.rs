//! `logs` exporter: log records (and spans) as lines on stdout, stderr or a file, in JSON
//! (`format: json`, the default) or logfmt (`format: logfmt`).
//!
//! One line per log record: `ts` (RFC 3339, UTC), `level`, `event` (the record's event name,
//! e.g. `task.completed`), `msg` (the body), then the record's attributes as top-level keys and
//! `trace_id`/`span_id` when set. Spans, when a traces pipeline names this exporter, become one
//! line each with `event: "span"`, timing and status. In logfmt the same keys come as
//! `key=value` pairs, `ts level event msg` first; a value with spaces, quotes, `=` or control
//! characters is quoted (JSON string escapes), and lists and maps are written as quoted JSON.
//! Rotation is not done here: point `path` at a file managed by logrotate with `copytruncate`,
//! or use stdout under a supervisor. Writes run on tokio's blocking pool.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs};
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, Span};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::component::{BoxRun, ComponentError, Context, Exporter, Input};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, Value};
use crate::otlp::{any_to_json, hex, put_attributes};
use crate::signal::{Signal, SignalKind};
use crate::time::rfc3339_unix_nanos;

pub const REGISTRATION: Registration = Registration {
    type_name: "logs",
    factory: Factory::Exporter {
        accepts: &[SignalKind::Logs, SignalKind::Traces],
        build,
    },
    defaults: crate::component::defaults::<LogsConfig>,
};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs per line (logfmt, as Loki's `| logfmt` and Heroku read it).
    Logfmt,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub format: Format,
    /// `stdout`, `stderr` or a file path (appended to, created if missing).
    pub path: String,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            format: Format::Json,
            path: "stdout".to_string(),
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Exporter> {
    let cfg: LogsConfig = config::decode(v)?;
    if cfg.path.trim().is_empty() {
        return Err(config::DecodeError::new(
            "path",
            "must be stdout, stderr or a file path",
        ));
    }
    Ok(Box::new(LogsExporter { cfg }))
}

pub struct LogsExporter {
    cfg: LogsConfig,
}

impl LogsExporter {
    fn open(&self) -> Result<Box<dyn Write + Send>, ComponentError> {
        Ok(match self.cfg.path.as_str() {
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            p => {
                let path = PathBuf::from(p);
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        ComponentError::Other(format!("cannot open {}: {e}", path.display()))
                    })?;
                Box::new(f)
            }
        })
    }
}

impl Exporter for LogsExporter {
    fn run(self: Box<Self>, ctx: Context, input: Input) -> BoxRun {
        Box::pin(async move {
            let mut out = Some(BufWriter::with_capacity(64 * 1024, self.open()?));
            let format = self.cfg.format;
            let written = ctx.telemetry.counter(
                "celeriac_exporter_sent_items_total",
                "Items an exporter delivered.",
                &[("component", &ctx.id)],
            );
            let failed = ctx.telemetry.counter(
                "celeriac_exporter_failed_items_total",
                "Items an exporter could not deliver.",
                &[("component", &ctx.id)],
            );
            let mut buf = Some(Vec::with_capacity(64 * 1024));
            while let Some(batch) = input.recv().await {
                let (Some(mut w), Some(mut b)) = (out.take(), buf.take()) else {
                    break;
                };
                b.clear();
                let n = match &batch {
                    Signal::Logs(rl) => write_logs(format, &mut b, rl),
                    Signal::Traces(rs) => write_spans(format, &mut b, rs),
                    _ => 0,
                };
                // Writing to a pipe or file can block: on the blocking pool (not block_in_place,
                // which panics on a current-thread runtime).
                let (w, b, res) = tokio::task::spawn_blocking(move || {
                    let res = w.write_all(&b).and_then(|_| w.flush());
                    (w, b, res)
                })
                .await
                .map_err(|e| ComponentError::Other(format!("log writer: {e}")))?;
                (out, buf) = (Some(w), Some(b));
                match res {
                    Ok(()) => written.add(n as u64),
                    Err(e) => {
                        failed.add(n as u64);
                        tracing::warn!(component = %ctx.id, error = %e, "Cannot write log lines.");
                    }
                }
            }
            if let Some(mut w) = out {
                let _ = tokio::task::spawn_blocking(move || w.flush()).await;
            }
            Ok(())
        })
    }
}

/// Append one line per log record in `format`; returns the number of records.
pub fn write_logs(format: Format, buf: &mut Vec<u8>, rl: &[ResourceLogs]) -> usize {
    let mut n = 0;
    for r in rl {
        for s in &r.scope_logs {
            for rec in &s.log_records {
                if write_line(format, buf, &log_line(rec)) {
                    n += 1;
                }
            }
        }
    }
    n
}

fn write_line(format: Format, buf: &mut Vec<u8>, line: &Map<String, Json>) -> bool {
    match format {
        Format::Json => {
            if serde_json::to_writer(&mut *buf, line).is_err() {
                return false;
            }
        }
        Format::Logfmt => logfmt(buf, line),
    }
    buf.push(b'\n');
    true
}

/// `key=value …`: `ts level event msg` first, then the other keys in order.
fn logfmt(buf: &mut Vec<u8>, line: &Map<String, Json>) {
    const FIRST: [&str; 4] = ["ts", "level", "event", "msg"];
    let first = FIRST.iter().filter_map(|k| line.get_key_value(*k));
    let rest = line.iter().filter(|(k, _)| !FIRST.contains(&k.as_str()));
    for (i, (k, v)) in first.chain(rest).enumerate() {
        if i > 0 {
            buf.push(b' ');
        }
        // Keys are attribute names: no spaces, `=` or quotes in logfmt keys.
        buf.extend(k.bytes().map(|c| {
            if c <= b' ' || c == b'=' || c == b'"' {
                b'_'
            } else {
                c
            }
        }));
        buf.push(b'=');
        let text = match v {
            Json::String(s) => s.clone(),
            Json::Null => String::new(),
            Json::Bool(_) | Json::Number(_) => v.to_string(),
            Json::Array(_) | Json::Object(_) => v.to_string(),
        };
        let plain = !text.is_empty()
            && !matches!(v, Json::Array(_) | Json::Object(_))
            && text
                .bytes()
                .all(|c| c > b' ' && c != b'=' && c != b'"' && c != 0x7f);
        if plain {
            buf.extend_from_slice(text.as_bytes());
        } else {
            // A JSON string literal: quoted, with `\"`, `\\` and control characters escaped.
            let _ = serde_json::to_writer(&mut *buf, &text);
        }
    }
}

fn log_line(rec: &LogRecord) -> Map<String, Json> {
    let mut m = Map::new();
    let ts = if rec.time_unix_nano != 0 {
        rec.time_unix_nano
    } else {
        rec.observed_time_unix_nano
    };
    m.insert("ts".into(), Json::String(rfc3339_unix_nanos(ts)));
    let level = if rec.severity_text.is_empty() {
        severity_name(rec.severity_number)
    } else {
        rec.severity_text.to_ascii_lowercase()
    };
    m.insert("level".into(), Json::String(level));
    if !rec.event_name.is_empty() {
        m.insert("event".into(), Json::String(rec.event_name.clone()));
    }
    if let Some(body) = &rec.body {
        m.insert("msg".into(), any_to_json(body));
    }
    put_attributes(&mut m, &rec.attributes, RESERVED);
    if rec.trace_id.iter().any(|b| *b != 0) {
        m.insert("trace_id".into(), Json::String(hex(&rec.trace_id)));
    }
    if rec.span_id.iter().any(|b| *b != 0) {
        m.insert("span_id".into(), Json::String(hex(&rec.span_id)));
    }
    m
}

/// Append one line per span in `format`; returns the number of spans.
pub fn write_spans(format: Format, buf: &mut Vec<u8>, rs: &[ResourceSpans]) -> usize {
    let mut n = 0;
    for r in rs {
        for s in &r.scope_spans {
            for span in &s.spans {
                if write_line(format, buf, &span_line(span)) {
                    n += 1;
                }
            }
        }
    }
    n
}

fn span_line(span: &Span) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert(
        "ts".into(),
        Json::String(rfc3339_unix_nanos(span.start_time_unix_nano)),
    );
    let error = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == status::StatusCode::Error as i32);
    m.insert(
        "level".into(),
        Json::String(if error { "error" } else { "info" }.into()),
    );
    m.insert("event".into(), Json::String("span".into()));
    m.insert("msg".into(), Json::String(span.name.clone()));
    m.insert("trace_id".into(), Json::String(hex(&span.trace_id)));
    m.insert("span_id".into(), Json::String(hex(&span.span_id)));
    if !span.parent_span_id.is_empty() {
        m.insert(
            "parent_span_id".into(),
            Json::String(hex(&span.parent_span_id)),
        );
    }
    let dur = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano);
    m.insert("duration_ms".into(), serde_json::json!(dur as f64 / 1e6));
    if let Some(st) = &span.status {
        if !st.message.is_empty() {
            m.insert("status_message".into(), Json::String(st.message.clone()));
        }
    }
    put_attributes(&mut m, &span.attributes, RESERVED);
    m
}

const RESERVED: &[&str] = &[
    "ts",
    "level",
    "event",
    "msg",
    "trace_id",
    "span_id",
    "parent_span_id",
    "duration_ms",
];

fn severity_name(n: i32) -> String {
    match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "info",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::str_kv as kv;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
    use opentelemetry_proto::tonic::logs::v1::ScopeLogs;

    /// The line's own keys are reserved at the top only: a map inside an attribute keeps them.
    #[test]
    fn nested_maps_keep_every_key() {
        use opentelemetry_proto::tonic::common::v1::KeyValueList;
        let map = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("msg", "inner"), kv("level", "x")],
            })),
        };
        assert_eq!(
            any_to_json(&map).to_string(),
            r#"{"level":"x","msg":"inner"}"#
        );
    }

    #[test]
    fn one_json_line_per_record() {
        let rec = LogRecord {
            time_unix_nano: 1_000_000_000,
            severity_text: "INFO".into(),
            event_name: "task.started".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("started".into())),
            }),
            attributes: vec![kv("celery.task_id", "abc"), kv("level", "spoof")],
            trace_id: vec![1; 16],
            ..Default::default()
        };
        let rl = vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![rec.clone(), rec],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let mut buf = Vec::new();
        assert_eq!(write_logs(Format::Json, &mut buf, &rl), 2);
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let j: Json = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(j["event"], "task.started");
        assert_eq!(j["level"], "info");
        assert_eq!(j["celery.task_id"], "abc");
        assert_eq!(j["ts"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(j["trace_id"], "01010101010101010101010101010101");
    }

    fn record() -> ResourceLogs {
        let rec = LogRecord {
            time_unix_nano: 1_795_606_961_369_700_700,
            severity_text: "ERROR".into(),
            event_name: "task.failed".into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("boom: \"x\" = 1\n".into())),
            }),
            attributes: vec![kv("celery.task_id", "abc"), kv("odd key", "")],
            ..Default::default()
        };
        ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![rec],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn logfmt_lines() {
        let mut buf = Vec::new();
        assert_eq!(write_logs(Format::Logfmt, &mut buf, &[record()]), 1);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "ts=2026-11-25T11:42:41.369700Z level=error event=task.failed msg=\"boom: \\\"x\\\" = 1\\n\" celery.task_id=abc odd_key=\"\"\n"
        );
        let v: Value = serde_yaml_ng::from_str("format: logfmt").unwrap();
        assert!(build(&v).is_ok());
    }

    /// The exporter writes its file from a current-thread runtime too (`block_in_place`
    /// panicked there), in the configured format.
    #[test]
    fn runs_on_a_current_thread_runtime() {
        use crate::component::Input;
        use crate::telemetry::{Counter, Telemetry};
        use tokio_util::sync::CancellationToken;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let v: Value =
            serde_yaml_ng::from_str(&format!("{{format: logfmt, path: {}}}", path.display()))
                .unwrap();
        let exp = build(&v).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = async_channel::bounded(4);
            let ctx = Context {
                id: "exporter/logs".into(),
                shutdown: CancellationToken::new(),
                telemetry: Telemetry::new(),
                ready: Default::default(),
            };
            let run = tokio::spawn(exp.run(ctx, Input::new(rx, Counter::default())));
            for _ in 0..3 {
                tx.send(Signal::Logs(std::sync::Arc::new(vec![record()])).into())
                    .await
                    .unwrap();
            }
            drop(tx);
            run.await.unwrap().unwrap();
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.starts_with("ts=2026-11-25T11:42:41.369700Z level=error "));
    }

    #[test]
    fn rejects_unknown_settings() {
        let v: Value = serde_yaml_ng::from_str("format: xml").unwrap();
        assert_eq!(build(&v).err().unwrap().path, "format");
    }
}
