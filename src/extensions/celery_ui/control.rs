//! Flower 2.2's write API: remote-control commands and task publishing, off unless `read_only:
//! false`.
//!
//! This module owns the mapping of each Flower path, its parameters and its answers onto Celery
//! remote-control commands (what `celery control` / `app.control` sends) and onto task messages
//! (kombu protocol 2, what `app.send_task` publishes). It knows nothing of the broker: commands
//! go through the [`Pidbox`] seam (one `broadcast` and one `publish_task`), implemented by each
//! broker transport (Redis: [`super::inspect::Inspector`]; either broker: [`super::remote::Remote`],
//! which forwards to the Redis or the AMQP pidbox). Results and aborts go through the
//! result backend ([`super::results`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use hyper::StatusCode;
use serde_json::{json, Map, Value as Json};

use super::inspect::{uuid4, Inspector, ReplyWait};
use super::remote::RemoteError;
use crate::time::now_secs;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A broker's remote-control and publishing transport: the seam between the control API and
/// the broker (Redis pub/sub + lists; AMQP exchanges).
pub trait Pidbox: Send + Sync {
    /// Celery's `app.control.broadcast(command, arguments, destination, reply, timeout, limit)`:
    /// without `reply` fire-and-forget; with it, the replies (`{worker: answer}` each).
    fn broadcast<'a>(
        &'a self,
        command: &'a str,
        arguments: Json,
        destination: Option<&'a [String]>,
        reply: Option<ReplyWait>,
    ) -> BoxFut<'a, Result<Vec<Json>, RemoteError>>;

    /// Publish a task message (a kombu envelope from [`task_message`]) to `queue`.
    fn publish_task<'a>(
        &'a self,
        queue: &'a str,
        priority: u8,
        message: &'a Json,
    ) -> BoxFut<'a, Result<(), RemoteError>>;
}

impl Pidbox for Inspector {
    fn broadcast<'a>(
        &'a self,
        command: &'a str,
        arguments: Json,
        destination: Option<&'a [String]>,
        reply: Option<ReplyWait>,
    ) -> BoxFut<'a, Result<Vec<Json>, RemoteError>> {
        Box::pin(async move {
            Ok(Inspector::broadcast(self, command, arguments, destination, reply).await?)
        })
    }

    fn publish_task<'a>(
        &'a self,
        queue: &'a str,
        priority: u8,
        message: &'a Json,
    ) -> BoxFut<'a, Result<(), RemoteError>> {
        Box::pin(async move { Ok(Inspector::publish_task(self, queue, priority, message).await?) })
    }
}

/// Every control action, as counted in `celeriac_ui_control_total{action}`.
pub const ACTIONS: [&str; 14] = [
    "task.revoke",
    "task.rate_limit",
    "task.time_limit",
    "task.abort",
    "task.async_apply",
    "task.send_task",
    "worker.shutdown",
    "worker.pool_restart",
    "worker.pool_grow",
    "worker.pool_shrink",
    "worker.pool_autoscale",
    "worker.queue_add_consumer",
    "worker.queue_cancel_consumer",
    "unknown",
];

/// Results, as counted in `celeriac_ui_control_total{result}`: done, refused before anything
/// was sent (read-only, bad request, unknown worker/task, cross-origin), or failed (the worker
/// did not confirm, the broker or backend failed).
pub const RESULTS: [&str; 3] = ["ok", "refused", "failed"];

/// An answer of the write API, in Flower's form: JSON on success, Flower's plain-text reason
/// otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Json(StatusCode, Json),
    Text(StatusCode, String),
}

impl Answer {
    fn message(m: impl Into<String>) -> Answer {
        Answer::Json(StatusCode::OK, json!({ "message": m.into() }))
    }
    fn text(status: StatusCode, m: impl Into<String>) -> Answer {
        Answer::Text(status, m.into())
    }
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Json(s, _) | Answer::Text(s, _) => *s,
        }
    }
}

