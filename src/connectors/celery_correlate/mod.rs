//! `celery_correlate` connector: Celery events in; task spans, metrics and logs out.
//!
//! It ends a `celery` pipeline and feeds `traces`, `metrics` and `logs` pipelines. Per task it
//! keeps one small record (the name arrives only with `task-sent`/`task-received`, so it is
//! carried to later events), bounded by `max_tasks` (least recently touched evicted first) and
//! `task_ttl`; records of finished tasks, kept only for late events, are at most a tenth of
//! `max_tasks` (oldest finished evicted first), so a burst of completed tasks stays small. Per worker it tracks liveness and estimates lost events (see [`workers`]).
//! Each task attempt becomes spans when it ends, or when `task_ttl` passes without an end
//! (`celery.state=LOST`); shapes and deterministic ids are in [`spans`].
//!
//! Settings:
//! ```yaml
//! celery_correlate:
//!   max_tasks: 100000          # task records kept (finished: a tenth); evictions are counted
//!   join_window: 0s            # wait this long for opentelemetry-instrumentation-celery spans (see [`join`])
//!                              # and for the task of an application log record (see [`logjoin`])
//!   task_ttl: 1h               # a record with no event for this long is dropped
//!   metrics_interval: 1s       # how often cumulative metrics are emitted
//!   max_series: 10000          # label-set cap; beyond it names fold into "__other__"
//!   hostname_label: host       # host: part after "@" (as celery-exporter); node: full node name
//!   default_queue: celery      # queue_name when no task-sent told us the queue
//!   forget_workers_after: 10m  # a silent worker's series are removed after this
//!   service_name: celery       # resource service.name of the emitted spans, metrics and logs
//!   runtime_buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
//!   queue_wait_buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]
//!   leader_election:           # optional: a hot-standby pair, only the leader emits (see [`leader`])
//!     endpoint: redis://127.0.0.1:6379/0
//!     lease: 15s
//!     key: celeriac:leader
//! ```
//!
//! Extensions (the `celery_ui` dashboard) read tasks and workers through [`view::View`], which
//! this connector offers as its shared state and fills only when an extension enables it.

pub mod flower_metrics;
pub mod join;
pub mod leader;
pub mod logjoin;
mod logs;
pub mod metrics;
pub mod spans;
pub mod tasks;
pub mod view;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde::{Deserialize, Serialize};

use crate::celery::event::{CeleryEvent, EventKind};
use crate::component::{BoxRun, Context, Input, Output, Processor};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, DecodeError, Value};
use crate::signal::{Signal, SignalKind};
use crate::time::{now_secs, parse_iso8601};
use metrics::{Count, TaskMetrics};
use spans::{End, Outcome};
use tasks::{TaskState, TaskTable};
use workers::Workers;

pub const REGISTRATION: Registration = Registration {
    type_name: "celery_correlate",
    factory: Factory::Connector {
        accepts: &[SignalKind::Celery, SignalKind::Traces, SignalKind::Logs],
        produces: &[SignalKind::Traces, SignalKind::Metrics, SignalKind::Logs],
        build,
    },
    defaults: crate::component::defaults::<CorrelateConfig>,
};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HostnameLabel {
    Host,
    Node,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelateConfig {
    pub max_tasks: usize,
    #[serde(with = "types::duration")]
    pub task_ttl: Duration,
    #[serde(with = "types::duration")]
    pub join_window: Duration,
    #[serde(with = "types::duration")]
    pub metrics_interval: Duration,
    pub max_series: usize,
    pub hostname_label: HostnameLabel,
    pub default_queue: String,
    #[serde(with = "types::duration")]
    pub forget_workers_after: Duration,
    pub service_name: String,
    pub runtime_buckets: Vec<f64>,
    pub queue_wait_buckets: Vec<f64>,
    /// Only the agent holding this Redis lease emits (see [`leader`]).
    pub leader_election: Option<leader::LeaderElectionConfig>,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        CorrelateConfig {
            max_tasks: 100_000,
            join_window: Duration::ZERO,
            task_ttl: Duration::from_secs(3600),
            metrics_interval: Duration::from_secs(1),
            max_series: 10_000,
            hostname_label: HostnameLabel::Host,
            default_queue: "celery".into(),
            forget_workers_after: Duration::from_secs(600),
            service_name: "celery".into(),
            runtime_buckets: vec![
                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
            ],
            queue_wait_buckets: vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ],
            leader_election: None,
        }
    }
}

