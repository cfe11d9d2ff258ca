//! `otlphttp` exporter (also `otlp_http`, the collector's newer name): traces, metrics and logs
//! as OTLP/HTTP protobuf `POST`s, as the collector's `exporter/otlphttpexporter` sends them.
//!
//! This module owns the exporter's settings and its HTTP sender; the sending queue, retries and
//! counters are the `otlp` exporter's ([`super::run_queued`]), so both behave the same under
//! failures (see the module docs of [`super`]).
//!
//! URLs: `traces_endpoint`/`metrics_endpoint`/`logs_endpoint` as given, otherwise `endpoint`
//! plus `/v1/traces`, `/v1/metrics`, `/v1/logs` (the collector's `composeSignalURL`). Bodies are
//! `application/x-protobuf`, gzip-compressed unless `compression: none`. Answers, as in the
//! collector's `otlp.go`: 2xx is delivered (a partial-success body's rejected items are counted);
//! 429, 502, 503 and 504 are retried (a `Retry-After` of 429/503 is a floor for the wait); any other
//! status is permanent; a connection failure or timeout is retried.
//!
//! ```yaml
//! otlphttp:
//!   endpoint: https://otlp.example.com:4318   # or per signal:
//!   traces_endpoint: https://traces.example.com/v1/traces
//!   compression: gzip            # gzip | none
//!   encoding: proto              # proto only
//!   headers: { authorization: "Bearer ${env:TOKEN}" }
//!   timeout: 30s
//!   tls: { insecure: false, ca_file: /etc/ssl/ca.pem, cert_file: …, key_file: … }
//!   retry_on_failure: { enabled: true, initial_interval: 5s, max_interval: 30s, max_elapsed_time: 5m }
//!   sending_queue: { enabled: true, num_consumers: 10, queue_size: 1000 }
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::retry::{RetryConfig, Verdict};
use super::wire::Encoded;
use super::{Compression, Failure, Headers, QueueConfig, Queued, Reply, Transport};
use crate::component::{BoxRun, BuildResult, Context, Exporter, Factory, Input, Registration};
use crate::config::{self, types, DecodeError, Value};
use crate::exporters::sending_queue;
use crate::signal::SignalKind;

pub const REGISTRATION: Registration = Registration {
    type_name: "otlphttp",
    factory: Factory::Exporter {
        accepts: &[SignalKind::Traces, SignalKind::Metrics, SignalKind::Logs],
        build,
    },
    defaults: crate::component::defaults::<OtlpHttpConfig>,
};

