//! Flower's six Prometheus metrics, kept by the view as Flower's `EventsState.event` keeps them.
//!
//! This module owns their state and their update rules (Flower 2.x `flower/events.py`):
//!
//! * `flower_events_total{worker,type,task}`: every `task-*` event (custom ones included), `worker`
//!   being the event's `hostname` (the sender's for `task-sent`), `task` the event's `name`, else
//!   the task's, else `""`;
//! * `flower_task_runtime_seconds{worker,task}`: histogram of every non-zero event `runtime`;
//! * `flower_worker_prefetched_tasks{worker,task}`: +1 on `task-received`, −1 on `task-started`
//!   (tasks with an ETA not counted);
//! * `flower_task_prefetch_time_seconds{worker,task}`: `started − received` on `task-started`, back to
//!   0 on `task-succeeded`/`task-failed` (tasks without an ETA only);
//! * `flower_worker_online{worker}`: 1 on `worker-online` and `worker-heartbeat`, 0 on
//!   `worker-offline`;
//! * `flower_worker_number_of_currently_executing_tasks{worker}`: a heartbeat's `active`.
//!
//! [`FlowerMetrics::remove_workers`] drops every series of the named workers (Flower's
//! `purge_offline_workers`). Series are capped at [`MAX_SERIES`]; beyond it new label sets are
//! dropped and counted ([`FlowerMetrics::dropped`]). The `celery_ui` extension renders them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::celery::event::{CeleryEvent, EventKind};

use super::view::TaskRecord;

/// prometheus_client's `Histogram.DEFAULT_BUCKETS` (without +Inf), Flower's default
/// `task_runtime_metric_buckets`.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Label sets kept over all six metrics at most.
pub const MAX_SERIES: usize = 200_000;

/// A counter or gauge value with the time its series was created (prometheus_client's
/// `_created`).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub value: f64,
    pub created: f64,
}

#[derive(Debug, Clone)]
pub struct Histogram {
    /// Per-bucket (non-cumulative) counts, `bounds.len() + 1` of them (the last is +Inf).
    pub counts: Vec<u64>,
    pub sum: f64,
    pub created: f64,
}

/// `(worker, task)`.
pub type WorkerTask = (Arc<str>, Arc<str>);
/// `(worker, type, task)`.
pub type EventKey = (Arc<str>, Arc<str>, Arc<str>);

#[derive(Debug)]
pub struct FlowerMetrics {
    pub buckets: Vec<f64>,
    /// `(worker, type, task)` → count.
    pub events: BTreeMap<EventKey, Sample>,
    pub runtime: BTreeMap<WorkerTask, Histogram>,
    pub prefetch_time: BTreeMap<WorkerTask, Sample>,
    pub prefetched: BTreeMap<WorkerTask, Sample>,
    pub online: BTreeMap<Arc<str>, Sample>,
    pub executing: BTreeMap<Arc<str>, Sample>,
    /// Updates refused because [`MAX_SERIES`] label sets exist.
    pub dropped: u64,
    series: usize,
}

impl Default for FlowerMetrics {
    fn default() -> Self {
        FlowerMetrics::new(DEFAULT_BUCKETS.to_vec())
    }
}

fn slot<'a, K: Ord, V>(
    map: &'a mut BTreeMap<K, V>,
    key: K,
    series: &mut usize,
    dropped: &mut u64,
    new: impl FnOnce() -> V,
) -> Option<&'a mut V> {
    use std::collections::btree_map::Entry;
    match map.entry(key) {
        Entry::Occupied(o) => Some(o.into_mut()),
        Entry::Vacant(v) => {
            if *series >= MAX_SERIES {
                *dropped += 1;
                return None;
            }
            *series += 1;
            Some(v.insert(new()))
        }
    }
}

impl FlowerMetrics {
    pub fn new(mut buckets: Vec<f64>) -> FlowerMetrics {
        buckets.retain(|b| b.is_finite());
        buckets.sort_by(f64::total_cmp);
        buckets.dedup();
        FlowerMetrics {
            buckets,
            events: BTreeMap::new(),
            runtime: BTreeMap::new(),
            prefetch_time: BTreeMap::new(),
            prefetched: BTreeMap::new(),
            online: BTreeMap::new(),
            executing: BTreeMap::new(),
            dropped: 0,
            series: 0,
        }
    }

    /// New histogram buckets: existing runtime histograms restart (their buckets changed).
    pub fn set_buckets(&mut self, buckets: Vec<f64>) {
        let next = FlowerMetrics::new(buckets);
        if next.buckets != self.buckets {
            self.series -= self.runtime.len();
            self.runtime.clear();
            self.buckets = next.buckets;
        }
    }