fn check_buckets(key: &str, b: &[f64]) -> Result<(), DecodeError> {
    if b.iter().any(|x| !x.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DecodeError::new(
            key,
            "buckets must be finite and strictly increasing",
        ));
    }
    Ok(())
}

fn build(v: &Value) -> BuildResult<dyn Processor> {
    let cfg: CorrelateConfig = config::decode(v)?;
    if cfg.max_tasks == 0 {
        return Err(DecodeError::new("max_tasks", "must be at least 1"));
    }
    if cfg.metrics_interval.is_zero() {
        return Err(DecodeError::new(
            "metrics_interval",
            "must be greater than 0",
        ));
    }
    check_buckets("runtime_buckets", &cfg.runtime_buckets)?;
    check_buckets("queue_wait_buckets", &cfg.queue_wait_buckets)?;
    let election = cfg
        .leader_election
        .as_ref()
        .map(|le| le.client().map(|c| (le.clone(), c)))
        .transpose()?;
    let view = Arc::new(view::View::new(cfg.max_tasks));
    Ok(Box::new(CeleryCorrelate {
        cfg,
        view,
        election,
    }))
}

/// Counts of what the correlator had to give up, for the agent's own telemetry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub evicted_unfinished: u64,
    pub evicted_finished: u64,
    pub expired_unfinished: u64,
    pub label_overflow: u64,
    pub unknown_event_types: u64,
    /// Attempts closed as LOST by `task_ttl`.
    pub lost_attempts: u64,
    pub joined: u64,
    pub logs_joined: u64,
    pub logs_unjoined: u64,
}

/// The correlation state machine: no I/O, so it can be tested and benchmarked directly.
pub struct Correlator {
    cfg: CorrelateConfig,
    tasks: TaskTable,
    workers: Workers,
    pub metrics: TaskMetrics,
    default_queue: Arc<str>,
    unknown_name: Arc<str>,
    emit_logs: bool,
    logs: Vec<LogRecord>,
    emit_spans: bool,
    spans: Vec<Span>,
    lost_attempts: u64,
    start_ns: u64,
    unknown_types: u64,
    /// Worker labels with newly detected lost events (drained by the caller for warnings).
    pub newly_missed: Vec<(String, u64)>,
    pub join: join::Join,
    pub logjoin: logjoin::LogJoin,
}

impl Correlator {
    pub fn new(cfg: CorrelateConfig, emit_logs: bool) -> Self {
        let mut metrics = TaskMetrics::new(
            cfg.runtime_buckets.clone(),
            cfg.queue_wait_buckets.clone(),
            cfg.max_series,
        );
        let default_queue = metrics.intern(&cfg.default_queue);
        let unknown_name = metrics.intern("unknown");
        Correlator {
            tasks: TaskTable::new(cfg.max_tasks),
            workers: Workers::new(cfg.hostname_label == HostnameLabel::Host),
            metrics,
            default_queue,
            unknown_name,
            emit_logs,
            logs: Vec::new(),
            emit_spans: false,
            spans: Vec::new(),
            lost_attempts: 0,
            start_ns: (now_secs() * 1e9) as u64,
            unknown_types: 0,
            newly_missed: Vec::new(),
            join: join::Join::new(cfg.join_window.as_secs_f64(), cfg.max_tasks),
            logjoin: logjoin::LogJoin::new(cfg.join_window.as_secs_f64(), cfg.max_tasks),
            cfg,
        }
    }