/// The collector's newer name for `otlphttp`.
pub const OTLP_HTTP_REGISTRATION: Registration = Registration {
    type_name: "otlp_http",
    factory: Factory::Exporter {
        accepts: &[SignalKind::Traces, SignalKind::Metrics, SignalKind::Logs],
        build,
    },
    defaults: crate::component::defaults::<OtlpHttpConfig>,
};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Proto,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTlsConfig {
    /// `true`: an endpoint without a scheme is plain `http://`.
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpHttpConfig {
    /// Base URL; the signal's path is appended.
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traces_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_endpoint: Option<String>,
    pub compression: Compression,
    pub encoding: Encoding,
    pub headers: Headers,
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    pub tls: HttpTlsConfig,
    pub retry_on_failure: RetryConfig,
    pub sending_queue: QueueConfig,
    /// confighttp buffer sizes: accepted, without effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_buffer_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_buffer_size: Option<u64>,
}

impl Default for OtlpHttpConfig {
    /// The collector's defaults (`factory.go`): 30 s timeout, gzip, proto.
    fn default() -> Self {
        OtlpHttpConfig {
            endpoint: "http://127.0.0.1:4318".into(),
            traces_endpoint: None,
            metrics_endpoint: None,
            logs_endpoint: None,
            compression: Compression::Gzip,
            encoding: Encoding::Proto,
            headers: Headers::default(),
            timeout: Duration::from_secs(30),
            tls: HttpTlsConfig::default(),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
            read_buffer_size: None,
            write_buffer_size: None,
        }
    }
}

/// The URL of one signal (the collector's `composeSignalURL`); a base without a scheme is
/// `https://` unless `tls.insecure`.
pub fn signal_url(
    cfg: &OtlpHttpConfig,
    own: Option<&str>,
    signal: &str,
) -> Result<String, DecodeError> {
    let key = format!("{signal}_endpoint");
    let url = match own {
        Some(u) => u.to_string(),
        None if cfg.endpoint.is_empty() => {
            return Err(DecodeError::new(
                "endpoint",
                format!("either endpoint or {key} must be specified"),
            ))
        }
        None if cfg.endpoint.ends_with('/') => format!("{}v1/{signal}", cfg.endpoint),
        None => format!("{}/v1/{signal}", cfg.endpoint),
    };
    let url = if url.contains("://") {
        url
    } else if cfg.tls.insecure {
        format!("http://{url}")
    } else {
        format!("https://{url}")
    };
    let path = if own.is_some() {
        key
    } else {
        "endpoint".into()
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| DecodeError::new(&path, format!("`{url}` is not a valid URL")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(DecodeError::new(
                &path,
                "scheme must be http:// or https://",
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(DecodeError::new(&path, "has no host"));
    }
    Ok(url)
}

fn build(v: &Value) -> BuildResult<dyn Exporter> {
    let cfg: OtlpHttpConfig = config::decode(v)?;
    let urls = [
        signal_url(&cfg, cfg.traces_endpoint.as_deref(), "traces")?,
        signal_url(&cfg, cfg.metrics_endpoint.as_deref(), "metrics")?,
        signal_url(&cfg, cfg.logs_endpoint.as_deref(), "logs")?,
    ];
    let mut headers = Vec::new();
    for (k, v) in &cfg.headers.0 {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| DecodeError::new(format!("headers.{k}"), "invalid header name"))?;
        // The value is never quoted back: it may be a credential.
        let value = HeaderValue::from_str(v)
            .map_err(|_| DecodeError::new(format!("headers.{k}"), "invalid header value"))?;
        headers.push((name, value));
    }
    if cfg.timeout.is_zero() {
        return Err(DecodeError::new("timeout", "must be greater than 0"));
    }
    let q = &cfg.sending_queue;
    q.check()?;
    let tls = crate::tls::ClientTlsConfig {
        ca_file: cfg.tls.ca_file.clone(),
        cert_file: cfg.tls.cert_file.clone(),
        key_file: cfg.tls.key_file.clone(),
    };
    tls.check().map_err(|(k, m)| DecodeError::new(k, m))?;
    let file_queue =
        sending_queue::file_settings(q.storage, q.directory.as_deref(), q.max_size_mib)?
            .filter(|_| q.enabled);
    Ok(Box::new(OtlpHttpExporter {
        cfg,
        urls,
        headers,
        tls,
        file_queue,
    }))
}

pub struct OtlpHttpExporter {
    cfg: OtlpHttpConfig,
    /// traces, metrics, logs.
    urls: [String; 3],
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: crate::tls::ClientTlsConfig,
    file_queue: Option<(PathBuf, u64)>,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Sends one batch as one OTLP/HTTP request.
pub(crate) struct HttpSender {
    client: Client<Connector, Full<Bytes>>,
    urls: [Uri; 3],
    headers: Vec<(HeaderName, HeaderValue)>,
    gzip: bool,
    timeout: Duration,
}

/// `Retry-After` in seconds (what OTLP receivers send); an HTTP date is read too.
fn retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    let s = v?.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The collector's verdict on an HTTP answer (`otlp.go`: `isRetryableStatusCode`, throttling).
pub fn classify_status(status: StatusCode, retry_after: Option<Duration>) -> Verdict {
    match status.as_u16() {
        429 | 503 => Verdict::Retry(retry_after),
        502 | 504 => Verdict::Retry(None),
        _ => Verdict::Permanent,
    }
}

impl HttpSender {
    pub(crate) async fn call(&self, batch: &Encoded) -> Result<Reply, Failure> {
        // The OTLP/HTTP protobuf body is the export request, already encoded once (`wire`).
        let idx = match batch.kind {
            SignalKind::Traces => 0,
            SignalKind::Metrics => 1,
            SignalKind::Logs => 2,
            SignalKind::Celery => return Ok((0, String::new())),
        };
        let body = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let done = gz.write_all(&batch.body).and_then(|_| gz.finish());
            match done {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    return Err(Failure {
                        verdict: Verdict::Permanent,
                        code: "compression".into(),
                        message: e.to_string(),
                    })
                }
            }
        } else {
            batch.body.clone()
        };
        let url = &self.urls[idx];
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header("content-type", "application/x-protobuf")
            .header(
                "user-agent",
                concat!("celeriac/", env!("CARGO_PKG_VERSION")),
            );
        if self.gzip {
            req = req.header("content-encoding", "gzip");
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body)).map_err(|e| Failure {
            verdict: Verdict::Permanent,
            code: "request".into(),
            message: e.to_string(),
        })?;
        let transient = |message: String| Failure {
            verdict: Verdict::Retry(None),
            code: "transport".into(),
            message,
        };
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| transient(format!("{url}: no answer within {:?}", self.timeout)))?
            .map_err(|e| transient(format!("{url}: {e}")))?;
        let status = resp.status();
        let after = retry_after(resp.headers().get("retry-after"));
        // Bounded read of the answer (the collector reads at most 64 KiB).
        let body = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            let partial = match idx {
                0 => ExportTraceServiceResponse::decode(body.as_ref())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map(|p| (p.rejected_spans, p.error_message)),
                1 => ExportMetricsServiceResponse::decode(body.as_ref())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map(|p| (p.rejected_data_points, p.error_message)),
                _ => ExportLogsServiceResponse::decode(body.as_ref())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map(|p| (p.rejected_log_records, p.error_message)),
            };
            return Ok(partial.unwrap_or_default());
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        Err(Failure {
            verdict: classify_status(status, after),
            code: format!("HTTP {}", status.as_u16()),
            message: format!("request to {url} answered {status}: {}", text.trim()),
        })
    }
}

