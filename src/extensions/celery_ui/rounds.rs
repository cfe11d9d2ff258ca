//! The periodic remote-control round of the running dashboard: every inspect method Flower uses,
//! the answers kept per worker (for [`super::server::INSPECTED_TTL`]), then the queue lengths.

use std::sync::atomic::Ordering;

use serde_json::{json, Value as Json};

use super::inspect;
use super::server::{Ui, INSPECTED_TTL};
use crate::time::now_secs;

impl Ui {
    /// One remote-control round (every method Flower uses), then queue lengths.
    pub(super) async fn refresh(&self, workername: Option<&str>) -> Result<(), String> {
        let Some(inspector) = &self.inspector else {
            return Err("remote control is disabled (inspect.enabled: false)".into());
        };
        // A round already running answers this request too: wait for it instead of piling up.
        let _one = match self.round.try_lock() {
            Ok(g) => g,
            Err(_) => {
                let _done = self.round.lock().await;
                return Ok(());
            }
        };
        let now = now_secs();
        let expect = self
            .view
            .read(|v| v.workers().values().filter(|w| w.alive(now)).count());
        let answers = inspector
            .inspect(&inspect::METHODS, workername, Some(expect))
            .await
            .map_err(|e| {
                self.inspect_failures.inc();
                tracing::warn!(error = %e, "Remote-control round failed.");
                e.to_string()
            })?;
        {
            let mut ins = self.inspected.write().unwrap_or_else(|e| e.into_inner());
            let ts = now_secs();
            for (method, by_worker) in answers {
                for (worker, mut answer) in by_worker {
                    if method == "stats" {
                        // As Flower does (its issue #1512): broker alternates can hold credentials.
                        if let Some(b) = answer.get_mut("broker").and_then(Json::as_object_mut) {
                            b.remove("alternates");
                        }
                    }
                    let entry = ins.entry(worker).or_default();
                    entry.insert(method.clone(), answer);
                    entry.insert("timestamp".into(), json!(ts));
                }
            }
            ins.retain(|_, info| {
                info.get("timestamp")
                    .and_then(Json::as_f64)
                    .is_some_and(|t| t > ts - INSPECTED_TTL)
            });
        }
        self.status_version.fetch_add(1, Ordering::Release);
        drop(_one);
        self.refresh_queues().await
    }

    /// Queue lengths of the queues workers consume (from `active_queues`), else `celery` and the
    /// queues seen in `task-sent` events.
    pub(super) async fn refresh_queues(&self) -> Result<(), String> {
        let Some(inspector) = &self.inspector else {
            return Ok(());
        };
        let mut names: Vec<String> = {
            let ins = self.inspected.read().unwrap_or_else(|e| e.into_inner());
            let mut n: Vec<String> = ins
                .values()
                .filter_map(|i| i.get("active_queues").and_then(Json::as_array))
                .flatten()
                .filter_map(|q| q.get("name").and_then(Json::as_str).map(str::to_string))
                .collect();
            n.sort();
            n.dedup();
            n
        };
        if names.is_empty() {
            names = self.view.read(|v| v.queues_seen()).into_iter().collect();
            if !names.iter().any(|n| n == "celery") {
                names.insert(0, "celery".into());
            }
        }
        let lengths = inspector.queue_lengths(&names).await.map_err(|e| {
            tracing::warn!(error = %e, "Cannot read queue lengths.");
            e.to_string()
        })?;
        *self.queues.write().unwrap_or_else(|e| e.into_inner()) = lengths;
        self.status_version.fetch_add(1, Ordering::Release);
        Ok(())
    }
}
