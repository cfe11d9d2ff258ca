//! The agent's own telemetry: counters and gauges rendered in Prometheus text on `/metrics`, the
//! readiness flag behind `/healthz`, and the `tracing` setup for the agent's logs.
//!
//! Handles are registered once and then updated with one atomic operation, so components can
//! count on the hot path. Series with labels only known at run time (a drop reason) are looked
//! up through [`Telemetry::counter`] each time, which takes a short lock: use it on rare paths.
//!
//! Being the one registry that outlives a config reload, it also carries state from a component
//! instance to its successor ([`Telemetry::hand_over`]): the same counters, the same task records.
//! [`Throttle`] keeps repeated warnings in the agent's own log to one per period.

mod server;
mod throttle;

pub use crate::serve::accept_until;
pub use server::{bearer_matches, serve, serve_authorized, Reply};
pub use throttle::Throttle;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonic counter handle.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge handle (integer valued).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds, in seconds, of [`Histogram`] buckets (`+Inf` is implied): fine below 10 ms,
/// where the pipeline latency goal lies, coarse up to the batch and retry timescales.
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram handle over [`LATENCY_BUCKETS`]: one observation is a duration given to `n`
/// items at once (a batch), so `_count` counts items. Lock-free: a bucket search and three
/// atomic adds.
#[derive(Clone, Debug, Default)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
pub struct HistogramCells {
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Record `d` for each of `n` items.
    pub fn observe(&self, d: std::time::Duration, n: u64) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|&b| b < secs);
        let c = &self.0;
        c.buckets[i].fetch_add(n, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        c.sum_nanos
            .fetch_add(nanos.saturating_mul(n), Ordering::Relaxed);
        c.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Items observed so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Cumulative counts per bucket bound (the last is `+Inf`), the sum in seconds, and the count.
    pub fn read(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cumulative = self
            .0
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, sum, self.count())
    }
}

/// Whether this agent leads its pair now (see [`Telemetry::set_leadership`]).
pub type Leading = Arc<dyn Fn() -> bool + Send + Sync>;

/// A gauge read when `/metrics` is rendered (a queue's current length).
type Observe = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Clone)]
enum Cell {
    Counter(Counter),
    Gauge(Gauge),
    Observed(Observe),
    Histogram(Histogram),
}

