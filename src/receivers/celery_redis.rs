//! `celery_redis` receiver: Celery events straight from a Redis broker's `celeryev` fanout.
//!
//! Subscribes with PSUBSCRIBE exactly as Celery's own `EventReceiver` does on the Redis transport
//! (kombu publishes events to `/<db>.celeryev/<routing key>`), and by default also to the
//! other namings kombu can use (`celeryev/*` without the db prefix, `/<db>.celeryev` and
//! `celeryev` without fanout patterns, i.e. kombu 3 / Celery 4 setups), so any Celery 4 or 5
//! worker is heard without configuration. Each envelope is decoded once into typed
//! [`CeleryEvent`](crate::celery::event::CeleryEvent)s and sent downstream in batches.
//!
//! Bad input (pickle or msgpack serializers, malformed envelopes, unknown content types) is
//! counted per reason in `celeriac_celery_events_dropped_total{reason}` with a rate-limited
//! warning; nothing else is lost. When Redis goes away the receiver reconnects with exponential
//! backoff, resubscribes and counts the reconnect and the time it was deaf
//! (`celeriac_celery_redis_reconnects_total`, `celeriac_celery_redis_gap_seconds_total`):
//! pub/sub keeps nothing for absent subscribers.
//!
//! Failover without Sentinel: `endpoint` may list several brokers; the receiver stays on the one
//! that works and moves to the next when it cannot connect (Celery's own `broker_url` failover
//! list works the same way).
//!
//! Settings:
//! ```yaml
//! celery_redis:
//!   endpoint: redis://127.0.0.1:6379/0   # the broker URL (user/password allowed, never logged)
//!                                        # or a list: [redis://a:6379/0, rediss://b:6380/0]
//!   tls:                                 # for rediss:// (see crate::tls)
//!     ca_file: /etc/celeriac/redis-ca.pem
//!     cert_file: …                       # with key_file, if Redis requires client certificates
//!   global_keyprefix: ""                 # kombu's `global_keyprefix` transport option
//!   patterns: []                         # override the PSUBSCRIBE patterns entirely
//!   connect_timeout: 5s
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::pubsub::{Endpoint, Subscriber};
use crate::celery::drops::Drops;
use crate::celery::envelope::decode_envelope;
use crate::celery::event::CeleryEvent;
use crate::component::{BoxRun, Context, Output, Receiver};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, DecodeError as ConfigError, Value};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::Throttle;
use crate::tls::{ClientTlsConfig, Connector};

