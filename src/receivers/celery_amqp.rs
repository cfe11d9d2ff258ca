//! `celery_amqp` receiver: Celery events from a RabbitMQ (AMQP 0-9-1) broker.
//!
//! Consumes exactly as Celery's own `EventReceiver` does on an AMQP broker
//! (`celery/events/receiver.py`, `kombu/entity.py`): it declares the durable `celeryev` topic
//! exchange, an exclusive, auto-delete, non-durable queue `celeryev.<uuid>` with
//! `x-message-ttl` (Celery's `event_queue_ttl`, 5 s) and `x-expires` (`event_queue_expires`, 60 s),
//! binds it with `#` and consumes it. On AMQP there is no kombu envelope and no base64: the body is
//! the event JSON itself (`task.multi`: a list) and `content_type`/`content_encoding` are message
//! properties, so each body goes through [`decode_bare`], the same decoder, event model and drop
//! reasons as `celery_redis` (pickle, msgpack and yaml are refused and counted, never decoded).
//! Bodies over `max_message_size` are dropped as `too_large`.
//!
//! Flow control: the consumer acknowledges (one `basic.ack` with `multiple` per batch, after the
//! batch went downstream) and sets `basic.qos` `prefetch`, so at most `prefetch` messages are
//! in flight whatever the publish rate: when the pipeline is slow, RabbitMQ keeps the rest in the
//! queue (where `x-message-ttl` expires them, as for Celery's own receiver), and memory stays
//! bounded. (Celery's receiver consumes with `no_ack`, which has no such bound.)
//!
//! Reconnects: when the connection or channel is lost (broker restart, `rabbitmqctl
//! close_all_connections`, vhost deleted) the receiver reconnects with exponential backoff
//! (100 ms to 10 s, reset after 10 s of healthy consumption), moves along the failover list when
//! a broker cannot be reached, and counts `celeriac_celery_amqp_reconnects_total` and
//! `celeriac_celery_amqp_gap_milliseconds_total`. The queue is exclusive to the connection, so
//! RabbitMQ deletes it with the connection: events published during the gap are lost (as for
//! every Celery event consumer), and a new queue is declared on reconnect.
//!
//! Settings:
//! ```yaml
//! celery_amqp:
//!   endpoint: amqp://guest:guest@127.0.0.1:5672//   # kombu URL (credentials never logged),
//!                                                    # or a failover list; amqps:// for TLS
//!   tls: { ca_file: …, cert_file: …, key_file: … }    # amqps:// only
//!   exchange: celeryev          # Celery's `event_exchange`
//!   queue_prefix: celeryev      # queue `<queue_prefix>.<uuid>` (Celery's `event_queue_prefix`)
//!   routing_key: "#"
//!   message_ttl: 5s             # x-message-ttl (Celery's `event_queue_ttl`); 0s: none
//!   queue_expires: 60s          # x-expires (Celery's `event_queue_expires`); 0s: none
//!   prefetch: 2000              # basic.qos prefetch count (unacknowledged messages in flight)
//!   max_message_size: 4194304   # bytes; a larger body is dropped as `too_large`
//!   connect_timeout: 5s
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::ExchangeKind;
use serde::{Deserialize, Serialize};

use super::event_telemetry::{BrokerSeries, EventTelemetry};
use crate::amqp::{self, AmqpError, Endpoint, Tls};
use crate::celery::broker::BrokerSettings;
use crate::celery::drops::Drops;
use crate::celery::envelope::{decode_bare, BareMeta};
use crate::celery::event::CeleryEvent;
use crate::component::{
    BoxRun, BuildResult, Context, Factory, Output, Receiver, Registration, SharedState,
};
use crate::config::{self, types, DecodeError as ConfigError, Value};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::Throttle;
use crate::tls::ClientTlsConfig;

const SERIES: BrokerSeries = BrokerSeries {
    messages_help: "Broker messages read (pub/sub messages on Redis, deliveries on AMQP).",
    reconnects: (
        "celeriac_celery_amqp_reconnects_total",
        "Times the event queue was consumed again after a loss.",
    ),
    gap_ms: (
        "celeriac_celery_amqp_gap_milliseconds_total",
        "Time without an event queue after a loss (events published then are lost).",
    ),
    connected: (
        "celeriac_celery_amqp_connected",
        "1 while consuming the broker's events.",
    ),
};

