//! Task lifecycle steps as OTLP log records: `task.sent`, `task.received`, `task.started`,
//! `task.completed`, `task.failed`, `task.retried`, `task.revoked`, `task.rejected`.
//!
//! Timestamps are the event's (the worker's clock), not the agent's. Attributes follow the
//! `celery.*` names of the traces (`celery.task_id`, `celery.task_name`, `celery.hostname`,
//! `celery.queue`, `celery.retries`, `celery.state`) plus `exception.*` on failures.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};

use super::tasks::Task;
use crate::celery::event::{CeleryEvent, EventKind, TaskFields};
use crate::otlp::{self, bool_kv as b, double_kv as f, int_kv as i, str_kv as s};

/// Split `ValueError('no email')` into (`ValueError`, `no email`).
pub(super) fn split_exception(repr: &str) -> (&str, &str) {
    let class = super::exception_class(Some(repr));
    if class == "UnknownException" {
        return (class, repr);
    }
    let inner = repr[class.len()..]
        .trim_start_matches('(')
        .trim_end_matches(')');
    let msg = inner
        .strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
        .unwrap_or(inner);
    (class, msg)
}

pub fn record(
    ev: &CeleryEvent,
    tf: &TaskFields,
    task: &Task,
    queue_wait: Option<f64>,
) -> Option<LogRecord> {
    let (event, sev) = match ev.kind {
        EventKind::TaskSent => ("task.sent", SeverityNumber::Info),
        EventKind::TaskReceived => ("task.received", SeverityNumber::Info),
        EventKind::TaskStarted => ("task.started", SeverityNumber::Info),
        EventKind::TaskSucceeded => ("task.completed", SeverityNumber::Info),
        EventKind::TaskFailed => ("task.failed", SeverityNumber::Error),
        EventKind::TaskRetried => ("task.retried", SeverityNumber::Warn),
        EventKind::TaskRevoked => ("task.revoked", SeverityNumber::Warn),
        EventKind::TaskRejected => ("task.rejected", SeverityNumber::Warn),
        _ => return None,
    };
    let name = task.name.as_deref().unwrap_or("unknown");
    let mut attrs = Vec::with_capacity(10);
    attrs.push(s("celery.task_id", tf.uuid.as_str()));
    attrs.push(s("celery.task_name", name));
    attrs.push(s("celery.hostname", ev.hostname.as_str()));
    if let Some(q) = &task.queue {
        attrs.push(s("celery.queue", &**q));
    }
    attrs.push(i("celery.retries", i64::from(task.retries)));
    attrs.push(s("celery.state", task.state.as_str()));
    let short = tf.uuid.get(..8).unwrap_or(&tf.uuid);
    let body = match ev.kind {
        EventKind::TaskSent => format!("{name}[{short}] sent"),
        EventKind::TaskReceived => format!("{name}[{short}] received"),
        EventKind::TaskStarted => {
            if let Some(w) = queue_wait {
                attrs.push(f("celery.queue_wait", w));
            }
            format!("{name}[{short}] started")
        }
        EventKind::TaskSucceeded => {
            if let Some(r) = tf.runtime {
                attrs.push(f("celery.runtime", r));
            }
            if let Some(r) = &tf.result {
                attrs.push(s("celery.result", r.as_str()));
            }
            match tf.runtime {
                Some(r) => format!("{name}[{short}] succeeded in {r:.3}s"),
                None => format!("{name}[{short}] succeeded"),
            }
        }
        EventKind::TaskFailed | EventKind::TaskRetried => {
            let repr = tf.exception.as_deref().unwrap_or("");
            let (class, msg) = split_exception(repr);
            attrs.push(s("exception.type", class));
            attrs.push(s("exception.message", msg));
            if let Some(tb) = &tf.traceback {
                attrs.push(s("exception.stacktrace", tb.as_str()));
            }
            if ev.kind == EventKind::TaskFailed {
                format!("{name}[{short}] failed: {repr}")
            } else {
                format!("{name}[{short}] retry: {repr}")
            }
        }
        EventKind::TaskRevoked => {
            attrs.push(b("celery.terminated", tf.terminated.unwrap_or(false)));
            attrs.push(b("celery.expired", tf.expired.unwrap_or(false)));
            if let Some(sig) = &tf.signum {
                attrs.push(s("celery.signum", sig.as_str()));
            }
            format!("{name}[{short}] revoked")
        }
        _ => format!("{name}[{short}] rejected"),
    };
    let ts = if ev.timestamp.is_finite() && ev.timestamp > 0.0 {
        (ev.timestamp * 1e9) as u64
    } else {
        0
    };
    Some(LogRecord {
        time_unix_nano: ts,
        observed_time_unix_nano: (crate::time::now_secs() * 1e9) as u64,
        severity_number: sev as i32,
        severity_text: match sev {
            SeverityNumber::Error => "ERROR",
            SeverityNumber::Warn => "WARN",
            _ => "INFO",
        }
        .into(),
        event_name: event.into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes: attrs,
        ..Default::default()
    })
}

pub fn resource_logs(service_name: &str, records: Vec<LogRecord>) -> ResourceLogs {
    ResourceLogs {
        resource: Some(otlp::resource(vec![s("service.name", service_name)])),
        scope_logs: vec![ScopeLogs {
            scope: Some(otlp::scope("celeriac.celery_correlate")),
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_split() {
        assert_eq!(
            split_exception("ValueError('no email on file')"),
            ("ValueError", "no email on file")
        );
        assert_eq!(split_exception("Reject()"), ("Reject", ""));
        assert_eq!(split_exception("weird"), ("UnknownException", "weird"));
    }
}
