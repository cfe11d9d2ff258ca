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
//! With `management` set, it also reads RabbitMQ's management HTTP API
//! (`GET /api/queues/<vhost>?columns=…`, one request per poll, the `rabbitmq_management`
//! plugin) and emits, per queue:
//!
//! * `celery_queue_unacknowledged_messages{queue_name}`: `messages_unacknowledged`, the messages
//!   delivered to a worker (prefetched or running) and not yet acknowledged;
//! * `celery_queue_oldest_message_age_seconds{queue_name}`: now minus `head_message_timestamp`,
//!   **only when RabbitMQ reports one**. RabbitMQ copies that value from the AMQP `timestamp`
//!   property of the message at the head of the queue; Celery (kombu) does not set that property,
//!   so for plain Celery queues the field is absent and no age is emitted (a publisher that sets
//!   `timestamp`, or the `rabbitmq_message_timestamp` plugin, makes it appear). It is also absent
//!   while the head message is paged out to disk, and for quorum queues and streams.
//!
//! The management figures are RabbitMQ's statistics, refreshed every
//! `collect_statistics_interval` (5 s by default), so they lag the passive declares by up to that
//! much. A failed management request counts `reason="management"` and the AMQP gauges are still
//! emitted.
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
//!     management:                                     # optional: the management HTTP API
//!       endpoint: http://127.0.0.1:15672              # https:// with tls below
//!       username: guest
//!       password: ${env:RABBITMQ_PASSWORD}
//!       tls: { ca_file: … }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use opentelemetry_proto::tonic::metrics::v1::{number_data_point, ResourceMetrics};
use serde::{Deserialize, Serialize};

use super::queue_metrics::{gauge, point, resource};
use crate::amqp::{self, Endpoint, Tls};
use crate::component::{BoxRun, BuildResult, Context, Factory, Output, Receiver, Registration};
use crate::config::types::Secret;
use crate::config::{self, types, DecodeError, Value};
use crate::otlp::unix_nanos;
use crate::receivers::prometheus::scrape::{self, HttpClient, ScrapeError};
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
/// Delivered, unacknowledged messages per queue (management API).
pub const UNACKED_METRIC: &str = "celery_queue_unacknowledged_messages";
/// Age of the message at the head of the queue (management API, when RabbitMQ has it).
pub const AGE_METRIC: &str = "celery_queue_oldest_message_age_seconds";
/// The management API's answer is one small JSON object per queue of the vhost.
const MANAGEMENT_BODY_LIMIT: usize = 16 << 20;

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
    pub management: Option<ManagementConfig>,
}

/// RabbitMQ's management HTTP API (`rabbitmq_management` plugin).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// `http://host:15672` (or `https://`), with an optional path prefix.
    pub endpoint: String,
    pub username: String,
    pub password: Secret,
    #[serde(default)]
    pub tls: ClientTlsConfig,
}

