//! `celery_ui` extension: Flower's job inside the agent. A live dashboard at `/` and Flower's
//! REST API (`/api/workers`, `/api/tasks` with `search=`, `/api/task/info/<id>`,
//! `/api/task/types`, `/api/queues/length`, `/api/task/result/<id>`), Flower's `/metrics` and
//! `/healthcheck`, and, with `read_only: false`, Flower's write API and buttons, served from the
//! `celery_correlate` connector's state.
//!
//! This module owns the settings, the HTTP server (routing, authentication, CSRF refusal of
//! cross-origin writes, the server-sent event stream `/api/stream`) and the periodic
//! remote-control round ([`inspect`]). Task and worker state is read through the connector's
//! [`View`]; [`api`] builds Flower's JSON, [`search`] runs Flower's query syntax, [`page`] the
//! HTML (with [`tasks_page`] for `/tasks` and [`worker_page`] for `/worker/<name>`), [`metrics`] renders Flower's metrics, [`control`] maps the write API onto remote-control
//! commands and task messages over the broker seam [`control::Pidbox`], and [`results`] reads the
//! Redis result backend. Nothing here keeps task history of its own: the task list is bounded by
//! the connector's `max_tasks`.
//!
//! ```yaml
//! extensions:
//!   celery_ui:
//!     endpoint: 127.0.0.1:5555       # Flower's port
//!     correlator: celery_correlate   # optional when there is one celery_correlate connector
//!     auth: { username: admin, password: ${env:UI_PASSWORD} }   # and/or bearer_token: ...
//!     redact: { args: false, kwargs: false, keys: [password, token, secret] }
//!     inspect: { enabled: true, interval: 10s, timeout: 1s }    # broker: redis://... or amqp://... (default: the celery_redis or celery_amqp receiver's)
//!     trace_url: "https://grafana.example/explore?traceId={trace_id}"
//!     stream_interval: 500ms
//!     read_only: true                # Flower's option; false (needs auth) enables the write API
//!     result_backend: redis://127.0.0.1:6379/1   # optional: /api/task/result, abort
//!     task_runtime_metric_buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
//!     purge_offline_workers: 600     # seconds; optional, as Flower's
//!     url_prefix: flower             # optional: serve everything under /flower/ (Flower's option)
//!     tls: { cert_file: /etc/celeriac/ui.pem, key_file: /etc/celeriac/ui.key }   # optional: HTTPS (Flower's --certfile/--keyfile)
//! service:
//!   extensions: [celery_ui]
//! ```

pub mod amqp_pidbox;
pub mod api;
pub mod control;
pub mod inspect;
pub mod metrics;
pub mod page;
pub mod remote;
pub mod results;
pub mod search;
pub mod tasks_page;
pub mod worker_page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context as TaskCx, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::component::{BoxRun, ComponentError, Context, Extension, Host};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::types::Secret;
use crate::config::{self, types, DecodeError, Section, Value};
use crate::connectors::celery_correlate::flower_metrics::DEFAULT_BUCKETS;
use crate::connectors::celery_correlate::now_secs;
use crate::connectors::celery_correlate::view::View;
use crate::receivers::celery_amqp::CeleryAmqpConfig;
use crate::receivers::celery_redis::CeleryRedisConfig;
use crate::redis_broker::OwnedSettings;
use crate::serve::{Protocol, ServerSettings};
use crate::telemetry::Counter;
use crate::tls::{Acceptor, ClientTlsConfig, ServerTlsConfig};
use api::Inspected;
use control::{Answer, Pidbox};
use inspect::Inspector;
use page::RedactConfig;
use remote::Remote;
use results::ResultBackend;
use std::collections::{BTreeMap, BTreeSet};

pub const REGISTRATION: Registration = Registration {
    type_name: "celery_ui",
    factory: Factory::Extension { build },
    defaults: crate::component::defaults::<UiConfig>,
};

