//! `service:` settings other than pipelines, in the OpenTelemetry Collector's shape
//! (service/telemetry) with celeriac's own keys kept:
//!
//! ```yaml
//! service:
//!   telemetry:
//!     metrics:
//!       level: basic                 # none disables the endpoint
//!       address: 0.0.0.0:8888        # the collector's older key, or:
//!       readers:
//!         - pull: { exporter: { prometheus: { host: 0.0.0.0, port: 8888 } } }
//!     logs: { level: info, encoding: console }   # or json
//!     resource: { service.name: celeriac }        # labels on the agent's own metrics
//!     endpoint: 127.0.0.1:8888       # celeriac's key (also /healthz, POST /-/reload)
//!     log_level: info                # celeriac's key (a `tracing` filter)
//!     bearer_token: ${env:TOKEN}
//!   extensions: [...]
//!   shutdown_timeout: 10s
//!   channel_capacity: 64
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{types, Value};

/// `service:` settings other than pipelines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    pub telemetry: TelemetrySettings,
    /// How long shutdown may take before remaining components are aborted.
    #[serde(with = "types::duration")]
    pub shutdown_timeout: Duration,
    /// Capacity, in batches, of every channel between stages.
    pub channel_capacity: usize,
    /// Ids of the `extensions:` to run (the collector's `service.extensions`).
    pub extensions: Vec<String>,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            telemetry: TelemetrySettings::default(),
            shutdown_timeout: Duration::from_secs(10),
            channel_capacity: 64,
            extensions: Vec::new(),
        }
    }
}

/// How the agent writes its own logs (`service.telemetry.logs.encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogEncoding {
    #[default]
    Console,
    Json,
}

