//! The correlator's read-only view of tasks and workers, for extensions (the `celery_ui`
//! dashboard and its Flower-compatible API).
//!
//! This module owns what a UI shows that the correlation state does not keep: per task the
//! Python reprs Celery sends (`args`, `kwargs`, `result`), the exception and traceback, the
//! timestamp of every state, the worker, retries, root/parent ids and the trace id; per worker its
//! heartbeat fields. It is filled only once an extension has [`View::enable`]d it, so pipelines
//! without a UI pay nothing.
//!
//! Bounds: at most `max_tasks` task records (the connector's own setting; the least recently
//! touched goes first), each stored string capped ([`FIELD_CAP`], [`TRACEBACK_CAP`]), at most
//! [`CHILDREN_CAP`] child ids per task and [`NAMES_CAP`] task names. Worst case per record is
//! about 14 KiB; typical records are a few hundred bytes.
//!
//! Concurrency: the connector applies each batch under one short write lock; readers run a
//! synchronous closure under the read lock ([`View::read`]), so no lock is ever held across an
//! `.await` and nothing copies the whole state per request.
//!
//! This module is the connector's published interface to readers: an extension finds the view
//! with `Host::shared::<View>()` and uses only what is exported here. What a reader may ask:
//! [`View::read`] with [`ViewState`]'s accessors (a task by id, tasks in LRU order, workers,
//! task names, event counts, Flower's metrics), [`View::version`] to notice changes, and the
//! settings a reader owns ([`View::enable`], [`View::set_flower_buckets`],
//! [`View::purge_offline_flower_metrics`]). The record types ([`TaskRecord`], [`WorkerRecord`],
//! [`TaskState`]) and Flower's metric state ([`FlowerMetrics`], [`Sample`],
//! [`DEFAULT_BUCKETS`]) are re-exported here so readers need no other module of the connector.

pub use super::flower_metrics::{FlowerMetrics, Sample, DEFAULT_BUCKETS};
pub use super::tasks::TaskState;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::celery::event::{CeleryEvent, EventKind, TaskFields};

use super::spans;

/// Cap, in bytes, of `args`, `kwargs`, `result`, `exception`, `eta`, `expires` as stored.
/// Celery itself truncates the args/kwargs/result reprs it sends to 1024 characters.
pub const FIELD_CAP: usize = 1024;
/// Cap, in bytes, of a stored traceback (its end is kept).
pub const TRACEBACK_CAP: usize = 8192;
/// Child task ids kept per task.
pub const CHILDREN_CAP: usize = 64;
/// Distinct task names kept for `/api/task/types` and per-name counts.
pub const NAMES_CAP: usize = 10_000;
/// Worker heartbeat receive times kept (Celery's `heartbeat_max`).
const HEARTBEATS_KEPT: usize = 4;
/// Celery's `HEARTBEAT_EXPIRE_WINDOW`: a worker is alive for 2 × `freq` after a heartbeat.
const EXPIRE_FACTOR: f64 = 2.0;

/// One task as a UI shows it (Celery's `events.state.Task` fields).
#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub uuid: Arc<str>,
    pub name: Option<Arc<str>>,
    pub state: TaskState,
    pub sent: Option<f64>,
    pub received: Option<f64>,
    pub started: Option<f64>,
    pub rejected: Option<f64>,
    pub succeeded: Option<f64>,
    pub failed: Option<f64>,
    pub retried: Option<f64>,
    pub revoked: Option<f64>,
    pub args: Option<Box<str>>,
    pub kwargs: Option<Box<str>>,
    pub eta: Option<Box<str>>,
    pub expires: Option<Box<str>>,
    pub retries: Option<u32>,
    /// Node name of the worker of the latest worker-side event.
    pub worker: Option<Arc<str>>,
    pub result: Option<Box<str>>,
    pub exception: Option<Box<str>>,
    /// Timestamp of the event that set the current state.
    pub timestamp: f64,
    pub runtime: Option<f64>,
    pub traceback: Option<Box<str>>,
    pub exchange: Option<Box<str>>,
    pub routing_key: Option<Box<str>>,
    pub clock: Option<u64>,
    /// Node name of the `task-sent` sender.
    pub client: Option<Arc<str>>,
    pub root_id: Option<Box<str>>,
    pub parent_id: Option<Box<str>>,
    pub children: Vec<Arc<str>>,
    /// The trace the task's spans go to (see `spans::trace_id`).
    pub trace_id: Option<[u8; 16]>,
    /// Last-touch order, for eviction and "most recent first".
    seq: u64,
}

