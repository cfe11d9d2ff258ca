//! The running dashboard: the state every connection shares ([`Ui`]), authentication, routing
//! under `url_prefix`, the read-side answers (pages, Flower's API, `/metrics`) and the
//! server-sent event stream. Writes are in [`super::writes`], remote-control rounds in
//! [`super::rounds`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;

use super::api::{self, Inspected};
use super::http::{
    full, json_error, json_reply, percent_decode, query_pairs, same, truthy, Body, SseBody,
};
use super::remote::Remote;
use super::results::{self, ResultBackend};
use super::settings::UiConfig;
use super::{metrics, page, tasks_page, worker_page};
use crate::connectors::celery_correlate::view::View;
use crate::telemetry::Counter;
use crate::time::now_secs;

/// Open event streams at most; more get 503 (each costs a task and a snapshot per interval).
pub(super) const MAX_STREAMS: usize = 64;
/// A stream repeats the dashboard at least this often, so liveness ages even when idle.
pub(super) const STREAM_REFRESH: Duration = Duration::from_secs(2);
/// Remote-control answers of a worker not heard from for this long are dropped.
pub(super) const INSPECTED_TTL: f64 = 600.0;

/// Shared by every connection of one running extension.
pub(super) struct Ui {
    pub(super) cfg: UiConfig,
    /// `url_prefix` as `/flower`, or empty.
    pub(super) prefix: String,
    /// The live page, its links under `prefix`.
    pub(super) index_html: String,
    pub(super) view: Arc<View>,
    pub(super) inspector: Option<Remote>,
    pub(super) backend: Option<ResultBackend>,
    pub(super) control_total: BTreeMap<(&'static str, &'static str), Counter>,
    pub(super) inspected: RwLock<Inspected>,
    pub(super) queues: RwLock<Vec<(String, u64)>>,
    /// One remote-control round at a time.
    pub(super) round: tokio::sync::Mutex<()>,
    /// Bumped when inspect answers or queue lengths change.
    pub(super) status_version: AtomicU64,
    pub(super) streams: AtomicUsize,
    pub(super) shutdown: CancellationToken,
    pub(super) unauthorized: Counter,
    pub(super) inspect_failures: Counter,
}