impl Default for AmqpQueuesConfig {
    fn default() -> Self {
        AmqpQueuesConfig {
            endpoint: vec!["amqp://guest:guest@127.0.0.1:5672//".into()],
            tls: ClientTlsConfig::default(),
            queues: vec!["celery".into()],
            interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            management: None,
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
    let management = match &cfg.management {
        Some(m) => Some(Management::new(m, cfg.connect_timeout.max(cfg.interval))?),
        None => None,
    };
    Ok(Box::new(AmqpQueues {
        endpoints,
        tls,
        management,
        cfg,
    }))
}

pub struct AmqpQueues {
    endpoints: Vec<Endpoint>,
    tls: Tls,
    management: Option<Management>,
    cfg: AmqpQueuesConfig,
}

/// A client of the management API.
struct Management {
    /// `scheme://authority[/prefix]`, no trailing `/`.
    base: String,
    auth: String,
    client: HttpClient,
    timeout: Duration,
}

/// What the management API adds for one queue.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Extra {
    unacked: u64,
    /// Seconds since the epoch (RabbitMQ's `head_message_timestamp`), when reported.
    head_timestamp: Option<f64>,
}

/// Why the management API could not be read.
#[derive(Debug, thiserror::Error)]
enum ManagementError {
    #[error("{0}")]
    Fetch(#[from] ScrapeError),
    #[error("unexpected answer: {0}")]
    Json(#[from] serde_json::Error),
}

impl Management {
    fn new(m: &ManagementConfig, timeout: Duration) -> Result<Management, DecodeError> {
        let uri: hyper::Uri = m
            .endpoint
            .parse()
            .map_err(|e| DecodeError::new("management.endpoint", format!("invalid URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(DecodeError::new(
                    "management.endpoint",
                    "expected http://host:15672 or https://…",
                ))
            }
        };
        if uri.authority().is_none() || uri.query().is_some() {
            return Err(DecodeError::new(
                "management.endpoint",
                "expected http://host:15672 (no query)",
            ));
        }
        let tls = if https {
            Some(
                m.tls
                    .client_config(&[b"http/1.1"])
                    .map_err(|e| DecodeError::new("management.tls", e.to_string()))?,
            )
        } else if m.tls.is_set() {
            return Err(DecodeError::new(
                "management.tls",
                "TLS settings need an https:// endpoint",
            ));
        } else {
            None
        };
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                m.username,
                m.password.expose()
            ))
        );
        Ok(Management {
            base: m.endpoint.trim_end_matches('/').to_string(),
            auth,
            client: scrape::client(tls, timeout),
            timeout,
        })
    }

    /// The queues of `vhost`: name → what the management API adds.
    async fn poll(&self, vhost: &str) -> Result<HashMap<String, Extra>, ManagementError> {
        let url = format!(
            "{}/api/queues/{}?columns=name,messages_unacknowledged,head_message_timestamp",
            self.base,
            percent_encode(vhost)
        );
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| ScrapeError::Connect(e.to_string()))?;
        let (text, _) = scrape::fetch(
            &self.client,
            &uri,
            Some(&self.auth),
            self.timeout,
            MANAGEMENT_BODY_LIMIT,
        )
        .await?;
        parse_management(&text)
    }
}

/// One element of `GET /api/queues/<vhost>`.
#[derive(Deserialize)]
struct ManagedQueue {
    name: String,
    #[serde(default)]
    messages_unacknowledged: Option<u64>,
    #[serde(default)]
    head_message_timestamp: Option<f64>,
}

fn parse_management(text: &str) -> Result<HashMap<String, Extra>, ManagementError> {
    let queues: Vec<ManagedQueue> = serde_json::from_str(text)?;
    Ok(queues
        .into_iter()
        .map(|q| {
            (
                q.name,
                Extra {
                    unacked: q.messages_unacknowledged.unwrap_or(0),
                    head_timestamp: q.head_message_timestamp,
                },
            )
        })
        .collect())
}

/// A path segment as the management API takes a vhost (`/` is `%2F`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

/// What was measured of one queue.
struct Figures<'a> {
    name: &'a str,
    ready: u32,
    consumers: u32,
    /// From the management API, when configured and it answered.
    extra: Option<Extra>,
}

