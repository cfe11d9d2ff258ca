//! `health_check` extension: the collector's liveness/readiness endpoint (contrib
//! `extension/healthcheckextension`), for Kubernetes probes and load balancers that were pointed at
//! a collector's `:13133`.
//!
//! This module owns the extension's settings and its answer. The answer follows the collector's
//! `internal/healthcheck/handler.go`: `200` with
//! `{"status":"Server available","upSince":"<RFC 3339>","uptime":"<Go duration>"}` while every
//! component is ready (those that listen: bound), `503` with
//! `{"status":"Server not available","upSince":"0001-01-01T00:00:00Z","uptime":""}` before that,
//! while a reloaded component restarts, while shutting down, and once a component has failed. Up/down comes
//! from the runtime's [`StatusBoard`] (through the [`Host`]). With `response_body`, its static
//! `healthy`/`unhealthy` text replaces the JSON, as in the collector.
//!
//! `check_collector_pipeline` (deprecated in the collector, whose README advises against it) is
//! accepted: when `enabled`, the answer is also unhealthy once the exporters failed (items
//! dropped, retries) at least `exporter_failure_threshold` times within the last `interval`, and
//! then, like the collector, the status is `200`/`500` with an empty body.
//!
//! ```yaml
//! extensions:
//!   health_check:
//!     endpoint: localhost:13133   # the collector's default
//!     path: /                     # must start with /
//!     response_body: { healthy: "I'm OK", unhealthy: "I'm not" }   # optional
//!     check_collector_pipeline: { enabled: false, interval: 5m, exporter_failure_threshold: 5 }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::component::{
    BoxRun, BuildResult, ComponentError, Context, Extension, Factory, Host, Registration,
    StatusBoard,
};
use crate::config::{self, types, DecodeError, Value};
use crate::telemetry::Reply;
use crate::telemetry::Telemetry;

pub const REGISTRATION: Registration = Registration {
    type_name: "health_check",
    factory: Factory::Extension { build },
    defaults: crate::component::defaults::<HealthCheckConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    #[serde(with = "types::addr")]
    pub endpoint: SocketAddr,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<ResponseBody>,
    pub check_collector_pipeline: PipelineCheck,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 13133)),
            path: "/".into(),
            response_body: None,
            check_collector_pipeline: PipelineCheck::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseBody {
    pub healthy: String,
    pub unhealthy: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineCheck {
    pub enabled: bool,
    #[serde(with = "types::duration")]
    pub interval: Duration,
    pub exporter_failure_threshold: i64,
}

impl Default for PipelineCheck {
    /// The collector's defaults (`factory.go`): 5m, 5.
    fn default() -> Self {
        PipelineCheck {
            enabled: false,
            interval: Duration::from_secs(300),
            exporter_failure_threshold: 5,
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Extension> {
    let cfg: HealthCheckConfig = config::decode(v)?;
    // The collector's Config.Validate.
    if !cfg.path.starts_with('/') {
        return Err(DecodeError::new("path", "must start with /"));
    }
    if cfg.check_collector_pipeline.exporter_failure_threshold <= 0 {
        return Err(DecodeError::new(
            "check_collector_pipeline.exporter_failure_threshold",
            "expects a positive number",
        ));
    }
    Ok(Box::new(HealthCheck { cfg }))
}

pub struct HealthCheck {
    cfg: HealthCheckConfig,
}

/// The collector's JSON body for `status` (`healthCheckResponse`).
pub fn json_body(up_since: Option<SystemTime>, now: SystemTime) -> (StatusCode, String) {
    #[derive(Serialize)]
    struct Body {
        status: &'static str,
        #[serde(rename = "upSince")]
        up_since: String,
        uptime: String,
    }
    let (code, body) = match up_since {
        Some(t) => (
            StatusCode::OK,
            Body {
                status: "Server available",
                up_since: go_time(t),
                uptime: go_duration(now.duration_since(t).unwrap_or_default()),
            },
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Body {
                status: "Server not available",
                up_since: "0001-01-01T00:00:00Z".into(),
                uptime: String::new(),
            },
        ),
    };
    (code, serde_json::to_string(&body).unwrap_or_default())
}

/// A time as Go's `time.Time` marshals to JSON (RFC 3339 with trailing zeros of the
/// fraction dropped), in UTC.
pub fn go_time(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_nanos(t).to_string();
    // "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"
    match s.strip_suffix('Z').and_then(|s| s.split_once('.')) {
        Some((secs, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{frac}Z")
            }
        }
        None => s,
    }
}

/// A duration as Go's `time.Duration.String()` writes it: `0s`, `1.5ms`, `2.000001s`, `1m5s`,
/// `1h0m0.5s`.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u128, digits: u32| -> String {
        let unit = 10u128.pow(digits);
        let (whole, rest) = (v / unit, v % unit);
        if rest == 0 {
            whole.to_string()
        } else {
            let f = format!("{rest:0width$}", width = digits as usize);
            format!("{whole}.{}", f.trim_end_matches('0'))
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 6));
    }
    let secs_ns = ns % 60_000_000_000;
    let mins = ns / 60_000_000_000;
    let s = format!("{}s", frac(secs_ns, 9));
    if mins == 0 {
        s
    } else if mins < 60 {
        format!("{mins}m{s}")
    } else {
        format!("{}h{}m{s}", mins / 60, mins % 60)
    }
}

/// Exporter failures over a sliding window, from the exporters' own counters.
struct FailureWindow {
    samples: VecDeque<(Instant, u64)>,
}

impl FailureWindow {
    /// Failures counted so far by every exporter: dropped items and retried calls.
    fn total(t: &Telemetry) -> u64 {
        t.snapshot()
            .iter()
            .filter(|f| {
                f.name == "celeriac_exporter_dropped_items_total"
                    || f.name == "celeriac_exporter_retries_total"
            })
            .flat_map(|f| f.series.iter().map(|s| s.1.max(0.0) as u64))
            .sum()
    }

    /// Failures within `interval` up to now.
    fn recent(&mut self, total: u64, interval: Duration) -> u64 {
        let now = Instant::now();
        self.samples.push_back((now, total));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > interval)
            && self.samples.len() > 1
        {
            self.samples.pop_front();
        }
        let oldest = self.samples.front().map_or(total, |s| s.1);
        total.saturating_sub(oldest)
    }
}