/// Open event streams at most; more get 503 (each costs a task and a snapshot per interval).
const MAX_STREAMS: usize = 64;
/// A stream repeats the dashboard at least this often, so liveness ages even when idle.
const STREAM_REFRESH: Duration = Duration::from_secs(2);
/// Remote-control answers of a worker not heard from for this long are dropped.
const INSPECTED_TTL: f64 = 600.0;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    #[serde(with = "types::addr")]
    pub endpoint: SocketAddr,
    /// Id of the `celery_correlate` connector to read.
    pub correlator: Option<String>,
    pub auth: Option<AuthConfig>,
    pub redact: RedactConfig,
    pub inspect: InspectConfig,
    /// Link template for a task's trace; `{trace_id}` is replaced by its 32 hex digits.
    pub trace_url: Option<String>,
    /// How often the live page is updated (at most).
    #[serde(with = "types::duration")]
    pub stream_interval: Duration,
    /// Connection limits and timeouts (crate::serve).
    #[serde(flatten)]
    pub server: ServerSettings,
    /// Flower's `read_only`: no control actions (revoke, pool, consumers, publishing tasks).
    /// Default `true`; `false` needs `auth`.
    pub read_only: bool,
    /// Flower's `task_runtime_metric_buckets` (seconds) for `flower_task_runtime_seconds`.
    pub task_runtime_metric_buckets: Vec<f64>,
    /// Flower's `purge_offline_workers` (seconds): `/metrics` drops the series of workers
    /// offline for longer. Unset: kept.
    pub purge_offline_workers: Option<u64>,
    /// The app's result backend (`redis://` or `rediss://`), for `/api/task/result/<id>`,
    /// `/api/task/abort/<id>` and the `state` of published tasks. Unset: those answer 503.
    pub result_backend: Option<String>,
    /// HTTPS on the dashboard (Flower's `--certfile`/`--keyfile`), the shared server `tls:`
    /// shape ([`crate::tls`]); unset: plain HTTP.
    pub tls: ServerTlsConfig,
    /// Flower's `url_prefix`: every path (pages, assets, API, `/metrics`, `/healthcheck`) is
    /// served under `/<url_prefix>/`, for a path-routing proxy. Unset: at the root.
    pub url_prefix: Option<String>,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 5555)),
            correlator: None,
            auth: None,
            redact: RedactConfig::default(),
            inspect: InspectConfig::default(),
            trace_url: None,
            stream_interval: Duration::from_millis(500),
            server: ServerSettings::default(),
            read_only: true,
            task_runtime_metric_buckets: DEFAULT_BUCKETS.to_vec(),
            purge_offline_workers: None,
            result_backend: None,
            tls: ServerTlsConfig::default(),
            url_prefix: None,
        }
    }
}

/// Basic auth (`username` + `password`), a bearer token, or both (either is accepted).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub username: Option<String>,
    #[serde(default, deserialize_with = "types::non_empty_secret::deserialize")]
    pub password: Option<Secret>,
    #[serde(default, deserialize_with = "types::non_empty_secret::deserialize")]
    pub bearer_token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectConfig {
    /// Ask workers over the broker (`celery inspect`); off = workers from events only.
    pub enabled: bool,
    #[serde(with = "types::duration")]
    pub interval: Duration,
    /// How long a round waits for answers.
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    /// Broker URL, or a failover list; default: the `celery_redis` receiver's `endpoint`.
    #[serde(
        default,
        deserialize_with = "opt_one_or_many",
        skip_serializing_if = "Option::is_none"
    )]
    pub broker: Option<Vec<String>>,
    /// TLS for a `rediss://` broker; default: the `celery_redis` receiver's (when `broker` is
    /// not set).
    pub tls: Option<ClientTlsConfig>,
    /// kombu's `global_keyprefix`; default: the `celery_redis` receiver's.
    pub global_keyprefix: Option<String>,
    /// With a `sentinel://` broker: kombu's `master_name`; default: the `celery_redis`
    /// receiver's (when `broker` is not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// The sentinels' password; default: the `celery_redis` receiver's.
    #[serde(
        default,
        deserialize_with = "types::non_empty_secret::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub sentinel_password: Option<types::Secret>,
    /// TLS to the sentinels; default: the `celery_redis` receiver's.
    pub sentinel_tls: Option<ClientTlsConfig>,
}