/// One parsed write request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub action: &'static str,
    /// The task id, task name or worker name of the path.
    pub target: String,
    /// Query and form arguments, in order.
    pub args: Vec<(String, String)>,
    /// The JSON body (async-apply, send-task).
    pub body: Option<Json>,
}

/// The action and target of a write path; `None` for a path that is not one.
pub fn route(path: &str) -> Option<(&'static str, String)> {
    const PATHS: [(&str, &str); 13] = [
        ("/api/task/revoke/", "task.revoke"),
        ("/api/task/rate-limit/", "task.rate_limit"),
        ("/api/task/timeout/", "task.time_limit"),
        ("/api/task/abort/", "task.abort"),
        ("/api/task/async-apply/", "task.async_apply"),
        ("/api/task/send-task/", "task.send_task"),
        ("/api/worker/shutdown/", "worker.shutdown"),
        ("/api/worker/pool/restart/", "worker.pool_restart"),
        ("/api/worker/pool/grow/", "worker.pool_grow"),
        ("/api/worker/pool/shrink/", "worker.pool_shrink"),
        ("/api/worker/pool/autoscale/", "worker.pool_autoscale"),
        (
            "/api/worker/queue/add-consumer/",
            "worker.queue_add_consumer",
        ),
        (
            "/api/worker/queue/cancel-consumer/",
            "worker.queue_cancel_consumer",
        ),
    ];
    PATHS.iter().find_map(|(prefix, action)| {
        path.strip_prefix(prefix)
            .filter(|t| !t.is_empty())
            .map(|t| (*action, super::http::percent_decode(t)))
    })
}

/// What the control layer needs to know of the dashboard's state.
pub struct Known {
    pub workers: BTreeSet<String>,
    pub tasks: BTreeSet<String>,
}

fn arg<'a>(r: &'a Request, k: &str) -> Option<&'a str> {
    r.args
        .iter()
        .rev()
        .find(|(q, _)| q == k)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(r: &'a Request, k: &str) -> Result<&'a str, Answer> {
    arg(r, k).ok_or_else(|| Answer::text(StatusCode::BAD_REQUEST, format!("Missing argument {k}")))
}

fn typed<T: std::str::FromStr>(r: &Request, k: &str, ty: &str) -> Result<Option<T>, Answer> {
    match arg(r, k) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            Answer::text(
                StatusCode::BAD_REQUEST,
                format!("Invalid argument '{v}' of type '{ty}'"),
            )
        }),
    }
}

/// Python's `strtobool`, as Flower reads `terminate=`.
fn strtobool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Some(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Flower's `error_reason`: the worker's `error`, else `Unknown reason`.
fn error_reason(worker: &str, replies: &[Json]) -> String {
    replies
        .iter()
        .find_map(|r| r.get(worker))
        .map(|a| {
            a.get("error")
                .and_then(Json::as_str)
                .unwrap_or("Unknown reason")
                .to_string()
        })
        .unwrap_or_else(|| "Unknown reason".into())
}

/// The worker's `ok` answer in the first reply, as Flower reads `response[0][workername]['ok']`.
fn ok_of<'a>(worker: &str, replies: &'a [Json]) -> Option<&'a Json> {
    replies.first()?.get(worker)?.get("ok")
}

