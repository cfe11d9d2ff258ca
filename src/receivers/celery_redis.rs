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
//! backoff (100 ms doubling to 10 s, after every loss, reset only by a subscription that lasted
//! 10 s), resubscribes and counts the reconnect and the time it was deaf
//! (`celeriac_celery_redis_reconnects_total`, `celeriac_celery_redis_gap_seconds_total`):
//! pub/sub keeps nothing for absent subscribers.
//!
//! Failover without Sentinel: `endpoint` may list several brokers; the receiver stays on the one
//! that works and moves to the next when it cannot connect (Celery's own `broker_url` failover
//! list works the same way).
//!
//! With Sentinel (`sentinel://…` and `master_name`, see [`crate::redis_broker`]) the master is
//! asked of the sentinels before every connection, the node is checked with `ROLE` on the
//! subscribing connection itself, and the sentinels' `+switch-master` announcements are followed
//! in a background task: a failover moves the subscription at once (a reconnect with its gap).
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
//!   connect_timeout: 5s                  # TCP + TLS + AUTH + every PSUBSCRIBE confirmed
//!   max_message_size_mib: 4             # larger pub/sub messages: protocol error, reconnect
//!   # Sentinel: endpoint "sentinel://h1:26379;sentinel://h2:26379/0" (password in the URL =
//!   # the data nodes'), plus
//!   master_name: mymaster                # kombu's transport option; required with sentinel://
//!   sentinel_password: ${env:SENTINEL_PASSWORD}   # the sentinels' own (a Secret)
//!   sentinel_tls: { ca_file: … }         # TLS to the sentinels
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::event_telemetry::{BrokerSeries, EventTelemetry};
use super::pubsub::{PubSubError, Subscriber};
use crate::celery::broker::BrokerSettings;
use crate::celery::drops::Drops;
use crate::celery::envelope::decode_envelope;
use crate::celery::event::CeleryEvent;
use crate::component::{BoxRun, Context, Output, Receiver, SharedState};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, DecodeError as ConfigError, Value};
use crate::exporters::backoff::Reconnect;
use crate::redis_broker::{Broker, BrokerError, Endpoint, OwnedSettings, Settings, Switch};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::Throttle;
use crate::tls::ClientTlsConfig;

const SERIES: BrokerSeries = BrokerSeries {
    messages_help: "Pub/sub messages read from the broker.",
    reconnects: (
        "celeriac_celery_redis_reconnects_total",
        "Times the subscription was re-established after a loss.",
    ),
    gap_ms: (
        "celeriac_celery_redis_gap_milliseconds_total",
        "Time without a subscription after a loss (events published then are lost).",
    ),
    connected: (
        "celeriac_celery_redis_connected",
        "1 while subscribed to the broker.",
    ),
};

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
    /// The largest pub/sub message read (Celery's events are a few KiB); a larger one, or one
    /// that claims to be, is a protocol error: the connection is dropped, counted and re-made.
    pub max_message_size_mib: usize,
    /// kombu's `master_name` transport option: required with a `sentinel://` endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// The sentinels' password (kombu's `sentinel_kwargs: {password: …}`); the data nodes'
    /// password stays in the URL.
    #[serde(
        default,
        deserialize_with = "types::non_empty_secret::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub sentinel_password: Option<types::Secret>,
    /// TLS to the sentinels (kombu's `sentinel_kwargs: {ssl…}`).
    pub sentinel_tls: ClientTlsConfig,
}

