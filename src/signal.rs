//! The data that flows between components.
//!
//! A [`Signal`] is one batch of one kind behind an `Arc`, so fanning a batch out to several
//! exporters clones a pointer, never the data. Traces, metrics and logs are the OTLP protobuf
//! types, so OTLP received is OTLP sent with no conversion; Celery events are decoded once into
//! [`CeleryEvent`]s by the receiver.
//!
//! Channels between components carry a [`Batch`]: the signal and its [`Stamp`], the moment its
//! oldest item entered the pipeline, which the pipeline's last stage turns into an observation of
//! `celeriac_pipeline_latency_seconds{pipeline}`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{metric, ResourceMetrics};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::celery::event::CeleryEvent;
use crate::telemetry::Histogram;

/// The signal a pipeline carries (the part of a pipeline id before `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    Traces,
    Metrics,
    Logs,
    Celery,
}

impl SignalKind {
    pub const ALL: [SignalKind; 4] = [
        SignalKind::Traces,
        SignalKind::Metrics,
        SignalKind::Logs,
        SignalKind::Celery,
    ];

    pub fn parse(s: &str) -> Option<SignalKind> {
        match s {
            "traces" => Some(SignalKind::Traces),
            "metrics" => Some(SignalKind::Metrics),
            "logs" => Some(SignalKind::Logs),
            "celery" => Some(SignalKind::Celery),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Traces => "traces",
            SignalKind::Metrics => "metrics",
            SignalKind::Logs => "logs",
            SignalKind::Celery => "celery",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One batch of one signal.
#[derive(Debug, Clone)]
pub enum Signal {
    Traces(Arc<Vec<ResourceSpans>>),
    Metrics(Arc<Vec<ResourceMetrics>>),
    Logs(Arc<Vec<ResourceLogs>>),
    Celery(Arc<Vec<CeleryEvent>>),
}

impl Signal {
    pub fn kind(&self) -> SignalKind {
        match self {
            Signal::Traces(_) => SignalKind::Traces,
            Signal::Metrics(_) => SignalKind::Metrics,
            Signal::Logs(_) => SignalKind::Logs,
            Signal::Celery(_) => SignalKind::Celery,
        }
    }

    /// Items in the batch: spans, metric data points, log records or Celery events.
    pub fn item_count(&self) -> usize {
        match self {
            Signal::Traces(rs) => rs
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
            Signal::Metrics(rm) => rm
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| data_point_count(m.data.as_ref()))
                .sum(),
            Signal::Logs(rl) => rl
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
            Signal::Celery(ev) => ev.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Signal::Traces(v) => v.is_empty(),
            Signal::Metrics(v) => v.is_empty(),
            Signal::Logs(v) => v.is_empty(),
            Signal::Celery(v) => v.is_empty(),
        }
    }
}

pub(crate) fn data_point_count(data: Option<&metric::Data>) -> usize {
    match data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Take the vector out of an `Arc`, cloning only when another holder still shares it.
pub fn unshare<T: Clone>(v: Arc<Vec<T>>) -> Vec<T> {
    Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone())
}

/// What a channel between two components carries: a signal and, inside a running pipeline, when
/// it entered it. A bare signal (a component driven by hand, in tests and benches) has no stamp.
#[derive(Debug, Clone)]
pub struct Batch {
    pub signal: Signal,
    pub stamp: Option<Stamp>,
}

impl std::ops::Deref for Batch {
    type Target = Signal;
    fn deref(&self) -> &Signal {
        &self.signal
    }
}

impl From<Signal> for Batch {
    fn from(signal: Signal) -> Batch {
        Batch {
            signal,
            stamp: None,
        }
    }
}

/// When a batch's oldest item entered its pipeline (the receiver had its bytes, or a connector
/// produced it), and that pipeline's latency histogram. Only the runtime makes one.
#[derive(Debug, Clone)]
pub struct Stamp {
    since: Instant,
    latency: Histogram,
}

impl Stamp {
    pub(crate) fn new(since: Instant, latency: Histogram) -> Stamp {
        Stamp { since, latency }
    }

    /// The batch of `items` leaves the pipeline now: an exporter hands it to the network, or a
    /// connector or pull exporter takes it. Each item is given the age of the batch's oldest.
    pub fn observe(&self, items: u64) {
        self.latency.observe(self.since.elapsed(), items);
    }
}

/// A processor's link between what it takes and what it gives: the stamp of the oldest batch
/// taken since its last send, handed to the batches it sends next. (A batch split into several
/// sends gives each part the same stamp.)
#[derive(Debug, Clone, Default)]
pub struct Carry(Arc<Mutex<CarryInner>>);

#[derive(Debug, Default)]
struct CarryInner {
    oldest: Option<Instant>,
    last: Option<Instant>,
}

impl Carry {
    /// A batch with this stamp was taken.
    pub fn took(&self, stamp: &Stamp) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.oldest.get_or_insert(stamp.since);
    }

    /// The entry time to give the batch being sent.
    pub fn giving(&self) -> Option<Instant> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let since = c.oldest.take().or(c.last);
        c.last = since;
        since
    }
}