impl Ui {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(auth) = &self.cfg.auth else {
            return true;
        };
        let header = req.headers().get(AUTHORIZATION).map(|h| h.as_bytes());
        if let Some(token) = &auth.bearer_token {
            if crate::telemetry::bearer_matches(header, token.expose()) {
                return true;
            }
        }
        let Some(h) = header.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let (scheme, cred) = h.split_once(' ').unwrap_or((h, ""));
        let cred = cred.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
                let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(cred) else {
                    return false;
                };
                return same(&raw, format!("{u}:{}", p.expose()).as_bytes());
            }
        }
        false
    }

    /// The path below `url_prefix`: `None` when the request is not under it. The prefix itself
    /// without its slash is `Err` (redirected to the page).
    fn local_path<'a>(&self, path: &'a str) -> Option<Result<&'a str, ()>> {
        if self.prefix.is_empty() {
            return Some(Ok(path));
        }
        match path.strip_prefix(self.prefix.as_str()) {
            Some("") => Some(Err(())),
            Some(rest) if rest.starts_with('/') => Some(Ok(rest)),
            _ => None,
        }
    }

    pub(super) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let full_path = req.uri().path().to_string();
        let path = match self.local_path(&full_path) {
            Some(Ok(p)) => p.to_string(),
            Some(Err(())) => {
                let mut r = full(
                    StatusCode::MOVED_PERMANENTLY,
                    "text/plain; charset=utf-8",
                    "",
                );
                if let Ok(to) = HeaderValue::from_str(&format!("{}/", self.prefix)) {
                    r.headers_mut().insert(hyper::header::LOCATION, to);
                }
                return r;
            }
            // Outside the prefix nothing is served (Flower's rewritten routes), not even /healthcheck.
            None => {
                return full(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "not found\n",
                )
            }
        };
        if path == "/healthcheck" && req.method() == Method::GET {
            // Flower's health check, outside auth like `/healthz`.
            return full(StatusCode::OK, "text/plain; charset=utf-8", "OK");
        }
        if !self.authorized(&req) {
            self.unauthorized.inc();
            let mut r = json_error(StatusCode::UNAUTHORIZED, "unauthorized");
            if self.cfg.auth.as_ref().is_some_and(|a| a.username.is_some()) {
                r.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"celeriac\""),
                );
            }
            return r;
        }
        if req.method() == Method::POST {
            return self.post(req, path).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and POST are served",
            );
        }
        let query = query_pairs(req.uri().query().unwrap_or(""));
        let arg = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
        let now = now_secs();
        match path.as_str() {
            "/" | "/index.html" => full(
                StatusCode::OK,
                "text/html; charset=utf-8",
                self.index_html.clone(),
            ),
            "/static/app.js" => full(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                page::APP_JS,
            ),
            "/static/style.css" => full(StatusCode::OK, "text/css; charset=utf-8", page::STYLE_CSS),
            "/static/control.js" => full(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                page::CONTROL_JS,
            ),
            "/tasks" => match self
                .view
                .read(|v| tasks_page::render(v, &query, &self.cfg.redact, &self.prefix))
            {
                Ok(html) => full(StatusCode::OK, "text/html; charset=utf-8", html),
                Err(html) => full(StatusCode::BAD_REQUEST, "text/html; charset=utf-8", html),
            },
            "/api/stream" => self.stream(),
            "/metrics" => full(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics_text(now),
            ),
            "/api/dashboard" => json_reply(StatusCode::OK, &self.dashboard(now)),
            "/api/workers" => {
                let workername = arg("workername").filter(|w| !w.is_empty());
                if arg("refresh").is_some_and(truthy) {
                    if let Err(e) = self.refresh(workername).await {
                        return json_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("Failed to update workers: {e}"),
                        );
                    }
                }
                if arg("status").is_some_and(truthy) {
                    return json_reply(
                        StatusCode::OK,
                        &self.view.read(|v| api::workers_status(v, now)),
                    );
                }
                let inspected = self.inspected.read().unwrap_or_else(|e| e.into_inner());
                let body = self
                    .view
                    .read(|v| api::workers_body(v, &inspected, workername));
                drop(inspected);
                if let Some(w) = workername {
                    if body.as_object().is_some_and(|m| m.is_empty()) {
                        return json_error(StatusCode::NOT_FOUND, format!("Unknown worker '{w}'"));
                    }
                }
                json_reply(StatusCode::OK, &body)
            }
            "/api/tasks" => match api::TaskQuery::parse(&query) {
                Ok(q) => full(
                    StatusCode::OK,
                    "application/json; charset=UTF-8",
                    self.view.read(|v| api::tasks_body(v, &q, &self.cfg.redact)),
                ),
                Err(e) => json_error(StatusCode::BAD_REQUEST, e),
            },
            "/api/task/types" => json_reply(StatusCode::OK, &self.view.read(api::task_types_body)),
            "/api/queues/length" => {
                if self.inspector.is_some()
                    && self.queues.read().map(|q| q.is_empty()).unwrap_or(true)
                {
                    // Nothing measured yet (first round pending): measure now.
                    let _ = self.refresh_queues().await;
                }
                let q = self
                    .queues
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                json_reply(StatusCode::OK, &api::queues_body(&q))
            }
            p => {
                if let Some(id) = p.strip_prefix("/api/task/info/") {
                    let id = percent_decode(id);
                    return match self.view.read(|v| {
                        v.task(&id)
                            .map(|t| Json::Object(api::task_json(t, &self.cfg.redact, true)))
                    }) {
                        Some(t) => json_reply(StatusCode::OK, &t),
                        None => json_error(StatusCode::NOT_FOUND, format!("Unknown task '{id}'")),
                    };
                }
                if let Some(id) = p.strip_prefix("/api/task/result/") {
                    let id = percent_decode(id);
                    let Some(b) = &self.backend else {
                        return full(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain; charset=utf-8",
                            "",
                        );
                    };
                    return match b.meta(&id).await {
                        Ok(meta) => {
                            json_reply(StatusCode::OK, &results::result_body(&id, meta.as_ref()))
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot read a task result.");
                            json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                        }
                    };
                }
                if let Some(name) = p.strip_prefix("/worker/") {
                    return self.worker_page(&percent_decode(name)).await;
                }
                if let Some(id) = p.strip_prefix("/task/") {
                    let id = percent_decode(id);
                    let html = self.view.read(|v| {
                        v.task(&id).map(|t| {
                            page::task_page(
                                t,
                                &self.cfg.redact,
                                self.cfg.trace_url.as_deref(),
                                self.cfg.read_only,
                                &self.prefix,
                            )
                        })
                    });
                    return match html {
                        Some(h) => full(StatusCode::OK, "text/html; charset=utf-8", h),
                        None => full(
                            StatusCode::NOT_FOUND,
                            "text/html; charset=utf-8",
                            page::not_found_page(
                                "Unknown task",
                                &format!("Unknown task {id} (evicted, or never seen)"),
                                &self.prefix,
                            ),
                        ),
                    };
                }
                if p.starts_with("/api/") {
                    json_error(StatusCode::NOT_FOUND, format!("no such API path: {p}"))
                } else {
                    full(
                        StatusCode::NOT_FOUND,
                        "text/plain; charset=utf-8",
                        "not found\n",
                    )
                }
            }
        }
    }

    /// `/worker/<name>`: asks that worker first (as Flower's page does), then shows its
    /// remote-control answers; Flower's 404s for a worker unknown or without `stats`.
    async fn worker_page(&self, name: &str) -> Response<Body> {
        if self.inspector.is_some() {
            if let Err(e) = self.refresh(Some(name)).await {
                tracing::debug!(worker = name, error = %e, "Cannot ask the worker for its page.");
            }
        }
        let info = self
            .inspected
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let known = info.is_some() || self.view.read(|v| v.workers().contains_key(name));
        let missing = |msg: String| {
            full(
                StatusCode::NOT_FOUND,
                "text/html; charset=utf-8",
                page::not_found_page("Unknown worker", &msg, &self.prefix),
            )
        };
        match info {
            Some(info) if info.contains_key("stats") => full(
                StatusCode::OK,
                "text/html; charset=utf-8",
                worker_page::render(name, &info, self.cfg.read_only, &self.prefix),
            ),
            _ if known => missing(format!("Unable to get stats for '{name}' worker")),
            _ => missing(format!("Unknown worker '{name}'")),
        }
    }

    /// `/metrics`: Flower's metrics (after Flower's `purge_offline_workers`), then ours.
    fn metrics_text(&self, now: f64) -> String {
        if let Some(t) = self.cfg.purge_offline_workers {
            let inspected: Vec<String> = self
                .inspected
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect();
            let n = self
                .view
                .purge_offline_flower_metrics(t as f64, now, &inspected);
            if n > 0 {
                tracing::debug!(workers = n, "Purged the Flower metrics of offline workers.");
            }
        }
        let mut out = String::with_capacity(16 * 1024);
        self.view
            .read(|v| metrics::render_flower(v.flower_metrics(), &mut out));
        out
    }

    fn dashboard(&self, now: f64) -> Json {
        let inspected = self.inspected.read().unwrap_or_else(|e| e.into_inner());
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        let mut d = self
            .view
            .read(|v| api::dashboard(v, &inspected, &queues, &self.cfg.redact, now));
        d["read_only"] = json!(self.cfg.read_only);
        d
    }

    /// `/api/stream`: the dashboard as server-sent events, at most every `stream_interval`,
    /// only when something changed (or every [`STREAM_REFRESH`]). A slow client skips updates
    /// instead of queueing them.
    fn stream(self: Arc<Self>) -> Response<Body> {
        if self.streams.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
            self.streams.fetch_sub(1, Ordering::AcqRel);
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "too many open streams");
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let ui = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ui.cfg.stream_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last: Option<(u64, u64)> = None;
            let mut last_sent = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = ui.shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    _ = tick.tick() => {}
                }
                let version = (ui.view.version(), ui.status_version.load(Ordering::Acquire));
                if last == Some(version) && last_sent.elapsed() < STREAM_REFRESH {
                    continue;
                }
                let msg = format!("event: dashboard\ndata: {}\n\n", ui.dashboard(now_secs()));
                match tx.try_send(Bytes::from(msg)) {
                    Ok(()) => {
                        last = Some(version);
                        last_sent = tokio::time::Instant::now();
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            ui.streams.fetch_sub(1, Ordering::AcqRel);
        });
        let mut r = Response::new(BoxBody::new(SseBody(rx)));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}
