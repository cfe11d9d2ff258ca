//! The logs join: application log records put on their task's trace.
//!
//! A log record (from the `filelog` receiver, or OTLP logs from the Python SDK's logging handler)
//! whose attributes name a task — `task_id` (structlog / django-structlog) or `celery.task.id` —
//! leaves with the `trace_id` and `span_id` of that task's `run` span (the deterministic ids of
//! [`super::spans`]: trace of the canvas root, span of the task's current attempt), plus the
//! attribute `celery.task.name`. When the lifecycle spans of the task were moved into an
//! application trace by the span join ([`super::join`]), the record takes that trace id. A
//! record that already carries a trace id (the SDK logging inside an instrumented span) keeps it
//! and only gains `celery.task.name`.
//!
//! Records for a task no Celery event has announced yet wait up to `join_window`, then leave
//! unchanged and are counted (`unjoined`). Records without a task id pass at once. Memory: at
//! most `max_held` records wait; beyond that the oldest leave unchanged (counted).

use std::collections::VecDeque;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

use super::join::Join;
use super::spans;
use super::tasks::TaskTable;

/// Where a task's log records go: its run span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub trace: [u8; 16],
    pub span: [u8; 8],
    pub name: Option<String>,
}

/// Records of one resource/scope waiting for one task.
struct Held {
    task_id: String,
    deadline: f64,
    resource: ResourceLogs,
}

pub struct LogJoin {
    window: f64,
    max_held: usize,
    held: VecDeque<Held>,
    held_records: usize,
    /// Records given a task's trace.
    pub joined: u64,
    /// Records with a task id that left without one (window passed, or `max_held`).
    pub unjoined: u64,
}

/// The task id a record names, if any.
pub fn task_id_of(rec: &LogRecord) -> Option<&str> {
    let mut found = None;
    for kv in &rec.attributes {
        if kv.key == "task_id" || kv.key == "celery.task.id" {
            if let Some(any_value::Value::StringValue(s)) =
                kv.value.as_ref().and_then(|v| v.value.as_ref())
            {
                if !s.is_empty() {
                    found = Some(s.as_str());
                    if kv.key == "celery.task.id" {
                        break;
                    }
                }
            }
        }
    }
    found
}

fn is_set(id: &[u8]) -> bool {
    id.iter().any(|b| *b != 0)
}

/// Put `rec` on `link`'s span.
pub fn apply(rec: &mut LogRecord, link: &Link) {
    if !is_set(&rec.trace_id) {
        rec.trace_id = link.trace.to_vec();
        rec.span_id = link.span.to_vec();
    }
    if let Some(n) = &link.name {
        if !rec.attributes.iter().any(|kv| kv.key == "celery.task.name") {
            rec.attributes.push(KeyValue {
                key: "celery.task.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(n.clone())),
                }),
                ..Default::default()
            });
        }
    }
}

impl LogJoin {
    pub fn new(window: f64, max_held: usize) -> Self {
        LogJoin {
            window,
            max_held: max_held.max(1),
            held: VecDeque::new(),
            held_records: 0,
            joined: 0,
            unjoined: 0,
        }
    }

    pub fn set_limits(&mut self, window: f64, max_held: usize) {
        self.window = window;
        self.max_held = max_held.max(1);
    }

    /// Records waiting now.
    pub fn held_records(&self) -> usize {
        self.held_records
    }