    /// Take `cfg` (a config reload) keeping every task record, worker and counter. Refused, with
    /// the reason, when `cfg` changes what the series are (buckets, `max_series`,
    /// `hostname_label`, `default_queue`): the caller then starts afresh.
    pub fn reconfigure(
        &mut self,
        cfg: CorrelateConfig,
        emit_logs: bool,
        emit_spans: bool,
    ) -> Result<(), &'static str> {
        let old = &self.cfg;
        if old.runtime_buckets != cfg.runtime_buckets
            || old.queue_wait_buckets != cfg.queue_wait_buckets
        {
            return Err("histogram buckets changed");
        }
        if old.max_series != cfg.max_series {
            return Err("max_series changed");
        }
        if old.hostname_label != cfg.hostname_label {
            return Err("hostname_label changed");
        }
        if old.default_queue != cfg.default_queue {
            return Err("default_queue changed");
        }
        self.tasks.set_max(cfg.max_tasks);
        self.join
            .set_limits(cfg.join_window.as_secs_f64(), cfg.max_tasks);
        self.logjoin
            .set_limits(cfg.join_window.as_secs_f64(), cfg.max_tasks);
        self.emit_logs = emit_logs;
        self.emit_spans = emit_spans;
        self.cfg = cfg;
        Ok(())
    }

    /// Also build spans (off by default: only when a traces pipeline takes them).
    pub fn with_spans(mut self, on: bool) -> Self {
        self.emit_spans = on;
        self
    }

    pub fn stats(&self) -> Stats {
        let e = self.tasks.evictions;
        Stats {
            evicted_unfinished: e.unfinished,
            evicted_finished: e.finished,
            expired_unfinished: e.expired_unfinished,
            label_overflow: self.metrics.overflowed,
            unknown_event_types: self.unknown_types,
            lost_attempts: self.lost_attempts,
            joined: self.join.joined,
            logs_joined: self.logjoin.joined,
            logs_unjoined: self.logjoin.unjoined,
        }
    }

    pub fn tasks_tracked(&self) -> usize {
        self.tasks.len()
    }

    /// Apply one event; `now` is the agent's clock (Unix seconds) at receipt.
    pub fn apply(&mut self, ev: &CeleryEvent, now: f64) {
        if ev.kind.is_worker() {
            let o = self.workers.observe(ev, now);
            if o.newly_missed > 0 {
                self.newly_missed
                    .push((ev.hostname.clone(), o.newly_missed));
            }
            return;
        }
        let Some(tf) = ev.task.as_ref() else {
            self.unknown_types += 1;
            return;
        };
        if ev.kind != EventKind::TaskSent {
            let o = self.workers.observe(ev, now);
            if o.newly_missed > 0 {
                self.newly_missed
                    .push((ev.hostname.clone(), o.newly_missed));
            }
        }
        let host_only = self.cfg.hostname_label == HostnameLabel::Host;
        let host = self
            .metrics
            .intern(workers::host_label(&ev.hostname, host_only));
        // The parent's attempt span, looked up before this task's record is borrowed.
        let parent_span = tf
            .parent_id
            .as_deref()
            .filter(|p| !p.is_empty() && *p != tf.uuid)
            .map(|p| {
                let n = self.tasks.get(p).map_or(0, |pt| pt.cur.n);
                spans::span_id(p, n, spans::Phase::Task)
            });
        let node = match ev.kind {
            // task-sent comes from the publisher, not the worker.
            EventKind::TaskSent => None,
            _ if ev.hostname.is_empty() => None,
            _ => Some(self.metrics.intern(&ev.hostname)),
        };
        let t = self.tasks.touch(&tf.uuid, now);
        if ev.timestamp.is_finite() {
            t.last_ts = t.last_ts.max(ev.timestamp);
        }
        if let Some(n) = node {
            t.hostname = Some(n);
        }
        if t.parent_span.is_none() {
            t.parent_span = parent_span;
        }
        if t.trace_id.is_none() {
            if let Some(r) = tf.root_id.as_deref().filter(|r| !r.is_empty()) {
                t.trace_id = Some(spans::trace_id(r));
            }
        }
        if let Some(n) = &tf.name {
            if t.name.as_deref() != Some(n.as_str()) {
                t.name = Some(self.metrics.intern(n));
            }
        }
        if let Some(q) = tf
            .queue
            .as_ref()
            .or(tf.routing_key.as_ref())
            .filter(|q| !q.is_empty())
        {
            if t.queue.as_deref() != Some(q.as_str()) {
                t.queue = Some(self.metrics.intern(q));
            }
        }
        if let Some(r) = tf.retries {
            t.retries = t.retries.max(r);
        }
        let name = t.name.clone().unwrap_or_else(|| self.unknown_name.clone());
        let queue = t
            .queue
            .clone()
            .unwrap_or_else(|| self.default_queue.clone());
        let labels = self.metrics.labels(name, host, queue);
        let mut runtime = None;
        let mut queue_wait = None;
        let ts = ev.timestamp;
        // Attempts ended by this event, for spans: (attempt, end).
        let mut ended: [Option<(tasks::Attempt, End<'_>)>; 2] = [None, None];
        let end = |outcome| End {
            exception: tf.exception.as_deref(),
            traceback: tf.traceback.as_deref(),
            runtime: tf.runtime,
            terminated: tf.terminated,
            expired: tf.expired,
            signum: tf.signum.as_deref(),
            requeue: tf.requeue,
            ..End::new(outcome, ts)
        };
        let (count, state) = match ev.kind {
            EventKind::TaskSent => {
                t.note_queued(tf.retries, ts, false);
                t.eta_ts = tf.eta.as_deref().and_then(parse_iso8601);
                (Some(Count::Sent), TaskState::Pending)
            }
            EventKind::TaskReceived => {
                t.note_queued(tf.retries, ts, true);
                if let Some(eta) = tf.eta.as_deref().and_then(parse_iso8601) {
                    t.eta_ts = Some(eta);
                }
                (Some(Count::Received), TaskState::Received)
            }
            EventKind::TaskStarted => {
                // A start that proves the previous attempt was retried unseen ends it.
                ended[0] = t
                    .note_started(ts)
                    .map(|a| (a, End::new(Outcome::Retry, ts)));
                // celery-exporter: max(0, started − max(sent, eta)); received when sent is off.
                let from = t.cur.queued_ts().map(|s| t.eta_ts.map_or(s, |e| s.max(e)));
                queue_wait = from.map(|f| (ts - f).max(0.0));
                (Some(Count::Started), TaskState::Started)
            }
            EventKind::TaskSucceeded => {
                runtime = tf.runtime.filter(|r| r.is_finite() && *r >= 0.0);
                ended[1] = t.end_attempt(ts, false).map(|a| (a, end(Outcome::Success)));
                (Some(Count::Succeeded), TaskState::Success)
            }
            EventKind::TaskFailed => {
                ended[1] = t.end_attempt(ts, false).map(|a| (a, end(Outcome::Failure)));
                (Some(Count::Failed), TaskState::Failure)
            }
            EventKind::TaskRetried => {
                ended[1] = t.end_attempt(ts, true).map(|a| (a, end(Outcome::Retry)));
                (Some(Count::Retried), TaskState::Retry)
            }
            EventKind::TaskRevoked => {
                ended[1] = t.end_attempt(ts, false).map(|a| (a, end(Outcome::Revoked)));
                (Some(Count::Revoked), TaskState::Revoked)
            }
            EventKind::TaskRejected => {
                ended[1] = t
                    .end_attempt(ts, false)
                    .map(|a| (a, end(Outcome::Rejected)));
                (Some(Count::Rejected), TaskState::Rejected)
            }
            _ => (None, t.state),
        };
        t.state = t.state.merge(state);
        let finished = t.state.is_final();
        if self.emit_spans {
            for (a, e) in ended.iter().flatten() {
                spans::attempt_spans(&tf.uuid, t, a, e, &self.cfg.default_queue, &mut self.spans);
            }
        }
        let snapshot = if self.emit_logs {
            Some(t.clone())
        } else {
            None
        };
        if let Some(c) = count {
            let exc = (c == Count::Failed).then(|| {
                self.metrics
                    .intern(exception_class(tf.exception.as_deref()))
            });
            self.metrics.inc(c, &labels, exc);
        }
        if let Some(r) = runtime {
            self.metrics.observe_runtime(&labels, r);
        }
        if let Some(w) = queue_wait {
            self.metrics.observe_queue_wait(&labels, w);
        }
        if let Some(task) = snapshot {
            if let Some(rec) = logs::record(ev, tf, &task, queue_wait) {
                self.logs.push(rec);
            }
        }
        if finished {
            self.tasks.finished(&tf.uuid);
        }
    }

    /// Log records produced since the last call.
    pub fn take_logs(&mut self) -> Vec<LogRecord> {
        std::mem::take(&mut self.logs)
    }

    /// Spans built since the last call.
    pub fn take_spans(&mut self) -> Vec<Span> {
        std::mem::take(&mut self.spans)
    }

    pub fn spans_batch(&self, spans: Vec<Span>) -> ResourceSpans {
        spans::resource_spans(&self.cfg.service_name, spans)
    }

    /// Housekeeping on the agent clock: TTL (closing open attempts as LOST) and forgotten
    /// workers. A LOST attempt ends `task_ttl` after its last event (event clock), so every
    /// agent fed the same events closes it identically.
    pub fn expire(&mut self, now: f64) {
        let ttl = self.cfg.task_ttl.as_secs_f64();
        let (emit, out, lost, queue) = (
            self.emit_spans,
            &mut self.spans,
            &mut self.lost_attempts,
            &self.cfg.default_queue,
        );
        self.tasks.expire(now - ttl, |id, t| {
            if let Some(a) = t.open_attempt() {
                *lost += 1;
                if emit {
                    let end = End::new(Outcome::Lost, t.last_ts + ttl);
                    spans::attempt_spans(id, t, &a, &end, queue, out);
                }
            }
        });
        self.workers
            .forget_before(now - self.cfg.forget_workers_after.as_secs_f64());
    }

    /// Every series, cumulative.
    pub fn metrics_batch(&self, now: f64) -> ResourceMetrics {
        let rows = self.workers.by_label(now);
        metrics::to_otlp(
            &self.metrics,
            &rows,
            &self.cfg.service_name,
            self.start_ns,
            (now * 1e9) as u64,
        )
    }

    pub fn logs_batch(
        &self,
        records: Vec<LogRecord>,
    ) -> opentelemetry_proto::tonic::logs::v1::ResourceLogs {
        logs::resource_logs(&self.cfg.service_name, records)
    }
}

/// Send what is ready: new lifecycle spans routed through the join, and held ones whose
/// window passed.
async fn send_spans(c: &mut Correlator, out: &leader::Gate, now: f64) {
    let fresh = c.take_spans();
    let mut spans = c.join.route(fresh, now);
    spans.extend(c.join.release(now));
    send_ready(c, out, spans).await;
}

async fn send_ready(c: &Correlator, out: &leader::Gate, spans: Vec<Span>) {
    if !spans.is_empty() {
        out.send(Signal::Traces(Arc::new(vec![c.spans_batch(spans)])))
            .await;
    }
}

/// celery-exporter's exception label: the class name before `(`, else `UnknownException`.
pub fn exception_class(repr: Option<&str>) -> &str {
    let Some(r) = repr else {
        return "UnknownException";
    };
    match r.find('(') {
        Some(i)
            if i > 0
                && r[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') =>
        {
            &r[..i]
        }
        _ => "UnknownException",
    }
}

/// What an instance leaves to its successor across a config reload.
struct Carried {
    correlator: Correlator,
    last: Stats,
}

pub struct CeleryCorrelate {
    cfg: CorrelateConfig,
    /// What extensions read (filled only once one of them enables it).
    view: Arc<view::View>,
    /// `leader_election`, with its Redis client.
    election: Option<(leader::LeaderElectionConfig, redis::Client)>,
}

impl Processor for CeleryCorrelate {
    fn shared(&self) -> Option<crate::component::SharedState> {
        Some(self.view.clone())
    }

    fn run(self: Box<Self>, ctx: Context, input: Input, out: Output) -> BoxRun {
        Box::pin(async move {
            let want_logs = out.wants(SignalKind::Logs);
            let want_metrics = out.wants(SignalKind::Metrics);
            let want_traces = out.wants(SignalKind::Traces);
            // The extensions' view outlives a reload: a successor keeps filling the one they read.
            let view_key = format!("{}#view", ctx.id);
            let view = match ctx.telemetry.take_over::<Arc<view::View>>(&view_key) {
                Some(v) => {
                    v.set_max_tasks(self.cfg.max_tasks);
                    v
                }
                None => self.view.clone(),
            };
            // A reload that changed these settings started this instance after the previous
            // one returned: take over its tasks, workers and counters when the series allow.
            let (mut c, mut last) = match ctx.telemetry.take_over::<Carried>(&ctx.id) {
                Some(Carried {
                    mut correlator,
                    last,
                }) => match correlator.reconfigure(self.cfg.clone(), want_logs, want_traces) {
                    Ok(()) => {
                        tracing::info!(component = %ctx.id, tasks = correlator.tasks_tracked(), "New settings; task records, workers and counters carried over.");
                        (correlator, last)
                    }
                    Err(why) => {
                        tracing::warn!(component = %ctx.id, reason = why, "New settings change the series: task records and celery_* counters start from zero.");
                        let fresh =
                            Correlator::new(self.cfg.clone(), want_logs).with_spans(want_traces);
                        (fresh, Stats::default())
                    }
                },
                None => (
                    Correlator::new(self.cfg.clone(), want_logs).with_spans(want_traces),
                    Stats::default(),
                ),
            };
            let label = [("component", &*ctx.id)];
            let t = &ctx.telemetry;
            let tracked = t.gauge(
                "celeriac_correlate_tasks_tracked",
                "Task records held.",
                &label,
            );
            let evicted = t.counter(
                "celeriac_correlate_tasks_evicted_total",
                "Unfinished task records evicted by max_tasks.",
                &label,
            );
            let expired = t.counter(
                "celeriac_correlate_tasks_expired_total",
                "Unfinished task records dropped by task_ttl.",
                &label,
            );
            let overflow = t.counter(
                "celeriac_correlate_label_overflow_total",
                "Events whose task name was folded into __other__ by max_series.",
                &label,
            );
            let unknown = t.counter(
                "celeriac_correlate_unknown_events_total",
                "Events that are neither task-* nor worker-* (passed over).",
                &label,
            );
            let lost = t.counter(
                "celeriac_correlate_attempts_lost_total",
                "Task attempts closed as LOST by task_ttl (no end event).",
                &label,
            );
            let joined = t.counter(
                "celeriac_correlate_joined_total",
                "Task attempts whose spans moved into the trace of an opentelemetry-instrumentation-celery span.",
                &label,
            );
            // The output boundary: with leader_election only the leader's output goes out.
            let (out, leadership) = match self.election {
                Some((le, client)) => {
                    let l = leader::Leadership::start(&le, client, ctx.id.clone(), t, out);
                    let stop = l.stop_renewing.clone();
                    let shutdown = ctx.shutdown.clone();
                    // Renewals stop when shutdown starts (not at a reload's swap).
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = shutdown.cancelled() => stop.cancel(),
                            _ = stop.cancelled() => {}
                        }
                    });
                    (l.gate, Some((l.stop_renewing, l.release, l.task)))
                }
                None => (leader::Gate::open(out, ctx.id.clone(), t), None),
            };
            let logs_joined = t.counter(
                "celeriac_correlate_logs_joined_total",
                "Application log records given their task's trace and span ids.",
                &label,
            );
            let logs_unjoined = t.counter(
                "celeriac_correlate_logs_unjoined_total",
                "Application log records naming a task that left without its trace (task not seen within join_window).",
                &label,
            );
            let mut tick = tokio::time::interval(self.cfg.metrics_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    batch = input.recv() => {
                        let Some(batch) = batch else { break };
                        let now = now_secs();
                        let events = match batch {
                            Signal::Celery(events) => events,
                            Signal::Traces(rs) => {
                                let ready = c.join.observe(&rs, now);
                                send_ready(&c, &out, ready).await;
                                continue;
                            }
                            Signal::Logs(rl) => {
                                let ready = c.join_logs(&rl, now);
                                logjoin::send(&out, ready).await;
                                continue;
                            }
                            _ => continue,
                        };
                        for ev in events.iter() {
                            c.apply(ev, now);
                        }
                        view.apply(&events, now);
                        for (host, n) in c.newly_missed.drain(..) {
                            tracing::warn!(component = %ctx.id, worker = %host, missed = n, "Celery events were lost in transit (heartbeat processed count is ahead of task-started events seen).");
                        }
                        if want_logs {
                            let records = c.take_logs();
                            if !records.is_empty() {
                                out.send(Signal::Logs(Arc::new(vec![c.logs_batch(records)]))).await;
                            }
                        }
                        send_spans(&mut c, &out, now).await;
                        logjoin::send(&out, c.release_logs(now)).await;
                    }
                    _ = tick.tick() => {
                        let now = now_secs();
                        c.expire(now);
                        view.forget_workers_before(now - self.cfg.forget_workers_after.as_secs_f64());
                        let s = c.stats();
                        evicted.add(s.evicted_unfinished - last.evicted_unfinished);
                        expired.add(s.expired_unfinished - last.expired_unfinished);
                        overflow.add(s.label_overflow - last.label_overflow);
                        unknown.add(s.unknown_event_types - last.unknown_event_types);
                        lost.add(s.lost_attempts - last.lost_attempts);
                        joined.add(s.joined - last.joined);
                        logs_joined.add(s.logs_joined - last.logs_joined);
                        logs_unjoined.add(s.logs_unjoined - last.logs_unjoined);
                        last = s;
                        out.take_over().await;
                        logjoin::send(&out, c.release_logs(now)).await;
                        send_spans(&mut c, &out, now).await;
                        tracked.set(c.tasks_tracked() as i64);
                        if want_metrics {
                            out.send(Signal::Metrics(Arc::new(vec![c.metrics_batch(now)]))).await;
                        }
                    }
                }
            }
            // Input closed: what the join still holds goes out as it is, then the final values.
            let held = c.join.drain();
            send_ready(&c, &out, held).await;
            logjoin::send(&out, c.logjoin.drain()).await;
            if want_metrics {
                out.send(Signal::Metrics(Arc::new(vec![c.metrics_batch(now_secs())])))
                    .await;
            }
            // Release the lock only now, after the final flush: the standby takes over at once.
            if let Some((stop, release, task)) = leadership {
                stop.cancel();
                release.cancel();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
                ctx.telemetry.clear_leadership(&ctx.id);
            }
            // For a successor with other settings (dropped at exit when there is none).
            ctx.telemetry.hand_over(&view_key, view);
            ctx.telemetry.hand_over(
                &ctx.id,
                Carried {
                    correlator: c,
                    last,
                },
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
