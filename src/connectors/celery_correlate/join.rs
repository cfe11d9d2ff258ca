//! The join with spans from `opentelemetry-instrumentation-celery`.
//!
//! That instrumentation emits a PRODUCER span `apply_async/<task>` where a task is sent and a
//! CONSUMER span `run/<task>` where it runs, both with `messaging.message.id` = the task id and
//! `celery.action`. When such spans reach the connector (a `traces` pipeline whose exporter is
//! `celery_correlate`), the task's lifecycle spans move into the application's trace: trace id
//! of the producer span, and the attempt span becomes a child of the producer span (so the
//! trace reads producer → attempt → queue wait / run, next to the worker's own `run/<task>`).
//!
//! Lifecycle spans of an ended attempt wait up to `join_window` for the task's instrumentation
//! spans, then go out with the deterministic ids. With `join_window: 0s` (the default) nothing
//! waits. Memory: at most `max_tasks` join records and held span groups; the oldest go first.

use std::collections::{HashMap, VecDeque};

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, Span};

#[derive(Debug, Clone, Copy)]
struct Target {
    trace: [u8; 16],
    parent: [u8; 8],
    /// From the producer span itself (preferred) or derived from the worker span's parent.
    from_producer: bool,
    seen: f64,
}

struct Held {
    task_id: String,
    deadline: f64,
    spans: Vec<Span>,
}

pub struct Join {
    window: f64,
    max: usize,
    targets: HashMap<String, Target>,
    order: VecDeque<(String, f64)>,
    held: VecDeque<Held>,
    /// Instrumentation spans seen (for telemetry).
    pub seen_spans: u64,
    /// Lifecycle span groups moved into an application trace.
    pub joined: u64,
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

fn task_id_of(span: &Span) -> Option<&str> {
    attr(span, "celery.task_id")
}

impl Join {
    /// New limits (config reload); held spans keep the deadline they got.
    pub fn set_limits(&mut self, window: f64, max: usize) {
        self.window = window;
        self.max = max.max(1);
    }

    pub fn new(window: f64, max: usize) -> Self {
        Join {
            window,
            max: max.max(1),
            targets: HashMap::new(),
            order: VecDeque::new(),
            held: VecDeque::new(),
            seen_spans: 0,
            joined: 0,
        }
    }

    /// The application trace a task's lifecycle spans move into, once known.
    pub fn trace_of(&self, task_id: &str) -> Option<[u8; 16]> {
        self.targets.get(task_id).map(|t| t.trace)
    }

    pub fn enabled(&self) -> bool {
        self.window > 0.0
    }

    /// Learn from spans that arrived over OTLP. Returns lifecycle spans that can now leave.
    pub fn observe(&mut self, batch: &[ResourceSpans], now: f64) -> Vec<Span> {
        for rs in batch {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let (Some(id), Some(action)) = (
                        attr(span, "messaging.message.id"),
                        attr(span, "celery.action"),
                    ) else {
                        continue;
                    };
                    let (Ok(trace), Ok(own)) = (
                        <[u8; 16]>::try_from(span.trace_id.as_slice()),
                        <[u8; 8]>::try_from(span.span_id.as_slice()),
                    ) else {
                        continue;
                    };
                    let target = match (action, SpanKind::try_from(span.kind)) {
                        ("apply_async", _) => Target {
                            trace,
                            parent: own,
                            from_producer: true,
                            seen: now,
                        },
                        ("run", _) => {
                            let Ok(parent) = <[u8; 8]>::try_from(span.parent_span_id.as_slice())
                            else {
                                continue;
                            };
                            Target {
                                trace,
                                parent,
                                from_producer: false,
                                seen: now,
                            }
                        }
                        _ => continue,
                    };
                    self.seen_spans += 1;
                    match self.targets.get(id) {
                        Some(t) if t.from_producer && !target.from_producer => {}
                        _ => {
                            if !self.targets.contains_key(id) {
                                self.order.push_back((id.to_string(), now));
                            }
                            self.targets.insert(id.to_string(), target);
                        }
                    }
                }
            }
        }
        while self.targets.len() > self.max {
            match self.order.pop_front() {
                Some((id, _)) => {
                    self.targets.remove(&id);
                }
                None => break,
            }
        }
        self.release(now)
    }

    /// Route freshly built lifecycle spans: rewritten now if their task is known, held if the
    /// join is enabled, passed through otherwise.
    pub fn route(&mut self, spans: Vec<Span>, now: f64) -> Vec<Span> {
        if !self.enabled() {
            return spans;
        }
        let mut ready = Vec::new();
        let mut groups: Vec<Held> = Vec::new();
        for span in spans {
            let id = task_id_of(&span).unwrap_or("").to_string();
            if let Some(t) = self.targets.get(&id).copied() {
                ready.push(rewrite(span, &t));
                continue;
            }
            match groups.iter_mut().find(|g| g.task_id == id) {
                Some(g) => g.spans.push(span),
                None => groups.push(Held {
                    task_id: id,
                    deadline: now + self.window,
                    spans: vec![span],
                }),
            }
        }
        let joined_now = ready
            .iter()
            .filter(|s| attr(s, "celery.state").is_some())
            .count() as u64;
        self.joined += joined_now;
        self.held.extend(groups);
        while self.held.len() > self.max {
            if let Some(h) = self.held.pop_front() {
                ready.extend(h.spans);
            }
        }
        ready
    }

    /// Held groups whose task was joined, or whose window has passed.
    pub fn release(&mut self, now: f64) -> Vec<Span> {
        let mut ready = Vec::new();
        let mut keep = VecDeque::with_capacity(self.held.len());
        for h in self.held.drain(..) {
            if let Some(t) = self.targets.get(&h.task_id).copied() {
                self.joined += 1;
                ready.extend(h.spans.into_iter().map(|s| rewrite(s, &t)));
            } else if h.deadline <= now {
                ready.extend(h.spans);
            } else {
                keep.push_back(h);
            }
        }
        self.held = keep;
        // Forget join records well after any lifecycle could still need them.
        let horizon = now - (self.window * 6.0).max(60.0);
        while let Some((id, seen)) = self.order.front() {
            if *seen >= horizon {
                break;
            }
            if self.targets.get(id).is_some_and(|t| t.seen < horizon) {
                self.targets.remove(id);
            }
            self.order.pop_front();
        }
        ready
    }

    /// Everything still held (shutdown).
    pub fn drain(&mut self) -> Vec<Span> {
        self.held.drain(..).flat_map(|h| h.spans).collect()
    }
}

