//! Celery remote control (`celery inspect`) over an AMQP (RabbitMQ) broker, and queue depths.
//!
//! This module owns the pidbox wire protocol as kombu's AMQP transport speaks it
//! (`kombu/pidbox.py`, `celery/app/control.py`):
//!
//! * a request is published to the fanout exchange `celery.pidbox` (declared as kombu declares
//!   it: non-durable, not auto-delete) with routing key `""`; the message body is the JSON
//!   `{"method", "arguments", "destination", "pattern", "matcher", "ticket", "reply_to"}`
//!   itself (no kombu envelope, no base64), `content_type` `application/json`, headers `clock`
//!   and `expires` (workers drop expired requests);
//! * workers reply to the direct exchange `reply.celery.pidbox` with our routing key (the mailbox
//!   `oid`); we consume `<oid>.reply.celery.pidbox`, declared as Celery declares its reply queue
//!   (exclusive, auto-delete, `x-expires` 10 s, `x-message-ttl` 300 s), bound with the oid.
//!   Each reply carries the request's `ticket` header and a body `{worker node name: answer}`.
//!
//! One connection is kept between rounds and reopened (along the failover list) when it fails.
//! Queue depths are RabbitMQ's ready-message counts from a passive `queue.declare`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{json, Value as Json};
use tokio::sync::Mutex;

use super::inspect::{Answers, ReplyWait};
use crate::amqp::{self, Endpoint, Tls};

const EXCHANGE: &str = "celery.pidbox";
const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("broker {endpoint}: {message}")]
pub struct AmqpInspectError {
    endpoint: String,
    message: String,
}

/// An open session: the connection, one channel, and the consumer of our reply queue.
struct Session {
    conn: lapin::Connection,
    channel: lapin::Channel,
    replies: lapin::Consumer,
    /// A channel for passive declares (RabbitMQ closes it on a missing queue).
    probe: Option<lapin::Channel>,
}

/// A remote-control client for one AMQP broker (a failover list of addresses).
pub struct AmqpInspector {
    endpoints: Vec<Endpoint>,
    tls: Tls,
    oid: String,
    timeout: Duration,
    /// The session and the index of the address in use; one round at a time.
    state: Mutex<(Option<Session>, usize)>,
}

/// One answer: worker node name → reply.
pub type Replies = BTreeMap<String, Json>;

impl AmqpInspector {
    pub fn new(endpoints: Vec<Endpoint>, tls: Tls, timeout: Duration) -> AmqpInspector {
        AmqpInspector {
            endpoints,
            tls,
            oid: super::inspect::uuid4(),
            timeout,
            state: Mutex::new((None, 0)),
        }
    }

    /// The first address, for logs (no credentials).
    pub fn endpoint(&self) -> String {
        self.endpoints[0].redacted()
    }

    fn err(&self, i: usize, e: impl std::fmt::Display) -> AmqpInspectError {
        AmqpInspectError {
            endpoint: self.endpoints[i % self.endpoints.len()].redacted(),
            message: e.to_string(),
        }
    }

