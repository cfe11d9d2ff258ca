//! Cumulative task metrics with celery-exporter's names and labels, and their OTLP form.
//!
//! Counters `celery_task_<state>_total{name,hostname,queue_name}` (`exception` too on failures),
//! histograms `celery_task_runtime` and `celery_task_queue_wait_time` (seconds), worker gauges
//! `celery_worker_up` and `celery_worker_tasks_active`, and `celeriac_celery_events_missed_total`.
//! Label sets are capped at `max_series`; beyond it new task names are folded into
//! `name="__other__"` and the fold is counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use foldhash::fast::FixedState;

use crate::otlp::{self, str_kv as kv};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, Sum,
};

/// The per-state task counters, in celery-exporter's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Count {
    Sent,
    Received,
    Started,
    Succeeded,
    Failed,
    Retried,
    Revoked,
    Rejected,
}

impl Count {
    pub const ALL: [Count; 8] = [
        Count::Sent,
        Count::Received,
        Count::Started,
        Count::Succeeded,
        Count::Failed,
        Count::Retried,
        Count::Revoked,
        Count::Rejected,
    ];

    pub fn metric_name(self) -> &'static str {
        match self {
            Count::Sent => "celery_task_sent_total",
            Count::Received => "celery_task_received_total",
            Count::Started => "celery_task_started_total",
            Count::Succeeded => "celery_task_succeeded_total",
            Count::Failed => "celery_task_failed_total",
            Count::Retried => "celery_task_retried_total",
            Count::Revoked => "celery_task_revoked_total",
            Count::Rejected => "celery_task_rejected_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Count::Sent => "Tasks sent (task-sent events; needs task_send_sent_event).",
            Count::Received => "Tasks received by a worker.",
            Count::Started => "Tasks started by a worker.",
            Count::Succeeded => "Tasks that succeeded.",
            Count::Failed => "Tasks that failed, by exception class.",
            Count::Retried => "Task retries.",
            Count::Revoked => "Tasks revoked.",
            Count::Rejected => "Tasks rejected by a worker.",
        }
    }
}

/// `(name, hostname, queue_name)`.
pub type Labels = (Arc<str>, Arc<str>, Arc<str>);

