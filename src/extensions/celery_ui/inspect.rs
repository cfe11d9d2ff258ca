//! Celery remote control (`celery inspect`) over a Redis broker, and queue lengths.
//!
//! This module owns the pidbox wire protocol as kombu's Redis transport speaks it:
//!
//! * a request is a kombu envelope (JSON, base64 body) PUBLISHed on the fanout channel
//!   `<global_keyprefix>/<db>.celery.pidbox`; its body is
//!   `{"method", "arguments", "destination", "pattern", "matcher", "ticket", "reply_to"}` and its
//!   headers carry `clock` and `expires` (workers drop expired requests);
//! * replies go to the direct exchange `reply.celery.pidbox` with our routing key (the mailbox
//!   `oid`). kombu looks the exchange's bindings up in the set `_kombu.binding.reply.celery.pidbox`
//!   (members `routing_key \x06\x16 pattern \x06\x16 queue`) and LPUSHes to the bound queue, so we
//!   add our binding and BRPOP `<oid>.reply.celery.pidbox` until the timeout. Each reply envelope
//!   carries the request's `ticket` header and a body `{worker node name: answer}`.
//!
//! Queue lengths are the sum of LLEN over a queue's priority lists, as Flower counts them.
//! Task messages (the control API's send-task) are LPUSHed on the queue's list for their
//! priority, as kombu's Redis transport publishes them.
//!
//! [`Inspector::broadcast`] is the one pidbox primitive: the periodic inspect round and every
//! control command (`super::control`) go through it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde_json::{json, Value as Json};

use crate::receivers::redis_queues::queue_keys;
use crate::redis_broker::{Broker, BrokerError};

/// The methods Flower calls, in its order.
pub const METHODS: [&str; 8] = [
    "stats",
    "active_queues",
    "registered",
    "scheduled",
    "active",
    "reserved",
    "revoked",
    "conf",
];

/// Flower fetches these (possibly long) task lists only when one worker is asked for.
pub const TASK_LIST_METHODS: [&str; 4] = ["scheduled", "active", "reserved", "revoked"];

