//! Task attempts as OTLP spans: the traces half of `celery_correlate`.
//!
//! This module owns the span shape and the id mapping; the record it reads is [`Task`]/[`Attempt`]
//! (see [`super::tasks`]) and the correlator decides *when* an attempt ends. Per attempt, when
//! it ends (`task-succeeded`, `task-failed`, `task-retried`, `task-revoked`, `task-rejected`, or
//! `task_ttl` without an end: `LOST`), three spans go out, all timed by the events' own
//! timestamps:
//!
//! * the attempt span, named after the task (`shop.charge_card`), kind INTERNAL, from the first
//!   of sent/received/started to the end event, with every attribute below;
//! * `queue` (INTERNAL): sent (else received) → started, when the attempt started;
//! * `run` (CONSUMER, messaging `process`): started → end, when the attempt started (or, for a
//!   `task-succeeded` whose `task-started` was missed, end − `runtime`).
//!
//! Attributes: `messaging.system=celery`, `messaging.operation.name`/`.type=process`,
//! `messaging.destination.name` (queue), `messaging.message.id` (task id), `celery.task_name`,
//! `celery.task_id`, `celery.hostname`, `celery.queue`, `celery.retries` (attempt number),
//! `celery.state` (`SUCCESS`, `FAILURE`, `RETRY`, `REVOKED`, `REJECTED`, `LOST`), plus
//! `celery.runtime` on success, `error.type` on failure, `celery.terminated`/`celery.expired`/
//! `celery.signum` on revoke, `celery.requeue` on reject. Failures and LOST set status ERROR; a
//! failure adds an `exception` event (`exception.type`, `exception.message`,
//! `exception.stacktrace`). A retried attempt gets a `retry` event; the next attempt links to it.
//!
//! # Ids (written down in the README, "Trace ids", so agents agree)
//! * trace id = the 16 bytes of the `root_id` UUID (the task's own id when it has no root);
//!   an id that is not a UUID maps to the first 16 bytes of SHA-256(`"celeriac:" + id`).
//! * span id = the first 8 bytes of SHA-256(`"<task id>/<attempt>/<phase>"`), UTF-8, with
//!   phase `task`, `queue` or `run` and attempt the decimal `retries` of the message (0 first).
//! * parent of an attempt span = the `task` span of the `parent_id` task's attempt current when
//!   the child was first seen (attempt 0 if unknown); `parent_id` equal to the task's own id (as
//!   retried messages carry) is ignored.

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use ring::digest::{digest, SHA256};

use super::tasks::{Attempt, Task};
use crate::otlp::{self, bool_kv as b, int_kv as i, kv, str_kv as s};

/// Which span of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Task,
    Queue,
    Run,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Task => "task",
            Phase::Queue => "queue",
            Phase::Run => "run",
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Retry,
    Revoked,
    Rejected,
    Lost,
}

impl Outcome {
    pub fn state(self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Failure => "FAILURE",
            Outcome::Retry => "RETRY",
            Outcome::Revoked => "REVOKED",
            Outcome::Rejected => "REJECTED",
            Outcome::Lost => "LOST",
        }
    }
}

/// The end event's details (borrowed from it).
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    pub outcome: Outcome,
    pub ts: f64,
    pub exception: Option<&'a str>,
    pub traceback: Option<&'a str>,
    pub runtime: Option<f64>,
    pub terminated: Option<bool>,
    pub expired: Option<bool>,
    pub signum: Option<&'a str>,
    pub requeue: Option<bool>,
}

impl<'a> End<'a> {
    pub fn new(outcome: Outcome, ts: f64) -> End<'a> {
        End {
            outcome,
            ts,
            exception: None,
            traceback: None,
            runtime: None,
            terminated: None,
            expired: None,
            signum: None,
            requeue: None,
        }
    }
}

/// `8f3c…-…` (36 chars, or 32 hex digits) → its 16 bytes.
pub fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut hi: Option<u8> = None;
    for c in s.trim().bytes() {
        if c == b'-' {
            continue;
        }
        let v = (c as char).to_digit(16)? as u8;
        match hi.take() {
            None => hi = Some(v),
            Some(h) => {
                *out.get_mut(n)? = (h << 4) | v;
                n += 1;
            }
        }
    }
    (n == 16 && hi.is_none()).then_some(out)
}