pub const REGISTRATION: Registration = Registration {
    type_name: "celery_redis",
    factory: Factory::Receiver {
        produces: &[SignalKind::Celery],
        build,
    },
    defaults: crate::component::defaults::<CeleryRedisConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CeleryRedisConfig {
    #[serde(deserialize_with = "types::one_or_many::deserialize")]
    pub endpoint: Vec<String>,
    pub tls: ClientTlsConfig,
    pub global_keyprefix: String,
    pub patterns: Vec<String>,
    #[serde(with = "types::duration")]
    pub connect_timeout: Duration,
}

impl Default for CeleryRedisConfig {
    fn default() -> Self {
        CeleryRedisConfig {
            endpoint: vec!["redis://127.0.0.1:6379/0".into()],
            tls: ClientTlsConfig::default(),
            global_keyprefix: String::new(),
            patterns: Vec::new(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The PSUBSCRIBE patterns for a broker db: every channel naming kombu uses for `celeryev`.
pub fn default_patterns(db: i64, prefix: &str) -> Vec<String> {
    vec![
        format!("{prefix}/{db}.celeryev/*"),
        format!("{prefix}/{db}.celeryev"),
        format!("{prefix}celeryev/*"),
        format!("{prefix}celeryev"),
    ]
}

fn build(v: &Value) -> BuildResult<dyn Receiver> {
    let cfg: CeleryRedisConfig = config::decode(v)?;
    let (endpoints, tls) = broker_endpoints(&cfg.endpoint, &cfg.tls)?;
    // kombu puts the db in the channel names: every broker of a failover list must use one.
    let db = endpoints[0].db;
    if endpoints.iter().any(|e| e.db != db) {
        return Err(ConfigError::new(
            "endpoint",
            "all brokers of the list must use the same db number",
        ));
    }
    let patterns = if cfg.patterns.is_empty() {
        default_patterns(db, &cfg.global_keyprefix)
    } else {
        cfg.patterns.clone()
    };
    Ok(Box::new(CeleryRedis {
        endpoints,
        tls,
        patterns,
        connect_timeout: cfg.connect_timeout,
    }))
}

/// Parses a failover list of broker URLs and, when one is `rediss://`, the TLS client
/// configuration (certificates are read now, so a bad file fails `validate`).
pub fn broker_endpoints(
    urls: &[String],
    tls: &ClientTlsConfig,
) -> Result<(Vec<Endpoint>, Option<Connector>), ConfigError> {
    let endpoints = urls
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let key = if urls.len() == 1 {
                "endpoint".to_string()
            } else {
                format!("endpoint[{i}]")
            };
            Endpoint::parse(u).map_err(|m| ConfigError::new(&key, m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let connector = if endpoints.iter().any(|e| e.tls) {
        let cfg = tls
            .client_config(&[])
            .map_err(|e| ConfigError::new(e.key(), e.to_string()))?;
        Some(Connector::new(cfg))
    } else if tls.is_set() {
        return Err(ConfigError::new(
            "tls",
            "TLS settings need a rediss:// endpoint",
        ));
    } else {
        None
    };
    Ok((endpoints, connector))
}

pub struct CeleryRedis {
    endpoints: Vec<Endpoint>,
    tls: Option<Connector>,
    patterns: Vec<String>,
    connect_timeout: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Receiver for CeleryRedis {
    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            let label = [("component", &*ctx.id)];
            let t = &ctx.telemetry;
            let messages = t.counter(
                "celeriac_celery_messages_total",
                "Pub/sub messages read from the broker.",
                &label,
            );
            let events_in = t.counter(
                "celeriac_celery_events_received_total",
                "Celery events decoded.",
                &label,
            );
            let reconnects = t.counter(
                "celeriac_celery_redis_reconnects_total",
                "Times the subscription was re-established after a loss.",
                &label,
            );
            let gap_ms = t.counter(
                "celeriac_celery_redis_gap_milliseconds_total",
                "Time without a subscription after a loss (events published then are lost).",
                &label,
            );
            let connect_errors = t.counter(
                "celeriac_receiver_errors_total",
                "Receiver errors, by reason.",
                &[("component", &*ctx.id), ("reason", "connect")],
            );
            let read_errors = t.counter(
                "celeriac_receiver_errors_total",
                "Receiver errors, by reason.",
                &[("component", &*ctx.id), ("reason", "connection_lost")],
            );
            let connected = t.gauge(
                "celeriac_celery_redis_connected",
                "1 while subscribed to the broker.",
                &label,
            );
            // Events a memory_limiter refused (the pipeline still runs; Redis cannot wait).
            let memory_drops = t.counter(
                "celeriac_celery_events_dropped_total",
                "Celery messages or events dropped before correlation, by reason.",
                &[("component", &*ctx.id), ("reason", "memory_limit")],
            );
            let mut drops = Drops::new(ctx.clone());

            let mut backoff = BACKOFF_MIN;
            let mut lost_at: Option<Instant> = None;
            let mut connect_warn = Throttle::new(WARN_EVERY);
            let mut events: Vec<CeleryEvent> = Vec::with_capacity(256);
            // The broker in use: stays while it works, moves on when it cannot be reached.
            let mut current = 0usize;
            'outer: loop {
                let endpoint = &self.endpoints[current];
                let sub = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break 'outer,
                    r = Subscriber::connect(endpoint, self.tls.as_ref(), &self.patterns, self.connect_timeout) => r,
                };
                let mut sub = match sub {
                    Ok(s) => s,
                    Err(e) => {
                        connect_errors.inc();
                        if let Some(suppressed) = connect_warn.ready() {
                            tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), error = %e, retry_in = ?backoff, suppressed, "Cannot subscribe to Celery events; retrying.");
                        }
                        lost_at.get_or_insert_with(Instant::now);
                        current = (current + 1) % self.endpoints.len();
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => break 'outer,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                };
                connected.set(1);
                let session_start = Instant::now();
                if let Some(t0) = lost_at.take() {
                    let gap = t0.elapsed();
                    reconnects.inc();
                    gap_ms.add(gap.as_millis() as u64);
                    tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), gap = ?gap, "Resubscribed to Celery events; events published during the gap are lost.");
                } else {
                    tracing::info!(component = %ctx.id, endpoint = %endpoint.redacted(), patterns = ?self.patterns, "Subscribed to Celery events.");
                }
                loop {
                    let read = tokio::select! {
                        _ = ctx.shutdown.cancelled() => break 'outer,
                        r = sub.read_batch(|m| match decode_envelope(m.payload, &mut events) {
                            Ok(d) => {
                                for e in &d.dropped {
                                    drops.record(e, 1);
                                }
                            }
                            Err(e) => drops.record(&e, 1),
                        }) => r,
                    };
                    match read {
                        Ok(n) => {
                            messages.add(n as u64);
                            if !events.is_empty() {
                                events_in.add(events.len() as u64);
                                let batch = Signal::Celery(Arc::new(std::mem::replace(
                                    &mut events,
                                    Vec::with_capacity(256),
                                )));
                                if out.refusing(SignalKind::Celery) {
                                    memory_drops.add(batch.item_count() as u64);
                                }
                                // Waiting here lets Redis buffer for us (up to its pub/sub output
                                // limit) instead of dropping during a short burst.
                                tokio::select! {
                                    _ = ctx.shutdown.cancelled() => break 'outer,
                                    r = out.send(batch) => if r.is_err() { break 'outer },
                                }
                            }
                        }
                        Err(e) => {
                            connected.set(0);
                            read_errors.inc();
                            tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), error = %e, "Lost the Celery event subscription; reconnecting.");
                            lost_at = Some(Instant::now());
                            if session_start.elapsed() >= HEALTHY_SESSION {
                                backoff = BACKOFF_MIN;
                            }
                            break;
                        }
                    }
                }
            }
            connected.set(0);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_every_kombu_naming() {
        let p = default_patterns(3, "");
        assert_eq!(
            p,
            vec!["/3.celeryev/*", "/3.celeryev", "celeryev/*", "celeryev"]
        );
        assert_eq!(default_patterns(0, "acme:")[0], "acme:/0.celeryev/*");
    }

    #[test]
    fn config_errors_name_the_key() {
        let v: Value = serde_yaml_ng::from_str("endpoint: http://x").unwrap();
        let e = build(&v).err().unwrap();
        assert_eq!(e.path, "endpoint");
        let v: Value = serde_yaml_ng::from_str("endpont: redis://x").unwrap();
        assert_eq!(build(&v).err().unwrap().path, "endpont");
        let bad = |y: &str| {
            build(&serde_yaml_ng::from_str(y).unwrap())
                .err()
                .map(|e| e.path)
        };
        assert_eq!(
            bad("endpoint: [redis://a/0, redis://b/1]").as_deref(),
            Some("endpoint")
        );
        assert_eq!(
            bad("endpoint: [redis://a/0, 'http://b']").as_deref(),
            Some("endpoint[1]")
        );
        assert_eq!(bad("endpoint: []").as_deref(), Some("endpoint"));
        assert_eq!(
            bad("endpoint: redis://a/0\ntls: {ca_file: /x.pem}").as_deref(),
            Some("tls")
        );
        assert_eq!(
            bad("endpoint: rediss://a/0\ntls: {ca_file: /nonexistent.pem}").as_deref(),
            Some("tls.ca_file")
        );
        assert!(bad("endpoint: [redis://a:1/2, redis://b:3/2]").is_none());
    }
}