impl Default for InspectConfig {
    fn default() -> Self {
        InspectConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            broker: None,
            tls: None,
            global_keyprefix: None,
            master_name: None,
            sentinel_password: None,
            sentinel_tls: None,
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Extension> {
    let mut cfg: UiConfig = config::decode(v)?;
    if let Some(a) = &cfg.auth {
        let basic = a.username.is_some() || a.password.is_some();
        if basic && (a.username.as_deref().unwrap_or("").is_empty() || a.password.is_none()) {
            return Err(DecodeError::new(
                "auth",
                "basic auth needs both `username` and `password`",
            ));
        }
        if !basic && a.bearer_token.is_none() {
            return Err(DecodeError::new(
                "auth",
                "set `username` and `password`, or `bearer_token`",
            ));
        }
    }
    if cfg.inspect.enabled && (cfg.inspect.interval.is_zero() || cfg.inspect.timeout.is_zero()) {
        return Err(DecodeError::new(
            "inspect",
            "`interval` and `timeout` must be greater than 0",
        ));
    }
    if !cfg.read_only && cfg.auth.is_none() {
        return Err(DecodeError::new(
            "read_only",
            "`read_only: false` lets anyone who reaches the port revoke tasks and stop workers: set `auth` too",
        ));
    }
    if cfg.task_runtime_metric_buckets.is_empty()
        || cfg
            .task_runtime_metric_buckets
            .iter()
            .any(|b| !b.is_finite())
    {
        return Err(DecodeError::new(
            "task_runtime_metric_buckets",
            "must be a non-empty list of finite numbers",
        ));
    }
    if cfg.stream_interval < Duration::from_millis(50) {
        return Err(DecodeError::new("stream_interval", "must be at least 50ms"));
    }
    if let Err((key, msg)) = cfg.server.check() {
        return Err(DecodeError::new(key, msg));
    }
    if let Some(b) = cfg.inspect.broker.as_ref().filter(|b| remote::is_amqp(b)) {
        remote::amqp_config(b, &cfg.inspect.tls.clone().unwrap_or_default()).map_err(|e| {
            DecodeError::new(
                format!("inspect.{}", e.path.replacen("endpoint", "broker", 1)),
                e.message,
            )
        })?;
    } else if let Some(b) = &cfg.inspect.broker {
        inspect_settings(&cfg.inspect, b).broker().map_err(|e| {
            DecodeError::new(
                format!("inspect.{}", e.path.replacen("endpoint", "broker", 1)),
                e.message,
            )
        })?;
    }
    if let Some(url) = &cfg.result_backend {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(DecodeError::new(
                "result_backend",
                "only a Redis result backend (redis:// or rediss://) is read",
            ));
        }
        result_backend_client(url).map_err(|e| DecodeError::new("result_backend", e))?;
    }
    cfg.url_prefix =
        url_prefix(cfg.url_prefix.as_deref()).map_err(|e| DecodeError::new("url_prefix", e))?;
    // Read the certificate and key now: a bad file fails `validate` and startup.
    cfg.tls.check().map_err(|(k, m)| DecodeError::new(k, m))?;
    let tls = cfg
        .tls
        .server_config(&[b"http/1.1"])
        .map(Acceptor::new)
        .map_err(|e| DecodeError::new(e.key(), e.to_string()))?;
    cfg.redact = cfg.redact.normalized();
    Ok(Box::new(CeleryUi { cfg, tls }))
}

pub struct CeleryUi {
    cfg: UiConfig,
    tls: Acceptor,
}

/// A client of the app's Redis result backend (`redis://` or `rediss://`, one node).
fn result_backend_client(url: &str) -> Result<(redis::Client, String), String> {
    let broker = OwnedSettings {
        endpoint: vec![url.to_string()],
        ..OwnedSettings::default()
    }
    .broker()
    .map_err(|e| e.message)?;
    match broker.first_client() {
        Some(r) => r.map_err(|e| e.to_string()),
        None => Err("a result backend is one Redis node".into()),
    }
}

/// Flower's `url_prefix` (`flower`, `/flower/`, `a/b`) as a path prefix: `/flower`, or `None`
/// for the root.
fn url_prefix(raw: Option<&str>) -> Result<Option<String>, String> {
    let Some(p) = raw.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || "-._~/".contains(c);
    if !p.chars().all(ok)
        || p.split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "`{p}` is not a path prefix: use letters, digits, `-._~` and `/` between segments"
        ));
    }
    Ok(Some(format!("/{p}")))
}