    fn sample<'a>(
        map: &'a mut BTreeMap<WorkerTask, Sample>,
        key: WorkerTask,
        series: &mut usize,
        dropped: &mut u64,
        now: f64,
    ) -> Option<&'a mut Sample> {
        slot(map, key, series, dropped, || Sample {
            value: 0.0,
            created: now,
        })
    }

    /// Apply one event; `task` is the task's record after the view applied the event (`None`
    /// when the view keeps none). `now` is the agent clock (for `_created`).
    pub fn observe(&mut self, ev: &CeleryEvent, task: Option<&TaskRecord>, now: f64) {
        let worker: Arc<str> = Arc::from(ev.hostname.as_str());
        let (series, dropped) = (&mut self.series, &mut self.dropped);
        if ev.kind.is_task() {
            let Some(tf) = ev.task.as_ref() else { return };
            let name: Arc<str> = match tf.name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => Arc::from(n),
                None => task
                    .and_then(|t| t.name.clone())
                    .unwrap_or_else(|| Arc::from("")),
            };
            let key = (
                worker.clone(),
                Arc::from(ev.type_name.as_str()),
                name.clone(),
            );
            if let Some(s) = slot(&mut self.events, key, series, dropped, || Sample {
                value: 0.0,
                created: now,
            }) {
                s.value += 1.0;
            }
            let wt = (worker, name);
            if let Some(r) = tf.runtime.filter(|r| *r != 0.0 && r.is_finite()) {
                let n = self.buckets.len();
                if let Some(h) = slot(&mut self.runtime, wt.clone(), series, dropped, || {
                    Histogram {
                        counts: vec![0; n + 1],
                        sum: 0.0,
                        created: now,
                    }
                }) {
                    h.counts[self.buckets.partition_point(|b| *b < r)] += 1;
                    h.sum += r;
                }
            }
            let Some(t) = task else { return };
            let no_eta = t.eta.as_deref().is_none_or(str::is_empty);
            let received = t.received.filter(|r| *r != 0.0);
            let started = t.started.filter(|s| *s != 0.0);
            match ev.kind {
                EventKind::TaskReceived if no_eta && received.is_some() => {
                    if let Some(s) = Self::sample(&mut self.prefetched, wt, series, dropped, now) {
                        s.value += 1.0;
                    }
                }
                EventKind::TaskStarted if no_eta => {
                    if let (Some(st), Some(rc)) = (started, received) {
                        if let Some(s) =
                            Self::sample(&mut self.prefetch_time, wt.clone(), series, dropped, now)
                        {
                            s.value = st - rc;
                        }
                        if let Some(s) =
                            Self::sample(&mut self.prefetched, wt, series, dropped, now)
                        {
                            s.value -= 1.0;
                        }
                    }
                }
                EventKind::TaskSucceeded | EventKind::TaskFailed
                    if no_eta && started.is_some() && received.is_some() =>
                {
                    if let Some(s) = Self::sample(&mut self.prefetch_time, wt, series, dropped, now)
                    {
                        s.value = 0.0;
                    }
                }
                _ => {}
            }
            return;
        }
        let set = |map: &mut BTreeMap<Arc<str>, Sample>,
                   series: &mut usize,
                   dropped: &mut u64,
                   v: f64| {
            if let Some(s) = slot(map, worker.clone(), series, dropped, || Sample {
                value: 0.0,
                created: now,
            }) {
                s.value = v;
            }
        };
        match ev.kind {
            EventKind::WorkerOnline => set(&mut self.online, series, dropped, 1.0),
            EventKind::WorkerHeartbeat => {
                set(&mut self.online, series, dropped, 1.0);
                if let Some(a) = ev.worker.as_ref().and_then(|w| w.active) {
                    set(&mut self.executing, series, dropped, a as f64);
                }
            }
            EventKind::WorkerOffline => set(&mut self.online, series, dropped, 0.0),
            _ => {}
        }
    }

    /// Every worker name some series carries.
    pub fn workers(&self) -> BTreeSet<Arc<str>> {
        let mut out: BTreeSet<Arc<str>> = BTreeSet::new();
        out.extend(self.events.keys().map(|k| k.0.clone()));
        out.extend(self.runtime.keys().map(|k| k.0.clone()));
        out.extend(self.prefetch_time.keys().map(|k| k.0.clone()));
        out.extend(self.prefetched.keys().map(|k| k.0.clone()));
        out.extend(self.online.keys().cloned());
        out.extend(self.executing.keys().cloned());
        out
    }

    /// Drop every series of these workers (Flower's `PrometheusMetrics.remove_workers`);
    /// returns how many of them had series.
    pub fn remove_workers(&mut self, names: &BTreeSet<Arc<str>>) -> usize {
        let before = self.workers();
        let n0 = self.events.len()
            + self.runtime.len()
            + self.prefetch_time.len()
            + self.prefetched.len()
            + self.online.len()
            + self.executing.len();
        self.events.retain(|k, _| !names.contains(&k.0));
        self.runtime.retain(|k, _| !names.contains(&k.0));
        self.prefetch_time.retain(|k, _| !names.contains(&k.0));
        self.prefetched.retain(|k, _| !names.contains(&k.0));
        self.online.retain(|k, _| !names.contains(k));
        self.executing.retain(|k, _| !names.contains(k));
        let n1 = self.events.len()
            + self.runtime.len()
            + self.prefetch_time.len()
            + self.prefetched.len()
            + self.online.len()
            + self.executing.len();
        self.series -= n0 - n1;
        before.intersection(names).count()
    }
}