    /// Join a batch: records of known tasks are rewritten, records without a task id pass, records
    /// of unknown tasks are held (when `join_window` > 0) or pass unchanged. Returns what leaves now.
    pub fn route(
        &mut self,
        batch: &[ResourceLogs],
        now: f64,
        lookup: impl Fn(&str) -> Option<Link>,
    ) -> Vec<ResourceLogs> {
        let mut out = Vec::with_capacity(batch.len());
        for rl in batch {
            let mut ready = ResourceLogs {
                resource: rl.resource.clone(),
                schema_url: rl.schema_url.clone(),
                scope_logs: Vec::with_capacity(rl.scope_logs.len()),
            };
            for sl in &rl.scope_logs {
                let mut pass = Vec::with_capacity(sl.log_records.len());
                let mut waiting: Vec<(String, Vec<LogRecord>)> = Vec::new();
                for rec in &sl.log_records {
                    let Some(id) = task_id_of(rec) else {
                        pass.push(rec.clone());
                        continue;
                    };
                    let mut rec = rec.clone();
                    if let Some(link) = lookup(id) {
                        apply(&mut rec, &link);
                        self.joined += 1;
                        pass.push(rec);
                    } else if self.window <= 0.0 {
                        self.unjoined += 1;
                        pass.push(rec);
                    } else {
                        match waiting.iter_mut().find(|(t, _)| t == id) {
                            Some((_, v)) => v.push(rec),
                            None => waiting.push((id.to_string(), vec![rec])),
                        }
                    }
                }
                if !pass.is_empty() {
                    ready.scope_logs.push(ScopeLogs {
                        scope: sl.scope.clone(),
                        schema_url: sl.schema_url.clone(),
                        log_records: pass,
                    });
                }
                for (task_id, records) in waiting {
                    self.held_records += records.len();
                    self.held.push_back(Held {
                        task_id,
                        deadline: now + self.window,
                        resource: ResourceLogs {
                            resource: rl.resource.clone(),
                            schema_url: rl.schema_url.clone(),
                            scope_logs: vec![ScopeLogs {
                                scope: sl.scope.clone(),
                                schema_url: sl.schema_url.clone(),
                                log_records: records,
                            }],
                        },
                    });
                }
            }
            if !ready.scope_logs.is_empty() {
                out.push(ready);
            }
        }
        while self.held_records > self.max_held {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            let n = count(&h.resource);
            self.held_records -= n;
            self.unjoined += n as u64;
            out.push(h.resource);
        }
        out
    }

    /// Held records whose task became known (joined), or whose window passed (unchanged).
    pub fn release(
        &mut self,
        now: f64,
        lookup: impl Fn(&str) -> Option<Link>,
    ) -> Vec<ResourceLogs> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.held.len());
        for mut h in self.held.drain(..) {
            let n = count(&h.resource);
            if let Some(link) = lookup(&h.task_id) {
                for sl in &mut h.resource.scope_logs {
                    for rec in &mut sl.log_records {
                        apply(rec, &link);
                    }
                }
                self.joined += n as u64;
                self.held_records -= n;
                out.push(h.resource);
            } else if h.deadline <= now {
                self.unjoined += n as u64;
                self.held_records -= n;
                out.push(h.resource);
            } else {
                keep.push_back(h);
            }
        }
        self.held = keep;
        out
    }

    /// Everything still held, unchanged (shutdown).
    pub fn drain(&mut self) -> Vec<ResourceLogs> {
        self.held_records = 0;
        self.held.drain(..).map(|h| h.resource).collect()
    }
}

/// Where `task_id`'s log records go now: its current attempt's `run` span, once any Celery
/// event announced the task.
fn link(tasks: &TaskTable, join: &Join, task_id: &str) -> Option<Link> {
    let t = tasks.get(task_id)?;
    let trace = join
        .trace_of(task_id)
        .or(t.trace_id)
        .unwrap_or_else(|| spans::trace_id(task_id));
    Some(Link {
        trace,
        span: spans::span_id(task_id, t.cur.n, spans::Phase::Run),
        name: t.name.as_deref().map(str::to_string),
    })
}

impl super::Correlator {
    pub fn log_link(&self, task_id: &str) -> Option<Link> {
        link(&self.tasks, &self.join, task_id)
    }

    /// Join a batch of application logs (see the module docs); returns what leaves now.
    pub fn join_logs(&mut self, batch: &[ResourceLogs], now: f64) -> Vec<ResourceLogs> {
        let (tasks, join) = (&self.tasks, &self.join);
        self.logjoin.route(batch, now, |id| link(tasks, join, id))
    }

    /// Held records that can leave now.
    pub fn release_logs(&mut self, now: f64) -> Vec<ResourceLogs> {
        let (tasks, join) = (&self.tasks, &self.join);
        self.logjoin.release(now, |id| link(tasks, join, id))
    }
}