/// The broker to inspect: where it is (addresses or sentinels, TLS) and its key prefix.
type Broker = (OwnedSettings, String);

fn opt_one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    types::one_or_many::deserialize(d).map(Some)
}

/// The broker settings of `inspect` with its own `broker` addresses.
fn inspect_settings(i: &InspectConfig, urls: &[String]) -> OwnedSettings {
    OwnedSettings {
        endpoint: urls.to_vec(),
        tls: i.tls.clone().unwrap_or_default(),
        master_name: i.master_name.clone(),
        sentinel_password: i.sentinel_password.clone(),
        sentinel_tls: i.sentinel_tls.clone().unwrap_or_default(),
    }
}

impl CeleryUi {
    fn resolve(&self, host: &Host) -> Result<(Arc<View>, Option<Broker>), String> {
        let views = host.shared::<View>();
        let view = match &self.cfg.correlator {
            Some(want) => views
                .iter()
                .find(|(id, _)| id.to_string() == *want)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    format!("`correlator: {want}` names no celery_correlate connector in use")
                })?,
            None => match views.as_slice() {
                [(_, v)] => v.clone(),
                [] => return Err("needs a celery_correlate connector in a pipeline".into()),
                _ => return Err(
                    "there are several celery_correlate connectors: choose one with `correlator`"
                        .into(),
                ),
            },
        };
        if !self.cfg.inspect.enabled {
            return Ok((view, None));
        }
        let receivers = host.declared(Section::Receivers, "celery_redis");
        let amqp_receivers = host.declared(Section::Receivers, "celery_amqp");
        if receivers.len() + amqp_receivers.len() > 1 && self.cfg.inspect.broker.is_none() {
            let which = match (receivers.len(), amqp_receivers.len()) {
                (_, 0) => "celery_redis receivers",
                (0, _) => "celery_amqp receivers",
                _ => "broker receivers (celery_redis, celery_amqp)",
            };
            return Err(format!(
                "there are several {which}: name the broker to inspect with `inspect.broker`"
            ));
        }
        let from_receiver = receivers
            .first()
            .and_then(|d| config::decode::<CeleryRedisConfig>(&d.settings).ok());
        let from_amqp = amqp_receivers
            .first()
            .and_then(|d| config::decode::<CeleryAmqpConfig>(&d.settings).ok());
        let settings = match (&self.cfg.inspect.broker, &from_receiver, from_amqp) {
            (Some(b), _, _) => inspect_settings(&self.cfg.inspect, b),
            (None, Some(r), _) => OwnedSettings {
                endpoint: r.endpoint.clone(),
                tls: r.tls.clone(),
                master_name: self.cfg.inspect.master_name.clone().or(r.master_name.clone()),
                sentinel_password: self
                    .cfg
                    .inspect
                    .sentinel_password
                    .clone()
                    .or(r.sentinel_password.clone()),
                sentinel_tls: self
                    .cfg
                    .inspect
                    .sentinel_tls
                    .clone()
                    .unwrap_or(r.sentinel_tls.clone()),
            },
            // An AMQP broker: only its addresses and TLS settings are used.
            (None, None, Some(a)) => OwnedSettings {
                endpoint: a.endpoint,
                tls: a.tls,
                ..OwnedSettings::default()
            },
            (None, None, None) => {
                return Err("inspect needs a broker: set `inspect.broker`, declare a celery_redis or celery_amqp receiver, or set `inspect.enabled: false`".into())
            }
        };
        let prefix = self
            .cfg
            .inspect
            .global_keyprefix
            .clone()
            .or_else(|| from_receiver.map(|r| r.global_keyprefix))
            .unwrap_or_default();
        Ok((view, Some((settings, prefix))))
    }
}