type Labels = Vec<(&'static str, String)>;

struct Family {
    help: &'static str,
    series: BTreeMap<Labels, Cell>,
}

#[derive(Default)]
struct Inner {
    families: Mutex<BTreeMap<&'static str, Family>>,
    handoff: Mutex<BTreeMap<String, Box<dyn std::any::Any + Send>>>,
    /// Components under leader election, each telling whether this agent leads now.
    leadership: Mutex<BTreeMap<String, Leading>>,
    ready: AtomicBool,
    failed: AtomicBool,
}

/// One family's values at a moment (see [`Telemetry::snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FamilySnapshot {
    pub name: &'static str,
    pub help: &'static str,
    /// A monotonic counter; otherwise a gauge.
    pub counter: bool,
    pub series: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// The registry; cheap to clone.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    fn cell(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        new: fn() -> Cell,
    ) -> Cell {
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        let mut families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            series: BTreeMap::new(),
        });
        family.series.entry(key).or_insert_with(new).clone()
    }

    /// The counter `name{labels}`, created at 0 on first use. `name` should end in `_total`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        match self.cell(name, help, labels, || Cell::Counter(Counter::default())) {
            Cell::Counter(c) => c,
            _ => Counter::default(),
        }
    }

    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Gauge {
        match self.cell(name, help, labels, || Cell::Gauge(Gauge::default())) {
            Cell::Gauge(g) => g,
            _ => Gauge::default(),
        }
    }

    /// The histogram `name{labels}` over [`LATENCY_BUCKETS`], created empty on first use.
    /// `name` should end in `_seconds`.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Histogram {
        match self.cell(name, help, labels, || Cell::Histogram(Histogram::default())) {
            Cell::Histogram(h) => h,
            _ => Histogram::default(),
        }
    }

    /// The gauge `name{labels}` whose value is `observe()` at each render, replacing any earlier
    /// one of the same series (a rebuilt pipeline registers its new queues). `observe` must be
    /// cheap and must not call back into the registry.
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        observe: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        let key: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        let mut families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        families
            .entry(name)
            .or_insert_with(|| Family {
                help,
                series: BTreeMap::new(),
            })
            .series
            .insert(key, Cell::Observed(Arc::new(observe)));
    }

    /// Every counter and gauge family's current values, for exporting the agent's metrics
    /// through a pipeline (histograms are on `/metrics` only).
    pub fn snapshot(&self) -> Vec<FamilySnapshot> {
        let families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        families
            .iter()
            .filter(|(_, fam)| !matches!(fam.series.values().next(), Some(Cell::Histogram(_))))
            .map(|(name, fam)| FamilySnapshot {
                name,
                help: fam.help,
                counter: matches!(fam.series.values().next(), Some(Cell::Counter(_))),
                series: fam
                    .series
                    .iter()
                    .map(|(labels, cell)| {
                        let v = match cell {
                            Cell::Counter(c) => c.get() as f64,
                            Cell::Gauge(g) => g.get() as f64,
                            Cell::Observed(f) => f() as f64,
                            Cell::Histogram(h) => h.count() as f64,
                        };
                        (labels.clone(), v)
                    })
                    .collect(),
            })
            .collect()
    }

    /// All series in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let families = self
            .inner
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(4096);
        for (name, fam) in families.iter() {
            let kind = match fam.series.values().next() {
                Some(Cell::Gauge(_) | Cell::Observed(_)) => "gauge",
                Some(Cell::Histogram(_)) => "histogram",
                _ => "counter",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, cell) in &fam.series {
                match cell {
                    Cell::Counter(c) => line(&mut out, name, "", labels, None, c.get()),
                    Cell::Gauge(g) => line(&mut out, name, "", labels, None, g.get()),
                    Cell::Observed(f) => line(&mut out, name, "", labels, None, f()),
                    Cell::Histogram(h) => {
                        let (buckets, sum, count) = h.read();
                        for (i, n) in buckets.iter().enumerate() {
                            let le = LATENCY_BUCKETS
                                .get(i)
                                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                            line(&mut out, name, "_bucket", labels, Some(&le), n);
                        }
                        line(&mut out, name, "_sum", labels, None, sum);
                        line(&mut out, name, "_count", labels, None, count);
                    }
                }
            }
        }
        out
    }

    /// Leave `state` for the next instance of component `id` (a config reload that changed the
    /// component's settings starts a new instance once this one has returned). Replaces what an
    /// earlier instance left.
    pub fn hand_over<T: std::any::Any + Send>(&self, id: &str, state: T) {
        self.inner
            .handoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), Box::new(state));
    }

    /// What the previous instance of component `id` left, if it left a `T`.
    pub fn take_over<T: std::any::Any + Send>(&self, id: &str) -> Option<T> {
        let state = self
            .inner
            .handoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)?;
        state.downcast::<T>().ok().map(|b| *b)
    }

    /// Component `id` takes part in leader election; `leading` tells whether this agent leads
    /// now. Replaces what an earlier instance of `id` registered.
    pub fn set_leadership(&self, id: &str, leading: Leading) {
        self.inner
            .leadership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), leading);
    }

    /// Component `id` no longer takes part in leader election.
    pub fn clear_leadership(&self, id: &str) {
        self.inner
            .leadership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Is this agent a standby: a component elects a leader and this agent does not lead?
    /// (The `prometheus` scrape exporter then answers 503.)
    pub fn standby(&self) -> bool {
        self.inner
            .leadership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|leading| !leading())
    }

    /// Every component ready (see [`crate::component::Ready`]).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }

    /// A component stopped with an error: the agent is no longer healthy.
    pub fn set_failed(&self) {
        self.inner.failed.store(true, Ordering::Relaxed);
    }

    pub fn healthy(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed) && !self.inner.failed.load(Ordering::Relaxed)
    }
}