/// The trace id of a canvas whose root task is `root` (see the module docs).
pub fn trace_id(root: &str) -> [u8; 16] {
    let mut id = uuid_bytes(root).unwrap_or_else(|| {
        let d = digest(&SHA256, format!("celeriac:{root}").as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&d.as_ref()[..16]);
        b
    });
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

/// The span id of `phase` of attempt `attempt` of task `task_id` (see the module docs).
pub fn span_id(task_id: &str, attempt: u32, phase: Phase) -> [u8; 8] {
    let d = digest(
        &SHA256,
        format!("{task_id}/{attempt}/{}", phase.as_str()).as_bytes(),
    );
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    if b == [0; 8] {
        b[7] = 1;
    }
    b
}

fn ns(ts: f64) -> u64 {
    if ts.is_finite() && ts > 0.0 {
        (ts * 1e9).round() as u64
    } else {
        0
    }
}

/// Append the spans of one ended attempt of `task_id` to `out`.
pub fn attempt_spans(
    task_id: &str,
    task: &Task,
    a: &Attempt,
    end: &End<'_>,
    default_queue: &str,
    out: &mut Vec<Span>,
) {
    let trace = task.trace_id.unwrap_or_else(|| trace_id(task_id)).to_vec();
    let name = task.name.as_deref().unwrap_or("unknown");
    let queue = task.queue.as_deref().unwrap_or(default_queue);
    let host = task.hostname.as_deref().unwrap_or("");
    let end_ts = end.ts;
    // The run started at task-started, else (success) end − runtime.
    let started = a.started_ts.or_else(|| {
        end.runtime
            .filter(|r| r.is_finite() && *r >= 0.0)
            .map(|r| end_ts - r)
    });
    let queued = a.queued_ts();
    let start_ts = [queued, started, Some(end_ts)]
        .into_iter()
        .flatten()
        .fold(f64::INFINITY, f64::min);
    let (start, end_ns) = (ns(start_ts), ns(end_ts).max(ns(start_ts)));

    let task_span = span_id(task_id, a.n, Phase::Task).to_vec();
    let messaging = |attrs: &mut Vec<KeyValue>| {
        attrs.push(s("messaging.system", "celery"));
        attrs.push(s("messaging.operation.name", "process"));
        attrs.push(s("messaging.operation.type", "process"));
        attrs.push(s("messaging.destination.name", queue));
        attrs.push(s("messaging.message.id", task_id));
    };
    let mut attrs = Vec::with_capacity(16);
    messaging(&mut attrs);
    attrs.push(s("celery.task_name", name));
    attrs.push(s("celery.task_id", task_id));
    if !host.is_empty() {
        attrs.push(s("celery.hostname", host));
    }
    attrs.push(s("celery.queue", queue));
    attrs.push(i("celery.retries", i64::from(a.n)));
    attrs.push(s("celery.state", end.outcome.state()));

    let mut events = Vec::new();
    let mut status = None;
    let exc = end.exception.map(super::logs::split_exception);
    let exc_attrs = |attrs: &mut Vec<KeyValue>| {
        if let Some((class, msg)) = exc {
            attrs.push(s("exception.type", class));
            attrs.push(s("exception.message", msg));
        }
        if let Some(tb) = end.traceback {
            attrs.push(s("exception.stacktrace", tb));
        }
    };
    match end.outcome {
        Outcome::Success => {
            if let Some(r) = end.runtime.filter(|r| r.is_finite()) {
                attrs.push(kv("celery.runtime", any_value::Value::DoubleValue(r)));
            }
        }
        Outcome::Failure => {
            let (class, msg) = exc.unwrap_or(("UnknownException", ""));
            attrs.push(s("error.type", class));
            let mut ea = Vec::with_capacity(3);
            exc_attrs(&mut ea);
            events.push(span::Event {
                time_unix_nano: ns(end_ts),
                name: "exception".into(),
                attributes: ea,
                dropped_attributes_count: 0,
            });
            status = Some(Status {
                code: status::StatusCode::Error as i32,
                message: msg.into(),
            });
        }
        Outcome::Retry => {
            let mut ea = vec![i("celery.retries", i64::from(a.n) + 1)];
            exc_attrs(&mut ea);
            events.push(span::Event {
                time_unix_nano: ns(end_ts),
                name: "retry".into(),
                attributes: ea,
                dropped_attributes_count: 0,
            });
        }
        Outcome::Revoked => {
            if let Some(t) = end.terminated {
                attrs.push(b("celery.terminated", t));
            }
            if let Some(e) = end.expired {
                attrs.push(b("celery.expired", e));
            }
            if let Some(sig) = end.signum {
                attrs.push(s("celery.signum", sig));
            }
        }
        Outcome::Rejected => {
            if let Some(r) = end.requeue {
                attrs.push(b("celery.requeue", r));
            }
        }
        Outcome::Lost => {
            status = Some(Status {
                code: status::StatusCode::Error as i32,
                message: "no end event within task_ttl (worker lost?)".into(),
            });
        }
    }
    let links = if a.n > 0 {
        vec![span::Link {
            trace_id: trace.clone(),
            span_id: span_id(task_id, a.n - 1, Phase::Task).to_vec(),
            attributes: vec![s("celery.link", "previous_attempt")],
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    out.push(Span {
        trace_id: trace.clone(),
        span_id: task_span.clone(),
        parent_span_id: task.parent_span.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end_ns,
        attributes: attrs,
        events,
        links,
        status: status.clone(),
        ..Default::default()
    });

    let Some(started) = started else { return };
    let started_ns = ns(started).clamp(start, end_ns);
    if let Some(q) = queued {
        out.push(Span {
            trace_id: trace.clone(),
            span_id: span_id(task_id, a.n, Phase::Queue).to_vec(),
            parent_span_id: task_span.clone(),
            name: "queue".into(),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: ns(q).max(start).min(started_ns),
            end_time_unix_nano: started_ns,
            attributes: vec![
                s("celery.task_id", task_id),
                s("messaging.destination.name", queue),
            ],
            ..Default::default()
        });
    }
    let mut run_attrs = Vec::with_capacity(8);
    messaging(&mut run_attrs);
    run_attrs.push(s("celery.task_name", name));
    run_attrs.push(s("celery.task_id", task_id));
    if !host.is_empty() {
        run_attrs.push(s("celery.hostname", host));
    }
    out.push(Span {
        trace_id: trace,
        span_id: span_id(task_id, a.n, Phase::Run).to_vec(),
        parent_span_id: task_span,
        name: "run".into(),
        kind: span::SpanKind::Consumer as i32,
        start_time_unix_nano: started_ns,
        end_time_unix_nano: end_ns,
        attributes: run_attrs,
        status,
        ..Default::default()
    });
}

pub fn resource_spans(service_name: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(otlp::resource(vec![s("service.name", service_name)])),
        scope_spans: vec![ScopeSpans {
            scope: Some(otlp::scope("celeriac.celery_correlate")),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_parse_with_or_without_dashes() {
        let want = [
            0x8f, 0x3c, 0x2a, 0x1e, 0x00, 0x01, 0x4b, 0x2c, 0x9d, 0x3e, 0x11, 0x22, 0x33, 0x44,
            0x55, 0x66,
        ];
        assert_eq!(
            uuid_bytes("8f3c2a1e-0001-4b2c-9d3e-112233445566"),
            Some(want)
        );
        assert_eq!(uuid_bytes("8F3C2A1E00014B2C9D3E112233445566"), Some(want));
        assert_eq!(uuid_bytes("8f3c"), None);
        assert_eq!(uuid_bytes("zz3c2a1e-0001-4b2c-9d3e-112233445566"), None);
        assert_eq!(uuid_bytes("8f3c2a1e-0001-4b2c-9d3e-1122334455667"), None);
    }

    #[test]
    fn ids_are_the_documented_mapping() {
        let id = "8f3c2a1e-0001-4b2c-9d3e-112233445566";
        assert_eq!(
            crate::otlp::hex(&trace_id(id)),
            "8f3c2a1e00014b2c9d3e112233445566"
        );
        // sha256("8f3c2a1e-0001-4b2c-9d3e-112233445566/0/task")[:8], as README "Trace ids" shows.
        assert_eq!(
            crate::otlp::hex(&span_id(id, 0, Phase::Task)),
            SPAN_ID_EXAMPLE
        );
        assert_ne!(span_id(id, 0, Phase::Task), span_id(id, 1, Phase::Task));
        assert_ne!(span_id(id, 0, Phase::Queue), span_id(id, 0, Phase::Run));
        // Non-UUID ids still give a valid, stable trace id.
        assert_eq!(trace_id("not-a-uuid"), trace_id("not-a-uuid"));
        assert_ne!(trace_id("not-a-uuid"), [0; 16]);
    }

    const SPAN_ID_EXAMPLE: &str = "f9b7d915da408530";
}
