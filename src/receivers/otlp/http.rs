//! OTLP/HTTP front end: `POST /v1/traces|metrics|logs`, `application/x-protobuf` or
//! `application/json`, optional `Content-Encoding: gzip`, answers in the request's format with
//! a `google.rpc.Status` body on errors (OTLP spec "OTLP/HTTP Response").

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{handshake, Ingest, Refusal};
use crate::serve::{Protocol, ServerSettings};
use crate::signal::{Signal, SignalKind};
use crate::tls::Acceptor;

/// `google.rpc.Status`, the error body of OTLP/HTTP.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, format: Format, body: Bytes) -> Reply {
    let ctype = match format {
        Format::Protobuf => "application/x-protobuf",
        Format::Json => "application/json",
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// An error answer: `grpc_code` is the matching gRPC code for the Status body.
fn error(status: StatusCode, format: Format, grpc_code: i32, message: impl Into<String>) -> Reply {
    let st = RpcStatus {
        code: grpc_code,
        message: message.into(),
    };
    let body = match format {
        Format::Protobuf => Bytes::from(st.encode_to_vec()),
        Format::Json => Bytes::from(serde_json::to_vec(&st).unwrap_or_default()),
    };
    reply(status, format, body)
}

fn plain(status: StatusCode, msg: &'static str) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(msg.as_bytes())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// An OTLP/HTTP body as the receiver decodes it: gunzipped (at most `max` bytes out) when
/// `gzip`, then protobuf or (`json`) OTLP/JSON. Public for the fuzz targets and the bad-input
/// corpus tests, which must exercise exactly this path.
pub fn decode_body(
    kind: SignalKind,
    json: bool,
    gzip: bool,
    body: &[u8],
    max: usize,
) -> Result<Signal, String> {
    let inflated;
    let body = if gzip {
        inflated = gunzip(body, max).map_err(str::to_string)?;
        &inflated[..]
    } else if body.len() > max {
        return Err("too_large".into());
    } else {
        body
    };
    decode(
        kind,
        if json { Format::Json } else { Format::Protobuf },
        body,
    )
}

fn decode(kind: SignalKind, format: Format, body: &[u8]) -> Result<Signal, String> {
    fn json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
        serde_json::from_slice(b).map_err(|e| format!("invalid OTLP JSON: {e}"))
    }
    fn proto<T: Message + Default>(b: &[u8]) -> Result<T, String> {
        T::decode(b).map_err(|e| format!("invalid OTLP protobuf: {e}"))
    }
    Ok(match (kind, format) {
        (SignalKind::Traces, Format::Protobuf) => Signal::Traces(Arc::new(
            proto::<ExportTraceServiceRequest>(body)?.resource_spans,
        )),
        (SignalKind::Traces, Format::Json) => Signal::Traces(Arc::new(
            json::<ExportTraceServiceRequest>(body)?.resource_spans,
        )),
        (SignalKind::Metrics, Format::Protobuf) => Signal::Metrics(Arc::new(
            proto::<ExportMetricsServiceRequest>(body)?.resource_metrics,
        )),
        (SignalKind::Metrics, Format::Json) => Signal::Metrics(Arc::new(
            json::<ExportMetricsServiceRequest>(body)?.resource_metrics,
        )),
        (SignalKind::Logs, Format::Protobuf) => Signal::Logs(Arc::new(
            proto::<ExportLogsServiceRequest>(body)?.resource_logs,
        )),
        (SignalKind::Logs, Format::Json) => Signal::Logs(Arc::new(
            json::<ExportLogsServiceRequest>(body)?.resource_logs,
        )),
        (SignalKind::Celery, _) => return Err("not an OTLP signal".into()),
    })
}

/// 503 + `Retry-After: 1` for a retryable refusal (pipeline full, memory limit), counted.
fn refused(ingest: &Ingest, format: Format, r: Refusal) -> Reply {
    let (reason, message) = if r == Refusal::MemoryLimit {
        (
            "memory_limit",
            "celeriac is over its memory limit; retry with backoff",
        )
    } else {
        (
            "pipeline_full",
            "celeriac's pipeline is full; retry with backoff",
        )
    };
    ingest.refuse("http", reason);
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, format, 14, message);
    r.headers_mut()
        .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    r
}

fn success(kind: SignalKind, format: Format) -> Reply {
    let body = match format {
        Format::Protobuf => Bytes::from(match kind {
            SignalKind::Traces => ExportTraceServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
            SignalKind::Metrics => ExportMetricsServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
            _ => ExportLogsServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
        }),
        Format::Json => Bytes::from_static(b"{}"),
    };
    reply(StatusCode::OK, format, body)
}