/// Runs a write request: `Ok` is the answer and whether the action was carried out.
pub async fn run(
    pidbox: &dyn Pidbox,
    reply_timeout: Duration,
    known: &Known,
    r: &Request,
) -> Result<Answer, Answer> {
    let wait = |limit: Option<usize>| {
        Some(ReplyWait {
            timeout: reply_timeout,
            limit,
        })
    };
    let worker_known = |w: &str| {
        if known.workers.contains(w) {
            Ok(())
        } else {
            Err(Answer::text(
                StatusCode::NOT_FOUND,
                format!("Unknown worker '{w}'"),
            ))
        }
    };
    let broker_failed =
        |e: RemoteError| Answer::text(StatusCode::SERVICE_UNAVAILABLE, format!("Broker: {e}"));
    let t = r.target.as_str();
    match r.action {
        "task.revoke" => {
            let terminate = match arg(r, "terminate") {
                None => false,
                Some(v) => strtobool(v).ok_or_else(|| {
                    Answer::text(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid argument '{v}' of type 'bool'"),
                    )
                })?,
            };
            let signal = arg(r, "signal").unwrap_or("SIGTERM");
            pidbox
                .broadcast(
                    "revoke",
                    json!({"task_id": t, "terminate": terminate, "signal": signal}),
                    None,
                    None,
                )
                .await
                .map_err(broker_failed)?;
            Ok(Answer::message(format!("Revoked '{t}'")))
        }
        "task.rate_limit" | "task.time_limit" => {
            let worker = required(r, "workername")?.to_string();
            let (command, arguments, fail) = if r.action == "task.rate_limit" {
                let rate = required(r, "ratelimit")?;
                (
                    "rate_limit",
                    json!({"task_name": t, "rate_limit": rate}),
                    "Failed to set rate limit",
                )
            } else {
                let hard: Option<f64> = typed(r, "hard", "float")?;
                let soft: Option<f64> = typed(r, "soft", "float")?;
                (
                    "time_limit",
                    json!({"task_name": t, "hard": hard, "soft": soft}),
                    "Failed to set timeouts",
                )
            };
            if !known.tasks.contains(t) {
                return Err(Answer::text(
                    StatusCode::NOT_FOUND,
                    format!("Unknown task '{t}'"),
                ));
            }
            worker_known(&worker)?;
            let dest = [worker.clone()];
            let replies = pidbox
                .broadcast(command, arguments, Some(&dest), wait(None))
                .await
                .map_err(broker_failed)?;
            match ok_of(&worker, &replies) {
                Some(ok) => Ok(Answer::message(ok.as_str().unwrap_or_default())),
                None => Err(Answer::text(
                    StatusCode::FORBIDDEN,
                    format!("{fail}: '{}'", error_reason(&worker, &replies)),
                )),
            }
        }
        "worker.shutdown" => {
            worker_known(t)?;
            let dest = [t.to_string()];
            pidbox
                .broadcast("shutdown", json!({}), Some(&dest), None)
                .await
                .map_err(broker_failed)?;
            Ok(Answer::message("Shutting down!"))
        }
        "worker.pool_restart"
        | "worker.pool_grow"
        | "worker.pool_shrink"
        | "worker.pool_autoscale"
        | "worker.queue_add_consumer"
        | "worker.queue_cancel_consumer" => {
            worker_known(t)?;
            let (command, arguments, done, fail): (&str, Json, Option<String>, String) =
                match r.action {
                    "worker.pool_restart" => (
                        "pool_restart",
                        json!({"reload": false}),
                        Some(format!("Restarting '{t}' worker's pool")),
                        format!("Failed to restart the '{t}' pool"),
                    ),
                    "worker.pool_grow" | "worker.pool_shrink" => {
                        let n: i64 = typed(r, "n", "int")?.unwrap_or(1);
                        let (command, doing, verb) = if r.action == "worker.pool_grow" {
                            ("pool_grow", "Growing", "grow")
                        } else {
                            ("pool_shrink", "Shrinking", "shrink")
                        };
                        (
                            command,
                            json!({ "n": n }),
                            Some(format!("{doing} '{t}' worker's pool by {n}")),
                            format!("Failed to {verb} '{t}' worker's pool"),
                        )
                    }
                    "worker.pool_autoscale" => {
                        let min: i64 = typed(r, "min", "int")?
                            .ok_or_else(|| required(r, "min").unwrap_err())?;
                        let max: i64 = typed(r, "max", "int")?
                            .ok_or_else(|| required(r, "max").unwrap_err())?;
                        (
                            "autoscale",
                            json!({"min": min, "max": max}),
                            Some(format!("Autoscaling '{t}' worker (min={min}, max={max})")),
                            format!("Failed to autoscale '{t}' worker"),
                        )
                    }
                    _ => {
                        let q = required(r, "queue")?;
                        let (command, fail) = if r.action == "worker.queue_add_consumer" {
                            (
                                "add_consumer",
                                format!("Failed to add '{q}' consumer to '{t}' worker"),
                            )
                        } else {
                            (
                                "cancel_consumer",
                                format!("Failed to cancel '{q}' consumer from '{t}' worker"),
                            )
                        };
                        (command, json!({ "queue": q }), None, fail)
                    }
                };
            let dest = [t.to_string()];
            let replies = pidbox
                .broadcast(command, arguments, Some(&dest), wait(None))
                .await
                .map_err(broker_failed)?;
            match ok_of(t, &replies) {
                // Flower answers the worker's own `ok` text for the consumer commands.
                Some(ok) => {
                    Ok(Answer::message(done.unwrap_or_else(|| {
                        ok.as_str().unwrap_or_default().to_string()
                    })))
                }
                None => Err(Answer::text(
                    StatusCode::FORBIDDEN,
                    format!("{fail}: {}", error_reason(t, &replies)),
                )),
            }
        }
        "task.async_apply" | "task.send_task" => {
            if r.action == "task.async_apply" && !known.tasks.contains(t) {
                return Err(Answer::text(
                    StatusCode::NOT_FOUND,
                    format!("Unknown task '{t}'"),
                ));
            }
            let (args, kwargs, options) = task_args(r.body.as_ref())?;
            let id = uuid4();
            let (message, queue, priority) =
                task_message(t, &id, &args, &kwargs, &options, now_secs())
                    .map_err(|e| Answer::text(StatusCode::BAD_REQUEST, e))?;
            pidbox
                .publish_task(&queue, priority, &message)
                .await
                .map_err(broker_failed)?;
            Ok(Answer::Json(StatusCode::OK, json!({ "task-id": id })))
        }
        other => Err(Answer::text(
            StatusCode::NOT_FOUND,
            format!("no such action: {other}"),
        )),
    }
}

