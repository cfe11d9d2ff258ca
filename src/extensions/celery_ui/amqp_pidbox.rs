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
//! Task messages (`/api/task/send-task`, `/api/task/async-apply`) are published as Celery's
//! `send_task_message` publishes them on AMQP (`celery/app/amqp.py`): to the default exchange
//! `""` with the queue's name as routing key (the queue's exchange is direct), after declaring the
//! queue as kombu's `maybe_declare` would (a direct exchange and a durable queue of that name,
//! bound with it) when a passive declare finds it missing; an existing queue is left as its
//! worker declared it (priorities, quorum). The body is the protocol-2 JSON
//! `[args, kwargs, embed]` (no envelope, no base64), the protocol-2 headers are AMQP headers,
//! and `content_type` `application/json`, `content_encoding` `utf-8`, `correlation_id` (the
//! task id), `reply_to`, `delivery_mode` 2 and `priority` are AMQP properties.
//!
//! One connection is kept between rounds and reopened (along the failover list) when it fails.
//! Queue depths are RabbitMQ's ready-message counts from a passive `queue.declare`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
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
            oid: crate::celery::uuid4(),
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
            // Publisher confirms: a task is reported sent once RabbitMQ has it.
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>((channel, replies))
        };
        let (channel, replies) =
            amqp::set_up(&conn, CONNECT_TIMEOUT, setup)
                .await
                .map_err(|e| match e {
                    amqp::AmqpError::Timeout(_) => "setup timed out".to_string(),
                    e => e.to_string(),
                })?;
        Ok(Session {
            conn,
            channel,
            replies,
            probe: None,
        })
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
        let expires = crate::time::now_secs() + timeout.as_secs_f64();
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
            let ticket = crate::celery::uuid4();
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

    /// Publish a task message (the kombu envelope of `super::control::task_message`) to
    /// `queue` as Celery does on AMQP (see the module docs).
    pub async fn publish_task(
        &self,
        queue: &str,
        priority: u8,
        message: &Json,
    ) -> Result<(), AmqpInspectError> {
        let (body, props) = task_delivery(message, priority).map_err(|e| self.err(0, e))?;
        let mut state = self.state.lock().await;
        let at = state.1;
        let s = self.session(&mut state).await?;
        let sent = async {
            if amqp::queue_depth(&s.conn, &mut s.probe, queue)
                .await?
                .is_none()
            {
                declare_task_queue(&s.channel, queue).await?;
            }
            s.channel
                .basic_publish("", queue, BasicPublishOptions::default(), &body, props)
                .await?
                .await?;
            Ok::<_, lapin::Error>(())
        };
        if let Err(e) = sent.await {
            state.0 = None;
            return Err(self.err(at, e));
        }
        Ok(())
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

/// Declare `queue` as kombu declares a missing Celery queue (`Queue(name, Exchange(name,
/// 'direct'), name)`): a durable direct exchange, a durable queue, bound with its name.
async fn declare_task_queue(channel: &lapin::Channel, queue: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            queue,
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue,
            queue,
            queue,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// A JSON value as an AMQP field value (what py-amqp writes for the same Python value).
fn field(v: &Json) -> AMQPValue {
    match v {
        Json::Null => AMQPValue::Void,
        Json::Bool(b) => AMQPValue::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => AMQPValue::LongString(s.as_str().into()),
        Json::Array(a) => AMQPValue::FieldArray(a.iter().map(field).collect::<Vec<_>>().into()),
        Json::Object(o) => AMQPValue::FieldTable(table(o)),
    }
}

fn table(o: &serde_json::Map<String, Json>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in o {
        t.insert(k.as_str().into(), field(v));
    }
    t
}

/// The body and properties of the AMQP message for a kombu task envelope (`body` base64 JSON,
/// `headers`, `properties`), as Celery's AMQP producer sends it.
fn task_delivery(message: &Json, priority: u8) -> Result<(Vec<u8>, BasicProperties), String> {
    let body = message["body"]
        .as_str()
        .ok_or("task message without a body")?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("task message body is not base64: {e}"))?;
    let headers = message["headers"]
        .as_object()
        .ok_or("task message without headers")?;
    let text = |v: &Json, default: &str| v.as_str().unwrap_or(default).to_string();
    let p = &message["properties"];
    let mut props = BasicProperties::default()
        .with_content_type(text(&message["content-type"], "application/json").into())
        .with_content_encoding(text(&message["content-encoding"], "utf-8").into())
        .with_headers(table(headers))
        .with_delivery_mode(p["delivery_mode"].as_u64().map_or(2, |m| m as u8))
        .with_correlation_id(text(&p["correlation_id"], "").into())
        .with_reply_to(text(&p["reply_to"], "").into());
    if priority > 0 {
        props = props.with_priority(priority);
    }
    Ok((body, props))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_envelopes_become_amqp_messages() {
        let opts = serde_json::Map::new();
        let (msg, queue, prio) = super::super::control::task_message(
            "shop.a",
            "id-1",
            &json!([41]),
            &json!({}),
            &opts,
            1.0,
        )
        .unwrap();
        let (body, props) = task_delivery(&msg, prio).unwrap();
        assert_eq!(queue, "celery");
        let body: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(body[0], json!([41]));
        assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "id-1");
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(props.priority(), &None);
        let h = props.headers().as_ref().unwrap().inner();
        assert!(
            matches!(h.get("task"), Some(AMQPValue::LongString(t)) if t.to_string() == "shop.a")
        );
        assert!(matches!(h.get("retries"), Some(AMQPValue::LongLongInt(0))));
        assert!(matches!(h.get("eta"), Some(AMQPValue::Void)));
        assert!(
            matches!(h.get("timelimit"), Some(AMQPValue::FieldArray(a)) if a.as_slice().len() == 2)
        );
        assert!(task_delivery(&json!({"body": "%%"}), 0).is_err());
    }
}
