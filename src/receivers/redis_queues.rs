//! `redis_queues` receiver: the length of Celery queues on a Redis broker, polled with `LLEN`.
//!
//! It owns the naming of kombu's Redis lists and the polling loop. Every `interval` it sends one
//! pipelined round trip of `LLEN` over every queue and its priority sub-queues, and emits the
//! OTLP Gauge `celery_queue_length{queue_name}` whose value is the sum over all priorities
//! (celery-exporter counts the priority-0 list only, celery-exporter#272).
//!
//! kombu's Redis transport keeps a message of priority `p` in the list `<queue><sep><p>` when
//! `p` maps to a non-zero priority step, and in `<queue>` itself for step 0 (`_q_for_pri` in
//! `kombu/transport/redis.py`), every key prefixed with the `global_keyprefix` transport option.
//! With the defaults, `celery` is measured as `LLEN celery` + `LLEN celery\x06\x163` +
//! `LLEN celery\x06\x166` + `LLEN celery\x06\x169`.
//!
//! When Redis is unreachable or answers with an error the receiver keeps running: it counts
//! `celeriac_receiver_errors_total{component, reason}` (`connect`, `io`, `timeout`, `server`),
//! warns at most once per 30 s, reconnects with exponential backoff (100 ms to 5 s, after every
//! failure or loss, reset only by a connection that served 10 s) and emits nothing for what it
//! could not measure (never a made-up zero).
//!
//! # Configuration
//!
//! ```yaml
//! receivers:
//!   redis_queues:
//!     endpoint: redis://127.0.0.1:6379/0   # the broker URL (user/password allowed, never logged)
//!                                          # or a failover list (the next is tried when one
//!                                          # cannot be reached), rediss:// for TLS
//!     tls: { ca_file: …, cert_file: …, key_file: … }   # rediss:// only; ca_file replaces the
//!                                                      # system roots (the redis crate's rule)
//!     queues: [celery]                     # queue names to measure
//!     interval: 5s                         # time between polls
//!     priority_steps: [0, 3, 6, 9]         # kombu's `priority_steps` transport option
//!     priority_separator: "\x06\x16"       # kombu's `sep` (`<queue><sep><priority>`)
//!     global_keyprefix: ""                 # kombu's `global_keyprefix` transport option
//!     # Sentinel (as celery_redis): endpoint "sentinel://h1:26379;sentinel://h2:26379/0",
//!     # master_name, sentinel_password, sentinel_tls; the node is checked with ROLE before
//!     # every poll and the sentinels asked again when it is no longer the master.
//! ```

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::{number_data_point, ResourceMetrics};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RedisResult};
use serde::{Deserialize, Serialize};

use super::queue_metrics::{gauge, point, resource};
use crate::component::{BoxRun, Context, Output, Receiver};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, DecodeError, Value};
use crate::exporters::backoff::Reconnect;
use crate::otlp::unix_nanos;
use crate::redis_broker::{check_role, Broker, RoleError, Settings};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::{Telemetry, Throttle};
use crate::tls::ClientTlsConfig;

pub const REGISTRATION: Registration = Registration {
    type_name: "redis_queues",
    factory: Factory::Receiver {
        produces: &[SignalKind::Metrics],
        build,
    },
    defaults: crate::component::defaults::<RedisQueuesConfig>,
};

/// The metric this receiver emits.
pub const METRIC_NAME: &str = "celery_queue_length";

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that served this long resets the backoff.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(10);
const WARN_EVERY: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisQueuesConfig {
    /// Redis URLs of the broker (a failover list).
    #[serde(deserialize_with = "types::one_or_many::deserialize")]
    pub endpoint: Vec<String>,
    pub tls: ClientTlsConfig,
    /// Queue names to measure.
    pub queues: Vec<String>,
    /// Time between polls.
    #[serde(with = "types::duration")]
    pub interval: Duration,
    /// kombu's `priority_steps`: one list per step, step 0 being the queue's own list.
    pub priority_steps: Vec<u32>,
    /// kombu's separator between a queue name and its priority.
    pub priority_separator: String,
    /// kombu's `global_keyprefix`, prepended to every key.
    pub global_keyprefix: String,
    /// kombu's `master_name`: required with a `sentinel://` endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// The sentinels' own password (the data nodes' stays in the URL).
    #[serde(
        default,
        deserialize_with = "types::non_empty_secret::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub sentinel_password: Option<types::Secret>,
    /// TLS to the sentinels.
    pub sentinel_tls: ClientTlsConfig,
}

