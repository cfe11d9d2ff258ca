//! `internal_metrics` receiver: the agent's own metrics (everything on the telemetry endpoint's
//! `/metrics`) as OTLP metrics in a pipeline, so they can go wherever the Celery metrics go
//! (remote write, OTLP) instead of being scraped separately.
//!
//! ```yaml
//! receivers:
//!   internal_metrics:
//!     interval: 10s      # how often the current values are emitted
//! service:
//!   pipelines:
//!     metrics/self: { receivers: [internal_metrics], exporters: [prometheus_remote_write] }
//! ```
//!
//! Counters become cumulative monotonic Sums (start time: when the receiver started), gauges
//! become Gauges; labels become attributes; the resource's `service.name` is `celeriac`. Each
//! emission is one batch sent with backpressure, so nothing is dropped here.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, Sum,
};
use serde::{Deserialize, Serialize};

use crate::component::{BoxRun, Context, Output, Receiver};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, DecodeError, Value};
use crate::otlp::{self, str_kv, unix_nanos};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::FamilySnapshot;

pub const REGISTRATION: Registration = Registration {
    type_name: "internal_metrics",
    factory: Factory::Receiver {
        produces: &[SignalKind::Metrics],
        build,
    },
    defaults: crate::component::defaults::<InternalMetricsConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InternalMetricsConfig {
    /// Time between emissions.
    #[serde(with = "types::duration")]
    pub interval: Duration,
}

impl Default for InternalMetricsConfig {
    fn default() -> Self {
        InternalMetricsConfig {
            interval: Duration::from_secs(10),
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Receiver> {
    let cfg: InternalMetricsConfig = config::decode(v)?;
    if cfg.interval.is_zero() {
        return Err(DecodeError::new("interval", "must be greater than 0s"));
    }
    Ok(Box::new(InternalMetrics { cfg }))
}

pub struct InternalMetrics {
    cfg: InternalMetricsConfig,
}

impl Receiver for InternalMetrics {
    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            let start = unix_nanos();
            let mut tick = tokio::time::interval(self.cfg.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tick.tick() => {
                        let batch = to_otlp(&ctx.telemetry.snapshot(), start, unix_nanos());
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => return Ok(()),
                            r = out.send(Signal::Metrics(Arc::new(vec![batch]))) => {
                                if r.is_err() {
                                    return Ok(());
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

/// The families as one OTLP resource of metrics.
fn to_otlp(families: &[FamilySnapshot], start: u64, now: u64) -> ResourceMetrics {
    let metrics = families
        .iter()
        .map(|f| {
            let data_points = f
                .series
                .iter()
                .map(|(labels, v)| NumberDataPoint {
                    attributes: labels.iter().map(|(k, v)| str_kv(k, v)).collect(),
                    start_time_unix_nano: if f.counter { start } else { 0 },
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsDouble(*v)),
                    ..Default::default()
                })
                .collect();
            let data = if f.counter {
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })
            } else {
                metric::Data::Gauge(Gauge { data_points })
            };
            Metric {
                name: f.name.to_string(),
                description: f.help.to_string(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect();
    otlp::resource_metrics(
        vec![str_kv("service.name", "celeriac")],
        "celeriac.internal_metrics",
        metrics,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

    #[test]
    fn counters_become_monotonic_sums_and_gauges_gauges() {
        let t = Telemetry::new();
        t.counter("celeriac_a_total", "A.", &[("component", "receiver/x")])
            .add(7);
        t.gauge("celeriac_b", "B.", &[]).set(3);
        t.observe("celeriac_c", "C.", &[("component", "exporter/y")], || 5);
        let rm = to_otlp(&t.snapshot(), 10, 20);
        let m = &rm.scope_metrics[0].metrics;
        assert_eq!(m.len(), 3);
        let Some(metric::Data::Sum(sum)) = &m[0].data else {
            panic!("{:?}", m[0]);
        };
        assert_eq!(m[0].name, "celeriac_a_total");
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &sum.data_points[0];
        assert_eq!(p.value, Some(number_data_point::Value::AsDouble(7.0)));
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10, 20));
        assert_eq!(p.attributes, vec![str_kv("component", "receiver/x")]);
        for (i, want) in [(1, 3.0), (2, 5.0)] {
            let Some(metric::Data::Gauge(g)) = &m[i].data else {
                panic!("{:?}", m[i]);
            };
            assert_eq!(
                g.data_points[0].value,
                Some(number_data_point::Value::AsDouble(want))
            );
        }
    }

    #[test]
    fn zero_interval_is_refused() {
        let v: Value = serde_yaml_ng::from_str("interval: 0s").unwrap();
        assert!(build(&v).is_err());
    }
}