impl Default for CeleryRedisConfig {
    fn default() -> Self {
        CeleryRedisConfig {
            endpoint: vec!["redis://127.0.0.1:6379/0".into()],
            tls: ClientTlsConfig::default(),
            global_keyprefix: String::new(),
            patterns: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            max_message_size_mib: 4,
            master_name: None,
            sentinel_password: None,
            sentinel_tls: ClientTlsConfig::default(),
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
    let broker = Broker::new(&Settings {
        endpoint: &cfg.endpoint,
        tls: &cfg.tls,
        master_name: cfg.master_name.as_deref(),
        sentinel_password: cfg.sentinel_password.as_ref(),
        sentinel_tls: &cfg.sentinel_tls,
    })?;
    if cfg.max_message_size_mib == 0 {
        return Err(ConfigError::new(
            "max_message_size_mib",
            "must be greater than 0",
        ));
    }
    let patterns = if cfg.patterns.is_empty() {
        default_patterns(broker.db(), &cfg.global_keyprefix)
    } else {
        cfg.patterns.clone()
    };
    let share = Arc::new(BrokerSettings::Redis {
        settings: OwnedSettings {
            endpoint: cfg.endpoint.clone(),
            tls: cfg.tls.clone(),
            master_name: cfg.master_name.clone(),
            sentinel_password: cfg.sentinel_password.clone(),
            sentinel_tls: cfg.sentinel_tls.clone(),
        },
        global_keyprefix: cfg.global_keyprefix.clone(),
    });
    Ok(Box::new(CeleryRedis {
        broker: Arc::new(broker),
        share,
        patterns,
        connect_timeout: cfg.connect_timeout,
        max_message: cfg.max_message_size_mib.saturating_mul(1 << 20),
    }))
}

pub struct CeleryRedis {
    broker: Arc<Broker>,
    /// The broker as the dashboard reaches it (a shared state).
    share: Arc<BrokerSettings>,
    patterns: Vec<String>,
    connect_timeout: Duration,
    max_message: usize,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A subscription that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Locate(#[from] BrokerError),
    #[error("broker {endpoint}: {source}")]
    Subscribe {
        endpoint: String,
        source: PubSubError,
    },
}

/// The next failover announced by the sentinels; never, without Sentinel.
async fn switched(rx: &mut Option<tokio::sync::watch::Receiver<Option<Switch>>>) -> Option<Switch> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        return std::future::pending().await;
    }
    rx.borrow_and_update().clone()
}

impl Receiver for CeleryRedis {
    fn shared(&self) -> Option<SharedState> {
        Some(self.share.clone())
    }

    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            let EventTelemetry {
                messages,
                events_in,
                reconnects,
                gap_ms,
                connect_errors,
                lost_errors: read_errors,
                connected,
                memory_drops,
            } = EventTelemetry::new(&ctx, &SERIES);
            let protocol_errors = ctx.telemetry.counter(
                "celeriac_receiver_errors_total",
                "Receiver errors, by reason.",
                &[("component", &*ctx.id), ("reason", "protocol")],
            );
            // Events a memory_limiter refused (the pipeline still runs; Redis cannot wait):
            // `memory_drops`.
            let mut drops = Drops::new(ctx.clone());

