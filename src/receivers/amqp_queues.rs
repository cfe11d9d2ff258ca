//! `amqp_queues` receiver: the depth of Celery queues on a RabbitMQ broker.
//!
//! It owns the polling loop. Every `interval` it asks RabbitMQ about each queue with a passive
//! `queue.declare` (which never creates anything) and emits two OTLP Gauges per queue:
//!
//! * `celery_queue_length{queue_name}`: the `message_count` of the reply, i.e. the messages
//!   *ready* for delivery (not those delivered and awaiting acknowledgement), the same metric name
//!   as `redis_queues` and celery-exporter;
//! * `celery_active_consumer_count{queue_name}`: the reply's `consumer_count` (celery-exporter's
//!   metric of that name).
//!
//! A queue that does not exist (no worker declared it yet) reads 0 for both and is logged once
//! (again only after it existed in between), never as an error loop. RabbitMQ answers a passive
//! declare of a missing queue by closing the channel (404), so the receiver opens a new channel
//! for the next queue; the connection stays.
//!
//! When RabbitMQ is unreachable the receiver keeps running: it counts
//! `celeriac_receiver_errors_total{component, reason}` (`connect`, `poll`), warns at most once per
//! 30 s, reconnects with exponential backoff (100 ms to 5 s, reset after a successful poll),
//! moves along the failover list, and emits nothing it could not measure.
//!
//! # Configuration
//!
//! ```yaml
//! receivers:
//!   amqp_queues:
//!     endpoint: amqp://guest:guest@127.0.0.1:5672//   # kombu URL or a failover list; amqps:// for TLS
//!     tls: { ca_file: …, cert_file: …, key_file: … }   # amqps:// only
//!     queues: [celery]                                # queue names to measure
//!     interval: 5s
//!     connect_timeout: 5s
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use serde::{Deserialize, Serialize};

use crate::amqp::{self, Endpoint, Tls};
use crate::component::{BoxRun, BuildResult, Context, Factory, Output, Receiver, Registration};
use crate::config::{self, types, DecodeError, Value};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::Throttle;
use crate::tls::ClientTlsConfig;

pub const REGISTRATION: Registration = Registration {
    type_name: "amqp_queues",
    factory: Factory::Receiver {
        produces: &[SignalKind::Metrics],
        build,
    },
    defaults: crate::component::defaults::<AmqpQueuesConfig>,
};

/// Ready messages per queue.
pub const LENGTH_METRIC: &str = "celery_queue_length";
/// Consumers per queue.
pub const CONSUMERS_METRIC: &str = "celery_active_consumer_count";

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpQueuesConfig {
    #[serde(deserialize_with = "types::one_or_many::deserialize")]
    pub endpoint: Vec<String>,
    pub tls: ClientTlsConfig,
    pub queues: Vec<String>,
    #[serde(with = "types::duration")]
    pub interval: Duration,
    #[serde(with = "types::duration")]
    pub connect_timeout: Duration,
}

