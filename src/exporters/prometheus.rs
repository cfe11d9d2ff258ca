//! `prometheus` exporter: a Prometheus scrape endpoint holding the latest value of every series.
//!
//! It owns the store of latest values (shared between the exporter loop, which writes it, and
//! the HTTP handler, which renders it), series expiry, and the HTTP listener serving `/metrics`.
//! The OTLP → Prometheus naming, type and label rules are shared with `prometheus_remote_write`
//! and documented in [`crate::exporters::prom`]. Specific to this exporter:
//!
//! * unsupported points (exponential histograms, delta temporality) are counted in
//!   `celeriac_exporter_dropped_items_total{component, reason="unsupported"}`;
//! * resource attributes are ignored unless `resource_to_telemetry_conversion` is on (then all
//!   of them become labels, `job`/`instance` included): Prometheus adds its own `job` and
//!   `instance` when it scrapes;
//! * a point flagged `NO_RECORDED_VALUE` removes its series;
//! * a point older than the stored one for the same series is ignored.
//! * on the standby of a leader-elected pair (`celery_correlate.leader_election`) `/metrics`
//!   answers 503: only the leader's page holds the pair's series.
//!
//! # Configuration
//!
//! ```yaml
//! exporters:
//!   prometheus:
//!     endpoint: 127.0.0.1:9540        # listen address; /metrics is the page, / links to it
//!     metric_expiration: 5m           # a series not updated for this long leaves the page
//!     const_labels: { env: prod }     # added to every series (valid label names only)
//!     resource_to_telemetry_conversion: false
//!       # true: resource attributes become labels; service.name → job (prefixed with
//!       # `service.namespace/` when set), service.instance.id → instance.
//!       # The collector's form `{ enabled: true }` is accepted too.
//!     bearer_token: ${env:SCRAPE_TOKEN} # optional: require `Authorization: Bearer <token>`
//!     namespace: ""                   # the collector's: `ns_` before every metric name
//!     send_timestamps: false          # true: each point's own timestamp after its value
//!     add_metric_suffixes: true       # false: no `_total` on counters
//!     enable_open_metrics: false      # only false: the text format is served
//!     target_info: { enabled: false } # only false: no target_info series
//! ```
//!
//! A series is identified by its exposed metric name and its sorted labels; every batch replaces
//! the value of each series it carries (the input is cumulative). Timestamps are not exposed:
//! Prometheus stamps samples at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::component::{BoxRun, ComponentError, Context, Exporter, Input};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, Value};
use crate::exporters::prom::{
    self, for_each_series, ConvertStats, Converter, Kind, Labels, Meta, ResourceLabels, Sample,
};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::escape_label;

pub const REGISTRATION: Registration = Registration {
    type_name: "prometheus",
    factory: Factory::Exporter {
        accepts: &[SignalKind::Metrics],
        build,
    },
    defaults: crate::component::defaults::<PrometheusConfig>,
};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often the exporter loop removes expired series (they are already hidden from the page).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Listen address of the scrape endpoint.
    #[serde(with = "types::addr")]
    pub endpoint: SocketAddr,
    /// A series not updated for this long disappears from the page.
    #[serde(with = "types::duration")]
    pub metric_expiration: Duration,
    /// Labels added to every series.
    pub const_labels: BTreeMap<String, String>,
    /// Resource attributes become labels (`service.name` → `job`, `service.instance.id` →
    /// `instance`); by default they are ignored.
    #[serde(deserialize_with = "prom::bool_or_enabled")]
    pub resource_to_telemetry_conversion: bool,
    /// Require `Authorization: Bearer <token>` (Prometheus' `authorization: { credentials }`).
    #[serde(default, deserialize_with = "types::non_empty_secret::deserialize")]
    pub bearer_token: Option<types::Secret>,
    /// `namespace_` before every metric name.
    pub namespace: String,
    /// Write each point's own timestamp after its value (off: Prometheus stamps at scrape).
    pub send_timestamps: bool,
    /// `_total` on counters (the collector's default, on).
    pub add_metric_suffixes: bool,
    /// The collector's OpenMetrics negotiation; celeriac serves the text format only, so only
    /// `false` is accepted.
    pub enable_open_metrics: bool,
    /// The collector's `target_info` series from resource attributes; celeriac does not write
    /// it, so only `enabled: false` is accepted.
    pub target_info: TargetInfo,
}

