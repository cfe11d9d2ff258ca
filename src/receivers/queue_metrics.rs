//! The OTLP shapes the two queue-depth receivers (`redis_queues`, `amqp_queues`) both emit: one
//! gauge data point per queue (attribute `queue_name`), gauges, and the resource wrapping them
//! with the receiver's instrumentation scope.

use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};

use crate::otlp::{self, str_kv};

/// One data point `{queue_name}` at `now_unix_nano`.
pub fn point(queue: &str, value: number_data_point::Value, now_unix_nano: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![str_kv("queue_name", queue)],
        time_unix_nano: now_unix_nano,
        value: Some(value),
        ..Default::default()
    }
}

/// A gauge of `points` (unit `{message}`).
pub fn gauge(name: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: description.into(),
        unit: "{message}".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

/// `metrics` under the instrumentation scope `scope` (this crate's version).
pub fn resource(scope: &str, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        scope_metrics: vec![ScopeMetrics {
            scope: Some(otlp::scope(scope)),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}
