//! `celery_ui` extension: Flower's job inside the agent. A live dashboard at `/` and Flower's
//! REST API (`/api/workers`, `/api/tasks` with `search=`, `/api/task/info/<id>`,
//! `/api/task/types`, `/api/queues/length`, `/api/task/result/<id>`), Flower's `/metrics` and
//! `/healthcheck`, and, with `read_only: false`, Flower's write API and buttons, served from the
//! `celery_correlate` connector's state.
//!
//! This module owns the component (its factory, checks and start); [`settings`] holds its
//! YAML shape, [`server`] the running dashboard (routing, authentication, the server-sent event
//! stream `/api/stream`), [`writes`] Flower's write API (CSRF refusal of cross-origin writes,
//! `read_only`), [`rounds`] the periodic remote-control round over [`inspect`], and [`http`]
//! the response plumbing. Task and worker state is read through the connector's
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
mod http;
pub mod inspect;
pub mod metrics;
pub mod page;
pub mod remote;
pub mod results;
mod rounds;
pub mod search;
mod server;
pub mod settings;
pub mod tasks_page;
pub mod worker_page;
mod writes;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use tokio::net::TcpListener;

use crate::celery::broker::BrokerSettings;
use crate::component::{BoxRun, ComponentError, Context, Extension, Host};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, DecodeError, Value};
use crate::connectors::celery_correlate::view::View;
use crate::redis_broker::OwnedSettings;
use crate::serve::Protocol;
use crate::tls::Acceptor;
use api::Inspected;
use inspect::Inspector;
use remote::Remote;
use results::ResultBackend;
use server::Ui;
use settings::{inspect_settings, result_backend_client, url_prefix, Broker, UiConfig};

pub const REGISTRATION: Registration = Registration {
    type_name: "celery_ui",
    factory: Factory::Extension { build },
    defaults: crate::component::defaults::<UiConfig>,
};

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
        // The brokers the event receivers read (their shared state), Redis first.
        let brokers = host.shared::<BrokerSettings>();
        let redis: Vec<&BrokerSettings> = brokers
            .iter()
            .map(|(_, b)| &**b)
            .filter(|b| matches!(b, BrokerSettings::Redis { .. }))
            .collect();
        let amqp: Vec<&BrokerSettings> = brokers
            .iter()
            .map(|(_, b)| &**b)
            .filter(|b| matches!(b, BrokerSettings::Amqp { .. }))
            .collect();
        if redis.len() + amqp.len() > 1 && self.cfg.inspect.broker.is_none() {
            let which = match (redis.len(), amqp.len()) {
                (_, 0) => "celery_redis receivers",
                (0, _) => "celery_amqp receivers",
                _ => "broker receivers (celery_redis, celery_amqp)",
            };
            return Err(format!(
                "there are several {which}: name the broker to inspect with `inspect.broker`"
            ));
        }
        let inspect = &self.cfg.inspect;
        let from_receiver = redis.first().or(amqp.first()).copied();
        let settings = match (&inspect.broker, from_receiver) {
            (Some(b), _) => inspect_settings(inspect, b),
            (None, Some(BrokerSettings::Redis { settings: r, .. })) => OwnedSettings {
                endpoint: r.endpoint.clone(),
                tls: r.tls.clone(),
                master_name: inspect.master_name.clone().or(r.master_name.clone()),
                sentinel_password: inspect
                    .sentinel_password
                    .clone()
                    .or(r.sentinel_password.clone()),
                sentinel_tls: inspect
                    .sentinel_tls
                    .clone()
                    .unwrap_or(r.sentinel_tls.clone()),
            },
            // An AMQP broker: only its addresses and TLS settings are used.
            (None, Some(BrokerSettings::Amqp { endpoint, tls })) => OwnedSettings {
                endpoint: endpoint.clone(),
                tls: tls.clone(),
                ..OwnedSettings::default()
            },
            (None, None) => {
                return Err("inspect needs a broker: set `inspect.broker`, declare a celery_redis or celery_amqp receiver, or set `inspect.enabled: false`".into())
            }
        };
        let prefix = inspect
            .global_keyprefix
            .clone()
            .or_else(|| match redis.first() {
                Some(BrokerSettings::Redis {
                    global_keyprefix, ..
                }) => Some(global_keyprefix.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Ok((view, Some((settings, prefix))))
    }
}

impl Extension for CeleryUi {
    /// Ready once its endpoint is bound and it serves.
    fn reports_ready(&self) -> bool {
        true
    }

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
            ctx.ready.set();
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

#[cfg(test)]
mod tests {
    use super::http::same;
    use super::*;

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