/// `target_info: { enabled }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetInfo {
    pub enabled: bool,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 9540)),
            metric_expiration: Duration::from_secs(300),
            const_labels: BTreeMap::new(),
            resource_to_telemetry_conversion: false,
            bearer_token: None,
            namespace: String::new(),
            send_timestamps: false,
            add_metric_suffixes: true,
            enable_open_metrics: false,
            target_info: TargetInfo { enabled: false },
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Exporter> {
    let cfg: PrometheusConfig = config::decode(v)?;
    if cfg.metric_expiration.is_zero() {
        return Err(config::DecodeError::new(
            "metric_expiration",
            "must be greater than 0",
        ));
    }
    prom::check_label_names("const_labels", &cfg.const_labels)?;
    if cfg.enable_open_metrics {
        return Err(config::DecodeError::new(
            "enable_open_metrics",
            "celeriac serves the Prometheus text format only; remove this or set false",
        ));
    }
    if cfg.target_info.enabled {
        return Err(config::DecodeError::new(
            "target_info.enabled",
            "celeriac does not write target_info; set false (resource_to_telemetry_conversion puts resource attributes on every series)",
        ));
    }
    Ok(Box::new(PrometheusExporter { cfg, bound: None }))
}

pub struct PrometheusExporter {
    cfg: PrometheusConfig,
    /// Told the bound address once listening (tests bind port 0).
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
}

impl Exporter for PrometheusExporter {
    /// Ready once the scrape endpoint is bound.
    fn reports_ready(&self) -> bool {
        true
    }

    fn run(mut self: Box<Self>, ctx: Context, input: Input) -> BoxRun {
        Box::pin(async move {
            let addr = self.cfg.endpoint;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ComponentError::Bind { addr, source })?;
            let local = listener.local_addr().unwrap_or(addr);
            if let Some(tx) = self.bound.take() {
                let _ = tx.send(local);
            }
            tracing::info!(component = %ctx.id, address = %local, "Serving Prometheus metrics.");

            let store = Arc::new(RwLock::new(
                Store::new(self.cfg.metric_expiration).with_timestamps(self.cfg.send_timestamps),
            ));
            let handler_store = store.clone();
            let size_hint = Arc::new(AtomicUsize::new(4096));
            let telemetry = ctx.telemetry.clone();
            let handler = move |method: &Method, path: &str| {
                handle(&handler_store, &size_hint, &telemetry, method, path)
            };
            let stop = CancellationToken::new();
            let bearer = self
                .cfg
                .bearer_token
                .as_ref()
                .map(|s| Arc::from(s.expose()));
            let server = tokio::spawn(crate::telemetry::serve_authorized(
                listener,
                bearer,
                handler,
                stop.clone(),
            ));
            ctx.ready.set();

            let converter = converter(&self.cfg);
            let dropped = ctx.telemetry.counter(
                "celeriac_exporter_dropped_items_total",
                "Items an exporter dropped, by reason.",
                &[("component", &ctx.id), ("reason", "unsupported")],
            );
            let invalid = ctx.telemetry.counter(
                "celeriac_exporter_dropped_items_total",
                "Items an exporter dropped, by reason.",
                &[("component", &ctx.id), ("reason", "invalid")],
            );
            let mut sweep = tokio::time::interval(SWEEP_EVERY.min(self.cfg.metric_expiration));
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    batch = input.recv() => match batch {
                        Some(Signal::Metrics(rm)) => {
                            let now = Instant::now();
                            let mut store = store.write().unwrap_or_else(|e| e.into_inner());
                            let stats = apply(&converter, &mut store, &rm, now);
                            drop(store);
                            dropped.add(stats.unsupported);
                            invalid.add(stats.invalid);
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = sweep.tick() => {
                        let now = Instant::now();
                        store.write().unwrap_or_else(|e| e.into_inner()).sweep(now);
                    }
                }
            }
            stop.cancel();
            let _ = server.await;
            Ok(())
        })
    }
}