/// Write `name{suffix}{labels,le="…"} value` as one exposition line.
fn line(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &Labels,
    le: Option<&str>,
    value: impl fmt::Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    let le = le.map(|le| ("le", std::borrow::Cow::Borrowed(le)));
    let all = labels.iter().map(|(k, v)| (*k, escape_label(v))).chain(le);
    let mut any = false;
    for (k, v) in all {
        out.push(if any { ',' } else { '{' });
        any = true;
        let _ = write!(out, "{k}=\"{v}\"");
    }
    if any {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Escape a label value for the text format (`\`, `"` and newline).
pub fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut s = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    std::borrow::Cow::Owned(s)
}

/// The AMQP client logs an ERROR of its own each time the broker closes a channel, which a
/// passive `queue.declare` of a missing queue does by design on every poll. Each such close
/// reaches celeriac as the failed operation's error, which the component logs (once, or
/// throttled) and counts, so the client's own line is left out unless `RUST_LOG` asks for it.
const QUIET: &str = "lapin::channel=off";

/// Set up the agent's own logs: human-readable on stderr (stdout may carry exported data).
pub fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{level},{QUIET}")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET}")));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        fmt.json().try_init()
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let t = Telemetry::new();
        let c = t.counter("celeriac_x_total", "Things.", &[("component", "a\"b")]);
        c.add(3);
        t.counter("celeriac_x_total", "Things.", &[("component", "a\"b")])
            .inc();
        t.gauge("celeriac_q", "Queue.", &[]).set(-2);
        let text = t.render();
        assert!(text.contains("# TYPE celeriac_x_total counter\n"), "{text}");
        assert!(
            text.contains("celeriac_x_total{component=\"a\\\"b\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE celeriac_q gauge\nceleriac_q -2\n"),
            "{text}"
        );
    }

    #[test]
    fn histograms_count_items_in_cumulative_buckets() {
        let t = Telemetry::new();
        let h = t.histogram(
            "celeriac_lat_seconds",
            "Latency.",
            &[("pipeline", "traces")],
        );
        h.observe(std::time::Duration::from_micros(300), 10);
        h.observe(std::time::Duration::from_millis(20), 1);
        h.observe(std::time::Duration::from_secs(60), 2);
        let text = t.render();
        assert!(
            text.contains("# TYPE celeriac_lat_seconds histogram\n"),
            "{text}"
        );
        for line in [
            "celeriac_lat_seconds_bucket{pipeline=\"traces\",le=\"0.00025\"} 0\n",
            "celeriac_lat_seconds_bucket{pipeline=\"traces\",le=\"0.0005\"} 10\n",
            "celeriac_lat_seconds_bucket{pipeline=\"traces\",le=\"0.025\"} 11\n",
            "celeriac_lat_seconds_bucket{pipeline=\"traces\",le=\"10\"} 11\n",
            "celeriac_lat_seconds_bucket{pipeline=\"traces\",le=\"+Inf\"} 13\n",
            "celeriac_lat_seconds_count{pipeline=\"traces\"} 13\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("celeriac_lat_seconds_sum{pipeline=\"traces\"} 120.023\n"),
            "{text}"
        );
        assert!(t
            .snapshot()
            .iter()
            .all(|f| f.name != "celeriac_lat_seconds"));
    }

    #[test]
    fn state_is_handed_over_once_by_id_and_type() {
        let t = Telemetry::new();
        t.hand_over("connector/x", 5u32);
        assert_eq!(
            t.take_over::<String>("connector/x"),
            None,
            "wrong type: dropped"
        );
        t.hand_over("connector/x", 7u32);
        assert_eq!(t.take_over::<u32>("connector/y"), None);
        assert_eq!(t.take_over::<u32>("connector/x"), Some(7));
        assert_eq!(t.take_over::<u32>("connector/x"), None);
    }

    #[test]
    fn observed_gauges_are_read_at_render_and_replaced_on_reregistration() {
        let t = Telemetry::new();
        let n = Arc::new(AtomicI64::new(3));
        let n2 = n.clone();
        t.observe(
            "celeriac_len",
            "Length.",
            &[("component", "x")],
            move || n2.load(Ordering::Relaxed),
        );
        assert!(t.render().contains("celeriac_len{component=\"x\"} 3\n"));
        n.store(5, Ordering::Relaxed);
        assert!(t.render().contains("celeriac_len{component=\"x\"} 5\n"));
        t.observe("celeriac_len", "Length.", &[("component", "x")], || 9);
        let text = t.render();
        assert!(
            text.contains("# TYPE celeriac_len gauge\nceleriac_len{component=\"x\"} 9\n"),
            "{text}"
        );
    }
}