impl Default for AmqpQueuesConfig {
    fn default() -> Self {
        AmqpQueuesConfig {
            endpoint: vec!["amqp://guest:guest@127.0.0.1:5672//".into()],
            tls: ClientTlsConfig::default(),
            queues: vec!["celery".into()],
            interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Receiver> {
    let cfg: AmqpQueuesConfig = config::decode(v)?;
    let endpoints =
        amqp::endpoints(&cfg.endpoint, "endpoint").map_err(|(k, m)| DecodeError::new(&k, m))?;
    let tls = if endpoints.iter().any(Endpoint::tls) {
        Tls::load(&cfg.tls).map_err(|(k, m)| DecodeError::new(&k, m))?
    } else if cfg.tls.is_set() {
        return Err(DecodeError::new(
            "tls",
            "TLS settings need an amqps:// endpoint",
        ));
    } else {
        Tls::default()
    };
    if cfg.queues.is_empty() {
        return Err(DecodeError::new("queues", "must name at least one queue"));
    }
    if let Some(i) = cfg.queues.iter().position(|q| q.is_empty()) {
        return Err(DecodeError::new(
            format!("queues[{i}]"),
            "must not be empty",
        ));
    }
    if cfg.interval.is_zero() {
        return Err(DecodeError::new("interval", "must be greater than 0"));
    }
    Ok(Box::new(AmqpQueues {
        endpoints,
        tls,
        cfg,
    }))
}

pub struct AmqpQueues {
    endpoints: Vec<Endpoint>,
    tls: Tls,
    cfg: AmqpQueuesConfig,
}

/// One queue's depth.
struct Depth {
    messages: u32,
    consumers: u32,
}

/// Why a poll failed (the connection is then dropped and reopened).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PollError(lapin::Error);

impl AmqpQueues {
    /// One passive declare per queue; `None` for a missing queue.
    async fn poll(
        &self,
        conn: &lapin::Connection,
        channel: &mut Option<lapin::Channel>,
    ) -> Result<Vec<Option<Depth>>, PollError> {
        let mut out = Vec::with_capacity(self.cfg.queues.len());
        for q in &self.cfg.queues {
            let d = amqp::queue_depth(conn, channel, q)
                .await
                .map_err(PollError)?;
            out.push(d.map(|(messages, consumers)| Depth {
                messages,
                consumers,
            }));
        }
        Ok(out)
    }
}

fn gauge(name: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
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

/// The two gauges for the queues measured: `(name, ready messages, consumers)`.
fn depth_metrics(queues: &[(&str, u32, u32)], now_unix_nano: u64) -> ResourceMetrics {
    let point = |name: &str, v: u32| NumberDataPoint {
        attributes: vec![KeyValue {
            key: "queue_name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(name.to_string())),
            }),
            ..Default::default()
        }],
        time_unix_nano: now_unix_nano,
        value: Some(number_data_point::Value::AsInt(i64::from(v))),
        ..Default::default()
    };
    let mut consumers = gauge(
        CONSUMERS_METRIC,
        "Consumers of the queue.",
        queues.iter().map(|(n, _, c)| point(n, *c)).collect(),
    );
    consumers.unit = "{consumer}".into();
    ResourceMetrics {
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "celeriac.amqp_queues".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            metrics: vec![
                gauge(
                    LENGTH_METRIC,
                    "Messages ready for delivery in the queue.",
                    queues.iter().map(|(n, m, _)| point(n, *m)).collect(),
                ),
                consumers,
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Receiver for AmqpQueues {
    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            let errors = |reason: &str| {
                ctx.telemetry.counter(
                    "celeriac_receiver_errors_total",
                    "Receiver errors, by reason.",
                    &[("component", &ctx.id), ("reason", reason)],
                )
            };
            let (connect_errors, poll_errors) = (errors("connect"), errors("poll"));
            let mut warn = Throttle::new(WARN_EVERY);
            let mut missing: HashSet<String> = HashSet::new();
            let mut current = 0usize;
            let mut backoff = BACKOFF_MIN;
            let mut ticker = tokio::time::interval(self.cfg.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tracing::info!(component = %ctx.id, endpoint = %self.endpoints[0].redacted(), queues = ?self.cfg.queues, interval = ?self.cfg.interval, "Polling Celery queue depths on RabbitMQ.");
            let conn_name = format!("celeriac {}", ctx.id);
            'outer: loop {
                let ep = &self.endpoints[current];
                let conn = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    r = amqp::connect(ep, &self.tls, self.cfg.connect_timeout, &conn_name) => r,
                };
                let conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        connect_errors.inc();
                        if let Some(suppressed) = warn.ready() {
                            tracing::warn!(component = %ctx.id, endpoint = %ep.redacted(), error = %e, suppressed, "Cannot connect to RabbitMQ to read queue depths; retrying.");
                        }
                        current = (current + 1) % self.endpoints.len();
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                };
                let mut channel = None;
                loop {
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => {
                            let _ = conn.close(200, "shutdown").await;
                            break 'outer;
                        }
                        _ = ticker.tick() => {}
                    }
                    let polled = tokio::time::timeout(
                        self.cfg.connect_timeout.max(self.cfg.interval),
                        self.poll(&conn, &mut channel),
                    )
                    .await;
                    let depths = match polled {
                        Ok(Ok(d)) => d,
                        Ok(Err(e)) => {
                            poll_errors.inc();
                            if let Some(suppressed) = warn.ready() {
                                tracing::warn!(component = %ctx.id, endpoint = %ep.redacted(), error = %e, suppressed, "Cannot read queue depths from RabbitMQ; reconnecting.");
                            }
                            break;
                        }
                        Err(_) => {
                            poll_errors.inc();
                            if let Some(suppressed) = warn.ready() {
                                tracing::warn!(component = %ctx.id, endpoint = %ep.redacted(), suppressed, "RabbitMQ did not answer the queue depth poll in time; reconnecting.");
                            }
                            break;
                        }
                    };
                    backoff = BACKOFF_MIN;
                    let measured: Vec<(&str, u32, u32)> = self
                        .cfg
                        .queues
                        .iter()
                        .zip(depths)
                        .map(|(q, d)| match d {
                            Some(d) => {
                                missing.remove(q);
                                (q.as_str(), d.messages, d.consumers)
                            }
                            None => {
                                if missing.insert(q.clone()) {
                                    tracing::info!(component = %ctx.id, endpoint = %ep.redacted(), queue = %q, "Queue does not exist (yet); reporting 0 until it does.");
                                }
                                (q.as_str(), 0, 0)
                            }
                        })
                        .collect();
                    let rm = depth_metrics(&measured, unix_nanos());
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => break 'outer,
                        r = out.send(Signal::Metrics(Arc::new(vec![rm]))) => if r.is_err() { break 'outer },
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.close(0, "reconnecting"))
                    .await;
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_key() {
        let bad = |y: &str| {
            build(&serde_yaml_ng::from_str(y).unwrap())
                .err()
                .map(|e| e.path)
        };
        assert_eq!(bad("queues: []").as_deref(), Some("queues"));
        assert_eq!(bad("queues: [a, '']").as_deref(), Some("queues[1]"));
        assert_eq!(bad("interval: 0s").as_deref(), Some("interval"));
        assert_eq!(bad("endpoint: redis://x").as_deref(), Some("endpoint"));
        assert!(bad("endpoint: amqp://x/shop\nqueues: [celery, mail]").is_none());
    }

    #[test]
    fn both_gauges_per_queue() {
        let rm = depth_metrics(&[("celery", 7, 2), ("mail", 0, 0)], 1);
        let m = &rm.scope_metrics[0].metrics;
        assert_eq!(m[0].name, LENGTH_METRIC);
        assert_eq!(m[1].name, CONSUMERS_METRIC);
        let Some(metric::Data::Gauge(g)) = &m[0].data else {
            panic!("gauge")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsInt(7))
        );
    }
}