fn handle(
    store: &RwLock<Store>,
    size_hint: &AtomicUsize,
    telemetry: &crate::telemetry::Telemetry,
    method: &Method,
    path: &str,
) -> crate::telemetry::Reply {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"method not allowed\n"),
        );
    }
    match path {
        // The standby of a leader-elected pair: its correlator emits nothing, so what the page
        // would hold is stale or empty. 503 makes Prometheus mark this target down and end its
        // series at once, and nothing is counted twice (see README "Running two agents").
        "/metrics" if telemetry.standby() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            Bytes::from_static(
                b"standby: the other agent of this pair holds the leader lease and serves these series (celeriac_leader 0 on this agent's telemetry)\n",
            ),
        ),
        "/metrics" => {
            let mut page = String::with_capacity(size_hint.load(Ordering::Relaxed) + 1024);
            store
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .render(&mut page, Instant::now());
            size_hint.store(page.len(), Ordering::Relaxed);
            (StatusCode::OK, CONTENT_TYPE, Bytes::from(page))
        }
        "/" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(
                b"<!doctype html><html><head><title>celeriac</title></head><body>\
<h1>celeriac</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n",
            ),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found\n"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Store

#[derive(Debug)]
struct Series {
    sample: Sample,
    /// The point's own timestamp, to ignore out-of-order points.
    time_unix_nano: u64,
    updated: Instant,
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: String,
    series: BTreeMap<Labels, Series>,
}

/// What identifies a metric family: exposed name, type and help text.
#[derive(Debug)]
pub struct Store {
    expiration: Duration,
    families: BTreeMap<String, Family>,
    /// Write each point's own timestamp (ms) after its value (`send_timestamps`).
    timestamps: bool,
}

impl Store {
    pub fn new(expiration: Duration) -> Self {
        Store {
            expiration,
            families: BTreeMap::new(),
            timestamps: false,
        }
    }

    /// The collector's `send_timestamps`.
    pub fn with_timestamps(mut self, on: bool) -> Self {
        self.timestamps = on;
        self
    }

    /// Set the latest value of `name{labels}`. A family whose type changes starts over.
    pub fn update(
        &mut self,
        meta: Meta<'_>,
        labels: Labels,
        sample: Sample,
        time_unix_nano: u64,
        now: Instant,
    ) {
        let Meta { name, kind, help } = meta;
        let family = match self.families.get_mut(name) {
            Some(f) => f,
            None => self.families.entry(name.to_string()).or_insert(Family {
                kind,
                help: String::new(),
                series: BTreeMap::new(),
            }),
        };
        if family.kind != kind {
            tracing::debug!(
                metric = name,
                from = family.kind.as_str(),
                to = kind.as_str(),
                "Metric type changed, dropping its old series."
            );
            family.kind = kind;
            family.series.clear();
        }
        if !help.is_empty() && family.help != help {
            family.help = help.to_string();
        }
        match family.series.get_mut(&labels) {
            Some(s) => {
                if time_unix_nano != 0 && time_unix_nano < s.time_unix_nano {
                    return;
                }
                s.sample = sample;
                s.time_unix_nano = time_unix_nano;
                s.updated = now;
            }
            None => {
                family.series.insert(
                    labels,
                    Series {
                        sample,
                        time_unix_nano,
                        updated: now,
                    },
                );
            }
        }
    }