impl Default for RedisQueuesConfig {
    fn default() -> Self {
        RedisQueuesConfig {
            endpoint: vec!["redis://127.0.0.1:6379/0".into()],
            tls: ClientTlsConfig::default(),
            queues: vec!["celery".into()],
            interval: Duration::from_secs(5),
            priority_steps: vec![0, 3, 6, 9],
            priority_separator: "\x06\x16".into(),
            global_keyprefix: String::new(),
            master_name: None,
            sentinel_password: None,
            sentinel_tls: ClientTlsConfig::default(),
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Receiver> {
    let cfg: RedisQueuesConfig = config::decode(v)?;
    let broker = Broker::new(&Settings {
        endpoint: &cfg.endpoint,
        tls: &cfg.tls,
        master_name: cfg.master_name.as_deref(),
        sentinel_password: cfg.sentinel_password.as_ref(),
        sentinel_tls: &cfg.sentinel_tls,
    })?;
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
    if cfg.priority_steps.is_empty() {
        return Err(DecodeError::new(
            "priority_steps",
            "must list at least one step, e.g. [0, 3, 6, 9]",
        ));
    }
    if cfg.priority_separator.is_empty() && cfg.priority_steps.iter().any(|p| *p != 0) {
        return Err(DecodeError::new("priority_separator", "must not be empty"));
    }
    let queues = cfg
        .queues
        .iter()
        .map(|q| QueueKeys {
            name: q.clone(),
            keys: queue_keys(
                &cfg.global_keyprefix,
                q,
                &cfg.priority_separator,
                &cfg.priority_steps,
            ),
        })
        .collect();
    Ok(Box::new(RedisQueues {
        interval: cfg.interval,
        broker,
        queues,
    }))
}

/// The Redis keys holding `queue`'s messages, one per distinct priority step (kombu's
/// `_q_for_pri`): `<prefix><queue>` for step 0, `<prefix><queue><sep><step>` for the others.
pub fn queue_keys(prefix: &str, queue: &str, sep: &str, steps: &[u32]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(steps.len());
    for &p in steps {
        let key = if p == 0 {
            format!("{prefix}{queue}")
        } else {
            format!("{prefix}{queue}{sep}{p}")
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

struct QueueKeys {
    name: String,
    keys: Vec<String>,
}

pub struct RedisQueues {
    interval: Duration,
    /// Where the broker is (a failover list, or sentinels).
    broker: Broker,
    queues: Vec<QueueKeys>,
}

/// Why a poll or a connection failed, as the `reason` label.
fn reason(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        "io"
    } else {
        "server"
    }
}

/// Error accounting with one warning per [`WARN_EVERY`].
struct Errors<'a> {
    ctx: &'a Context,
    endpoint: String,
    warn: Throttle,
}

impl Errors<'_> {
    fn record(
        &mut self,
        telemetry: &Telemetry,
        reason: &'static str,
        error: &dyn std::fmt::Display,
        what: &str,
    ) {
        telemetry
            .counter(
                "celeriac_receiver_errors_total",
                "Receiver errors (connect, protocol).",
                &[("component", &self.ctx.id), ("reason", reason)],
            )
            .inc();
        if let Some(suppressed) = self.warn.ready() {
            tracing::warn!(component = %self.ctx.id, endpoint = %self.endpoint, reason, error = %error, suppressed, "{what}");
        }
    }
}

impl RedisQueues {
    /// One pipelined round trip; per queue the summed length, or `None` when one of its keys
    /// answered with an error (e.g. WRONGTYPE), together with that error.
    async fn poll(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> RedisResult<(Vec<Option<i64>>, Option<RedisError>)> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for q in &self.queues {
            for k in &q.keys {
                pipe.cmd("LLEN").arg(k);
            }
        }
        let replies: Vec<RedisResult<i64>> = pipe.query_async(conn).await?;
        let mut replies = replies.into_iter();
        let mut first_error = None;
        let lengths = self
            .queues
            .iter()
            .map(|q| {
                let mut total: Option<i64> = Some(0);
                for _ in &q.keys {
                    match replies.next() {
                        Some(Ok(n)) => total = total.map(|t| t.saturating_add(n)),
                        Some(Err(e)) => {
                            total = None;
                            first_error.get_or_insert(e);
                        }
                        None => total = None,
                    }
                }
                total
            })
            .collect();
        Ok((lengths, first_error))
    }
}

/// The `celery_queue_length` gauge for the queues measured.
fn queue_length_metrics(queues: &[(&str, i64)], now_unix_nano: u64) -> ResourceMetrics {
    let data_points = queues
        .iter()
        .map(|(name, len)| point(name, number_data_point::Value::AsInt(*len), now_unix_nano))
        .collect();
    resource(
        "celeriac.redis_queues",
        vec![gauge(
            METRIC_NAME,
            "Messages waiting in the queue, all priorities.",
            data_points,
        )],
    )
}

impl Receiver for RedisQueues {
    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            let conn_cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(
                    self.interval.clamp(Duration::from_secs(1), CONNECT_TIMEOUT),
                ));
            let mut current = 0usize;
            let mut errors = Errors {
                ctx: &ctx,
                endpoint: self.broker.describe(),
                warn: Throttle::new(WARN_EVERY),
            };
            let sentinel = self.broker.sentinels().is_some();
            let mut conn: Option<MultiplexedConnection> = None;
            let mut reconnect = Reconnect::new(BACKOFF_MIN, BACKOFF_MAX, HEALTHY_CONNECTION);
            // When the connection in use was made: a loss after a healthy period resets the backoff.
            let mut connected_at = tokio::time::Instant::now();
            let mut failing = false;
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tracing::info!(component = %ctx.id, endpoint = %self.broker.describe(), queues = self.queues.len(), interval = ?self.interval, "Polling Celery queue lengths.");
            loop {
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => {
                        // A failover list from the address that worked last, or the master the
                        // sentinels name now (asked again after every loss).
                        let r = tokio::select! {
                            _ = ctx.shutdown.cancelled() => break,
                            r = self.broker.multiplexed(current, &conn_cfg, CONNECT_TIMEOUT) => r,
                        };
                        match r {
                            Ok((c, i, ep)) => {
                                current = i;
                                errors.endpoint = ep.redacted();
                                connected_at = tokio::time::Instant::now();
                                c
                            }
                            Err(e) => {
                                failing = true;
                                errors.record(
                                    &ctx.telemetry,
                                    "connect",
                                    &e,
                                    "Cannot connect to Redis to read queue lengths; retrying.",
                                );
                                current = (current + 1) % self.broker.choices();
                                tokio::select! {
                                    _ = ctx.shutdown.cancelled() => break,
                                    _ = tokio::time::sleep(reconnect.after_failure()) => {}
                                }
                                continue;
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                if sentinel {
                    // Never read from a node the sentinels have demoted: re-resolve instead.
                    if let Err(RoleError::Replica(role)) = check_role(&mut c).await {
                        failing = true;
                        errors.record(
                            &ctx.telemetry,
                            "not_master",
                            &format!("the node is now a {role}"),
                            "The broker node is no longer the master; asking the sentinels again.",
                        );
                        continue;
                    }
                }
                let polled = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    r = self.poll(&mut c) => r,
                };
                let lengths = match polled {
                    Ok((lengths, partial)) => {
                        if let Some(e) = partial {
                            errors.record(
                                &ctx.telemetry,
                                "server",
                                &e,
                                "Redis refused to report some queue lengths.",
                            );
                        }
                        conn = Some(c);
                        lengths
                    }
                    Err(e) => {
                        failing = true;
                        let reason = reason(&e);
                        errors.record(
                            &ctx.telemetry,
                            reason,
                            &e,
                            "Cannot read queue lengths from Redis; reconnecting.",
                        );
                        if reason == "server" {
                            // The connection itself is fine (e.g. NOAUTH, READONLY): keep it.
                            conn = Some(c);
                        } else {
                            let wait = reconnect.after_loss(connected_at.elapsed());
                            tokio::select! {
                                _ = ctx.shutdown.cancelled() => break,
                                _ = tokio::time::sleep(wait) => {}
                            }
                        }
                        continue;
                    }
                };
                if failing {
                    tracing::info!(component = %ctx.id, endpoint = %errors.endpoint, "Reading queue lengths from Redis again.");
                    failing = false;
                }
                let measured: Vec<(&str, i64)> = self
                    .queues
                    .iter()
                    .zip(lengths)
                    .filter_map(|(q, n)| Some((q.name.as_str(), n?)))
                    .collect();
                if measured.is_empty() {
                    continue;
                }
                let batch = Signal::Metrics(Arc::new(vec![queue_length_metrics(
                    &measured,
                    unix_nanos(),
                )]));
                let sent = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    r = out.send(batch) => r,
                };
                if sent.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receivers::testing::{redis_on_free_port, run_receiver, start_redis, Running};
    use crate::signal::Batch;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::metrics::v1::metric;

    fn cfg(yaml: &str) -> Result<RedisQueuesConfig, DecodeError> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        build(&v)?;
        config::decode(&v)
    }

    #[test]
    fn key_naming_follows_kombu() {
        assert_eq!(
            queue_keys("", "celery", "\x06\x16", &[0, 3, 6, 9]),
            [
                "celery",
                "celery\x06\x163",
                "celery\x06\x166",
                "celery\x06\x169"
            ]
        );
        assert_eq!(
            queue_keys("app:", "q", ":", &[0, 0, 5]),
            ["app:q", "app:q:5"]
        );
        // Without a step 0 the queue's own list is not read (kombu never writes it then).
        assert_eq!(
            queue_keys("", "q", "\x06\x16", &[1, 2]),
            ["q\x06\x161", "q\x06\x162"]
        );
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = cfg("{}").unwrap();
        assert_eq!(c.endpoint, ["redis://127.0.0.1:6379/0"]);
        assert_eq!(c.queues, ["celery"]);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.priority_steps, [0, 3, 6, 9]);
        assert_eq!(c.priority_separator, "\x06\x16");
        assert_eq!(c.global_keyprefix, "");
        assert!(build(&Value::Null).is_ok());
        let c = cfg("endpoint: redis://:pw@h:1/2\nqueues: [a, b]\ninterval: 250ms\npriority_steps: [0, 5]\npriority_separator: ':'\nglobal_keyprefix: 'x:'").unwrap();
        assert_eq!(c.queues, ["a", "b"]);
        assert_eq!(c.interval, Duration::from_millis(250));

        let err = |y: &str| cfg(y).err().unwrap();
        let e = err("endpoint: http://user:s3cret@host/0");
        assert_eq!(e.path, "endpoint");
        assert!(!e.message.contains("s3cret"), "{e}");
        assert_eq!(err("queues: []").path, "queues");
        assert_eq!(err("queues: [a, '']").path, "queues[1]");
        assert_eq!(err("interval: 0s").path, "interval");
        assert_eq!(err("priority_steps: []").path, "priority_steps");
        assert_eq!(err("bogus: 1").path, "bogus");
    }

    #[test]
    fn gauge_shape() {
        let rm = queue_length_metrics(&[("celery", 7), ("low", 0)], 42);
        let m = &rm.scope_metrics[0].metrics[0];
        assert_eq!(m.name, "celery_queue_length");
        let Some(metric::Data::Gauge(g)) = &m.data else {
            panic!("not a gauge")
        };
        assert_eq!(g.data_points.len(), 2);
        assert_eq!(g.data_points[0].time_unix_nano, 42);
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsInt(7))
        );
        assert_eq!(g.data_points[0].attributes[0].key, "queue_name");
    }