impl Extension for CeleryUi {
    fn validate(&self, host: &Host) -> Result<(), String> {
        self.resolve(host).map(drop)
    }

    fn run(self: Box<Self>, ctx: Context, host: Host) -> BoxRun {
        Box::pin(async move {
            let (view, broker) = self.resolve(&host).map_err(ComponentError::Other)?;
            let addr = self.cfg.endpoint;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ComponentError::Bind { addr, source })?;
            let inspector = match broker {
                Some((settings, _)) if remote::is_amqp(&settings.endpoint) => Some(
                    Remote::amqp(&settings.endpoint, &settings.tls, self.cfg.inspect.timeout)
                        .map_err(|e| ComponentError::Other(format!("inspect broker: {e}")))?,
                ),
                Some((settings, prefix)) => {
                    let broker = settings
                        .broker()
                        .map_err(|e| ComponentError::Other(format!("inspect broker: {e}")))?;
                    Some(Remote::Redis(Box::new(Inspector::new(
                        broker,
                        &prefix,
                        self.cfg.inspect.timeout,
                    ))))
                }
                None => None,
            };
            let backend = match &self.cfg.result_backend {
                Some(url) => {
                    let (client, name) = result_backend_client(url)
                        .map_err(|e| ComponentError::Other(format!("result_backend: {e}")))?;
                    Some(ResultBackend::new(client, name))
                }
                None => None,
            };
            let mut control_total = BTreeMap::new();
            for action in control::ACTIONS {
                for result in control::RESULTS {
                    control_total.insert(
                        (action, result),
                        ctx.telemetry.counter(
                            "celeriac_ui_control_total",
                            "Control actions (revoke, pool, consumers, publishing) asked of the celery_ui extension, by result.",
                            &[("component", &*ctx.id), ("action", action), ("result", result)],
                        ),
                    );
                }
            }
            view.set_flower_buckets(self.cfg.task_runtime_metric_buckets.clone());
            view.enable();
            let label = [("component", &*ctx.id)];
            let prefix = self.cfg.url_prefix.clone().unwrap_or_default();
            let ui = Arc::new(Ui {
                index_html: page::index_html(&prefix),
                prefix,
                cfg: self.cfg,
                view,
                inspector,
                backend,
                control_total,
                inspected: RwLock::new(Inspected::new()),
                queues: RwLock::new(Vec::new()),
                round: tokio::sync::Mutex::new(()),
                status_version: AtomicU64::new(0),
                streams: AtomicUsize::new(0),
                shutdown: ctx.shutdown.clone(),
                unauthorized: ctx.telemetry.counter(
                    "celeriac_ui_unauthorized_total",
                    "Requests to the celery_ui extension refused for missing or wrong credentials.",
                    &label,
                ),
                inspect_failures: ctx.telemetry.counter(
                    "celeriac_ui_inspect_failures_total",
                    "Remote-control rounds (celery inspect over the broker) that failed.",
                    &label,
                ),
            });
            tracing::info!(component = %ctx.id, %addr, tls = self.tls.is_tls(), "Serving the Celery dashboard and Flower API.");
            if ui.inspector.is_some() {
                let ui = ui.clone();
                tokio::spawn(async move {
                    if let Some(i) = &ui.inspector {
                        if let Err(e) = i.wakeup().await {
                            tracing::warn!(error = %e, "Cannot ask workers for a heartbeat.");
                        }
                    }
                    let mut tick = tokio::time::interval(ui.cfg.inspect.interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = ui.shutdown.cancelled() => break,
                            _ = tick.tick() => {
                                let _ = ui.refresh(None).await;
                            }
                        }
                    }
                });
            }
            let svc_ui = ui.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let ui = svc_ui.clone();
                async move { Ok::<_, Infallible>(ui.handle(req).await) }
            });
            let server = ui.cfg.server.clone();
            let tls_failures = ctx.telemetry.counter(
                "celeriac_ui_tls_handshake_failures_total",
                "Connections to the celery_ui extension dropped in a failed TLS handshake.",
                &label,
            );
            let (tls, component) = (self.tls, ctx.id.to_string());
            let handshake = move |stream| {
                let (tls, failures, component) =
                    (tls.clone(), tls_failures.clone(), component.clone());
                async move {
                    match tls.accept(stream).await {
                        Ok(conn) => Some(conn),
                        Err(e) => {
                            failures.inc();
                            tracing::debug!(%component, error = %e, "TLS handshake failed.");
                            None
                        }
                    }
                }
            };
            crate::serve::serve_with(
                "celery_ui",
                listener,
                server,
                Protocol::Http1,
                ctx.shutdown.clone(),
                handshake,
                svc,
            )
            .await;
            if let Some(i) = &ui.inspector {
                let _ = tokio::time::timeout(Duration::from_secs(2), i.unbind()).await;
            }
            Ok(())
        })
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// Shared by every connection of one running extension.
struct Ui {
    cfg: UiConfig,
    /// `url_prefix` as `/flower`, or empty.
    prefix: String,
    /// The live page, its links under `prefix`.
    index_html: String,
    view: Arc<View>,
    inspector: Option<Remote>,
    backend: Option<ResultBackend>,
    control_total: BTreeMap<(&'static str, &'static str), Counter>,
    inspected: RwLock<Inspected>,
    queues: RwLock<Vec<(String, u64)>>,
    /// One remote-control round at a time.
    round: tokio::sync::Mutex<()>,
    /// Bumped when inspect answers or queue lengths change.
    status_version: AtomicU64,
    streams: AtomicUsize,
    shutdown: CancellationToken,
    unauthorized: Counter,
    inspect_failures: Counter,
}