    /// Forget `name{labels}` (a `NO_RECORDED_VALUE` point).
    pub fn remove(&mut self, name: &str, labels: &Labels) {
        if let Some(f) = self.families.get_mut(name) {
            f.series.remove(labels);
            if f.series.is_empty() {
                self.families.remove(name);
            }
        }
    }

    /// Drop series not updated within the expiration, and families left empty.
    pub fn sweep(&mut self, now: Instant) {
        let exp = self.expiration;
        self.families.retain(|_, f| {
            f.series
                .retain(|_, s| now.saturating_duration_since(s.updated) <= exp);
            !f.series.is_empty()
        });
    }

    /// Number of series held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.families.values().map(|f| f.series.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Append the page to `out`; series past their expiration are left out.
    pub fn render(&self, out: &mut String, now: Instant) {
        for (name, fam) in &self.families {
            let live = |s: &&Series| now.saturating_duration_since(s.updated) <= self.expiration;
            if !fam.series.values().any(|s| live(&s)) {
                continue;
            }
            if !fam.help.is_empty() {
                out.push_str("# HELP ");
                out.push_str(name);
                out.push(' ');
                escape_help(out, &fam.help);
                out.push('\n');
            }
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind.as_str());
            for (labels, s) in fam.series.iter().filter(|(_, s)| live(s)) {
                let ts = (self.timestamps && s.time_unix_nano > 0)
                    .then_some(s.time_unix_nano / 1_000_000);
                for_each_series(&s.sample, |suffix, extra, v| {
                    line(out, name, suffix, labels, extra, v);
                    if let Some(ts) = ts {
                        out.pop();
                        let _ = writeln!(out, " {ts}");
                    }
                });
            }
        }
    }
}

/// One sample line; `extra` (`le`, `quantile`) is merged into the sorted labels.
fn line(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &Labels,
    extra: Option<(&str, &str)>,
    v: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        let mut extra = extra;
        let mut pair = |out: &mut String, k: &str, v: &str| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&escape_label(v));
            out.push('"');
        };
        for (k, v) in labels {
            if let Some((ek, ev)) = extra {
                if ek < k.as_str() {
                    pair(out, ek, ev);
                    extra = None;
                }
            }
            pair(out, k, v);
        }
        if let Some((ek, ev)) = extra {
            pair(out, ek, ev);
        }
        out.push('}');
    }
    out.push(' ');
    format_value(out, v);
    out.push('\n');
}

/// `# HELP` text: `\` and newline escaped.
fn escape_help(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value: integers without a fraction, very large or small magnitudes in exponent form.
fn format_value(out: &mut String, v: f64) {
    if !v.is_finite() {
        return prom::format_bound(out, v);
    }
    let a = v.abs();
    if v.fract() == 0.0 && a < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else if a != 0.0 && !(1e-4..1e15).contains(&a) {
        let _ = write!(out, "{v:e}");
    } else {
        let _ = write!(out, "{v}");
    }
}

// ---------------------------------------------------------------------------------------------
// OTLP → store

fn converter(cfg: &PrometheusConfig) -> Converter {
    let resource = if cfg.resource_to_telemetry_conversion {
        ResourceLabels::All
    } else {
        ResourceLabels::Ignore
    };
    Converter::new(&cfg.const_labels, resource).with_names(&cfg.namespace, cfg.add_metric_suffixes)
}

/// Apply one batch of cumulative metrics to `store`.
fn apply(
    conv: &Converter,
    store: &mut Store,
    batch: &[ResourceMetrics],
    now: Instant,
) -> ConvertStats {
    conv.convert(batch, |p| {
        if p.no_recorded_value {
            store.remove(p.meta.name, &p.labels);
        } else {
            store.update(p.meta, p.labels, p.sample, p.time_unix_nano, now);
        }
    })
}

#[cfg(test)]
mod tests;
