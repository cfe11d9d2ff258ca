//! The app's Celery result backend, for Flower's `/api/task/result/<id>`, the `state` of a
//! published task and `/api/task/abort/<id>`.
//!
//! This module owns the Redis result backend's key layout as Celery writes it: one string
//! `celery-task-meta-<id>` holding `{"status", "result", "traceback", "children", "date_done",
//! "task_id"}` (JSON), written with `result_expires` (1 day by default) and announced on the
//! channel of the same name. Other backends are not read.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use serde_json::{json, Map, Value as Json};

/// Celery's `READY_STATES`.
const READY: [&str; 3] = ["SUCCESS", "FAILURE", "REVOKED"];
/// Celery's default `result_expires`.
const RESULT_EXPIRES_SECS: u64 = 86_400;

#[derive(Debug, thiserror::Error)]
#[error("result backend {endpoint}: {source}")]
pub struct BackendError {
    endpoint: String,
    source: redis::RedisError,
}

pub struct ResultBackend {
    client: redis::Client,
    endpoint: String,
}

impl ResultBackend {
    pub fn new(client: redis::Client, endpoint: String) -> ResultBackend {
        ResultBackend { client, endpoint }
    }

    fn key(id: &str) -> String {
        format!("celery-task-meta-{id}")
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, BackendError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|source| self.err(source))
    }

    fn err(&self, source: redis::RedisError) -> BackendError {
        BackendError {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// The stored meta of a task; `None` when there is none (Celery's `PENDING`).
    pub async fn meta(&self, id: &str) -> Result<Option<Json>, BackendError> {
        let mut c = self.conn().await?;
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(Self::key(id))
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(raw.and_then(|r| serde_json::from_slice(&r).ok()))
    }

    /// `AsyncResult(id).state`.
    pub async fn state(&self, id: &str) -> Result<String, BackendError> {
        Ok(state_of(self.meta(id).await?.as_ref()))
    }

    /// `AbortableAsyncResult(id).abort()`: store state `ABORTED` (the task checks
    /// `is_aborted()`).
    pub async fn abort(&self, id: &str, now: f64) -> Result<(), BackendError> {
        let meta = json!({
            "status": "ABORTED",
            "result": null,
            "traceback": null,
            "children": [],
            "date_done": crate::time::rfc3339_secs(now),
            "task_id": id,
        })
        .to_string();
        let mut c = self.conn().await?;
        let key = Self::key(id);
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(&meta)
            .arg("EX")
            .arg(RESULT_EXPIRES_SECS)
            .ignore()
            .cmd("PUBLISH")
            .arg(&key)
            .arg(&meta)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

fn state_of(meta: Option<&Json>) -> String {
    meta.and_then(|m| m.get("status"))
        .and_then(Json::as_str)
        .unwrap_or("PENDING")
        .to_string()
}

/// Flower's `/api/task/result/<id>` answer: `task-id` and `state`, plus `result` once ready
/// (and `traceback` for a failure; the exception as Python's `repr`, as Flower's `safe_result`
/// writes an exception).
pub fn result_body(id: &str, meta: Option<&Json>) -> Json {
    let state = state_of(meta);
    let mut out = Map::new();
    out.insert("task-id".into(), json!(id));
    out.insert("state".into(), json!(state));
    if READY.contains(&state.as_str()) {
        let result = meta
            .and_then(|m| m.get("result"))
            .cloned()
            .unwrap_or(Json::Null);
        if state == "FAILURE" {
            out.insert("result".into(), json!(exception_repr(&result)));
            out.insert(
                "traceback".into(),
                meta.and_then(|m| m.get("traceback"))
                    .cloned()
                    .unwrap_or(Json::Null),
            );
        } else if state == "REVOKED" {
            // Celery stores a TaskRevokedError for revoked tasks.
            out.insert("result".into(), json!(exception_repr(&result)));
        } else {
            out.insert("result".into(), result);
        }
    }
    Json::Object(out)
}

/// `KeyError('x')` from Celery's stored `{"exc_type", "exc_message", "exc_module"}`.
fn exception_repr(r: &Json) -> String {
    let Some(ty) = r.get("exc_type").and_then(Json::as_str) else {
        return super::control::py_repr(r);
    };
    let args = match r.get("exc_message") {
        Some(Json::Array(a)) => a
            .iter()
            .map(super::control::py_repr)
            .collect::<Vec<_>>()
            .join(", "),
        Some(Json::Null) | None => String::new(),
        Some(other) => super::control::py_repr(other),
    };
    format!("{ty}({args})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_like_flowers() {
        assert_eq!(
            result_body("a", None),
            json!({"task-id": "a", "state": "PENDING"})
        );
        let ok = json!({"status": "SUCCESS", "result": 5, "traceback": null});
        assert_eq!(
            result_body("a", Some(&ok)),
            json!({"task-id": "a", "state": "SUCCESS", "result": 5})
        );
        let failed = json!({"status": "FAILURE", "result": {"exc_type": "KeyError", "exc_message": ["x"], "exc_module": "builtins"}, "traceback": "Traceback..."});
        assert_eq!(
            result_body("a", Some(&failed)),
            json!({"task-id": "a", "state": "FAILURE", "result": "KeyError('x')", "traceback": "Traceback..."})
        );
        let started = json!({"status": "STARTED", "result": {"pid": 1}});
        assert_eq!(
            result_body("a", Some(&started)),
            json!({"task-id": "a", "state": "STARTED"})
        );
    }
}