/// The gauges for the queues measured: length and consumers always, unacknowledged messages
/// and the head message's age where the management API gave them.
fn depth_metrics(queues: &[Figures<'_>], now_unix_nano: u64) -> ResourceMetrics {
    let at = |name: &str, v: number_data_point::Value| point(name, v, now_unix_nano);
    let int = |v: u64| number_data_point::Value::AsInt(i64::try_from(v).unwrap_or(i64::MAX));
    let now_secs = now_unix_nano as f64 / 1e9;
    let mut consumers = gauge(
        CONSUMERS_METRIC,
        "Consumers of the queue.",
        queues
            .iter()
            .map(|q| at(q.name, int(q.consumers.into())))
            .collect(),
    );
    consumers.unit = "{consumer}".into();
    let mut metrics = vec![
        gauge(
            LENGTH_METRIC,
            "Messages ready for delivery in the queue.",
            queues
                .iter()
                .map(|q| at(q.name, int(q.ready.into())))
                .collect(),
        ),
        consumers,
    ];
    let unacked: Vec<_> = queues
        .iter()
        .filter_map(|q| Some(at(q.name, int(q.extra?.unacked))))
        .collect();
    if !unacked.is_empty() {
        metrics.push(gauge(
            UNACKED_METRIC,
            "Messages delivered to consumers and not yet acknowledged (RabbitMQ management API).",
            unacked,
        ));
    }
    let ages: Vec<_> = queues
        .iter()
        .filter_map(|q| {
            let ts = q.extra?.head_timestamp?;
            Some(at(
                q.name,
                number_data_point::Value::AsDouble((now_secs - ts).max(0.0)),
            ))
        })
        .collect();
    if !ages.is_empty() {
        let mut age = gauge(
            AGE_METRIC,
            "Age of the message at the head of the queue, from its AMQP timestamp property (RabbitMQ management API's head_message_timestamp).",
            ages,
        );
        age.unit = "s".into();
        metrics.push(age);
    }
    resource("celeriac.amqp_queues", metrics)
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
            let management_errors = errors("management");
            let mut management_warn = Throttle::new(WARN_EVERY);
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
                    let extras = match &self.management {
                        None => None,
                        Some(m) => match m.poll(ep.vhost()).await {
                            Ok(x) => Some(x),
                            Err(e) => {
                                management_errors.inc();
                                if let Some(suppressed) = management_warn.ready() {
                                    tracing::warn!(component = %ctx.id, endpoint = %m.base, error = %e, suppressed, "Cannot read queue statistics from the RabbitMQ management API; retrying next interval.");
                                }
                                None
                            }
                        },
                    };
                    let extra = |q: &str| {
                        extras.as_ref().map(|x| {
                            x.get(q).copied().unwrap_or(Extra {
                                unacked: 0,
                                head_timestamp: None,
                            })
                        })
                    };
                    let measured: Vec<Figures<'_>> = self
                        .cfg
                        .queues
                        .iter()
                        .zip(depths)
                        .map(|(q, d)| match d {
                            Some(d) => {
                                missing.remove(q);
                                Figures {
                                    name: q,
                                    ready: d.messages,
                                    consumers: d.consumers,
                                    extra: extra(q),
                                }
                            }
                            None => {
                                if missing.insert(q.clone()) {
                                    tracing::info!(component = %ctx.id, endpoint = %ep.redacted(), queue = %q, "Queue does not exist (yet); reporting 0 until it does.");
                                }
                                Figures {
                                    name: q,
                                    ready: 0,
                                    consumers: 0,
                                    extra: extra(q),
                                }
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
    use opentelemetry_proto::tonic::metrics::v1::metric;

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

    fn figures(name: &str, ready: u32, consumers: u32, extra: Option<Extra>) -> Figures<'_> {
        Figures {
            name,
            ready,
            consumers,
            extra,
        }
    }

    #[test]
    fn management_settings_are_checked() {
        let bad = |y: &str| {
            build(&serde_yaml_ng::from_str(y).unwrap())
                .err()
                .map(|e| e.path)
        };
        let m = "management: {endpoint: http://127.0.0.1:15672, username: u, password: p";
        assert!(bad(&format!("{m}}}")).is_none());
        assert_eq!(
            bad("management: {endpoint: 'ftp://x', username: u, password: p}").as_deref(),
            Some("management.endpoint")
        );
        assert_eq!(
            bad(&format!("{m}, tls: {{ca_file: /x.pem}}}}")).as_deref(),
            Some("management.tls")
        );
        assert!(bad("management: {endpoint: http://x}").is_some());
    }

    #[test]
    fn management_answers_parse() {
        let x = parse_management(
            r#"[{"name":"celery","messages_unacknowledged":3,"head_message_timestamp":1700000000},
                {"name":"mail"}]"#,
        )
        .unwrap();
        assert_eq!(
            x["celery"],
            Extra {
                unacked: 3,
                head_timestamp: Some(1.7e9)
            }
        );
        assert_eq!(x["mail"].head_timestamp, None);
        assert!(parse_management("{\"error\":\"not_authorised\"}").is_err());
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("shop-1"), "shop-1");
    }

    #[test]
    fn management_gauges_only_where_measured() {
        let extra = Extra {
            unacked: 4,
            head_timestamp: Some(100.0),
        };
        let rm = depth_metrics(
            &[
                figures("celery", 7, 2, Some(extra)),
                figures("mail", 0, 0, None),
            ],
            110_000_000_000,
        );
        let m = &rm.scope_metrics[0].metrics;
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].name, UNACKED_METRIC);
        assert_eq!(m[3].name, AGE_METRIC);
        let Some(metric::Data::Gauge(g)) = &m[3].data else {
            panic!("gauge")
        };
        assert_eq!(g.data_points.len(), 1);
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(10.0))
        );
        let plain = depth_metrics(&[figures("celery", 1, 0, None)], 1);
        assert_eq!(plain.scope_metrics[0].metrics.len(), 2);
    }

    #[test]
    fn both_gauges_per_queue() {
        let rm = depth_metrics(
            &[figures("celery", 7, 2, None), figures("mail", 0, 0, None)],
            1,
        );
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