/// Move a lifecycle span into the application's trace: new trace id everywhere, and the attempt
/// span (the one carrying `celery.state`) under the producer span.
fn rewrite(mut span: Span, t: &Target) -> Span {
    span.trace_id = t.trace.to_vec();
    for link in &mut span.links {
        link.trace_id = t.trace.to_vec();
    }
    if attr(&span, "celery.state").is_some() {
        span.parent_span_id = t.parent.to_vec();
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::str_kv as kv;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

    fn lifecycle(task: &str) -> Vec<Span> {
        let attempt = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![kv("celery.task_id", task), kv("celery.state", "SUCCESS")],
            ..Default::default()
        };
        let queue = Span {
            trace_id: vec![1; 16],
            span_id: vec![3; 8],
            parent_span_id: vec![2; 8],
            name: "queue".into(),
            attributes: vec![kv("celery.task_id", task)],
            ..Default::default()
        };
        vec![attempt, queue]
    }

    fn instrumentation(
        task: &str,
        action: &str,
        trace: u8,
        span: u8,
        parent: u8,
    ) -> Vec<ResourceSpans> {
        let s = Span {
            trace_id: vec![trace; 16],
            span_id: vec![span; 8],
            parent_span_id: vec![parent; 8],
            kind: if action == "run" {
                SpanKind::Consumer as i32
            } else {
                SpanKind::Producer as i32
            },
            attributes: vec![
                kv("messaging.message.id", task),
                kv("celery.action", action),
            ],
            ..Default::default()
        };
        vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![s],
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    #[test]
    fn disabled_passes_through() {
        let mut j = Join::new(0.0, 10);
        assert_eq!(j.route(lifecycle("t1"), 0.0).len(), 2);
    }

    #[test]
    fn worker_span_first_then_lifecycle() {
        let mut j = Join::new(10.0, 10);
        assert!(j
            .observe(&instrumentation("t1", "run", 9, 8, 7), 0.0)
            .is_empty());
        let out = j.route(lifecycle("t1"), 1.0);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|s| s.trace_id == vec![9; 16]));
        assert_eq!(
            out[0].parent_span_id,
            vec![7; 8],
            "attempt under the producer span"
        );
        assert_eq!(
            out[1].parent_span_id,
            vec![2; 8],
            "queue stays under the attempt"
        );
    }

    #[test]
    fn lifecycle_waits_for_the_worker_span() {
        let mut j = Join::new(10.0, 10);
        assert!(j.route(lifecycle("t1"), 0.0).is_empty(), "held");
        let out = j.observe(&instrumentation("t1", "apply_async", 5, 6, 0), 2.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].parent_span_id, vec![6; 8]);
        assert_eq!(j.joined, 1);
    }

    #[test]
    fn unjoined_lifecycles_leave_after_the_window_unchanged() {
        let mut j = Join::new(10.0, 10);
        assert!(j.route(lifecycle("t1"), 0.0).is_empty());
        assert!(j.release(5.0).is_empty());
        let out = j.release(10.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].trace_id, vec![1; 16]);
    }

    #[test]
    fn producer_wins_over_worker_parent() {
        let mut j = Join::new(10.0, 10);
        j.observe(&instrumentation("t1", "apply_async", 5, 6, 0), 0.0);
        j.observe(&instrumentation("t1", "run", 5, 8, 6), 0.0);
        let out = j.route(lifecycle("t1"), 1.0);
        assert_eq!(out[0].parent_span_id, vec![6; 8]);
    }

    #[test]
    fn bounded() {
        let mut j = Join::new(10.0, 3);
        for i in 0..10 {
            j.observe(
                &instrumentation(&format!("t{i}"), "apply_async", 5, 6, 0),
                0.0,
            );
            let _ = j.route(lifecycle(&format!("u{i}")), 0.0);
        }
        assert!(j.targets.len() <= 3);
        assert!(j.held.len() <= 3);
    }
}