/// Flower's `get_task_args`: `args` (an array), `kwargs` and the other options of the JSON body.
fn task_args(body: Option<&Json>) -> Result<(Json, Json, Map<String, Json>), Answer> {
    let mut options = match body {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(_) => return Err(Answer::text(StatusCode::BAD_REQUEST, "invalid options")),
    };
    let args = options.remove("args").unwrap_or_else(|| json!([]));
    let kwargs = options.remove("kwargs").unwrap_or_else(|| json!({}));
    if !args.is_array() {
        return Err(Answer::text(
            StatusCode::BAD_REQUEST,
            "args must be an array",
        ));
    }
    if !kwargs.is_object() {
        return Err(Answer::text(
            StatusCode::BAD_REQUEST,
            "kwargs must be an object",
        ));
    }
    Ok((args, kwargs, options))
}

/// Python's `repr` of a JSON value (Celery's `argsrepr`/`kwargsrepr`).
pub fn py_repr(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => {
            let q = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::with_capacity(s.len() + 2);
            out.push(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
            out
        }
        Json::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Json::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&Json::String(k.clone())), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// ISO 8601 (UTC, microseconds) of Unix seconds, as Celery reads `eta`/`expires`.
fn iso(ts: f64) -> String {
    crate::time::rfc3339_secs(ts)
}

/// Flower's date option format, `%Y-%m-%d %H:%M:%S.%f`, read as UTC.
fn parse_flower_date(v: &str) -> Option<f64> {
    let (date, time) = v.trim().split_once(' ')?;
    crate::time::parse_iso8601(&format!("{date}T{time}Z"))
}

/// A Celery task message (protocol 2) as kombu's Redis transport stores it, the queue it goes
/// to and its priority. `options` are `apply_async`'s: `queue` (default `celery`),
/// `routing_key` (a queue name), `priority` (0-9), `countdown`, `eta`, `expires` (Flower's
/// forms). Others are refused rather than silently ignored.
pub fn task_message(
    name: &str,
    id: &str,
    args: &Json,
    kwargs: &Json,
    options: &Map<String, Json>,
    now: f64,
) -> Result<(Json, String, u8), String> {
    let mut queue = "celery".to_string();
    let mut priority: u8 = 0;
    let mut eta: Option<f64> = None;
    let mut expires: Option<f64> = None;
    let num = |v: &Json| -> Option<f64> {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    for (k, v) in options {
        match k.as_str() {
            "queue" | "routing_key" => {
                queue = v
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .ok_or("Invalid option")?
                    .to_string();
            }
            "priority" => {
                priority = v.as_u64().filter(|p| *p <= 255).ok_or("Invalid option")? as u8;
            }
            "countdown" => eta = Some(now + num(v).ok_or("Invalid option")?),
            "eta" => {
                eta = Some(
                    v.as_str()
                        .and_then(parse_flower_date)
                        .ok_or("Invalid option")?,
                )
            }
            "expires" => {
                expires = Some(match num(v) {
                    Some(secs) => now + secs,
                    None => v
                        .as_str()
                        .and_then(parse_flower_date)
                        .ok_or("Invalid option")?,
                })
            }
            other => return Err(format!("Unsupported option '{other}'")),
        }
    }
    let body =
        json!([args, kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    let message = json!({
        "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": name,
            "id": id,
            "shadow": null,
            "eta": eta.map(iso),
            "expires": expires.map(iso),
            "group": null,
            "group_index": null,
            "retries": 0,
            "timelimit": [null, null],
            "root_id": id,
            "parent_id": null,
            "argsrepr": py_repr(args),
            "kwargsrepr": py_repr(kwargs),
            "origin": format!("celeriac@{host}"),
            "ignore_result": false,
            "replaced_task_nesting": 0,
            "stamped_headers": null,
            "stamps": {},
        },
        "properties": {
            "correlation_id": id,
            "reply_to": uuid4(),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": uuid4(),
        },
    });
    Ok((message, queue, priority))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// (command, arguments, destination, reply awaited).
    type Sent = (String, Json, Option<Vec<String>>, bool);

    /// Records what would go over the broker and answers like a worker.
    struct Recorder {
        sent: Mutex<Vec<Sent>>,
        answer: Option<Json>,
    }

    impl Pidbox for Recorder {
        fn broadcast<'a>(
            &'a self,
            command: &'a str,
            arguments: Json,
            destination: Option<&'a [String]>,
            reply: Option<ReplyWait>,
        ) -> BoxFut<'a, Result<Vec<Json>, RemoteError>> {
            self.sent.lock().unwrap().push((
                command.into(),
                arguments,
                destination.map(<[String]>::to_vec),
                reply.is_some(),
            ));
            let out = self.answer.clone().into_iter().collect();
            Box::pin(async move { Ok(out) })
        }
        fn publish_task<'a>(
            &'a self,
            queue: &'a str,
            _priority: u8,
            message: &'a Json,
        ) -> BoxFut<'a, Result<(), RemoteError>> {
            self.sent.lock().unwrap().push((
                "publish".into(),
                message.clone(),
                Some(vec![queue.into()]),
                false,
            ));
            Box::pin(async { Ok(()) })
        }
    }

    fn req(path: &str, args: &[(&str, &str)]) -> Request {
        let (action, target) = route(path).unwrap();
        Request {
            action,
            target,
            args: args
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: None,
        }
    }

    fn known() -> Known {
        Known {
            workers: ["w1@h".to_string()].into(),
            tasks: ["t.add".to_string()].into(),
        }
    }

    fn block<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn recorder(answer: Option<Json>) -> Recorder {
        Recorder {
            sent: Mutex::new(Vec::new()),
            answer,
        }
    }

    /// `path` with `args` run against `rec`, with workers and tasks [`known`] and a 1 s wait.
    fn call(rec: &Recorder, path: &str, args: &[(&str, &str)]) -> Result<Answer, Answer> {
        block(run(rec, Duration::from_secs(1), &known(), &req(path, args)))
    }

    #[test]
    fn commands_and_answers_are_flowers() {
        let rec = recorder(Some(json!({"w1@h": {"ok": "pool will grow"}})));
        let a = call(&rec, "/api/worker/pool/grow/w1%40h", &[("n", "2")]);
        assert_eq!(a, Ok(Answer::message("Growing 'w1@h' worker's pool by 2")));
        let a = call(&rec, "/api/task/revoke/abc", &[("terminate", "true")]);
        assert_eq!(a, Ok(Answer::message("Revoked 'abc'")));
        let sent = rec.sent.lock().unwrap().clone();
        assert_eq!(
            sent[0],
            (
                "pool_grow".into(),
                json!({"n": 2}),
                Some(vec!["w1@h".into()]),
                true
            )
        );
        assert_eq!(
            sent[1],
            (
                "revoke".into(),
                json!({"task_id": "abc", "terminate": true, "signal": "SIGTERM"}),
                None,
                false
            )
        );
        // Unknown worker, missing argument, a worker that does not answer.
        let a = call(&rec, "/api/worker/pool/grow/nobody", &[]);
        assert_eq!(a.unwrap_err().status(), StatusCode::NOT_FOUND);
        let a = call(&rec, "/api/worker/queue/add-consumer/w1@h", &[]);
        assert_eq!(
            a,
            Err(Answer::text(
                StatusCode::BAD_REQUEST,
                "Missing argument queue"
            ))
        );
        let silent = recorder(None);
        let a = call(&silent, "/api/worker/pool/shrink/w1@h", &[]);
        assert_eq!(
            a,
            Err(Answer::text(
                StatusCode::FORBIDDEN,
                "Failed to shrink 'w1@h' worker's pool: Unknown reason"
            ))
        );
        let refused = recorder(Some(json!({"w1@h": {"error": "rate limits disabled"}})));
        let a = call(
            &refused,
            "/api/task/rate-limit/t.add",
            &[("ratelimit", "10/m"), ("workername", "w1@h")],
        );
        assert_eq!(
            a,
            Err(Answer::text(
                StatusCode::FORBIDDEN,
                "Failed to set rate limit: 'rate limits disabled'"
            ))
        );
    }

    #[test]
    fn task_messages_are_protocol_2() {
        let mut opts = Map::new();
        opts.insert("countdown".into(), json!(10));
        opts.insert("queue".into(), json!("q1"));
        let (m, q, p) = task_message(
            "t.add",
            "id-1",
            &json!([1, "it's"]),
            &json!({"x": null}),
            &opts,
            1_800_000_000.0,
        )
        .unwrap();
        assert_eq!((q.as_str(), p), ("q1", 0));
        assert_eq!(m["headers"]["task"], "t.add");
        assert_eq!(m["headers"]["argsrepr"], "[1, \"it's\"]");
        assert_eq!(m["headers"]["kwargsrepr"], "{'x': None}");
        assert_eq!(m["headers"]["eta"], "2027-01-15T08:00:10.000000Z");
        let body = base64::engine::general_purpose::STANDARD
            .decode(m["body"].as_str().unwrap())
            .unwrap();
        let body: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(body[0], json!([1, "it's"]));
        assert_eq!(body[2]["chord"], Json::Null);
        let mut bad = Map::new();
        bad.insert("link".into(), json!("x"));
        assert!(task_message("t", "i", &json!([]), &json!({}), &bad, 0.0).is_err());
        assert!(task_args(Some(&json!({"args": {"a": 1}}))).is_err());
        assert_eq!(
            parse_flower_date("2027-01-15 08:00:10.5"),
            Some(1_800_000_010.5)
        );
    }
}
