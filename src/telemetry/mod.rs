//! The agent's own telemetry: counters and gauges rendered in Prometheus text on `/metrics`, the
//! readiness flag behind `/healthz`, and the `tracing` setup for the agent's logs.
//!
//! Handles are registered once and then updated with one atomic operation, so components can
//! count on the hot path. Series with labels only known at run time (a drop reason) are looked
//! up through [`Telemetry::counter`] each time, which takes a short lock: use it on rare paths.

mod server;

pub use server::{accept_until, bearer_matches, serve, serve_authorized, Reply};

use std::collections::BTreeMap;
use std::fmt::Write as _;
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

#[derive(Clone)]
enum Cell {
    Counter(Counter),
    Gauge(Gauge),
}

type Labels = Vec<(&'static str, String)>;

struct Family {
    help: &'static str,
    series: BTreeMap<Labels, Cell>,
}

#[derive(Default)]
struct Inner {
    families: Mutex<BTreeMap<&'static str, Family>>,
    ready: AtomicBool,
    failed: AtomicBool,
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
        gauge: bool,
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
        family
            .series
            .entry(key)
            .or_insert_with(|| {
                if gauge {
                    Cell::Gauge(Gauge::default())
                } else {
                    Cell::Counter(Counter::default())
                }
            })
            .clone()
    }

    /// The counter `name{labels}`, created at 0 on first use. `name` should end in `_total`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        match self.cell(name, help, labels, false) {
            Cell::Counter(c) => c,
            Cell::Gauge(_) => Counter::default(),
        }
    }

    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Gauge {
        match self.cell(name, help, labels, true) {
            Cell::Gauge(g) => g,
            Cell::Counter(_) => Gauge::default(),
        }
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
                Some(Cell::Gauge(_)) => "gauge",
                _ => "counter",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, cell) in &fam.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = match cell {
                    Cell::Counter(c) => writeln!(out, " {}", c.get()),
                    Cell::Gauge(g) => writeln!(out, " {}", g.get()),
                };
            }
        }
        out
    }

    /// Every component started.
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

/// Set up the agent's own logs: human-readable on stderr (stdout may carry exported data).
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
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
}