/// Inflate gzip, refusing to produce more than `max` bytes (gzip bombs).
fn gunzip(data: &[u8], max: usize) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
    let mut dec = flate2::read::GzDecoder::new(data).take(max as u64 + 1);
    dec.read_to_end(&mut out).map_err(|_| "corrupt gzip body")?;
    if out.len() > max {
        return Err("too_large");
    }
    Ok(out)
}

/// `protocols.http.cors` (the collector's confighttp.CORSConfig).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Cors {
    /// Origins allowed to send (`*` matches any run of characters: `https://*.example.com`).
    pub allowed_origins: Vec<String>,
    /// Request headers allowed besides the CORS-safelisted ones.
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
}

impl Cors {
    fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|p| glob(p, origin))
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = s.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Paths per signal and CORS of the OTLP/HTTP front end.
#[derive(Debug, Clone)]
pub struct Routes {
    traces: String,
    metrics: String,
    logs: String,
    cors: Cors,
}

impl Routes {
    pub fn new(cfg: &super::HttpConfig) -> Self {
        Routes {
            traces: cfg.traces_url_path.clone(),
            metrics: cfg.metrics_url_path.clone(),
            logs: cfg.logs_url_path.clone(),
            cors: cfg.cors.clone(),
        }
    }

    fn kind(&self, path: &str) -> Option<SignalKind> {
        if path == self.traces {
            Some(SignalKind::Traces)
        } else if path == self.metrics {
            Some(SignalKind::Metrics)
        } else if path == self.logs {
            Some(SignalKind::Logs)
        } else {
            None
        }
    }
}

/// The CORS answer headers for `origin`, when it is allowed.
fn cors_headers(cors: &Cors, origin: Option<&str>, preflight: bool, r: &mut Reply) {
    let Some(origin) = origin.filter(|o| cors.allows(o)) else {
        return;
    };
    let h = r.headers_mut();
    if let Ok(v) = hyper::header::HeaderValue::from_str(origin) {
        h.insert("access-control-allow-origin", v);
    }
    h.insert("vary", hyper::header::HeaderValue::from_static("Origin"));
    if preflight {
        h.insert(
            "access-control-allow-methods",
            hyper::header::HeaderValue::from_static("POST"),
        );
        let mut allowed = vec!["content-type".to_string(), "content-encoding".to_string()];
        allowed.extend(cors.allowed_headers.iter().map(|x| x.to_ascii_lowercase()));
        if let Ok(v) = hyper::header::HeaderValue::from_str(&allowed.join(", ")) {
            h.insert("access-control-allow-headers", v);
        }
        if let Some(age) = cors.max_age {
            h.insert("access-control-max-age", age.into());
        }
    }
}

async fn handle(req: Request<Incoming>, ingest: Arc<Ingest>, max_body: usize) -> Reply {
    let origin = req
        .headers()
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let preflight = req.method() == Method::OPTIONS;
    let mut reply = handle_signal(req, &ingest, max_body).await;
    if !ingest.routes.cors.allowed_origins.is_empty() {
        cors_headers(
            &ingest.routes.cors,
            origin.as_deref(),
            preflight,
            &mut reply,
        );
    }
    reply
}