/// The answer to a probe of the configured path.
fn answer(
    cfg: &HealthCheckConfig,
    board: &StatusBoard,
    pipeline_ok: Option<bool>,
    now: SystemTime,
) -> Reply {
    let up = board.healthy();
    let up_since = board.ready_since().filter(|_| up);
    if let Some(ok) = pipeline_ok {
        let healthy = ok && up;
        let (code, body) = match (&cfg.response_body, healthy) {
            (Some(b), true) => (StatusCode::OK, b.healthy.clone()),
            (Some(b), false) => (StatusCode::INTERNAL_SERVER_ERROR, b.unhealthy.clone()),
            (None, true) => (StatusCode::OK, String::new()),
            (None, false) => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        };
        return (code, "text/plain; charset=utf-8", Bytes::from(body));
    }
    match &cfg.response_body {
        Some(b) if up => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from(b.healthy.clone()),
        ),
        Some(b) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            Bytes::from(b.unhealthy.clone()),
        ),
        None => {
            let (code, body) = json_body(up_since, now);
            (code, "application/json", Bytes::from(body))
        }
    }
}

impl Extension for HealthCheck {
    /// Ready once its endpoint is bound.
    fn reports_ready(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, ctx: Context, host: Host) -> BoxRun {
        Box::pin(async move {
            let addr = self.cfg.endpoint;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ComponentError::Bind { addr, source })?;
            tracing::info!(component = %ctx.id, endpoint = %addr, path = %self.cfg.path, "health_check serving.");
            let cfg = Arc::new(self.cfg);
            let board = host.status().clone();
            let window = Arc::new(Mutex::new(FailureWindow {
                samples: VecDeque::new(),
            }));
            let telemetry = ctx.telemetry.clone();
            let handler = move |_: &hyper::Method, path: &str| -> Reply {
                if path != cfg.path {
                    return (
                        StatusCode::NOT_FOUND,
                        "text/plain; charset=utf-8",
                        Bytes::from_static(b"404 page not found\n"),
                    );
                }
                let check = &cfg.check_collector_pipeline;
                let pipeline_ok = check.enabled.then(|| {
                    let total = FailureWindow::total(&telemetry);
                    let recent = window
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .recent(total, check.interval);
                    (recent as i64) < check.exporter_failure_threshold
                });
                answer(&cfg, &board, pipeline_ok, SystemTime::now())
            };
            ctx.ready.set();
            crate::telemetry::serve(listener, handler, ctx.shutdown.clone()).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::ComponentStatus;

    fn cfg(yaml: &str) -> Result<HealthCheckConfig, DecodeError> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        build(&v)?;
        config::decode(&v)
    }

    /// contrib extension/healthcheckextension/config.go (defaults in factory.go; Validate).
    #[test]
    fn settings_follow_the_collectors_config_go() {
        let d = cfg("{}").unwrap();
        assert_eq!(d.endpoint.to_string(), "127.0.0.1:13133");
        assert_eq!(d.path, "/");
        assert_eq!(
            d.check_collector_pipeline.interval,
            Duration::from_secs(300)
        );
        assert_eq!(d.check_collector_pipeline.exporter_failure_threshold, 5);
        assert!(cfg("endpoint: 0.0.0.0:13133\npath: /health/status\ncheck_collector_pipeline: {enabled: true, interval: 5m, exporter_failure_threshold: 5}").is_ok());
        assert_eq!(cfg("path: health").unwrap_err().path, "path");
        assert_eq!(
            cfg("check_collector_pipeline: {exporter_failure_threshold: 0}")
                .unwrap_err()
                .path,
            "check_collector_pipeline.exporter_failure_threshold"
        );
        assert_eq!(cfg("bogus: 1").unwrap_err().path, "bogus");
    }

    /// contrib extension/healthcheckextension/internal/healthcheck/handler.go:
    /// `healthCheckResponse` {status, upSince, uptime}; Unavailable → 503 "Server not
    /// available" with Go's zero time; Ready → 200 "Server available".
    #[test]
    fn json_answer_follows_handler_go() {
        let (code, body) = json_body(None, SystemTime::now());
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            r#"{"status":"Server not available","upSince":"0001-01-01T00:00:00Z","uptime":""}"#
        );
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let now = since + Duration::from_millis(61_500);
        let (code, body) = json_body(Some(since), now);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"status":"Server available","upSince":"2023-11-14T22:13:20.25Z","uptime":"1m1.5s"}"#
        );
    }

    /// Go's time.Duration.String (src/time/time.go) and RFC3339Nano marshalling.
    #[test]
    fn go_formats() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_nanos(999)), "999ns");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(
            go_duration(Duration::from_nanos(2_000_001_000)),
            "2.000001s"
        );
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(3_723_500)), "1h2m3.5s");
        assert_eq!(go_time(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            go_time(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_000_000_123)),
            "1970-01-01T00:00:01.000000123Z"
        );
    }

    #[test]
    fn up_only_while_pipelines_run_and_nothing_failed() {
        let c = HealthCheckConfig::default();
        let board = StatusBoard::default();
        let now = SystemTime::now();
        assert_eq!(
            answer(&c, &board, None, now).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        board.set("exporter/debug", ComponentStatus::Ok);
        board.set_ready(true);
        let (code, ctype, body) = answer(&c, &board, None, now);
        assert_eq!((code, ctype), (StatusCode::OK, "application/json"));
        assert!(body.starts_with(br#"{"status":"Server available","upSince":""#));
        board.set(
            "exporter/debug",
            ComponentStatus::PermanentError("boom".into()),
        );
        assert_eq!(
            answer(&c, &board, None, now).0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        // response_body replaces the JSON (healthcheckextension.go baseHandler).
        let c = cfg("response_body: {healthy: fine, unhealthy: sick}").unwrap();
        let board = StatusBoard::default();
        assert_eq!(
            answer(&c, &board, None, now),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"sick")
            )
        );
        board.set_ready(true);
        assert_eq!(answer(&c, &board, None, now).2, Bytes::from_static(b"fine"));
        // checkCollectorPipelineHandler: 500, not 503, when the exporters fail.
        assert_eq!(
            answer(&c, &board, Some(false), now).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(answer(&c, &board, Some(true), now).0, StatusCode::OK);
    }

    #[test]
    fn failure_window_counts_only_recent_failures() {
        let mut w = FailureWindow {
            samples: VecDeque::new(),
        };
        assert_eq!(w.recent(10, Duration::from_secs(60)), 0);
        assert_eq!(w.recent(13, Duration::from_secs(60)), 3);
        assert_eq!(w.recent(20, Duration::ZERO), 0);
    }
}