impl TaskRecord {
    fn new(uuid: Arc<str>) -> TaskRecord {
        TaskRecord {
            uuid,
            name: None,
            state: TaskState::Pending,
            sent: None,
            received: None,
            started: None,
            rejected: None,
            succeeded: None,
            failed: None,
            retried: None,
            revoked: None,
            args: None,
            kwargs: None,
            eta: None,
            expires: None,
            retries: None,
            worker: None,
            result: None,
            exception: None,
            timestamp: 0.0,
            runtime: None,
            traceback: None,
            exchange: None,
            routing_key: None,
            clock: None,
            client: None,
            root_id: None,
            parent_id: None,
            children: Vec::new(),
            trace_id: None,
            seq: 0,
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> Option<String> {
        self.trace_id
            .map(|t| t.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// One worker as its events describe it (Celery's `events.state.Worker` fields).
#[derive(Debug, Clone, Default)]
pub struct WorkerRecord {
    pub hostname: String,
    pub pid: Option<u32>,
    pub freq: f64,
    /// Agent clock (Unix seconds) of the last few heartbeats.
    pub heartbeats: Vec<f64>,
    pub clock: Option<u64>,
    pub active: Option<u64>,
    pub processed: Option<u64>,
    pub loadavg: Option<[f64; 3]>,
    pub sw_ident: Option<String>,
    pub sw_ver: Option<String>,
    pub sw_sys: Option<String>,
    /// Timestamp (sender's clock) of the worker's last event.
    pub timestamp: f64,
    /// Agent clock of the last event of any kind from this worker.
    pub last_seen: f64,
    /// A `worker-offline` was the last word.
    pub offline: bool,
}

impl WorkerRecord {
    fn beat(&mut self, now: f64) {
        if self.heartbeats.len() == HEARTBEATS_KEPT {
            self.heartbeats.remove(0);
        }
        self.heartbeats.push(now);
    }

    /// Celery's rule: alive while the last heartbeat is younger than 2 × `freq`.
    pub fn alive(&self, now: f64) -> bool {
        !self.offline
            && self
                .heartbeats
                .last()
                .is_some_and(|h| now < h + self.freq * EXPIRE_FACTOR)
    }
}

/// Everything the view holds; reachable only through [`View::read`].
pub struct ViewState {
    /// Boxed: a record is ~470 B and a hash table keeps up to half its slots empty after it
    /// doubles; boxed, an empty slot costs 24 B instead of a whole record (BENCHMARKS.md,
    /// "Bytes per tracked task").
    tasks: HashMap<Arc<str>, Box<TaskRecord>>,
    order: BTreeMap<u64, Arc<str>>,
    seq: u64,
    max_tasks: usize,
    workers: BTreeMap<String, WorkerRecord>,
    names: BTreeSet<Arc<str>>,
    /// Events per (task name, event type), cumulative.
    counts: BTreeMap<(Arc<str>, &'static str), u64>,
    evicted: u64,
    flower: FlowerMetrics,
}

impl ViewState {
    fn new(max_tasks: usize) -> ViewState {
        ViewState {
            tasks: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            max_tasks: max_tasks.max(1),
            workers: BTreeMap::new(),
            names: BTreeSet::new(),
            counts: BTreeMap::new(),
            evicted: 0,
            flower: FlowerMetrics::default(),
        }
    }

    pub fn task(&self, id: &str) -> Option<&TaskRecord> {
        self.tasks.get(id).map(|t| &**t)
    }

    /// Tasks, most recently touched first.
    pub fn recent(&self) -> impl Iterator<Item = &TaskRecord> + '_ {
        self.order.values().rev().filter_map(|id| self.task(id))
    }

    /// Tasks, least recently touched first (the order of Celery's own task LRU).
    pub fn oldest_first(&self) -> impl Iterator<Item = &TaskRecord> + '_ {
        self.order.values().filter_map(|id| self.task(id))
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Task records evicted by `max_tasks` so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn workers(&self) -> &BTreeMap<String, WorkerRecord> {
        &self.workers
    }

    /// Task names seen, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(|n| &**n)
    }

    /// Cumulative event counts per (task name, event type such as `succeeded`).
    pub fn counts(&self) -> &BTreeMap<(Arc<str>, &'static str), u64> {
        &self.counts
    }

    /// Flower's Prometheus metrics (see [`FlowerMetrics`]).
    pub fn flower_metrics(&self) -> &FlowerMetrics {
        &self.flower
    }

    /// Queue names seen in `task-sent` events (routing key or queue).
    pub fn queues_seen(&self) -> BTreeSet<String> {
        self.tasks
            .values()
            .filter_map(|t| t.routing_key.as_deref())
            .filter(|q| !q.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn intern_name(&mut self, n: &str) -> Arc<str> {
        if let Some(x) = self.names.get(n) {
            return x.clone();
        }
        let a: Arc<str> = Arc::from(n);
        if self.names.len() < NAMES_CAP {
            self.names.insert(a.clone());
        }
        a
    }

    fn touch(&mut self, id: &str) -> &mut TaskRecord {
        self.seq += 1;
        let seq = self.seq;
        let key: Arc<str> = match self.tasks.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(id);
                self.tasks
                    .insert(k.clone(), Box::new(TaskRecord::new(k.clone())));
                k
            }
        };
        let t = self
            .tasks
            .get_mut(&key)
            .expect("present: found or inserted");
        if t.seq != 0 {
            self.order.remove(&t.seq);
        }
        t.seq = seq;
        self.order.insert(seq, key.clone());
        while self.tasks.len() > self.max_tasks {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.tasks.remove(&old);
            self.evicted += 1;
        }
        self.tasks
            .get_mut(&key)
            .expect("the newest record is never evicted")
    }

    fn apply(&mut self, ev: &CeleryEvent, now: f64) {
        self.apply_state(ev, now);
        let task = ev
            .task_uuid()
            .and_then(|id| self.tasks.get(id).map(|t| &**t));
        self.flower.observe(ev, task, now);
    }

    fn apply_state(&mut self, ev: &CeleryEvent, now: f64) {
        if ev.kind.is_worker() {
            self.apply_worker(ev, now);
            return;
        }
        let Some(tf) = ev.task.as_ref() else { return };
        let (state, ty) = match ev.kind {
            EventKind::TaskSent => (TaskState::Pending, "sent"),
            EventKind::TaskReceived => (TaskState::Received, "received"),
            EventKind::TaskStarted => (TaskState::Started, "started"),
            EventKind::TaskSucceeded => (TaskState::Success, "succeeded"),
            EventKind::TaskFailed => (TaskState::Failure, "failed"),
            EventKind::TaskRetried => (TaskState::Retry, "retried"),
            EventKind::TaskRevoked => (TaskState::Revoked, "revoked"),
            EventKind::TaskRejected => (TaskState::Rejected, "rejected"),
            // Custom and cancelled events change no state a UI lists.
            _ => return,
        };
        // Celery's `State` counts every task event from a worker as a heartbeat of it.
        if ev.kind != EventKind::TaskSent && !ev.hostname.is_empty() {
            let w = self.worker_mut(&ev.hostname);
            w.last_seen = now;
            w.timestamp = w.timestamp.max(ev.timestamp);
            w.offline = false;
            w.beat(now);
        }
        let name = tf.name.as_deref().map(|n| self.intern_name(n));
        let worker: Option<Arc<str>> = (ev.kind != EventKind::TaskSent && !ev.hostname.is_empty())
            .then(|| Arc::from(ev.hostname.as_str()));
        let t = self.touch(&tf.uuid);
        let ts = ev.timestamp;
        match ev.kind {
            EventKind::TaskSent => t.sent = Some(ts),
            EventKind::TaskReceived => t.received = Some(ts),
            EventKind::TaskStarted => t.started = Some(ts),
            EventKind::TaskSucceeded => t.succeeded = Some(ts),
            EventKind::TaskFailed => t.failed = Some(ts),
            EventKind::TaskRetried => t.retried = Some(ts),
            EventKind::TaskRevoked => t.revoked = Some(ts),
            EventKind::TaskRejected => t.rejected = Some(ts),
            _ => {}
        }
        let merged = t.state.merge(state);
        // Celery: an event whose state happens-before the current one only fills in what the
        // task-received merge rule allows (for RECEIVED) or leaves state and timestamp alone.
        let late = merged != state;
        if !late {
            t.state = state;
            t.timestamp = ts;
        }
        let received_rule_only = late && state == TaskState::Received;
        if let Some(n) = name {
            t.name = Some(n);
        }
        set(&mut t.args, tf.args.as_deref(), FIELD_CAP);
        set(&mut t.kwargs, tf.kwargs.as_deref(), FIELD_CAP);
        set(&mut t.eta, tf.eta.as_deref(), FIELD_CAP);
        set(&mut t.expires, tf.expires.as_deref(), FIELD_CAP);
        set(&mut t.root_id, tf.root_id.as_deref(), FIELD_CAP);
        set(&mut t.parent_id, tf.parent_id.as_deref(), FIELD_CAP);
        if let Some(r) = tf.retries {
            t.retries = Some(r);
        }
        if t.trace_id.is_none() {
            if let Some(r) = tf.root_id.as_deref().filter(|r| !r.is_empty()) {
                t.trace_id = Some(spans::trace_id(r));
            }
        }
        if !received_rule_only {
            if ev.kind == EventKind::TaskSent {
                if !ev.hostname.is_empty() {
                    t.client = Some(Arc::from(ev.hostname.as_str()));
                }
            } else if let Some(w) = worker {
                t.worker = Some(w);
            }
            if ev.clock.is_some() {
                t.clock = ev.clock;
            }
            set(&mut t.result, tf.result.as_deref(), FIELD_CAP);
            set(&mut t.exception, tf.exception.as_deref(), FIELD_CAP);
            if let Some(tb) = tf.traceback.as_deref() {
                // The end of a traceback (the exception) says the most: keep that.
                t.traceback = Some(Box::from(keep_tail(tb, TRACEBACK_CAP).as_ref()));
            }
            set(&mut t.exchange, tf.exchange.as_deref(), FIELD_CAP);
            set(
                &mut t.routing_key,
                tf.routing_key.as_deref().or(tf.queue.as_deref()),
                FIELD_CAP,
            );
            if let Some(r) = tf.runtime {
                t.runtime = Some(r);
            }
        }
        let name = t.name.clone();
        self.link_parent(tf);
        if let Some(n) = name {
            *self.counts.entry((n, ty)).or_default() += 1;
        }
    }

    fn link_parent(&mut self, tf: &TaskFields) {
        let Some(p) = tf.parent_id.as_deref().filter(|p| *p != tf.uuid) else {
            return;
        };
        if let Some(parent) = self.tasks.get_mut(p) {
            if parent.children.len() < CHILDREN_CAP
                && !parent.children.iter().any(|c| **c == *tf.uuid)
            {
                parent.children.push(Arc::from(tf.uuid.as_str()));
            }
        }
    }

    fn worker_mut(&mut self, hostname: &str) -> &mut WorkerRecord {
        self.workers
            .entry(hostname.to_string())
            .or_insert_with(|| WorkerRecord {
                hostname: hostname.to_string(),
                freq: 60.0,
                ..WorkerRecord::default()
            })
    }

    fn apply_worker(&mut self, ev: &CeleryEvent, now: f64) {
        if ev.hostname.is_empty() {
            return;
        }
        let w = self.worker_mut(&ev.hostname);
        w.last_seen = now;
        if ev.timestamp.is_finite() {
            w.timestamp = ev.timestamp;
        }
        if ev.pid.is_some() {
            w.pid = ev.pid;
        }
        if ev.clock.is_some() {
            w.clock = ev.clock;
        }
        if let Some(f) = &ev.worker {
            if let Some(x) = f.freq.filter(|x| x.is_finite() && *x > 0.0) {
                w.freq = x;
            }
            if f.active.is_some() {
                w.active = f.active;
            }
            if f.processed.is_some() {
                w.processed = f.processed;
            }
            if f.loadavg.is_some() {
                w.loadavg = f.loadavg;
            }
            for (slot, v) in [
                (&mut w.sw_ident, &f.sw_ident),
                (&mut w.sw_ver, &f.sw_ver),
                (&mut w.sw_sys, &f.sw_sys),
            ] {
                if let Some(v) = v {
                    *slot = Some(truncate(v, FIELD_CAP).to_string());
                }
            }
        }
        match ev.kind {
            EventKind::WorkerOffline => {
                w.offline = true;
                w.heartbeats.clear();
            }
            EventKind::WorkerOnline | EventKind::WorkerHeartbeat => {
                w.offline = false;
                w.beat(now);
            }
            _ => {}
        }
    }

    fn forget_workers_before(&mut self, cutoff: f64) {
        self.workers.retain(|_, w| w.last_seen >= cutoff);
    }
}

fn set(slot: &mut Option<Box<str>>, v: Option<&str>, cap: usize) {
    if let Some(v) = v {
        *slot = Some(Box::from(truncate(v, cap)));
    }
}

/// The longest prefix of `s` of at most `cap` bytes that ends on a character boundary.
pub fn truncate(s: &str, cap: usize) -> &str {
    if s.len() <= cap {
        return s;
    }
    let mut i = cap;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// `s` cut to its last `cap` bytes (on a character boundary), marked with `…` when cut.
pub fn keep_tail(s: &str, cap: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= cap {
        return s.into();
    }
    let mut i = s.len() - cap;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    format!("…{}", &s[i..]).into()
}

/// The shared handle: the connector writes, extensions read.
pub struct View {
    enabled: AtomicBool,
    version: AtomicU64,
    state: RwLock<ViewState>,
}

impl View {
    pub fn new(max_tasks: usize) -> View {
        View {
            enabled: AtomicBool::new(false),
            version: AtomicU64::new(0),
            state: RwLock::new(ViewState::new(max_tasks)),
        }
    }

    /// Start filling the view (called by an extension that reads it).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Bumped after every change; readers compare it to skip unchanged work.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Run `f` on the current state under the read lock. `f` is synchronous, so the lock can
    /// never be held across an `.await`.
    pub fn read<R>(&self, f: impl FnOnce(&ViewState) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// Apply a batch of events (agent clock `now`), under one write lock.
    pub fn apply(&self, events: &[CeleryEvent], now: f64) {
        if !self.is_enabled() || events.is_empty() {
            return;
        }
        {
            let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
            for ev in events {
                s.apply(ev, now);
            }
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A new `max_tasks` (a reload): the least recently touched records go if over it.
    pub fn set_max_tasks(&self, max: usize) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.max_tasks = max.max(1);
        while s.tasks.len() > s.max_tasks {
            let Some((_, old)) = s.order.pop_first() else {
                break;
            };
            s.tasks.remove(&old);
            s.evicted += 1;
        }
    }

    /// Flower's `task_runtime_metric_buckets` for `flower_task_runtime_seconds`.
    pub fn set_flower_buckets(&self, buckets: Vec<f64>) {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.flower.set_buckets(buckets);
    }

    /// Flower's `purge_offline_workers`: drop the Flower metrics of workers not alive whose last
    /// heartbeat (agent clock) is older than `threshold` seconds, or that the view forgot.
    /// Returns how many workers' series went.
    pub fn purge_offline_flower_metrics(&self, threshold: f64, now: f64, also: &[String]) -> usize {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut names = s.flower.workers();
        names.extend(s.workers.keys().map(|k| Arc::from(k.as_str())));
        names.extend(also.iter().map(|k| Arc::from(k.as_str())));
        let offline: BTreeSet<Arc<str>> = names
            .into_iter()
            .filter(|n| match s.workers.get(&**n) {
                None => true,
                Some(w) if w.alive(now) => false,
                Some(w) => w
                    .heartbeats
                    .iter()
                    .copied()
                    .reduce(f64::max)
                    .is_none_or(|h| now - h > threshold),
            })
            .collect();
        if offline.is_empty() {
            return 0;
        }
        s.flower.remove_workers(&offline)
    }

    /// Drop workers with no event since `cutoff` (agent clock).
    pub fn forget_workers_before(&self, cutoff: f64) {
        if !self.is_enabled() {
            return;
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        let before = s.workers.len();
        s.forget_workers_before(cutoff);
        if s.workers.len() != before {
            drop(s);
            self.version.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::celery::event::WorkerFields;

    fn task_ev(kind: &str, id: &str, ts: f64, f: impl FnOnce(&mut TaskFields)) -> CeleryEvent {
        let host = if kind == "task-sent" {
            "gen1@client"
        } else {
            "w1@host"
        };
        tests_support::task_event(kind, id, host, ts, f)
    }

    #[test]
    fn follows_a_task_like_celery_state() {
        let v = View::new(10);
        v.enable();
        v.apply(
            &[
                task_ev("task-sent", "t1", 1.0, |t| {
                    t.name = Some("shop.add".into());
                    t.args = Some("(1, 2)".into());
                    t.kwargs = Some("{}".into());
                    t.routing_key = Some("celery".into());
                    t.root_id = Some("t1".into());
                }),
                task_ev("task-started", "t1", 3.0, |_| {}),
                // Arrives late: must not move the state back, but fills received fields.
                task_ev("task-received", "t1", 2.0, |t| {
                    t.name = Some("shop.add".into());
                    t.retries = Some(0);
                }),
                task_ev("task-failed", "t1", 4.0, |t| {
                    t.exception = Some("ValueError('x')".into());
                    t.traceback = Some("Traceback ...".into());
                }),
            ],
            100.0,
        );
        v.read(|s| {
            let t = s.task("t1").unwrap();
            assert_eq!(t.state, TaskState::Failure);
            assert_eq!(t.timestamp, 4.0);
            assert_eq!(
                (t.sent, t.received, t.started, t.failed),
                (Some(1.0), Some(2.0), Some(3.0), Some(4.0))
            );
            assert_eq!(t.args.as_deref(), Some("(1, 2)"));
            assert_eq!(t.client.as_deref(), Some("gen1@client"));
            assert_eq!(t.worker.as_deref(), Some("w1@host"));
            assert_eq!(t.exception.as_deref(), Some("ValueError('x')"));
            assert_eq!(t.routing_key.as_deref(), Some("celery"));
            assert_eq!(t.trace_id_hex().unwrap().len(), 32);
            assert_eq!(s.names().collect::<Vec<_>>(), ["shop.add"]);
            assert_eq!(s.counts()[&(Arc::from("shop.add"), "failed")], 1);
            assert!(s.workers().contains_key("w1@host"));
        });
        assert_eq!(v.version(), 1);
    }

    #[test]
    fn disabled_view_stays_empty() {
        let v = View::new(10);
        v.apply(&[task_ev("task-sent", "t1", 1.0, |_| {})], 1.0);
        assert_eq!(v.read(|s| s.task_count()), 0);
        assert_eq!(v.version(), 0);
    }

    #[test]
    fn bounded_by_max_tasks_and_field_caps() {
        let v = View::new(3);
        v.enable();
        let big = "é".repeat(5000);
        for i in 0..10 {
            v.apply(
                &[task_ev("task-failed", &format!("t{i}"), i as f64, |t| {
                    t.args = Some(big.clone());
                    t.traceback = Some(big.clone());
                })],
                1.0,
            );
        }
        v.read(|s| {
            assert_eq!(s.task_count(), 3);
            assert_eq!(s.evicted(), 7);
            let ids: Vec<_> = s.recent().map(|t| t.uuid.to_string()).collect();
            assert_eq!(ids, ["t9", "t8", "t7"]);
            let t = s.task("t9").unwrap();
            assert!(t.args.as_ref().unwrap().len() <= FIELD_CAP);
            let tb = t.traceback.as_ref().unwrap();
            assert!(tb.len() <= TRACEBACK_CAP + 3 && tb.starts_with('…'));
        });
    }

    #[test]
    fn children_and_worker_liveness() {
        let v = View::new(10);
        v.enable();
        v.apply(
            &[
                task_ev("task-sent", "p", 1.0, |_| {}),
                task_ev("task-sent", "c", 2.0, |t| t.parent_id = Some("p".into())),
                CeleryEvent {
                    kind: EventKind::WorkerHeartbeat,
                    hostname: "w2@h".into(),
                    timestamp: 5.0,
                    worker: Some(WorkerFields {
                        freq: Some(2.0),
                        active: Some(1),
                        processed: Some(7),
                        loadavg: Some([0.1, 0.2, 0.3]),
                        ..WorkerFields::default()
                    }),
                    ..CeleryEvent::default()
                },
            ],
            100.0,
        );
        v.read(|s| {
            assert_eq!(s.task("p").unwrap().children.len(), 1);
            let w = &s.workers()["w2@h"];
            assert!(w.alive(102.0));
            assert!(!w.alive(105.0));
            assert_eq!(w.processed, Some(7));
        });
        v.forget_workers_before(101.0);
        assert!(v.read(|s| s.workers().is_empty()));
        v.set_max_tasks(1);
        v.read(|s| {
            assert_eq!(s.task_count(), 1);
            assert!(s.task("c").is_some());
        });
    }
}

/// Records for other modules' tests.
#[cfg(test)]
pub mod tests_support {
    use super::*;

    /// A task event of `kind` (`task-received`, …) for task `id` from `host` at `ts` (also its
    /// clock), with the task fields `f` sets.
    pub fn task_event(
        kind: &str,
        id: &str,
        host: &str,
        ts: f64,
        f: impl FnOnce(&mut TaskFields),
    ) -> CeleryEvent {
        let mut tf = TaskFields {
            uuid: id.into(),
            ..TaskFields::default()
        };
        f(&mut tf);
        CeleryEvent {
            kind: EventKind::from_type(kind),
            type_name: kind.into(),
            hostname: host.into(),
            timestamp: ts,
            clock: Some(ts as u64),
            task: Some(tf),
            ..CeleryEvent::default()
        }
    }

    pub fn record(id: &str) -> TaskRecord {
        let mut t = TaskRecord::new(Arc::from(id));
        t.name = Some(Arc::from("shop.test"));
        t.trace_id = Some(spans::trace_id(id));
        t
    }
}