pub const REGISTRATION: Registration = Registration {
    type_name: "celery_amqp",
    factory: Factory::Receiver {
        produces: &[SignalKind::Celery],
        build,
    },
    defaults: crate::component::defaults::<CeleryAmqpConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CeleryAmqpConfig {
    #[serde(deserialize_with = "types::one_or_many::deserialize")]
    pub endpoint: Vec<String>,
    pub tls: ClientTlsConfig,
    pub exchange: String,
    pub queue_prefix: String,
    pub routing_key: String,
    #[serde(with = "types::duration")]
    pub message_ttl: Duration,
    #[serde(with = "types::duration")]
    pub queue_expires: Duration,
    pub prefetch: u16,
    pub max_message_size: usize,
    #[serde(with = "types::duration")]
    pub connect_timeout: Duration,
}

impl Default for CeleryAmqpConfig {
    fn default() -> Self {
        CeleryAmqpConfig {
            endpoint: vec!["amqp://guest:guest@127.0.0.1:5672//".into()],
            tls: ClientTlsConfig::default(),
            exchange: "celeryev".into(),
            queue_prefix: "celeryev".into(),
            routing_key: "#".into(),
            message_ttl: Duration::from_secs(5),
            queue_expires: Duration::from_secs(60),
            prefetch: 2000,
            max_message_size: 4 << 20,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Receiver> {
    let cfg: CeleryAmqpConfig = config::decode(v)?;
    let endpoints =
        amqp::endpoints(&cfg.endpoint, "endpoint").map_err(|(k, m)| ConfigError::new(&k, m))?;
    let tls = if endpoints.iter().any(Endpoint::tls) {
        Tls::load(&cfg.tls).map_err(|(k, m)| ConfigError::new(&k, m))?
    } else if cfg.tls.is_set() {
        return Err(ConfigError::new(
            "tls",
            "TLS settings need an amqps:// endpoint",
        ));
    } else {
        Tls::default()
    };
    for (key, val) in [
        ("exchange", &cfg.exchange),
        ("queue_prefix", &cfg.queue_prefix),
        ("routing_key", &cfg.routing_key),
    ] {
        if val.is_empty() {
            return Err(ConfigError::new(key, "must not be empty"));
        }
    }
    if cfg.prefetch == 0 {
        return Err(ConfigError::new(
            "prefetch",
            "must be at least 1 (0 would mean no limit on unacknowledged messages)",
        ));
    }
    if cfg.max_message_size == 0 {
        return Err(ConfigError::new(
            "max_message_size",
            "must be greater than 0",
        ));
    }
    for (key, d) in [
        ("message_ttl", cfg.message_ttl),
        ("queue_expires", cfg.queue_expires),
    ] {
        if d.as_millis() > u32::MAX as u128 {
            return Err(ConfigError::new(
                key,
                "is too long for RabbitMQ (at most ~49 days)",
            ));
        }
    }
    if !cfg.queue_expires.is_zero() && cfg.queue_expires < Duration::from_millis(1) {
        return Err(ConfigError::new(
            "queue_expires",
            "must be at least 1ms or 0s",
        ));
    }
    Ok(Box::new(CeleryAmqp {
        endpoints,
        tls,
        cfg,
    }))
}

pub struct CeleryAmqp {
    endpoints: Vec<Endpoint>,
    tls: Tls,
    cfg: CeleryAmqpConfig,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Deliveries handed downstream as one batch, at most (and at most [`MAX_BATCH_BYTES`]).
const MAX_BATCH_MESSAGES: usize = 512;
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The queue arguments Celery's receiver declares (kombu writes both in milliseconds).
pub fn queue_arguments(message_ttl: Duration, expires: Duration) -> FieldTable {
    let mut args = FieldTable::default();
    if !message_ttl.is_zero() {
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongUInt(message_ttl.as_millis() as u32),
        );
    }
    if !expires.is_zero() {
        args.insert(
            "x-expires".into(),
            AMQPValue::LongUInt(expires.as_millis().max(1) as u32),
        );
    }
    args
}

/// A consuming session: the connection (kept alive by holding it), its channel and consumer.
struct Session {
    conn: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    queue: String,
}

impl CeleryAmqp {
    async fn open(&self, ep: &Endpoint, ctx: &Context) -> Result<Session, AmqpError> {
        let conn = amqp::connect(
            ep,
            &self.tls,
            self.cfg.connect_timeout,
            &format!("celeriac {}", ctx.id),
        )
        .await?;
        let setup = async {
            let channel = conn.create_channel().await?;
            channel
                .basic_qos(self.cfg.prefetch, BasicQosOptions::default())
                .await?;
            channel
                .exchange_declare(
                    &self.cfg.exchange,
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let queue = format!("{}.{}", self.cfg.queue_prefix, crate::celery::uuid4());
            channel
                .queue_declare(
                    &queue,
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        durable: false,
                        ..Default::default()
                    },
                    queue_arguments(self.cfg.message_ttl, self.cfg.queue_expires),
                )
                .await?;
            channel
                .queue_bind(
                    &queue,
                    &self.cfg.exchange,
                    &self.cfg.routing_key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let consumer = channel
                .basic_consume(
                    &queue,
                    "celeriac",
                    BasicConsumeOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer, queue))
        };
        let (channel, consumer, queue) =
            amqp::set_up(&conn, self.cfg.connect_timeout, setup).await?;
        Ok(Session {
            conn,
            channel,
            consumer,
            queue,
        })
    }
}

/// The string value of an application header.
fn header<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a str> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

fn short(s: &Option<ShortString>) -> Option<&[u8]> {
    s.as_ref().map(|s| s.as_str().as_bytes())
}

/// Why a body was not even given to the decoder.
#[derive(Debug, thiserror::Error)]
#[error("message of {size} bytes exceeds max_message_size {limit}")]
struct TooLarge {
    size: usize,
    limit: usize,
}

/// Decode one delivery into `out`, counting drops.
fn decode_delivery(
    d: &lapin::message::Delivery,
    limit: usize,
    drops: &mut Drops,
    out: &mut Vec<CeleryEvent>,
) {
    if d.data.len() > limit {
        drops.record_reason(
            "too_large",
            &TooLarge {
                size: d.data.len(),
                limit,
            },
            1,
        );
        return;
    }
    let p = &d.properties;
    let headers = p.headers().as_ref();
    let meta = BareMeta {
        content_type: short(p.content_type()),
        content_encoding: short(p.content_encoding()),
        compression: header(headers, "compression"),
        hostname: header(headers, "hostname"),
    };
    match decode_bare(&d.data, &meta, out) {
        Ok(decoded) => {
            for e in &decoded.dropped {
                drops.record(e, 1);
            }
        }
        Err(e) => drops.record(&e, 1),
    }
}

impl Receiver for CeleryAmqp {
    fn shared(&self) -> Option<SharedState> {
        Some(Arc::new(BrokerSettings::Amqp {
            endpoint: self.cfg.endpoint.clone(),
            tls: self.cfg.tls.clone(),
        }))
    }

    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            let EventTelemetry {
                messages,
                events_in,
                reconnects,
                gap_ms,
                connect_errors,
                lost_errors,
                connected,
                memory_drops,
            } = EventTelemetry::new(&ctx, &SERIES);
            let mut drops = Drops::new(ctx.clone());
            let limit = self.cfg.max_message_size;

            let mut backoff = BACKOFF_MIN;
            let mut lost_at: Option<Instant> = None;
            let mut connect_warn = Throttle::new(WARN_EVERY);
            let mut events: Vec<CeleryEvent> = Vec::with_capacity(1024);
            let mut current = 0usize;
            'outer: loop {
                let endpoint = &self.endpoints[current];
                let session = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break 'outer,
                    r = self.open(endpoint, &ctx) => r,
                };
                let mut s = match session {
                    Ok(s) => s,
                    Err(e) => {
                        connect_errors.inc();
                        if let Some(suppressed) = connect_warn.ready() {
                            tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), error = %e, retry_in = ?backoff, suppressed, "Cannot consume Celery events from RabbitMQ; retrying.");
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
                    tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), queue = %s.queue, gap = ?gap, "Consuming Celery events again; events published during the gap are lost.");
                } else {
                    tracing::info!(component = %ctx.id, endpoint = %endpoint.redacted(), queue = %s.queue, exchange = %self.cfg.exchange, "Consuming Celery events.");
                }
                let lost: String = loop {
                    let first = tokio::select! {
                        _ = ctx.shutdown.cancelled() => {
                            let _ = s.conn.close(200, "shutdown").await;
                            break 'outer;
                        }
                        d = s.consumer.next() => d,
                    };
                    let mut last_tag = None;
                    let mut n = 0usize;
                    let mut bytes = 0usize;
                    let mut next = first;
                    let mut err = None;
                    loop {
                        match next {
                            Some(Ok(d)) => {
                                n += 1;
                                bytes += d.data.len();
                                last_tag = Some(d.delivery_tag);
                                decode_delivery(&d, limit, &mut drops, &mut events);
                            }
                            Some(Err(e)) => {
                                err = Some(e.to_string());
                                break;
                            }
                            None => {
                                err = Some("the broker cancelled the consumer".into());
                                break;
                            }
                        }
                        if n >= MAX_BATCH_MESSAGES || bytes >= MAX_BATCH_BYTES {
                            break;
                        }
                        match s.consumer.next().now_or_never() {
                            Some(d) => next = d,
                            None => break,
                        }
                    }
                    messages.add(n as u64);
                    if !events.is_empty() {
                        events_in.add(events.len() as u64);
                        let batch = Signal::Celery(Arc::new(std::mem::replace(
                            &mut events,
                            Vec::with_capacity(1024),
                        )));
                        if out.refusing(SignalKind::Celery) {
                            memory_drops.add(batch.item_count() as u64);
                        }
                        // Waiting here holds the acknowledgement back: RabbitMQ stops delivering
                        // at `prefetch` unacknowledged messages and keeps the rest queued.
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => break 'outer,
                            r = out.send(batch) => if r.is_err() { break 'outer },
                        }
                    }
                    if let Some(tag) = last_tag {
                        if let Err(e) = s
                            .channel
                            .basic_ack(tag, BasicAckOptions { multiple: true })
                            .await
                        {
                            break e.to_string();
                        }
                    }
                    if let Some(e) = err {
                        break e;
                    }
                };
                connected.set(0);
                lost_errors.inc();
                tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), error = %lost, "Lost the Celery event queue; reconnecting.");
                lost_at = Some(Instant::now());
                if session_start.elapsed() >= HEALTHY_SESSION {
                    backoff = BACKOFF_MIN;
                }
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), s.conn.close(0, "reconnecting"))
                        .await;
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break 'outer,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            connected.set(0);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(y: &str) -> Option<String> {
        build(&serde_yaml_ng::from_str(y).unwrap())
            .err()
            .map(|e| e.path)
    }

    #[test]
    fn config_errors_name_the_key() {
        assert_eq!(bad("endpoint: redis://x").as_deref(), Some("endpoint"));
        assert_eq!(
            bad("endpoint: [amqp://a, 'http://b']").as_deref(),
            Some("endpoint[1]")
        );
        assert_eq!(bad("endpoint: []").as_deref(), Some("endpoint"));
        assert_eq!(bad("prefetch: 0").as_deref(), Some("prefetch"));
        assert_eq!(bad("exchange: ''").as_deref(), Some("exchange"));
        assert_eq!(
            bad("endpoint: amqp://a\ntls: {ca_file: /x.pem}").as_deref(),
            Some("tls")
        );
        assert_eq!(
            bad("endpoint: amqps://a\ntls: {ca_file: /nonexistent.pem}").as_deref(),
            Some("tls.ca_file")
        );
        assert!(bad("endpoint: [amqp://a//, pyamqp://b/shop]\nmessage_ttl: 0s").is_none());
    }

    #[test]
    fn queue_arguments_are_celerys_in_milliseconds() {
        let a = queue_arguments(Duration::from_secs(5), Duration::from_secs(60));
        assert!(matches!(
            a.inner().get("x-message-ttl"),
            Some(AMQPValue::LongUInt(5000))
        ));
        assert!(matches!(
            a.inner().get("x-expires"),
            Some(AMQPValue::LongUInt(60000))
        ));
        assert!(queue_arguments(Duration::ZERO, Duration::ZERO)
            .inner()
            .is_empty());
    }

    /// The captured RabbitMQ traffic decodes to exactly the events its README counts.
    #[test]
    fn captured_amqp_traffic_decodes_completely() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/celery-events-amqp.jsonl"
        );
        let text = std::fs::read_to_string(path).expect("fixture celery-events-amqp.jsonl");
        let mut out = Vec::new();
        let mut pidbox = 0;
        for line in text.lines() {
            let m: serde_json::Value = serde_json::from_str(line).unwrap();
            if m["exchange"] != "celeryev" {
                pidbox += 1;
                continue;
            }
            let host = m["headers"]["hostname"].as_str();
            let meta = BareMeta {
                content_type: m["content_type"].as_str().map(str::as_bytes),
                content_encoding: m["content_encoding"].as_str().map(str::as_bytes),
                compression: None,
                hostname: host,
            };
            let d = decode_bare(m["body"].as_str().unwrap().as_bytes(), &meta, &mut out).unwrap();
            assert!(d.is_complete());
        }
        assert_eq!(pidbox, 5);
        let count = |t: &str| out.iter().filter(|e| e.type_name == t).count();
        assert_eq!(count("task-sent"), 36);
        assert_eq!(count("task-received"), 34);
        assert_eq!(count("task-started"), 34);
        assert_eq!(count("task-succeeded"), 23);
        assert_eq!(count("task-failed"), 5);
        assert_eq!(count("task-retried"), 6);
        assert_eq!(count("task-revoked"), 2);
        assert_eq!(count("worker-heartbeat"), 7);
        assert_eq!(out.len(), 36 + 34 + 34 + 23 + 5 + 6 + 2 + 1 + 7 + 1);
    }

    #[test]
    fn refusals_match_the_redis_receiver() {
        let mut out = Vec::new();
        let body = br#"{"type": "worker-heartbeat", "timestamp": 1.0, "hostname": "w"}"#;
        let meta = |ct: &'static str, enc: &'static str| BareMeta {
            content_type: Some(ct.as_bytes()),
            content_encoding: Some(enc.as_bytes()),
            ..Default::default()
        };
        let reason = |m: BareMeta<'_>, b: &[u8], out: &mut Vec<CeleryEvent>| {
            decode_bare(b, &m, out).err().map(|e| e.reason())
        };
        assert_eq!(
            reason(
                meta("application/x-python-serialize", "binary"),
                b"\x80\x04",
                &mut out
            ),
            Some("pickle")
        );
        assert_eq!(
            reason(meta("application/x-msgpack", "binary"), b"\x81", &mut out),
            Some("msgpack")
        );
        assert_eq!(
            reason(meta("text/plain", "utf-8"), body, &mut out),
            Some("unsupported_content_type")
        );
        assert_eq!(
            reason(meta("application/json", "latin-1"), body, &mut out),
            Some("unsupported_body_encoding")
        );
        assert_eq!(
            reason(meta("application/json", "utf-8"), b"{\"type\": ", &mut out),
            Some("malformed_body")
        );
        assert_eq!(
            reason(
                BareMeta {
                    compression: Some("zlib"),
                    ..meta("application/json", "utf-8")
                },
                body,
                &mut out
            ),
            Some("compressed")
        );
        assert!(out.is_empty());
        assert_eq!(
            reason(meta("application/json", "utf-8"), body, &mut out),
            None
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].hostname, "w");
    }
}
