//! `debug` exporter: what arrives, in the agent's own log, as the collector's `debug` exporter
//! prints it (core `exporter/debugexporter`). `logging` is the collector's old name for it:
//! accepted with a deprecation warning, its `loglevel: debug` meaning `verbosity: detailed`.
//!
//! Per batch, one summary line like the collector's (`Traces` with `resource spans` and `spans`;
//! `Metrics` with `resource metrics`, `metrics`, `data points`; `Logs` with `resource logs`, `log
//! records`); with `verbosity: normal` also one line per item ([`text`]'s `normal_*`, after
//! `internal/normal`), with `detailed` the collector's full text dump ([`text`]'s `detailed_*`,
//! after `internal/otlptext`). Celery events (a celeriac signal) are shown in Rust's debug
//! notation at `detailed`.
//!
//! Sampling as the collector's zap sampler does it: within each second, the first
//! `sampling_initial` batches are printed, then every `sampling_thereafter`-th.
//! `use_internal_logger: false` prints the dumps to stdout instead of the log.
//!
//! ```yaml
//! debug:
//!   verbosity: basic            # basic | normal | detailed
//!   sampling_initial: 2
//!   sampling_thereafter: 1
//!   use_internal_logger: true
//! ```

pub mod text;

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::component::{BoxRun, Context, Exporter, Input};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, DecodeError, Value};
use crate::signal::{Signal, SignalKind};

pub const REGISTRATION: Registration = Registration {
    type_name: "debug",
    factory: Factory::Exporter {
        accepts: &SignalKind::ALL,
        build,
    },
    defaults: crate::component::defaults::<DebugConfig>,
};

/// The collector's deprecated `logging` exporter: `debug` under its old name.
pub const LOGGING_REGISTRATION: Registration = Registration {
    type_name: "logging",
    factory: Factory::Exporter {
        accepts: &SignalKind::ALL,
        build: build_logging,
    },
    defaults: crate::component::defaults::<LoggingConfig>,
};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// The summary line only.
    #[default]
    Basic,
    /// Also one line per span, log record or data point.
    Normal,
    /// Also the full dump of every item.
    Detailed,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    pub verbosity: Verbosity,
    pub sampling_initial: u32,
    pub sampling_thereafter: u32,
    pub use_internal_logger: bool,
    /// The collector's `output_paths` (with `use_internal_logger: false`): only `stdout` here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output_paths: Vec<String>,
    /// The collector's exporter queue settings: accepted; this exporter writes synchronously.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sending_queue: Option<Value>,
}

impl Default for DebugConfig {
    /// The collector's defaults (`factory.go`).
    fn default() -> Self {
        DebugConfig {
            verbosity: Verbosity::Basic,
            sampling_initial: 2,
            sampling_thereafter: 1,
            use_internal_logger: true,
            output_paths: Vec::new(),
            sending_queue: None,
        }
    }
}

/// The old `logging` exporter's settings.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `debug` meant a detailed dump; `info`, `warn`, `error` the summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loglevel: Option<String>,
    pub verbosity: Verbosity,
    pub sampling_initial: u32,
    pub sampling_thereafter: u32,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        let d = DebugConfig::default();
        LoggingConfig {
            loglevel: None,
            verbosity: d.verbosity,
            sampling_initial: d.sampling_initial,
            sampling_thereafter: d.sampling_thereafter,
        }
    }
}

fn check(cfg: DebugConfig) -> BuildResult<dyn Exporter> {
    if let Some(p) = cfg.output_paths.iter().find(|p| *p != "stdout") {
        return Err(DecodeError::new(
            "output_paths",
            format!("`{p}`: only stdout is supported"),
        ));
    }
    Ok(Box::new(DebugExporter { cfg }))
}

fn build(v: &Value) -> BuildResult<dyn Exporter> {
    check(config::decode(v)?)
}

fn build_logging(v: &Value) -> BuildResult<dyn Exporter> {
    let old: LoggingConfig = config::decode(v)?;
    let verbosity = match old.loglevel.as_deref() {
        None => old.verbosity,
        Some("debug") => Verbosity::Detailed,
        Some("info" | "warn" | "error") => Verbosity::Basic,
        Some(other) => {
            return Err(DecodeError::new(
                "loglevel",
                format!("unknown level `{other}`: expected debug, info, warn or error"),
            ))
        }
    };
    tracing::warn!("The `logging` exporter is deprecated in the collector; use `debug` (same settings, `verbosity` instead of `loglevel`).");
    check(DebugConfig {
        verbosity,
        sampling_initial: old.sampling_initial,
        sampling_thereafter: old.sampling_thereafter,
        ..DebugConfig::default()
    })
}