            let mut reconnect = Reconnect::new(BACKOFF_MIN, BACKOFF_MAX, HEALTHY_SESSION);
            let mut lost_at: Option<Instant> = None;
            let mut connect_warn = Throttle::new(WARN_EVERY);
            let mut events: Vec<CeleryEvent> = Vec::with_capacity(256);
            // The broker in use: stays while it works, moves on when it cannot be reached.
            let mut current = 0usize;
            // With Sentinel: failovers announced on +switch-master, followed in the background.
            let mut switches = self.broker.sentinels().map(|_| {
                let (tx, rx) = tokio::sync::watch::channel(None::<Switch>);
                let (broker, cancel, id) = (self.broker.clone(), ctx.shutdown.clone(), ctx.id.clone());
                tokio::spawn(async move {
                    if let Some(s) = broker.sentinels() {
                        s.watch(cancel, |sw| {
                            tracing::info!(component = %id, master = %s.master_name(), old = %sw.old, new = %sw.new, "Sentinel announced a failover.");
                            tx.send_replace(Some(sw));
                        })
                        .await;
                    }
                });
                rx
            });
            let mut previous: Option<Endpoint> = None;
            let verify_master = self.broker.sentinels().is_some();
            'outer: loop {
                // Where the broker is now (with Sentinel: asked again after every loss).
                let sub = tokio::select! {
                    _ = ctx.shutdown.cancelled() => break 'outer,
                    r = async {
                        let endpoint = self.broker.locate(current, self.connect_timeout).await?;
                        let sub = Subscriber::connect(&endpoint, self.broker.connector(), &self.patterns, self.connect_timeout, self.max_message, verify_master).await
                            .map_err(|e| ConnectError::Subscribe { endpoint: endpoint.redacted(), source: e })?;
                        Ok::<_, ConnectError>((endpoint, sub))
                    } => r,
                };
                let (endpoint, mut sub) = match sub {
                    Ok(s) => s,
                    Err(e) => {
                        connect_errors.inc();
                        let wait = reconnect.after_failure();
                        if let Some(suppressed) = connect_warn.ready() {
                            tracing::warn!(component = %ctx.id, broker = %self.broker.describe(), error = %e, retry_in = ?wait, suppressed, "Cannot subscribe to Celery events; retrying.");
                        }
                        lost_at.get_or_insert_with(Instant::now);
                        current = (current + 1) % self.broker.choices();
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => break 'outer,
                            _ = tokio::time::sleep(wait) => {}
                            // A failover announced: the new master is up, try it now.
                            _ = switched(&mut switches) => {}
                        }
                        continue;
                    }
                };
                connected.set(1);
                let session_start = Instant::now();
                if let Some(old) = previous.as_ref().filter(|p| p.addr() != endpoint.addr()) {
                    tracing::warn!(component = %ctx.id, old = %old.redacted(), new = %endpoint.redacted(), "Moved the Celery event subscription to another broker node.");
                }
                if let Some(t0) = lost_at.take() {
                    let gap = t0.elapsed();
                    reconnects.inc();
                    gap_ms.add(gap.as_millis() as u64);
                    tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), gap = ?gap, "Resubscribed to Celery events; events published during the gap are lost.");
                } else {
                    tracing::info!(component = %ctx.id, endpoint = %endpoint.redacted(), patterns = ?self.patterns, "Subscribed to Celery events.");
                }
                previous = Some(endpoint.clone());
                loop {
                    let read = tokio::select! {
                        _ = ctx.shutdown.cancelled() => break 'outer,
                        sw = switched(&mut switches) => {
                            if sw.as_ref().is_some_and(|sw| sw.new != endpoint.addr()) {
                                // The sentinels moved the master away: never stay on a demoted
                                // node. Counted as a reconnect with its gap, without backoff.
                                connected.set(0);
                                lost_at = Some(Instant::now());
                                tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), "The sentinels promoted another master; moving the subscription.");
                                break;
                            }
                            continue;
                        }
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
                        Ok(read) => {
                            messages.add(read.messages as u64);
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
                                // Stamped with when its first message was read: the time it
                                // waited in the read buffer and its decoding count as celeriac's.
                                tokio::select! {
                                    _ = ctx.shutdown.cancelled() => break 'outer,
                                    r = out.send_since(batch, Some(read.since)) => if r.is_err() { break 'outer },
                                }
                                // Let what this batch woke (the correlator) take it before the
                                // next one is decoded. On a runtime with one worker (an agent on
                                // one core) the receiver would otherwise decode all its socket
                                // holds, up to the channel's capacity, before the correlator
                                // ran, and each batch would wait for every one decoded after it.
                                tokio::task::yield_now().await;
                            }
                        }
                        Err(e) => {
                            connected.set(0);
                            match e {
                                PubSubError::Resp(_) => protocol_errors.inc(),
                                _ => read_errors.inc(),
                            }
                            lost_at = Some(Instant::now());
                            // A wait after every loss, so a broker that drops (or garbles) every
                            // subscription is not hammered; only a healthy session resets it.
                            let wait = reconnect.after_loss(session_start.elapsed());
                            tracing::warn!(component = %ctx.id, endpoint = %endpoint.redacted(), error = %e, retry_in = ?wait, "Lost the Celery event subscription; reconnecting.");
                            tokio::select! {
                                _ = ctx.shutdown.cancelled() => break 'outer,
                                _ = tokio::time::sleep(wait) => {}
                                _ = switched(&mut switches) => {}
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
    use crate::receivers::testing::{redis_on_free_port, run_receiver};
    use std::io::Write;

    /// The Celery event messages of the captured traffic: (channel, payload).
    fn captured() -> Vec<(String, String)> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/celery-events-redis.jsonl"
        );
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let ch = v["channel"].as_str()?;
                let data = v["data"].as_str()?;
                ch.contains("celeryev")
                    .then(|| (ch.to_string(), data.to_string()))
            })
            .collect()
    }

    /// On one worker thread, a batch is taken before the next one is decoded: however much the
    /// socket holds while the consumer is busy, the receiver does not run ahead of it (every
    /// batch would otherwise wait for all those decoded after it), and every event arrives.
    #[tokio::test(flavor = "current_thread")]
    async fn hands_over_one_batch_at_a_time_on_one_thread() {
        let (port, _server) = redis_on_free_port().await;
        let v: Value =
            serde_yaml_ng::from_str(&format!("endpoint: redis://127.0.0.1:{port}/0")).unwrap();
        let receiver = run_receiver(
            build(&v).ok().unwrap(),
            "receivers/celery_redis",
            SignalKind::Celery,
        );
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        for _ in 0..200 {
            let n: i64 = redis::cmd("PUBSUB")
                .arg("NUMPAT")
                .query_async(&mut c)
                .await
                .unwrap();
            if n > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        // ~4 MiB of real event messages, pipelined from another thread while this one is busy.
        let messages = captured();
        let rounds = 50;
        let mut per_round = 0;
        for (_, payload) in &messages {
            let mut evs = Vec::new();
            let _ = decode_envelope(payload.as_bytes(), &mut evs);
            per_round += evs.len();
        }
        assert!(per_round > 50, "fixture: {per_round} events");
        let want = per_round * rounds;
        let publisher = std::thread::spawn(move || {
            let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut wire = Vec::new();
            for _ in 0..rounds {
                for (ch, payload) in &messages {
                    let args: [&[u8]; 3] = [b"PUBLISH", ch.as_bytes(), payload.as_bytes()];
                    wire.extend_from_slice(&crate::redis_broker::resp::command(&args));
                }
            }
            sock.write_all(&wire).unwrap();
            sock
        });

        let mut got = 0;
        let mut most_queued = 0;
        while got < want {
            let b = tokio::time::timeout(Duration::from_secs(10), receiver.rx.recv())
                .await
                .expect("events stopped arriving")
                .unwrap();
            most_queued = most_queued.max(receiver.rx.len());
            got += b.signal.item_count();
            // A busy consumer: the socket fills meanwhile.
            std::thread::sleep(Duration::from_micros(300));
        }
        assert_eq!(got, want);
        assert_eq!(most_queued, 0, "the receiver decoded ahead of its consumer");
        drop(publisher.join().unwrap());
        receiver.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), receiver.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

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