fn full(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if ctype.starts_with("text/html") {
        // Defence in depth: even escaped output may only load this server's own script.
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        );
    }
    r
}

fn json_reply(status: StatusCode, v: &Json) -> Response<Body> {
    full(status, "application/json; charset=UTF-8", v.to_string())
}

fn json_error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json_reply(status, &json!({ "error": msg.into() }))
}

/// Bytes of a control request's body read at most.
const MAX_POST_BODY: usize = 64 * 1024;

/// CSRF: a browser names the page a request comes from (`Origin`, `Sec-Fetch-Site`); a write
/// from another origin is refused whatever credentials the browser attached (it re-sends basic
/// auth on its own). Clients that are not browsers send neither header.
fn same_origin(req: &Request<Incoming>) -> Result<(), String> {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Err(format!(
                "Cross-site request refused (Sec-Fetch-Site: {site})"
            ));
        }
    }
    let Some(origin) = h.get("origin") else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = h
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    if origin_host.is_empty() || host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
        return Err(format!("Cross-origin request refused (Origin: {origin})"));
    }
    Ok(())
}

/// `a=1&b=x%20y` → pairs, `+` as space.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn truthy(v: &str) -> bool {
    // Tornado's `type=bool` is Python's bool(str): any non-empty value.
    !v.is_empty()
}