    async fn open(&self, ep: &Endpoint) -> Result<Session, String> {
        let conn = amqp::connect(ep, &self.tls, CONNECT_TIMEOUT, "celeriac celery_ui")
            .await
            .map_err(|e| e.to_string())?;
        let setup = async {
            let channel = conn.create_channel().await?;
            for (name, kind) in [
                (EXCHANGE, ExchangeKind::Fanout),
                (REPLY_EXCHANGE, ExchangeKind::Direct),
            ] {
                channel
                    .exchange_declare(
                        name,
                        kind,
                        ExchangeDeclareOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            let queue = format!("{}.{REPLY_EXCHANGE}", self.oid);
            let mut args = FieldTable::default();
            args.insert("x-expires".into(), AMQPValue::LongUInt(10_000));
            args.insert("x-message-ttl".into(), AMQPValue::LongUInt(300_000));
            channel
                .queue_declare(
                    &queue,
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    args,
                )
                .await?;
            channel
                .queue_bind(
                    &queue,
                    REPLY_EXCHANGE,
                    &self.oid,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let replies = channel
                .basic_consume(
                    &queue,
                    "celeriac-replies",
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, replies))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
            Ok(Ok((channel, replies))) => Ok(Session {
                conn,
                channel,
                replies,
                probe: None,
            }),
            Ok(Err(e)) => {
                let _ = conn.close(0, "setup failed").await;
                Err(e.to_string())
            }
            Err(_) => {
                let _ = conn.close(0, "setup timed out").await;
                Err("setup timed out".into())
            }
        }
    }

    /// The open session, or a new one on the address in use or the next that answers.
    async fn session<'a>(
        &self,
        state: &'a mut (Option<Session>, usize),
    ) -> Result<&'a mut Session, AmqpInspectError> {
        if state
            .0
            .as_ref()
            .is_some_and(|s| !s.conn.status().connected())
        {
            state.0 = None;
        }
        if state.0.is_none() {
            let mut last = String::new();
            for k in 0..self.endpoints.len() {
                let i = (state.1 + k) % self.endpoints.len();
                match self.open(&self.endpoints[i]).await {
                    Ok(s) => {
                        state.0 = Some(s);
                        state.1 = i;
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            if state.0.is_none() {
                return Err(self.err(state.1, last));
            }
        }
        Ok(state.0.as_mut().expect("opened above"))
    }

    async fn publish(
        &self,
        s: &Session,
        body: &Json,
        timeout: Duration,
    ) -> Result<(), lapin::Error> {
        // kombu: `expires = time() + timeout`.
        let expires = crate::connectors::celery_correlate::now_secs() + timeout.as_secs_f64();
        let mut headers = FieldTable::default();
        headers.insert("clock".into(), AMQPValue::LongLongInt(1));
        headers.insert("expires".into(), AMQPValue::Double(expires));
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        s.channel
            .basic_publish(
                EXCHANGE,
                "",
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                props,
            )
            .await?;
        Ok(())
    }

    /// Celery's `app.control.broadcast(command, arguments, destination, reply, timeout, limit)`
    /// (what `super::control` sends through `super::control::Pidbox`): without `reply`
    /// fire-and-forget; with it, the replies (`{worker: answer}` each) that came before the
    /// timeout or the limit (default: one per destination).
    pub async fn broadcast(
        &self,
        method: &str,
        arguments: Json,
        destination: Option<&[String]>,
        reply: Option<ReplyWait>,
    ) -> Result<Vec<Json>, AmqpInspectError> {
        let Some(wait) = reply else {
            let body = json!({
                "method": method,
                "arguments": arguments,
                "destination": destination,
                "pattern": null,
                "matcher": null,
            });
            // kombu: `expires = time() + timeout`, Celery's broadcast timeout defaults to 1s.
            return self.publish_only(&body, Duration::from_secs(1)).await;
        };
        // kombu: the limit defaults to the number of destinations.
        let limit = wait
            .limit
            .or_else(|| destination.map(<[String]>::len))
            .filter(|n| *n > 0);
        let mut answers = self
            .round(&[(method, arguments)], destination, limit, wait.timeout)
            .await?;
        Ok(answers
            .remove(method)
            .unwrap_or_default()
            .into_iter()
            .map(|(worker, answer)| json!({ worker: answer }))
            .collect())
    }

    /// Broadcast `methods` (to `destination` only, when given) and collect the answers until
    /// the timeout, or earlier once `expect` workers answered every method.
    pub async fn inspect(
        &self,
        methods: &[&str],
        destination: Option<&str>,
        expect: Option<usize>,
    ) -> Result<Answers, AmqpInspectError> {
        let calls: Vec<(&str, Json)> = methods
            .iter()
            .map(|m| {
                let args = if *m == "active" {
                    json!({"safe": true})
                } else {
                    json!({})
                };
                (*m, args)
            })
            .collect();
        let dest = destination.map(|d| vec![d.to_string()]);
        let limit = match (destination, expect) {
            (Some(_), _) => Some(1),
            (None, e) => e.filter(|n| *n > 0),
        };
        self.round(&calls, dest.as_deref(), limit, self.timeout)
            .await
    }

    async fn round(
        &self,
        calls: &[(&str, Json)],
        destination: Option<&[String]>,
        limit: Option<usize>,
        timeout: Duration,
    ) -> Result<Answers, AmqpInspectError> {
        let mut state = self.state.lock().await;
        let at = state.1;
        let s = self.session(&mut state).await?;
        let mut tickets: BTreeMap<String, String> = BTreeMap::new();
        let mut answers: Answers = calls
            .iter()
            .map(|(m, _)| (m.to_string(), BTreeMap::new()))
            .collect();
        for (m, args) in calls {
            let ticket = super::inspect::uuid4();
            let body = json!({
                "method": m,
                "arguments": args,
                "destination": destination,
                "pattern": null,
                "matcher": null,
                "ticket": ticket,
                "reply_to": {"exchange": REPLY_EXCHANGE, "routing_key": self.oid},
            });
            if let Err(e) = self.publish(s, &body, timeout).await {
                state.0 = None;
                return Err(self.err(at, e));
            }
            tickets.insert(ticket, m.to_string());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(n) = limit {
                if answers.values().all(|a| a.len() >= n) {
                    break;
                }
            }
            let next = tokio::time::timeout_at(deadline, s.replies.next()).await;
            let d = match next {
                Err(_) => break,
                Ok(Some(Ok(d))) => d,
                Ok(Some(Err(e))) => {
                    state.0 = None;
                    return Err(self.err(at, e));
                }
                Ok(None) => {
                    state.0 = None;
                    return Err(self.err(at, "the broker cancelled the reply consumer"));
                }
            };
            let ticket =
                d.properties
                    .headers()
                    .as_ref()
                    .and_then(|h| match h.inner().get("ticket") {
                        Some(AMQPValue::LongString(t)) => {
                            Some(String::from_utf8_lossy(t.as_bytes()).into_owned())
                        }
                        Some(AMQPValue::ShortString(t)) => Some(t.to_string()),
                        _ => None,
                    });
            let Some(method) = ticket.and_then(|t| tickets.get(&t)) else {
                continue; // a late answer to an earlier round, or not a reply
            };
            match serde_json::from_slice::<Json>(&d.data) {
                Ok(Json::Object(by_worker)) => {
                    if let Some(slot) = answers.get_mut(method) {
                        slot.extend(by_worker);
                    }
                }
                _ => {
                    tracing::debug!(broker = %self.endpoint(), "Ignored an undecodable remote-control reply.")
                }
            }
        }
        Ok(answers)
    }

    /// Ask every worker for an immediate `worker-heartbeat` (what Celery's event receiver does
    /// when it connects).
    pub async fn wakeup(&self) -> Result<(), AmqpInspectError> {
        let body = json!({
            "method": "heartbeat",
            "arguments": {},
            "destination": null,
            "pattern": null,
            "matcher": null,
        });
        self.publish_only(&body, self.timeout).await?;
        Ok(())
    }

    /// Publish one request that expects no reply.
    async fn publish_only(
        &self,
        body: &Json,
        timeout: Duration,
    ) -> Result<Vec<Json>, AmqpInspectError> {
        let mut state = self.state.lock().await;
        let at = state.1;
        let s = self.session(&mut state).await?;
        if let Err(e) = self.publish(s, body, timeout).await {
            state.0 = None;
            return Err(self.err(at, e));
        }
        Ok(Vec::new())
    }

    /// Ready messages in each queue (0 for a queue that does not exist).
    pub async fn queue_lengths(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, u64)>, AmqpInspectError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = self.state.lock().await;
        let at = state.1;
        let s = self.session(&mut state).await?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            match amqp::queue_depth(&s.conn, &mut s.probe, n).await {
                Ok(d) => out.push((n.clone(), d.map_or(0, |(m, _)| u64::from(m)))),
                Err(e) => {
                    state.0 = None;
                    return Err(self.err(at, e));
                }
            }
        }
        Ok(out)
    }

    /// Close the connection (our reply queue goes with it).
    pub async fn unbind(&self) {
        let mut state = self.state.lock().await;
        if let Some(s) = state.0.take() {
            let _ = s.conn.close(200, "shutdown").await;
        }
    }
}