#[derive(Debug, Clone)]
pub struct Hist {
    /// Per-bucket counts, `bounds.len() + 1` of them (the last is +Inf).
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Hist {
    fn new(n_bounds: usize) -> Self {
        Hist {
            counts: vec![0; n_bounds + 1],
            sum: 0.0,
            count: 0,
        }
    }
    fn observe(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// Every per-event lookup here hashes label strings: a fast non-cryptographic hasher (the keys
/// are bounded by `max_series`, so hash flooding cannot grow anything) instead of SipHash.
type FastMap<K, V> = HashMap<K, V, FixedState>;
type FastSet<K> = HashSet<K, FixedState>;

pub struct TaskMetrics {
    counters: FastMap<(Count, Labels, Option<Arc<str>>), u64>,
    runtime: FastMap<Labels, Hist>,
    queue_wait: FastMap<Labels, Hist>,
    pub runtime_bounds: Vec<f64>,
    pub queue_wait_bounds: Vec<f64>,
    series: FastSet<Labels>,
    /// Label sets whose zero-valued state counters already exist, and whether the failure
    /// counter's `exception=""` one does too (see [`TaskMetrics::inc`]).
    zeroed: FastMap<Labels, bool>,
    max_series: usize,
    other: Arc<str>,
    strings: FastSet<Arc<str>>,
    /// Events whose labels were folded into `__other__`.
    pub overflowed: u64,
}

impl TaskMetrics {
    pub fn new(runtime_bounds: Vec<f64>, queue_wait_bounds: Vec<f64>, max_series: usize) -> Self {
        TaskMetrics {
            counters: FastMap::default(),
            runtime: FastMap::default(),
            queue_wait: FastMap::default(),
            runtime_bounds,
            queue_wait_bounds,
            series: FastSet::default(),
            zeroed: FastMap::default(),
            max_series,
            other: Arc::from("__other__"),
            strings: FastSet::default(),
            overflowed: 0,
        }
    }

    /// An interned copy of `s` (label values repeat endlessly; store each once).
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        // Interned strings are bounded by the series cap (plus hostnames and queues).
        if self.strings.len() < self.max_series.saturating_mul(4) + 1024 {
            self.strings.insert(a.clone());
        }
        a
    }

    /// The label set to use, after the cardinality cap.
    pub fn labels(&mut self, name: Arc<str>, host: Arc<str>, queue: Arc<str>) -> Labels {
        let l = (name, host, queue);
        if self.series.contains(&l) {
            return l;
        }
        if self.series.len() < self.max_series {
            self.series.insert(l.clone());
            return l;
        }
        self.overflowed += 1;
        let folded = (self.other.clone(), l.1, l.2);
        self.series.insert(folded.clone());
        folded
    }

    pub fn inc(&mut self, c: Count, labels: &Labels, exception: Option<Arc<str>>) {
        // Like celery-exporter 0.11: a task event makes every other state series exist at 0
        // (`task-sent`'s excepted, its senders are many), the failure counter with
        // `exception=""`, so dashboards compute ratios before the first failure. Counters are
        // never removed, so this is needed once per label set (twice when the first event was
        // a failure, which celery-exporter does not zero with `exception=""`).
        let done = self.zeroed.get(labels).copied();
        if done != Some(true) {
            let failed_too = c != Count::Failed;
            if done.is_none() {
                for other in Count::ALL {
                    if !matches!(other, Count::Sent | Count::Failed) && other != c {
                        self.counters
                            .entry((other, labels.clone(), None))
                            .or_insert(0);
                    }
                }
            }
            if failed_too {
                let empty = self.intern("");
                self.counters
                    .entry((Count::Failed, labels.clone(), Some(empty)))
                    .or_insert(0);
            }
            self.zeroed.insert(labels.clone(), failed_too);
        }
        *self
            .counters
            .entry((c, labels.clone(), exception))
            .or_insert(0) += 1;
    }

    pub fn observe_runtime(&mut self, labels: &Labels, secs: f64) {
        let n = self.runtime_bounds.len();
        let h = self
            .runtime
            .entry(labels.clone())
            .or_insert_with(|| Hist::new(n));
        h.observe(&self.runtime_bounds, secs);
    }

    pub fn observe_queue_wait(&mut self, labels: &Labels, secs: f64) {
        let n = self.queue_wait_bounds.len();
        let h = self
            .queue_wait
            .entry(labels.clone())
            .or_insert_with(|| Hist::new(n));
        h.observe(&self.queue_wait_bounds, secs);
    }

    /// Current value of a counter (tests, debugging).
    pub fn counter(&self, c: Count, name: &str, host: &str, queue: &str) -> u64 {
        self.counters
            .iter()
            .filter(|((k, l, _), _)| *k == c && &*l.0 == name && &*l.1 == host && &*l.2 == queue)
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn runtime_hist(&self, name: &str) -> Option<&Hist> {
        self.runtime
            .iter()
            .find(|(l, _)| &*l.0 == name)
            .map(|(_, h)| h)
    }
}

fn label_kvs(l: &Labels) -> Vec<KeyValue> {
    vec![
        kv("name", &*l.0),
        kv("hostname", &*l.1),
        kv("queue_name", &*l.2),
    ]
}

/// Gauges for workers: `(label, up, active, missed)`.
pub type WorkerRow = (Arc<str>, bool, u64, u64);

/// Build one OTLP batch with every series, cumulative since `start_ns`.
pub fn to_otlp(
    m: &TaskMetrics,
    workers: &[WorkerRow],
    service_name: &str,
    start_ns: u64,
    now_ns: u64,
) -> ResourceMetrics {
    let mut metrics = Vec::with_capacity(16);
    let point = |attributes: Vec<KeyValue>, v: i64| NumberDataPoint {
        attributes,
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(number_data_point::Value::AsInt(v)),
        ..Default::default()
    };
    let mut by_kind: HashMap<Count, Vec<NumberDataPoint>> = HashMap::new();
    for ((c, l, exc), v) in &m.counters {
        let mut attrs = label_kvs(l);
        if let Some(e) = exc {
            attrs.push(kv("exception", &**e));
        }
        by_kind.entry(*c).or_default().push(point(attrs, *v as i64));
    }
    for c in Count::ALL {
        if let Some(points) = by_kind.remove(&c) {
            metrics.push(Metric {
                name: c.metric_name().to_string(),
                description: c.help().to_string(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            });
        }
    }
    for (name, help, hists, bounds) in [
        (
            "celery_task_runtime",
            "Task runtime in seconds (task-succeeded `runtime`).",
            &m.runtime,
            &m.runtime_bounds,
        ),
        (
            "celery_task_queue_wait_time",
            "Seconds from sent (or ETA) to started.",
            &m.queue_wait,
            &m.queue_wait_bounds,
        ),
    ] {
        if hists.is_empty() {
            continue;
        }
        let points = hists
            .iter()
            .map(|(l, h)| HistogramDataPoint {
                attributes: label_kvs(l),
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: h.counts.clone(),
                explicit_bounds: bounds.clone(),
                ..Default::default()
            })
            .collect();
        metrics.push(Metric {
            name: name.to_string(),
            description: help.to_string(),
            unit: "s".to_string(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        });
    }
    if !workers.is_empty() {
        let gauge = |name: &str, help: &str, f: &dyn Fn(&WorkerRow) -> i64| Metric {
            name: name.to_string(),
            description: help.to_string(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: workers
                    .iter()
                    .map(|w| NumberDataPoint {
                        attributes: vec![kv("hostname", &*w.0)],
                        time_unix_nano: now_ns,
                        value: Some(number_data_point::Value::AsInt(f(w))),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        };
        metrics.push(gauge("celery_worker_up", "1 while the worker's heartbeats are current (Celery's 2 × freq expiry), 0 after worker-offline or expiry.", &|w| i64::from(w.1)));
        metrics.push(gauge(
            "celery_worker_tasks_active",
            "Tasks the worker is executing (last heartbeat).",
            &|w| w.2 as i64,
        ));
        metrics.push(Metric {
            name: "celeriac_celery_events_missed_total".to_string(),
            description: "Estimated task-started events lost in transit (heartbeat `processed` minus task-started seen).".to_string(),
            data: Some(metric::Data::Sum(Sum {
                data_points: workers.iter().map(|w| point(vec![kv("hostname", &*w.0)], w.3 as i64)).collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    otlp::resource_metrics(
        vec![kv("service.name", service_name)],
        "celeriac.celery_correlate",
        metrics,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let bounds = vec![0.1, 1.0];
        let mut h = Hist::new(2);
        for v in [0.05, 0.1, 0.5, 1.0, 3.0] {
            h.observe(&bounds, v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count, 5);
    }

    #[test]
    fn cardinality_cap_folds_names() {
        let mut m = TaskMetrics::new(vec![], vec![], 2);
        let h = m.intern("h");
        let q = m.intern("q");
        for n in ["a", "b", "c", "d"] {
            let name = m.intern(n);
            let l = m.labels(name, h.clone(), q.clone());
            m.inc(Count::Received, &l, None);
        }
        assert_eq!(m.counter(Count::Received, "__other__", "h", "q"), 2);
        assert_eq!(m.overflowed, 2);
    }
}

#[cfg(test)]
mod zero_tests {
    use super::*;

    #[test]
    fn every_state_series_exists_at_zero_like_celery_exporter() {
        let mut m = TaskMetrics::new(vec![1.0], vec![1.0], 100);
        let l = (Arc::from("t.add"), Arc::from("w@h"), Arc::from("celery"));
        m.inc(Count::Received, &l, None);
        let failed_empty = (Count::Failed, l.clone(), Some(Arc::<str>::from("")));
        assert_eq!(m.counters.get(&failed_empty), Some(&0));
        for c in [
            Count::Started,
            Count::Succeeded,
            Count::Retried,
            Count::Revoked,
            Count::Rejected,
        ] {
            assert_eq!(m.counters.get(&(c, l.clone(), None)), Some(&0), "{c:?}");
        }
        // task-sent is never zero-filled (its senders are many).
        assert!(!m.counters.contains_key(&(Count::Sent, l.clone(), None)));
        // A first event that is a failure: the others at 0, `exception=""` only later.
        let l2 = (Arc::from("t.bad"), Arc::from("w@h"), Arc::from("celery"));
        m.inc(Count::Failed, &l2, Some(Arc::from("KeyError")));
        assert_eq!(
            m.counters.get(&(Count::Succeeded, l2.clone(), None)),
            Some(&0)
        );
        let empty2 = (Count::Failed, l2.clone(), Some(Arc::<str>::from("")));
        assert!(!m.counters.contains_key(&empty2));
        m.inc(Count::Received, &l2, None);
        assert_eq!(m.counters.get(&empty2), Some(&0));
        assert_eq!(m.counter(Count::Failed, "t.bad", "w@h", "celery"), 1);
    }
}