/// The agent's own `/metrics` and `/healthz` endpoint and its logs, resolved from either
/// shape (see the module docs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawTelemetry")]
pub struct TelemetrySettings {
    /// Address of `/metrics` and `/healthz`; `None` disables the endpoint.
    pub endpoint: Option<SocketAddr>,
    /// `tracing` filter for the agent's own logs (overridden by `RUST_LOG`).
    pub log_level: String,
    pub log_encoding: LogEncoding,
    /// Require `Authorization: Bearer <token>` on `/metrics` (`/healthz` stays open for probes).
    pub bearer_token: Option<types::Secret>,
    /// `service.telemetry.resource`: constant labels on every metric of the agent's own.
    pub resource: BTreeMap<String, String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 8888))),
            log_level: "info".to_string(),
            log_encoding: LogEncoding::Console,
            bearer_token: None,
            resource: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawTelemetry {
    /// `Some(Null)` (disable) differs from absent (default).
    #[serde(deserialize_with = "present")]
    endpoint: Option<Value>,
    log_level: Option<String>,
    #[serde(deserialize_with = "types::non_empty_secret::deserialize")]
    bearer_token: Option<types::Secret>,
    metrics: Option<RawMetrics>,
    logs: Option<RawLogs>,
    resource: BTreeMap<String, Option<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    level: Option<MetricsLevel>,
    address: Option<String>,
    readers: Vec<RawReader>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum MetricsLevel {
    None,
    Basic,
    Normal,
    Detailed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReader {
    pull: Option<RawPull>,
    /// Push readers: the collector pushes its own metrics over OTLP; celeriac does not.
    periodic: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPull {
    exporter: RawPullExporter,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPullExporter {
    prometheus: RawProm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProm {
    #[serde(default = "localhost")]
    host: String,
    port: u16,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn localhost() -> String {
    "localhost".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLogs {
    level: Option<String>,
    encoding: Option<LogEncoding>,
    /// The collector can push its own logs over OTLP; celeriac does not.
    processors: Option<Value>,
}

impl TryFrom<RawTelemetry> for TelemetrySettings {
    type Error = String;

    fn try_from(raw: RawTelemetry) -> Result<Self, String> {
        let mut t = TelemetrySettings::default();
        let metrics = raw.metrics.unwrap_or_default();
        let mut pulls = Vec::new();
        for (i, r) in metrics.readers.iter().enumerate() {
            if r.periodic.is_some() {
                return Err(format!("metrics.readers[{i}].periodic: celeriac does not push its own metrics; use a `pull` reader (prometheus) and scrape it"));
            }
            match &r.pull {
                Some(p) => pulls.push(&p.exporter.prometheus),
                None => return Err(format!("metrics.readers[{i}]: expected `pull`")),
            }
        }
        let pull_addr = match pulls.as_slice() {
            [] => None,
            [p] => {
                let host = if p.host.contains(':') {
                    format!("[{}]", p.host)
                } else {
                    p.host.clone()
                };
                Some(types::parse_addr(&format!("{host}:{}", p.port))?)
            }
            _ => return Err("metrics.readers: celeriac serves one pull reader".into()),
        };
        let given = [
            raw.endpoint.is_some(),
            metrics.address.is_some(),
            pull_addr.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err("give one of endpoint, metrics.address and metrics.readers".into());
        }
        if let Some(e) = raw.endpoint {
            t.endpoint = match e {
                Value::Null => None,
                Value::String(s) => Some(types::parse_addr(&s)?),
                _ => return Err("endpoint: expected host:port or null".into()),
            };
        }
        if let Some(a) = metrics.address {
            t.endpoint = Some(types::parse_addr(&a)?);
        }
        if let Some(a) = pull_addr {
            t.endpoint = Some(a);
        }
        if metrics.level == Some(MetricsLevel::None) {
            t.endpoint = None;
        }
        let logs = raw.logs.unwrap_or_default();
        if logs.processors.is_some() {
            return Err(
                "logs.processors: celeriac does not push its own logs; they go to stderr".into(),
            );
        }
        match (raw.log_level, logs.level) {
            (Some(_), Some(_)) => return Err("give log_level or logs.level, not both".into()),
            (Some(l), None) => t.log_level = l,
            (None, Some(l)) => {
                t.log_level = match l.to_ascii_lowercase().as_str() {
                    "debug" => "debug",
                    "info" => "info",
                    "warn" => "warn",
                    "error" | "dpanic" | "panic" | "fatal" => "error",
                    other => {
                        return Err(format!(
                            "logs.level: `{other}` is not one of debug, info, warn, error"
                        ))
                    }
                }
                .into()
            }
            (None, None) => {}
        }
        t.log_encoding = logs.encoding.unwrap_or_default();
        t.bearer_token = raw.bearer_token;
        t.resource = raw
            .resource
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(yaml: &str) -> Result<TelemetrySettings, String> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        crate::config::decode::<TelemetrySettings>(&v).map_err(|e| e.to_string())
    }

    /// service/telemetry (otelconftelemetry): metrics.address, pull readers, level none.
    #[test]
    fn collector_shape() {
        let s = t("metrics: {level: basic, address: 0.0.0.0:8899}").unwrap();
        assert_eq!(s.endpoint, Some(SocketAddr::from(([0, 0, 0, 0], 8899))));
        let s = t("metrics:\n  readers:\n    - pull: {exporter: {prometheus: {host: 127.0.0.1, port: 9999}}}\n").unwrap();
        assert_eq!(s.endpoint, Some(SocketAddr::from(([127, 0, 0, 1], 9999))));
        let s = t("metrics: {level: none}");
        assert_eq!(s.clone().map(|s| s.endpoint), Ok(None), "{s:?}");
        let s = t("logs: {level: warn, encoding: json}\nresource: {service.name: a}").unwrap();
        assert_eq!(s.log_level, "warn");
        assert_eq!(s.log_encoding, LogEncoding::Json);
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some("a")
        );
        // celeriac's own keys keep working.
        let s = t("endpoint: 127.0.0.1:9000\nlog_level: debug").unwrap();
        assert_eq!(s.endpoint, Some(SocketAddr::from(([127, 0, 0, 1], 9000))));
        assert_eq!(t("endpoint: ~").unwrap().endpoint, None);
    }

    #[test]
    fn refused_shapes() {
        let e = t("metrics:\n  readers:\n    - periodic: {exporter: {otlp: {}}}\n").unwrap_err();
        assert!(e.contains("does not push its own metrics"), "{e}");
        assert!(t("logs: {processors: []}").is_err());
        assert!(t("metrics: {level: loud}").is_err());
        assert!(t("endpoint: 127.0.0.1:1\nmetrics: {address: 127.0.0.1:2}").is_err());
        assert!(t("metrics: {nope: 1}").unwrap_err().contains("nope"));
    }
}