const SEP: &str = "\x06\x16";
const PRIORITY_STEPS: [u32; 4] = [0, 3, 6, 9];
const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("broker {endpoint}: {source}")]
    Redis {
        endpoint: String,
        source: redis::RedisError,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// How long a broadcast waits for replies, and after how many it stops (Celery's `timeout`
/// and `limit`).
#[derive(Debug, Clone, Copy)]
pub struct ReplyWait {
    pub timeout: Duration,
    pub limit: Option<usize>,
}

/// Answers of one broadcast round: method → worker node name → answer.
pub type Answers = BTreeMap<String, BTreeMap<String, Json>>;

/// A remote-control client for one broker (a failover list of addresses, or sentinels).
pub struct Inspector {
    /// Where the broker is (shared with the Redis receivers: `crate::redis_broker`).
    broker: Broker,
    /// The failover list entry in use: the last one that worked.
    current: AtomicUsize,
    /// The node in use, `redis://host:port/db` for logs (no credentials).
    endpoint: Mutex<String>,
    db: i64,
    prefix: String,
    oid: String,
    timeout: Duration,
}

impl Inspector {
    pub fn new(broker: Broker, global_keyprefix: &str, timeout: Duration) -> Inspector {
        Inspector {
            db: broker.db(),
            endpoint: Mutex::new(broker.describe()),
            broker,
            current: AtomicUsize::new(0),
            prefix: global_keyprefix.to_string(),
            oid: uuid4(),
            timeout,
        }
    }

    /// The node in use, for logs.
    pub fn endpoint(&self) -> String {
        self.endpoint.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn err(&self, source: redis::RedisError) -> InspectError {
        InspectError::Redis {
            endpoint: self.endpoint(),
            source,
        }
    }

    fn reply_queue(&self) -> String {
        format!("{}.{REPLY_EXCHANGE}", self.oid)
    }

    /// A connection to the address in use, or the next one that answers (with Sentinel: the
    /// master the sentinels name now, verified with ROLE).
    async fn connect(&self) -> Result<MultiplexedConnection, InspectError> {
        // BRPOP blocks for up to the inspect timeout: the response timeout must exceed it.
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(self.timeout + Duration::from_secs(5)));
        let start = self.current.load(Ordering::Relaxed);
        let (conn, i, ep) = self
            .broker
            .multiplexed(start, &cfg, Duration::from_secs(5))
            .await?;
        self.current.store(i, Ordering::Relaxed);
        if let Ok(mut e) = self.endpoint.lock() {
            *e = ep.redacted();
        }
        Ok(conn)
    }

    /// Broadcast `methods` (to `destination` only, when given) and collect the answers until
    /// the timeout, or earlier once `expect` workers answered every method. One round of
    /// [`Inspector::broadcast_many`].
    pub async fn inspect(
        &self,
        methods: &[&str],
        destination: Option<&str>,
        expect: Option<usize>,
    ) -> Result<Answers, InspectError> {
        let requests: Vec<(String, Json)> = methods
            .iter()
            .map(|m| {
                let arguments = if *m == "active" {
                    json!({"safe": true})
                } else {
                    json!({})
                };
                (m.to_string(), arguments)
            })
            .collect();
        let destination: Option<Vec<String>> = destination.map(|d| vec![d.to_string()]);
        let limit = match (&destination, expect) {
            (Some(_), _) => Some(1),
            (None, e) => e.filter(|n| *n > 0),
        };
        let replies = self
            .broadcast_many(
                &requests,
                destination.as_deref(),
                Some(ReplyWait {
                    timeout: self.timeout,
                    limit,
                }),
            )
            .await?;
        let mut answers: Answers = BTreeMap::new();
        for ((method, _), bodies) in requests.iter().zip(replies) {
            let slot = answers.entry(method.clone()).or_default();
            for body in bodies {
                if let Json::Object(by_worker) = body {
                    slot.extend(by_worker);
                }
            }
        }
        Ok(answers)
    }

    /// Celery's `app.control.broadcast(command, arguments, destination, reply, timeout, limit)`:
    /// one pidbox request; with `reply`, the replies (`{worker: answer}` each) that came before
    /// the timeout or the limit (default: one per destination).
    pub async fn broadcast(
        &self,
        command: &str,
        arguments: Json,
        destination: Option<&[String]>,
        reply: Option<ReplyWait>,
    ) -> Result<Vec<Json>, InspectError> {
        let requests = [(command.to_string(), arguments)];
        let mut replies = self.broadcast_many(&requests, destination, reply).await?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// Several pidbox requests published together (one pipeline), replies collected per
    /// request (by ticket) on our reply queue.
    async fn broadcast_many(
        &self,
        requests: &[(String, Json)],
        destination: Option<&[String]>,
        reply: Option<ReplyWait>,
    ) -> Result<Vec<Vec<Json>>, InspectError> {
        let mut conn = self.connect().await?;
        let reply_queue = format!("{}{}", self.prefix, self.reply_queue());
        let binding_key = format!("{}_kombu.binding.{REPLY_EXCHANGE}", self.prefix);
        let member = format!("{}{SEP}{SEP}{}", self.oid, self.reply_queue());
        let channel = format!("{}/{}.celery.pidbox", self.prefix, self.db);
        let now = crate::time::now_secs();
        // kombu: `expires = time() + timeout` (Celery's broadcast timeout defaults to 1s).
        let timeout = reply.as_ref().map_or(Duration::from_secs(1), |r| r.timeout);
        let expires = now + timeout.as_secs_f64();
        let mut tickets: BTreeMap<String, usize> = BTreeMap::new();
        let mut pipe = redis::pipe();
        if reply.is_some() {
            pipe.cmd("SADD").arg(&binding_key).arg(&member).ignore();
            pipe.cmd("DEL").arg(&reply_queue).ignore();
        }
        for (i, (method, arguments)) in requests.iter().enumerate() {
            let mut body = json!({
                "method": method,
                "arguments": arguments,
                "destination": destination,
                "pattern": null,
                "matcher": null,
            });
            if reply.is_some() {
                let ticket = uuid4();
                body["ticket"] = json!(ticket);
                body["reply_to"] = json!({"exchange": REPLY_EXCHANGE, "routing_key": self.oid});
                tickets.insert(ticket, i);
            }
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(envelope(&body, expires))
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
        let mut out: Vec<Vec<Json>> = vec![Vec::new(); requests.len()];
        let Some(wait) = reply else {
            return Ok(out);
        };
        // kombu: the limit defaults to the number of destinations.
        let limit = wait
            .limit
            .or_else(|| destination.map(<[String]>::len))
            .filter(|n| *n > 0);
        let deadline = tokio::time::Instant::now() + wait.timeout;
        loop {
            if let Some(n) = limit {
                if out.iter().all(|a| a.len() >= n) {
                    break;
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left < Duration::from_millis(10) {
                break;
            }
            let popped: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
                .arg(&reply_queue)
                .arg(left.as_secs_f64())
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(e))?;
            let Some((_, raw)) = popped else { break };
            match decode_reply(&raw) {
                Some((ticket, body)) => {
                    // Else a late answer to an earlier round.
                    if let Some(i) = tickets.get(&ticket) {
                        out[*i].push(body);
                    }
                }
                None => tracing::debug!(
                    broker = %self.endpoint(),
                    "Ignored an undecodable remote-control reply."
                ),
            }
        }
        // Answers that arrive after the timeout must not pile up.
        let _: Result<(), _> = redis::cmd("EXPIRE")
            .arg(&reply_queue)
            .arg(60)
            .query_async(&mut conn)
            .await;
        Ok(out)
    }

    /// Publish a task message (a kombu envelope, see `control::task_message`) to `queue` as
    /// kombu's Redis transport does: LPUSH on the queue's list for the message's priority.
    pub async fn publish_task(
        &self,
        queue: &str,
        priority: u8,
        message: &Json,
    ) -> Result<(), InspectError> {
        let mut conn = self.connect().await?;
        // kombu maps a priority to the highest step not above it (steps 0, 3, 6, 9).
        let step = PRIORITY_STEPS
            .iter()
            .rev()
            .find(|s| **s <= u32::from(priority))
            .copied()
            .unwrap_or(0);
        let key = if step == 0 {
            format!("{}{queue}", self.prefix)
        } else {
            format!("{}{queue}{SEP}{step}", self.prefix)
        };
        let _: i64 = redis::cmd("LPUSH")
            .arg(key)
            .arg(message.to_string())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Ask every worker for an immediate `worker-heartbeat` (what Celery's event receiver
    /// does when it connects), so workers show as online without waiting a heartbeat interval.
    pub async fn wakeup(&self) -> Result<(), InspectError> {
        self.broadcast("heartbeat", json!({}), None, None)
            .await
            .map(drop)
    }

    /// Messages waiting in each queue (all priority lists), as Flower's `/api/queues/length`.
    pub async fn queue_lengths(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, u64)>, InspectError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connect().await?;
        let mut pipe = redis::pipe();
        let mut per_queue = Vec::with_capacity(names.len());
        for n in names {
            let keys = queue_keys(&self.prefix, n, SEP, &PRIORITY_STEPS);
            per_queue.push(keys.len());
            for k in keys {
                pipe.cmd("LLEN").arg(k);
            }
        }
        let lens: Vec<u64> = pipe.query_async(&mut conn).await.map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(names.len());
        let mut i = 0;
        for (n, k) in names.iter().zip(per_queue) {
            let total = lens.get(i..i + k).map_or(0, |s| s.iter().sum());
            out.push((n.clone(), total));
            i += k;
        }
        Ok(out)
    }

    /// Remove our reply binding (on shutdown; best effort).
    pub async fn unbind(&self) {
        if let Ok(mut conn) = self.connect().await {
            let key = format!("{}_kombu.binding.{REPLY_EXCHANGE}", self.prefix);
            let member = format!("{}{SEP}{SEP}{}", self.oid, self.reply_queue());
            let _: Result<(), _> = redis::cmd("SREM")
                .arg(key)
                .arg(member)
                .query_async(&mut conn)
                .await;
        }
    }
}

/// A kombu envelope around a JSON body, as `Producer.publish` builds it for the pidbox.
pub fn envelope(body: &Json, expires: f64) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    json!({
        "body": b64,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"clock": 1, "expires": expires},
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid4(),
        }
    })
    .to_string()
}

/// `(ticket, body)` of a reply envelope; `None` when it is not one.
pub fn decode_reply(raw: &[u8]) -> Option<(String, Json)> {
    let env: Json = serde_json::from_slice(raw).ok()?;
    let ticket = env.get("headers")?.get("ticket")?.as_str()?.to_string();
    if env.get("content-type")?.as_str()? != "application/json" {
        return None;
    }
    let body = env.get("body")?.as_str()?;
    let encoding = env
        .get("properties")
        .and_then(|p| p.get("body_encoding"))
        .and_then(Json::as_str);
    let bytes = if encoding == Some("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?
    } else {
        body.as_bytes().to_vec()
    };
    Some((ticket, serde_json::from_slice(&bytes).ok()?))
}

pub use crate::celery::uuid4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_as_kombu_reads_it() {
        let body = json!({"method": "stats", "ticket": "t-1"});
        let env: Json = serde_json::from_str(&envelope(&body, 5.0)).unwrap();
        assert_eq!(
            env["properties"]["delivery_info"]["exchange"],
            "celery.pidbox"
        );
        assert_eq!(env["headers"]["expires"], 5.0);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(env["body"].as_str().unwrap())
            .unwrap();
        assert_eq!(serde_json::from_slice::<Json>(&raw).unwrap(), body);
    }

    #[test]
    fn decodes_a_worker_reply() {
        let body = base64::engine::general_purpose::STANDARD.encode(r#"{"w1@h": {"ok": "pong"}}"#);
        let raw = format!(
            r#"{{"body": "{body}", "content-encoding": "utf-8", "content-type": "application/json", "headers": {{"ticket": "abc", "clock": 3}}, "properties": {{"body_encoding": "base64"}}}}"#
        );
        let (t, b) = decode_reply(raw.as_bytes()).unwrap();
        assert_eq!(t, "abc");
        assert_eq!(b["w1@h"]["ok"], "pong");
        assert!(decode_reply(b"not json").is_none());
        assert!(decode_reply(br#"{"headers": {}}"#).is_none());
    }

    #[test]
    fn uuids_are_v4_and_distinct() {
        let (a, b) = (uuid4(), uuid4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