async fn handle_signal(req: Request<Incoming>, ingest: &Arc<Ingest>, max_body: usize) -> Reply {
    let ingest = ingest.clone();
    let Some(kind) = ingest.routes.kind(req.uri().path()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "404 page not found: not one of this receiver's OTLP/HTTP paths (traces_url_path, metrics_url_path, logs_url_path)\n",
        );
    };
    if req.method() == Method::OPTIONS && !ingest.routes.cors.allowed_origins.is_empty() {
        return Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    }
    if req.method() != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 method not allowed, supported: [POST]\n",
        );
    }
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match ctype.split(';').next().map(str::trim).unwrap_or("") {
        "application/x-protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        _ => {
            ingest.refuse("http", "unsupported_content_type");
            return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "415 unsupported media type, supported: [application/json, application/x-protobuf]\n");
        }
    };
    if !ingest.authorized(req.headers().get("authorization").map(|v| v.as_bytes())) {
        ingest.refuse("http", "unauthenticated");
        return error(
            StatusCode::UNAUTHORIZED,
            format,
            16,
            "missing or wrong bearer token",
        );
    }
    if !ingest.wants(kind) {
        ingest.refuse("http", "no_pipeline");
        return error(
            StatusCode::NOT_FOUND,
            format,
            12,
            "no pipeline takes this signal from this receiver",
        );
    }
    let gzip = match req
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        None | Some("") | Some("identity") => false,
        Some("gzip") => true,
        Some(_) => {
            ingest.refuse("http", "unsupported_encoding");
            return error(
                StatusCode::BAD_REQUEST,
                format,
                3,
                "unsupported content-encoding; use gzip or none",
            );
        }
    };
    let body = match Limited::new(req.into_body(), max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ingest.refuse("http", "too_large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format,
                    8,
                    format!("request body larger than {max_body} bytes"),
                );
            }
            ingest.refuse("http", "read_error");
            return error(
                StatusCode::BAD_REQUEST,
                format,
                3,
                "cannot read the request body",
            );
        }
    };
    let arrived = Instant::now();
    // Over the memory limit: refuse before decompressing and decoding, the costly part.
    if ingest.refusing(kind) {
        return refused(&ingest, format, Refusal::MemoryLimit);
    }
    let body = if gzip {
        match gunzip(&body, max_body) {
            Ok(b) => Bytes::from(b),
            Err("too_large") => {
                ingest.refuse("http", "too_large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format,
                    8,
                    format!("decompressed body larger than {max_body} bytes"),
                );
            }
            Err(msg) => {
                ingest.refuse("http", "corrupt");
                return error(StatusCode::BAD_REQUEST, format, 3, msg);
            }
        }
    } else {
        body
    };
    let signal = match format {
        Format::Protobuf => ingest.protobuf(kind, body).map_err(|e| e.to_string()),
        Format::Json => decode(kind, format, &body),
    };
    let signal = match signal {
        Ok(s) => s,
        Err(msg) => {
            ingest.refuse("http", "corrupt");
            return error(StatusCode::BAD_REQUEST, format, 3, msg);
        }
    };
    if signal.is_empty() {
        return success(kind, format);
    }
    match ingest.push(signal, arrived) {
        Ok(()) => success(kind, format),
        Err(r @ (Refusal::Full | Refusal::MemoryLimit)) => refused(&ingest, format, r),
        Err(Refusal::NoPipeline) => error(
            StatusCode::NOT_FOUND,
            format,
            12,
            "no pipeline takes this signal",
        ),
        Err(Refusal::Closed) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format,
            14,
            "celeriac is shutting down",
        ),
    }
}

pub async fn serve(
    listener: TcpListener,
    tls: Acceptor,
    ingest: Arc<Ingest>,
    max_body: usize,
    settings: ServerSettings,
    shutdown: CancellationToken,
) {
    let counting = ingest.clone();
    let svc = hyper::service::service_fn(move |req| {
        let ingest = counting.clone();
        async move { Ok::<_, Infallible>(handle(req, ingest, max_body).await) }
    });
    let handshake = move |stream| {
        let (tls, ingest) = (tls.clone(), ingest.clone());
        async move { handshake(&tls, stream, &ingest, "http").await }
    };
    crate::serve::serve_with(
        "OTLP/HTTP",
        listener,
        settings,
        Protocol::Http1,
        shutdown,
        handshake,
        svc,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origin_patterns() {
        assert!(glob("http://*", "http://a.b"));
        assert!(glob("https://*.example.com", "https://x.example.com"));
        assert!(!glob("https://*.example.com", "https://example.org"));
        assert!(glob("*", "anything"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    /// confighttp CORS: an allowed origin gets Allow-Origin (and, on preflight, methods,
    /// headers and max age); another origin gets nothing.
    #[test]
    fn cors_answer_headers() {
        let cors = Cors {
            allowed_origins: vec!["https://*.example.com".into()],
            allowed_headers: vec!["X-Custom".into()],
            max_age: Some(600),
        };
        let mut r = plain(StatusCode::NO_CONTENT, "");
        cors_headers(&cors, Some("https://app.example.com"), true, &mut r);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-methods"], "POST");
        assert_eq!(
            h["access-control-allow-headers"],
            "content-type, content-encoding, x-custom"
        );
        assert_eq!(h["access-control-max-age"], "600");
        let mut r = plain(StatusCode::OK, "");
        cors_headers(&cors, Some("https://evil.test"), false, &mut r);
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }

    #[test]
    fn gzip_bombs_are_refused() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 10 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 64 << 10);
        assert_eq!(gunzip(&bomb, 1 << 20), Err("too_large"));
        assert_eq!(gunzip(b"not gzip", 1 << 20), Err("corrupt gzip body"));
        assert_eq!(gunzip(&bomb, 20 << 20).map(|v| v.len()), Ok(10 << 20));
    }

    #[test]
    fn decodes_json_with_hex_ids() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#;
        let s = decode(SignalKind::Traces, Format::Json, body).unwrap();
        let Signal::Traces(rs) = s else { panic!() };
        let span = &rs[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert!(decode(SignalKind::Traces, Format::Json, b"{\"resourceSpans\": 5}").is_err());
        assert!(decode(SignalKind::Traces, Format::Protobuf, b"\xff\xff\xff").is_err());
    }
}