pub struct DebugExporter {
    cfg: DebugConfig,
}

/// The text printed after the summary line at `verbosity`, if any.
pub fn dump(s: &Signal, verbosity: Verbosity) -> Option<String> {
    let text = match (verbosity, s) {
        (Verbosity::Basic, _) => return None,
        (Verbosity::Normal, Signal::Traces(v)) => text::normal_traces(v),
        (Verbosity::Normal, Signal::Metrics(v)) => text::normal_metrics(v),
        (Verbosity::Normal, Signal::Logs(v)) => text::normal_logs(v),
        (Verbosity::Detailed, Signal::Traces(v)) => text::detailed_traces(v),
        (Verbosity::Detailed, Signal::Metrics(v)) => text::detailed_metrics(v),
        (Verbosity::Detailed, Signal::Logs(v)) => text::detailed_logs(v),
        (Verbosity::Normal, Signal::Celery(_)) => return None,
        (Verbosity::Detailed, Signal::Celery(ev)) => format!("{ev:#?}"),
        // Its input decodes wire-form batches; one handed over by hand has no typed content.
        (_, Signal::Encoded(_)) => return None,
    };
    Some(text)
}

/// zap's sampler: per one-second tick, the first `initial` messages pass, then every
/// `thereafter`-th (0: none).
struct Sampler {
    initial: u32,
    thereafter: u32,
    tick: Instant,
    seen: u32,
}

impl Sampler {
    fn new(initial: u32, thereafter: u32) -> Sampler {
        Sampler {
            initial,
            thereafter,
            tick: Instant::now(),
            seen: 0,
        }
    }

    fn pass(&mut self, now: Instant) -> bool {
        if now.duration_since(self.tick) >= Duration::from_secs(1) {
            self.tick = now;
            self.seen = 0;
        }
        self.seen += 1;
        if self.seen <= self.initial {
            return true;
        }
        self.thereafter > 0 && (self.seen - self.initial) % self.thereafter == 0
    }
}

fn counts(s: &Signal) -> (usize, usize, usize) {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    match s {
        Signal::Traces(v) => (v.len(), s.item_count(), 0),
        Signal::Logs(v) => (v.len(), s.item_count(), 0),
        Signal::Metrics(v) => {
            let metrics = v
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics);
            let n = metrics.clone().count();
            let points = metrics
                .map(|m| match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(x)) => x.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(x)) => x.data_points.len(),
                    None => 0,
                })
                .sum();
            (v.len(), n, points)
        }
        Signal::Celery(ev) => (0, ev.len(), 0),
        Signal::Encoded(e) => (0, e.items as usize, 0),
    }
}

impl Exporter for DebugExporter {
    fn run(self: Box<Self>, ctx: Context, input: Input) -> BoxRun {
        Box::pin(async move {
            let mut sampler = Sampler::new(self.cfg.sampling_initial, self.cfg.sampling_thereafter);
            while let Some(batch) = input.recv().await {
                if !sampler.pass(Instant::now()) {
                    continue;
                }
                let id = &*ctx.id;
                match (&batch, counts(&batch)) {
                    (Signal::Traces(_), (r, n, _)) => {
                        tracing::info!(component = id, resource_spans = r, spans = n, "Traces")
                    }
                    (Signal::Logs(_), (r, n, _)) => {
                        tracing::info!(component = id, resource_logs = r, log_records = n, "Logs")
                    }
                    (Signal::Metrics(_), (r, n, p)) => {
                        tracing::info!(
                            component = id,
                            resource_metrics = r,
                            metrics = n,
                            data_points = p,
                            "Metrics"
                        )
                    }
                    (Signal::Celery(_), (_, n, _)) => {
                        tracing::info!(component = id, events = n, "Celery events")
                    }
                    (Signal::Encoded(e), (_, n, _)) => {
                        tracing::info!(component = id, signal = %e.kind, items = n, "Undecoded batch")
                    }
                }
                if let Some(text) = dump(&batch, self.cfg.verbosity) {
                    if self.cfg.use_internal_logger {
                        tracing::info!(component = id, "{text}");
                    } else {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(text.as_bytes());
                        let _ = out.flush();
                    }
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
