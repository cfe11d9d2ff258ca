//! `celery_ui`'s settings: the YAML shape (`UiConfig` and its sections) with Flower's option
//! names where Flower has them, and the helpers `build` uses to check them (the result
//! backend's client, `url_prefix`, the broker settings of `inspect`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::page::RedactConfig;
use crate::config::types::{self, Secret};
use crate::connectors::celery_correlate::view::DEFAULT_BUCKETS;
use crate::redis_broker::OwnedSettings;
use crate::serve::ServerSettings;
use crate::tls::{ClientTlsConfig, ServerTlsConfig};

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
    pub sentinel_password: Option<Secret>,
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

/// A client of the app's Redis result backend (`redis://` or `rediss://`, one node).
pub(super) fn result_backend_client(url: &str) -> Result<(redis::Client, String), String> {
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
pub(super) fn url_prefix(raw: Option<&str>) -> Result<Option<String>, String> {
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
pub(super) type Broker = (OwnedSettings, String);

fn opt_one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    types::one_or_many::deserialize(d).map(Some)
}

/// The broker settings of `inspect` with its own `broker` addresses.
pub(super) fn inspect_settings(i: &InspectConfig, urls: &[String]) -> OwnedSettings {
    OwnedSettings {
        endpoint: urls.to_vec(),
        tls: i.tls.clone().unwrap_or_default(),
        master_name: i.master_name.clone(),
        sentinel_password: i.sentinel_password.clone(),
        sentinel_tls: i.sentinel_tls.clone().unwrap_or_default(),
    }
}