/// Constant-time equality (basic-auth credentials), so response times do not reveal how much
/// of a secret matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
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
                            format!(
                                "<!doctype html><title>Unknown task</title><p>Unknown task {} (evicted, or never seen). <a href=\"{}/\">Back</a></p>",
                                page::escape(&id),
                                page::escape(&self.prefix)
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
                format!(
                    "<!doctype html><title>Unknown worker</title><p>{}. <a href=\"{}/\">Back</a></p>",
                    page::escape(&msg),
                    page::escape(&self.prefix)
                ),
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

    /// Who is asking, for the control log: the basic-auth user, `bearer`, or `anonymous`.
    fn who(&self, req: &Request<Incoming>) -> String {
        let h = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let (scheme, cred) = h.split_once(' ').unwrap_or((h, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(user) = base64::engine::general_purpose::STANDARD
                .decode(cred.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|up| up.split_once(':').map(|(u, _)| u.to_string()))
            {
                return user;
            }
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return "bearer".into();
        }
        "anonymous".into()
    }

    fn count(&self, action: &'static str, result: &'static str) {
        if let Some(c) = self.control_total.get(&(action, result)) {
            c.inc();
        }
    }

    /// A write request (Flower's control API). Refused across origins (a browser's form or
    /// script posting from another site carries an `Origin` that is not ours), and when
    /// `read_only`.
    async fn post(&self, req: Request<Incoming>, path: String) -> Response<Body> {
        let Some((action, target)) = control::route(&path) else {
            self.count("unknown", "refused");
            return if path.starts_with("/api/") {
                json_error(StatusCode::NOT_FOUND, format!("no such API path: {path}"))
            } else {
                json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here")
            };
        };
        let who = self.who(&req);
        let refuse = |status: StatusCode, why: &str| {
            self.count(action, "refused");
            tracing::warn!(who = %who, action, target = %target, reason = why, "Refused a control action.");
            full(status, "text/plain; charset=utf-8", why.to_string())
        };
        if let Err(why) = same_origin(&req) {
            return refuse(StatusCode::FORBIDDEN, &why);
        }
        if self.cfg.read_only {
            return refuse(StatusCode::FORBIDDEN, "Read only mode is enabled");
        }
        let mut args = query_pairs(req.uri().query().unwrap_or(""));
        let form = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = match http_body_util::Limited::new(req.into_body(), MAX_POST_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let mut json_body = None;
        if form {
            args.extend(query_pairs(&String::from_utf8_lossy(&body)));
        } else if !body.is_empty() {
            match serde_json::from_slice::<Json>(&body) {
                Ok(v) => json_body = Some(v),
                Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        let answer = if action == "task.abort" {
            match &self.backend {
                None => Err(Answer::Text(StatusCode::SERVICE_UNAVAILABLE, String::new())),
                Some(b) => match b.abort(&target, now_secs()).await {
                    Ok(()) => Ok(Answer::Json(
                        StatusCode::OK,
                        json!({ "message": format!("Aborted '{target}'") }),
                    )),
                    Err(e) => Err(Answer::Text(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
                },
            }
        } else {
            let Some(pidbox) = self.inspector.as_ref().map(|i| i as &dyn Pidbox) else {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "remote control is disabled (inspect.enabled: false)",
                );
            };
            let known = self.known();
            let r = control::Request {
                action,
                target: target.clone(),
                args,
                body: json_body,
            };
            let mut a = control::run(pidbox, self.cfg.inspect.timeout, &known, &r).await;
            // Flower adds the result backend's state to a published task's answer.
            if let (Ok(Answer::Json(_, v)), Some(b)) = (&mut a, &self.backend) {
                if let Some(id) = v.get("task-id").and_then(Json::as_str).map(str::to_string) {
                    match b.state(&id).await {
                        Ok(state) => v["state"] = json!(state),
                        Err(e) => {
                            tracing::warn!(error = %e, "Cannot read a published task's state.")
                        }
                    }
                }
            }
            a
        };
        let (result, answer) = match answer {
            Ok(a) => ("ok", a),
            Err(a) if a.status() == StatusCode::FORBIDDEN || a.status().is_server_error() => {
                ("failed", a)
            }
            Err(a) => ("refused", a),
        };
        self.count(action, result);
        tracing::info!(who = %who, action, target = %target, result, status = answer.status().as_u16(), "Control action.");
        match answer {
            Answer::Json(s, v) => json_reply(s, &v),
            Answer::Text(s, t) => full(s, "text/plain; charset=utf-8", t),
        }
    }

    /// Workers (from events and remote control) and task names (seen, or registered at a
    /// worker) the control API accepts.
    fn known(&self) -> control::Known {
        let inspected = self.inspected.read().unwrap_or_else(|e| e.into_inner());
        let mut workers: BTreeSet<String> = inspected.keys().cloned().collect();
        let mut tasks: BTreeSet<String> = inspected
            .values()
            .filter_map(|i| i.get("registered").and_then(Json::as_array))
            .flatten()
            .filter_map(|t| t.as_str())
            // `registered` may carry options: `name [rate_limit=...]`.
            .map(|t| t.split(' ').next().unwrap_or(t).to_string())
            .collect();
        drop(inspected);
        self.view.read(|v| {
            workers.extend(v.workers().keys().cloned());
            tasks.extend(v.names().map(str::to_string));
        });
        control::Known { workers, tasks }
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

    /// One remote-control round (every method Flower uses), then queue lengths.
    async fn refresh(&self, workername: Option<&str>) -> Result<(), String> {
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
    async fn refresh_queues(&self) -> Result<(), String> {
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

/// A response body fed by the stream task; ends when the task drops its sender.
struct SseBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        assert_eq!(
            query_pairs("state=SUCCESS&received_start=2026-11-25+10%3A00&x"),
            vec![
                ("state".to_string(), "SUCCESS".to_string()),
                ("received_start".to_string(), "2026-11-25 10:00".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn settings() {
        let v: Value = serde_yaml_ng::from_str("auth: { username: u }").unwrap();
        assert!(build(&v).is_err());
        let v: Value =
            serde_yaml_ng::from_str("auth: { bearer_token: t }\nredact: { keys: [Password] }")
                .unwrap();
        assert!(build(&v).is_ok());
        let v: Value = serde_yaml_ng::from_str("endpoint: nope").unwrap();
        assert_eq!(build(&v).err().unwrap().path, "endpoint");
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"a", b"ab"));
        let v: Value = serde_yaml_ng::from_str(
            "inspect: { broker: [redis://127.0.0.1:1/0, redis://127.0.0.1:2/0] }",
        )
        .unwrap();
        assert!(build(&v).is_ok());
        let v: Value =
            serde_yaml_ng::from_str("inspect: { broker: [redis://a:1/0, 'http://x'] }").unwrap();
        assert_eq!(build(&v).err().unwrap().path, "inspect.broker[1]");
        let v: Value =
            serde_yaml_ng::from_str("inspect: { broker: redis://a:1/0, tls: { ca_file: /x.pem } }")
                .unwrap();
        assert!(build(&v).err().unwrap().path.starts_with("inspect.tls"));
        let v: Value = serde_yaml_ng::from_str(
            "tls: { cert_file: /nonexistent/ui.pem, key_file: /nonexistent/ui.key }",
        )
        .unwrap();
        let e = build(&v).err().unwrap();
        assert_eq!(e.path, "tls.cert_file");
        assert!(e.message.contains("/nonexistent/ui.pem"), "{}", e.message);
        assert_eq!(url_prefix(Some("/flower/")), Ok(Some("/flower".into())));
        assert_eq!(
            url_prefix(Some("ops/flower")),
            Ok(Some("/ops/flower".into()))
        );
        assert_eq!(url_prefix(Some("/")), Ok(None));
        assert!(url_prefix(Some("a b")).is_err() && url_prefix(Some("a/../b")).is_err());
        assert!(url_prefix(Some("a\"<")).is_err() && url_prefix(Some("a//b")).is_err());
        let v: Value = serde_yaml_ng::from_str("tls: { cert_file: /x.pem }").unwrap();
        assert_eq!(build(&v).err().unwrap().path, "tls.key_file");
    }
}