/// Send joined logs downstream as one batch.
pub async fn send(out: &super::leader::Gate, ready: Vec<ResourceLogs>) {
    if !ready.is_empty() {
        out.send(crate::signal::Signal::Logs(std::sync::Arc::new(ready)))
            .await;
    }
}

fn count(rl: &ResourceLogs) -> usize {
    rl.scope_logs.iter().map(|s| s.log_records.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::str_kv as kv;

    fn batch(ids: &[Option<&str>]) -> Vec<ResourceLogs> {
        vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: ids
                    .iter()
                    .map(|id| LogRecord {
                        attributes: id.map(|i| vec![kv("task_id", i)]).unwrap_or_default(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    fn link() -> Link {
        Link {
            trace: [7; 16],
            span: [8; 8],
            name: Some("app.evaluate".into()),
        }
    }

    fn records(out: &[ResourceLogs]) -> Vec<&LogRecord> {
        out.iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .collect()
    }

    #[test]
    fn known_task_joined_at_once_others_pass() {
        let mut j = LogJoin::new(5.0, 100);
        let out = j.route(&batch(&[Some("t1"), None]), 0.0, |id| {
            (id == "t1").then(link)
        });
        let r = records(&out);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].trace_id, vec![7; 16]);
        assert_eq!(r[0].span_id, vec![8; 8]);
        assert!(r[0]
            .attributes
            .iter()
            .any(|kv| kv.key == "celery.task.name"));
        assert!(r[1].trace_id.is_empty());
        assert_eq!((j.joined, j.unjoined), (1, 0));
    }

    #[test]
    fn unknown_task_waits_then_joins() {
        let mut j = LogJoin::new(5.0, 100);
        assert!(j.route(&batch(&[Some("t1")]), 0.0, |_| None).is_empty());
        assert_eq!(j.held_records(), 1);
        assert!(j.release(1.0, |_| None).is_empty());
        let out = j.release(2.0, |_| Some(link()));
        assert_eq!(records(&out)[0].trace_id, vec![7; 16]);
        assert_eq!((j.joined, j.unjoined, j.held_records()), (1, 0, 0));
    }

    #[test]
    fn unknown_task_leaves_unchanged_after_the_window() {
        let mut j = LogJoin::new(5.0, 100);
        assert!(j.route(&batch(&[Some("t1")]), 0.0, |_| None).is_empty());
        let out = j.release(5.0, |_| None);
        assert!(records(&out)[0].trace_id.is_empty());
        assert_eq!((j.joined, j.unjoined), (0, 1));
    }

    #[test]
    fn no_window_passes_unknown_at_once() {
        let mut j = LogJoin::new(0.0, 100);
        let out = j.route(&batch(&[Some("t1")]), 0.0, |_| None);
        assert_eq!(records(&out).len(), 1);
        assert_eq!(j.unjoined, 1);
    }

    #[test]
    fn own_trace_id_is_kept() {
        let mut b = batch(&[Some("t1")]);
        b[0].scope_logs[0].log_records[0].trace_id = vec![1; 16];
        let mut j = LogJoin::new(0.0, 100);
        let out = j.route(&b, 0.0, |_| Some(link()));
        assert_eq!(records(&out)[0].trace_id, vec![1; 16]);
    }

    #[test]
    fn celery_task_id_attribute_is_understood() {
        let rec = LogRecord {
            attributes: vec![kv("celery.task.id", "abc")],
            ..Default::default()
        };
        assert_eq!(task_id_of(&rec), Some("abc"));
    }

    #[test]
    fn bounded() {
        let mut j = LogJoin::new(60.0, 3);
        let mut passed = 0;
        for i in 0..10 {
            let id = format!("t{i}");
            passed += records(&j.route(&batch(&[Some(&id)]), 0.0, |_| None)).len();
        }
        assert_eq!(j.held_records(), 3);
        assert_eq!(passed, 7);
        assert_eq!(j.unjoined, 7);
    }
}