    // --- against a real redis-server -----------------------------------------------------

    fn errors_counted(t: &Telemetry) -> u64 {
        t.render()
            .lines()
            .filter(|l| {
                l.starts_with("celeriac_receiver_errors_total{component=\"receivers/redis_queues\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    fn celery_length(s: &Signal) -> Option<i64> {
        let Signal::Metrics(rm) = s else { return None };
        let m = &rm.first()?.scope_metrics.first()?.metrics.first()?;
        let Some(metric::Data::Gauge(g)) = &m.data else {
            return None;
        };
        let p = g.data_points.iter().find(|p| {
            p.attributes.iter().any(|a| {
                a.key == "queue_name"
                    && a.value.as_ref().and_then(|v| v.value.as_ref())
                        == Some(&any_value::Value::StringValue("celery".into()))
            })
        })?;
        match p.value {
            Some(number_data_point::Value::AsInt(n)) => Some(n),
            _ => None,
        }
    }

    /// The next batch reporting `celery` at `want`, within `within`.
    async fn wait_for(rx: &async_channel::Receiver<Batch>, want: i64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Ok(s)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if celery_length(&s) == Some(want) {
                return true;
            }
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polls_a_real_redis_and_survives_its_loss() {
        let (port, server) = redis_on_free_port().await;
        let url = format!("redis://127.0.0.1:{port}/0");
        {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let _: () = redis::pipe()
                .cmd("RPUSH")
                .arg("celery")
                .arg("a")
                .arg("b")
                .ignore()
                .cmd("RPUSH")
                .arg("celery\x06\x163")
                .arg("c")
                .ignore()
                .cmd("RPUSH")
                .arg("celery\x06\x169")
                .arg("d")
                .arg("e")
                .arg("f")
                .ignore()
                .cmd("RPUSH")
                .arg("other")
                .arg("x")
                .ignore()
                .query_async(&mut c)
                .await
                .unwrap();
        }

        let v: Value = serde_yaml_ng::from_str(&format!(
            "endpoint: {url}\ninterval: 100ms\nqueues: [celery, other, empty]"
        ))
        .unwrap();
        let Running {
            rx,
            telemetry,
            shutdown,
            task: run,
        } = run_receiver(
            build(&v).ok().unwrap(),
            "receivers/redis_queues",
            SignalKind::Metrics,
        );

        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(celery_length(&first), Some(6), "{first:?}");
        let Signal::Metrics(rm) = &first.signal else {
            unreachable!()
        };
        let Some(metric::Data::Gauge(g)) = &rm[0].scope_metrics[0].metrics[0].data else {
            panic!()
        };
        let values: Vec<_> = g.data_points.iter().map(|p| p.value).collect();
        assert_eq!(
            values,
            [6, 1, 0].map(|n| Some(number_data_point::Value::AsInt(n)))
        );

        // Redis goes away: the receiver keeps running, counts errors and emits nothing.
        drop(server);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        while rx.try_recv().is_ok() {}
        assert!(
            !run.is_finished(),
            "receiver must keep running without Redis"
        );
        assert!(errors_counted(&telemetry) > 0, "{}", telemetry.render());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            rx.try_recv().is_err(),
            "nothing is emitted while Redis is down"
        );

        // Redis comes back (empty, no persistence): values flow again.
        let _server = start_redis(port).await;
        assert!(
            wait_for(&rx, 0, Duration::from_secs(10)).await,
            "no value after Redis came back"
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