impl Exporter for OtlpHttpExporter {
    /// Batches are sent as their encoded request body, so one still in its wire form is sent
    /// as it is.
    fn takes_encoded(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, ctx: Context, input: Input) -> BoxRun {
        Box::pin(async move {
            let bad =
                |e: String| crate::component::ComponentError::Other(format!("{}: {e}", ctx.id));
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(self.cfg.timeout));
            connector.enforce_http(false);
            let any_https = self.urls.iter().any(|u| u.starts_with("https://"));
            let tls_config = if any_https {
                self.tls
                    .client_config(&[b"http/1.1"])
                    .map_err(|e| bad(e.to_string()))?
            } else {
                crate::tls::untrusting_client_config()
            };
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls_config)
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector);
            let mut urls = Vec::with_capacity(3);
            for u in &self.urls {
                urls.push(u.parse::<Uri>().map_err(|e| bad(e.to_string()))?);
            }
            let urls: [Uri; 3] = urls.try_into().map_err(|_| bad("urls".into()))?;
            let sender = HttpSender {
                client: Client::builder(TokioExecutor::new()).build(connector),
                urls,
                headers: self.headers,
                gzip: self.cfg.compression == Compression::Gzip,
                timeout: self.cfg.timeout,
            };
            super::run_queued(
                ctx,
                input,
                Transport::Http(Box::new(sender)),
                Queued {
                    timeout: self.cfg.timeout,
                    retry: self.cfg.retry_on_failure,
                    queue: self.cfg.sending_queue.effective(),
                    file_queue: self.file_queue,
                },
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> OtlpHttpConfig {
        config::decode(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    /// exporter/otlphttpexporter/factory.go `composeSignalURL`: `endpoint` + `/v1/<signal>`
    /// (no double slash), a signal's own endpoint as given.
    #[test]
    fn signal_urls_follow_compose_signal_url() {
        let c = cfg("endpoint: http://collector:4318");
        assert_eq!(
            signal_url(&c, None, "traces").unwrap(),
            "http://collector:4318/v1/traces"
        );
        let c = cfg("endpoint: http://collector:4318/");
        assert_eq!(
            signal_url(&c, None, "logs").unwrap(),
            "http://collector:4318/v1/logs"
        );
        let c = cfg("{endpoint: http://a:4318, traces_endpoint: 'https://b/otlp/traces'}");
        assert_eq!(
            signal_url(&c, c.traces_endpoint.as_deref(), "traces").unwrap(),
            "https://b/otlp/traces"
        );
        let c = cfg("{endpoint: 'collector:4318', tls: {insecure: true}}");
        assert_eq!(
            signal_url(&c, None, "metrics").unwrap(),
            "http://collector:4318/v1/metrics"
        );
        let c = cfg("endpoint: ''");
        assert_eq!(
            signal_url(&c, None, "traces").unwrap_err().message,
            "either endpoint or traces_endpoint must be specified"
        );
        let bad = |y: &str| crate::component::rejected_key(build, y).unwrap();
        assert_eq!(bad("endpoint: 'ftp://x'"), "endpoint");
        assert_eq!(bad("traces_endpoint: 'ftp://x'"), "traces_endpoint");
        assert_eq!(bad("encoding: json"), "encoding");
        assert_eq!(bad("tls: {cert_file: /x}"), "tls.key_file");
        assert!(build(&Value::Null).is_ok());
    }

    /// exporter/otlphttpexporter/otlp.go: 429/502/503/504 retried, Retry-After honoured on
    /// 429/503, everything else permanent.
    #[test]
    fn statuses_follow_otlp_go() {
        let d = Some(Duration::from_secs(7));
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, d),
            Verdict::Retry(d)
        );
        assert_eq!(
            classify_status(StatusCode::SERVICE_UNAVAILABLE, d),
            Verdict::Retry(d)
        );
        assert_eq!(
            classify_status(StatusCode::BAD_GATEWAY, d),
            Verdict::Retry(None)
        );
        assert_eq!(
            classify_status(StatusCode::GATEWAY_TIMEOUT, None),
            Verdict::Retry(None)
        );
        assert_eq!(
            classify_status(StatusCode::BAD_REQUEST, None),
            Verdict::Permanent
        );
        assert_eq!(
            classify_status(StatusCode::UNAUTHORIZED, None),
            Verdict::Permanent
        );
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("3"))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
    }
}
